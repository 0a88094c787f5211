"""MultivariateNormal against torch.distributions in float64 (log_prob, entropy, moments and
KL with gradients in every parameterization), its draws, and its errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributions as TD

import lamina
import lamina.distributions as D
from helpers import check_gradients, compare_with_torch, randn
from lamina import functional as F


def spd(*batch, d=3, seed=0):
    b = randn(*batch, d, d, seed=seed)
    return b @ np.swapaxes(b, -1, -2) + d * np.eye(d)


def lower(*batch, d=3, seed=0):
    return np.linalg.cholesky(spd(*batch, d=d, seed=seed))


def symmetric(f_lamina, f_torch):
    """Read a square parameter through its symmetric part, so that gradients are compared on
    the symmetric matrices both libraries define their derivatives on."""
    return (lambda m: f_lamina((m + lamina.functional.transpose(m, 0, 2, 1)) * 0.5),
            lambda m: f_torch((m + m.transpose(-1, -2)) * 0.5))


VALUE = randn(4, 2, 3, seed=7)
PARAMETERIZATIONS = ["covariance_matrix", "precision_matrix", "scale_tril"]


def _pair(kind):
    return (lambda loc, m: D.MultivariateNormal(loc, **{kind: m}),
            lambda loc, m: TD.MultivariateNormal(loc, **{kind: m}))


@pytest.mark.parametrize("kind", PARAMETERIZATIONS)
@pytest.mark.parametrize("what", ["log_prob", "entropy", "mean", "variance", "covariance_matrix"])
def test_matches_torch(kind, what):
    ours, theirs = _pair(kind)
    matrix = lower(2, seed=1) if kind == "scale_tril" else spd(2, seed=1)

    def statistic(dist):
        if what == "log_prob":
            value = VALUE if isinstance(dist, D.Distribution) else torch.tensor(VALUE)
            return dist.log_prob(value)
        return dist.entropy() if what == "entropy" else getattr(dist, what)

    if kind == "scale_tril":
        compare_with_torch(lambda loc, m: statistic(ours(loc, m)), lambda loc, m: statistic(theirs(loc, m)),
                           randn(2, 3, seed=2), matrix, dtype=np.float64, rtol=1e-9)
        return
    sym_l, sym_t = symmetric(lambda m: m, lambda m: m)
    compare_with_torch(lambda loc, m: statistic(ours(loc, sym_l(m))), lambda loc, m: statistic(theirs(loc, sym_t(m))),
                       randn(2, 3, seed=2), matrix, dtype=np.float64, rtol=1e-9)


def test_gradients_by_centred_differences():
    value = randn(2, 3, seed=3)
    assert check_gradients(lambda loc, m: D.MultivariateNormal(loc, scale_tril=F.tril(m)).log_prob(value),
                           randn(3), lower(seed=4))
    assert check_gradients(lambda m: D.MultivariateNormal(np.zeros(3), covariance_matrix=(m + m.T) * 0.5).entropy(),
                           spd(seed=5))


def test_kl_matches_torch():
    def ours(m1, l1, m2, l2):
        return D.kl_divergence(D.MultivariateNormal(m1, scale_tril=l1), D.MultivariateNormal(m2, scale_tril=l2))

    def theirs(m1, l1, m2, l2):
        return TD.kl_divergence(TD.MultivariateNormal(m1, scale_tril=l1), TD.MultivariateNormal(m2, scale_tril=l2))

    compare_with_torch(ours, theirs, randn(2, 3), lower(2, seed=1), randn(3, seed=2), lower(seed=3),
                       dtype=np.float64, rtol=1e-9)
    p = D.MultivariateNormal(randn(3), covariance_matrix=spd(seed=4))
    assert abs(float(D.kl_divergence(p, p).numpy())) < 1e-12


def test_draws_have_the_mean_and_covariance_and_reparameterize():
    lamina.manual_seed(0)
    cov = spd(seed=6)
    loc = np.array([1.0, -2.0, 0.5])
    draws = D.MultivariateNormal(loc, covariance_matrix=cov).sample((100_000,)).numpy()
    assert draws.shape == (100_000, 3)
    np.testing.assert_allclose(draws.mean(0), loc, atol=5 * np.sqrt(np.diag(cov).max() / 100_000))
    np.testing.assert_allclose(np.cov(draws.T), cov, rtol=0.03, atol=0.03)

    def draw(loc_, tril):
        lamina.manual_seed(1)                      # the same noise at every evaluation
        return D.MultivariateNormal(loc_, scale_tril=F.tril(tril)).rsample((4,))

    assert check_gradients(draw, randn(2, 3), lower(2, seed=7))


def test_batch_shapes_broadcast_and_errors_are_named():
    dist = D.MultivariateNormal(randn(4, 1, 3), covariance_matrix=spd(5, seed=1))
    assert dist.batch_shape == (4, 5) and dist.event_shape == (3,)
    assert dist.log_prob(randn(4, 5, 3)).shape == (4, 5) and dist.sample((2,)).shape == (2, 4, 5, 3)
    with pytest.raises(ValueError, match="exactly one of covariance_matrix, precision_matrix or scale_tril"):
        D.MultivariateNormal(np.zeros(3), covariance_matrix=spd(), scale_tril=lower())
    with pytest.raises(ValueError, match="covariance_matrix must be symmetric positive definite"):
        D.MultivariateNormal(np.zeros(2), covariance_matrix=np.array([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match="scale_tril must be lower triangular with a positive diagonal"):
        D.MultivariateNormal(np.zeros(2), scale_tril=np.array([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(lamina.errors.ShapeError, match=r"loc of shape \(3,\) and covariance_matrix of shape "
                                                       r"\(2, 2\); expected \(..., d\) and \(..., d, d\)"):
        D.MultivariateNormal(np.zeros(3), covariance_matrix=np.eye(2))
    with pytest.raises(lamina.errors.ShapeError, match=r"must end with the event shape \(3,\)"):
        D.MultivariateNormal(np.zeros(3), covariance_matrix=np.eye(3)).log_prob(np.zeros(1))


@pytest.mark.parametrize("kind", PARAMETERIZATIONS)
def test_precision_matrix_gradient_matches_torch_without_symmetrizing(kind):
    matrix = lower(2, seed=3) if kind == "scale_tril" else spd(2, seed=3)
    compare_with_torch(lambda loc, m: D.MultivariateNormal(loc, **{kind: m}).precision_matrix,
                       lambda loc, m: TD.MultivariateNormal(loc, **{kind: m}).precision_matrix,
                       randn(2, 3, seed=4), matrix, dtype=np.float64, rtol=1e-9)
