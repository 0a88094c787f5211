"""ESRGAN: the residual dense block, RRDB and RRDBNet against float64 torch rewrites of the
published formulas (outputs, input and parameter gradients), float64 gradient checks, the
relativistic average losses against a NumPy hand computation and torch autograd, the perceptual
loss on features before activation, the published parameter count, the critic's size, saving, the training step,
and a learning test: a tiny RRDBNet trained for x2 on the digits beats bicubic upsampling."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from zoo_checks import check_config_and_save_load, random_inputs

import lamina
from helpers import check_gradients, compare_layer_with_torch, perturb_parameters, randn, run_readme_section
from lamina import functional as F
from lamina import models, nn
from lamina.data import load_digits
from lamina.errors import ShapeError
from lamina.train.esrgan import ESRGANTrainer
from lamina.vision import sr_pairs


@pytest.fixture
def float64():
    previous = lamina.backend.get_default_dtype()
    lamina.backend.set_default_dtype(np.float64)
    yield
    lamina.backend.set_default_dtype(previous)


# -- torch rewrites (NCHW inside, NHWC at the edges) -------------------------------------------------
def _conv(x, w, b):
    """A 'same' 3x3 convolution of an NCHW x with lamina's (K, f, f, c_in) weights."""
    return TF.conv2d(x, w.permute(0, 3, 1, 2), b, padding=1)


def torch_rdb(x, params, beta=0.2):
    """x_k = LReLU_0.2(conv_k([x, x_1..x_{k-1}])), k = 1..4; x + beta conv_5([x, x_1..x_4])."""
    features = [x]
    for k in range(4):
        features.append(TF.leaky_relu(_conv(torch.cat(features, 1), *params[2 * k:2 * k + 2]), 0.2))
    return x + beta * _conv(torch.cat(features, 1), *params[8:10])


def torch_rrdb(x, params, beta=0.2):
    out = x
    for i in range(3):
        out = torch_rdb(out, params[10 * i:10 * i + 10], beta)
    return x + beta * out


def _nhwc(reference):
    return lambda xt, *p: reference(xt.permute(0, 3, 1, 2), p).permute(0, 2, 3, 1)


def _rdb_params(block):
    return [t for conv in block._convs() for t in (conv.weight, conv.bias)]


def test_residual_dense_block_matches_the_torch_rewrite(float64):
    block = models.ResidualDenseBlock(4, 3)
    x = randn(2, 5, 4, 4, seed=1)
    block(lamina.tensor(x))
    perturb_parameters(block, scale=0.2)
    assert [c.weight.shape for c in block._convs()] == [(3, 3, 3, 4), (3, 3, 3, 7), (3, 3, 3, 10), (3, 3, 3, 13),
                                                        (4, 3, 3, 16)]
    compare_layer_with_torch(block, _rdb_params(block), _nhwc(torch_rdb), x)


def test_rrdb_matches_the_torch_rewrite(float64):
    block = models.RRDB(4, 2, res_scale=0.3)
    x = randn(2, 4, 3, 4, seed=2)
    block(lamina.tensor(x))
    perturb_parameters(block, scale=0.2)
    params = [*_rdb_params(block.rdb1), *_rdb_params(block.rdb2), *_rdb_params(block.rdb3)]
    compare_layer_with_torch(block, params, _nhwc(lambda xt, p: torch_rrdb(xt, p, 0.3)), x)


def test_rrdbnet_matches_the_torch_rewrite(float64):
    net = models.RRDBNet(4, 2, 3, filters=4, blocks=2, growth=2)
    x = randn(1, 3, 2, 2, seed=3)
    assert net(lamina.tensor(x)).shape == (1, 12, 8, 3)
    perturb_parameters(net, scale=0.1)
    convs = lambda *layers: [t for layer in layers for t in (layer.weight, layer.bias)]  # noqa: E731
    body = [t for block in net.body for rdb in (block.rdb1, block.rdb2, block.rdb3) for t in _rdb_params(rdb)]
    params = [*convs(net.conv_first), *body, *convs(net.conv_body, net.upsampler["conv_up0"],
                                                    net.upsampler["conv_up1"], net.conv_hr, net.conv_last)]

    def reference(xt, p):
        h = _conv(xt, *p[:2])
        trunk = h
        for i in range(2):
            trunk = torch_rrdb(trunk, p[2 + 30 * i:32 + 30 * i])
        h = h + _conv(trunk, *p[62:64])
        for i in range(2):
            h = TF.leaky_relu(_conv(TF.interpolate(h, scale_factor=2, mode="nearest"), *p[64 + 2 * i:66 + 2 * i]),
                              0.2)
        return _conv(TF.leaky_relu(_conv(h, *p[68:70]), 0.2), *p[70:72])

    compare_layer_with_torch(net, params, _nhwc(reference), x)


def test_blocks_gradients(float64):
    x = randn(1, 3, 3, 3, seed=4)
    for module in (models.ResidualDenseBlock(3, 2), models.RRDB(3, 2), models.RRDBNet(2, 3, 1, 3, 1, 2)):
        module(lamina.tensor(x))
        perturb_parameters(module, scale=0.2)
        assert check_gradients(lambda t, m=module: m(t), x)


# -- losses -------------------------------------------------------------------------------------------
def _log_sigmoid(z):
    return -np.log1p(np.exp(-z))


def test_relativistic_losses_match_a_hand_computation(float64):
    real, fake = randn(5, 1, seed=5), randn(3, 1, seed=6) - 1.0
    d_real = 1 / (1 + np.exp(-(real - fake.mean())))                 # D_Ra(x_r, x_f)
    d_fake = 1 / (1 + np.exp(-(fake - real.mean())))                 # D_Ra(x_f, x_r)
    expected_d = -np.mean(np.log(d_real)) - np.mean(np.log(1 - d_fake))
    expected_g = -np.mean(np.log(1 - d_real)) - np.mean(np.log(d_fake))
    np.testing.assert_allclose(models.relativistic_discriminator_loss(real, fake).item(), expected_d, rtol=1e-12)
    np.testing.assert_allclose(models.relativistic_generator_loss(real, fake).item(), expected_g, rtol=1e-12)
    # far apart logits stay finite (log sigma through softplus)
    big = models.relativistic_discriminator_loss(np.array([[-400.0]]), np.array([[400.0]])).item()
    np.testing.assert_allclose(big, 1600.0, rtol=1e-12)


@pytest.mark.parametrize("which", ["discriminator", "generator"])
def test_relativistic_losses_gradients_match_torch(float64, which):
    real, fake = randn(4, 2, 2, 1, seed=7), randn(4, 2, 2, 1, seed=8)
    ours = getattr(models, f"relativistic_{which}_loss")
    rl, fl = lamina.tensor(real, requires_grad=True), lamina.tensor(fake, requires_grad=True)
    rt, ft = torch.tensor(real, requires_grad=True), torch.tensor(fake, requires_grad=True)
    ones = torch.ones_like(rt)
    real_rel, fake_rel = rt - ft.mean(), ft - rt.mean()
    if which == "discriminator":
        theirs = (TF.binary_cross_entropy_with_logits(real_rel, ones)
                  + TF.binary_cross_entropy_with_logits(fake_rel, 0 * ones))
    else:
        theirs = (TF.binary_cross_entropy_with_logits(real_rel, 0 * ones)
                  + TF.binary_cross_entropy_with_logits(fake_rel, ones))
    loss = ours(rl, fl)
    loss.backward()
    theirs.backward()
    np.testing.assert_allclose(loss.item(), theirs.item(), rtol=1e-12)
    np.testing.assert_allclose(rl.grad, rt.grad.numpy(), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(fl.grad, ft.grad.numpy(), rtol=1e-10, atol=1e-14)
    assert check_gradients(ours, real, fake)


def _feature_net():
    return nn.Sequential(nn.Conv2D(3, 3, padding="same"), nn.ReLU(), nn.Conv2D(2, 3, padding="same"), nn.ReLU())


def test_perceptual_loss_uses_the_features_before_the_activation(float64):
    net = _feature_net()
    x, y = randn(2, 5, 5, 1, seed=9), randn(2, 5, 5, 1, seed=10)
    net(lamina.tensor(x))
    perceptual = nn.PerceptualLoss(net, layers="conv1_2")
    before = net[2](net[1](net[0](lamina.tensor(x)))).numpy()
    target = net[2](net[1](net[0](lamina.tensor(y)))).numpy()
    assert np.any(before < 0)                                      # not the ReLU's output
    loss = models.feature_l1_loss(perceptual, x, y)
    np.testing.assert_allclose(loss.item(), np.abs(before - target).mean(), rtol=1e-12)
    assert check_gradients(lambda t: models.feature_l1_loss(perceptual, t, y), x)
    with pytest.raises(TypeError, match="feature_l1_loss: perceptual must be a PerceptualLoss"):
        models.feature_l1_loss(net, x, y)


def test_trainer_weights_the_terms_and_steps_both_networks():
    lamina.manual_seed(0)
    generator = models.RRDBNet(2, 1, 1, filters=4, blocks=1, growth=2)
    critic = models.PatchGANDiscriminator(ndf=4, n_layers=1, norm=None)
    perceptual = nn.PerceptualLoss(_feature_net(), layers="conv1_2")
    trainer = ESRGANTrainer(generator, critic, perceptual)
    lr, hr = random_inputs((2, 4, 4, 1), 1), random_inputs((2, 8, 8, 1), 2)
    total, parts, _ = trainer.generator_loss(lamina.tensor(lr), hr)
    expected = 1e-2 * parts["pixel"] + parts["perceptual"] + 5e-3 * parts["gan"]
    np.testing.assert_allclose(total.item(), expected, rtol=1e-5)
    named = lambda: [*generator.named_parameters(), *critic.named_parameters()]  # noqa: E731
    before = {k: p.numpy().copy() for k, p in named()}
    parts = trainer.step(lr, hr)
    assert set(parts) == {"pixel", "perceptual", "gan", "generator", "discriminator"}
    unchanged = [k for k, p in named() if np.array_equal(p.numpy(), before[k])]
    # the losses see only differences of logits: the critic's output bias gets no gradient
    assert unchanged == ["body.conv2.bias"]
    np.testing.assert_allclose(critic.body["conv2"].bias.grad, 0.0, atol=1e-6)
    with pytest.raises(ShapeError, match="ESRGANTrainer: the generator makes images of shape"):
        trainer.step(lr, hr[:, :6, :6])


# -- sizes, saving, errors ------------------------------------------------------------------------------
def test_published_parameter_count():
    # conv_first 1,792 + 23 RRDBs of 3 x 239,808 + conv_body 36,928 + 3 x 36,928 (two upsampling
    # convs, conv_hr) + conv_last 1,731: BasicSR's RRDBNet_x4, 16,697,987
    assert models.rrdbnet_x4().summary(input_shape=(8, 8, 3)).total_params == 16_697_987
    assert models.rrdbnet_tiny().summary(input_shape=(8, 8, 1)).total_params < 100_000


def test_discriminator_layers_and_size(tmp_path):
    widths = [3, 64, 64, 128, 128, 256, 256, 512, 512, 512, 512]
    convs = sum(k * k * a * b for a, b, k in zip(widths, widths[1:], [3, 4] * 5))
    norms = 2 * sum(widths[2:])                                   # gamma and beta after all but the first
    dense = 512 * 4 * 4 * 100 + 100 + 100 + 1
    assert models.esrgan_discriminator().summary(input_shape=(128, 128, 3)).total_params == (
        convs + 64 + norms + dense) == 14_499_401
    critic = models.esrgan_discriminator((32, 64, 1), filters=2)
    x = random_inputs((2, 32, 64, 1), 3)
    assert critic(lamina.tensor(x)).shape == (2, 1)
    check_config_and_save_load(critic, x, tmp_path / "critic.lamina")
    with pytest.raises(ValueError, match="esrgan_discriminator: height and width must be multiples of 32"):
        models.esrgan_discriminator((48, 48, 3))


def test_config_and_save_load(tmp_path):
    model = models.RRDBNet(2, 3, 2, filters=6, blocks=2, growth=3, res_scale=0.5)
    x = random_inputs((2, 4, 5, 3), 8)
    assert model(lamina.tensor(x)).shape == (2, 8, 10, 2)
    perturb_parameters(model, scale=0.05)
    check_config_and_save_load(model, x, tmp_path / "rrdbnet.lamina")


def test_bad_arguments():
    with pytest.raises(ValueError, match="RRDBNet: scale must be a power of 2"):
        models.RRDBNet(3)
    with pytest.raises(ShapeError, match=r"rrdbnet_tiny.*expected 1 channels"):
        models.rrdbnet_tiny()(np.zeros((1, 4, 4, 3), np.float32))
    with pytest.raises(ShapeError, match=r"expected 4 channels"):
        models.ResidualDenseBlock(4, 2)(np.zeros((1, 4, 4, 3), np.float32))
    with pytest.raises(ShapeError, match="relativistic_generator_loss: expected a non-empty batch"):
        models.relativistic_generator_loss(np.zeros((0, 1)), np.zeros((2, 1)))


# -- learning --------------------------------------------------------------------------------------------
def test_tiny_rrdbnet_beats_bicubic_on_the_digits():
    x, _ = load_digits(8)
    hr = (x.astype(np.float32) / 255).repeat(2, axis=1).repeat(2, axis=2)   # 16x16, sharp edges
    lr, hr = sr_pairs(hr, 2, clip=(0, 1))
    lamina.manual_seed(0)
    rng = np.random.default_rng(0)
    model = models.RRDBNet(2, 1, 1, filters=16, blocks=1, growth=8)
    trainer = ESRGANTrainer(model, pixel_weight=1.0, lr=3e-3, betas=(0.9, 0.999))
    start = time.perf_counter()
    for _ in range(60):
        batch = rng.integers(0, 1400, 32)
        trainer.step(lr[batch], hr[batch])
    seconds = time.perf_counter() - start
    with lamina.no_grad():
        ours = F.psnr(np.clip(model(lamina.tensor(lr[1400:])).numpy(), 0, 1), hr[1400:]).item()
    bicubic = np.clip(F.interpolate(lamina.tensor(lr[1400:]), scale_factor=2, mode="bicubic").numpy(), 0, 1)
    baseline = F.psnr(bicubic, hr[1400:]).item()
    # measured: 23.7 dB against bicubic's 18.6 on the 397 held-out digits (seeds 1, 2: 25.5, 23.1),
    # in about 5 s on one thread
    assert ours > baseline + 3.0
    assert seconds < 60


def test_readme_example_runs():
    printed, names = run_readme_section("ESRGAN and Real-ESRGAN degradations")
    assert type(names["model"]) is models.RRDBNet
    assert printed.strip() == "(1, 16, 16, 3) (1, 4, 4, 3) 16697987"
