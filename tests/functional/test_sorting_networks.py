"""SoftSort matrices and differentiable sorting networks: against torch rewrites of the
published formulas, finite differences, double stochasticity and the hard limits."""

import numpy as np
import pytest
import torch

import lamina
import lamina.functional as F
from helpers import check_gradients, check_second_derivatives, compare_with_torch, randn
from lamina.functional.sorting_networks import bitonic_layers, odd_even_layers


def _torch_softsort(s, tau):
    ordered = s.sort(dim=1, descending=True).values
    return (-(s.unsqueeze(1) - ordered.unsqueeze(2)).abs() / tau).softmax(-1)


def _torch_sigmoid(t, name):
    if name == "logistic":
        return torch.sigmoid(t)
    if name == "cauchy":
        return torch.atan(t) / torch.pi + 0.5
    safe = torch.where(t.abs() > 0.25, t, torch.ones_like(t))
    tails = torch.where(t < 0, -1 / (16 * safe), 1 - 1 / (16 * safe))
    return torch.where(t.abs() > 0.25, tails, t + 0.5)


def _torch_network(x, layers, steepness, sigmoid):
    """Each layer as a full (batch, n, n) mixing matrix L: x <- L x, P <- L P."""
    batch, n = x.shape
    perm = torch.eye(n, dtype=x.dtype).expand(batch, n, n)
    for pairs in layers:
        mixing = [[None] * n for _ in range(n)]
        one, zero = torch.ones(batch, dtype=x.dtype), torch.zeros(batch, dtype=x.dtype)
        for i in range(n):
            for j in range(n):
                mixing[i][j] = one if i == j else zero
        for lo, hi in pairs:
            alpha = _torch_sigmoid(steepness * (x[:, hi] - x[:, lo]), sigmoid)
            mixing[lo][lo], mixing[lo][hi] = alpha, 1 - alpha
            mixing[hi][lo], mixing[hi][hi] = 1 - alpha, alpha
        layer = torch.stack([torch.stack(row, dim=1) for row in mixing], dim=1)
        x = (layer @ x.unsqueeze(2)).squeeze(2)
        perm = layer @ perm
    return perm


def _hard_permutation(x, descending):
    order = np.argsort(-x if descending else x, axis=1)
    return np.eye(x.shape[1])[order]


def test_softsort_matches_torch_and_gradients():
    x = randn(3, 6, seed=0)
    compare_with_torch(lambda s: F.soft_sort_matrix(s, 0.5), lambda s: _torch_softsort(s, 0.5), x,
                       dtype=np.float64)
    assert check_gradients(lambda s: F.soft_sort_matrix(s, 0.5), x)
    assert check_second_derivatives(lambda s: F.soft_sort_matrix(s, 0.5), x[:1])


def test_softsort_rows_are_distributions_and_tend_to_the_permutation():
    x = randn(4, 7, seed=1)
    p = F.soft_sort_matrix(lamina.tensor(x, dtype=np.float64), 1.0).numpy()
    np.testing.assert_allclose(p.sum(axis=2), 1.0, atol=1e-12)
    sharp = F.soft_sort_matrix(lamina.tensor(x, dtype=np.float64), 1e-4).numpy()
    np.testing.assert_allclose(sharp, _hard_permutation(x, descending=True), atol=1e-5)
    np.testing.assert_allclose(sharp.sum(axis=1), 1.0, atol=1e-5)
    up = F.soft_sort_matrix(lamina.tensor(x, dtype=np.float64), 1e-4, descending=False).numpy()
    np.testing.assert_allclose(up, _hard_permutation(x, descending=False), atol=1e-5)


@pytest.mark.parametrize("network", ["odd_even", "bitonic"])
@pytest.mark.parametrize("sigmoid", ["logistic", "cauchy", "optimal"])
def test_sorting_network_matches_torch(network, sigmoid):
    x = randn(2, 8, seed=2)
    layers = odd_even_layers(8) if network == "odd_even" else bitonic_layers(8)
    compare_with_torch(lambda t: F.sorting_network(t, network, 3.0, sigmoid),
                       lambda t: _torch_network(t, layers, 3.0, sigmoid), x, dtype=np.float64)


@pytest.mark.parametrize("sigmoid", ["logistic", "cauchy", "optimal"])
def test_sorting_network_gradients(sigmoid):
    assert check_gradients(lambda t: F.sorting_network(t, "bitonic", 2.0, sigmoid), randn(2, 4, seed=3))
    assert check_gradients(lambda t: F.sorting_network(t, "odd_even", 2.0, sigmoid), randn(1, 5, seed=4))
    assert check_second_derivatives(lambda t: F.sorting_network(t, "bitonic", 2.0, sigmoid) ** 2, randn(1, 4, seed=5))


@pytest.mark.parametrize("network", ["odd_even", "bitonic"])
def test_sorting_network_is_doubly_stochastic_and_sorts_when_steep(network):
    x = randn(3, 8, seed=5)
    t = lamina.tensor(x, dtype=np.float64)
    p = F.sorting_network(t, network, 1.0).numpy()
    assert p.min() >= 0
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(p.sum(axis=2), 1.0, atol=1e-12)
    steep = F.sorting_network(t, network, 1e4, "optimal").numpy()
    np.testing.assert_allclose(steep, _hard_permutation(x, descending=False), atol=1e-3)
    np.testing.assert_allclose(steep @ x[..., None], np.sort(x, axis=1)[..., None], atol=1e-3)
    down = F.sorting_network(t, network, 1e4, "optimal", descending=True).numpy()
    np.testing.assert_allclose(down, _hard_permutation(x, descending=True), atol=1e-3)


def test_bitonic_network_sorts_every_input_and_errors():
    rng = np.random.default_rng(6)
    for _ in range(20):
        x = rng.permutation(16).astype(float)
        for pairs in bitonic_layers(16):
            for lo, hi in pairs:
                x[lo], x[hi] = min(x[lo], x[hi]), max(x[lo], x[hi])
        np.testing.assert_array_equal(x, np.arange(16))
    with pytest.raises(ValueError, match="power of 2"):
        F.sorting_network(lamina.tensor(randn(1, 6)), "bitonic")
    with pytest.raises(ValueError, match="sigmoid"):
        F.sorting_network(lamina.tensor(randn(1, 4)), "odd_even", sigmoid="tanh")
