"""Hamiltonian and Lagrangian networks: with the true H or L plugged in, the vector fields of the
ideal spring, the pendulum and systems with a position-dependent mass or coupled coordinates equal
the analytic ones; the networks equal PyTorch rewrites in float64 (fields and every weight
gradient of the training loss); finite-difference gradients; learning: an HNN trained on pendulum
data conserves the energy over a 500-step leapfrog rollout far better than an MLP that predicts
the derivatives; errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, randn
from lamina import functional as F
from lamina import optim
from lamina.errors import ShapeError
from lamina.models import (
    HamiltonianNN,
    LagrangianNN,
    hamiltonian_vector_field,
    lagrangian_acceleration,
    leapfrog,
    mlp_network,
)

RNG = np.random.default_rng(11)
M, K, G, LENGTH = 1.3, 2.0, 9.81, 0.7


def test_hamiltonian_fields_of_known_systems():
    q, p = RNG.uniform(-2, 2, (6, 1)), RNG.uniform(-2, 2, (6, 1))
    states = np.concatenate([q, p], 1)
    spring = hamiltonian_vector_field(lambda x: 0.5 * K * x[:, 0] ** 2 + x[:, 1] ** 2 / (2 * M), states)
    assert_close(spring.numpy(), np.concatenate([p / M, -K * q], 1), 1e-12, "spring")
    pendulum = hamiltonian_vector_field(
        lambda x: x[:, 1:] ** 2 / (2 * M * LENGTH ** 2) + M * G * LENGTH * (1 - F.cos(x[:, :1])), states)
    assert_close(pendulum.numpy(), np.concatenate([p / (M * LENGTH ** 2), -M * G * LENGTH * np.sin(q)], 1),
                 1e-12, "pendulum")
    two = RNG.uniform(-1, 1, (5, 4))      # H = q1 q2 + p1^2 / 2 + p2^2: two coordinates, (q1, q2, p1, p2)
    field = hamiltonian_vector_field(lambda x: x[:, 0] * x[:, 1] + 0.5 * x[:, 2] ** 2 + x[:, 3] ** 2, two)
    expected = np.stack([two[:, 2], 2 * two[:, 3], -two[:, 1], -two[:, 0]], 1)
    assert_close(field.numpy(), expected, 1e-12, "two degrees of freedom")


def test_lagrangian_accelerations_of_known_systems():
    q, qd = RNG.uniform(-2, 2, (6, 1)), RNG.uniform(-2, 2, (6, 1))
    spring = lagrangian_acceleration(lambda a, b: 0.5 * M * b ** 2 - 0.5 * K * a ** 2, q, qd)
    assert_close(spring.numpy(), -K * q / M, 1e-12, "spring")
    pendulum = lagrangian_acceleration(
        lambda a, b: 0.5 * M * LENGTH ** 2 * b ** 2 + M * G * LENGTH * F.cos(a), q, qd)
    assert_close(pendulum.numpy(), -G / LENGTH * np.sin(q), 1e-12, "pendulum")
    # L = (1 + q^2) q'^2 / 2: d/dt[(1 + q^2) q'] = q q'^2 gives q'' = -q q'^2 / (1 + q^2) (mixed term)
    varying = lagrangian_acceleration(lambda a, b: 0.5 * (1 + a ** 2) * b ** 2, q, qd)
    assert_close(varying.numpy(), -q * qd ** 2 / (1 + q ** 2), 1e-12, "position-dependent mass")
    # L = q'^T A q' / 2 - q^T B q / 2 gives q'' = -A^-1 B q
    a = np.array([[2.0, 0.5], [0.5, 1.0]])
    b = np.array([[3.0, -1.0], [-1.0, 2.0]])
    q2, qd2 = RNG.uniform(-1, 1, (5, 2)), RNG.uniform(-1, 1, (5, 2))
    coupled = lagrangian_acceleration(
        lambda x, v: 0.5 * F.sum((v @ lamina.tensor(a, dtype=np.float64)) * v, axis=1)
        - 0.5 * F.sum((x @ lamina.tensor(b, dtype=np.float64)) * x, axis=1), q2, qd2)
    assert_close(coupled.numpy(), -q2 @ np.linalg.solve(a, b).T, 1e-12, "coupled springs")


def _torch_scalar_network(module, activation):
    weights = [torch.tensor(p.numpy(), requires_grad=True) for p in module.network.parameters()]

    def forward(x):
        for k in range(0, len(weights), 2):
            x = x @ weights[k] + weights[k + 1]
            if k < len(weights) - 2:
                x = activation(x)
        return x
    return forward, weights


def _compare_weight_gradients(module, weights):
    for k, (p, w) in enumerate(zip(module.network.parameters(), weights)):
        expected = np.zeros(w.shape) if w.grad is None else w.grad.numpy()
        assert_close(np.zeros(p.shape) if p.grad is None else p.grad, expected, 1e-9, f"weight gradient {k}")


def test_hnn_matches_torch():
    hnn = HamiltonianNN(2, hidden=(6, 5)).double()
    states, targets = randn(7, 4, seed=1), randn(7, 4, seed=2)
    field = hnn.time_derivative(states)
    hnn.loss(states, targets).backward()
    forward, weights = _torch_scalar_network(hnn, torch.tanh)
    x = torch.tensor(states, requires_grad=True)
    dh = torch.autograd.grad(forward(x).sum(), x, create_graph=True)[0]
    reference = torch.cat([dh[:, 2:], -dh[:, :2]], 1)
    ((reference - torch.tensor(targets)) ** 2).mean().backward()
    assert_close(field.numpy(), reference.detach().numpy(), 1e-12, "HNN field")
    assert_close(hnn.hamiltonian(states).numpy(), forward(x).detach().numpy(), 1e-12, "H")
    _compare_weight_gradients(hnn, weights)


def test_lnn_matches_torch():
    lnn = LagrangianNN(2, hidden=(6, 5)).double()
    states, targets = randn(7, 4, seed=3, scale=0.5), randn(7, 2, seed=4)
    acceleration = lnn.acceleration(states)
    lnn.loss(states, targets).backward()
    forward, weights = _torch_scalar_network(lnn, torch.nn.functional.softplus)
    q = torch.tensor(states[:, :2], requires_grad=True)
    qd = torch.tensor(states[:, 2:], requires_grad=True)
    dl_dq, dl_dqd = torch.autograd.grad(forward(torch.cat([q, qd], 1)).sum(), (q, qd), create_graph=True)
    rows = [torch.autograd.grad(dl_dqd[:, i].sum(), (q, qd), create_graph=True) for i in range(2)]
    mixed = torch.stack([r[0] for r in rows], 1)
    mass = torch.stack([r[1] for r in rows], 1)
    reference = torch.linalg.solve(mass, dl_dq - torch.einsum("nij,nj->ni", mixed, qd))
    ((reference - torch.tensor(targets)) ** 2).mean().backward()
    assert_close(acceleration.numpy(), reference.detach().numpy(), 1e-10, "LNN acceleration")
    assert_close(lnn.time_derivative(states).numpy()[:, 2:], reference.detach().numpy(), 1e-10, "(q', q'')")
    _compare_weight_gradients(lnn, weights)


def test_finite_difference_gradients_of_the_fields():
    hnn = HamiltonianNN(1, hidden=(4,)).double()
    assert check_gradients(lambda x: hamiltonian_vector_field(hnn.network, x), randn(3, 2, seed=5))
    lnn = LagrangianNN(1, hidden=(4,)).double()
    assert check_gradients(lambda q, v: lagrangian_acceleration(lnn.lagrangian, q, v),
                           randn(3, 1, seed=6), randn(3, 1, seed=7))


def _pendulum_energy(states):
    return 0.5 * states[..., 1] ** 2 + 1 - np.cos(states[..., 0])


def test_hnn_conserves_energy_better_than_a_plain_mlp():
    rng = np.random.default_rng(0)
    states = np.stack([rng.uniform(-2, 2, 200), rng.uniform(-1.5, 1.5, 200)], 1)
    derivatives = np.stack([states[:, 1], -np.sin(states[:, 0])], 1)   # H = p^2 / 2 + 1 - cos q
    hnn = HamiltonianNN(1, hidden=(32, 32))
    hnn.fit(states, derivatives, steps=500, lr=5e-3)
    baseline = mlp_network(2, 2, hidden=(32, 32))
    adam = optim.Adam(baseline.parameters(), lr=5e-3)
    x, target = lamina.tensor(states.astype(np.float32)), lamina.tensor(derivatives.astype(np.float32))
    for _ in range(500):
        loss = F.mean((baseline(x) - target) ** 2)
        baseline.zero_grad()
        loss.backward()
        adam.step()
    start = np.array([[1.0, 0.0], [0.5, 0.5]])
    np.testing.assert_allclose(hnn.field(start[0]), hnn.field(start)[0], atol=1e-5)   # one state, (2,)
    drift = {}
    for name, field in (("hnn", hnn.field), ("mlp", lambda s: baseline(lamina.tensor(s.astype(np.float32))))):
        trajectory = leapfrog(field, start, 0.1, 500)
        drift[name] = np.abs(_pendulum_energy(trajectory) - _pendulum_energy(start)).max()
    # measured: HNN ~0.01, MLP ~0.12 (its field is not conservative, the energy creeps)
    assert drift["hnn"] < drift["mlp"] / 4, drift


def test_lnn_fit_lowers_the_loss():
    rng = np.random.default_rng(1)
    states = rng.uniform(-1, 1, (64, 2))
    history = LagrangianNN(1, hidden=(16,)).fit(states, -np.sin(states[:, :1]), steps=60, lr=1e-2)
    assert history[-1] < 0.5 * history[0]


def test_errors():
    hnn = HamiltonianNN(2, hidden=(4,))
    with pytest.raises(ShapeError, match=r"\(N, 4\)"):
        hnn.time_derivative(np.zeros((3, 2)))
    with pytest.raises(ShapeError, match="targets"):
        hnn.loss(np.zeros((3, 4)), np.zeros((3, 2)))
    with pytest.raises(ShapeError, match=r"\(N, 2n\)"):
        hamiltonian_vector_field(lambda x: x[:, 0], np.zeros((3, 3)))
    with pytest.raises(ShapeError, match="scalar function"):
        hamiltonian_vector_field(lambda x: x, np.zeros((3, 2)))
    with pytest.raises(ShapeError, match="both have shape"):
        lagrangian_acceleration(lambda q, v: q, np.zeros((3, 1)), np.zeros((3, 2)))
    with pytest.raises(ShapeError, match="3 inputs but 2 targets"):
        LagrangianNN(1, hidden=(4,)).fit(np.zeros((3, 2)), np.zeros((2, 1)), steps=1)
    with pytest.raises(ValueError, match="dim"):
        HamiltonianNN(0)
