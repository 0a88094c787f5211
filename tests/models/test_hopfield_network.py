"""HopfieldNetwork: the Hebbian and Storkey rules against NumPy references of their formulas,
the energy never rising under asynchronous updates, recall of stored patterns from noisy ones,
synchronous recall, the capacity of Hebbian storage (about 0.138 n) and errors."""

import numpy as np
import pytest

from helpers import assert_close
from lamina import parallel
from lamina.errors import ShapeError
from lamina.models import HopfieldNetwork


@pytest.fixture(autouse=True)
def one_blas_thread():
    """The matrices are small: BLAS threads only contend with the other test processes."""
    with parallel.one_blas_thread():
        yield


def patterns(count, n, seed=0):
    return np.random.default_rng(seed).choice([-1.0, 1.0], (count, n))


def corrupt(pattern, flips, seed=0):
    noisy = pattern.copy()
    noisy[np.random.default_rng(seed).choice(pattern.size, flips, replace=False)] *= -1
    return noisy


def test_hebbian_weights_are_the_mean_outer_product():
    xi = patterns(3, 10)
    net = HopfieldNetwork(10).store(xi)
    expected = sum(np.outer(p, p) for p in xi) / 10
    np.fill_diagonal(expected, 0)
    assert_close(net.weights, expected, 1e-15)


def test_storkey_rule_matches_the_formula_term_by_term():
    xi = patterns(4, 8, seed=1)
    net = HopfieldNetwork(8).store(xi, rule="storkey")
    w = np.zeros((8, 8))
    for p in xi:
        new = w.copy()
        for i in range(8):
            for j in range(8):
                if i == j:
                    continue
                h_ij = sum(w[i, k] * p[k] for k in range(8) if k not in (i, j))
                h_ji = sum(w[j, k] * p[k] for k in range(8) if k not in (i, j))
                new[i, j] = w[i, j] + (p[i] * p[j] - p[i] * h_ji - h_ij * p[j]) / 8
        w = new
    assert_close(net.weights, w, 1e-14)
    assert np.allclose(net.weights, net.weights.T)


@pytest.mark.parametrize("rule", ["hebbian", "storkey"])
def test_energy_never_increases_under_asynchronous_updates(rule):
    net = HopfieldNetwork(40, thresholds=np.random.default_rng(2).normal(0, 0.1, 40)).store(patterns(8, 40), rule)
    rng = np.random.default_rng(3)
    state = rng.choice([-1.0, 1.0], 40)
    energy = net.energy(state)[0]
    for _ in range(3):
        for i in rng.permutation(40):
            field = net.weights[i] @ state - net.thresholds[i]
            state[i] = 1.0 if field > 0 else (-1.0 if field < 0 else state[i])
            new_energy = net.energy(state)[0]
            assert new_energy <= energy + 1e-12
            energy = new_energy
    final = net.recall(state, seed=0)
    assert net.energy(final)[0] <= energy + 1e-12
    assert np.array_equal(net.recall(final, seed=1), final)          # a fixed point


@pytest.mark.parametrize("update", ["asynchronous", "synchronous"])
@pytest.mark.parametrize("rule", ["hebbian", "storkey"])
def test_recalls_stored_patterns_from_noisy_ones(rule, update):
    xi = patterns(5, 100, seed=4)
    net = HopfieldNetwork(100).store(xi, rule)
    noisy = np.stack([corrupt(p, 15, seed=k) for k, p in enumerate(xi)])
    restored, steps = net.recall(noisy, update=update, seed=0, return_steps=True)
    assert np.array_equal(restored, xi)
    assert (steps < 100).all()


def test_hebbian_capacity_is_about_0138_n():
    """Mean overlap m = xi . s / n of each stored pattern with the state asynchronous recall
    reaches from it, as the load p / n grows: retrieval (m near 1) holds below 0.138 n and
    breaks down above it (smeared by the finite n = 400)."""
    n = 400
    rng = np.random.default_rng(5)
    overlap = {}
    for load in (0.05, 0.1, 0.138, 0.2, 0.3):
        xi = rng.choice([-1.0, 1.0], (int(load * n), n))
        restored = HopfieldNetwork(n).store(xi).recall(xi, max_steps=30, seed=0)
        overlap[load] = round(float((restored * xi).mean()), 3)
    print("Hebbian, n=400: mean overlap after recall by load p/n:", overlap)
    assert overlap[0.05] == 1.0 and overlap[0.1] > 0.99
    assert overlap[0.2] < 0.8 and overlap[0.3] < 0.5


def test_storkey_stores_more_than_hebbian():
    n = 100
    xi = patterns(18, n, seed=6)
    retrieved = {}
    for rule in ("hebbian", "storkey"):
        restored = HopfieldNetwork(n).store(xi, rule).recall(xi, update="synchronous", max_steps=20)
        retrieved[rule] = int(np.all(restored == xi, axis=1).sum())
    assert retrieved["storkey"] > retrieved["hebbian"], retrieved


def test_errors():
    net = HopfieldNetwork(4)
    with pytest.raises(ValueError, match="bipolar"):
        net.store(np.array([[0.0, 1.0, 1.0, 1.0]]))
    with pytest.raises(ShapeError, match=r"n=4.*\(1, 3\)"):
        net.recall(np.ones((1, 3)))
    with pytest.raises(ValueError, match="rule must be one of"):
        net.store(np.ones((1, 4)), rule="oja")
    with pytest.raises(ValueError, match="update must be one of"):
        net.recall(np.ones(4), update="parallel")
    with pytest.raises(ValueError, match="n must be a positive int"):
        HopfieldNetwork(0)
