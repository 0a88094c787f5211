"""radius_graph and the synthetic spring molecules: edges against a direct loop, forces
against finite differences, energies invariant under rigid motions and permutations."""

import numpy as np
import pytest

from lamina.data import batch_point_sets, radius_graph, spring_molecules
from lamina.data.molecules import spring_energy_and_forces
from lamina.errors import ShapeError


def test_radius_graph_links_close_points_of_the_same_graph():
    rng = np.random.default_rng(0)
    pos, batch = rng.uniform(0, 2, (12, 3)), np.repeat([0, 1, 2], 4)
    expected = {(j, i) for i in range(12) for j in range(12)
                if i != j and batch[i] == batch[j] and np.linalg.norm(pos[i] - pos[j]) < 1.2}
    edges = radius_graph(pos, 1.2, batch)
    assert edges.dtype == np.int64 and set(map(tuple, edges.T.tolist())) == expected and len(expected) > 4
    assert edges.shape[1] == len(expected)
    assert radius_graph(pos, 1.2, batch, loop=True).shape[1] == len(expected) + 12
    with pytest.raises(ShapeError, match=r"radius_graph: batch of shape \(3,\)"):
        radius_graph(pos, 1.0, batch[:3])


def test_spring_forces_are_minus_the_energy_gradient():
    data = spring_molecules(3, num_atoms=4, seed=1)
    eps, numeric = 1e-6, np.zeros_like(data.positions)
    for index in np.ndindex(data.positions.shape):
        step = np.zeros_like(data.positions)
        step[index] = eps
        plus, _ = spring_energy_and_forces(data.positions + step, data.types, data.stiffness, 1.0)
        minus, _ = spring_energy_and_forces(data.positions - step, data.types, data.stiffness, 1.0)
        numeric[index] = -(plus - minus)[index[0]] / (2 * eps)
    np.testing.assert_allclose(data.forces, numeric, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(data.forces.sum(axis=1), 0.0, atol=1e-12)      # no net force


def test_spring_energy_is_invariant():
    data = spring_molecules(2, num_atoms=5, seed=2)
    q, _ = np.linalg.qr(np.random.default_rng(3).standard_normal((3, 3)))
    perm = np.random.default_rng(4).permutation(5)
    moved = data.positions[:, perm] @ q.T + 1.7
    energies, forces = spring_energy_and_forces(moved, data.types[:, perm], data.stiffness, 1.0)
    np.testing.assert_allclose(energies, data.energies, rtol=1e-12)
    np.testing.assert_allclose(forces, data.forces[:, perm] @ q.T, atol=1e-12)
    assert data.energies.std() > 0.1


def test_batch_point_sets_keeps_graphs_apart():
    positions = np.random.default_rng(0).uniform(0, 1, (3, 4, 2))
    pos, batch, edges = batch_point_sets(positions, 10.0)
    assert pos.shape == (12, 2) and batch.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert edges.shape == (2, 3 * 4 * 3) and (batch[edges[0]] == batch[edges[1]]).all()
