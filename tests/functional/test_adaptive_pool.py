"""adaptive_avg_pool2d, adaptive_max_pool2d and their 1-D forms: values and gradients
against PyTorch for divisible sizes, overlapping windows (7 -> 3, 5 -> 2) and outputs larger
than the input (3 -> 5), numerical gradients, tie-breaking, and errors. Images are NHWC;
the torch side permutes."""

from __future__ import annotations

import numpy as np
import pytest
import torch.nn.functional as TF

import lamina
from helpers import check_gradients, compare_with_torch, randn
from lamina import ShapeError
from lamina.functional.adaptive_pool import (
    adaptive_avg_pool1d,
    adaptive_avg_pool2d,
    adaptive_max_pool1d,
    adaptive_max_pool2d,
    adaptive_windows,
)

OURS = {"avg": adaptive_avg_pool2d, "max": adaptive_max_pool2d}
THEIRS = {"avg": TF.adaptive_avg_pool2d, "max": TF.adaptive_max_pool2d}


def torch_pool(kind, output_size):
    def fn(x):
        return THEIRS[kind](x.permute(0, 3, 1, 2), output_size).permute(0, 2, 3, 1)
    return fn


# (h, w, output_size)
CASES = [
    (8, 8, 4),               # divisible: plain 2x2 pooling
    (8, 6, (2, 3)),          # divisible, rectangular windows
    (7, 7, 3),               # overlapping windows
    (5, 5, 2),
    (7, 5, (3, 2)),
    (3, 3, 5),               # more outputs than inputs: pixels repeat
    (3, 4, (5, 7)),
    (6, 7, (3, 2)),          # divisible along H only
    (7, 6, 1),               # a global pool
    (6, 5, (None, 3)),       # None keeps the input height
    (4, 4, 4),               # the identity
]


def _id(case):
    h, w, out = case
    return f"{h}x{w}->{out}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["avg", "max"])
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_matches_torch(case, kind, dtype):
    h, w, out = case
    x = randn(2, h, w, 3, seed=h * w)
    y = compare_with_torch(lambda x: OURS[kind](x, out), torch_pool(kind, out), x, dtype=dtype)[0]
    assert y.dtype == dtype


@pytest.mark.parametrize("kind", ["avg", "max"])
@pytest.mark.parametrize("case", [CASES[i] for i in (1, 2, 4, 6, 7)], ids=_id)
def test_gradcheck(case, kind):
    h, w, out = case
    assert check_gradients(lambda x: OURS[kind](x, out), randn(1, h, w, 2, seed=1))


@pytest.mark.parametrize("case", [CASES[0], CASES[2], CASES[3], CASES[5], CASES[7]], ids=_id)
def test_max_ties_go_to_the_first_maximum_as_torch(case):
    """Many exact ties (as after a ReLU), overlapping windows sharing them: each window's
    gradient goes to its first maximum in row-major order, summed where windows share it."""
    h, w, out = case
    x = np.random.default_rng(2).integers(0, 2, (2, h, w, 3)).astype(np.float32)
    compare_with_torch(lambda x: adaptive_max_pool2d(x, out), torch_pool("max", out), x)


def test_max_tie_across_rows_and_columns():
    """The maxima at (0, 1) and (1, 0) of window (0, 0) of 3 -> 2: the first in row-major
    order is (0, 1), which window (0, 1) picks too; (1, 0) gets window (1, 0)'s alone, and
    the all-zero window (1, 1) picks its first pixel (1, 1)."""
    x = np.zeros((1, 3, 3, 1))
    x[0, 0, 1, 0] = x[0, 1, 0, 0] = 1.0
    z = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    adaptive_max_pool2d(z, 2).sum().backward()
    compare_with_torch(lambda x: adaptive_max_pool2d(x, 2), torch_pool("max", 2), x, dtype=np.float64)
    expected = np.zeros((3, 3))
    expected[0, 1], expected[1, 0], expected[1, 1] = 2.0, 1.0, 1.0
    np.testing.assert_array_equal(z.grad[0, :, :, 0], expected)


def test_windows_follow_torchs_rule():
    assert adaptive_windows(7, 3) == [(0, 3), (2, 5), (4, 7)]
    assert adaptive_windows(5, 2) == [(0, 3), (2, 5)]
    assert adaptive_windows(3, 5) == [(0, 1), (0, 2), (1, 2), (1, 3), (2, 3)]
    assert adaptive_windows(8, 4) == [(0, 2), (2, 4), (4, 6), (6, 8)]


def test_average_of_a_known_image():
    x = np.arange(25, dtype=np.float64).reshape(1, 5, 5, 1)
    y = adaptive_avg_pool2d(lamina.tensor(x, dtype=np.float64), 2).numpy()[0, :, :, 0]
    # windows rows/cols 0..2 and 2..4: the mean of a 3x3 block of 5 r + c is 5 (mean r) + (mean c)
    np.testing.assert_allclose(y, [[5 * 1 + 1, 5 * 1 + 3], [5 * 3 + 1, 5 * 3 + 3]])


@pytest.mark.parametrize("kind", ["avg", "max"])
@pytest.mark.parametrize("steps, out", [(7, 3), (5, 2), (3, 5), (8, 4)])
def test_1d_matches_torch(kind, steps, out):
    ours = adaptive_avg_pool1d if kind == "avg" else adaptive_max_pool1d
    theirs = TF.adaptive_avg_pool1d if kind == "avg" else TF.adaptive_max_pool1d
    compare_with_torch(lambda x: ours(x, out), lambda x: theirs(x.permute(0, 2, 1), out).permute(0, 2, 1),
                       randn(2, steps, 3, seed=steps), dtype=np.float64)
    assert check_gradients(lambda x: ours(x, out), randn(1, steps, 2, seed=4))


@pytest.mark.parametrize("kind", ["avg", "max"])
def test_empty_batch_keeps_its_shape(kind):
    x = lamina.tensor(np.zeros((0, 7, 5, 3), np.float32), requires_grad=True)
    y = OURS[kind](x, (3, 2))
    assert y.shape == (0, 3, 2, 3)
    y.sum().backward()
    assert x.grad.shape == (0, 7, 5, 3)


@pytest.mark.parametrize("output_size", [0, -2, 2.5, (2, 0), (1, 2, 3), "3", True])
@pytest.mark.parametrize("kind", ["avg", "max"])
def test_bad_output_size(kind, output_size):
    with pytest.raises(ValueError, match=rf"adaptive_{kind}_pool2d: output_size must"):
        OURS[kind](lamina.tensor(randn(1, 4, 4, 1)), output_size)


@pytest.mark.parametrize("kind", ["avg", "max"])
def test_bad_inputs_name_the_function_and_shape(kind):
    with pytest.raises(ShapeError, match=rf"adaptive_{kind}_pool2d: expected x of shape \(N, H, W, C\).*\(4, 4, 1\)"):
        OURS[kind](lamina.tensor(randn(4, 4, 1)), 2)
    with pytest.raises(ShapeError, match=rf"adaptive_{kind}_pool2d: x of shape \(1, 0, 4, 1\) has no pixels"):
        OURS[kind](lamina.tensor(np.zeros((1, 0, 4, 1))), 2)
    one_d = adaptive_avg_pool1d if kind == "avg" else adaptive_max_pool1d
    with pytest.raises(ShapeError, match=rf"adaptive_{kind}_pool1d: expected x of shape \(N, T, C\).*\(1, 4, 4, 1\)"):
        one_d(lamina.tensor(randn(1, 4, 4, 1)), 2)
    with pytest.raises(ValueError, match=rf"adaptive_{kind}_pool1d: output_size must be an int"):
        one_d(lamina.tensor(randn(1, 4, 1)), (2, 2))
