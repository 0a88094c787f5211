"""Continuous normalizing flows: the exact-trace log-determinant of a linear field against its
closed form (z(t) = expm(A t) z0, log det = t tr A), the inverse, the exact trace against
torch's Jacobian, Hutchinson's estimator's unbiasedness, the adjoint's gradients against
back-propagation through the solver, kinetic energy, errors, and a short 2-D fit."""

from __future__ import annotations

import time

import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
import torch

import lamina
from helpers import check_gradients, randn
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.models.cnf import CNF, CNFDynamics, exact_trace, hutchinson_trace
from lamina.nn.module import Module
from lamina.optim import Adam


class LinearField(Module):
    """f(z, t) = A z."""

    def __init__(self, a):
        super().__init__()
        self.add_parameter("a", np.asarray(a, dtype=np.float64))

    def forward(self, t, z):
        return F.matmul(z, self.a.T)


def field(seed=0, dim=3):
    return np.random.default_rng(seed).standard_normal((dim, dim)) * 0.5


def test_linear_field_matches_closed_form():
    a = field()
    flow = CNF(LinearField(a), end_time=1.3, rtol=1e-10, atol=1e-12)
    x = lamina.tensor(randn(4, 3, seed=1), dtype=np.float64)
    z, log_det = flow(x)
    np.testing.assert_allclose(z.numpy(), x.numpy() @ scipy.linalg.expm(1.3 * a).T, atol=1e-9)
    np.testing.assert_allclose(log_det.numpy(), 1.3 * np.trace(a) * np.ones(4), atol=1e-10)
    back, log_det_back = flow.inverse(z)
    np.testing.assert_allclose(back.numpy(), x.numpy(), atol=1e-9)
    np.testing.assert_allclose(log_det_back.numpy(), -log_det.numpy(), atol=1e-10)
    expected = -0.5 * (z.numpy() ** 2).sum(1) - 1.5 * np.log(2 * np.pi) + 1.3 * np.trace(a)
    np.testing.assert_allclose(flow.log_prob(x).numpy(), expected, atol=1e-10)


def test_exact_trace_matches_torch_jacobian_and_integral_of_a_nonlinear_field():
    lamina.manual_seed(0)
    dynamics = CNFDynamics(3, hidden=(5,))
    z0 = lamina.tensor(randn(2, 3, seed=2), dtype=np.float64)
    dynamics(lamina.tensor(0.0), z0.astype(np.float32))
    dynamics.double()
    z = Tensor(z0.numpy(), dtype=np.float64, requires_grad=True)
    f = dynamics(lamina.tensor(0.4, dtype=np.float64), z)
    ours = exact_trace(f, z, create_graph=False).numpy()
    weights = [(torch.from_numpy(layer.weight.numpy()), torch.from_numpy(layer.bias.numpy()))
               for layer in dynamics.layers]

    def torch_field(v):
        h = v
        for k, (w, b) in enumerate(weights):
            h = torch.cat([h, torch.full((1,), 0.4, dtype=v.dtype)]) @ w + b
            h = torch.tanh(h) if k < len(weights) - 1 else h
        return h

    for i in range(2):
        jac = torch.autograd.functional.jacobian(torch_field, torch.from_numpy(z0.numpy()[i]))
        assert abs(ours[i] - torch.trace(jac).item()) < 1e-12
    # the solved log-determinant equals the integral of the trace along the path, computed apart
    flow = CNF(dynamics, end_time=1.0, method="rk4", options={"step_size": 0.01})
    _, log_det = flow(z0)
    times = np.linspace(0.0, 1.0, 401)
    path = F.odeint(dynamics, z0, times, method="rk4", options={"step_size": 0.0025}).numpy()
    traces = []
    for t, state in zip(times, path):
        point = Tensor(state, dtype=np.float64, requires_grad=True)
        traces.append(exact_trace(dynamics(lamina.tensor(t, dtype=np.float64), point), point, False).numpy())
    integral = scipy.integrate.simpson(np.stack(traces), x=times, axis=0)
    np.testing.assert_allclose(log_det.numpy(), integral, atol=1e-8)


@pytest.mark.parametrize("noise", ["gaussian", "rademacher"])
def test_hutchinson_estimate_is_unbiased(noise):
    a = field(3, dim=4)
    n = 20000
    z = Tensor(np.zeros((n, 4)), dtype=np.float64, requires_grad=True)
    f = F.matmul(z, lamina.tensor(a.T, dtype=np.float64))
    rng = np.random.default_rng(4)
    e = rng.standard_normal((n, 4)) if noise == "gaussian" else rng.integers(0, 2, (n, 4)) * 2.0 - 1.0
    estimates = hutchinson_trace(f, z, lamina.tensor(e, dtype=np.float64), create_graph=False).numpy()
    np.testing.assert_allclose(estimates, np.einsum("ni,ij,nj->n", e, a, e), atol=1e-12)
    standard_error = estimates.std() / np.sqrt(n)
    assert abs(estimates.mean() - np.trace(a)) < 4 * standard_error
    # inside the flow too: one draw per solve, the mean over solves is the exact log-determinant
    flow = CNF(LinearField(a), trace="hutchinson", noise=noise, method="rk4", options={"step_size": 0.25})
    x = lamina.tensor(np.zeros((2000, 4)), dtype=np.float64)
    log_dets = flow(x)[1].numpy()
    assert abs(log_dets.mean() - np.trace(a)) < 4 * log_dets.std() / np.sqrt(len(log_dets))
    assert log_dets.std() > 0.1                                          # an estimate, not the exact value


def test_adjoint_gradients_match_backpropagation_and_kinetic_energy():
    lamina.manual_seed(1)
    dynamics = CNFDynamics(2, hidden=(6,))
    dynamics(lamina.tensor(0.0), lamina.tensor(np.zeros((1, 2), dtype=np.float32)))
    dynamics.double()
    x = lamina.tensor(randn(3, 2, seed=5), dtype=np.float64)
    grads = []
    for adjoint in (False, True):
        flow = CNF(dynamics, method="rk4", options={"step_size": 0.05}, adjoint=adjoint, kinetic_energy=True)
        result = flow.integrate(x)
        for p in dynamics.parameters():
            p.grad = None
        ((result.z ** 2).sum() + result.log_det.sum() + 0.1 * result.kinetic_energy.sum()).backward()
        grads.append([p.grad.copy() for p in dynamics.parameters()])
    for plain, adjoint in zip(*grads):
        np.testing.assert_allclose(adjoint, plain, atol=1e-5, rtol=2e-4)
    # kinetic energy: int ||f||^2 dt, compared with a fine quadrature along the path
    times = np.linspace(0.0, 1.0, 201)
    path = F.odeint(dynamics, x, times, method="rk4", options={"step_size": 0.005})
    speeds = [(dynamics(lamina.tensor(t, dtype=np.float64), z).numpy() ** 2).sum(1) for t, z in zip(times, path)]
    np.testing.assert_allclose(result.kinetic_energy.numpy(), scipy.integrate.simpson(np.stack(speeds), x=times,
                               axis=0), rtol=1e-5)
    assert check_gradients(lambda v: CNF(dynamics, method="rk4", options={"step_size": 0.5}).log_prob(v).sum(),
                           randn(2, 2, seed=6))


def test_errors():
    dynamics = CNFDynamics(2)
    with pytest.raises(ValueError, match="unknown trace estimator 'stochastic'"):
        CNF(dynamics, trace="stochastic")
    with pytest.raises(ValueError, match="unknown noise 'uniform'"):
        CNF(dynamics, trace="hutchinson", noise="uniform")
    with pytest.raises(ValueError, match="end_time must be positive"):
        CNF(dynamics, end_time=0.0)
    with pytest.raises(lamina.errors.ShapeError, match="dynamics are for 2 features"):
        CNF(dynamics)(lamina.tensor(np.zeros((2, 3))))


def test_tiny_cnf_lowers_nll_on_a_2d_task():
    rng = np.random.default_rng(0)
    data = (rng.standard_normal((256, 2)) * [0.3, 1.5] + [1.0, -0.5]).astype(np.float32)
    lamina.manual_seed(0)
    flow = CNF(CNFDynamics(2, hidden=(16,)), method="rk4", options={"step_size": 0.25})
    start = time.perf_counter()
    with lamina.no_grad():
        before = float(-flow.log_prob(lamina.tensor(data)).numpy().mean())
    optimizer = Adam(flow.parameters(), lr=1e-2)
    for _ in range(40):
        loss = -flow.log_prob(lamina.tensor(data[rng.choice(256, 64)])).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with lamina.no_grad():
        after = float(-flow.log_prob(lamina.tensor(data)).numpy().mean())
    print(f"tiny CNF on a 2-D Gaussian: NLL {before:.3f} -> {after:.3f} nats in 40 steps "
          f"({time.perf_counter() - start:.1f} s)")
    assert after < before - 0.3
    assert flow.sample(5).shape == (5, 2)
