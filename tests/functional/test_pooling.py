"""max_pool2d, avg_pool2d, global_avg_pool2d: values and gradients against PyTorch,
numerical gradients, tie-breaking, errors. Images are NHWC; the torch side permutes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
import lamina.functional as F
from helpers import assert_close, check_gradients, compare_with_torch
from lamina import ShapeError, parallel


def torch_pool(kind, f, s, p, ceil_mode):
    pool = TF.max_pool2d if kind == "max" else TF.avg_pool2d

    def fn(x):
        return pool(x.permute(0, 3, 1, 2), f, s, p, ceil_mode=ceil_mode).permute(0, 2, 3, 1)

    return fn


# (n, h, w, c, pool, stride, padding, ceil_mode)
CASES = [
    (2, 8, 8, 3, 2, None, 0, False),         # the common 2x2, stride 2
    (2, 9, 7, 3, 2, None, 0, False),         # odd sizes: the last row/column is dropped
    (2, 9, 9, 4, 3, 2, 0, False),            # overlapping (AlexNet's 3, stride 2)
    (2, 10, 10, 4, 3, 2, 1, False),          # overlapping with padding
    (2, 8, 8, 2, 3, 3, 1, False),            # f == s with padding
    (2, 9, 9, 3, 2, None, 0, True),          # ceil mode
    (2, 10, 11, 3, 3, 2, 0, True),           # ceil mode, overlapping
    (2, 10, 10, 3, 3, 2, 1, True),           # ceil mode with padding: the last window must
    (2, 6, 6, 3, 4, 3, 2, True),             # start inside the input or the left padding
    (2, 8, 9, 2, (2, 3), (1, 2), (1, 1), False),   # rectangular pool, strides per axis
    (2, 7, 7, 3, 3, 1, 1, False),            # stride 1
    (1, 5, 5, 2, 5, None, 0, False),         # the whole image
    (2, 8, 12, 3, (2, 3), (2, 3), 0, False),  # rectangular windows tiling the input (few channels)
    (2, 9, 9, 6, 3, None, 0, False),         # 3x3 windows tiling the input
    (40, 28, 28, 6, 2, None, 0, False),      # LeNet's first pooling, large enough for threads
]


def _id(case):
    n, h, w, c, f, s, p, ceil = case
    return f"{h}x{w}-f{f}-s{s}-p{p}{'-ceil' if ceil else ''}"


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_pool_matches_torch(case, kind):
    n, h, w, c, f, s, p, ceil = case
    x = np.random.default_rng(0).standard_normal((n, h, w, c))
    pool = F.max_pool2d if kind == "max" else F.avg_pool2d
    compare_with_torch(lambda x: pool(x, f, s, p, ceil_mode=ceil), torch_pool(kind, f, s, p, ceil), x)


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("case", [CASES[i] for i in (0, 2, 3, 7, 9)], ids=_id)
def test_pool_gradcheck(case, kind):
    n, h, w, c, f, s, p, ceil = case
    x = np.random.default_rng(1).standard_normal((1, h, w, 2))
    pool = F.max_pool2d if kind == "max" else F.avg_pool2d
    assert check_gradients(lambda x: pool(x, f, s, p, ceil_mode=ceil), x)


@pytest.mark.parametrize("case", [CASES[0], CASES[2], CASES[3]], ids=_id)
def test_max_pool_ties_go_to_the_first_maximum(case):
    """Many exact ties (as after a ReLU): one element per window gets the gradient, the
    first in row-major window order, as in PyTorch."""
    n, h, w, c, f, s, p, ceil = case
    x = np.random.default_rng(2).integers(0, 2, (n, h, w, c)).astype(np.float32)
    compare_with_torch(lambda x: F.max_pool2d(x, f, s, p), torch_pool("max", f, s, p, False), x)


def test_max_pool_tie_example():
    x = lamina.tensor(np.zeros((1, 2, 2, 1), np.float32), requires_grad=True)
    F.max_pool2d(x, 2).backward(np.array([[[[3.0]]]], np.float32))
    assert x.grad[0, :, :, 0].tolist() == [[3.0, 0.0], [0.0, 0.0]]


def test_max_pool_window_of_more_than_256_values_with_ties_matches_torch():
    """A 17 x 17 window (289 offsets: the first-maximum index needs more than a byte),
    overlapping, with ties, and the maxima in the bottom rows, past offset 255."""
    x = np.random.default_rng(5).integers(0, 3, (2, 20, 19, 3)).astype(np.float64)
    x[:, 16:] += 10.0
    compare_with_torch(lambda x: F.max_pool2d(x, 17, 2), torch_pool("max", 17, 2, 0, False), x)


def test_pool_float32_fast_path_shapes():
    x = np.random.default_rng(3).standard_normal((4, 32, 32, 8)).astype(np.float32)
    y = F.max_pool2d(lamina.tensor(x), 2)
    assert y.shape == (4, 16, 16, 8) and y.dtype == np.float32
    assert_close(y.numpy(), x.reshape(4, 16, 2, 16, 2, 8).max(axis=(2, 4)), 0.0)


def test_global_avg_pool_matches_torch():
    x = np.random.default_rng(4).standard_normal((3, 5, 7, 4))
    out = compare_with_torch(F.global_avg_pool2d, lambda x: x.mean(dim=(1, 2)), x)
    assert out[0].shape == (3, 4)
    assert check_gradients(F.global_avg_pool2d, x[:1, :3, :3, :2])


@pytest.mark.parametrize("fn", [F.max_pool2d, F.avg_pool2d])
def test_pool_errors(fn):
    name = fn.__name__
    with pytest.raises(ShapeError, match=rf"{name}: .*\(8, 8, 3\)"):
        fn(np.zeros((8, 8, 3), np.float32), 2)
    with pytest.raises(ShapeError) as info:
        fn(np.zeros((2, 3, 8, 3), np.float32), 4)
    assert all(word in str(info.value) for word in (name, "4x4", "3x8", "(2, 3, 8, 3)"))
    with pytest.raises(ValueError, match=rf"{name}: padding"):
        fn(np.zeros((2, 8, 8, 3), np.float32), 2, padding=2)
    with pytest.raises(ValueError, match=rf"{name}: pool_size"):
        fn(np.zeros((2, 8, 8, 3), np.float32), 0)


# (h, w, pool, stride, padding): in ceil mode a window may be longer than the padded input by
# less than the stride; it is clipped to the input (PyTorch's rule)
LONGER_THAN_INPUT = [
    (2, 5, 3, 2, 0),                          # one window down, clipped from 3 rows to 2
    (1, 4, (4, 3), (3, 2), (1, 1)),           # past the padding in height, the last window's in width
    (3, 2, (3, 4), (1, 3), (1, 0)),           # four columns of pool, two of input
]


@pytest.mark.parametrize("include_pad", [True, False])
@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("h, w, f, s, p", LONGER_THAN_INPUT)
def test_ceil_mode_window_longer_than_the_input_matches_torch(h, w, f, s, p, kind, include_pad):
    x = np.random.default_rng(6).standard_normal((2, h, w, 3))
    if kind == "max":
        ours, theirs = F.max_pool2d, TF.max_pool2d
    else:
        def ours(x, *args, **kwargs):
            return F.avg_pool2d(x, *args, count_include_pad=include_pad, **kwargs)

        def theirs(x, *args, **kwargs):
            return TF.avg_pool2d(x, *args, count_include_pad=include_pad, **kwargs)
    layer = (lamina.nn.MaxPool2D(f, s, p, ceil_mode=True) if kind == "max"
             else lamina.nn.AvgPool2D(f, s, p, ceil_mode=True, count_include_pad=include_pad))
    expected = lambda x: theirs(x.permute(0, 3, 1, 2), f, s, p, ceil_mode=True).permute(0, 2, 3, 1)  # noqa: E731
    compare_with_torch(lambda x: ours(x, f, s, p, ceil_mode=True), expected, x, dtype=np.float64)
    compare_with_torch(layer, expected, x, dtype=np.float64)
    assert layer.compute_output_shape((None, h, w, 3)) == (None,) + tuple(expected(torch.tensor(x)).shape[1:])


@pytest.mark.parametrize("fn", [F.max_pool2d, F.avg_pool2d])
def test_ceil_mode_refuses_a_window_longer_than_the_input_by_the_stride(fn):
    with pytest.raises(ShapeError, match=rf"{fn.__name__}: pool 4x4 is larger than the padded input 2x6 .*ceil mode"):
        fn(np.zeros((1, 2, 6, 1)), 4, stride=2, ceil_mode=True)
    with pytest.raises(RuntimeError):
        getattr(TF, fn.__name__)(torch.zeros((1, 1, 2, 6)), 4, stride=2, ceil_mode=True)
    with pytest.raises(ShapeError, match="MaxPool2D.*larger than the input of shape"):
        lamina.nn.MaxPool2D(4, 2, ceil_mode=True)(np.zeros((1, 2, 6, 1)))


def test_global_avg_pool_error():
    with pytest.raises(ShapeError, match=r"global_avg_pool2d: .*\(8, 3\)"):
        F.global_avg_pool2d(np.zeros((8, 3), np.float32))


def test_max_pool_nan_input_does_not_crash():
    x = np.ones((1, 4, 4, 1), np.float32)
    x[0, 0, 0, 0] = np.nan
    y = F.max_pool2d(lamina.tensor(x), 2).numpy()
    assert np.isnan(y[0, 0, 0, 0]) and y[0, 1, 1, 0] == 1.0
    assert torch.isnan(TF.max_pool2d(torch.tensor(x).permute(0, 3, 1, 2), 2)[0, 0, 0, 0])


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("f, s, p", [(2, None, 0), (3, 2, 1)])
def test_pool_large_batch_is_split_across_threads(kind, f, s, p):
    """Inputs big enough for the batch to be split across threads: same results as PyTorch,
    and bit-identical with one thread."""
    x = np.random.default_rng(5).standard_normal((6, 48, 48, 32))
    pool = F.max_pool2d if kind == "max" else F.avg_pool2d
    out = compare_with_torch(lambda x: pool(x, f, s, p), torch_pool(kind, f, s, p, False), x)
    threads = parallel.get_num_threads()
    try:
        parallel.set_num_threads(1)
        xs = lamina.tensor(x.astype(np.float32), requires_grad=True)
        y = pool(xs, f, s, p)
        y.backward(np.ones(y.shape, np.float32))
    finally:
        parallel.set_num_threads(threads)
    xt = lamina.tensor(x.astype(np.float32), requires_grad=True)
    z = pool(xt, f, s, p)
    z.backward(np.ones(z.shape, np.float32))
    assert np.array_equal(y.numpy(), out[0].numpy()) and np.array_equal(xs.grad, xt.grad)


@pytest.mark.parametrize("fn", [F.max_pool2d, F.avg_pool2d])
def test_pool_empty_batch(fn):
    x = lamina.tensor(np.zeros((0, 8, 8, 3), np.float32), requires_grad=True)
    y = fn(x, 3, 2, 1)
    y.backward(np.zeros(y.shape, np.float32))
    assert y.shape == (0, 4, 4, 3) and x.grad.shape == x.shape
