"""Autoencoder, ConvAutoencoder and VAE: shapes and lazy building, the VAE's forward and
gradients against PyTorch with a fixed eps, seeded sampling, learning on the 8x8 digits
(with the Trainer and with train_vae), saving, and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
from helpers import assert_close
from lamina import nn, optim
from lamina.errors import ShapeError
from lamina.functional.losses_vae import vae_loss
from lamina.models.autoencoder import VAE, Autoencoder, ConvAutoencoder
from lamina.train import LambdaCallback, Trainer
from lamina.train.generative import VAETrainer, train_vae


@pytest.fixture(scope="module")
def digits():
    """The 8x8 digits in [0, 1], split 1400 / 397 at random (fixed)."""
    x, _ = lamina.data.load_digits(size=8)
    x = x.astype(np.float32) / 255
    order = np.random.default_rng(0).permutation(len(x))
    return x[order[:1400]], x[order[1400:]]


def images(n=4, shape=(8, 8, 1), seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, *shape)).astype(np.float32)


# -- shapes and building -------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda **kw: Autoencoder(5, hidden=(16, 8), **kw),
                                  lambda **kw: ConvAutoencoder(5, filters=(4, 6), **kw),
                                  lambda **kw: VAE(5, hidden=(16,), **kw)])
@pytest.mark.parametrize("shape", [(8, 8, 1), (7, 5, 3)])
def test_shapes_lazy_or_given(make, shape):
    x = images(3, shape)
    lazy, given = make(), make(input_shape=shape)
    assert not lazy.built and lazy.input_shape is None
    assert given.built and given.input_shape == (None, *shape)
    for model in (lazy, given):
        out = model(x)
        reconstruction = out[0] if isinstance(out, tuple) else out
        assert reconstruction.shape == x.shape
        assert model.input_shape == (None, *shape)
        code = model.encode(x)
        codes = code if isinstance(code, tuple) else (code,)
        assert all(c.shape == (3, 5) for c in codes)
        assert model.decode(np.zeros((2, 5), np.float32)).shape == (2, *shape)
    assert lazy.num_parameters() == given.num_parameters()


def test_dense_autoencoder_layout():
    model = Autoencoder(3, hidden=(10, 6), input_shape=(4, 2))
    widths = [layer.units for layer in model.encoder if isinstance(layer, nn.Dense)]
    assert widths == [10, 6, 3]
    assert [layer.units for layer in model.decoder if isinstance(layer, nn.Dense)] == [6, 10, 8]
    # (8*10 + 10) + (10*6 + 6) + (6*3 + 3) + (3*6 + 6) + (6*10 + 10) + (10*8 + 8)
    assert model.num_parameters() == 90 + 66 + 21 + 24 + 70 + 88
    out = model(np.random.default_rng(0).normal(0, 3, (2, 4, 2)).astype(np.float32))
    assert (out.numpy() > 0).all() and (out.numpy() < 1).all()             # the sigmoid output


def test_conv_autoencoder_halves_then_doubles():
    model = ConvAutoencoder(4, filters=(3, 5), input_shape=(7, 5, 2))
    assert model.encoder.compute_output_shape((None, 7, 5, 2)) == (None, 4)
    assert model.encoder[0].compute_output_shape((None, 7, 5, 2)) == (None, 4, 3, 3)
    assert model.encoder[:2].compute_output_shape((None, 7, 5, 2)) == (None, 2, 2, 5)
    # decoder: Dense -> (2, 2, 5) -> (4, 4, 3) -> (8, 8, 2) -> cropped to (7, 5, 2)
    assert model.decoder[:2].compute_output_shape((None, 4)) == (None, 2, 2, 5)
    assert model.decoder[:4].compute_output_shape((None, 4)) == (None, 8, 8, 2)
    assert isinstance(model.decoder[-1], nn.Cropping2D)
    assert ConvAutoencoder(4, filters=(3, 5), input_shape=(8, 4, 2)).decoder[-1].filters == 2    # no crop needed


# -- learning on digits --------------------------------------------------------------------
def _reconstruction_error(model, x):
    model.eval()
    with lamina.no_grad():
        return float(((model(x).numpy() - x) ** 2).mean())


@pytest.mark.parametrize("make, epochs, lr, bar", [
    (lambda: Autoencoder(8, hidden=(64,)), 20, 3e-3, 0.4),
    (lambda: ConvAutoencoder(8, filters=(8, 16)), 10, 1e-2, 0.55),
])
def test_autoencoder_trains_with_the_trainer(digits, make, epochs, lr, bar):
    """x as its own target with 'mse': the held-out reconstruction error ends well below the
    error of predicting the mean training image."""
    train, test = digits
    mean_image_error = float(((test - train.mean(axis=0)) ** 2).mean())
    model = make()
    trainer = Trainer(model, "mse", optim.Adam(model, lr=lr), metrics=(), verbose=0)
    history = trainer.fit((train, train), epochs=epochs, batch_size=64, seed=0)
    assert history["loss"][-1] < history["loss"][0]
    assert _reconstruction_error(model, test) < bar * mean_image_error


# -- the VAE against PyTorch -----------------------------------------------------------------
def _torch_vae(model: VAE, x, eps):
    """The same VAE in torch ops, from the lamina model's weights: (logits, mu, log_var,
    loss, {name: torch parameter})."""
    params = {name: torch.tensor(p.numpy(), requires_grad=True) for name, p in model.named_parameters()}

    def dense(h, key, activation=None):
        z = h @ params[f"{key}.weight"] + params[f"{key}.bias"]
        return torch.relu(z) if activation == "relu" else z

    h = dense(torch.tensor(x).flatten(1), "encoder.dense", "relu")
    mu, log_var = dense(h, "to_mu"), dense(h, "to_log_var")
    mu.retain_grad()
    log_var.retain_grad()
    z = mu + torch.exp(0.5 * log_var) * torch.tensor(eps)
    logits = dense(dense(z, "decoder.dense", "relu"), "decoder.dense_1").reshape(x.shape)
    xt = torch.tensor(x)
    reconstruction = TF.binary_cross_entropy_with_logits(logits, xt, reduction="none").flatten(1).sum(dim=1)
    kl = -0.5 * (1 + log_var - mu**2 - torch.exp(log_var)).sum(dim=1)
    loss = (reconstruction + 0.5 * kl).mean()
    loss.backward()
    return logits, mu, log_var, loss, params


def test_vae_forward_and_gradients_match_torch_with_a_fixed_eps():
    lamina.set_default_dtype(np.float64)
    model = VAE(3, hidden=(7,), input_shape=(4, 4, 1))
    x = images(5, (4, 4, 1)).astype(np.float64)
    eps = np.random.default_rng(3).standard_normal((5, 3))
    logits, mu, log_var = model(x, eps=eps)
    mu.retain_grad()
    log_var.retain_grad()
    loss = vae_loss(x, logits, mu, log_var, beta=0.5)
    loss.backward()

    logits_t, mu_t, log_var_t, loss_t, params = _torch_vae(model, x, eps)
    assert_close(logits.numpy(), logits_t.detach().numpy(), 1e-12, "logits")
    assert_close(mu.numpy(), mu_t.detach().numpy(), 1e-12, "mu")
    assert_close(log_var.numpy(), log_var_t.detach().numpy(), 1e-12, "log_var")
    assert loss.item() == pytest.approx(loss_t.item(), rel=1e-12)
    assert_close(mu.grad, mu_t.grad.numpy(), 1e-10, "dJ/dmu")
    assert_close(log_var.grad, log_var_t.grad.numpy(), 1e-10, "dJ/dlog_var")
    for name, p in model.named_parameters():
        assert_close(p.grad, params[name].grad.numpy(), 1e-10, f"gradient of {name}")


def test_vae_draws_in_training_and_uses_mu_in_evaluation():
    model = VAE(2, hidden=(8,), input_shape=(8, 8, 1))
    x = images(3)
    lamina.manual_seed(4)
    first = model(x)[0].numpy()
    lamina.manual_seed(4)
    again = model(x)[0].numpy()
    assert np.array_equal(first, again)
    assert not np.array_equal(first, model(x)[0].numpy())
    model.eval()
    logits, mu, _ = model(x)
    assert np.array_equal(logits.numpy(), model(x)[0].numpy())
    assert np.array_equal(logits.numpy(), model.decode(mu).numpy())


def test_vae_samples_are_seeded_and_in_range():
    model = VAE(4, hidden=(16,), input_shape=(8, 8, 1))
    lamina.manual_seed(11)
    first = model.sample(6)
    lamina.manual_seed(11)
    again = model.sample(6)
    assert first.shape == (6, 8, 8, 1) and isinstance(first, np.ndarray)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, model.sample(6))
    assert first.min() >= 0 and first.max() <= 1


def _negative_elbo(model, x):
    model.eval()
    with lamina.no_grad():
        return vae_loss(x, *model(x)).item()


def test_vae_learns_digits(digits):
    """The held-out negative ELBO falls far below the untrained model's, the code carries
    information (KL > 0), and the prior's samples look like digits on average."""
    train, test = digits
    model = VAE(4, hidden=(64,), input_shape=(8, 8, 1))
    before = _negative_elbo(model, test)
    untrained_samples = model.sample(300)
    history = train_vae(model, train, epochs=10, batch_size=64, lr=3e-3, seed=0)
    assert set(history) == {"loss", "reconstruction", "kl"} and len(history["loss"]) == 10
    np.testing.assert_allclose(np.add(history["reconstruction"], history["kl"]), history["loss"], rtol=1e-9)
    assert history["loss"][-1] < 0.75 * history["loss"][0]
    assert _negative_elbo(model, test) < 0.6 * before
    assert history["kl"][-1] > 0.5
    assert not model.training
    samples = model.sample(300)
    assert samples.shape == (300, 8, 8, 1) and 0 <= samples.min() and samples.max() <= 1
    mean_image = train.mean(axis=0)
    error, untrained_error = (float(((s.mean(axis=0) - mean_image) ** 2).mean()) for s in (samples, untrained_samples))
    assert error < 0.05 * untrained_error


def test_vae_trainer_callbacks_and_stop():
    x = images(40)
    seen = []

    def stop_after_three(iteration, logs):
        seen.append((iteration, logs["batch_size"]))
        if iteration == 3:
            trainer.stop_training = True

    trainer = VAETrainer(VAE(2, hidden=(8,)), callbacks=[LambdaCallback(on_batch_end=stop_after_three)])
    history = trainer.fit(x, epochs=5, batch_size=16)
    assert seen == [(1, 16), (2, 16), (3, 8)]
    assert len(history["loss"]) == 1 and np.isfinite(history["loss"][0])


# -- saving ----------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda: Autoencoder(3, hidden=(6,)), lambda: ConvAutoencoder(3, filters=(2,)),
                                  lambda: VAE(3, hidden=(6,))])
def test_save_and_load(tmp_path, make):
    model = make()
    x = images(2, (6, 6, 1))
    model(x)
    model.eval()
    lamina.save(model, tmp_path / "model.safetensors")
    loaded = lamina.load(tmp_path / "model.safetensors")
    assert type(loaded) is type(model) and loaded.get_config() == model.get_config()
    ours, theirs = model(x), loaded(x)
    for a, b in zip(ours if isinstance(ours, tuple) else (ours,), theirs if isinstance(theirs, tuple) else (theirs,)):
        assert np.array_equal(a.numpy(), b.numpy())


# -- errors ----------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [Autoencoder, ConvAutoencoder, VAE])
def test_bad_code_size(cls):
    for code_size in (0, -3, 2.5, True, "8"):
        with pytest.raises(ValueError, match=f"{cls.__name__}: code_size must be a positive int"):
            cls(code_size)


def test_bad_arguments():
    with pytest.raises(ValueError, match="Autoencoder: hidden must be a positive int"):
        Autoencoder(4, hidden=(16, 0))
    with pytest.raises(ValueError, match="VAE: hidden must be a sequence"):
        VAE(4, hidden=16)
    with pytest.raises(ValueError, match="ConvAutoencoder: filters must hold at least one"):
        ConvAutoencoder(4, filters=())
    with pytest.raises(ValueError, match="Autoencoder: activation must be an activation name"):
        Autoencoder(4, activation=nn.ReLU())
    with pytest.raises(ValueError, match="VAE: input_shape must be the shape of one sample"):
        VAE(4, input_shape=64)


def test_inputs_of_the_wrong_shape():
    model = Autoencoder(4, input_shape=(8, 8, 1))
    with pytest.raises(ShapeError, match=r"Autoencoder: got an input of shape \(2, 8, 8, 3\); expected "
                                         r"\(batch, 8, 8, 1\)"):
        model(np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ShapeError, match=r"Autoencoder.decode: got codes of shape \(2, 5\); expected \(batch, 4\)"):
        model.decode(np.zeros((2, 5), np.float32))
    with pytest.raises(ShapeError, match=r"ConvAutoencoder: got an input shape \(2, 64\); expected "
                                         r"\(batch, height, width, channels\)"):
        ConvAutoencoder(4)(np.zeros((2, 64), np.float32))
    with pytest.raises(RuntimeError, match="VAE.decode: the decoder is made once the input shape is known"):
        VAE(4).decode(np.zeros((1, 4), np.float32))
    with pytest.raises(RuntimeError, match="VAE.sample: the decoder is made"):
        VAE(4).sample(3)
    with pytest.raises(ValueError, match="sample: n must be a positive int"):
        VAE(4, input_shape=(2, 2)).sample(0)


def test_train_vae_refuses_bad_data():
    model = VAE(2, hidden=(4,))
    with pytest.raises(ValueError, match=r"train_vae: x must hold values in \[0, 1\]"):
        train_vae(model, images(8) * 255, epochs=1)
    with pytest.raises(ValueError, match="train_vae: x must hold floating-point values.*uint8"):
        train_vae(model, (images(8) * 255).astype(np.uint8), epochs=1)
    with pytest.raises(ValueError, match="train_vae: batch_size must be a positive int"):
        train_vae(model, images(8), batch_size=0)
    with pytest.raises(TypeError, match=r"VAETrainer: the model must return \(reconstruction logits, mu, log_var\)"):
        train_vae(Autoencoder(2), images(8), epochs=1)
