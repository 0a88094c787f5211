"""The DCGAN builders and train_gan: shapes, one alternating step against PyTorch, learning a
2-D Gaussian, a short epoch on the digits, seeding, callbacks and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
from helpers import assert_close
from lamina import nn
from lamina.errors import ShapeError
from lamina.models.gan import dcgan_discriminator, dcgan_generator
from lamina.train import LambdaCallback
from lamina.train.generative import GAN_BETAS, GANTrainer, train_gan


def mlp_generator(code_size=2, hidden=16, out=2):
    model = nn.Sequential(nn.Dense(hidden, activation="relu"), nn.Dense(out))
    model.build((None, code_size))
    return model


def mlp_discriminator(features=2, hidden=16):
    model = nn.Sequential(nn.Dense(hidden), nn.LeakyReLU(0.2), nn.Dense(1))
    model.build((None, features))
    return model


# -- builders ------------------------------------------------------------------------------
@pytest.mark.parametrize("shape, filters", [((8, 8, 1), (32, 16)), ((7, 5, 3), (8,)), ((12, 16, 2), (6, 5, 4))])
def test_generator_and_discriminator_shapes(shape, filters):
    generator = dcgan_generator(6, shape, filters=filters)
    discriminator = dcgan_discriminator(shape, filters=filters[::-1])
    assert generator.built and discriminator.built
    assert generator.input_shape == (None, 6) and discriminator.input_shape == (None, *shape)
    made = generator(np.random.default_rng(0).standard_normal((3, 6)).astype(np.float32))
    assert made.shape == (3, *shape)
    assert made.numpy().min() >= 0 and made.numpy().max() <= 1                  # the sigmoid output
    assert discriminator(made).shape == (3, 1)
    transposed = [layer for layer in generator if isinstance(layer, nn.Conv2DTranspose)]
    assert [layer.filters for layer in transposed] == list(filters)
    assert all(layer.stride == (2, 2) for layer in transposed)


def test_dcgan_layouts_for_digits():
    generator = dcgan_generator(16)
    assert generator.compute_output_shape((None, 16)) == (None, 8, 8, 1)
    assert generator[:2].compute_output_shape((None, 16)) == (None, 2, 2, 32)
    assert generator[:3].compute_output_shape((None, 16)) == (None, 4, 4, 32)
    discriminator = dcgan_discriminator()
    leaky = [layer for layer in discriminator if isinstance(layer, nn.LeakyReLU)]
    assert len(leaky) == 2 and all(layer.alpha == 0.2 for layer in leaky)
    assert discriminator[:2].compute_output_shape((None, 8, 8, 1)) == (None, 4, 4, 16)
    assert dcgan_generator(4, output_activation="tanh")(np.full((1, 4), 9.0, np.float32)).numpy().min() < 0


def test_builder_errors():
    for code_size in (0, 1.5, None):
        with pytest.raises(ValueError, match="dcgan_generator: code_size must be a positive int"):
            dcgan_generator(code_size)
    with pytest.raises(ValueError, match=r"dcgan_generator: out_shape must be \(height, width, channels\)"):
        dcgan_generator(8, (8, 8))
    with pytest.raises(ValueError, match=r"dcgan_discriminator: in_shape must be \(height, width, channels\)"):
        dcgan_discriminator((8, 0, 1))
    with pytest.raises(ValueError, match="dcgan_discriminator: filters must be a non-empty sequence"):
        dcgan_discriminator(filters=())


# -- one step against PyTorch ----------------------------------------------------------------
def _torch_copy(model):
    return [(torch.tensor(layer.weight.numpy(), requires_grad=True), torch.tensor(layer.bias.numpy(),
             requires_grad=True)) for layer in model if isinstance(layer, nn.Dense)]


def adam_first_step(params, lr, betas=GAN_BETAS, eps=1e-8):
    """torch.optim.Adam's first step, written out (the optimizer's first use costs seconds):
    m = (1 - b1) g, v = (1 - b2) g^2, w -= lr / (1 - b1) * m / (sqrt(v) / sqrt(1 - b2) + eps)."""
    b1, b2 = betas
    with torch.no_grad():
        for pair in params:
            for p in pair:
                m, v = (1 - b1) * p.grad, (1 - b2) * p.grad**2
                p -= lr / (1 - b1) * m / (torch.sqrt(v) / np.sqrt(1 - b2) + eps)


def _torch_forwards(g_params, d_params):
    """The torch copies of mlp_generator and mlp_discriminator, as functions of their weights."""

    def g_forward(codes):
        (w1, b1), (w2, b2) = g_params
        return torch.relu(codes @ w1 + b1) @ w2 + b2

    def d_forward(samples):
        (w1, b1), (w2, b2) = d_params
        return TF.leaky_relu(samples @ w1 + b1, 0.2) @ w2 + b2

    return g_forward, d_forward


def test_one_step_matches_torch():
    """A discriminator step on BCE(D(x), 1) + BCE(D(G(z)), 0) with G fixed, then a generator
    step on the non-saturating BCE(D(G(z)), 1) with the updated D, both Adam(0.5, 0.999)."""
    lamina.set_default_dtype(np.float64)
    generator, discriminator = mlp_generator(2, 5, 3), mlp_discriminator(3, 4)
    g_params, d_params = _torch_copy(generator), _torch_copy(discriminator)
    real = np.random.default_rng(1).normal(1.0, 0.5, (6, 3))
    z = np.random.default_rng(2).standard_normal((6, 2))

    trainer = GANTrainer(generator, discriminator, lr=0.01)
    trainer.codes = lambda n: lamina.tensor(z[:n], dtype=np.float64)
    losses = trainer.train_step(real)

    g_forward, d_forward = _torch_forwards(g_params, d_params)

    def bce(logits, target):
        return TF.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))

    fake = g_forward(torch.tensor(z))
    d_loss = bce(d_forward(torch.tensor(real)), 1.0) + bce(d_forward(fake.detach()), 0.0)
    d_loss.backward()
    adam_first_step(d_params, lr=0.01)
    for pair in d_params:
        for p in pair:
            p.grad = None
    g_loss = bce(d_forward(fake), 1.0)
    g_loss.backward()
    adam_first_step(g_params, lr=0.01)

    assert losses["d_loss"] == pytest.approx(d_loss.item(), rel=1e-12)
    assert losses["g_loss"] == pytest.approx(g_loss.item(), rel=1e-12)
    for model, params in ((generator, g_params), (discriminator, d_params)):
        for layer, (w, b) in zip([layer for layer in model if isinstance(layer, nn.Dense)], params):
            assert_close(layer.weight.numpy(), w.detach().numpy(), 1e-10, "updated weight")
            assert_close(layer.bias.numpy(), b.detach().numpy(), 1e-10, "updated bias")


# -- learning --------------------------------------------------------------------------------
def test_generator_moves_to_the_data_mean():
    """Real points ~ N((2, 2), 0.5^2 I); G starts near the origin. G's sample mean, averaged over
    the last third of the epochs (the game circles its equilibrium), ends near (2, 2)."""
    data = np.random.default_rng(0).normal(2.0, 0.5, (512, 2)).astype(np.float32)
    generator, discriminator = mlp_generator(), mlp_discriminator()
    z = lamina.tensor(np.random.default_rng(9).standard_normal((1000, 2)))
    means = []

    def record_mean(epoch, logs):
        with lamina.no_grad():
            means.append(generator(z).numpy().mean(axis=0))

    record_mean(-1, {})
    history = train_gan(generator, discriminator, data, epochs=30, batch_size=64, lr=5e-3, seed=0,
                        callbacks=[LambdaCallback(on_epoch_end=record_mean)])
    assert np.linalg.norm(means[0] - 2.0) > 1.5
    assert np.abs(np.mean(means[-10:], axis=0) - 2.0).max() < 0.4
    assert len(history["d_loss"]) == len(history["g_loss"]) == 30
    assert not generator.training and not discriminator.training


def test_one_short_epoch_on_digits():
    x, _ = lamina.data.load_digits(size=8)
    x = x[:192].astype(np.float32) / 255
    generator, discriminator = dcgan_generator(16), dcgan_discriminator()
    before = [p.numpy().copy() for p in generator.parameters() + discriminator.parameters()]
    history = train_gan(generator, discriminator, x, epochs=1, batch_size=64, code_size=16, seed=0)
    assert set(history) == {"d_loss", "g_loss"}
    assert len(history["d_loss"]) == 1 and np.isfinite(history["d_loss"] + history["g_loss"]).all()
    after = generator.parameters() + discriminator.parameters()
    assert all(not np.array_equal(a, p.numpy()) for a, p in zip(before, after))


def test_seed_fixes_the_run():
    data = np.random.default_rng(0).normal(2.0, 0.5, (96, 2)).astype(np.float32)

    def run(seed):
        lamina.manual_seed(0)
        generator = mlp_generator()
        history = train_gan(generator, mlp_discriminator(), data, epochs=2, batch_size=32, seed=seed)
        return history, generator[-1].weight.numpy()

    (h1, w1), (h2, w2), (h3, w3) = run(5), run(5), run(6)
    assert h1 == h2 and np.array_equal(w1, w2)
    assert h1 != h3 and not np.array_equal(w1, w3)


def test_callbacks_see_every_stage_and_can_stop():
    data = np.zeros((50, 2), np.float32)
    events = []

    def on_batch_end(iteration, logs):
        events.append(("batch", iteration, logs["batch_size"], sorted(logs)))
        if iteration == 5:
            trainer.stop_training = True

    callback = LambdaCallback(on_train_begin=lambda logs: events.append("begin"),
                              on_epoch_end=lambda epoch, logs: events.append(("epoch", epoch, sorted(logs))),
                              on_batch_end=on_batch_end, on_train_end=lambda logs: events.append("end"))
    trainer = GANTrainer(mlp_generator(), mlp_discriminator(), callbacks=[callback])
    assert trainer.code_size == 2 and callback.trainer is trainer
    history = trainer.fit(data, epochs=4, batch_size=20)
    names = ["batch_size", "d_loss", "g_loss"]
    assert events == ["begin", ("batch", 1, 20, names), ("batch", 2, 20, names), ("batch", 3, 10, names),
                      ("epoch", 0, ["d_loss", "g_loss"]), ("batch", 4, 20, names), ("batch", 5, 20, names),
                      ("epoch", 1, ["d_loss", "g_loss"]), "end"]
    assert len(history["g_loss"]) == 2


# -- errors ----------------------------------------------------------------------------------
def test_train_gan_errors():
    generator, discriminator = dcgan_generator(4), dcgan_discriminator()
    digits = np.random.default_rng(0).uniform(0, 1, (8, 8, 8, 1)).astype(np.float32)
    with pytest.raises(ShapeError, match=r"train_gan: the generator makes samples of shape \(8, 8, 1\) from codes "
                                         r"of 4 values, but x holds samples of shape \(64,\)"):
        train_gan(generator, discriminator, digits.reshape(8, 64))
    with pytest.raises(ValueError, match="train_gan: x must hold floating-point values.*uint8"):
        train_gan(generator, discriminator, (digits * 255).astype(np.uint8))
    with pytest.raises(ShapeError, match=r"train_gan: x must be samples of shape \(n, ...\)"):
        train_gan(generator, discriminator, digits[:0])
    with pytest.raises(ValueError, match="train_gan: epochs must be an int >= 0"):
        train_gan(generator, discriminator, digits, epochs=-1)
    with pytest.raises(ShapeError, match=r"train_gan: the discriminator must give one logit per sample.*\(2, 3\)"):
        train_gan(generator, nn.Sequential(nn.Flatten(), nn.Dense(3)), digits)
    unbuilt = nn.Sequential(nn.Dense(4), nn.Dense(2))
    with pytest.raises(ValueError, match="GANTrainer: code_size is required unless the generator is built"):
        train_gan(unbuilt, mlp_discriminator(), np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match="GANTrainer: code_size must be a positive int"):
        train_gan(generator, discriminator, digits, code_size=0)
    with pytest.raises(ValueError, match="GANTrainer: the generator and the discriminator must be two"):
        train_gan(generator, generator, digits)
    with pytest.raises(ValueError, match="GANTrainer: loss must be 'bce' or 'wasserstein', got 'hinge'"):
        GANTrainer(mlp_generator(), mlp_discriminator(), loss="hinge")
    with pytest.raises(ValueError, match="GANTrainer: gradient_penalty must be a number >= 0, got -1"):
        GANTrainer(mlp_generator(), mlp_discriminator(), loss="wasserstein", gradient_penalty=-1)
    with pytest.raises(ValueError, match="GANTrainer: n_critic must be a positive int"):
        GANTrainer(mlp_generator(), mlp_discriminator(), n_critic=0)


# -- WGAN-GP ---------------------------------------------------------------------------------
WGAN_BETAS = (0.0, 0.9)


def test_one_wgan_gp_step_matches_torch():
    """A critic step on mean D(G(z)) - mean D(x) + 10 GP (the gradient penalty at the mixed
    points), then a generator step on -mean D(G(z)) with the updated critic, Adam(0, 0.9)."""
    lamina.set_default_dtype(np.float64)
    generator, critic = mlp_generator(2, 5, 3), mlp_discriminator(3, 4)
    g_params, d_params = _torch_copy(generator), _torch_copy(critic)
    real = np.random.default_rng(1).normal(1.0, 0.5, (6, 3))
    z = np.random.default_rng(2).standard_normal((6, 2))
    eps = np.random.default_rng(3).uniform(size=6)

    trainer = GANTrainer(generator, critic, lr=0.01, betas=WGAN_BETAS, loss="wasserstein", gradient_penalty=10.0)
    trainer.codes = lambda n: lamina.tensor(z[:n], dtype=np.float64)
    trainer._mixing_weights = lambda n: eps[:n]
    losses = trainer.train_step(real)

    g_forward, d_forward = _torch_forwards(g_params, d_params)

    fake = g_forward(torch.tensor(z))
    real_t = torch.tensor(real)
    mixed = (torch.tensor(eps[:, None]) * real_t + (1 - torch.tensor(eps[:, None])) * fake.detach()).requires_grad_()
    (slope,) = torch.autograd.grad(d_forward(mixed).sum(), mixed, create_graph=True)
    penalty = ((slope.norm(dim=1) - 1) ** 2).mean()
    d_loss = d_forward(fake.detach()).mean() - d_forward(real_t).mean() + 10 * penalty
    d_loss.backward()
    adam_first_step(d_params, lr=0.01, betas=WGAN_BETAS)
    for pair in d_params:
        for p in pair:
            p.grad = None
    g_loss = -d_forward(fake).mean()
    g_loss.backward()
    adam_first_step(g_params, lr=0.01, betas=WGAN_BETAS)

    assert losses["d_loss"] == pytest.approx(d_loss.item(), rel=1e-9)
    assert losses["g_loss"] == pytest.approx(g_loss.item(), rel=1e-9)
    for model, params in ((generator, g_params), (critic, d_params)):
        for layer, (w, b) in zip([layer for layer in model if isinstance(layer, nn.Dense)], params):
            assert_close(layer.weight.numpy(), w.detach().numpy(), 1e-8, "updated weight")
            assert_close(layer.bias.numpy(), b.detach().numpy(), 1e-8, "updated bias")


def test_the_generator_steps_once_every_n_critic_batches():
    generator, critic = mlp_generator(), mlp_discriminator()
    trainer = GANTrainer(generator, critic, loss="wasserstein", n_critic=3)
    steps = []
    original = trainer.g_optimizer.step
    trainer.g_optimizer.step = lambda: (steps.append(trainer.iteration), original())[1]
    history = trainer.fit(np.random.default_rng(0).normal(size=(70, 2)).astype(np.float32), epochs=1, batch_size=10)
    assert steps == [2, 5]                  # after the 3rd and 6th of the 7 batches
    assert np.isfinite(history["g_loss"]).all() and np.isfinite(history["d_loss"]).all()


def test_wgan_gp_moves_the_generator_to_the_data_mean():
    """The same 2-D Gaussian as the BCE game, with the Wasserstein critic, its gradient penalty
    and 5 critic steps per generator step (Adam(0, 0.9), as Gulrajani et al.)."""
    data = np.random.default_rng(0).normal(2.0, 0.5, (512, 2)).astype(np.float32)
    lamina.manual_seed(0)
    generator, critic = mlp_generator(), mlp_discriminator()
    z = lamina.tensor(np.random.default_rng(9).standard_normal((1000, 2)))
    with lamina.no_grad():
        start = generator(z).numpy().mean(axis=0)
    train_gan(generator, critic, data, epochs=25, batch_size=32, lr=5e-3, seed=0, betas=WGAN_BETAS,
              loss="wasserstein", gradient_penalty=1.0, n_critic=5)
    with lamina.no_grad():
        end = generator(z).numpy().mean(axis=0)
    assert np.linalg.norm(start - 2.0) > 1.5
    assert np.abs(end - 2.0).max() < 0.4
