"""Glow on NHWC images: each layer's exact inverse and log-determinant against torch's slogdet
of the Jacobian, the LU-decomposed 1x1 convolution, the coupling against a torch rewrite of the
reference, the model's density as a hand-composed sum, sampling, dequantization, errors, and a
tiny Glow learning 8x8 digits."""

from __future__ import annotations

import math
import re
import time

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

import lamina
from helpers import check_gradients, compare_with_torch, randn, run_readme_section, swap_in
from lamina.autograd import jacobian
from lamina.errors import ShapeError
from lamina.models.glow import (
    ActNorm2D,
    AffineCoupling2D,
    Glow,
    GlowStep,
    InvertibleConv1x1,
    Squeeze2D,
    dequantize,
)
from lamina.optim import Adam


def randomized(module, shape, seed=0, spread=0.3):
    """``module`` built for images of ``shape`` (h, w, c), in float64 with random weights, in eval mode."""
    module.build((None,) + shape)
    module.double().eval()
    rng = np.random.default_rng(seed)
    for _, p in module.named_parameters():
        p.data = rng.standard_normal(p.shape) * spread
    return module


def per_image_log_det(fn, x):
    full = jacobian(fn, x)
    n = x.shape[0]
    size = int(np.prod(x.shape[1:]))
    full = full.reshape(n, -1, n, size)
    blocks = np.stack([full[i, :, i, :] for i in range(n)])
    sign, log_abs = torch.linalg.slogdet(torch.from_numpy(blocks))
    assert torch.all(sign != 0)
    return log_abs.numpy()


def images(n=2, shape=(2, 2, 4), seed=1):
    return lamina.tensor(randn(n, *shape, seed=seed), dtype=np.float64)


LAYERS = {
    "actnorm": lambda: randomized(ActNorm2D(), (2, 2, 4)),
    "conv1x1_lu": lambda: randomized(InvertibleConv1x1(lu=True), (2, 2, 4), seed=1, spread=0.6),
    "conv1x1_plain": lambda: randomized(InvertibleConv1x1(lu=False), (2, 2, 4), seed=2, spread=0.6),
    "coupling": lambda: randomized(AffineCoupling2D(hidden=5), (2, 2, 4), seed=3),
    "squeeze": lambda: Squeeze2D(),
    "step": lambda: randomized(GlowStep(hidden=4), (2, 2, 4), seed=4),
}


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_inverse_and_log_det(kind):
    layer = LAYERS[kind]()
    x = images()
    y, log_det = layer(x)
    back, log_det_back = layer.inverse(y)
    np.testing.assert_allclose(back.numpy(), x.numpy(), atol=1e-10, rtol=0)
    np.testing.assert_allclose(log_det_back.numpy(), -log_det.numpy(), atol=1e-10, rtol=0)
    if kind != "squeeze":
        assert np.abs(y.numpy() - x.numpy()).max() > 0.05
    np.testing.assert_allclose(log_det.numpy(), per_image_log_det(lambda v: layer(v)[0], x), atol=1e-10, rtol=0)


def test_lu_conv_log_det_is_slogdet_of_its_weight():
    layer = LAYERS["conv1x1_lu"]()
    w = layer.weight().numpy()
    _, log_abs = torch.linalg.slogdet(torch.from_numpy(w))
    np.testing.assert_allclose(layer.log_abs_det_weight().numpy(), log_abs.numpy(), atol=1e-12)
    x = images(shape=(3, 2, 4))
    np.testing.assert_allclose(layer(x)[1].numpy(), 6 * log_abs.numpy() * np.ones(2), atol=1e-10)
    np.testing.assert_allclose(layer(x)[0].numpy(), x.numpy() @ w.T, atol=1e-12)
    # P fixed, L unit lower, U upper: the factors reproduce W
    p = np.asarray(layer.permutation)
    lower = np.tril(layer.lower.numpy(), -1) + np.eye(4)
    upper = np.triu(layer.upper.numpy(), 1) + np.diag(np.asarray(layer.sign_s) * np.exp(layer.log_s.numpy()))
    np.testing.assert_allclose(p @ lower @ upper, w, atol=1e-12)
    # a fresh layer starts as a rotation
    fresh = InvertibleConv1x1()
    fresh.build((None, 1, 1, 5))
    start = fresh.weight().numpy().astype(np.float64)
    np.testing.assert_allclose(start @ start.T, np.eye(5), atol=1e-5)


def torch_coupling(x, w1, b1, w2, b2, w3, b3):
    """Glow's reference coupling (shift and scale interleaved, sigmoid(s + 2)) in NCHW torch."""
    def conv(h, w, b, pad):
        return torch.nn.functional.conv2d(h, w.permute(0, 3, 1, 2), b, padding=pad)
    xc = x.permute(0, 3, 1, 2)
    kept, moved = xc[:, :2], xc[:, 2:]
    h = conv(torch.relu(conv(torch.relu(conv(kept, w1, b1, 1)), w2, b2, 0)), w3, b3, 1)
    shift, scale = h[:, 0::2], torch.sigmoid(h[:, 1::2] + 2.0)
    y = torch.cat([kept, (moved + shift) * scale], dim=1).permute(0, 2, 3, 1)
    return y, torch.log(scale).sum(dim=(1, 2, 3))


def test_coupling_and_conv1x1_match_torch():
    layer = randomized(AffineCoupling2D(hidden=3), (3, 3, 4), seed=5)
    names = [n for n, _ in layer.named_parameters()]
    convs = [layer.net.conv2d, layer.net.conv2d_1, layer.net.conv2d_2]

    def ours(x, *params):
        for conv, (w, b) in zip(convs, zip(params[0::2], params[1::2])):
            swap_in(conv, "weight", w)
            swap_in(conv, "bias", b)
        return list(layer(x))

    arrays = [p.numpy() for _, p in layer.named_parameters()]
    assert len(names) == 6
    compare_with_torch(ours, torch_coupling, randn(2, 3, 3, 4, seed=6), *arrays, dtype=np.float64)

    conv = LAYERS["conv1x1_lu"]()

    def conv_ours(x, lower, upper, log_s):
        for name, value in (("lower", lower), ("upper", upper), ("log_s", log_s)):
            swap_in(conv, name, value)
        return list(conv(x))

    def conv_torch(x, lower, upper, log_s):
        eye = torch.eye(4, dtype=x.dtype)
        p = torch.from_numpy(np.asarray(conv.permutation))
        w = p @ (torch.tril(lower, -1) + eye) @ (torch.triu(upper, 1)
                                                  + torch.diag(torch.from_numpy(np.asarray(conv.sign_s)) * log_s.exp()))
        return x @ w.T, torch.full((x.shape[0],), 4.0, dtype=x.dtype) * torch.linalg.slogdet(w)[1]

    compare_with_torch(conv_ours, conv_torch, randn(2, 2, 2, 4, seed=7), conv.lower.numpy(), conv.upper.numpy(),
                       conv.log_s.numpy(), dtype=np.float64)


def tiny_glow(seed=0, spread=0.2):
    lamina.manual_seed(seed)
    return randomized(Glow(levels=2, depth=2, hidden=4), (4, 4, 2), seed=seed, spread=spread)


def gaussian(z, mean=0.0, log_scale=0.0):
    terms = -0.5 * math.log(2 * math.pi) - log_scale - 0.5 * ((z - mean) * np.exp(-log_scale)) ** 2
    return terms.reshape(len(z), -1).sum(axis=1)


def test_log_prob_is_the_hand_composed_sum_and_inverse_is_exact():
    glow = tiny_glow()
    x = images(3, (4, 4, 2), seed=8)
    total, h = np.zeros(3), x
    for level in range(2):
        h, _ = glow.squeeze(h)
        for step in glow.steps[level]:
            for layer in step.layers:
                h, log_det = layer(h)
                total += log_det.numpy()
        if level == 0:
            kept, out = h[..., :4], h[..., 4:]
            mean, log_scale = (v.numpy() for v in glow.splits[0].prior(kept))
            assert np.abs(mean).max() > 0 and np.abs(log_scale).max() > 0
            total += gaussian(out.numpy(), mean, log_scale)
            h = kept
    total += gaussian(h.numpy())
    np.testing.assert_allclose(glow.log_prob(x).numpy(), total, atol=1e-10, rtol=0)
    latents, _ = glow(x)
    assert [z.shape for z in latents] == [(3, 2, 2, 4), (3, 1, 1, 16)]
    np.testing.assert_allclose(glow.inverse(latents).numpy(), x.numpy(), atol=1e-10, rtol=0)
    dims = 32
    np.testing.assert_allclose(glow.bits_per_dim(x, n_bits=5).numpy(),
                               (-total + dims * 5 * math.log(2)) / (dims * math.log(2)), atol=1e-10)
    assert check_gradients(lambda v: glow.log_prob(v).sum(), randn(2, 4, 4, 2, seed=9))


def test_sampling_and_temperature():
    glow = tiny_glow(1, spread=0.05)
    samples = glow.sample(4, temperature=0.7)
    assert samples.shape == (4, 4, 4, 2) and samples.dtype == np.float64
    assert np.isfinite(samples.numpy()).all() and samples.numpy().std() > 0
    # at temperature 0 every latent is its prior's mean: the same image each time
    still = glow.sample(2, temperature=0.0).numpy()
    np.testing.assert_allclose(still[0], still[1], atol=1e-12)
    # samples are the images of the latents drawn
    lamina.manual_seed(3)
    drawn = glow.sample(2, temperature=1.0)
    latents, _ = glow(drawn)
    np.testing.assert_allclose(glow.inverse(latents).numpy(), drawn.numpy(), atol=1e-10)


def test_actnorm2d_data_dependent_init_and_dequantize():
    layer = ActNorm2D()
    layer.build((None, 3, 3, 2))
    layer.double()
    x = lamina.tensor(randn(8, 3, 3, 2, seed=10) * 3 + 1.5, dtype=np.float64)
    y, _ = layer(x)
    flat = y.numpy().reshape(-1, 2)
    np.testing.assert_allclose(flat.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(flat.std(axis=0), 1.0, atol=1e-4)
    again, _ = layer(x * 2.0)                      # no second initialization
    assert np.abs(again.numpy().reshape(-1, 2).std(axis=0) - 2.0).max() < 1e-3
    k = np.random.default_rng(0).integers(0, 256, (50, 4, 4, 1))
    x5 = dequantize(k, n_bits=5, rng=np.random.default_rng(1))
    assert x5.min() >= -0.5 and x5.max() < 0.5
    np.testing.assert_array_equal(np.floor((x5 + 0.5) * 32), k // 8)
    with pytest.raises(ValueError, match="integers in"):
        dequantize(np.array([0, 256]))


def test_errors():
    with pytest.raises(ShapeError, match="divisible by 2 to squeeze.*3x4"):
        Squeeze2D()(lamina.tensor(np.zeros((1, 3, 4, 1))))
    with pytest.raises(ShapeError, match=r"divisible by 2\^levels = 4.*6x6"):
        Glow(levels=2, depth=1, hidden=4).build((None, 6, 6, 1))
    glow = Glow(levels=1, depth=1, hidden=4)
    glow.build((None, 2, 2, 3))
    with pytest.raises(ShapeError, match=r"expected \(batch, 2, 2, 3\)"):
        glow.log_prob(lamina.tensor(np.zeros((1, 2, 2, 2))))
    with pytest.raises(ShapeError, match="at least 2 channels"):
        AffineCoupling2D(4).build((None, 2, 2, 1))
    layer = InvertibleConv1x1()
    layer.build((None, 2, 2, 3))
    with pytest.raises(ShapeError, match=r"expected \(batch, height, width, 3\)"):
        layer(lamina.tensor(np.zeros((1, 2, 2, 4))))


def test_tiny_glow_improves_bits_per_dim_on_digits():
    levels = np.minimum(load_digits().images, 15).astype(np.int64)[..., None]      # 4-bit 8x8 digits
    lamina.manual_seed(0)
    glow = Glow(levels=2, depth=2, hidden=16)
    glow.build((None, 8, 8, 1))
    held_out = lamina.tensor(dequantize(levels[-200:], n_bits=4, input_bits=4,
                                        rng=np.random.default_rng(1)).astype(np.float32))
    rng = np.random.default_rng(0)
    optimizer = Adam(glow.parameters(), lr=2e-3)
    start = time.perf_counter()
    first = None
    for _ in range(30):
        batch = dequantize(levels[rng.choice(len(levels) - 200, 64)], n_bits=4, input_bits=4, rng=rng)
        loss = glow.bits_per_dim(lamina.tensor(batch.astype(np.float32)), n_bits=4).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        first = float(loss.item()) if first is None else first
    glow.eval()
    with lamina.no_grad():
        final = float(glow.bits_per_dim(held_out, n_bits=4).numpy().mean())
    print(f"tiny Glow on 4-bit 8x8 digits: {first:.3f} bits/dim on the first batch, {final:.3f} held out after "
          f"30 steps ({time.perf_counter() - start:.1f} s)")
    assert final < first - 0.3


def test_readme_flows_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    printed, _ = run_readme_section("More normalizing flows: Glow")
    nll = float(re.search(r"spline flow NLL ([-\d.]+)", printed).group(1))
    assert nll < 1.5                                 # a Gaussian fit of the moons scores about 1.89
    assert "bits/dim" in printed and "CNF log p" in printed


def test_config_and_weights_round_trip():
    from lamina.nn.layer import layer_from_config, layer_to_config

    glow = tiny_glow(2)
    copy = layer_from_config(layer_to_config(glow))
    assert (copy.levels, copy.depth, copy.hidden, copy.lu) == (2, 2, 4, True)
    copy.build((None, 4, 4, 2))
    copy.double().eval()
    copy.load_state_dict(glow.state_dict())
    x = images(2, (4, 4, 2), seed=12)
    np.testing.assert_array_equal(copy.log_prob(x).numpy(), glow.log_prob(x).numpy())
