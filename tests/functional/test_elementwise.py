"""exp, log, sqrt, abs, clip, where, maximum, minimum, and comparisons."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

import helpers
import lamina
import lamina.functional as F
from helpers import op_table_tests, randn

nonzero = functools.partial(helpers.nonzero, low=0.2)
positive = functools.partial(helpers.positive, low=0.3, high=3.0)



def away_from(points, *shape, seed=0, gap=0.05):
    """Uniform values in [-2, 2] none of which lies within ``gap`` of a kink in ``points``."""
    x = np.random.default_rng(seed).uniform(-2.0, 2.0, shape)
    for p in points:
        close = np.abs(x - p) < gap
        x[close] = p + np.where(x[close] >= p, 2 * gap, -2 * gap)
    return x


COND = np.random.default_rng(7).random((3, 4)) > 0.4

# name: (lamina function, torch function, inputs)
CASES = {
    "exp": (F.exp, torch.exp, [randn(3, 4)]),
    "exp_method": (lambda x: x.exp(), lambda x: x.exp(), [randn(2, 3)]),
    "log": (F.log, torch.log, [positive(3, 4)]),
    "log_method": (lambda x: x.log(), lambda x: x.log(), [positive(5)]),
    "sqrt": (F.sqrt, torch.sqrt, [positive(3, 4)]),
    "sqrt_method": (lambda x: x.sqrt(), lambda x: x.sqrt(), [positive(5)]),
    "abs": (F.abs, torch.abs, [nonzero(3, 4)]),
    "abs_builtin": (lambda x: abs(x), lambda x: abs(x), [nonzero(5)]),
    "abs_method": (lambda x: x.abs(), lambda x: x.abs(), [nonzero(2, 3)]),
    "clip_both": (lambda x: F.clip(x, -0.5, 0.8), lambda x: torch.clamp(x, -0.5, 0.8),
                  [away_from([-0.5, 0.8], 4, 5)]),
    "clip_low": (lambda x: x.clip(0.0), lambda x: torch.clamp(x, min=0.0), [away_from([0.0], 4, 5)]),
    "clip_high": (lambda x: x.clip(None, 0.3), lambda x: torch.clamp(x, max=0.3), [away_from([0.3], 4, 5)]),
    "where": (lambda a, b: lamina.where(COND, a, b), lambda a, b: torch.where(torch.tensor(COND), a, b),
              [randn(3, 4), randn(3, 4, seed=1)]),
    "where_broadcast": (lambda a, b: F.where(COND, a, b), lambda a, b: torch.where(torch.tensor(COND), a, b),
                        [randn(3, 1), randn(4, seed=1)]),
    "where_scalar_branch": (lambda a: lamina.where(lamina.tensor(COND), a, 0.5),
                            lambda a: torch.where(torch.tensor(COND), a, 0.5), [randn(3, 4)]),
    "where_comparison": (lambda a, b: lamina.where(a > b, a * 2, b), lambda a, b: torch.where(a > b, a * 2, b),
                         [randn(3, 4), randn(3, 4, seed=1)]),
    "maximum": (F.maximum, torch.maximum, [randn(3, 4), randn(3, 4, seed=1)]),
    "maximum_broadcast": (F.maximum, torch.maximum, [randn(3, 4), randn(4, seed=1)]),
    "minimum": (F.minimum, torch.minimum, [randn(3, 4), randn(3, 4, seed=1)]),
    "minimum_broadcast": (F.minimum, torch.minimum, [randn(2, 1, 3), randn(4, 1, seed=1)]),
    "composite": (lambda x: (F.exp(-x * x) + F.sqrt(F.abs(x) + 1.0)).log(),
                  lambda x: (torch.exp(-x * x) + torch.sqrt(torch.abs(x) + 1.0)).log(), [nonzero(3, 3)]),
}


test_matches_torch, test_gradcheck = op_table_tests(CASES)


def test_clip_passes_gradient_only_inside_the_range():
    x = lamina.tensor(np.array([-2.0, -0.5, 0.0, 0.7, 1.0, 3.0]), requires_grad=True)
    x.clip(-0.5, 1.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [0, 1, 1, 1, 1, 0])


def test_where_gives_no_gradient_to_the_condition():
    a = lamina.tensor(randn(3, 4), requires_grad=True)
    cond = lamina.tensor(COND)
    lamina.where(cond, a, -a).sum().backward()
    assert cond.grad is None
    np.testing.assert_array_equal(a.grad, np.where(COND, 1.0, -1.0))


def test_maximum_shape_error():
    with pytest.raises(lamina.ShapeError, match=r"maximum: .*\(2, 3\).*\(4,\)"):
        F.maximum(lamina.tensor(np.ones((2, 3))), lamina.tensor(np.ones(4)))


COMPARISONS = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}


@pytest.mark.parametrize("symbol", list(COMPARISONS))
def test_comparisons_return_tensors_without_gradient(symbol):
    op = COMPARISONS[symbol]
    a_np = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    b_np = np.array([3.0, 2.0, 1.0])
    a = lamina.tensor(a_np, requires_grad=True)
    b = lamina.tensor(b_np, requires_grad=True)
    for result, expected in ((op(a, b), op(a_np, b_np)), (op(a, 2.0), op(a_np, 2.0)),
                             (op(a, b_np), op(a_np, b_np))):
        assert isinstance(result, lamina.Tensor)
        assert result.requires_grad is False
        assert result._ctx is None
        assert result.dtype == np.bool_
        np.testing.assert_array_equal(result.numpy(), expected)
    with pytest.raises(RuntimeError):
        op(a, b).backward(np.ones((2, 3)))


@pytest.mark.parametrize("symbol", list(COMPARISONS))
def test_comparison_of_scalars_holds_an_array(symbol):
    x = lamina.tensor(np.array([1.0, 2.0]), requires_grad=True)
    result = COMPARISONS[symbol](x.sum(), 3.0)
    assert isinstance(result.data, np.ndarray) and result.shape == ()
    assert result.item() == COMPARISONS[symbol](3.0, 3.0)


@pytest.mark.parametrize("create_graph", [False, True])
@pytest.mark.parametrize("name", ["maximum", "minimum"])
def test_maximum_and_minimum_propagate_nan_from_either_side(name, create_graph):
    a_np, b_np = np.array([np.nan, 1.0, 2.0, 3.0]), np.array([1.0, np.nan, 2.0, 1.0])
    a, b = (lamina.tensor(v, requires_grad=True) for v in (a_np, b_np))
    ta, tb = (torch.tensor(v, requires_grad=True) for v in (a_np, b_np))
    y, ty = getattr(F, name)(a, b), getattr(torch, name)(ta, tb)
    np.testing.assert_array_equal(y.numpy(), ty.detach().numpy())
    grads = lamina.autograd.grad(y.sum(), [a, b], create_graph=create_graph)
    da, db = (g.data if isinstance(g, lamina.Tensor) else g for g in grads)
    ty.sum().backward()
    # as torch: a NaN gives both operands the whole gradient, the tie at index 2 half each
    np.testing.assert_array_equal(da, ta.grad.numpy())
    np.testing.assert_array_equal(db, tb.grad.numpy())
    a_last = 1.0 if name == "maximum" else 0.0
    np.testing.assert_array_equal(da, [1, 1, 0.5, a_last])
    np.testing.assert_array_equal(db, [1, 1, 0.5, 1 - a_last])


@pytest.mark.parametrize("create_graph", [False, True])
@pytest.mark.parametrize("name", ["maximum", "minimum"])
def test_maximum_and_minimum_split_ties_evenly_as_torch(name, create_graph):
    a_np = np.array([[1.0, 2.0, 3.0], [2.0, 2.0, 0.0]])
    b_np = np.array([2.0, 2.0, 0.0])                      # broadcast over the rows: ties in both
    a, b = (lamina.tensor(v, dtype=np.float64, requires_grad=True) for v in (a_np, b_np))
    ta, tb = (torch.tensor(v, requires_grad=True) for v in (a_np, b_np))
    weights = np.arange(1.0, 7.0).reshape(2, 3)
    y, ty = getattr(F, name)(a, b), getattr(torch, name)(ta, tb)
    grads = lamina.autograd.grad((y * lamina.tensor(weights)).sum(), [a, b], create_graph=create_graph)
    (ty * torch.tensor(weights)).sum().backward()
    for ours, theirs in zip(grads, (ta, tb)):
        np.testing.assert_array_equal(ours.data if isinstance(ours, lamina.Tensor) else ours, theirs.grad.numpy())


@pytest.mark.parametrize("method", [False, True])
def test_clip_with_tensor_bounds_matches_torch_clamp(method):
    x_np, low_np, high_np = np.array([-2.0, 0.5, 3.0, 0.2]), np.zeros(4), np.array([1.0, 1.0, 1.0, 0.1])
    x, low, high = (lamina.tensor(v, dtype=np.float64, requires_grad=True) for v in (x_np, low_np, high_np))
    tx, tlow, thigh = (torch.tensor(v, requires_grad=True) for v in (x_np, low_np, high_np))
    y = x.clip(low, high) if method else F.clip(x, low, high)
    ty = torch.clamp(tx, tlow, thigh)
    np.testing.assert_array_equal(y.numpy(), ty.detach().numpy())
    (y * lamina.tensor(np.arange(1.0, 5.0))).sum().backward()
    (ty * torch.arange(1.0, 5.0, dtype=torch.float64)).sum().backward()
    for ours, theirs in ((x, tx), (low, tlow), (high, thigh)):
        np.testing.assert_array_equal(ours.grad, theirs.grad.numpy())
    plain = lamina.tensor(x_np, dtype=np.float64)
    np.testing.assert_array_equal(F.clip(plain, low, 1.0).numpy(), np.clip(x_np, 0.0, 1.0))
