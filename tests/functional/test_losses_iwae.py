"""The importance-weighted bound and the effective sample size: against SciPy's logsumexp, a
float64 torch rewrite and a float64 gradient check; k = 1 is log p(x, z) - log q(z | x);
stability at extreme log-weights; the errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp, softmax

import lamina
from helpers import check_gradients, compare_with_torch, randn
from lamina import functional as F
from lamina.errors import ShapeError


def reference_bound(log_p, log_q):
    """log (1/k) sum_i exp(log p_i - log q_i) over the first axis, with SciPy."""
    return logsumexp(log_p - log_q, axis=0) - math.log(log_p.shape[0])


@pytest.mark.parametrize("k", [1, 3, 16])
def test_bound_matches_the_scipy_logsumexp_reference(k):
    log_p, log_q = randn(k, 5, seed=1, scale=4.0) - 30.0, randn(k, 5, seed=2, scale=3.0)
    expected = reference_bound(log_p, log_q)
    np.testing.assert_allclose(F.iwae_bound(log_p, log_q, k).numpy(), expected, rtol=1e-12)
    flat = F.iwae_bound(log_p.reshape(-1), log_q.reshape(-1), k)             # k blocks of the batch
    np.testing.assert_allclose(flat.numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(F.iwae_bound(log_p, log_q, k, reduction="mean").item(), expected.mean(), rtol=1e-12)
    np.testing.assert_allclose(F.iwae_bound(log_p, log_q, k, reduction="sum").item(), expected.sum(), rtol=1e-12)


def test_float32_bound_is_close_to_the_float64_reference():
    log_p, log_q = randn(8, 4, seed=3, scale=5.0), randn(8, 4, seed=4)
    bound = F.iwae_bound(log_p.astype(np.float32), log_q.astype(np.float32), 8)
    assert bound.dtype == np.float32
    np.testing.assert_allclose(bound.numpy(), reference_bound(log_p, log_q), rtol=1e-5, atol=1e-5)


def test_one_sample_is_the_elbo_term():
    log_p, log_q = randn(1, 6, seed=5) - 80.0, randn(1, 6, seed=6)
    np.testing.assert_array_equal(F.iwae_bound(log_p, log_q, 1).numpy(), (log_p - log_q)[0])


def test_extreme_log_weights_neither_overflow_nor_underflow():
    log_w = np.array([[-1e4, 1e4], [-1e4 + math.log(3.0), 1e4 - 50.0]])
    bound = F.iwae_bound(log_w, np.zeros_like(log_w), 2).numpy()
    np.testing.assert_allclose(bound, [-1e4 + math.log(2.0), 1e4 + np.log1p(np.exp(-50.0)) - math.log(2.0)],
                               rtol=1e-14)


def test_bound_and_gradients_match_torch_in_float64():
    def theirs(p, q):
        return torch.logsumexp(p - q, dim=0) - math.log(p.shape[0])

    compare_with_torch(lambda p, q: F.iwae_bound(p, q, 7), theirs, randn(7, 3, seed=7, scale=3.0),
                       randn(7, 3, seed=8), dtype=np.float64)


def test_gradient_is_the_normalised_weights_and_passes_a_float64_check(float64):
    log_p, log_q = randn(5, 3, seed=9, scale=2.0), randn(5, 3, seed=10)
    assert check_gradients(lambda p, q: F.iwae_bound(p, q, 5), log_p, log_q)
    p = lamina.tensor(log_p, requires_grad=True)
    F.iwae_bound(p, log_q, 5, reduction="sum").backward()
    np.testing.assert_allclose(p.grad, softmax(log_p - log_q, axis=0), rtol=1e-12)


def test_effective_sample_size_against_numpy():
    log_w = randn(10, 4, seed=11, scale=2.0) - 500.0
    w = np.exp(log_w + 500.0)
    np.testing.assert_allclose(F.effective_sample_size(log_w, 10), w.sum(0) ** 2 / (w ** 2).sum(0), rtol=1e-12)
    np.testing.assert_allclose(F.effective_sample_size(log_w.reshape(-1), 10), w.sum(0) ** 2 / (w ** 2).sum(0),
                               rtol=1e-12)
    np.testing.assert_allclose(F.effective_sample_size(np.full((6, 2), -3.0), 6), [6.0, 6.0], rtol=1e-12)
    one_takes_all = np.array([[0.0], [-1e3], [-1e3]])
    np.testing.assert_allclose(F.effective_sample_size(one_takes_all, 3), [1.0], rtol=1e-12)


def test_bad_arguments_are_named():
    log_p = randn(4, 3, seed=12)
    for k in (0, -2, True, 1.5):
        with pytest.raises(ValueError, match=r"iwae_bound: k, the number of importance samples, must be an int >= 1"):
            F.iwae_bound(log_p, log_p, k)
    with pytest.raises(ShapeError, match=r"log_p_xz has shape \(4, 3\) but log_q_z has shape \(3, 4\)"):
        F.iwae_bound(log_p, log_p.T, 4)
    with pytest.raises(ShapeError, match=r"expected \(k, batch\) = \(3, batch\) or \(k \* batch,\)"):
        F.iwae_bound(log_p, log_p, 3)
    with pytest.raises(ShapeError, match=r"has shape \(10,\)"):
        F.iwae_bound(np.zeros(10), np.zeros(10), 4)
    with pytest.raises(ValueError, match="reduction"):
        F.iwae_bound(log_p, log_p, 4, reduction="max")
    with pytest.raises(ShapeError, match="effective_sample_size: log_weights has shape"):
        F.effective_sample_size(np.zeros((2, 3, 4)), 2)
