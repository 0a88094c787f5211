"""MaskedConv2D: the receptive field is causal (gradients of each output pixel with respect
to every input pixel, per channel group), outputs and gradients against a PyTorch masked
convolution, a float64 gradient check, and errors naming the layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
from helpers import check_gradients, compare_with_torch, randn
from lamina import nn


def _dependencies(layer, x, i, j, channels):
    """|d sum(out[0, i, j, channels]) / d x| > 0, shape x.shape[1:]."""
    x = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    out = layer(x)
    (grad,) = lamina.autograd.grad(out[0, i, j, channels].sum(), [x])
    return np.abs(np.asarray(grad)[0]) > 0


@pytest.mark.parametrize("mask_type", ["A", "B"])
@pytest.mark.parametrize("groups", [1, 3])
def test_receptive_field_is_causal(mask_type, groups):
    lamina.set_default_dtype(np.float64)
    size, f, c_in, filters = 6, 5, 3, 6
    layer = nn.MaskedConv2D(filters, f, mask_type, channel_groups=groups)
    x = randn(1, size, size, c_in, seed=1)
    layer(x)
    layer.weight.data = randn(*layer.weight.shape, seed=2) + 3.0     # no weight happens to be 0
    group_in = np.arange(c_in) * groups // c_in
    group_out = np.arange(filters) * groups // filters
    for i in range(size):
        for j in range(size):
            for g in range(groups):
                seen = _dependencies(layer, x, i, j, np.flatnonzero(group_out == g))
                rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
                before = (rows < i) | ((rows == i) & (cols < j))
                window = (np.abs(rows - i) <= f // 2) & (np.abs(cols - j) <= f // 2)
                centre = (rows == i) & (cols == j)
                own = group_in < g if mask_type == "A" else group_in <= g
                expected = (before & window)[..., None] | (centre[..., None] & own)
                np.testing.assert_array_equal(seen, expected, err_msg=f"pixel ({i}, {j}), group {g}")


def test_mask_layout():
    mask = nn.causal_mask(3, 1, 1, "A")[0, :, :, 0]
    np.testing.assert_array_equal(mask, [[1, 1, 1], [1, 0, 0], [0, 0, 0]])
    mask = nn.causal_mask(3, 1, 1, "B")[0, :, :, 0]
    np.testing.assert_array_equal(mask, [[1, 1, 1], [1, 1, 0], [0, 0, 0]])
    centre = nn.causal_mask(1, 3, 3, "A", channel_groups=3)[:, 0, 0, :]
    np.testing.assert_array_equal(centre, [[0, 0, 0], [1, 0, 0], [1, 1, 0]])


def _torch_masked(mask):
    def run(x, w, b):
        out = TF.conv2d(x.permute(0, 3, 1, 2), (w * torch.tensor(mask, dtype=w.dtype)).permute(0, 3, 1, 2), b,
                        padding=mask.shape[1] // 2)
        return out.permute(0, 2, 3, 1)
    return run


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mask_type, groups", [("A", 1), ("B", 1), ("A", 2), ("B", 2)])
def test_matches_torch(dtype, mask_type, groups):
    lamina.set_default_dtype(dtype)
    layer = nn.MaskedConv2D(4, 3, mask_type, channel_groups=groups)
    x, w, b = randn(2, 5, 4, 2, seed=3), randn(4, 3, 3, 2, seed=4), randn(4, seed=5)
    layer(x.astype(dtype))
    mask = nn.causal_mask(3, 2, 4, mask_type, groups, np.float64)
    layer.weight.data, layer.bias.data = w.astype(dtype), b.astype(dtype)
    wt, bt = torch.tensor(w.astype(dtype), requires_grad=True), torch.tensor(b.astype(dtype))
    out = compare_with_torch(layer, lambda x: _torch_masked(mask)(x, wt, bt), x, dtype=dtype)
    assert out[0].shape == (2, 5, 4, 4)
    # the weight's gradient is masked, and equal to torch's
    layer.zero_grad()
    wt.grad = None
    up = randn(2, 5, 4, 4, seed=6).astype(dtype)
    (layer(x.astype(dtype)) * lamina.tensor(up, dtype=dtype)).sum().backward()
    (_torch_masked(mask)(torch.tensor(x.astype(dtype)), wt, bt) * torch.tensor(up)).sum().backward()
    tol = 1e-10 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(layer.weight.grad, wt.grad.numpy(), rtol=tol, atol=tol)
    assert not np.any(layer.weight.grad[mask == 0])


def test_gradcheck():
    lamina.set_default_dtype(np.float64)
    layer = nn.MaskedConv2D(2, 3, "A", channel_groups=2)
    x = randn(1, 4, 3, 2, seed=7)
    layer(x)
    assert check_gradients(lambda x, w: layer.apply_weights(x, w * lamina.tensor(layer.mask)), x,
                           layer.weight.numpy())
    assert check_gradients(layer, x)


def test_errors_name_the_layer():
    with pytest.raises(ValueError, match="MaskedConv2D: kernel_size must be an odd"):
        nn.MaskedConv2D(4, 4)
    with pytest.raises(ValueError, match="MaskedConv2D: mask_type must be 'A'.*got 'C'"):
        nn.MaskedConv2D(4, 3, "C")
    with pytest.raises(ValueError, match="MaskedConv2D.*channel_groups=3"):
        nn.MaskedConv2D(4, 3, channel_groups=3)(np.zeros((1, 4, 4, 2), np.float32))
    layer = nn.MaskedConv2D(4, 3)
    layer(np.zeros((1, 4, 4, 2), np.float32))
    with pytest.raises(lamina.errors.ShapeError, match="MaskedConv2D"):
        layer(np.zeros((1, 4, 4, 3), np.float32))
