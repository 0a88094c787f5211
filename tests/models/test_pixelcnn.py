"""PixelCNN and GatedPixelCNN: dependency sets by gradients (causal, channel-ordered, the
PixelCNN blind spot, none for the gated model), a gated layer against a PyTorch
re-implementation (float64) and a gradient check, the likelihood against PyTorch's
cross-entropy, learning binarised digits below an independent-pixel baseline, sampling, class
conditioning and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
from helpers import assert_close, check_gradients, compare_with_torch, randn
from lamina import models, optim
from lamina.errors import ShapeError


def _seen(model, size, i, j, out_channel=None, labels=None):
    """Which (pixel, input channel) the logits at (i, j) depend on: (size, size, C)."""
    c, d = model.channels, model.embedding_dim
    seen = np.zeros((size, size, c), dtype=bool)
    for seed in (0, 1):
        features = lamina.tensor(randn(1, size, size, c * d, seed=seed), requires_grad=True, dtype=np.float64)
        logits = model.logits_from_features(features, labels).reshape(1, size, size, c, model.levels)
        picked = logits[0, i, j] if out_channel is None else logits[0, i, j, out_channel]
        weights = lamina.tensor(randn(*picked.shape, seed=seed + 5), dtype=np.float64)
        (grad,) = lamina.autograd.grad((picked * weights).sum(), [features])
        seen |= (np.abs(np.asarray(grad)[0]) > 0).reshape(size, size, c, d).any(-1)
    return seen


def _before(size, i, j):
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    return (rows < i) | ((rows == i) & (cols < j))


def test_pixelcnn_is_causal_per_channel_and_has_a_blind_spot():
    lamina.set_default_dtype(np.float64)
    size = 5
    model = models.PixelCNN(levels=3, channels=3, hidden=12, num_blocks=2, kernel_size=3, embedding_dim=2)
    for i in range(size):
        for j in range(size):
            for c in range(3):
                seen = _seen(model, size, i, j, out_channel=c)
                later = ~_before(size, i, j)
                later[i, j] = False
                assert not seen[later].any(), f"pixel ({i}, {j}) channel {c} reads a later pixel"
                np.testing.assert_array_equal(seen[i, j], np.arange(3) < c)         # earlier channels only
    deep = models.PixelCNN(levels=2, hidden=8, num_blocks=4, kernel_size=3, embedding_dim=2)
    seen = _seen(deep, 7, 4, 3)[..., 0]
    assert not seen[~_before(7, 4, 3)].any()
    assert seen[0].all()                                  # the receptive field covers the top rows
    assert not seen[3, 5:].any()                          # but not the pixels up and to the right


@pytest.mark.parametrize("kernel_size", [3, 5])
def test_gated_pixelcnn_sees_exactly_the_previous_pixels(kernel_size):
    lamina.set_default_dtype(np.float64)
    size = 5
    layers = 2 * size // (kernel_size // 2) + 1
    model = models.GatedPixelCNN(levels=2, channels=2, hidden=16, num_layers=layers, kernel_size=kernel_size,
                                 num_classes=2, embedding_dim=2)
    for i in range(size):
        for j in range(size):
            seen = _seen(model, size, i, j, labels=np.array([1]))
            expected = np.repeat(_before(size, i, j)[..., None], 2, axis=-1)
            np.testing.assert_array_equal(seen, expected, err_msg=f"pixel ({i}, {j})")


def _torch_gated_layer(layer, v, h, labels, first):
    def conv(x, conv_layer):
        weight = torch.tensor(conv_layer.weight.numpy()).permute(0, 3, 1, 2)
        out = TF.conv2d(x.permute(0, 3, 1, 2), weight, torch.tensor(conv_layer.bias.numpy()))
        return out.permute(0, 2, 3, 1)

    def gate(x):
        a, b = x.chunk(2, dim=-1)
        return torch.tanh(a) * torch.sigmoid(b)

    k = layer.kernel_size // 2
    height, width = v.shape[1], v.shape[2]
    v_features = conv(TF.pad(v, (0, 0, k, k, k, 0)), layer.vertical)
    shifted = TF.pad(v_features, (0, 0, 0, 0, 1, 0))[:, :height]
    h_features = conv(TF.pad(h, (0, 0, k, 0)), layer.horizontal)[:, :, :width]
    h_features = h_features + conv(shifted, layer.vertical_to_horizontal)
    v_features = v_features + torch.tensor(layer.class_vertical.weight.numpy()[labels])[:, None, None]
    h_features = h_features + torch.tensor(layer.class_horizontal.weight.numpy()[labels])[:, None, None]
    h_out = conv(gate(h_features), layer.horizontal_out)
    return gate(v_features), h_out if first else h + h_out


@pytest.mark.parametrize("first", [True, False])
def test_gated_layer_matches_torch(first):
    lamina.set_default_dtype(np.float64)
    layer = models.GatedPixelCNNLayer(3, kernel_size=5, first=first, num_classes=4)
    v, h, labels = randn(2, 5, 4, 3, seed=1), randn(2, 5, 4, 3, seed=2), np.array([3, 1])
    layer(lamina.tensor(v), lamina.tensor(h), labels)
    for table in (layer.class_vertical, layer.class_horizontal):
        table.weight.data = randn(*table.weight.shape, seed=3)
    compare_with_torch(lambda v, h: layer(v, h, labels), lambda v, h: _torch_gated_layer(layer, v, h, labels, first),
                       v, h, dtype=np.float64)


def test_gated_layer_gradcheck():
    lamina.set_default_dtype(np.float64)
    layer = models.GatedPixelCNNLayer(2, kernel_size=3, num_classes=2)
    v, h = randn(1, 3, 3, 2, seed=4), randn(1, 3, 3, 2, seed=5)
    layer(lamina.tensor(v), lamina.tensor(h), np.array([1]))

    def both(v, h):
        v_out, h_out = layer(v, h, np.array([1]))
        return v_out * 2.0 + h_out
    assert check_gradients(both, v, h)


def test_bits_per_dim_matches_torch_cross_entropy():
    model = models.GatedPixelCNN(levels=4, channels=2, hidden=8, num_layers=2)
    x = np.random.default_rng(0).integers(0, 4, (3, 4, 5, 2))
    logits = model(x).numpy()
    expected = TF.cross_entropy(torch.tensor(logits).reshape(-1, 4), torch.tensor(x).reshape(-1)).item() / math.log(2)
    assert model.bits_per_dim(x).item() == pytest.approx(expected, rel=1e-5)
    assert_close(model.log_prob(x).numpy(), -TF.cross_entropy(torch.tensor(logits).reshape(-1, 4),
                 torch.tensor(x).reshape(-1), reduction="none").reshape(3, -1).sum(1).numpy(), 1e-5)


@pytest.fixture(scope="module")
def binary_digits():
    x, y = lamina.data.load_digits(size=8)
    x = (x[..., 0] > 127).astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    return x[order[:1400]], y[order[:1400]], x[order[1400:]], y[order[1400:]]


def _independent_pixel_bits(train, test):
    """Bits/dim of the best model that ignores the other pixels: one Bernoulli per position."""
    p = (train.mean(0) * len(train) + 1) / (len(train) + 2)
    return float(-(test * np.log2(p) + (1 - test) * np.log2(1 - p)).mean())


@pytest.mark.parametrize("make, steps", [
    (lambda: models.PixelCNN(levels=2, hidden=8, num_blocks=1, kernel_size=5), 150),
    (lambda: models.GatedPixelCNN(levels=2, hidden=8, num_layers=3, kernel_size=3, num_classes=10), 100),
])
def test_learns_binarised_digits(binary_digits, make, steps):
    train, train_labels, test, test_labels = binary_digits
    model = make()
    conditional = model.num_classes if isinstance(model, models.GatedPixelCNN) else None
    model(train[:2], train_labels[:2] if conditional else None)
    opt = optim.Adam(model, lr=2e-2)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        batch = rng.integers(0, len(train), 32)
        loss = model.bits_per_dim(train[batch], train_labels[batch] if conditional else None)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    bits = model.bits_per_dim(test, test_labels if conditional else None).item()
    baseline = _independent_pixel_bits(train, test)
    assert bits < 0.9 * baseline, (bits, baseline)          # about 0.57 bits/dim
    samples = model.sample((4, 8, 8), labels=np.array([0, 1, 2, 3]) if conditional else None, seed=0)
    assert samples.shape == (4, 8, 8) and samples.dtype.kind == "i"
    assert set(np.unique(samples)) <= {0, 1}


def test_sampling_is_seeded_and_conditional():
    model = models.GatedPixelCNN(levels=5, channels=2, hidden=8, num_layers=2, num_classes=3)
    labels = np.array([0, 2])
    a = model.sample((2, 3, 4, 2), labels=labels, seed=3)
    assert a.shape == (2, 3, 4, 2) and a.min() >= 0 and a.max() < 5
    np.testing.assert_array_equal(a, model.sample((2, 3, 4, 2), labels=labels, seed=3))
    for table in (model.layers[0].class_vertical, model.layers[0].class_horizontal):
        table.weight.data = randn(*table.weight.shape, seed=1, scale=3.0).astype(np.float32)
    x = np.zeros((1, 3, 4, 2), int)
    assert not np.allclose(model(x, np.array([0])).numpy(), model(x, np.array([1])).numpy())
    ordered = models.PixelCNN(levels=3, channels=3, hidden=6, num_blocks=1)
    assert ordered.sample((1, 2, 2, 3), seed=0).shape == (1, 2, 2, 3)


def test_errors_name_the_model():
    model = models.PixelCNN(levels=2)
    with pytest.raises(ValueError, match=r"PixelCNN.*\[0, 2\).*\[0, 3\]"):
        model(np.array([[[0, 3]]]))
    with pytest.raises(ShapeError, match=r"PixelCNN.*\(N, H, W, 1\)"):
        model(np.zeros((1, 2, 2, 3), int))
    with pytest.raises(TypeError, match="PixelCNN: pixels must be integer"):
        model(np.full((1, 2, 2), 0.5))
    gated = models.GatedPixelCNN(levels=2, num_classes=3)
    with pytest.raises(ValueError, match=r"GatedPixelCNN.*needs labels"):
        gated(np.zeros((1, 2, 2), int))
    with pytest.raises(ValueError, match=r"GatedPixelCNN.*labels must be 1 ints in \[0, 3\)"):
        gated(np.zeros((1, 2, 2), int), np.array([3]))
    with pytest.raises(ValueError, match="GatedPixelCNNLayer: kernel_size must be an odd int >= 3"):
        models.GatedPixelCNN(levels=2, kernel_size=4)
    with pytest.raises(ShapeError, match=r"GatedPixelCNN.*\.sample"):
        gated.sample((2, 3))
