"""upsample2d, zero_pad2d and crop2d: PyTorch's interpolate (nearest, bilinear with
align_corners=False), pad and slicing in values and gradients (NHWC <-> NCHW at the
boundary), float64 gradient checks, the interpolation matrices and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch, randn
from lamina.functional import crop2d, upsample2d, zero_pad2d
from lamina.functional.resize import bilinear_weights, edge_pairs

TF = torch.nn.functional


def _torch_interpolate(size, mode):
    factor = (float(size), float(size)) if isinstance(size, int) else tuple(float(s) for s in size)
    extra = {"align_corners": False} if mode == "bilinear" else {}

    def run(x):
        return TF.interpolate(x.permute(0, 3, 1, 2), scale_factor=factor, mode=mode, **extra).permute(0, 2, 3, 1)
    return run


SIZES = [2, 3, (2, 3), (3, 1), 4]
SHAPES = [(2, 4, 5, 3), (1, 3, 3, 1), (2, 1, 2, 4)]  # odd sizes, one channel, a one-pixel-high map


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("shape", SHAPES)
def test_upsample2d_matches_torch(shape, size, mode, dtype):
    x = randn(*shape, seed=sum(shape))
    out = compare_with_torch(lambda x: upsample2d(x, size, mode), _torch_interpolate(size, mode), x, dtype=dtype,
                             rtol=1e-5 if dtype == np.float32 else 1e-12)
    sh, sw = (size, size) if isinstance(size, int) else size
    assert out[0].shape == (shape[0], shape[1] * sh, shape[2] * sw, shape[3]) and out[0].dtype == dtype


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
@pytest.mark.parametrize("size", [2, 3, (2, 3), (1, 2)])
def test_upsample2d_gradcheck(mode, size):
    assert check_gradients(lambda x: upsample2d(x, size, mode), randn(2, 3, 4, 2, seed=3))


def test_nearest_repeats_blocks_and_its_gradient_sums_them():
    x = lamina.tensor(np.arange(4.0).reshape(1, 2, 2, 1), requires_grad=True, dtype=np.float64)
    y = upsample2d(x, (2, 3))
    np.testing.assert_array_equal(y.numpy()[0, :, :, 0], [[0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 1],
                                                          [2, 2, 2, 3, 3, 3], [2, 2, 2, 3, 3, 3]])
    up = np.arange(24.0).reshape(1, 4, 6, 1)
    y.backward(up)
    expected = up.reshape(2, 2, 2, 3).sum(axis=(1, 3))  # each 2x3 block summed
    np.testing.assert_array_equal(x.grad[0, :, :, 0], expected)


def test_bilinear_weights_half_pixel_centres():
    a = bilinear_weights(3, 2)
    # outputs read the input at max((i + 1/2)/2 - 1/2, 0) = 0, 0.25, 0.75, 1.25, 1.75, 2.25 -> 2
    np.testing.assert_allclose(a, [[1, 0, 0], [0.75, 0.25, 0], [0.25, 0.75, 0], [0, 0.75, 0.25],
                                   [0, 0.25, 0.75], [0, 0, 1]])
    for n, s in [(1, 3), (4, 3), (5, 2), (7, 1)]:
        m = bilinear_weights(n, s)
        assert m.shape == (n * s, n)
        np.testing.assert_allclose(m.sum(axis=1), 1.0)
    np.testing.assert_array_equal(bilinear_weights(4, 1), np.eye(4))
    assert bilinear_weights(3, 2, np.float32).dtype == np.float32


def test_scale_one_is_the_identity():
    x = randn(2, 3, 4, 2)
    for mode in ("nearest", "bilinear"):
        np.testing.assert_array_equal(upsample2d(lamina.tensor(x, dtype=np.float64), 1, mode).numpy(), x)


def test_bilinear_keeps_constant_and_linear_maps():
    ramp = np.broadcast_to(np.arange(4.0)[None, :, None, None], (1, 4, 3, 2))
    y = upsample2d(lamina.tensor(ramp, dtype=np.float64), 2, "bilinear").numpy()
    # interior rows lie on the line (i + 1/2)/2 - 1/2; the edges repeat the edge pixel
    np.testing.assert_allclose(y[0, :, 0, 0], [0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3])
    const = upsample2d(lamina.tensor(np.full((1, 3, 3, 1), 2.5), dtype=np.float64), 3, "bilinear")
    np.testing.assert_allclose(const.numpy(), 2.5)


PADDINGS = [  # lamina's argument, torch's (left, right, top, bottom)
    (1, (1, 1, 1, 1)),
    (0, (0, 0, 0, 0)),
    ((2, 1), (1, 1, 2, 2)),
    (((1, 2), (0, 3)), (0, 3, 1, 2)),
    ([[0, 1], [2, 0]], (2, 0, 0, 1)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("padding, torch_pad", PADDINGS)
def test_zero_pad2d_matches_torch(padding, torch_pad, dtype):
    def theirs(x):
        return TF.pad(x.permute(0, 3, 1, 2), torch_pad).permute(0, 2, 3, 1)
    compare_with_torch(lambda x: zero_pad2d(x, padding), theirs, randn(2, 3, 4, 2, seed=1), dtype=dtype)


CROPPINGS = [  # lamina's argument, (top, bottom, left, right)
    (1, (1, 1, 1, 1)),
    (0, (0, 0, 0, 0)),
    ((2, 1), (2, 2, 1, 1)),
    (((1, 0), (0, 3)), (1, 0, 0, 3)),
    ([[0, 4], [2, 1]], (0, 4, 2, 1)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cropping, edges", CROPPINGS)
def test_crop2d_matches_torch_slicing(cropping, edges, dtype):
    top, bottom, left, right = edges

    def theirs(x):
        return x[:, top:x.shape[1] - bottom, left:x.shape[2] - right]
    out = compare_with_torch(lambda x: crop2d(x, cropping), theirs, randn(2, 6, 7, 3, seed=2), dtype=dtype)
    assert out[0].shape == (2, 6 - top - bottom, 7 - left - right, 3)
    assert out[0].data.flags.c_contiguous


@pytest.mark.parametrize("arg", [1, (2, 1), ((1, 2), (0, 1))])
def test_pad_and_crop_gradcheck(arg):
    x = randn(2, 6, 5, 2, seed=4)
    assert check_gradients(lambda x: zero_pad2d(x, arg), x)
    assert check_gradients(lambda x: crop2d(x, arg), x)


def test_crop_undoes_pad_and_they_are_adjoint():
    x, y = randn(2, 4, 5, 3, seed=5), randn(2, 7, 6, 3, seed=6)
    arg = ((1, 2), (0, 1))
    padded = zero_pad2d(lamina.tensor(x, dtype=np.float64), arg)
    np.testing.assert_array_equal(crop2d(padded, arg).numpy(), x)
    # <pad(x), y> = <x, crop(y)>
    lhs = float((padded.numpy() * y).sum())
    rhs = float((x * crop2d(lamina.tensor(y, dtype=np.float64), arg).numpy()).sum())
    assert lhs == pytest.approx(rhs, rel=1e-12)


def test_edge_pairs_forms():
    assert edge_pairs(2, "p") == ((2, 2), (2, 2))
    assert edge_pairs((1, 3), "p") == ((1, 1), (3, 3))
    assert edge_pairs(((1, 2), (3, 4)), "p") == ((1, 2), (3, 4))
    assert edge_pairs([[1, 2], 3], "p") == ((1, 2), (3, 3))
    assert edge_pairs(np.int64(1), "p") == ((1, 1), (1, 1))


def test_errors():
    x = lamina.tensor(np.zeros((2, 4, 5, 3)))
    for fn in (lambda a: upsample2d(a), lambda a: zero_pad2d(a), lambda a: crop2d(a, 1)):
        with pytest.raises(lamina.ShapeError, match=r"expected images of shape \(N, H, W, C\), got shape \(4, 5, 3\)"):
            fn(lamina.tensor(np.zeros((4, 5, 3))))
    with pytest.raises(ValueError, match="positive"):
        upsample2d(x, 0)
    with pytest.raises(TypeError, match="expected ints"):
        upsample2d(x, 1.5)
    with pytest.raises(ValueError, match=r"pair \(s_h, s_w\)"):
        upsample2d(x, (2, 2, 2))
    with pytest.raises(ValueError, match=r"interpolation must be one of \['nearest', 'bilinear'\], got 'bicubic'"):
        upsample2d(x, 2, "bicubic")
    with pytest.raises(ValueError, match="non-negative"):
        zero_pad2d(x, (1, -1))
    with pytest.raises(ValueError, match=r"\(top, bottom\), \(left, right\)"):
        zero_pad2d(x, ((1, 2, 3), (0, 0)))
    with pytest.raises(TypeError, match="expected ints"):
        crop2d(x, True)
    with pytest.raises(lamina.ShapeError, match=r"crop2d: cropping \(\(2, 2\), \(0, 0\)\) removes every row"):
        crop2d(x, (2, 0))
    with pytest.raises(lamina.ShapeError, match=r"crop2d.*\(2, 4, 5, 3\)"):
        crop2d(x, ((0, 0), (4, 1)))
    assert crop2d(x, ((3, 0), (0, 4))).shape == (2, 1, 1, 3)  # one pixel may remain


@pytest.mark.parametrize("size", [2, (2, 3), 4])
def test_bilinear_upsampling_keeps_a_non_finite_pixel_to_the_outputs_that_read_it(size):
    x = randn(2, 4, 5, 3, seed=5).astype(np.float64)
    x[0, 1, 2, 0] = np.nan
    x[1, 3, 0, 2] = np.inf
    x[1, 0, 4, 1] = -np.inf
    ours = upsample2d(lamina.tensor(x, dtype=np.float64), size, "bilinear").numpy()
    theirs = _torch_interpolate(size, "bilinear")(torch.tensor(x)).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)
    assert np.isfinite(ours).sum() > ours.size // 2
