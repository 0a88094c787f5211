"""Second derivatives through convolution, pooling, padding and resizing (``grad(...,
create_graph=True)``): gradients and Hessian-vector products against PyTorch's double
backward in float64, centred differences of the gradients, and a WGAN-GP gradient penalty
of a small conv critic. Images are NHWC, weights (K, f_h, f_w, C_in / groups); the torch
side permutes to NCHW. An op linear in x has no second derivative of its own, so each is
checked inside a nonlinear function (its differentiable backward is then differentiated
through)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
import lamina.functional as F
from helpers import assert_close, check_second_derivatives, compare_double_backward_with_torch, nonzero, randn
from lamina import nn
from lamina.autograd import grad
from lamina.functional.adaptive_pool import adaptive_avg_pool2d, adaptive_max_pool2d
from lamina.functional.padding import pad2d
from lamina.functional.pool3d import avg_pool3d, max_pool3d


def _nchw(t):
    return t.permute(0, 3, 1, 2)


def _nhwc(t):
    return t.permute(0, 2, 3, 1)


def _tf_same(n: int, f: int, s: int) -> tuple[int, int]:
    """TF/Keras 'same': ceil(n / s) outputs, the odd pixel of padding after."""
    total = max((-(-n // s) - 1) * s + f - n, 0)
    return total // 2, total - total // 2


def torch_conv(padding, stride, groups, dilation=1):
    """conv2d on NHWC tensors, padding applied explicitly (asymmetric 'same' too)."""
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation

    def fn(x, w, b=None):
        _, h, wd, _ = x.shape
        fh, fw = (w.shape[1] - 1) * dh + 1, (w.shape[2] - 1) * dw + 1
        if padding == "same":
            pads = _tf_same(h, fh, sh) + _tf_same(wd, fw, sw)
        elif padding == "valid":
            pads = (0, 0, 0, 0)
        else:
            ph, pw = (padding, padding) if isinstance(padding, int) else padding
            pads = (ph, ph, pw, pw)
        xn = TF.pad(_nchw(x), (pads[2], pads[3], pads[0], pads[1]))
        return _nhwc(TF.conv2d(xn, w.permute(0, 3, 1, 2), b, stride=(sh, sw), groups=groups, dilation=(dh, dw)))

    return fn


# (n, h, w, c, k, f, stride, padding, groups)
CONV_CASES = [
    (2, 5, 6, 3, 4, 3, 1, "valid", 1),
    (1, 6, 5, 2, 3, 3, 2, "same", 1),              # 'same' with stride 2: uneven padding
    (1, 5, 5, 2, 3, 2, 1, "same", 1),              # even kernel 'same'
    (2, 7, 6, 3, 2, 3, 3, (1, 2), 1),              # stride 3, tuple padding
    (1, 6, 6, 2, 3, (3, 1), (1, 2), 1, 1),         # rectangular kernel, per-axis strides
    (1, 6, 6, 4, 4, 3, 1, 1, 4),                   # depthwise
    (2, 6, 5, 2, 4, 3, 2, "same", 2),              # depthwise, multiplier 2, stride 2
    (1, 6, 6, 4, 6, 3, 2, "valid", 2),             # grouped
    (2, 5, 5, 3, 2, 1, 2, "valid", 1),             # 1x1 stride 2
]


def _conv_arrays(n, h, w, c, k, f, groups, seed=0):
    fh, fw = (f, f) if isinstance(f, int) else f
    return randn(n, h, w, c, seed=seed), randn(k, fh, fw, c // groups, seed=seed + 1), randn(k, seed=seed + 2)


@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_conv2d_matches_torch_double_backward(case):
    n, h, w, c, k, f, s, p, g = case
    x, wt, b = _conv_arrays(n, h, w, c, k, f, g)
    compare_double_backward_with_torch(lambda x, w, b: F.conv2d(x, w, b, stride=s, padding=p, groups=g),
                                       torch_conv(p, s, g), x, wt, b)


@pytest.mark.parametrize("case", [CONV_CASES[0], CONV_CASES[1], CONV_CASES[7]], ids=str)
def test_fft_conv2d_matches_torch_double_backward(case):
    n, h, w, c, k, f, s, p, g = case
    x, wt, b = _conv_arrays(n, h, w, c, k, f, g, seed=5)
    compare_double_backward_with_torch(
        lambda x, w, b: F.tanh(F.conv2d(x, w, b, stride=s, padding=p, groups=g, algorithm="fft")),
        lambda x, w, b: torch.tanh(torch_conv(p, s, g)(x, w, b)), x, wt, b)


def test_conv2d_without_bias_and_with_one_constant_operand():
    x, wt, _ = _conv_arrays(2, 5, 5, 2, 3, 3, 1, seed=3)
    ours, theirs = (lambda x, w: F.conv2d(x, w, padding=1)), torch_conv(1, 1, 1)
    compare_double_backward_with_torch(ours, theirs, x, wt)
    # conv is bilinear: with one operand constant, only the mixed terms through a nonlinearity remain
    compare_double_backward_with_torch(lambda x, w: F.tanh(ours(x, w)), lambda x, w: torch.tanh(theirs(x, w)),
                                       x, wt, grad=[True, False])
    compare_double_backward_with_torch(lambda x, w: F.tanh(ours(x, w)), lambda x, w: torch.tanh(theirs(x, w)),
                                       x, wt, grad=[False, True])


@pytest.mark.parametrize("dilation, padding, groups, algorithm",
                         [(2, "same", 1, "im2col"), ((2, 3), "valid", 2, "im2col"), (2, 1, 4, "im2col"),
                          (2, "same", 2, "fft")])
def test_dilated_conv2d_matches_torch_double_backward(dilation, padding, groups, algorithm):
    x, wt, b = _conv_arrays(1, 7, 8, 4, 4, 3, groups)
    compare_double_backward_with_torch(
        lambda x, w, b: F.conv2d(x, w, b, padding=padding, groups=groups, dilation=dilation, algorithm=algorithm),
        torch_conv(padding, 1, groups, dilation), x, wt, b)


def torch_transposed(stride, padding, output_padding):
    def fn(x, w, b=None):
        y = TF.conv_transpose2d(_nchw(x), w.permute(0, 3, 1, 2), b, stride=stride, padding=padding,
                                output_padding=output_padding)
        return _nhwc(y)
    return fn


@pytest.mark.parametrize("stride, padding, output_padding", [(1, 0, 0), (2, 1, 1), (3, 0, 2), ((2, 1), (1, 0), (1, 0))])
def test_conv_transpose2d_matches_torch_double_backward(stride, padding, output_padding):
    x, wt, b = randn(2, 3, 4, 3, seed=4), randn(3, 3, 3, 2, seed=5), randn(2, seed=6)
    compare_double_backward_with_torch(
        lambda x, w, b: F.conv_transpose2d(x, w, b, stride=stride, padding=padding, output_padding=output_padding),
        torch_transposed(stride, padding, output_padding), x, wt, b)


def test_conv_second_derivatives_by_centred_differences():
    x, wt, b = _conv_arrays(1, 4, 5, 2, 2, 3, 2, seed=7)
    assert check_second_derivatives(lambda x, w, b: F.tanh(F.conv2d(x, w, b, stride=2, padding="same", groups=2)),
                                    x, wt, b)
    assert check_second_derivatives(lambda x, w: F.conv_transpose2d(x, w, stride=2, padding="same"),
                                    randn(1, 2, 3, 2, seed=8), randn(2, 2, 2, 2, seed=9))
    assert check_second_derivatives(lambda x, w: F.conv2d(x, w, padding="same", dilation=2),
                                    randn(1, 5, 5, 1, seed=10), randn(2, 2, 2, 1, seed=11))


def test_create_graph_leaves_first_order_gradients_unchanged():
    x, wt, b = _conv_arrays(2, 6, 6, 4, 4, 3, 2, seed=12)
    for fn in (lambda x, w, b: F.max_pool2d(F.conv2d(x, w, b, stride=2, padding=1, groups=2), 2, 1),
               lambda x, w, b: F.interpolate(F.conv_transpose2d(x, w.reshape(4, 3, 3, 2), b[:2], stride=2),
                                             size=(5, 7), mode="bilinear")):
        inputs = [lamina.tensor(a, requires_grad=True, dtype=np.float64) for a in (x, wt, b)]
        upstream = randn(*fn(*inputs).shape, seed=13)
        plain = grad(fn(*inputs), inputs, grad_output=upstream)
        recorded = grad(fn(*inputs), inputs, grad_output=upstream, create_graph=True)
        assert recorded[0].requires_grad and recorded[1].requires_grad     # dJ/dx depends on w, dJ/dw on x
        for a, r in zip(plain, recorded):
            np.testing.assert_allclose(r.numpy(), a, rtol=1e-13, atol=1e-13)


# -- unfold / fold -----------------------------------------------------------------------------


def _rows_from_torch(cols, kernel, c):
    """torch's (N, C f_h f_w, L) patches as lamina's (N, L, f_h f_w C) rows."""
    n, _, num = cols.shape
    return cols.reshape(n, c, kernel[0], kernel[1], num).permute(0, 4, 2, 3, 1).reshape(n, num, -1)


def _rows_to_torch(rows, kernel, c):
    n, num, _ = rows.shape
    return rows.reshape(n, num, kernel[0], kernel[1], c).permute(0, 4, 2, 3, 1).reshape(n, -1, num)


def test_unfold_and_fold_match_torch_double_backward():
    geometry = {"kernel_size": (2, 3), "dilation": (1, 2), "padding": 1, "stride": (2, 1)}
    x = randn(2, 5, 6, 2, seed=14)
    compare_double_backward_with_torch(
        lambda x: F.unfold(x, **geometry) ** 3,
        lambda x: _rows_from_torch(TF.unfold(_nchw(x), **geometry), (2, 3), 2) ** 3, x)
    rows = lamina.functional.unfold(lamina.tensor(x), **geometry).numpy()
    compare_double_backward_with_torch(
        lambda r: F.fold(r, (5, 6), **geometry) ** 3,
        lambda r: _nhwc(TF.fold(_rows_to_torch(r, (2, 3), 2), (5, 6), **geometry)) ** 3, rows)


# -- pooling -------------------------------------------------------------------------------------


def torch_pool(kind, f, s, p, ceil_mode=False):
    pool = TF.max_pool2d if kind == "max" else TF.avg_pool2d
    return lambda x: _nhwc(pool(_nchw(x), f, s, p, ceil_mode=ceil_mode))


# (kind, shape, pool, stride, padding, ceil_mode)
POOL_CASES = [
    ("max", (2, 4, 6, 3), 2, None, 0, False),
    ("max", (1, 5, 5, 2), 3, 1, 1, False),          # overlapping windows share maxima
    ("max", (1, 6, 7, 2), 3, 2, 1, True),           # ceil mode
    ("max", (1, 5, 6, 2), (2, 3), (1, 2), 0, False),
    ("avg", (2, 4, 6, 3), 2, None, 0, False),       # few channels, exact tiling: the GEMM path
    ("avg", (1, 5, 5, 2), 3, 1, 1, False),
    ("avg", (1, 6, 7, 2), 3, 2, 1, True),           # ceil mode: smaller last windows
]


@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_pool2d_matches_torch_double_backward(case):
    kind, shape, f, s, p, ceil_mode = case
    pool = F.max_pool2d if kind == "max" else F.avg_pool2d
    theirs = torch_pool(kind, f, s, p, ceil_mode)
    # squared, so that the gradient depends on x (through the routing of max pooling, a constant)
    compare_double_backward_with_torch(lambda x: pool(x, f, s, p, ceil_mode) ** 2, lambda x: theirs(x) ** 2,
                                       nonzero(*shape, seed=15))


def test_max_pool_mixed_second_derivatives_through_conv_weights():
    """Max pooling's second derivative in x is 0, but through a convolution's weights the
    routing of dJ/dv carries the mixed terms."""
    x, wt, b = _conv_arrays(1, 6, 6, 2, 3, 3, 1, seed=16)
    compare_double_backward_with_torch(lambda x, w, b: F.max_pool2d(F.conv2d(x, w, b, padding=1), 2),
                                       lambda x, w, b: _nhwc(TF.max_pool2d(_nchw(torch_conv(1, 1, 1)(x, w, b)), 2)),
                                       x, wt, b)
    assert check_second_derivatives(lambda x, w: F.max_pool2d(F.conv2d(x, w), 2, 1) ** 2,
                                    randn(1, 4, 4, 1, seed=17), randn(2, 2, 2, 1, seed=18))


def test_global_avg_pool_matches_torch_double_backward():
    compare_double_backward_with_torch(lambda x: F.global_avg_pool2d(x) ** 3,
                                       lambda x: _nchw(x).mean(dim=(2, 3)) ** 3, randn(2, 3, 4, 3, seed=19))


@pytest.mark.parametrize("kind, out", [("avg", (3, 4)), ("max", (3, 4)), ("max", (2, 3)), ("avg", 1)])
def test_adaptive_pools_match_torch_double_backward(kind, out):
    ours = adaptive_avg_pool2d if kind == "avg" else adaptive_max_pool2d
    theirs = TF.adaptive_avg_pool2d if kind == "avg" else TF.adaptive_max_pool2d
    compare_double_backward_with_torch(lambda x: ours(x, out) ** 2, lambda x: _nhwc(theirs(_nchw(x), out)) ** 2,
                                       nonzero(2, 5, 7, 2, seed=20))


def test_max_unpool_matches_torch_double_backward():
    x = nonzero(1, 4, 6, 2, seed=21)
    _, indices = F.max_pool2d_with_indices(lamina.tensor(x), 2)
    compare_double_backward_with_torch(
        lambda v, i: F.max_unpool2d(v, i, 2) ** 3, lambda v, i: _nhwc(TF.max_unpool2d(_nchw(v), _nchw(i), 2)) ** 3,
        nonzero(*indices.shape, seed=22), indices)


def test_max_unpool_gradient_is_differentiable_in_its_upstream_where_positions_repeat():
    """With overlapping windows two values go to one position; the gradient reads dJ/dy there
    for both, so its derivative in dJ/dy adds both back (torch's too). Only the backward is
    compared: which value the forward keeps at a shared position is torch's thread order."""
    x = nonzero(1, 4, 5, 2, seed=23)
    _, indices = F.max_pool2d_with_indices(lamina.tensor(x), 2, 1)
    assert len(np.unique(indices)) < indices.size
    v, upstream, z = nonzero(*indices.shape, seed=24), randn(1, 4, 5, 2, seed=25), randn(*indices.shape, seed=26)

    vl, ul = (lamina.tensor(a, requires_grad=True, dtype=np.float64) for a in (v, upstream))
    (gl,) = grad(F.max_unpool2d(vl, indices, 2, 1, output_size=(4, 5)), [vl], grad_output=ul, create_graph=True)
    (hl,) = grad((gl * lamina.tensor(z, dtype=np.float64)).sum(), [ul])
    vt, ut = torch.tensor(v, requires_grad=True), torch.tensor(upstream, requires_grad=True)
    out = _nhwc(TF.max_unpool2d(_nchw(vt), _nchw(torch.tensor(indices)), 2, 1, output_size=(4, 5)))
    (gt,) = torch.autograd.grad(out, vt, grad_outputs=ut, create_graph=True)
    (ht,) = torch.autograd.grad((gt * torch.tensor(z)).sum(), ut)
    assert_close(gl.numpy(), gt.detach().numpy(), 1e-12, "gradient")
    assert_close(hl, ht.numpy(), 1e-12, "derivative of the gradient in dJ/dy")


# -- padding and resizing -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_index_pad_matches_torch_double_backward(mode):
    sides = (1, 2, 2, 0)
    compare_double_backward_with_torch(
        lambda x: pad2d(x, sides, mode=mode) ** 3,
        lambda x: _nhwc(TF.pad(_nchw(x), (sides[2], sides[3], sides[0], sides[1]), mode=mode)) ** 3,
        randn(2, 3, 4, 2, seed=23))


@pytest.mark.parametrize("mode, extra", [("nearest", {}), ("bilinear", {"align_corners": False}),
                                         ("bilinear", {"align_corners": True}), ("bicubic", {}), ("area", {})])
def test_interpolate_matches_torch_double_backward(mode, extra):
    compare_double_backward_with_torch(
        lambda x: F.interpolate(x, size=(5, 3), mode=mode, **extra) ** 3,
        lambda x: _nhwc(TF.interpolate(_nchw(x), size=(5, 3), mode=mode, **extra)) ** 3,
        randn(2, 3, 4, 2, seed=24))


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_upsample_matches_torch_double_backward(interpolation):
    extra = {"align_corners": False} if interpolation == "bilinear" else {}
    compare_double_backward_with_torch(
        lambda x: F.upsample2d(x, (2, 3), interpolation) ** 3,
        lambda x: _nhwc(TF.interpolate(_nchw(x), scale_factor=(2, 3), mode=interpolation, **extra)) ** 3,
        randn(2, 3, 2, 2, seed=25))


def test_crop_matches_torch_double_backward():
    compare_double_backward_with_torch(lambda x: F.crop2d(x, ((1, 0), (1, 2))) ** 3,
                                       lambda x: x[:, 1:, 1:-2] ** 3, randn(2, 4, 5, 2, seed=26))


def test_linear_ops_second_derivatives_by_centred_differences():
    x = randn(1, 3, 4, 2, seed=27)
    for fn in (lambda x: F.avg_pool2d(x, 2, 1, 1) ** 2, lambda x: pad2d(x, 1, mode="reflect") ** 2,
               lambda x: F.upsample2d(x, 2, "bilinear") ** 2, lambda x: F.fold(F.unfold(x, 2), (3, 4), 2) ** 2,
               lambda x: adaptive_max_pool2d(x, (2, 3)) ** 2):
        assert check_second_derivatives(fn, x)


# -- 3-D -------------------------------------------------------------------------------------------


def _ncdhw(t):
    return t.permute(0, 4, 1, 2, 3)


def _ndhwc(t):
    return t.permute(0, 2, 3, 4, 1)


@pytest.mark.parametrize("stride, padding, groups, dilation",
                         [(1, 0, 1, 1), ((2, 1, 2), 1, 2, 1), (1, 1, 1, (1, 2, 1))])
def test_conv3d_matches_torch_double_backward(stride, padding, groups, dilation):
    x, wt, b = randn(1, 4, 4, 5, 2, seed=28), randn(2, 2, 3, 2, 2 // groups, seed=29), randn(2, seed=30)
    compare_double_backward_with_torch(
        lambda x, w, b: F.conv3d(x, w, b, stride=stride, padding=padding, groups=groups, dilation=dilation),
        lambda x, w, b: _ndhwc(TF.conv3d(_ncdhw(x), w.permute(0, 4, 1, 2, 3), b, stride=stride, padding=padding,
                                         groups=groups, dilation=dilation)),
        x, wt, b)


@pytest.mark.parametrize("kind, stride, padding", [("max", 2, 0), ("max", 1, 1), ("avg", 1, 1)])
def test_pool3d_matches_torch_double_backward(kind, stride, padding):
    ours = max_pool3d if kind == "max" else avg_pool3d
    theirs = TF.max_pool3d if kind == "max" else TF.avg_pool3d
    compare_double_backward_with_torch(lambda x: ours(x, 2, stride, padding) ** 2,
                                       lambda x: _ndhwc(theirs(_ncdhw(x), 2, stride, padding)) ** 2,
                                       nonzero(1, 4, 4, 5, 2, seed=31))


# -- end to end ------------------------------------------------------------------------------------


def test_hessian_vector_product_of_a_cnn_loss_matches_torch():
    """H v of a small CNN's cross-entropy with respect to its two conv kernels and dense
    weights (conv, tanh, average pooling, strided grouped conv, global pooling)."""
    x, labels = randn(3, 6, 6, 2, seed=40), np.array([0, 2, 1])
    params = (randn(4, 3, 3, 2, seed=41) * 0.5, randn(4, 3, 3, 2, seed=42) * 0.5, randn(4, 3, seed=43))
    directions = tuple(randn(*p.shape, seed=44 + i) for i, p in enumerate(params))

    def ours(w1, w2, wd):
        h = F.avg_pool2d(F.tanh(F.conv2d(lamina.tensor(x, dtype=np.float64), w1, padding="same")), 2, 1)
        h = F.global_avg_pool2d(F.tanh(F.conv2d(h, w2, stride=2, groups=2)))
        return F.categorical_cross_entropy(h @ wd, labels, from_logits=True)

    def theirs(w1, w2, wd):
        h = TF.avg_pool2d(torch.tanh(TF.conv2d(_nchw(torch.tensor(x)), w1.permute(0, 3, 1, 2), padding=1)), 2, 1)
        h = torch.tanh(TF.conv2d(h, w2.permute(0, 3, 1, 2), stride=2, groups=2)).mean(dim=(2, 3))
        return TF.cross_entropy(h @ wd, torch.tensor(labels))

    _, products = lamina.autograd.hvp(ours, params, directions)
    _, expected = torch.autograd.functional.hvp(theirs, tuple(torch.tensor(p) for p in params),
                                                tuple(torch.tensor(v) for v in directions))
    for k, (a, b) in enumerate(zip(products, expected)):
        assert np.abs(b.numpy()).max() > 1e-3
        assert_close(a, b.numpy(), 1e-10, f"H v of parameter {k}")


# -- end to end: a WGAN-GP gradient penalty on a conv critic -------------------------------------


def _critic():
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Conv2D(4, 3, padding="same"), nn.LeakyReLU(0.2), nn.MaxPool2D(2),
                          nn.Conv2D(3, 3, stride=2, padding=1), nn.LeakyReLU(0.2), nn.Flatten(), nn.Dense(1))
    model(lamina.tensor(np.zeros((1, 8, 8, 2), dtype=np.float32)))
    model.to(np.float64)
    for p in model.parameters():                     # nonzero biases, so every term is exercised
        p.data[...] = p.data + 0.1 * randn(*p.shape, seed=p.size)
    return model


def _torch_critic(model):
    conv1, conv2, dense = model[0], model[3], model[6]
    params = [torch.tensor(a, requires_grad=True) for a in (
        conv1.weight.data.transpose(0, 3, 1, 2), conv1.bias.data, conv2.weight.data.transpose(0, 3, 1, 2),
        conv2.bias.data, dense.weight.data.T, dense.bias.data)]
    w1, b1, w2, b2, wd, bd = params

    def critic(x):
        h = TF.max_pool2d(TF.leaky_relu(TF.conv2d(_nchw(x), w1, b1, padding=1), 0.2), 2)
        h = TF.leaky_relu(TF.conv2d(h, w2, b2, stride=2, padding=1), 0.2)
        return TF.linear(_nhwc(h).reshape(h.shape[0], -1), wd, bd)

    return critic, params


def test_gradient_penalty_of_a_conv_critic_matches_torch():
    """mean over samples of (||dD/dx (x_hat)|| - 1)^2, differentiated with respect to the
    critic's weights: a second derivative through conv, leaky ReLU, max pooling and dense.
    The critic is piecewise linear, so dD/dx does not depend on the biases: theirs is 0."""
    rng = np.random.default_rng(32)
    real, fake, eps = rng.normal(size=(3, 8, 8, 2)), rng.normal(size=(3, 8, 8, 2)), rng.uniform(size=(3, 1, 1, 1))
    mixed = eps * real + (1 - eps) * fake
    model = _critic()
    x = lamina.tensor(mixed, requires_grad=True, dtype=np.float64)
    (g,) = grad(model(x).sum(), [x], create_graph=True)
    norms = (g * g).sum(axis=(1, 2, 3)).sqrt()
    ((norms - 1) ** 2).mean().backward()

    critic, params = _torch_critic(model)
    xt = torch.tensor(mixed, requires_grad=True)
    (gt,) = torch.autograd.grad(critic(xt).sum(), xt, create_graph=True)
    ((gt.pow(2).sum(dim=(1, 2, 3)).sqrt() - 1) ** 2).mean().backward()

    assert_close(g.numpy(), gt.detach().numpy(), 1e-11, "dD/dx")
    layers = [model[0].weight, model[0].bias, model[3].weight, model[3].bias, model[6].weight, model[6].bias]
    to_ours = [lambda a: a.transpose(0, 2, 3, 1), None, lambda a: a.transpose(0, 2, 3, 1), None, np.transpose, None]
    for layer_param, theirs, convert in zip(layers, params, to_ours):
        expected = np.zeros(theirs.shape) if theirs.grad is None else theirs.grad.numpy()
        if layer_param.ndim > 1:
            assert np.abs(expected).max() > 1e-3           # every weight takes part
        ours = np.zeros(layer_param.shape) if layer_param.grad is None else layer_param.grad
        assert_close(ours, expected if convert is None else convert(expected), 1e-10,
                     f"penalty gradient of a parameter of shape {layer_param.shape}")
