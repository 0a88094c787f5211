"""sin, cos, tan, log1p, expm1, square, reciprocal, rsqrt, log2, log10, atan2, sign, floor, round."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import compare_with_torch, nonzero, op_table_tests, positive, randn
from lamina.functional import math_more as M


def uniform(low, high, *shape, seed=0):
    return np.random.default_rng(seed).uniform(low, high, shape)


def off_grid(*shape, seed=0, step=1.0, offset=0.0, gap=0.1):
    """Values in [-3, 3] at least ``gap`` from every point offset + k step (the jumps of floor/round)."""
    x = uniform(-3.0, 3.0, *shape, seed=seed)
    phase = (x - offset) / step - np.floor((x - offset) / step)
    near = np.minimum(phase, 1 - phase) * step < gap
    return np.where(near, x + 2 * gap, x)


# name: (lamina function, torch function, inputs)
CASES = {
    "sin": (M.sin, torch.sin, [randn(3, 4, scale=2.0)]),
    "cos": (M.cos, torch.cos, [randn(3, 4, scale=2.0)]),
    "tan": (M.tan, torch.tan, [uniform(-1.2, 1.2, 3, 4)]),
    "log1p": (M.log1p, torch.log1p, [uniform(-0.6, 3.0, 3, 4)]),
    "expm1": (M.expm1, torch.expm1, [randn(3, 4)]),
    "square": (M.square, torch.square, [randn(3, 4)]),
    "reciprocal": (M.reciprocal, torch.reciprocal, [nonzero(3, 4)]),
    "rsqrt": (M.rsqrt, torch.rsqrt, [positive(3, 4)]),
    "log2": (M.log2, torch.log2, [positive(3, 4, high=9.0)]),
    "log10": (M.log10, torch.log10, [positive(3, 4, high=90.0)]),
    "atan2": (M.atan2, torch.atan2, [randn(3, 4), nonzero(3, 4, seed=1)]),
    "atan2_broadcast": (M.atan2, torch.atan2, [randn(2, 1, 4), nonzero(3, 1, seed=1)]),
    "atan2_all_quadrants": (M.atan2, torch.atan2, [nonzero(4, 4, seed=2), nonzero(4, 4, seed=3)]),
    "sign": (M.sign, torch.sign, [nonzero(3, 4)]),
    "floor": (M.floor, torch.floor, [off_grid(3, 4)]),
    "round": (M.round, torch.round, [off_grid(3, 4, offset=0.5)]),
    "round_decimals": (lambda x: M.round(x, decimals=1), lambda x: torch.round(x, decimals=1),
                       [off_grid(3, 4, step=0.1, offset=0.05, gap=0.02)]),
    "composite": (lambda x: M.log1p(M.square(M.sin(x))) * M.rsqrt(M.expm1(M.square(x)) + 1.0),
                  lambda x: torch.log1p(torch.sin(x) ** 2) * torch.rsqrt(torch.expm1(x ** 2) + 1.0), [randn(3, 3)]),
}

test_matches_torch, test_gradcheck = op_table_tests(CASES)


@pytest.mark.parametrize("name", ["sign", "floor", "round"])
def test_piecewise_constant_ops_pass_a_zero_gradient(name):
    x = lamina.tensor(np.array([-1.7, -0.2, 0.0, 0.4, 2.5]), requires_grad=True)
    (getattr(M, name)(x) * 3.0).sum().backward()
    np.testing.assert_array_equal(x.grad, np.zeros(5))


def test_round_sends_halves_to_even_as_torch():
    x = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5])
    ours = M.round(lamina.tensor(x, dtype=np.float64)).numpy()
    np.testing.assert_array_equal(ours, torch.round(torch.tensor(x)).numpy())


def test_sign_of_zero_is_zero():
    x = lamina.tensor(np.array([-3.0, 0.0, 2.0]))
    np.testing.assert_array_equal(M.sign(x).numpy(), [-1.0, 0.0, 1.0])


@pytest.mark.parametrize("name", ["log1p", "expm1"])
def test_log1p_and_expm1_keep_tiny_arguments_exact(name):
    x = np.array([1e-12, -3e-10, 2e-8])
    ours = compare_with_torch(getattr(M, name), getattr(torch, name), x, dtype=np.float64)[0].numpy()
    naive = np.log(1 + x) if name == "log1p" else np.exp(x) - 1
    np.testing.assert_allclose(ours, x, rtol=1e-7)  # both are x (1 + O(x)) here
    assert (np.abs(naive - x) / np.abs(x)).max() > 1e-6  # where the plain formula is off


def test_atan2_covers_all_four_quadrants():
    y, x = np.array([1.0, 1.0, -1.0, -1.0]), np.array([1.0, -1.0, -1.0, 1.0])
    out = M.atan2(lamina.tensor(y, dtype=np.float64), lamina.tensor(x, dtype=np.float64)).numpy()
    np.testing.assert_allclose(out, [np.pi / 4, 3 * np.pi / 4, -3 * np.pi / 4, -np.pi / 4], rtol=1e-12)


def test_float32_stays_float32():
    x = lamina.tensor(positive(2, 3), requires_grad=True)
    for name in ["sin", "cos", "tan", "log1p", "expm1", "square", "reciprocal", "rsqrt", "log2", "log10",
                 "sign", "floor", "round"]:
        x.zero_grad()
        y = getattr(M, name)(x)
        y.sum().backward()
        assert y.dtype == np.float32 and x.grad.dtype == np.float32, name
    assert M.atan2(x, x).dtype == np.float32


def test_atan2_shape_mismatch_names_the_op_and_shapes():
    with pytest.raises(lamina.ShapeError, match=r"atan2.*\(2, 3\).*\(4,\)"):
        M.atan2(lamina.tensor(np.ones((2, 3))), lamina.tensor(np.ones(4)))


@pytest.mark.parametrize("decimals", [1.5, "2", True])
def test_round_rejects_non_integer_decimals(decimals):
    with pytest.raises(ValueError, match="round: decimals"):
        M.round(lamina.tensor(np.ones(3)), decimals=decimals)


def test_atan2_gradient_at_the_origin_is_zero_as_torch():
    y, x = np.array([0.0, 1.0, 0.0]), np.array([0.0, 2.0, -3.0])
    ours = [lamina.tensor(v, requires_grad=True, dtype=np.float64) for v in (y, x)]
    theirs = [torch.tensor(v, requires_grad=True) for v in (y, x)]
    M.atan2(*ours).sum().backward()
    torch.atan2(*theirs).sum().backward()
    for v, t in zip(ours, theirs):
        np.testing.assert_allclose(v.grad, t.grad.numpy(), rtol=1e-12)     # NaN would not match
    a = lamina.tensor(np.array([0.0, 0.5]), requires_grad=True, dtype=np.float64)
    b = lamina.tensor(np.array([0.0, 0.5]), requires_grad=True, dtype=np.float64)
    (g,) = lamina.autograd.grad(M.atan2(a, b).sum(), [a], create_graph=True)
    np.testing.assert_allclose(g.numpy(), [0.0, 1.0])
