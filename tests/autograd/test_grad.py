"""lamina.autograd.grad: gradients as values, against PyTorch's torch.autograd.grad."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from lamina import ShapeError
from lamina.autograd import grad


def _inputs():
    rng = np.random.default_rng(1)
    return rng.standard_normal((5, 4)), rng.standard_normal((4, 3))


def _cost(lib, x, w):
    y = x @ w
    z = torch.tanh(y) if lib is torch else y.tanh()
    return y, (z * y).sum() + (y ** 2).mean()


def test_grad_matches_torch_and_leaves_grads_untouched():
    xa, wa = _inputs()
    x = lamina.tensor(xa, requires_grad=True, dtype=np.float64)
    w = lamina.tensor(wa, requires_grad=True, dtype=np.float64)
    y, cost = _cost(lamina, x, w)
    gx, gw, gy = grad(cost, [x, w, y])
    xt = torch.tensor(xa, requires_grad=True)
    wt = torch.tensor(wa, requires_grad=True)
    yt, cost_t = _cost(torch, xt, wt)
    ex, ew, ey = torch.autograd.grad(cost_t, [xt, wt, yt])
    np.testing.assert_allclose(gx, ex.numpy(), rtol=1e-12)
    np.testing.assert_allclose(gw, ew.numpy(), rtol=1e-12)
    np.testing.assert_allclose(gy, ey.numpy(), rtol=1e-12)
    assert x.grad is None and w.grad is None


def test_grad_with_grad_output_and_retained_graph():
    xa, wa = _inputs()
    x = lamina.tensor(xa, requires_grad=True, dtype=np.float64)
    w = lamina.tensor(wa, requires_grad=True, dtype=np.float64)
    y = x @ w
    up = np.random.default_rng(2).standard_normal(y.shape)
    (first,) = grad(y, [w], grad_output=up, retain_graph=True)
    np.testing.assert_allclose(first, xa.T @ up, rtol=1e-12)
    y.backward(up)                                   # the graph was kept for a second pass
    np.testing.assert_allclose(w.grad, first, rtol=1e-12)
    assert first is not w.grad


def test_grad_of_shared_gradient_arrays_are_distinct():
    a = lamina.tensor(np.ones(3), requires_grad=True, dtype=np.float64)
    b = lamina.tensor(np.ones(3), requires_grad=True, dtype=np.float64)
    up = np.arange(3.0)
    ga, gb = grad(a + b, [a, b], grad_output=up)
    ga += 1.0
    np.testing.assert_array_equal(gb, up)
    np.testing.assert_array_equal(up, np.arange(3.0))


def test_grad_errors_name_the_problem():
    x = lamina.tensor(np.ones(3), requires_grad=True)
    unused = lamina.tensor(np.ones(2), requires_grad=True)
    constant = lamina.tensor(np.ones(3))
    with pytest.raises(RuntimeError, match="does not depend on inputs\\[1\\]"):
        grad((x * 2).sum(), [x, unused])
    assert grad((x * 2).sum(), [x, unused], allow_unused=True)[1] is None
    with pytest.raises(RuntimeError, match="does not require grad"):
        grad((x * 2).sum(), [constant])
    with pytest.raises(RuntimeError, match="needs grad_output"):
        grad(x * 2, [x])
    with pytest.raises(ShapeError, match="grad_output of shape \\(2,\\)"):
        grad(x * 2, [x], grad_output=np.ones(2))


def test_enable_grad_records_inside_no_grad():
    x = lamina.tensor(np.ones(2), requires_grad=True)
    with lamina.no_grad():
        assert (x * 2).requires_grad is False
        with lamina.enable_grad():
            assert lamina.is_grad_enabled()
            y = x * 2
        assert not lamina.is_grad_enabled()
    (g,) = grad(y.sum(), [x])
    np.testing.assert_array_equal(g, [2.0, 2.0])


# -- the grad-mode switches as decorators, on generators, and PyTorch's other switches -----------
@pytest.mark.parametrize("lib", [lamina, torch])
def test_no_grad_on_a_generator_covers_each_resumption_only(lib):
    seen = []

    @lib.no_grad()
    def steps(a):
        got = yield a * 2
        seen.append((got, lib.is_grad_enabled()))
        yield a * 3

    x = lib.tensor([1.0], requires_grad=True)
    it = steps(x)
    first = next(it)
    assert lib.is_grad_enabled()                            # the caller's code between resumptions records
    second = it.send("sent")
    assert not first.requires_grad and not second.requires_grad and seen == [("sent", False)]
    with pytest.raises(StopIteration):
        next(it)


def test_enable_grad_on_a_generator_and_bare_decorators():
    x = lamina.tensor([1.0], requires_grad=True)

    @lamina.autograd.enable_grad
    def recorded(a):
        yield a * 2

    @lamina.no_grad
    def constant(a):
        return a * 2

    with lamina.no_grad():
        assert next(recorded(x)).requires_grad
    assert not constant(x).requires_grad and lamina.is_grad_enabled()
    assert constant.__name__ == "constant"


def test_set_grad_enabled_and_inference_mode_as_torch():
    from lamina.autograd import inference_mode, set_grad_enabled

    x = lamina.tensor([1.0], requires_grad=True)
    try:
        set_grad_enabled(False)                             # a plain call sets the mode from here on
        assert not lamina.is_grad_enabled()
    finally:
        set_grad_enabled(True)
    with set_grad_enabled(False):
        assert not (x * 2).requires_grad
        with set_grad_enabled(True):
            assert (x * 2).requires_grad
        assert not lamina.is_grad_enabled()
    assert lamina.is_grad_enabled()

    @set_grad_enabled(False)
    def constant(a):
        return a * 2

    assert lamina.is_grad_enabled() and not constant(x).requires_grad and lamina.is_grad_enabled()
    with inference_mode():
        assert not (x * 2).requires_grad
        with inference_mode(False):                         # leaves the mode as it is, as torch's
            assert not lamina.is_grad_enabled()
    assert inference_mode()(lambda a: a * 2)(x).requires_grad is False
    with pytest.raises(TypeError, match="set_grad_enabled: mode must be True or False, got 1"):
        set_grad_enabled(1)
