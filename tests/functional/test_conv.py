"""conv2d: values and gradients against PyTorch, numerical gradients, the FFT path, errors.

Images are NHWC and weights (K, f_h, f_w, C_in // groups); the torch side permutes them to
NCHW / (K, C, f_h, f_w) and pads explicitly (F.pad takes (left, right, top, bottom)), so
asymmetric 'same' padding is checked too.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
import lamina.functional as F
from helpers import assert_close, check_gradients, compare_with_torch
from lamina import ShapeError
from lamina.functional import conv as conv_module
from lamina.functional import conv_gemm, conv_kernels, conv_toeplitz


def _tf_same(n: int, f: int, s: int) -> tuple[int, int]:
    """TF/Keras 'same': out = ceil(n / s); the odd pixel of padding goes after."""
    out = -(-n // s)
    total = max((out - 1) * s + f - n, 0)
    return total // 2, total - total // 2


def _torch_pads(padding, h, w, fh, fw, sh, sw):
    if padding == "valid":
        return 0, 0, 0, 0
    if padding == "same":
        return _tf_same(h, fh, sh) + _tf_same(w, fw, sw)
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    return ph, ph, pw, pw


def torch_conv(padding, stride, groups, shape):
    """The same convolution in PyTorch, taking and returning channels-last tensors."""
    sh, sw = (stride, stride) if isinstance(stride, int) else stride

    def fn(x, w, b=None):
        _, h, wd, _ = x.shape
        pt, pb, pl, pr = _torch_pads(padding, h, wd, w.shape[1], w.shape[2], sh, sw)
        xn = TF.pad(x.permute(0, 3, 1, 2), (pl, pr, pt, pb))
        y = TF.conv2d(xn, w.permute(0, 3, 1, 2), b, stride=(sh, sw), groups=groups)
        return y.permute(0, 2, 3, 1)

    return fn


def _arrays(n, h, w, c, k, fh, fw, groups=1, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, h, w, c))
    wt = rng.standard_normal((k, fh, fw, c // groups))
    b = rng.standard_normal(k)
    return x, wt, b


# (n, h, w, c, k, fh, fw, stride, padding, groups)
CASES = [
    (2, 8, 8, 3, 4, 3, 3, 1, "valid", 1),
    (2, 9, 9, 3, 4, 3, 3, 1, "same", 1),            # odd size, 'same'
    (2, 16, 10, 16, 8, 3, 3, 1, "same", 1),         # many channels: the row-matrix path
    (2, 16, 9, 16, 8, 3, 3, 1, 1, 1),               # explicit int padding, odd width
    (2, 9, 8, 8, 6, 3, 3, 2, 1, 1),                 # stride 2
    (2, 10, 11, 4, 5, 3, 3, 3, (1, 2), 1),          # stride 3, tuple padding
    (2, 12, 12, 3, 4, 3, 3, 4, "valid", 1),         # stride 4
    (2, 9, 9, 8, 4, 3, 3, 2, "same", 1),            # TF 'same' with stride 2, odd input
    (2, 8, 8, 8, 4, 3, 3, 2, "same", 1),            # ... even input: the extra pad goes last
    (2, 8, 8, 8, 4, 2, 2, 1, "same", 1),            # even kernel 'same'
    (2, 7, 9, 8, 4, 4, 4, 1, "same", 1),            # even kernel, odd sizes
    (2, 10, 10, 1, 6, 5, 5, 1, "valid", 1),         # LeNet's first layer (1 channel)
    (2, 9, 9, 6, 16, 5, 5, 1, 2, 1),                # 5x5 with padding
    (2, 8, 8, 8, 6, 1, 1, 1, "valid", 1),           # 1x1: a plain GEMM
    (2, 9, 9, 8, 6, 1, 1, 2, "valid", 1),           # 1x1 stride 2
    (2, 8, 8, 8, 6, 1, 1, 1, 1, 1),                 # 1x1 with padding
    (2, 16, 8, 16, 6, 3, 1, 1, (1, 0), 1),          # 3x1
    (2, 8, 9, 16, 6, 1, 3, 1, (0, 1), 1),           # 1x3
    (2, 9, 8, 4, 6, 3, 1, 2, "same", 1),            # 3x1, stride 2
    (2, 7, 7, 8, 4, 3, 3, 1, 3, 1),                 # padding larger than kernel - 1
    (2, 8, 8, 4, 4, 3, 3, (1, 2), 1, 1),            # different strides per axis
    (2, 9, 9, 8, 8, 3, 3, 1, 1, 8),                 # depthwise, multiplier 1
    (2, 9, 9, 4, 8, 3, 3, 2, "same", 4),            # depthwise, multiplier 2, stride 2
    (2, 9, 9, 8, 6, 3, 3, 1, 1, 2),                 # grouped (2 groups)
    (2, 9, 9, 16, 8, 3, 3, 2, "valid", 2),          # grouped, stride 2
    (2, 12, 16, 1, 4, 5, 5, 1, "same", 1),          # one channel, wide: rows in blocks of 8 pixels
    (1, 9, 24, 2, 6, 3, 5, 1, "valid", 1),          # rectangular kernel, blocks of 10 pixels
    (2, 12, 12, 4, 4, 5, 5, 1, "valid", 2),         # grouped, unpadded: a strided channel slice
    (2, 8, 10, 16, 8, 3, 3, 1, "same", 1),          # many channels, short images: the patch matrix
    (2, 8, 7, 4, 4, 2, 2, 1, "same", 4),            # depthwise, even kernel: uneven padding
    (2, 7, 7, 3, 3, 3, 3, 1, 3, 3),                 # depthwise, padding larger than kernel - 1
]


def _id(case):
    n, h, w, c, k, fh, fw, s, p, g = case
    return f"{h}x{w}x{c}-k{k}-{fh}x{fw}-s{s}-p{p}-g{g}"


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_conv2d_matches_torch(case):
    n, h, w, c, k, fh, fw, s, p, g = case
    x, wt, b = _arrays(n, h, w, c, k, fh, fw, g)
    out = compare_with_torch(lambda x, w, b: F.conv2d(x, w, b, stride=s, padding=p, groups=g),
                             torch_conv(p, s, g, x.shape), x, wt, b)
    assert out[0].dtype == np.float32


@pytest.mark.parametrize("case", CASES[::3], ids=_id)
def test_conv2d_fft_matches_torch(case):
    n, h, w, c, k, fh, fw, s, p, g = case
    x, wt, b = _arrays(n, h, w, c, k, fh, fw, g)
    # The FFT path rounds differently in float32 (sums of products of spectra): 1e-4 here,
    # the helper's 1e-5 everywhere else.
    compare_with_torch(lambda x, w, b: F.conv2d(x, w, b, stride=s, padding=p, groups=g, algorithm="fft"),
                       torch_conv(p, s, g, x.shape), x, wt, b, rtol=1e-4)


@pytest.mark.parametrize("case", [CASES[i] for i in (1, 2, 4, 8, 10, 11, 13, 16, 21, 22, 23)], ids=_id)
def test_conv2d_fft_equals_im2col(case):
    n, h, w, c, k, fh, fw, s, p, g = case
    x, wt, b = _arrays(n, h, w, c, k, fh, fw, g, seed=1)
    results = {}
    for algorithm in ("im2col", "fft"):
        xs = lamina.tensor(x.astype(np.float32), requires_grad=True)
        ws = lamina.tensor(wt.astype(np.float32), requires_grad=True)
        bs = lamina.tensor(b.astype(np.float32), requires_grad=True)
        y = F.conv2d(xs, ws, bs, stride=s, padding=p, groups=g, algorithm=algorithm)
        up = np.random.default_rng(2).standard_normal(y.shape).astype(np.float32)
        y.backward(up)
        results[algorithm] = (y.numpy(), xs.grad, ws.grad, bs.grad)
    # float32 FFTs: 1e-4 relative to the scale (see test_conv2d_fft_matches_torch)
    for what, a, e in zip(("output", "dx", "dw", "db"), results["fft"], results["im2col"]):
        assert a.dtype == np.float32
        assert_close(a, e, 1e-4, what)


GRADCHECK_CASES = [
    (1, 5, 5, 2, 3, 3, 3, 1, "same", 1),
    (1, 6, 5, 2, 2, 3, 3, 2, 1, 1),
    (1, 5, 6, 8, 2, 3, 3, 1, 1, 1),                 # "toeplitz", dJ/dx through the row matrix
    (1, 14, 4, 16, 2, 3, 3, 1, 1, 1),               # "rows"
    (1, 5, 6, 3, 3, 3, 3, 1, 1, 3),                 # depthwise, multiplier 1: dJ/dx by correlation
    (1, 6, 6, 2, 2, 2, 2, 1, "same", 1),
    (1, 5, 5, 2, 2, 3, 1, 1, (1, 0), 1),
    (1, 5, 5, 2, 3, 1, 1, 2, "valid", 1),
    (1, 5, 5, 2, 4, 3, 3, 1, 1, 2),                 # depthwise, multiplier 2
    (1, 5, 5, 4, 2, 3, 3, 2, "same", 2),            # grouped
    (1, 4, 12, 1, 2, 3, 3, 1, "same", 1),           # "toeplitz" in two blocks of 6 pixels
]


@pytest.mark.parametrize("algorithm", ["im2col", "fft"])
@pytest.mark.parametrize("case", GRADCHECK_CASES, ids=_id)
def test_conv2d_gradcheck(case, algorithm):
    n, h, w, c, k, fh, fw, s, p, g = case
    x, wt, b = _arrays(n, h, w, c, k, fh, fw, g)
    assert check_gradients(
        lambda x, w, b: F.conv2d(x, w, b, stride=s, padding=p, groups=g, algorithm=algorithm), x, wt, b)


def test_conv2d_without_bias_and_input_gradient():
    x, wt, _ = _arrays(2, 8, 8, 16, 8, 3, 3)
    compare_with_torch(lambda x, w: F.conv2d(x, w, padding="same"), torch_conv("same", 1, 1, x.shape),
                       x, wt, grad=[False, True])
    compare_with_torch(lambda x, w: F.conv2d(x, w, stride=2), torch_conv(0, 2, 1, x.shape),
                       x, wt, grad=[True, False])


def test_conv2d_float64_and_no_grad():
    x, wt, b = _arrays(2, 7, 7, 3, 4, 3, 3)
    y = F.conv2d(lamina.tensor(x, dtype=np.float64), lamina.tensor(wt, dtype=np.float64),
                 lamina.tensor(b, dtype=np.float64), padding=1)
    assert y.dtype == np.float64
    expected = torch_conv(1, 1, 1, x.shape)(torch.tensor(x), torch.tensor(wt), torch.tensor(b))
    assert_close(y.numpy(), expected.numpy(), 1e-10)
    wg = lamina.tensor(wt.astype(np.float32), requires_grad=True)
    with lamina.no_grad():
        z = F.conv2d(lamina.tensor(x.astype(np.float32)), wg, padding=1)
    assert not z.requires_grad
    assert_close(z.numpy(), (expected - torch.tensor(b)).numpy(), 1e-5)


@pytest.mark.parametrize("h, f, s, padding, expected", [
    (32, 3, 1, "same", 32), (32, 4, 1, "same", 32), (7, 3, 2, "same", 4), (8, 3, 2, "same", 4),
    (32, 5, 1, "valid", 28), (32, 3, 1, 1, 32), (7, 3, 2, 0, 3), (10, 3, 3, 1, 4),
])
def test_conv2d_output_size(h, f, s, padding, expected):
    """(h + 2p - f) / s + 1, floor; 'same' gives ceil(h / s)."""
    x = np.zeros((1, h, h, 2), np.float32)
    w = np.zeros((3, f, f, 2), np.float32)
    assert F.conv2d(x, w, stride=s, padding=padding).shape == (1, expected, expected, 3)


def test_conv2d_same_pads_even_kernel_at_bottom_right():
    x = np.zeros((1, 4, 4, 1), np.float32)
    x[0, 0, 0, 0] = 1.0
    w = np.ones((1, 2, 2, 1), np.float32)
    y = F.conv2d(x, w, padding="same").numpy()[0, :, :, 0]
    # extra row/column at the bottom/right: out[0, 0] covers x[0:2, 0:2], which holds the 1
    assert y[0, 0] == 1.0 and y.sum() == 1.0


@pytest.mark.parametrize("kwargs, x_shape, w_shape, words", [
    ({}, (8, 8, 3), (4, 3, 3, 3), ["conv2d", "(8, 8, 3)", "4-D"]),
    ({}, (2, 8, 8, 3), (4, 3, 3), ["conv2d", "(4, 3, 3)", "weights"]),
    ({}, (2, 8, 8, 3), (4, 3, 3, 2), ["conv2d", "(2, 8, 8, 3)", "(4, 3, 3, 2)", "C_in=3"]),
    ({"groups": 2}, (2, 8, 8, 3), (4, 3, 3, 1), ["conv2d", "groups=2", "C_in=3"]),
    ({"groups": 2}, (2, 8, 8, 4), (3, 3, 3, 2), ["conv2d", "groups=2", "K=3"]),
    ({"groups": 2}, (2, 8, 8, 4), (4, 3, 3, 4), ["conv2d", "(2, 8, 8, 4)", "(4, 3, 3, 4)", "4 * 2 = 8"]),
    ({}, (2, 4, 4, 3), (4, 5, 5, 3), ["conv2d", "5x5", "4x4", "(2, 4, 4, 3)"]),
    ({"padding": 1}, (2, 2, 2, 3), (4, 5, 5, 3), ["conv2d", "5x5", "4x4", "padding 1"]),
])
def test_conv2d_shape_errors(kwargs, x_shape, w_shape, words):
    with pytest.raises(ShapeError) as info:
        F.conv2d(np.zeros(x_shape, np.float32), np.zeros(w_shape, np.float32), **kwargs)
    for word in words:
        assert word in str(info.value)


def test_conv2d_bad_arguments():
    x, w = np.zeros((1, 5, 5, 2), np.float32), np.zeros((3, 3, 3, 2), np.float32)
    with pytest.raises(ShapeError, match=r"conv2d: .*bias of shape \(3,\)"):
        F.conv2d(x, w, np.zeros(4, np.float32))
    with pytest.raises(ValueError, match="conv2d: padding"):
        F.conv2d(x, w, padding="full")
    with pytest.raises(ValueError, match="conv2d: stride"):
        F.conv2d(x, w, stride=0)
    with pytest.raises(ValueError, match="conv2d: algorithm"):
        F.conv2d(x, w, algorithm="winograd")


@pytest.mark.parametrize("keep", [True, False])
@pytest.mark.parametrize("case", [CASES[i] for i in (2, 4, 11, 13, 17, 23)], ids=_id)
def test_conv2d_in_chunks_of_images(case, keep, monkeypatch):
    """Every path (rows, im2col, flat, 1x1, grouped) gives the same result when the batch
    is processed one image at a time, with the patches kept or rebuilt in backward."""
    monkeypatch.setattr(conv_gemm, "CHUNK_BYTES", 1)
    monkeypatch.setattr(conv_gemm, "KEEP_PATCHES", keep)
    n, h, w, c, k, fh, fw, s, p, g = case
    x, wt, b = _arrays(3, h, w, c, k, fh, fw, g)
    compare_with_torch(lambda x, w, b: F.conv2d(x, w, b, stride=s, padding=p, groups=g),
                       torch_conv(p, s, g, x.shape), x, wt, b)


def _plan_of(case) -> str:
    n, h, w, c, k, fh, fw, s, p, g = case
    stride = (s, s) if isinstance(s, int) else s
    return conv_gemm.plan_for((n, h, w, c // g), (k, fh, fw, c // g), _torch_pads(p, h, w, fh, fw, *stride), stride)


@pytest.mark.parametrize("case", [c for c in CASES if _plan_of(c) == "rows"][:4], ids=_id)
def test_conv2d_rows_path_with_weights_used_in_place(case, monkeypatch):
    """Large weights skip the [W_0 | W_1 | ...] copy (one GEMM per kernel row on strided
    views of w): the same results as PyTorch."""
    monkeypatch.setattr(conv_kernels, "WIDE_WEIGHTS_MAX", 0)
    n, h, w, c, k, fh, fw, s, p, g = case
    x, wt, b = _arrays(n, h, w, c, k, fh, fw, g)
    compare_with_torch(lambda x, w, b: F.conv2d(x, w, b, stride=s, padding=p, groups=g),
                       torch_conv(p, s, g, x.shape), x, wt, b)


# (case, dJ/dx way with the row matrix allowed, way without it)
DX_WAYS = [((3, 14, 14, 6, 16, 5, 5, 1, "valid", 1), "rows", "col2im"),    # LeNet's conv2
           ((2, 9, 9, 6, 16, 5, 5, 1, 2, 1), "rows", "col2im"),           # padding: a cropped row buffer
           ((2, 5, 6, 8, 6, 3, 3, 1, (2, 1), 1), "rows", "col2im"),       # uneven padding
           ((2, 12, 16, 1, 4, 5, 5, 1, "same", 1), "flat", "flat")]       # wide: no row matrix


@pytest.mark.parametrize("case, with_rows, without_rows, plan",
                         [w + ("toeplitz",) for w in DX_WAYS] + [w + ("im2col",) for w in DX_WAYS if w[1] == "rows"],
                         ids=lambda v: _id(v) if isinstance(v, tuple) else v)
@pytest.mark.parametrize("rows_allowed", [True, False])
def test_conv2d_stride1_dx_ways(case, with_rows, without_rows, plan, rows_allowed, monkeypatch):
    """dJ/dx of a stride-1 convolution with few channels: through the whole-row (Toeplitz)
    matrix where it is allowed, else flat's col2im (narrow kernel rows; "toeplitz" plan
    only) or one GEMM and one add per kernel offset; every way as PyTorch."""
    assert _plan_of(case) == "toeplitz"
    if plan == "im2col":                      # the band matrix ruled out: the im2col plan
        monkeypatch.setattr(conv_toeplitz, "TOEPLITZ_FORWARD_WASTE_MAX", 0)
        assert _plan_of(case) == "im2col"
        without_rows = "col2im"
    if not rows_allowed:
        monkeypatch.setattr(conv_toeplitz, "toeplitz_for", lambda *a: None)
    calls = []
    for module, name, way in ((conv_toeplitz, "dx_by_rows", "rows"), (conv_kernels, "backward_flat", "flat"),
                              (conv_kernels, "col2im", "col2im")):
        original = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _f=original, _w=way: calls.append(_w) or _f(*a))
    n, h, w, c, k, fh, fw, s, p, g = case
    x, wt, b = _arrays(n, h, w, c, k, fh, fw, g)
    compare_with_torch(lambda x, w, b: F.conv2d(x, w, b, stride=s, padding=p, groups=g),
                       torch_conv(p, s, g, x.shape), x, wt, b)
    assert set(calls) == {with_rows if rows_allowed else without_rows}


def test_toeplitz_weights_hold_each_kernel_row_shifted_along_the_row():
    w = np.arange(2 * 2 * 3 * 1, dtype=np.float32).reshape(2, 2, 3, 1)    # K=2, f=2x3, c=1
    m = conv_toeplitz.toeplitz_weights(w, wo=2, wp=4).reshape(2, 2, 2, 4)     # (x, k, i, x')
    np.testing.assert_array_equal(m[0, 1, 0], [w[1, 0, 0, 0], w[1, 0, 1, 0], w[1, 0, 2, 0], 0])
    np.testing.assert_array_equal(m[1, 0, 1], [0, w[0, 1, 0, 0], w[0, 1, 1, 0], w[0, 1, 2, 0]])


@pytest.mark.parametrize("case", [c for c in CASES if _plan_of(c) == "toeplitz"], ids=_id)
def test_conv2d_toeplitz_path_in_one_or_several_blocks(case):
    """The "toeplitz" plan cuts output rows into blocks that share one band matrix; a whole
    row is one block when w_out has no divisor in range. Both, in float64, as torch."""
    n, h, w, c, k, fh, fw, s, p, g = case
    x, wt, b = _arrays(n, h, w, c, k, fh, fw, g, seed=1)
    compare_with_torch(lambda x, w, b: F.conv2d(x, w, b, stride=s, padding=p, groups=g),
                       torch_conv(p, s, g, x.shape), x, wt, b, dtype=np.float64)


def test_toeplitz_blocks_divide_the_output_row():
    """The smallest divisor of w_out giving at least TOEPLITZ_MIN_COLUMNS (32) columns."""
    assert conv_toeplitz.toeplitz_block(28, 6) == 7            # LeNet's first layer
    assert conv_toeplitz.toeplitz_block(10, 16) == 2           # LeNet's second
    assert conv_toeplitz.toeplitz_block(32, 32) == 2
    assert conv_toeplitz.toeplitz_block(20, 4) == 10
    assert conv_toeplitz.toeplitz_block(6, 4) == 6             # no divisor reaches 32: the whole row
    assert conv_toeplitz.toeplitz_block(17, 16) == 17          # prime: the whole row
    blocked = [c for c in CASES if _plan_of(c) == "toeplitz"]
    assert any(conv_toeplitz.toeplitz_block(wo, c[4]) < wo for wo, c in ((_torch_out_width(c), c) for c in blocked))


def _torch_out_width(case) -> int:
    n, h, w, c, k, fh, fw, s, p, g = case
    pads = _torch_pads(p, h, w, fh, fw, s, s)
    return w + pads[2] + pads[3] - fw + 1


def test_conv2d_cases_cover_every_path():
    assert {_plan_of(case) for case in CASES} == {"1x1", "rows", "flat", "im2col", "toeplitz"}


@pytest.mark.parametrize("h, f, c, plan", [(32, 3, 32, "rows"), (16, 3, 32, "rows"), (8, 3, 32, "im2col"),
                                           (4, 3, 32, "im2col"), (8, 1, 32, "rows"), (32, 3, 128, "im2col"),
                                           (32, 3, 8, "toeplitz")])
def test_rows_plan_gives_way_to_the_patch_matrix_on_short_images_and_wide_inputs(h, f, c, plan):
    """ "rows" computes outputs on the padded-height grid, h_p / h_out times the work: on
    short images (3x3 'same' on 8x8: 1.25), and from 128 input channels, the full patch
    matrix is used instead."""
    pads = ((f - 1) // 2, f // 2, 1, 1)
    assert conv_gemm.plan_for((4, h, 8, c), (32, f, 3, c), pads, (1, 1)) == plan


@pytest.mark.parametrize("algorithm", ["im2col", "fft"])
@pytest.mark.parametrize("c, f, s, p, g", [(3, 3, 1, 1, 1), (16, 3, 1, 1, 1), (16, 3, 2, 0, 1),
                                           (8, 1, 1, 0, 1), (4, 3, 1, 1, 4), (8, 3, 1, 1, 2)])
def test_conv2d_empty_batch(algorithm, c, f, s, p, g):
    """An empty batch (as in shape inference) flows through forward and backward."""
    x = lamina.tensor(np.zeros((0, 8, 8, c), np.float32), requires_grad=True)
    w = lamina.tensor(np.ones((8, f, f, c // g), np.float32), requires_grad=True)
    b = lamina.tensor(np.ones(8, np.float32), requires_grad=True)
    y = F.conv2d(x, w, b, stride=s, padding=p, groups=g, algorithm=algorithm)
    y.backward(np.zeros(y.shape, np.float32))
    assert y.shape[0] == 0 and x.grad.shape == x.shape
    assert not w.grad.any() and not b.grad.any()


@pytest.mark.parametrize("stride", [(2, 2), (1, 2), (2, 1), (3, 3)])
@pytest.mark.parametrize("padding", ["same", 1, "valid"])
@pytest.mark.parametrize("multiplier", [1, 2])
def test_depthwise_strides_on_odd_sizes(stride, padding, multiplier):
    """Depthwise forward splits the padded rows into column phases for a horizontal stride:
    odd widths and heights, asymmetric 'same' padding and channel multipliers, against torch."""
    x, wt, b = _arrays(2, 9, 11, 4, 4 * multiplier, 3, 3, groups=4)
    compare_with_torch(lambda x, w, b: F.conv2d(x, w, b, stride=stride, padding=padding, groups=4),
                       torch_conv(padding, stride, 4, x.shape), x, wt, b)



@pytest.mark.parametrize("c, k, stride, p, by_correlation", [(4, 4, 1, 1, True), (4, 4, 1, 3, False),
                                                             (4, 8, 1, 1, False), (4, 4, 2, 1, False)])
def test_depthwise_dx_is_a_correlation_where_it_can_be(c, k, stride, p, by_correlation, monkeypatch):
    """dJ/dx of a stride-1 depthwise convolution with one filter per channel (and padding
    within f - 1) runs through the forward's kernel, as pad(dJ/dv) * rot180(w); the other
    cases hand dJ/dv back offset by offset. Both as PyTorch."""
    x, wt, b = _arrays(2, 9, 8, c, k, 3, 3, c)
    compare_with_torch(lambda x, w, b: F.conv2d(x, w, b, stride=stride, padding=p, groups=c),
                       torch_conv(p, stride, c, x.shape), x, wt, b)
    calls = []
    original = conv_module._depthwise_forward
    monkeypatch.setattr(conv_module, "_depthwise_forward", lambda *a, **kw: calls.append(1) or original(*a, **kw))
    xs = lamina.tensor(x.astype(np.float32), requires_grad=True)
    y = F.conv2d(xs, wt.astype(np.float32), b.astype(np.float32), stride=stride, padding=p, groups=c)
    assert len(calls) == 1
    y.backward(np.ones(y.shape, np.float32))
    assert len(calls) == (2 if by_correlation else 1)


# -- dilation (atrous convolution) -----------------------------------------------------------

def torch_dilated_conv(padding, dilation, groups):
    """PyTorch's dilated convolution on channels-last tensors, with lamina's padding rules."""
    dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation

    def fn(x, w, b=None):
        _, h, wd, _ = x.shape
        eh, ew = dh * (w.shape[1] - 1) + 1, dw * (w.shape[2] - 1) + 1
        pt, pb, pl, pr = _torch_pads(padding, h, wd, eh, ew, 1, 1)
        xn = TF.pad(x.permute(0, 3, 1, 2), (pl, pr, pt, pb))
        return TF.conv2d(xn, w.permute(0, 3, 1, 2), b, dilation=(dh, dw), groups=groups).permute(0, 2, 3, 1)

    return fn


# (n, h, w, c, k, fh, fw, dilation, padding, groups)
DILATED_CASES = [
    (2, 9, 9, 3, 4, 3, 3, 2, "valid", 1),
    (2, 10, 11, 4, 6, 3, 3, (2, 3), "same", 1),     # per-axis dilation
    (2, 8, 8, 2, 3, 2, 2, 3, "same", 1),            # even kernel: extent 4, uneven 'same' padding
    (2, 12, 12, 16, 8, 3, 3, 2, 2, 1),              # many channels, padding d: the input size
    (2, 9, 7, 8, 8, 3, 3, 2, 1, 8),                 # depthwise
    (2, 9, 9, 4, 8, 3, 3, 3, "same", 2),            # grouped
    (1, 12, 10, 1, 2, 5, 3, 2, (1, 3), 1),          # rectangular kernel, one channel
    (2, 7, 7, 3, 2, 3, 3, 3, "valid", 1),           # extent 7: a single output pixel
]


def _dilated_id(case):
    n, h, w, c, k, fh, fw, d, p, g = case
    return f"{h}x{w}x{c}-k{k}-{fh}x{fw}-d{d}-p{p}-g{g}"


@pytest.mark.parametrize("algorithm", ["im2col", "fft"])
@pytest.mark.parametrize("case", DILATED_CASES, ids=_dilated_id)
def test_dilated_conv2d_matches_torch(case, algorithm):
    n, h, w, c, k, fh, fw, d, p, g = case
    x, wt, b = _arrays(n, h, w, c, k, fh, fw, g)
    out = compare_with_torch(
        lambda x, w, b: F.conv2d(x, w, b, padding=p, groups=g, dilation=d, algorithm=algorithm),
        torch_dilated_conv(p, d, g), x, wt, b, rtol=1e-5 if algorithm == "im2col" else 1e-4)
    if p == "same":
        assert out[0].shape == (n, h, w, k)


DILATED_GRADCHECK_CASES = [
    (1, 7, 8, 2, 3, 3, 3, (2, 3), "same", 1),
    (1, 6, 6, 2, 2, 2, 2, 3, "same", 1),            # even kernel, uneven padding
    (1, 7, 6, 3, 3, 3, 3, 2, 1, 3),                 # depthwise
    (1, 7, 7, 4, 4, 3, 3, 2, "same", 2),            # grouped
]


@pytest.mark.parametrize("case", DILATED_GRADCHECK_CASES, ids=_dilated_id)
def test_dilated_conv2d_gradcheck(case):
    n, h, w, c, k, fh, fw, d, p, g = case
    x, wt, b = _arrays(n, h, w, c, k, fh, fw, g)
    assert check_gradients(lambda x, w, b: F.conv2d(x, w, b, padding=p, groups=g, dilation=d), x, wt, b)


def test_dilation_one_is_the_plain_convolution():
    x, wt, b = _arrays(2, 8, 8, 3, 4, 3, 3)
    plain = F.conv2d(x.astype(np.float32), wt.astype(np.float32), b.astype(np.float32), padding=1)
    same = F.conv2d(x.astype(np.float32), wt.astype(np.float32), b.astype(np.float32), padding=1, dilation=(1, 1))
    np.testing.assert_array_equal(plain.numpy(), same.numpy())


def test_dilated_conv2d_errors_name_the_problem():
    x, w = np.zeros((1, 6, 6, 2), np.float32), np.zeros((3, 3, 3, 2), np.float32)
    with pytest.raises(ValueError, match="conv2d: dilation must be positive"):
        F.conv2d(x, w, dilation=(1, 0))
    with pytest.raises(ValueError, match="conv2d: dilation must be an int or a pair"):
        F.conv2d(x, w, dilation=1.5)
    with pytest.raises(ShapeError, match=r"kernel 3x3 \(dilated by \(3, 3\): 7x7\).*larger than the padded input 6x6"):
        F.conv2d(x, w, dilation=3)


@pytest.mark.parametrize("padding, stride, dilation, algorithm", [
    (((1, 0), (2, 1)), 1, 1, "im2col"), (((0, 2), (0, 0)), 2, 1, "im2col"), (((0, 0), (4, 0)), 1, 2, "im2col"),
    (((2, 1), (0, 3)), 1, 1, "fft"),
])
def test_conv2d_pads_each_side_its_own(padding, stride, dilation, algorithm):
    """((top, bottom), (left, right)): as padding the input first (a causal convolution pads
    the left only)."""
    (top, bottom), (left, right) = padding
    rng = np.random.default_rng(5)
    x, w, b = rng.standard_normal((2, 6, 7, 3)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)

    def theirs(x_, w_, b_):
        padded = TF.pad(x_.permute(0, 3, 1, 2), (left, right, top, bottom))
        return TF.conv2d(padded, w_.permute(0, 3, 1, 2), b_, stride=stride, dilation=dilation).permute(0, 2, 3, 1)

    compare_with_torch(lambda x_, w_, b_: F.conv2d(x_, w_, b_, stride=stride, padding=padding, dilation=dilation,
                                                   algorithm=algorithm), theirs, x, w, b, dtype=np.float64)
    with pytest.raises(ValueError, match="padding must be non-negative"):
        F.conv2d(lamina.tensor(x), lamina.tensor(w), padding=((0, -1), (0, 0)))
