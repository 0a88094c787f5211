"""entmoid15 against a torch 1.5-entmax of (x, 0) and NODE's closed form, its symmetry and
saturation, float64 gradient and second-derivative checks; and sparsemax and 1.5-entmax
against solutions found without sorting: the Euclidean projection onto the simplex by
enumerating supports, and the 1.5-entmax threshold by bisection."""

from __future__ import annotations

import itertools

import numpy as np
import torch

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
from tabular_checks import torch_entmax15


def torch_entmoid_as_entmax(x):
    return torch_entmax15(torch.stack([x, torch.zeros_like(x)], dim=-1))[..., 0]


def torch_entmoid_closed_form(x):
    """NODE's reference formula: tau = (|x| + sqrt(relu(8 - x^2))) / 2, kept only where tau > |x|."""
    a = x.abs()
    tau = (a + torch.sqrt(torch.relu(8 - a * a))) / 2
    tau = torch.where(tau <= a, torch.full_like(tau, 2.0), tau)
    lower = 0.25 * torch.relu(tau - a) ** 2
    return torch.where(x >= 0, 1 - lower, lower)


def test_entmoid_matches_two_score_entmax_in_values_and_gradients():
    x = randn(4, 9, seed=0, scale=1.5)
    compare_with_torch(F.entmoid15, torch_entmoid_as_entmax, x, dtype=np.float64, rtol=1e-10)
    compare_with_torch(F.entmoid15, torch_entmoid_as_entmax, x, dtype=np.float32, rtol=1e-5)
    wide = np.linspace(-4, 4, 81)
    expected = torch_entmoid_closed_form(torch.tensor(wide)).numpy()
    assert_close(F.entmoid15(lamina.tensor(wide, dtype=np.float64)).numpy(), expected, 1e-12, "closed form")


def test_entmoid_is_a_symmetric_soft_step():
    lamina.set_default_dtype(np.float64)
    x = np.linspace(-3.5, 3.5, 71)
    y = F.entmoid15(x).numpy()
    assert np.all(y[x <= -2] == 0) and np.all(y[x >= 2] == 1)
    assert_close(y + y[::-1], np.ones_like(y), 1e-12, "y(x) + y(-x)")
    assert abs(y[35] - 0.5) < 1e-12 and np.all(np.diff(y) >= 0)                       # y(0) = 1/2
    t = lamina.tensor(x, requires_grad=True)
    F.entmoid15(t).sum().backward()
    assert np.all(t.grad[np.abs(x) >= 2] == 0) and np.all(t.grad[np.abs(x) < 2] > 0)


def test_entmoid_second_derivatives():
    x = randn(3, 5, seed=1, scale=1.2)
    assert check_gradients(F.entmoid15, x)
    assert check_second_derivatives(lambda t: F.entmoid15(t) * t, x)
    compare_double_backward_with_torch(lambda t: F.entmoid15(t) * t, lambda t: torch_entmoid_as_entmax(t) * t, x)


def projection_by_supports(z):
    """argmin_{p in simplex} ||p - z||^2, searching every support S: p_S = z_S - (sum z_S - 1) / |S|."""
    best, best_distance = None, np.inf
    for size in range(1, len(z) + 1):
        for support in itertools.combinations(range(len(z)), size):
            p = np.zeros_like(z)
            p[list(support)] = z[list(support)] - (z[list(support)].sum() - 1) / size
            if np.all(p >= 0) and np.sum((p - z) ** 2) < best_distance:
                best, best_distance = p, np.sum((p - z) ** 2)
    return best


def entmax15_by_bisection(z, steps: int = 200):
    """p = max(z / 2 - tau, 0)^2 with sum p = 1, tau bisected in [max z / 2 - 1, max z / 2]."""
    half = z / 2
    low, high = half.max() - 1, half.max()
    for _ in range(steps):
        tau = (low + high) / 2
        if np.sum(np.maximum(half - tau, 0) ** 2) > 1:
            low = tau
        else:
            high = tau
    return np.maximum(half - (low + high) / 2, 0) ** 2


def test_sparsemax_is_the_euclidean_projection_onto_the_simplex():
    lamina.set_default_dtype(np.float64)
    z = randn(12, 6, seed=2, scale=1.5)
    p = F.sparsemax(z).numpy()
    for row, expected in zip(p, map(projection_by_supports, z)):
        assert_close(row, expected, 1e-12, "projection")
    assert (p == 0).any()


def test_entmax15_matches_a_bisection_solution():
    lamina.set_default_dtype(np.float64)
    z = randn(12, 7, seed=3, scale=2.0)
    p = F.entmax15(z).numpy()
    for row, expected in zip(p, map(entmax15_by_bisection, z)):
        assert_close(row, expected, 1e-10, "bisection")
    assert_close(p.sum(axis=1), np.ones(12), 1e-12, "row sums")
    assert (p == 0).any()
