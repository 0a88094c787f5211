"""Graph behaviour: branches, long chains, no_grad, freeing, retain_graph, accumulation."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

import lamina
import lamina.functional as F
from helpers import randn


def leaf(data, dtype=np.float64):
    return lamina.tensor(data, requires_grad=True, dtype=dtype)


def test_value_used_along_three_branches_gets_the_sum_of_the_gradients():
    x_np = randn(4)
    x = leaf(x_np)
    ((x * 3.0) + x.exp() + x**2).sum().backward()
    expected = 3.0 + np.exp(x_np) + 2 * x_np
    np.testing.assert_allclose(x.grad, expected, rtol=1e-12)

    separate = np.zeros(4)
    for branch in (lambda t: t * 3.0, lambda t: t.exp(), lambda t: t**2):
        y = leaf(x_np)
        branch(y).sum().backward()
        separate += y.grad
    np.testing.assert_allclose(x.grad, separate, rtol=1e-12)


def test_branches_that_rejoin():
    x_np = randn(3)
    x = leaf(x_np)
    h = x * 2.0
    (h * h + h).sum().backward()  # d/dx (4x^2 + 2x)
    np.testing.assert_allclose(x.grad, 8 * x_np + 2, rtol=1e-12)


def test_same_tensor_twice_in_one_op():
    x = leaf(randn(3))
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad, 2 * x.data, rtol=1e-12)
    x.zero_grad()
    (x - x).sum().backward()
    np.testing.assert_array_equal(x.grad, np.zeros(3))


def test_chain_of_ten_thousand_ops():
    x = leaf(np.array([1.0, 2.0]))
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(x.grad, 1.0001**10_000, rtol=1e-9)


def test_chain_of_ten_thousand_ops_retained_then_dropped():
    x = leaf(np.array([0.5]))
    y = x
    for _ in range(5_000):
        y = (y + 0.001).tanh()
    y.sum().backward(retain_graph=True)
    assert np.isfinite(x.grad).all() and x.grad[0] != 0
    del y  # freeing a deep retained graph must not recurse too deeply either
    gc.collect()


def test_no_grad_builds_no_graph():
    x = leaf(randn(3))
    assert lamina.is_grad_enabled()
    with lamina.no_grad():
        assert not lamina.is_grad_enabled()
        y = (x * 2.0).exp().sum()
    assert lamina.is_grad_enabled()
    assert y.requires_grad is False
    assert y._ctx is None
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()


def test_no_grad_restores_state_after_an_exception_and_when_nested():
    with pytest.raises(ZeroDivisionError):
        with lamina.no_grad():
            1 / 0  # noqa: B018
    assert lamina.is_grad_enabled()
    with lamina.no_grad():
        with lamina.no_grad():
            pass
        assert not lamina.is_grad_enabled()
    assert lamina.is_grad_enabled()


def test_no_grad_as_a_decorator():
    @lamina.no_grad()
    def predict(t):
        """Forward only."""
        assert not lamina.is_grad_enabled()
        return (t * 3.0).relu()

    x = leaf(randn(3))
    out = predict(x)
    assert out.requires_grad is False and out._ctx is None
    assert lamina.is_grad_enabled()
    assert predict.__name__ == "predict" and predict.__doc__ == "Forward only."
    y = (x * 3.0).relu()  # outside, the graph is recorded again
    assert y.requires_grad and y._ctx is not None


def test_saved_arrays_are_released_after_backward():
    x = leaf(randn(3))
    e = x.exp()
    saved = weakref.ref(e._ctx.y)  # the array Exp keeps for its backward
    loss = (e * 2.0).sum()
    del e
    gc.collect()
    assert saved() is not None  # still needed by the graph
    loss.backward()
    gc.collect()
    assert saved() is None


def test_second_backward_without_retain_graph_raises():
    x = leaf(randn(3))
    loss = (x.exp() * 2.0).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        loss.backward()


def test_retain_graph_allows_a_second_backward_and_accumulates():
    x_np = randn(3)
    x = leaf(x_np)
    e = x.exp()
    saved = weakref.ref(e._ctx.y)
    loss = (e * x).sum()
    del e
    loss.backward(retain_graph=True)
    gc.collect()
    assert saved() is not None
    first = x.grad.copy()
    np.testing.assert_allclose(first, np.exp(x_np) * (1 + x_np), rtol=1e-12)
    loss.backward()
    np.testing.assert_allclose(x.grad, 2 * first, rtol=1e-12)
    with pytest.raises(RuntimeError, match="retain_graph"):
        loss.backward()


def test_gradients_accumulate_until_zero_grad():
    x_np = randn(2, 3)
    x = leaf(x_np)
    w = leaf(randn(3, seed=1))
    for calls in range(1, 4):
        ((x * w).sum() * 0.5).backward()
        np.testing.assert_allclose(x.grad, calls * 0.5 * np.broadcast_to(w.data, (2, 3)), rtol=1e-12)
        np.testing.assert_allclose(w.grad, calls * 0.5 * x_np.sum(axis=0), rtol=1e-12)
    x.zero_grad()
    w.zero_grad()
    ((x * w).sum() * 0.5).backward()
    np.testing.assert_allclose(w.grad, 0.5 * x_np.sum(axis=0), rtol=1e-12)


def test_backward_on_a_non_scalar_needs_a_gradient():
    x = leaf(randn(2, 3))
    y = x * 2.0
    with pytest.raises(RuntimeError, match="scalar"):
        y.backward()
    with pytest.raises(lamina.ShapeError, match=r"\(3,\).*\(2, 3\)"):
        y.backward(np.ones(3))
    up = randn(2, 3, seed=1)
    y.backward(up)
    np.testing.assert_allclose(x.grad, 2 * up, rtol=1e-12)


def test_backward_accepts_a_tensor_gradient_and_a_scalar_of_size_one():
    x = leaf(randn(1, 1))
    (x * 3.0).backward()  # size 1: no gradient needed
    np.testing.assert_allclose(x.grad, [[3.0]])
    x.zero_grad()
    (x * 3.0).backward(lamina.tensor([[2.0]]))
    np.testing.assert_allclose(x.grad, [[6.0]])


def test_backward_on_a_constant_raises():
    with pytest.raises(RuntimeError, match="does not require grad"):
        lamina.tensor([1.0, 2.0]).sum().backward()


def test_backward_on_a_leaf():
    x = leaf(randn(3))
    x.backward(np.ones(3))
    np.testing.assert_array_equal(x.grad, np.ones(3))


def test_leaf_gradients_own_their_memory():
    a = leaf(randn(3))
    b = leaf(randn(3, seed=1))
    (a + b).sum().backward()
    assert not np.shares_memory(a.grad, b.grad)
    for g in (a.grad, b.grad):
        assert isinstance(g, np.ndarray) and g.base is None and g.flags.writeable
    a.grad[0] = 100.0  # an in-place update (as an optimizer may do) touches a only
    np.testing.assert_array_equal(b.grad, np.ones(3))

    c = leaf(randn(3))
    d = leaf(randn(3, seed=1))
    (c + d).backward(np.ones(3))  # the root gradient itself reaches both leaves
    assert not np.shares_memory(c.grad, d.grad)


def test_leaves_given_reshaped_views_of_one_gradient_do_not_share_it():
    """Reshape's backward hands each leaf a view of the same array: one leaf may keep it
    (no copy of a fresh gradient), the other gets its own copy."""
    a = leaf(randn(2, 2))
    b = leaf(randn(2, 2, seed=1))
    ((a.reshape(4) + b.reshape(4)) * 2.0).backward(np.ones(4))
    assert not np.shares_memory(a.grad, b.grad)
    a.grad[0, 0] = 100.0
    np.testing.assert_array_equal(b.grad, np.full((2, 2), 2.0))


def test_a_leaf_keeps_a_fresh_gradient_without_copying_it():
    """A backward that returns a reshaped view of its own new array: the leaf takes it."""
    made = []

    class Double(lamina.autograd.Function):
        def forward(self, x):
            return x * 2

        def backward(self, dy):
            flat = dy.reshape(-1) * 2
            made.append(flat)
            return (flat.reshape(dy.shape),)

    x = leaf(randn(3, 4))
    Double.apply(x).backward(np.ones((3, 4)))
    assert np.shares_memory(x.grad, made[0]) and x.grad.flags.writeable
    np.testing.assert_array_equal(x.grad, np.full((3, 4), 2.0))


def test_leaf_gradients_are_not_views_of_graph_arrays():
    x = leaf(randn(2, 3))
    up = randn(3, 2, seed=1)
    y = x.T
    y.backward(up)
    assert x.grad.base is None and x.grad.flags.writeable
    assert not np.shares_memory(x.grad, up)
    z = leaf(randn(2, 3))
    z.reshape(6).sum().backward()  # Sum's backward is a read-only broadcast view
    assert z.grad.flags.writeable and z.grad.base is None and z.grad.shape == (2, 3)


def test_zero_dimensional_leaf_gradients_are_arrays():
    a = leaf(2.0)
    b = leaf(3.0)
    (a * b).backward()
    for g in (a.grad, b.grad):
        assert isinstance(g, np.ndarray) and g.shape == () and g.flags.writeable
    (a * b).backward()  # accumulation keeps an array too
    assert isinstance(a.grad, np.ndarray) and a.grad == 6.0 and b.grad == 4.0


def test_leaf_gradient_takes_the_leaf_dtype():
    x = leaf(randn(3), dtype=np.float32)
    w = leaf(randn(3, seed=1), dtype=np.float64)
    y = (x * w).sum()
    assert y.dtype == np.float64
    y.backward()
    assert x.grad.dtype == np.float32 and w.grad.dtype == np.float64
    np.testing.assert_allclose(x.grad, w.data, rtol=1e-6)


def test_only_leaves_requiring_grad_receive_one():
    x = leaf(randn(3))
    c = lamina.tensor(randn(3, seed=1), dtype=np.float64)
    (x * c + c).sum().backward()
    assert c.grad is None
    np.testing.assert_allclose(x.grad, c.data, rtol=1e-12)


def test_operations_record_nodes_only_when_needed():
    x = leaf(randn(3))
    c = lamina.tensor(randn(3))
    assert (c * 2.0)._ctx is None and not (c * 2.0).requires_grad
    y = F.exp(x)
    assert y.requires_grad and y._ctx is not None and not y.is_leaf
    assert y._ctx.inputs[0] is x


def test_upstream_gradient_array_is_not_aliased_into_leaf_grad():
    x = lamina.tensor(np.ones(3), requires_grad=True)
    upstream = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    (x + 0.0).backward(upstream)
    assert not np.shares_memory(x.grad, upstream)
    x.grad *= 10  # an optimizer may change .grad in place
    np.testing.assert_array_equal(upstream, [1.0, 2.0, 3.0])


def test_backward_frees_intermediate_values_as_it_goes():
    """Once backward has passed a computed tensor it holds it no more: with no other
    reference, its value is freed before the sweep reaches the leaves."""
    x = lamina.tensor(np.ones((3, 4)), requires_grad=True)
    middle = (x * 2.0).tanh()
    watched = weakref.ref(middle)
    out = (middle * 3.0).sum()
    del middle
    alive_at_leaf = []
    x.register_hook(lambda g: alive_at_leaf.append(watched() is not None))
    out.backward()
    assert alive_at_leaf == [False]
    np.testing.assert_allclose(x.grad, 6.0 * (1.0 - np.tanh(2.0) ** 2), rtol=1e-5)
