"""Input derivatives for PINNs: first, second and mixed derivatives and the Laplacian equal the
analytic ones for closed-form functions, and equal torch.autograd.grad (create_graph=True) on a
tanh network in float64, values and the weight gradients of a loss built from them; errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients
from lamina import functional as F
from lamina.errors import ShapeError
from lamina.models import derivative, gradient, laplacian, mlp_network

RNG = np.random.default_rng(3)
POINTS = RNG.uniform(-1.0, 1.0, size=(7, 2))


def _leaf(points=POINTS):
    return lamina.tensor(points, dtype=np.float64, requires_grad=True)


def _closed_form(x):
    """u(x, y) = sin(2x) exp(y) + x^2 y^3, as a network would compute it from its inputs."""
    a, b = x[:, 0:1], x[:, 1:2]
    return F.sin(2 * a) * F.exp(b) + a ** 2 * b ** 3


def test_derivatives_equal_the_analytic_ones():
    x = _leaf()
    u = _closed_form(x)
    a, b = POINTS[:, :1], POINTS[:, 1:]
    expected = {
        (0, 1): 2 * np.cos(2 * a) * np.exp(b) + 2 * a * b ** 3,
        (1, 1): np.sin(2 * a) * np.exp(b) + 3 * a ** 2 * b ** 2,
        (0, 2): -4 * np.sin(2 * a) * np.exp(b) + 2 * b ** 3,
        (1, 2): np.sin(2 * a) * np.exp(b) + 6 * a ** 2 * b,
    }
    for (i, order), value in expected.items():
        assert_close(derivative(u, x, wrt=i, order=order).numpy(), value, 1e-12, f"d^{order}u/dx_{i}^{order}")
    mixed = 2 * np.cos(2 * a) * np.exp(b) + 6 * a * b ** 2
    assert_close(derivative(u, x, wrt=(0, 1)).numpy(), mixed, 1e-12, "d2u/dxdy")
    assert_close(derivative(u, x, wrt=(1, 0)).numpy(), mixed, 1e-12, "d2u/dydx")
    assert_close(laplacian(u, x).numpy(), expected[0, 2] + expected[1, 2], 1e-12, "laplacian")
    assert_close(laplacian(u, x, dims=[0]).numpy(), expected[0, 2], 1e-12, "laplacian over x only")
    assert_close(gradient(u, x).numpy(), np.concatenate([expected[0, 1], expected[1, 1]], 1), 1e-12, "gradient")


def test_components_and_terms_without_x_dependence():
    x = _leaf()
    u = F.concat([x[:, :1] * 3.0, x[:, 1:] ** 2], axis=1)
    assert_close(derivative(u, x, wrt=1, component=1).numpy(), 2 * POINTS[:, 1:], 1e-12, "du_1/dy")
    assert_close(derivative(u, x, wrt=0, order=2).numpy(), np.zeros((7, 1)), 0.0, "d2(3x)/dx2")
    assert_close(derivative(u, x, wrt=1, component=0).numpy(), np.zeros((7, 1)), 0.0, "d(3x)/dy")


def _torch_network(net):
    weights = [torch.tensor(p.numpy(), requires_grad=True) for p in net.parameters()]

    def forward(x):
        for k in range(0, len(weights), 2):
            x = x @ weights[k] + weights[k + 1]
            if k < len(weights) - 2:
                x = torch.tanh(x)
        return x
    return forward, weights


def test_derivatives_and_weight_gradients_equal_torch():
    net = mlp_network(2, 2, hidden=(6, 5)).double()
    x = _leaf()
    u = net(x)
    terms = [derivative(u, x, wrt=0), derivative(u, x, wrt=1, order=2, component=1),
             derivative(u, x, wrt=(0, 1)), laplacian(u, x, component=1)]
    loss = sum(F.mean(t ** 2) for t in terms) + F.mean(terms[0] * terms[2])
    loss.backward()

    forward, weights = _torch_network(net)
    xt = torch.tensor(POINTS, requires_grad=True)
    ut = forward(xt)
    g0 = torch.autograd.grad(ut[:, 0].sum(), xt, create_graph=True)[0]
    g1 = torch.autograd.grad(ut[:, 1].sum(), xt, create_graph=True)[0]
    h1 = [torch.autograd.grad(g1[:, i].sum(), xt, create_graph=True)[0] for i in range(2)]
    mixed = torch.autograd.grad(g0[:, 0].sum(), xt, create_graph=True)[0][:, 1:2]
    reference = [g0[:, 0:1], h1[1][:, 1:2], mixed, h1[0][:, 0:1] + h1[1][:, 1:2]]
    loss_t = sum((t ** 2).mean() for t in reference) + (reference[0] * reference[2]).mean()
    loss_t.backward()
    for k, (ours, theirs) in enumerate(zip(terms, reference)):
        assert_close(ours.numpy(), theirs.detach().numpy(), 1e-10, f"term {k}")
    for k, (p, w) in enumerate(zip(net.parameters(), weights)):
        # the output bias does not enter any derivative: torch leaves its gradient None
        expected = np.zeros(w.shape) if w.grad is None else w.grad.numpy()
        assert_close(np.zeros(p.shape) if p.grad is None else p.grad, expected, 1e-9, f"weight gradient {k}")


def test_finite_difference_gradients_of_the_derivatives():
    net = mlp_network(2, hidden=(5,)).double()

    def terms(x):
        with lamina.enable_grad():     # the check evaluates its differences under no_grad
            u = net(x)
            return F.concat([derivative(u, x, wrt=(0, 1)), laplacian(u, x), derivative(u, x, wrt=1)], axis=1)
    assert check_gradients(terms, POINTS[:4])


def test_errors():
    x = _leaf()
    u = _closed_form(x)
    with pytest.raises(ValueError, match="order 3 is unsupported"):
        derivative(u, x, order=3)
    with pytest.raises(ValueError, match="must require grad"):
        derivative(u, lamina.tensor(POINTS, dtype=np.float64))
    with pytest.raises(ShapeError, match=r"\(N, d\)"):
        derivative(u, lamina.tensor(POINTS[:, 0], dtype=np.float64, requires_grad=True))
    with pytest.raises(ShapeError, match="7 points"):
        derivative(u[:3], x)
    with pytest.raises(ValueError, match="component"):
        derivative(u, x, component=1)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        derivative(u, x, wrt=2)
    with pytest.raises(ValueError, match="1 or 2 input coordinates"):
        derivative(u, x, wrt=(0, 1, 0))
    with pytest.raises(ValueError, match="dims"):
        laplacian(u, x, dims=[5])
    with lamina.no_grad():
        constant = _closed_form(x)
    with pytest.raises(ValueError, match="not on the graph"):
        derivative(constant, x)
