"""sparsemax and 1.5-entmax: values and gradients against torch implementations of the
papers' sort-based thresholds, float64 gradient checks, outputs on the simplex with exact
zeros, closed forms on two scores, the axis argument and errors."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
import lamina.nn.functional as F
from helpers import (
    assert_close,
    check_gradients,
    check_second_derivatives,
    compare_double_backward_with_torch,
    compare_with_torch,
    randn,
)
from lamina.errors import ShapeError
from tabular_checks import torch_entmax15, torch_sparsemax


@pytest.mark.parametrize("ours, theirs", [(F.sparsemax, torch_sparsemax), (F.entmax15, torch_entmax15)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_values_and_gradients_match_torch(ours, theirs, dtype):
    z = randn(5, 7, seed=1, scale=2.0)
    compare_with_torch(ours, theirs, z, dtype=dtype, rtol=1e-5 if dtype == np.float32 else 1e-10)
    compare_with_torch(lambda t: ours(t, axis=0), lambda t: theirs(t, dim=0), z, dtype=dtype,
                       rtol=1e-5 if dtype == np.float32 else 1e-10)


@pytest.mark.parametrize("ours, theirs", [(F.sparsemax, torch_sparsemax), (F.entmax15, torch_entmax15)])
def test_gradients_and_second_derivatives(ours, theirs):
    z = randn(3, 6, seed=2, scale=1.5)
    assert check_gradients(ours, z)
    # times z, so that the gradient depends on z also where the map is piecewise linear (sparsemax)
    assert check_second_derivatives(lambda t: ours(t) * t, z)
    compare_double_backward_with_torch(lambda t: ours(t) * t, lambda t: theirs(t) * t, z)


@pytest.mark.parametrize("fn", [F.sparsemax, F.entmax15])
def test_outputs_lie_on_the_simplex_with_exact_zeros(fn):
    lamina.set_default_dtype(np.float64)
    z = randn(64, 10, seed=3, scale=3.0)
    p = fn(z).numpy()
    assert np.all(p >= 0)
    assert_close(p.sum(axis=1), np.ones(64), 1e-12, "row sums")
    assert (p == 0).mean() > 0.3                                       # well spread scores: many exact zeros
    order = np.argsort(z, axis=1)                                       # monotone: higher score, no lower p
    assert np.all(np.diff(np.take_along_axis(p, order, axis=1), axis=1) >= -1e-12)
    softmax = lamina.functional.softmax(lamina.tensor(z), axis=1).numpy()
    assert np.all(softmax > 0)                                          # where softmax has no zero at all


def test_closed_forms_on_two_scores():
    lamina.set_default_dtype(np.float64)
    t = np.array([-2.0, -0.5, 0.0, 0.3, 0.99, 1.7])
    z = np.stack([t, np.zeros_like(t)], axis=1)
    expected = np.clip((t + 1) / 2, 0, 1)                               # sparsemax([t, 0])_0
    assert_close(F.sparsemax(z).numpy()[:, 0], expected, 1e-12, "sparsemax([t, 0])")
    # 1.5-entmax([t, 0]): with u = t / 2, p_0 = (u / 2 + sqrt(2 - u^2) / 2)^2 for |u| < 1, else 0 or 1
    u = t / 2
    inside = np.abs(u) < 1
    closed = np.where(inside, ((u + np.sqrt(np.where(inside, 2 - u * u, 0))) / 2) ** 2, (u > 0).astype(float))
    assert_close(F.entmax15(z).numpy()[:, 0], closed, 1e-12, "entmax15([t, 0])")
    uniform = F.sparsemax(np.zeros((1, 4))).numpy()
    assert_close(uniform, np.full((1, 4), 0.25), 1e-12, "equal scores")


def test_gradient_is_zero_outside_the_support_and_sums_to_zero():
    z = lamina.tensor(np.array([[2.0, 1.5, -1.0, -3.0]]), requires_grad=True, dtype=np.float64)
    p = F.sparsemax(z)
    (p * lamina.tensor(np.array([[1.0, -2.0, 5.0, 7.0]]))).sum().backward()
    assert_close(p.numpy(), np.array([[0.75, 0.25, 0, 0]]), 1e-12, "support of two")
    assert_close(z.grad, np.array([[1.5, -1.5, 0, 0]]), 1e-12, "gradient")


def test_axis_out_of_range_is_refused():
    with pytest.raises(ShapeError, match=r"sparsemax: axis 2 is out of range for an input of shape \(3, 4\)"):
        F.sparsemax(np.zeros((3, 4)), axis=2)
    with pytest.raises(ShapeError, match="entmax15: axis"):
        F.entmax15(np.zeros(()), axis=0)
