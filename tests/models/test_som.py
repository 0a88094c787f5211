"""SelfOrganizingMap: the update rule against a NumPy rewrite of the formula for every
neighbourhood and topology, the grid geometry, the error measures and the U-matrix against
direct loops, learning on digits (quantization error falls, topographic error small), a map of
a line becoming ordered, and errors."""

import math

import numpy as np
import pytest
from sklearn.datasets import load_digits

from helpers import assert_close
from lamina import parallel
from lamina.errors import ShapeError
from lamina.models import SelfOrganizingMap


@pytest.fixture(autouse=True)
def one_blas_thread():
    """The matrices are small: BLAS threads only contend with the other test processes."""
    with parallel.one_blas_thread():
        yield


def reference_step(weights, positions, x, t, total, sigma0, lr0, kind):
    """w_u += lr(t) h(|r_u - r_c|, sigma(t)) (x - w_u), c the unit nearest to x."""
    sigma, lr = sigma0 / (1 + 2 * t / total), lr0 / (1 + 2 * t / total)
    rows, cols, _ = weights.shape
    best, winner = np.inf, None
    for i in range(rows):
        for j in range(cols):
            distance = math.sqrt(((x - weights[i, j]) ** 2).sum())
            if distance < best:
                best, winner = distance, (i, j)
    new = weights.copy()
    for i in range(rows):
        for j in range(cols):
            d = math.dist(positions[i][j], positions[winner[0]][winner[1]])
            if kind == "gaussian":
                h = math.exp(-d * d / (2 * sigma * sigma))
            elif kind == "bubble":
                h = 1.0 if d <= sigma else 0.0
            else:
                h = (1 - d * d / (sigma * sigma)) * math.exp(-d * d / (2 * sigma * sigma))
            new[i, j] += lr * h * (x - weights[i, j])
    return new


def grid_positions(rows, cols, topology):
    if topology == "rectangular":
        return [[(i, j) for j in range(cols)] for i in range(rows)]
    return [[(i * math.sqrt(3) / 2, j + 0.5 * (i % 2)) for j in range(cols)] for i in range(rows)]


@pytest.mark.parametrize("topology", ["rectangular", "hexagonal"])
@pytest.mark.parametrize("kind", ["gaussian", "bubble", "mexican_hat"])
def test_update_rule_matches_a_reference_of_the_formula(kind, topology):
    som = SelfOrganizingMap(4, 5, 3, sigma=1.5, lr=0.4, neighborhood=kind, topology=topology, seed=0)
    x = np.random.default_rng(1).standard_normal((6, 3))
    expected = som.weights.copy()
    positions = grid_positions(4, 5, topology)
    assert_close(som.positions, np.array(positions), 1e-15, "positions")
    for t in range(6):
        expected = reference_step(expected, positions, x[t], t, 6, 1.5, 0.4, kind)
        som.update(x[t], t, 6)
    assert_close(som.weights, expected, 1e-13)


def test_fit_presents_the_inputs_in_shuffled_passes():
    x = np.random.default_rng(2).standard_normal((4, 2))
    som = SelfOrganizingMap(2, 3, 2, seed=0)
    reference = SelfOrganizingMap(2, 3, 2, seed=0)
    som.fit(x, 6, shuffle=False)
    for t in range(6):
        reference.update(x[t % 4], t, 6)
    assert_close(som.weights, reference.weights, 1e-15)


@pytest.mark.parametrize("topology", ["rectangular", "hexagonal"])
def test_errors_and_distance_map_against_loops(topology):
    som = SelfOrganizingMap(3, 4, 2, topology=topology, seed=3)
    x = np.random.default_rng(4).standard_normal((10, 2))
    flat = som.weights.reshape(-1, 2)
    positions = som.positions.reshape(-1, 2)
    adjacent = math.sqrt(2) if topology == "rectangular" else 1.0
    distances = np.array([[np.linalg.norm(row - w) for w in flat] for row in x])
    assert abs(som.quantization_error(x) - distances.min(axis=1).mean()) < 1e-12
    order = distances.argsort(axis=1)
    apart = [np.linalg.norm(positions[a] - positions[b]) > adjacent + 1e-9 for a, b in order[:, :2]]
    assert som.topographic_error(x) == np.mean(apart)
    assert np.array_equal(som.winner(x), np.stack(np.unravel_index(order[:, 0], (3, 4)), axis=1))
    means = []
    for u in range(12):
        near = [v for v in range(12) if 0 < np.linalg.norm(positions[u] - positions[v]) <= adjacent + 1e-9]
        means.append(np.mean([np.linalg.norm(flat[u] - flat[v]) for v in near]))
    assert_close(som.distance_map(), (np.array(means) / max(means)).reshape(3, 4), 1e-12)
    neighbours = sum(0 < np.linalg.norm(positions[5] - p) <= adjacent + 1e-9 for p in positions)
    assert neighbours == (8 if topology == "rectangular" else 6)


@pytest.mark.parametrize("topology", ["rectangular", "hexagonal"])
def test_learns_digits(topology):
    x = load_digits().data[:600] / 16.0
    som = SelfOrganizingMap(8, 8, 64, sigma=3.0, lr=0.5, topology=topology, seed=0)
    before = som.quantization_error(x)
    som.fit(x, 2400)
    errors = som.history["quantization_error"]
    print(f"{topology} 8x8 SOM on digits: quantization error {before:.3f} -> {errors}, "
          f"topographic error {som.topographic_error(x):.3f}")
    assert errors[-1] < 0.4 * before and errors[-1] < errors[0]
    assert som.topographic_error(x) < 0.15
    assert som.distance_map().max() == 1.0


@pytest.mark.parametrize("kind", ["gaussian", "bubble"])
def test_map_of_a_line_becomes_ordered(kind):
    line = np.random.default_rng(5).uniform(0, 1, (300, 1))
    som = SelfOrganizingMap(1, 15, 1, sigma=3.0, lr=0.5, neighborhood=kind, seed=1)
    steps = np.diff(som.fit(line, 2000).weights[0, :, 0])
    assert (steps > 0).all() or (steps < 0).all()
    assert som.quantization_error(line) < 0.05


def test_initialize_from_data_takes_input_rows():
    x = np.random.default_rng(6).standard_normal((7, 3))
    som = SelfOrganizingMap(2, 3, 3, seed=0).initialize_from_data(x, seed=1)
    assert all(any(np.array_equal(w, row) for row in x) for w in som.weights.reshape(-1, 3))


def test_errors():
    with pytest.raises(ValueError, match="neighborhood must be one of"):
        SelfOrganizingMap(2, 2, 3, neighborhood="triangle")
    with pytest.raises(ValueError, match="topology must be one of"):
        SelfOrganizingMap(2, 2, 3, topology="toroidal")
    with pytest.raises(ValueError, match="sigma must be a positive number"):
        SelfOrganizingMap(2, 2, 3, sigma=0)
    with pytest.raises(ValueError, match="rows must be a positive int"):
        SelfOrganizingMap(0, 2, 3)
    with pytest.raises(ShapeError, match=r"dim=3.*\(4, 2\)"):
        SelfOrganizingMap(2, 2, 3).fit(np.zeros((4, 2)), 10)
