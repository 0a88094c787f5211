"""LowRankMultivariateNormal against torch.distributions in float64 (log_prob, entropy, moments,
covariance and KL, with gradients), gradient checks, its draws and its errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributions as TD

import lamina
import lamina.distributions as D
from helpers import check_gradients, compare_with_torch, positive, randn

PARAMS = [randn(2, 4), randn(4, 2, seed=1), positive(2, 4, seed=2)]     # loc (2, d), W (d, k) shared, diag (2, d)
VALUE = randn(3, 2, 4, seed=3)


def _method(lib, name):
    def run(loc, factor, diag, *value):
        d = lib.LowRankMultivariateNormal(loc, factor, diag)
        attribute = getattr(d, name)
        return attribute(*value) if callable(attribute) else attribute

    return run


@pytest.mark.parametrize("name", ["log_prob", "entropy", "mean", "variance", "covariance_matrix", "scale_tril"])
def test_matches_torch(name):
    value = [VALUE] if name == "log_prob" else []
    compare_with_torch(_method(D, name), _method(TD, name), *PARAMS, *value, dtype=np.float64, rtol=1e-9)


@pytest.mark.parametrize("name", ["log_prob", "entropy"])
def test_gradcheck(name):
    value = [VALUE] if name == "log_prob" else []
    assert check_gradients(_method(D, name), *PARAMS, *value)


def test_kl_against_torch():
    q = [randn(2, 4, seed=5), randn(4, 2, seed=6), positive(2, 4, seed=7)]

    def kl(lib):
        low_rank = lib.LowRankMultivariateNormal
        return lambda *a: lib.kl_divergence(low_rank(*a[:3]), low_rank(*a[3:]))

    compare_with_torch(kl(D), kl(TD), *PARAMS, *q, dtype=np.float64, rtol=1e-9)
    full = np.eye(4) * 2.0 + 0.3

    def mixed(lib):
        def run(loc, factor, diag, loc_q):
            covariance = torch.tensor(full) if lib is TD else full
            low_rank = lib.LowRankMultivariateNormal(loc, factor, diag)
            normal = lib.MultivariateNormal(loc_q, covariance_matrix=covariance)
            return lib.kl_divergence(normal, low_rank)

        return run

    compare_with_torch(mixed(D), mixed(TD), randn(4), randn(4, 2, seed=1), positive(4), randn(4, seed=8),
                       dtype=np.float64, rtol=1e-9)


def test_draws_have_the_covariance_and_rsample_is_differentiable():
    d = D.LowRankMultivariateNormal(np.array([1.0, -1.0, 0.5]), randn(3, 1), positive(3))
    lamina.manual_seed(0)
    draws = d.sample((100_000,)).numpy().astype(np.float64)
    np.testing.assert_allclose(draws.mean(0), d.mean.numpy(), atol=0.03)
    np.testing.assert_allclose(np.cov(draws.T), d.covariance_matrix.numpy(), atol=0.05)

    def draw(loc, factor, diag):
        lamina.manual_seed(0)
        return D.LowRankMultivariateNormal(loc, factor, diag).rsample((2,))

    assert check_gradients(draw, *PARAMS)
    assert D.LowRankMultivariateNormal(*PARAMS).expand((3, 2)).sample().shape == (3, 2, 4)


def test_errors():
    with pytest.raises(lamina.errors.ShapeError, match=r"LowRankMultivariateNormal: loc of shape \(3,\), cov_factor "
                                                       r"of shape \(4, 2\) and cov_diag of shape \(3,\)"):
        D.LowRankMultivariateNormal(np.zeros(3), np.zeros((4, 2)), np.ones(3))
    with pytest.raises(ValueError, match=r"LowRankMultivariateNormal: argument cov_diag must be > 0"):
        D.LowRankMultivariateNormal(np.zeros(2), np.zeros((2, 1)), np.array([1.0, -1.0]))
