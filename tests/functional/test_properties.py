"""Property-based tests: random broadcastable shapes for + - * /, random axes for reductions."""

from __future__ import annotations

import operator

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, mutually_broadcastable_shapes

import lamina
from helpers import TOLERANCE, assert_close, compare_with_torch

SETTINGS = settings(max_examples=30, deadline=None)
OPS = {"add": operator.add, "sub": operator.sub, "mul": operator.mul, "div": operator.truediv}


def operands(shapes, seed, op):
    rng = np.random.default_rng(seed)
    a = np.asarray(rng.standard_normal(shapes[0]))
    if op == "div":  # denominators away from zero
        b = np.asarray(rng.uniform(0.5, 2.0, shapes[1]) * rng.choice([-1.0, 1.0], shapes[1]))
    else:
        b = np.asarray(rng.standard_normal(shapes[1]))
    return a, b


@SETTINGS
@given(
    shapes=mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=3),
    op=st.sampled_from(list(OPS)),
    seed=st.integers(0, 2**16),
)
def test_broadcast_arithmetic(shapes, op, seed):
    fn = OPS[op]
    a64, b64 = operands(shapes.input_shapes, seed, op)
    up64 = np.random.default_rng(seed + 1).standard_normal(shapes.result_shape)
    for dtype in (np.float32, np.float64):
        a_np, b_np, up = a64.astype(dtype), b64.astype(dtype), up64.astype(dtype)
        a = lamina.tensor(a_np, requires_grad=True, dtype=dtype)
        b = lamina.tensor(b_np, requires_grad=True, dtype=dtype)
        out = fn(a, b)
        assert out.shape == shapes.result_shape and out.dtype == dtype
        np.testing.assert_array_equal(out.numpy(), fn(a_np, b_np))
        out.backward(up)
        assert a.grad.shape == a_np.shape and b.grad.shape == b_np.shape
        assert a.grad.dtype == dtype and b.grad.dtype == dtype

    # float64, where summing a broadcast gradient cannot cancel below the tolerance
    ta = torch.tensor(a64, requires_grad=True)
    tb = torch.tensor(b64, requires_grad=True)
    fn(ta, tb).backward(torch.tensor(up64))
    assert_close(a.grad, ta.grad.numpy(), TOLERANCE[np.float64], "gradient of a")
    assert_close(b.grad, tb.grad.numpy(), TOLERANCE[np.float64], "gradient of b")


@st.composite
def reduction_args(draw):
    shape = draw(array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4))
    ndim = len(shape)
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none":
        axis = None
    elif kind == "int":
        axis = draw(st.integers(-ndim, ndim - 1))
    else:
        chosen = draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
        signs = draw(st.lists(st.booleans(), min_size=len(chosen), max_size=len(chosen)))
        axis = tuple(a - ndim if negative else a for a, negative in zip(chosen, signs))
    return shape, axis, draw(st.booleans())


def torch_reduce(name, axis, keepdims):
    def run(x):
        dims = tuple(range(x.ndim)) if axis is None else axis
        return {"sum": torch.sum, "mean": torch.mean, "max": torch.amax}[name](x, dim=dims, keepdim=keepdims)

    return run


@SETTINGS
@given(args=reduction_args(), name=st.sampled_from(["sum", "mean", "max"]), seed=st.integers(0, 2**16))
def test_reductions_over_random_axes(args, name, seed):
    shape, axis, keepdims = args
    n = int(np.prod(shape))
    x = (np.random.default_rng(seed).permutation(n).reshape(shape) - n / 2) * 0.1  # distinct: no ties
    out = compare_with_torch(lambda t: getattr(t, name)(axis=axis, keepdims=keepdims),
                             torch_reduce(name, axis, keepdims), x, dtype=np.float64)
    assert out[0].shape == getattr(np, name)(x, axis=axis, keepdims=keepdims).shape
    np.testing.assert_allclose(out[0].numpy(), getattr(np, name)(x, axis=axis, keepdims=keepdims), rtol=1e-12)

    t = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    getattr(t, name)(axis=axis, keepdims=keepdims).sum().backward()
    assert t.grad.shape == x.shape
