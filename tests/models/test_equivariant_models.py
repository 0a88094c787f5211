"""EGNN and SchNet models: invariant outputs, SchNet forces (equivariant, equal to finite
differences of the energy), and both learn the synthetic spring energies."""

import time

import numpy as np
import pytest

import lamina
from lamina import functional as F
from lamina import models, optim
from lamina.data import batch_point_sets, spring_molecules

TYPES = 3


def _f64(a):
    return lamina.tensor(a, dtype=np.float64)


def _molecules(count, atoms, seed, radius=10.0):
    data = spring_molecules(count, num_atoms=atoms, num_types=TYPES, seed=seed)
    pos, batch, edges = batch_point_sets(data.positions, radius)
    return data, pos, batch, edges


def _rigid_motion_and_permutation(pos, batch, edges, seed, reflect):
    """The same molecules moved by one orthogonal map and translation, nodes relabelled
    within the batch (a random permutation of all nodes, graphs kept by their batch entries)."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if (np.linalg.det(q) < 0) != reflect:
        q[:, 0] = -q[:, 0]
    perm = rng.permutation(pos.shape[0])
    inverse = np.argsort(perm)
    return q, perm, pos[perm] @ q.T + rng.standard_normal(3), batch[perm], inverse[edges]


@pytest.mark.parametrize("reflect", [False, True])
def test_egnn_output_is_invariant(reflect):
    data, pos, batch, edges = _molecules(3, 4, seed=0, radius=1.5)
    h = np.eye(TYPES)[data.types.reshape(-1)]
    model = models.EGNN(TYPES, hidden=8, out_features=2, num_layers=2, normalize=True).to(np.float64)
    out = model(_f64(h), _f64(pos), edges, batch).numpy()
    q, perm, moved, moved_batch, moved_edges = _rigid_motion_and_permutation(pos, batch, edges, 1, reflect)
    again = model(_f64(h[perm]), _f64(moved), moved_edges, moved_batch).numpy()
    assert out.shape == (3, 2)
    np.testing.assert_allclose(again, out, rtol=0, atol=1e-10)
    _, coords = model.node_embeddings(_f64(h), _f64(pos), edges)
    _, moved_coords = model.node_embeddings(_f64(h[perm]), _f64(moved), moved_edges)
    shift = moved - pos[perm] @ q.T
    np.testing.assert_allclose(moved_coords.numpy(), coords.numpy()[perm] @ q.T + shift, rtol=0, atol=1e-10)


def _schnet():
    lamina.manual_seed(0)
    return models.SchNet(TYPES, hidden=8, num_filters=8, num_interactions=2, num_rbf=10, cutoff=3.0).to(np.float64)


@pytest.mark.parametrize("reflect", [False, True])
def test_schnet_energy_is_invariant_and_forces_equivariant(reflect):
    data, pos, batch, edges = _molecules(3, 4, seed=1, radius=3.0)
    types = data.types.reshape(-1)
    model = _schnet()
    energy, forces = model.energy_and_forces(types, _f64(pos), edges, batch)
    q, perm, moved, moved_batch, moved_edges = _rigid_motion_and_permutation(pos, batch, edges, 2, reflect)
    energy2, forces2 = model.energy_and_forces(types[perm], _f64(moved), moved_edges, moved_batch)
    assert energy.shape == (3,) and forces.shape == pos.shape
    np.testing.assert_allclose(energy2.numpy(), energy.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(forces2.numpy(), forces.numpy()[perm] @ q.T, rtol=0, atol=1e-10)
    np.testing.assert_allclose(forces.numpy().sum(axis=0), 0.0, atol=1e-10)       # no net force


def test_schnet_forces_equal_finite_differences():
    data, pos, batch, edges = _molecules(2, 3, seed=3, radius=3.0)
    types = data.types.reshape(-1)
    model = _schnet()
    _, forces = model.energy_and_forces(types, _f64(pos), edges, batch)
    eps, numeric = 1e-6, np.zeros_like(pos)
    for index in np.ndindex(pos.shape):
        step = np.zeros_like(pos)
        step[index] = eps
        plus = model(types, _f64(pos + step), edges, batch).numpy().sum()
        minus = model(types, _f64(pos - step), edges, batch).numpy().sum()
        numeric[index] = -(plus - minus) / (2 * eps)
    np.testing.assert_allclose(forces.numpy(), numeric, rtol=1e-6, atol=1e-9)
    assert np.abs(numeric).max() > 1e-3


def _fit(run, inputs, model, target, steps):
    opt = optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        opt.zero_grad()
        loss = F.mean((run(*inputs) - target) ** 2)
        loss.backward()
        opt.step()


def test_egnn_and_schnet_learn_spring_energies_better_than_the_mean():
    data = spring_molecules(64, num_atoms=4, num_types=TYPES, seed=4)      # one table of spring constants
    pos, batch, edges = batch_point_sets(data.positions[:32], 10.0)
    test_pos, test_batch, test_edges = batch_point_sets(data.positions[32:], 10.0)
    energies, test_energies = data.energies[:32], data.energies[32:]
    mean, std = energies.mean(), energies.std()
    target = lamina.tensor((energies - mean) / std, dtype=np.float32)
    baseline = float(((test_energies - mean) ** 2).mean())
    types, test_types = data.types[:32].reshape(-1), data.types[32:].reshape(-1)
    onehot = np.eye(TYPES, dtype=np.float32)
    results = {}
    lamina.manual_seed(0)
    egnn = models.EGNN(TYPES, hidden=16, num_layers=2)
    schnet = models.SchNet(TYPES, hidden=16, num_filters=16, num_interactions=2, num_rbf=16, cutoff=6.0)
    cases = {
        "egnn": (egnn, lambda t, p, e, b: F.reshape(egnn(onehot[t], p.astype(np.float32), e, b), (-1,))),
        "schnet": (schnet, lambda t, p, e, b: schnet(t, p.astype(np.float32), e, b)),
    }
    for name, (model, run) in cases.items():
        start = time.perf_counter()
        _fit(run, (types, pos, edges, batch), model, target, steps=150)
        predicted = run(test_types, test_pos, test_edges, test_batch).numpy() * std + mean
        results[name] = (float(((predicted - test_energies) ** 2).mean()), time.perf_counter() - start)
    print(f"spring energies, test MSE (mean baseline {baseline:.3f}):", results)
    for name, (mse, _) in results.items():
        assert mse < 0.3 * baseline, (name, mse, baseline)
