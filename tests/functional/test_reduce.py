"""sum, mean, var, max, min over every kind of axis argument, with and without keepdims."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
import lamina.functional as F
from helpers import check_gradients, compare_with_torch

DTYPES = [np.float32, np.float64]
AXES = [None, 0, 1, -1, (0, 2), (-1, 0), (0, 1, 2)]


def distinct(*shape, seed=0):
    """Values at least 0.2 apart (no ties for max/min), in random order."""
    n = int(np.prod(shape))
    perm = np.random.default_rng(seed).permutation(n)
    return (perm.reshape(shape) - n / 2) * 0.2


def torch_dims(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    return axis if isinstance(axis, tuple) else (axis,)


def lamina_reduction(name, axis, keepdims, method):
    if method:
        return lambda x: getattr(x, name)(axis=axis, keepdims=keepdims)
    fn = getattr(F, name)
    return lambda x: fn(x, axis=axis, keepdims=keepdims)


def torch_reduction(name, axis, keepdims):
    def run(x):
        dims = torch_dims(axis, x.ndim)
        if name == "sum":
            return torch.sum(x, dim=dims, keepdim=keepdims)
        if name == "mean":
            return torch.mean(x, dim=dims, keepdim=keepdims)
        if name == "var":
            return torch.var(x, dim=dims, keepdim=keepdims, correction=0)
        if name == "max":
            return torch.amax(x, dim=dims, keepdim=keepdims)
        return torch.amin(x, dim=dims, keepdim=keepdims)

    return run


REDUCTIONS = ["sum", "mean", "var", "max", "min"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", AXES, ids=str)
@pytest.mark.parametrize("name", REDUCTIONS)
def test_matches_torch(name, axis, keepdims, dtype):
    x = distinct(2, 3, 4)
    method = keepdims  # exercise the Tensor method and the functional form
    out = compare_with_torch(lamina_reduction(name, axis, keepdims, method), torch_reduction(name, axis, keepdims),
                             x, dtype=dtype)
    expected_shape = getattr(np, name)(x, axis=axis, keepdims=keepdims).shape
    assert out[0].shape == expected_shape


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", AXES, ids=str)
@pytest.mark.parametrize("name", REDUCTIONS)
def test_gradcheck(name, axis, keepdims):
    assert check_gradients(lamina_reduction(name, axis, keepdims, False), distinct(2, 3, 4, seed=1))


@pytest.mark.parametrize("name", ["sum", "mean", "max", "min"])
def test_reduce_1d_and_0d(name):
    x = distinct(5, seed=2)
    compare_with_torch(lambda t: getattr(t, name)(), lambda t: getattr(t, name)(), x, dtype=np.float64)
    compare_with_torch(lambda t: getattr(F, name)(t, axis=0), torch_reduction(name, 0, False),
                       x, dtype=np.float64)


def test_var_with_ddof_matches_torch_unbiased():
    compare_with_torch(lambda x: x.var(axis=1, ddof=1), lambda x: torch.var(x, dim=1), distinct(3, 4))


def test_max_gradient_goes_to_the_first_of_tied_elements():
    x = lamina.tensor(np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]]), requires_grad=True)
    x.max(axis=1).sum().backward()
    np.testing.assert_array_equal(x.grad, [[0, 1, 0], [1, 0, 0]])
    x.zero_grad()
    x.min().backward()
    np.testing.assert_array_equal(x.grad, [[0, 0, 0], [0, 0, 1]])


def test_sum_values_match_numpy():
    x = distinct(2, 3, 4)
    t = lamina.tensor(x, dtype=np.float64)
    for axis in AXES:
        np.testing.assert_allclose(t.sum(axis=axis).numpy(), x.sum(axis=axis), rtol=1e-12)


@pytest.mark.parametrize("name", REDUCTIONS)
@pytest.mark.parametrize("axis", [3, -4, (0, 0), (1, -2)], ids=str)
def test_bad_axis_raises_shape_error(name, axis):
    x = lamina.tensor(np.ones((2, 3, 4)))
    with pytest.raises(lamina.ShapeError, match=name):
        getattr(F, name)(x, axis=axis)


@pytest.mark.parametrize("shape, axis, ddof", [((2,), None, 3), ((2,), None, 2), ((2, 0), 1, 1), ((2, 1), 1, 1),
                                               ((2, 0), 1, 0)], ids=str)
def test_var_refuses_ddof_that_leaves_no_degrees_of_freedom_as_std(shape, axis, ddof):
    x = lamina.tensor(np.ones(shape), dtype=np.float64)
    for name in ("var", "std"):
        with pytest.raises(ValueError, match=rf"{name}: ddof={ddof} leaves n - ddof"):
            getattr(F, name)(x, axis=axis, ddof=ddof)


@pytest.mark.parametrize("ddof", [-1, 1.0, True])
def test_var_refuses_a_ddof_that_is_not_a_count(ddof):
    with pytest.raises(ValueError, match="var: ddof must be an int >= 0"):
        F.var(lamina.tensor(np.ones(4)), ddof=ddof)


@pytest.mark.parametrize("name", ["max", "min"])
@pytest.mark.parametrize("shape, axis, keepdims", [((0, 3), 1, False), ((0, 3), 1, True), ((2, 0, 3), (0, 2), False)],
                         ids=str)
def test_max_and_min_over_non_empty_axes_of_an_empty_input_match_torch(name, shape, axis, keepdims):
    x = lamina.tensor(np.zeros(shape), dtype=np.float64, requires_grad=True)
    y = getattr(F, name)(x, axis=axis, keepdims=keepdims)
    expected = getattr(torch, "a" + name)(torch.zeros(shape, dtype=torch.float64), dim=axis, keepdim=keepdims)
    assert y.shape == tuple(expected.shape)
    y.sum().backward()
    assert x.grad.shape == shape


@pytest.mark.parametrize("shape, axis", [((0, 3), 0), ((3, 0), 1), ((0, 3), None)], ids=str)
def test_max_over_an_empty_axis_is_refused(shape, axis):
    with pytest.raises(ValueError, match=r"max: no values to reduce over axes .* shape \(\d, \d\)"):
        F.max(lamina.tensor(np.zeros(shape)), axis=axis)


def test_amax_and_amin_of_infinite_extremes_as_torch():
    x = np.array([[np.inf, 1.0, np.inf], [2.0, -np.inf, -np.inf]])
    for ours, theirs in ((F.amax, torch.amax), (F.amin, torch.amin)):
        compare_with_torch(lambda t, f=ours: f(t, axis=1), lambda t, f=theirs: f(t, 1), x, dtype=np.float64, rtol=1e-12)
