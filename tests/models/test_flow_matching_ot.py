"""Optimal transport for flow matching: the cost against torch, the exact assignment against
every permutation, Sinkhorn's marginals and its limit as reg -> 0, the exact W2, and errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from helpers import assert_close, randn
from lamina.errors import ShapeError
from lamina.models import optimal_assignment, sinkhorn, squared_distances, wasserstein2


def _brute_force(x, y):
    """The cheapest permutation and its total cost, trying all of them."""
    cost = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    best = min(itertools.permutations(range(len(x))), key=lambda p: cost[np.arange(len(x)), list(p)].sum())
    return np.array(best), cost[np.arange(len(x)), list(best)].sum()


def test_squared_distances_match_torch_cdist():
    x, y = randn(5, 2, 3, seed=1), randn(4, 2, 3, seed=2)
    expected = torch.cdist(torch.tensor(x.reshape(5, -1)), torch.tensor(y.reshape(4, -1))) ** 2
    assert_close(squared_distances(x, y), expected.numpy(), 1e-9, "squared distances")


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_assignment_is_the_brute_force_optimum(seed):
    x, y = randn(6, 2, seed=seed), randn(6, 2, seed=seed + 10)
    permutation = optimal_assignment(x, y)
    best, best_cost = _brute_force(x, y)
    np.testing.assert_array_equal(permutation, best)
    assert wasserstein2(x, y) == pytest.approx(np.sqrt(best_cost / 6), rel=1e-12)


def test_assignment_recovers_a_shuffle():
    x = randn(20, 3, seed=4)
    order = np.random.default_rng(0).permutation(20)
    np.testing.assert_array_equal(optimal_assignment(x, x[order]), np.argsort(order))
    assert wasserstein2(x, x[order]) == pytest.approx(0, abs=1e-7)


def test_wasserstein2_of_a_shift_is_its_length():
    x = randn(30, 2, seed=5)
    assert wasserstein2(x, x + np.array([0.3, -0.4])) == pytest.approx(0.5, rel=1e-9)


def test_sinkhorn_plan_has_the_marginals():
    rng = np.random.default_rng(0)
    a, b = rng.random(5) + 0.1, rng.random(7) + 0.1
    a, b = a / a.sum(), b / b.sum()
    cost = squared_distances(randn(5, 2, seed=1), randn(7, 2, seed=2))
    plan = sinkhorn(a, b, cost, reg=0.1, iters=500)
    assert plan.shape == (5, 7) and np.all(plan >= 0)
    assert_close(plan.sum(1), a, 1e-8, "row sums")
    assert_close(plan.sum(0), b, 1e-8, "column sums")


def test_sinkhorn_approaches_the_exact_plan_as_reg_shrinks():
    x, y = randn(6, 2, seed=7), randn(6, 2, seed=8)
    cost = squared_distances(x, y)
    exact = np.zeros((6, 6))
    exact[np.arange(6), optimal_assignment(x, y)] = 1 / 6
    uniform = np.full(6, 1 / 6)
    gaps = [np.abs(sinkhorn(uniform, uniform, cost, reg * cost.mean(), iters=2000) - exact).sum()
            for reg in (1.0, 0.1, 0.03, 0.003)]
    assert gaps[0] > gaps[1] > gaps[2] > gaps[3]
    assert gaps[0] > 1 and gaps[3] < 1e-3
    # a large reg spreads the plan toward the independent coupling a b^T
    wide = sinkhorn(uniform, uniform, cost, 1e4, iters=50)
    assert_close(wide, np.full((6, 6), 1 / 36), 1e-3, "plan at a huge reg")


def test_errors():
    with pytest.raises(ShapeError, match=r"optimal_assignment: x of shape \(3, 2\) and y of shape \(4, 2\)"):
        optimal_assignment(np.zeros((3, 2)), np.zeros((4, 2)))
    with pytest.raises(ShapeError, match="squared_distances: samples of x .* differ in size"):
        squared_distances(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ShapeError, match=r"sinkhorn: got weights a \(3,\), b \(3,\) and a cost of shape \(3, 2\)"):
        sinkhorn(np.ones(3) / 3, np.ones(3) / 3, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="sinkhorn: reg must be a number > 0, got 0"):
        sinkhorn(np.ones(3) / 3, np.ones(3) / 3, np.zeros((3, 3)), reg=0)
    with pytest.raises(ValueError, match="sinkhorn: the weights must be non-negative with equal sums"):
        sinkhorn(np.ones(3), np.ones(3) / 3, np.zeros((3, 3)))
