"""conv2d with a stride and a dilation together (PyTorch allows both): values and gradients
against torch in float64 over stride x dilation x padding x odd/even sizes x groups,
numerical gradients, second derivatives, the layers that pass both, and the size errors."""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
import lamina.functional as F
from helpers import check_gradients, check_second_derivatives, compare_with_torch, randn
from lamina import ShapeError, nn


def torch_conv(stride, padding, dilation, groups):
    """PyTorch's conv2d on channels-last tensors; ``padding`` is an int or (p_h, p_w)."""
    def fn(x, w, b=None):
        v = TF.conv2d(x.permute(0, 3, 1, 2), w.permute(0, 3, 1, 2), b, stride=stride, padding=padding,
                      dilation=dilation, groups=groups)
        return v.permute(0, 2, 3, 1)
    return fn


def _arrays(n, h, w, c, k, fh, fw, groups, seed=0):
    return (randn(n, h, w, c, seed=seed), randn(k, fh, fw, c // groups, seed=seed + 1),
            randn(k, seed=seed + 2))


# (h, w, c, k, f, groups): odd and even sizes; plain, grouped, depthwise and depthwise with a multiplier
SHAPES = [(9, 10, 3, 4, 3, 1), (8, 11, 4, 4, 2, 2), (10, 9, 4, 4, 3, 4), (7, 8, 2, 6, 3, 2)]
GEOMETRY = list(itertools.product([2, 3, (2, 1)], [2, 3, (3, 2)], [0, 1, 2]))      # stride x dilation x padding


def _shape_id(shape):
    h, w, c, k, f, g = shape
    return f"{h}x{w}x{c}-k{k}-f{f}-g{g}"


@pytest.mark.parametrize("shape", SHAPES, ids=_shape_id)
def test_strided_dilated_conv2d_matches_torch(shape):
    h, w, c, k, f, g = shape
    x, wt, b = _arrays(2, h, w, c, k, f, f, g)
    checked = 0
    for stride, dilation, padding in GEOMETRY:
        d = (dilation, dilation) if isinstance(dilation, int) else dilation
        if d[0] * (f - 1) + 1 > h + 2 * padding or d[1] * (f - 1) + 1 > w + 2 * padding:
            continue
        out = compare_with_torch(
            functools.partial(F.conv2d, stride=stride, padding=padding, dilation=dilation, groups=g),
            torch_conv(stride, padding, dilation, g), x, wt, b, dtype=np.float64, rtol=1e-10)
        s = (stride, stride) if isinstance(stride, int) else stride
        expected = tuple((n + 2 * padding - di * (f - 1) - 1) // si + 1 for n, di, si in zip((h, w), d, s))
        assert out[0].shape == (2, *expected, k)
        checked += 1
    assert checked >= 20


@pytest.mark.parametrize("padding", ["same", ((0, 2), (1, 0))])
def test_strided_dilated_conv2d_same_and_uneven_padding(padding):
    x, wt, b = _arrays(2, 9, 8, 3, 4, 3, 3, 1)
    if padding == "same":
        pads = (2, 2, 1, 2)          # extent 5, outputs ceil(9 / 2) = 5 and ceil(8 / 2) = 4 (TF's rule)
    else:
        pads = (0, 2, 1, 0)

    def theirs(x_, w_, b_):
        padded = TF.pad(x_.permute(0, 3, 1, 2), (pads[2], pads[3], pads[0], pads[1]))
        return TF.conv2d(padded, w_.permute(0, 3, 1, 2), b_, stride=2, dilation=2).permute(0, 2, 3, 1)

    out = compare_with_torch(lambda x_, w_, b_: F.conv2d(x_, w_, b_, stride=2, padding=padding, dilation=2),
                             theirs, x, wt, b, dtype=np.float64, rtol=1e-10)
    if padding == "same":
        assert out[0].shape == (2, 5, 4, 4)


@pytest.mark.parametrize("case", [(7, 8, 2, 3, 3, 1, 2, 2, 1), (8, 7, 3, 3, 3, 3, (2, 1), (1, 2), 2),
                                  (6, 7, 4, 4, 2, 2, 3, 2, 0)])
def test_strided_dilated_conv2d_gradcheck(case):
    h, w, c, k, f, g, stride, dilation, padding = case
    x, wt, b = _arrays(1, h, w, c, k, f, f, g)
    fn = lambda x_, w_, b_: F.conv2d(x_, w_, b_, stride=stride, padding=padding, dilation=dilation, groups=g)  # noqa: E731
    assert check_gradients(fn, x, wt, b)
    assert check_second_derivatives(fn, randn(1, 5, 6, c, seed=4), wt, b)


def test_strided_dilated_conv2d_takes_plain_arrays_and_keeps_float32():
    x, wt, b = (a.astype(np.float32) for a in _arrays(2, 9, 9, 3, 4, 3, 3, 1))
    out = F.conv2d(x, wt, b, stride=2, dilation=2, padding=1)
    expected = torch_conv(2, 1, 2, 1)(*(torch.tensor(a) for a in (x, wt, b)))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)


def test_strided_dilated_conv2d_too_large_kernel_is_a_clear_error():
    x, w = np.zeros((1, 6, 6, 2), np.float32), np.zeros((3, 3, 3, 2), np.float32)
    with pytest.raises(ShapeError, match=r"kernel 3x3 \(dilated by \(3, 3\): 7x7\).*larger than the padded input 6x6"):
        F.conv2d(x, w, stride=2, dilation=3)


def test_conv_layers_accept_a_stride_with_a_dilation():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 11, 10, 4))
    conv = nn.Conv2D(5, 3, stride=2, dilation=2, padding="same")
    depthwise = nn.DepthwiseConv2D(3, stride=2, dilation=(2, 3), padding="same")
    separable = nn.SeparableConv2D(6, 3, stride=2, dilation=2, padding="valid")
    for layer in (conv, depthwise, separable):
        layer.build((None, 11, 10, 4))
    assert conv(lamina.tensor(x, dtype=np.float32)).shape == (2, 6, 5, 5)
    assert depthwise(lamina.tensor(x, dtype=np.float32)).shape == (2, 6, 5, 4)
    assert separable(lamina.tensor(x, dtype=np.float32)).shape == (2, 4, 3, 6)
    rebuilt = nn.Conv2D.from_config(conv.get_config())
    assert (rebuilt.stride, rebuilt.dilation) == ((2, 2), (2, 2))
    weight = torch.tensor(conv.weight.numpy()).permute(0, 3, 1, 2)
    padded = TF.pad(torch.tensor(x, dtype=torch.float32).permute(0, 3, 1, 2), (1, 2, 2, 2))     # TF's 'same'
    expected = TF.conv2d(padded, weight,
                         torch.tensor(conv.bias.numpy()), stride=2, dilation=2).permute(0, 2, 3, 1)
    np.testing.assert_allclose(conv(lamina.tensor(x, dtype=np.float32)).numpy(), expected.numpy(),
                               rtol=1e-5, atol=1e-5)


def test_conv1d_layer_and_function_accept_a_stride_with_a_dilation():
    rng = np.random.default_rng(4)
    x, w, b = rng.standard_normal((2, 13, 3)), rng.standard_normal((4, 3, 3)), rng.standard_normal(4)

    def theirs(x_, w_, b_):
        return TF.conv1d(x_.transpose(1, 2), w_.permute(0, 2, 1), b_, stride=2, padding=1, dilation=3).transpose(1, 2)

    compare_with_torch(lambda x_, w_, b_: F.conv1d(x_, w_, b_, stride=2, padding=1, dilation=3), theirs, x, w, b,
                       dtype=np.float64, rtol=1e-10)
    layer = nn.Conv1D(4, 3, stride=2, dilation=3, padding="causal")
    layer.build((None, 13, 3))
    assert layer(lamina.tensor(x, dtype=np.float32)).shape == (2, 7, 4)
