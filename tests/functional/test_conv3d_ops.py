"""3-D convolution and pooling on NDHWC volumes: values and gradients against PyTorch (which
takes NCDHW: permuted at the boundary, inside the torch side of each comparison), float64
gradient checks, and the errors for bad input."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
from helpers import assert_close, check_gradients, compare_with_torch, randn
from lamina.errors import ShapeError
from lamina.functional.conv3d import conv3d
from lamina.functional.pool3d import avg_pool3d, global_avg_pool3d, max_pool3d


def _ncdhw(t):
    return t.permute(0, 4, 1, 2, 3)


def _ndhwc(t):
    return t.permute(0, 2, 3, 4, 1)


def _three(v):
    return tuple(v) if isinstance(v, tuple) else (v, v, v)


def _same_pads(n, f, s, d):
    """TF/Keras 'same' along one axis: ceil(n / s) outputs, the odd padding value after."""
    extent = d * (f - 1) + 1
    total = max((-(-n // s) - 1) * s + extent - n, 0)
    return total // 2, total - total // 2


def torch_conv3d(x, w, b, stride, padding, groups, dilation):
    """PyTorch's conv3d on an NDHWC tensor with lamina's (K, f_d, f_h, f_w, c) weights."""
    xt = _ncdhw(x)
    if padding == "same":
        pads = [_same_pads(n, f, s, d) for n, f, s, d in
                zip(x.shape[1:4], w.shape[1:4], _three(stride), _three(dilation))]
        xt = TF.pad(xt, [p for pair in reversed(pads) for p in pair])    # torch pads the last axis first
        padding = 0
    elif padding == "valid":
        padding = 0
    return _ndhwc(TF.conv3d(xt, w.permute(0, 4, 1, 2, 3), b, stride=stride, padding=padding, groups=groups,
                            dilation=dilation))


CONV_CASES = {
    # name: (x shape NDHWC, K, kernel, stride, padding, groups, dilation)
    "valid_odd_even": ((2, 5, 6, 7, 3), 4, 3, 1, "valid", 1, 1),
    "same": ((2, 6, 6, 6, 2), 3, 3, 1, "same", 1, 1),
    "same_even_kernel": ((1, 7, 8, 5, 2), 4, 2, 1, "same", 1, 1),
    "same_stride2": ((2, 7, 6, 8, 3), 4, 3, 2, "same", 1, 1),
    "same_stride3": ((1, 9, 8, 7, 2), 3, 3, 3, "same", 1, 1),
    "explicit_stride2": ((2, 6, 7, 8, 3), 2, 3, 2, 1, 1, 1),
    "anisotropic_explicit": ((1, 8, 7, 6, 2), 3, (3, 2, 1), (1, 2, 3), (1, 0, 2), 1, 1),
    "pointwise": ((2, 4, 5, 6, 3), 5, 1, 1, "valid", 1, 1),
    "pointwise_stride2": ((1, 5, 6, 7, 3), 4, 1, 2, "valid", 1, 1),
    "kernel_311": ((2, 7, 5, 5, 2), 4, (3, 1, 1), 1, "same", 1, 1),
    "kernel_311_stride": ((1, 8, 6, 5, 3), 2, (3, 1, 1), (2, 1, 3), 1, 1, 1),
    "groups2": ((2, 6, 6, 6, 4), 6, 3, 1, 1, 2, 1),
    "depthwise": ((2, 6, 7, 6, 4), 4, 3, 2, "same", 4, 1),
    "depthwise_multiplier2": ((1, 6, 6, 6, 3), 6, 3, 1, "valid", 3, 1),
    "dilated_same": ((1, 9, 8, 9, 2), 3, 3, 1, "same", 1, 2),
    "dilated_strided": ((1, 9, 9, 9, 2), 3, 2, 2, 1, 1, (1, 2, 2)),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(CONV_CASES))
def test_conv3d_matches_torch(name, dtype):
    shape, k, kernel, stride, padding, groups, dilation = CONV_CASES[name]
    fd, fh, fw = _three(kernel)
    x = randn(*shape, seed=1)
    w = randn(k, fd, fh, fw, shape[-1] // groups, seed=2)
    b = randn(k, seed=3)
    out = compare_with_torch(
        lambda x_, w_, b_: conv3d(x_, w_, b_, stride=stride, padding=padding, groups=groups, dilation=dilation),
        lambda x_, w_, b_: torch_conv3d(x_, w_, b_, stride, padding, groups, dilation),
        x, w, b, dtype=dtype)[0]
    assert out.dtype == dtype
    if padding == "same":                    # the defining property: ceil(n / s) outputs per axis
        assert out.shape[1:4] == tuple(-(-n // s) for n, s in zip(shape[1:4], _three(stride)))


def test_conv3d_without_bias_matches_torch():
    x, w = randn(2, 5, 5, 5, 3, seed=4), randn(4, 3, 3, 3, 3, seed=5)
    compare_with_torch(lambda x_, w_: conv3d(x_, w_, padding="same"),
                       lambda x_, w_: torch_conv3d(x_, w_, None, 1, "same", 1, 1), x, w)


@pytest.mark.parametrize("stride, padding, groups, dilation", [
    (2, 1, 1, 1), ((1, 2, 1), "same", 2, 1), (1, "valid", 1, (2, 1, 1)), (1, "same", 2, 1),
])
def test_conv3d_gradcheck(stride, padding, groups, dilation):
    x = randn(1, 4, 5, 4, 2, seed=6)
    w = randn(2, 2, 3, 2, 2 // groups, seed=7)
    b = randn(2, seed=8)
    assert check_gradients(
        lambda x_, w_, b_: conv3d(x_, w_, b_, stride=stride, padding=padding, groups=groups, dilation=dilation),
        x, w, b)


def test_conv3d_depthwise_gradcheck():
    x, w, b = randn(2, 4, 3, 4, 3, seed=9), randn(3, 3, 2, 2, 1, seed=10), randn(3, seed=11)
    assert check_gradients(lambda x_, w_, b_: conv3d(x_, w_, b_, padding="same", groups=3), x, w, b)


def test_weights_without_gradient_keep_no_patches_and_a_second_backward_rebuilds_them():
    x = lamina.tensor(randn(2, 5, 5, 5, 2, seed=12), requires_grad=True, dtype=np.float64)
    w_fixed = lamina.tensor(randn(3, 3, 3, 3, 2, seed=13), dtype=np.float64)
    assert conv3d(x, w_fixed, padding=1)._ctx.patches is None

    w = lamina.tensor(w_fixed.numpy(), requires_grad=True, dtype=np.float64)
    out = conv3d(x, w, padding=1)
    assert out._ctx.patches is not None
    up = randn(*out.shape, seed=14)
    out.backward(up, retain_graph=True)
    assert out._ctx.patches is None          # dropped once dJ/dw was computed
    first = w.grad.copy()
    out.backward(up)                         # rebuilt from x
    assert_close(w.grad, 2 * first, 1e-12, "accumulated weight gradient")


# -- pooling --------------------------------------------------------------------------------

POOL_CASES = {
    # name: (x shape, pool_size, stride, padding)
    "disjoint": ((2, 6, 5, 4, 3), 2, None, 0),
    "overlap_padded": ((2, 7, 6, 5, 3), 3, 2, 1),
    "overlap_stride1": ((1, 5, 5, 5, 2), 2, 1, 0),
    "anisotropic": ((1, 5, 4, 3, 2), (3, 2, 1), (2, 1, 1), (1, 1, 0)),
    "whole_volume": ((2, 4, 4, 4, 3), 4, None, 0),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(POOL_CASES))
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pools_match_torch(kind, name, dtype):
    shape, f, s, p = POOL_CASES[name]
    ours = {"max": max_pool3d, "avg": avg_pool3d}[kind]
    theirs = {"max": TF.max_pool3d, "avg": TF.avg_pool3d}[kind]     # avg: count_include_pad=True, torch's default
    # small integers: many ties inside the windows, where max pooling must pick torch's element
    x = np.random.default_rng(15).integers(0, 3, shape).astype(np.float64)
    compare_with_torch(lambda x_: ours(x_, f, stride=s, padding=p),
                       lambda x_: _ndhwc(theirs(_ncdhw(x_), f, stride=s if s is not None else f, padding=p)),
                       x, dtype=dtype)


def test_max_pool_sends_the_gradient_of_a_tie_to_the_first_element():
    x = lamina.tensor(np.ones((1, 4, 4, 4, 1)), requires_grad=True)
    max_pool3d(x, 2).sum().backward()
    expected = np.zeros((1, 4, 4, 4, 1))
    expected[:, ::2, ::2, ::2] = 1.0         # each window's front-top-left element
    assert np.array_equal(x.grad, expected)


@pytest.mark.parametrize("f, s, p", [(3, 2, 1), ((3, 2, 3), (2, 1, 1), (1, 1, 0)), (3, 1, 1)])
def test_max_pool_sends_the_gradient_of_an_all_neg_inf_window_inside_the_input(f, s, p):
    """-inf inputs tie with the -inf padding; PyTorch's (NCDHW) kernel picks the window's
    first value inside the input."""
    rng = np.random.default_rng(16)
    x = rng.standard_normal((2, 4, 5, 3, 2))
    x[rng.random(x.shape) < 0.8] = -np.inf
    ours, theirs = lamina.tensor(x, requires_grad=True, dtype=np.float64), torch.tensor(x, requires_grad=True)
    y = max_pool3d(ours, f, stride=s, padding=p)
    expected = _ndhwc(TF.max_pool3d(_ncdhw(theirs).contiguous(), f, stride=s, padding=p))
    np.testing.assert_array_equal(y.numpy(), expected.detach().numpy())
    up = rng.standard_normal(y.shape)
    y.backward(up)
    expected.backward(torch.tensor(up))
    np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_average_pool_counts_the_zero_padding():
    x = lamina.tensor(np.ones((1, 3, 3, 3, 1)))
    out = avg_pool3d(x, 3, stride=1, padding=1).numpy()[0, ..., 0]
    assert out[1, 1, 1] == 1.0 and out[0, 0, 0] == pytest.approx(8 / 27) and out[0, 1, 1] == pytest.approx(18 / 27)


@pytest.mark.parametrize("pool", [max_pool3d, avg_pool3d])
def test_pool_gradcheck(pool):
    x = randn(2, 5, 4, 5, 2, seed=16)        # distinct values: no ties at the maxima
    assert check_gradients(lambda x_: pool(x_, (3, 2, 3), stride=(2, 1, 2), padding=(1, 0, 1)), x)


def test_global_avg_pool3d_matches_torch_and_gradchecks():
    x = randn(2, 3, 4, 5, 3, seed=17)
    compare_with_torch(global_avg_pool3d, lambda x_: x_.mean(dim=(1, 2, 3)), x)
    assert check_gradients(global_avg_pool3d, x)


# -- errors ---------------------------------------------------------------------------------


def test_conv3d_refuses_a_4d_input_naming_the_shape():
    with pytest.raises(ShapeError, match=r"conv3d: expected x of shape \(N, D, H, W, C\).*\(2, 5, 5, 3\)"):
        conv3d(np.zeros((2, 5, 5, 3)), np.zeros((4, 3, 3, 3, 3)))


def test_conv3d_refuses_mismatched_channels_and_kernels_larger_than_the_input():
    with pytest.raises(ShapeError, match=r"\(1, 4, 4, 4, 3\) has C_in=3.*\(2, 3, 3, 3, 2\)"):
        conv3d(np.zeros((1, 4, 4, 4, 3)), np.zeros((2, 3, 3, 3, 2)))
    with pytest.raises(ShapeError, match=r"kernel 3x5x3 .* larger than the padded input 4x4x4"):
        conv3d(np.zeros((1, 4, 4, 4, 1)), np.zeros((2, 3, 5, 3, 1)))
    with pytest.raises(ValueError, match="conv3d: stride must be an int or 3 ints"):
        conv3d(np.zeros((1, 4, 4, 4, 1)), np.zeros((2, 3, 3, 3, 1)), stride=(1, 2))


def test_pools_refuse_windows_larger_than_the_input_and_too_much_padding():
    with pytest.raises(ShapeError, match=r"max_pool3d: pool 3x3x3 is larger than the padded input 2x4x4 "
                                         r"\(x of shape \(1, 2, 4, 4, 1\)"):
        max_pool3d(np.zeros((1, 2, 4, 4, 1)), 3)
    with pytest.raises(ValueError, match="avg_pool3d: padding .* at most half the pool size"):
        avg_pool3d(np.zeros((1, 4, 4, 4, 1)), 2, padding=2)
    with pytest.raises(ShapeError, match=r"avg_pool3d: expected x of shape \(N, D, H, W, C\)"):
        avg_pool3d(np.zeros((4, 4, 4, 1)), 2)
