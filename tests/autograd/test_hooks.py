"""Gradient hooks and retained gradients of intermediate tensors, against PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from lamina import ShapeError


def _graph(lib, x, w):
    """A graph with a branch: y feeds both terms of the cost."""
    if lib is torch:
        y = x @ w
        return y, (torch.tanh(y) * y).sum() + (y ** 2).mean()
    y = x @ w
    return y, (y.tanh() * y).sum() + (y ** 2).mean()


def _inputs():
    rng = np.random.default_rng(0)
    return rng.standard_normal((4, 3)), rng.standard_normal((3, 2))


def _both(hook=None, retain=True):
    xa, wa = _inputs()
    x, w = lamina.tensor(xa, requires_grad=True, dtype=np.float64), lamina.tensor(wa, requires_grad=True,
                                                                                   dtype=np.float64)
    xt, wt = torch.tensor(xa, requires_grad=True), torch.tensor(wa, requires_grad=True)
    y, cost = _graph(lamina, x, w)
    yt, cost_t = _graph(torch, xt, wt)
    if retain:
        y.retain_grad()
        yt.retain_grad()
    if hook is not None:
        y.register_hook(hook)
        yt.register_hook(lambda g: torch.from_numpy(hook(g.numpy())))
    return (x, w, y, cost), (xt, wt, yt, cost_t)


def test_retained_gradient_of_an_intermediate_matches_torch():
    (x, w, y, cost), (xt, wt, yt, cost_t) = _both()
    cost.backward(retain_graph=True)
    cost_t.backward(retain_graph=True)
    np.testing.assert_allclose(y.grad, yt.grad.numpy(), rtol=1e-12)
    cost.backward()                                       # a second pass adds up, as for a leaf
    cost_t.backward()
    np.testing.assert_allclose(y.grad, yt.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(w.grad, wt.grad.numpy(), rtol=1e-12)
    unretained = lamina.tensor(np.ones(2), requires_grad=True, dtype=np.float64) * 2.0
    (unretained * unretained).sum().backward()
    assert unretained.grad is None                        # only on request


def test_a_hook_that_changes_the_gradient_changes_everything_below_as_in_torch():
    def clip(g):
        return np.clip(g, -0.5, 0.5)

    (x, w, y, cost), (xt, wt, yt, cost_t) = _both(hook=clip)
    cost.backward()
    cost_t.backward()
    for ours, theirs in ((x, xt), (w, wt), (y, yt)):      # the retained gradient is the hooked one
        np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-12)
    assert np.abs(y.grad).max() <= 0.5


def test_leaf_hooks_see_the_gradient_then_may_replace_it_and_can_be_removed():
    seen = []
    p = lamina.tensor(np.array([1.0, -2.0]), requires_grad=True, dtype=np.float64)
    first = p.register_hook(lambda g: seen.append(g.copy()))          # returns None: g unchanged
    doubled = p.register_hook(lambda g: 2 * g)
    (p * p).sum().backward()
    np.testing.assert_array_equal(seen[0], [2.0, -4.0])
    np.testing.assert_array_equal(p.grad, [4.0, -8.0])
    doubled.remove()
    first.remove()
    p.grad = None
    (p * p).sum().backward()
    np.testing.assert_array_equal(p.grad, [2.0, -4.0])
    assert len(seen) == 1
    external = np.array([5.0, 5.0])                        # an array the caller keeps
    p.grad = None
    p.register_hook(lambda g: external)
    (p * p).sum().backward()
    np.testing.assert_array_equal(p.grad, external)
    assert not np.shares_memory(p.grad, external)         # .grad owns its memory


def test_hook_and_retain_grad_errors():
    constant = lamina.tensor(np.ones(3))
    with pytest.raises(RuntimeError, match="register_hook: the tensor does not require grad"):
        constant.register_hook(lambda g: g)
    with pytest.raises(RuntimeError, match="retain_grad: the tensor does not require grad"):
        constant.retain_grad()
    p = lamina.tensor(np.ones(3), requires_grad=True, dtype=np.float64)
    with pytest.raises(TypeError, match="register_hook: expected a callable"):
        p.register_hook(3)

    def wrong_shape(g):
        return g[:2]

    p.register_hook(wrong_shape)
    with pytest.raises(ShapeError, match=r"hook 'wrong_shape' returned a gradient of shape \(2,\) for a tensor "
                                         r"of shape \(3,\)"):
        (p * 2.0).sum().backward()


# -- hooks under create_graph: tensors on the graph, run once ----------------------------------
def _hooked_square_second_derivative(lib, on_leaf: bool):
    dtype = torch.float64 if lib is torch else np.float64
    x = lib.tensor([1.0, 2.0], dtype=dtype, requires_grad=True)
    if on_leaf:
        x.register_hook(lambda g: g * 3)
    y = x * x
    if not on_leaf:
        y.register_hook(lambda g: g * 3)
    (g,) = lib.autograd.grad((y * y).sum(), [x], create_graph=True)
    (h,) = lib.autograd.grad(g.sum(), [x])
    return np.asarray(g.detach().numpy() if lib is torch else g.numpy()), np.asarray(getattr(h, "data", h))


@pytest.mark.parametrize("on_leaf", [False, True])
def test_a_hook_returned_tensor_is_differentiated_under_create_graph(on_leaf):
    ours, theirs = _hooked_square_second_derivative(lamina, on_leaf), _hooked_square_second_derivative(torch, on_leaf)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b.numpy() if hasattr(b, "numpy") else b, rtol=1e-12)


def test_a_hooked_input_of_a_composite_op_is_hooked_once_under_create_graph():
    from lamina.autograd import Function

    class Cube(Function):
        def forward(self, x):
            self.x = x
            return x ** 3

        def backward(self, dy):
            return (3 * self.x ** 2 * dy,)

        def composite(self, x):
            return x * x * x

        backward_graph = Function.composite_backward_graph

    calls = []
    x = lamina.tensor([1.0, 2.0], dtype=np.float64, requires_grad=True)
    x.register_hook(lambda g: calls.append(1) or g * 2)
    (g,) = lamina.autograd.grad(Cube.apply(x).sum(), [x], create_graph=True)
    assert len(calls) == 1
    np.testing.assert_allclose(g.numpy(), 2 * 3 * x.numpy() ** 2, rtol=1e-12)
