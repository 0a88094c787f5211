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
