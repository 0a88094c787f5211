"""Both ways conv3d computes (depth planes and im2col), each forced on the same cases: values
and the gradients of x, w and b against PyTorch, float64 gradient checks, which one the shape
selects, and the patches kept or rebuilt for dJ/dw."""

import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
from helpers import assert_close, check_gradients, compare_with_torch, randn
from lamina.functional.conv3d import conv3d
from lamina.functional.conv_transpose_nd import conv_transpose3d

conv3d_module = sys.modules["lamina.functional.conv3d"]      # the package re-exports the function


def _three(v):
    return tuple(v) if isinstance(v, tuple) else (v, v, v)


def _torch_pads(padding, shape, kernel, stride, dilation):
    """((front, back), (top, bottom), (left, right)) as PyTorch is given them."""
    if padding == "valid":
        return [(0, 0)] * 3
    if padding == "same":                     # TF/Keras: ceil(n / s) outputs, the odd value after
        pads = []
        for n, f, s, d in zip(shape[1:4], kernel, stride, dilation):
            total = max((-(-n // s) - 1) * s + d * (f - 1) + 1 - n, 0)
            pads.append((total // 2, total - total // 2))
        return pads
    if isinstance(padding, tuple) and isinstance(padding[0], tuple):
        return list(padding)
    return [(p, p) for p in _three(padding)]


def torch_conv3d(x, w, b, stride, padding, groups, dilation):
    """PyTorch's conv3d on an NDHWC tensor with lamina's (K, f_d, f_h, f_w, c) weights."""
    pads = _torch_pads(padding, x.shape, w.shape[1:4], _three(stride), _three(dilation))
    xt = TF.pad(x.permute(0, 4, 1, 2, 3), [p for pair in reversed(pads) for p in pair])   # last axis first
    out = TF.conv3d(xt, w.permute(0, 4, 1, 2, 3), b, stride=stride, groups=groups, dilation=dilation)
    return out.permute(0, 2, 3, 4, 1)


CASES = {
    # name: (x shape NDHWC, K, kernel, stride, padding, dilation)
    "same_3x3x3": ((2, 5, 6, 7, 3), 4, 3, 1, "same", 1),
    "valid_odd": ((2, 5, 7, 6, 3), 2, 3, 1, "valid", 1),
    "same_even_kernel": ((1, 6, 5, 7, 2), 3, 2, 1, "same", 1),
    "explicit_hw_stride2": ((2, 6, 7, 8, 3), 4, 3, (1, 2, 2), 1, 1),
    "same_stride2": ((1, 7, 6, 9, 2), 3, 3, 2, "same", 1),
    "explicit_depth_stride2": ((1, 8, 5, 5, 2), 3, (3, 2, 2), (2, 1, 1), (1, 0, 1), 1),
    "anisotropic": ((1, 7, 6, 5, 2), 3, (2, 3, 1), (1, 2, 3), (0, 1, 2), 1),
    "dilated_same": ((1, 9, 8, 7, 2), 3, 3, 1, "same", (2, 1, 2)),
    "dilated_strided": ((2, 9, 9, 8, 2), 2, 2, (1, 2, 2), 1, 2),
    "padding_wider_than_kernel": ((1, 4, 5, 4, 2), 3, 2, 1, 3, 1),
    "asymmetric_pairs": ((1, 5, 6, 5, 3), 2, 3, 1, ((2, 0), (0, 1), (1, 2)), 1),
    "kernel_depth_one": ((2, 4, 6, 6, 3), 4, (1, 3, 3), 1, "same", 1),
    "pointwise": ((2, 3, 4, 5, 3), 5, 1, 1, "valid", 1),
    "kernel_fills_depth": ((1, 3, 6, 6, 2), 3, (3, 3, 3), 1, "valid", 1),
}


def _recording(monkeypatch, way=None) -> list:
    """The ways conv3d takes from now on, in call order (``way`` forced when given)."""
    chosen, choose = [], conv3d_module.algorithm

    def recorded(*shapes):
        chosen.append(way or choose(*shapes))
        return chosen[-1]

    monkeypatch.setattr(conv3d_module, "algorithm", recorded)
    return chosen


def _inputs(name, groups=1):
    shape, k, kernel, *_ = CASES[name]
    fd, fh, fw = _three(kernel)
    return randn(*shape, seed=1), randn(k, fd, fh, fw, shape[-1] // groups, seed=2), randn(k, seed=3)


@pytest.mark.parametrize("way", ["planes", "im2col"])
@pytest.mark.parametrize("name", list(CASES))
def test_each_way_matches_torch_values_and_gradients(name, way, monkeypatch):
    chosen = _recording(monkeypatch, way)
    _, _, _, stride, padding, dilation = CASES[name]
    compare_with_torch(
        lambda x_, w_, b_: conv3d(x_, w_, b_, stride=stride, padding=padding, dilation=dilation),
        lambda x_, w_, b_: torch_conv3d(x_, w_, b_, stride, padding, 1, dilation),
        *_inputs(name))
    assert chosen == [way]


@pytest.mark.parametrize("name", ["same_3x3x3", "explicit_depth_stride2", "dilated_strided", "asymmetric_pairs"])
def test_planes_gradcheck(name, monkeypatch):
    chosen = _recording(monkeypatch, "planes")
    _, _, kernel, stride, padding, dilation = CASES[name]
    x, w, b = _inputs(name)
    x = x[:1, :6, :5, :5]                                        # small enough for centred differences
    assert check_gradients(
        lambda x_, w_, b_: conv3d(x_, w_, b_, stride=stride, padding=padding, dilation=dilation), x, w, b)
    assert set(chosen) == {"planes"}


@pytest.mark.parametrize("shape, kernel, stride, padding, groups, expected", [
    ((1, 5, 5, 5, 4), 3, 1, "same", 1, "planes"),
    ((1, 5, 6, 6, 4), 3, (1, 2, 2), "same", 1, "planes"),
    ((1, 4, 5, 5, 4), (3, 1, 3), 1, "same", 1, "planes"),
    ((1, 5, 5, 5, 4), 3, (2, 1, 1), "same", 1, "im2col"),       # depth stride 2
    ((1, 5, 5, 5, 4), 3, 1, "same", 2, "im2col"),               # groups
    ((1, 5, 5, 5, 4), 3, 1, "same", 4, "im2col"),               # depthwise
    ((1, 5, 5, 5, 4), (3, 1, 1), 1, "same", 1, "im2col"),       # no (h, w) window
    ((1, 5, 5, 5, 4), (1, 3, 3), 1, "same", 1, "im2col"),       # one depth tap
    ((1, 3, 6, 6, 4), 3, 1, "valid", 1, "im2col"),              # 3 padded planes per output plane
    ((1, 2, 6, 6, 4), 3, 1, "same", 1, "im2col"),               # 2 per output plane
])
def test_the_shape_chooses_the_way(shape, kernel, stride, padding, groups, expected, monkeypatch):
    chosen = _recording(monkeypatch)
    w = randn(4, *_three(kernel), shape[-1] // groups, seed=5)
    conv3d(lamina.tensor(randn(*shape, seed=4)), w, padding=padding, stride=stride, groups=groups)
    assert chosen == [expected]


@pytest.mark.parametrize("groups", [1, 2, 4])
@pytest.mark.parametrize("name", ["same_3x3x3", "explicit_hw_stride2"])
def test_groups_under_the_default_choice_match_torch(name, groups):
    shape, _, kernel, stride, padding, dilation = CASES[name]
    x, w, b = randn(*shape[:4], 4, seed=6), randn(4, *_three(kernel), 4 // groups, seed=7), randn(4, seed=8)
    compare_with_torch(
        lambda x_, w_, b_: conv3d(x_, w_, b_, stride=stride, padding=padding, groups=groups, dilation=dilation),
        lambda x_, w_, b_: torch_conv3d(x_, w_, b_, stride, padding, groups, dilation), x, w, b)


@pytest.mark.parametrize("batch", [1, 3])
def test_planes_on_volumes_large_enough_for_threads_match_torch(batch, monkeypatch):
    chosen = _recording(monkeypatch)
    x, w, b = randn(batch, 10, 11, 12, 8, seed=9), randn(6, 3, 3, 3, 8, seed=10, scale=0.2), randn(6, seed=11)
    compare_with_torch(lambda x_, w_, b_: conv3d(x_, w_, b_, padding="same"),
                       lambda x_, w_, b_: torch_conv3d(x_, w_, b_, 1, "same", 1, 1), x, w, b)
    assert chosen == ["planes"]


def test_planes_keep_patches_only_for_a_weight_gradient_and_rebuild_them():
    x = lamina.tensor(randn(2, 7, 4, 6, 2, seed=12), requires_grad=True, dtype=np.float64)
    w_fixed = lamina.tensor(randn(3, 3, 2, 3, 2, seed=13), dtype=np.float64)
    fixed = conv3d(x, w_fixed, padding=1, dilation=(2, 1, 1))
    assert fixed._ctx.algorithm == "planes" and fixed._ctx.patches is None
    fixed.sum().backward()
    assert x.grad is not None and w_fixed.grad is None

    w = lamina.tensor(w_fixed.numpy(), requires_grad=True, dtype=np.float64)
    out = conv3d(lamina.tensor(x.numpy()), w, padding=1, dilation=(2, 1, 1))      # x needs no gradient
    assert out._ctx.patches is not None
    up = randn(*out.shape, seed=14)
    out.backward(up, retain_graph=True)
    assert out._ctx.patches is None                                              # dropped once dJ/dw has it
    first = w.grad.copy()
    out.backward(up)                                                              # rebuilt from x
    assert_close(w.grad, 2 * first, 1e-12, "accumulated weight gradient")


def _empty_batch_gradients(ours, theirs, shape, w_shape, channels_out):
    """Values and dJ/dx, dJ/dw, dJ/db of an empty batch for lamina's and torch's op."""
    x, w, b = np.zeros(shape), randn(*w_shape, seed=2), randn(channels_out, seed=3)
    mine = [lamina.tensor(a, requires_grad=True, dtype=np.float64) for a in (x, w, b)]
    reference = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
    y, expected = ours(*mine), theirs(*reference)
    assert y.shape == tuple(expected.shape)
    y.backward(np.ones(y.shape))
    expected.backward(torch.ones(expected.shape, dtype=torch.float64))
    for a, t in zip(mine, reference):
        assert a.grad.shape == tuple(t.grad.shape)
        np.testing.assert_array_equal(a.grad, t.grad.numpy())


@pytest.mark.parametrize("way", ["planes", "im2col"])
@pytest.mark.parametrize("stride, padding", [(1, "valid"), (1, 1), (2, 1)])
def test_an_empty_batch_gives_empty_input_and_zero_weight_gradients_as_torch(way, stride, padding, monkeypatch):
    _recording(monkeypatch, way)
    _empty_batch_gradients(lambda x, w, b: conv3d(x, w, b, stride=stride, padding=padding),
                           lambda x, w, b: torch_conv3d(x, w, b, stride, padding, 1, 1),
                           (0, 4, 5, 4, 2), (3, 2, 3, 2, 2), 3)


@pytest.mark.parametrize("stride", [1, 2])
def test_an_empty_batch_through_a_transposed_convolution_matches_torch(stride):
    def theirs(x, w, b):
        out = TF.conv_transpose3d(x.permute(0, 4, 1, 2, 3), w.permute(0, 4, 1, 2, 3), b, stride=stride, padding=1)
        return out.permute(0, 2, 3, 4, 1)

    _empty_batch_gradients(lambda x, w, b: conv_transpose3d(x, w, b, stride=stride, padding=1), theirs,
                           (0, 3, 4, 3, 2), (2, 3, 2, 3, 4), 4)
