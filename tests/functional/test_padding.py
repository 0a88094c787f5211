"""pad2d in its four modes and pixel_shuffle / pixel_unshuffle: values and gradients against
PyTorch (NHWC here, NCHW there), numerical gradients, and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch.nn.functional as TF

import lamina
from helpers import check_gradients, compare_with_torch, randn
from lamina import ShapeError
from lamina.functional.padding import pad2d, pad_sides, pixel_shuffle, pixel_unshuffle

MODES = ["constant", "reflect", "replicate", "circular"]


def torch_pad(sides, mode, value=0.0):
    top, bottom, left, right = sides
    extra = {"value": value} if mode == "constant" else {}

    def fn(x):
        return TF.pad(x.permute(0, 3, 1, 2), (left, right, top, bottom), mode=mode, **extra).permute(0, 2, 3, 1)
    return fn


# (padding as given, as (top, bottom, left, right)) for x of shape (2, 4, 5, 3)
PADDINGS = [
    (1, (1, 1, 1, 1)),
    ((2, 1), (2, 2, 1, 1)),
    ((0, 3, 2, 1), (0, 3, 2, 1)),                 # asymmetric, one side none
    (((3, 0), (4, 4)), (3, 0, 4, 4)),             # the largest reflect allows: H - 1, W - 1
    ((0, 0, 0, 0), (0, 0, 0, 0)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("padding, sides", PADDINGS, ids=str)
def test_matches_torch(padding, sides, mode, dtype):
    x = randn(2, 4, 5, 3)
    y = compare_with_torch(lambda x: pad2d(x, padding, mode), torch_pad(sides, mode), x, dtype=dtype)[0]
    assert y.shape == (2, 4 + sides[0] + sides[1], 5 + sides[2] + sides[3], 3) and y.dtype == dtype


@pytest.mark.parametrize("mode", ["replicate", "circular"])
def test_padding_as_large_as_torch_allows(mode):
    """Replicate has no limit; circular wraps at most once (padding up to the size)."""
    sides = (4, 4, 5, 2) if mode == "circular" else (7, 6, 9, 11)
    compare_with_torch(lambda x: pad2d(x, sides, mode), torch_pad(sides, mode), randn(1, 4, 5, 2),
                       dtype=np.float64)


def test_constant_value_matches_torch():
    compare_with_torch(lambda x: pad2d(x, (1, 2, 0, 3), value=-2.5), torch_pad((1, 2, 0, 3), "constant", -2.5),
                       randn(2, 3, 3, 2), dtype=np.float64)


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck(mode):
    assert check_gradients(lambda x: pad2d(x, (2, 1, 3, 2), mode), randn(1, 3, 4, 2, seed=1))


def test_reflect_and_replicate_of_a_known_row():
    x = lamina.tensor(np.array([1.0, 2.0, 3.0]).reshape(1, 1, 3, 1), dtype=np.float64)
    row = {mode: pad2d(x, (0, 0, 2, 2), mode).numpy().ravel().tolist() for mode in MODES}
    assert row == {"constant": [0, 0, 1, 2, 3, 0, 0], "reflect": [3, 2, 1, 2, 3, 2, 1],
                   "replicate": [1, 1, 1, 2, 3, 3, 3], "circular": [2, 3, 1, 2, 3, 1, 2]}


def test_gradient_folds_back_onto_the_copied_pixels():
    """Every pixel's gradient counts the outputs that copy it: the ones through the pad."""
    x = lamina.tensor(np.zeros((1, 1, 3, 1)), requires_grad=True, dtype=np.float64)
    pad2d(x, (0, 0, 2, 2), "replicate").sum().backward()
    np.testing.assert_array_equal(x.grad.ravel(), [3, 1, 3])
    x.grad = None
    pad2d(x, (0, 0, 2, 2), "reflect").sum().backward()
    np.testing.assert_array_equal(x.grad.ravel(), [2, 3, 2])


@pytest.mark.parametrize("sides, mode, message", [
    ((4, 0, 0, 0), "reflect", r"pad2d: reflect padding \(top, bottom, left, right\) = \(4, 0, 0, 0\) does not fit "
                              r"x of shape \(1, 4, 5, 2\); expected each height padding less than the height 4"),
    ((0, 0, 1, 5), "reflect", r"expected each width padding less than the width 5"),
    ((0, 5, 0, 0), "circular", r"pad2d: circular padding .* expected each height padding at most the height 4"),
])
def test_paddings_too_large_for_the_mode(sides, mode, message):
    with pytest.raises(ShapeError, match=message):
        pad2d(lamina.tensor(randn(1, 4, 5, 2)), sides, mode)


def test_replicate_needs_a_pixel():
    with pytest.raises(ShapeError, match=r"pad2d: replicate padding .* shape \(1, 0, 5, 2\); expected a height of at "
                                         r"least 1"):
        pad2d(lamina.tensor(np.zeros((1, 0, 5, 2))), 1, "replicate")


@pytest.mark.parametrize("call, error, message", [
    (lambda x: pad2d(x, 1, "mirror"), ValueError, r"pad2d: mode must be one of .*'reflect'.*, got 'mirror'"),
    (lambda x: pad2d(x, 1, "reflect", value=1.0), ValueError, r"pad2d: value=1.0 is only used by mode='constant'"),
    (lambda x: pad2d(x, -1), ValueError, r"pad2d: padding must be .* non-negative ints, got -1"),
    (lambda x: pad2d(x, (1, 2, 3)), ValueError, r"pad2d: padding must be an int, \(p_h, p_w\)"),
    (lambda x: pad2d(x, 1.5), ValueError, r"pad2d: padding must be"),
    (lambda x: pad2d(x[0], 1), ShapeError, r"pad2d: expected x of shape \(N, H, W, C\).*got shape \(4, 5, 2\)"),
])
def test_bad_arguments_name_the_function(call, error, message):
    with pytest.raises(error, match=message):
        call(lamina.tensor(randn(1, 4, 5, 2)))


def test_pad_sides_forms():
    assert pad_sides(2, "f") == (2, 2, 2, 2)
    assert pad_sides((1, 3), "f") == (1, 1, 3, 3)
    assert pad_sides([0, 1, 2, 3], "f") == (0, 1, 2, 3)
    assert pad_sides(((0, 1), (2, 3)), "f") == (0, 1, 2, 3)


# -- pixel shuffle ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, r", [((2, 3, 4, 8), 2), ((1, 2, 2, 18), 3), ((2, 3, 3, 5), 1)])
def test_pixel_shuffle_matches_torch(shape, r, dtype):
    y = compare_with_torch(lambda x: pixel_shuffle(x, r),
                           lambda x: TF.pixel_shuffle(x.permute(0, 3, 1, 2), r).permute(0, 2, 3, 1),
                           randn(*shape), dtype=dtype)[0]
    n, h, w, c = shape
    assert y.shape == (n, h * r, w * r, c // (r * r))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, r", [((2, 6, 4, 2), 2), ((1, 6, 9, 1), 3)])
def test_pixel_unshuffle_matches_torch(shape, r, dtype):
    compare_with_torch(lambda x: pixel_unshuffle(x, r),
                       lambda x: TF.pixel_unshuffle(x.permute(0, 3, 1, 2), r).permute(0, 2, 3, 1),
                       randn(*shape), dtype=dtype)


def test_pixel_shuffle_channel_order_on_a_known_input():
    """Output pixel (i, j) of each 2x2 block reads channel c r^2 + i r + j."""
    x = np.arange(8, dtype=np.float64).reshape(1, 1, 1, 8)
    y = pixel_shuffle(lamina.tensor(x, dtype=np.float64), 2).numpy()
    np.testing.assert_array_equal(y[0, :, :, 0], [[0, 1], [2, 3]])
    np.testing.assert_array_equal(y[0, :, :, 1], [[4, 5], [6, 7]])


def test_unshuffle_inverts_shuffle_and_gradients_check():
    x = randn(2, 3, 2, 12, seed=3)
    back = pixel_unshuffle(pixel_shuffle(lamina.tensor(x, dtype=np.float64), 2), 2).numpy()
    np.testing.assert_array_equal(back, x)
    assert check_gradients(lambda x: pixel_shuffle(x, 2), randn(1, 2, 3, 8, seed=4))
    assert check_gradients(lambda x: pixel_unshuffle(x, 3), randn(1, 3, 6, 2, seed=5))


@pytest.mark.parametrize("call, error, message", [
    (lambda: pixel_shuffle(lamina.tensor(randn(1, 2, 2, 6)), 2), ShapeError,
     r"pixel_shuffle: the 6 channels of x with shape \(1, 2, 2, 6\) are not a multiple of r\^2 = 4"),
    (lambda: pixel_unshuffle(lamina.tensor(randn(1, 4, 5, 1)), 2), ShapeError,
     r"pixel_unshuffle: the height 4 and width 5 of x with shape \(1, 4, 5, 1\) must both be multiples of r = 2"),
    (lambda: pixel_shuffle(lamina.tensor(randn(1, 2, 2, 4)), 0), ValueError,
     r"pixel_shuffle: the factor r must be a positive int, got 0"),
    (lambda: pixel_unshuffle(lamina.tensor(randn(2, 2, 4)), 2), ShapeError,
     r"pixel_unshuffle: expected x of shape \(N, H, W, C\)"),
])
def test_pixel_shuffle_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()
