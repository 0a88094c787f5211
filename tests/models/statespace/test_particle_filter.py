"""ParticleFilter and the resampling schemes: on a linear-Gaussian model the particle means,
variances and log-likelihood approach the Kalman filter's; resampling returns valid indices
with the right expected counts (systematic ones within floor/ceil of N w_i)."""

from __future__ import annotations

import numpy as np
import pytest

from lamina.errors import ShapeError
from lamina.models import (
    KalmanFilter,
    ParticleFilter,
    multinomial_resample,
    stratified_resample,
    systematic_resample,
)

SCHEMES = {"multinomial": multinomial_resample, "stratified": stratified_resample,
           "systematic": systematic_resample}
WEIGHTS = np.array([0.31, 0.0, 0.07, 0.22, 0.005, 0.145, 0.25])


def linear_gaussian():
    """x_0 ~ N(0.3, 1), x_{t+1} = 0.9 x_t + N(0, 0.5), y_t = x_t + N(0, 0.8): the Kalman
    filter's model and the particle filter's three callables for it."""
    kf = KalmanFilter([[0.9]], [[1.0]], [[0.5]], [[0.8]], [0.3], [[1.0]])

    def initial(n, rng):
        return 0.3 + rng.standard_normal((n, 1))

    def transition(particles, rng):
        return 0.9 * particles + np.sqrt(0.5) * rng.standard_normal(particles.shape)

    def log_likelihood(particles, y):
        return -0.5 * ((y[0] - particles[:, 0]) ** 2 / 0.8 + np.log(2 * np.pi * 0.8))

    return kf, transition, log_likelihood, initial


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_approaches_the_kalman_filter_with_many_particles(scheme):
    kf, transition, log_likelihood, initial = linear_gaussian()
    _, y = kf.sample(20, seed=0)
    means, covs = kf.filter(y)
    result = ParticleFilter(transition, log_likelihood, initial, n_particles=5000, resampling=scheme,
                            seed=1).filter(y)
    # The filtering sd is about 0.6 and the ESS stays above 1000, so the Monte Carlo sd of each
    # mean is at most about 0.02 (0.1 is 5 of them); the log-likelihood estimate's sd here is
    # about 0.05 (spread over seeds).
    assert result.ess.min() > 1000
    assert np.abs(result.means[:, 0] - means[:, 0]).max() < 0.1
    assert np.abs(result.variances[:, 0] - covs[:, 0, 0]).max() < 0.1
    assert abs(result.log_likelihood - kf.log_likelihood(y)) < 0.25
    assert result.resampled.any() and not result.resampled[0]


def test_ess_threshold_controls_resampling():
    kf, transition, log_likelihood, initial = linear_gaussian()
    _, y = kf.sample(8, seed=2)
    never = ParticleFilter(transition, log_likelihood, initial, n_particles=200, ess_threshold=0.0, seed=0).filter(y)
    always = ParticleFilter(transition, log_likelihood, initial, n_particles=200, ess_threshold=1.0, seed=0).filter(y)
    assert not never.resampled.any()
    assert always.resampled[1:].all()
    assert never.ess[-1] < always.ess[-1]               # without resampling the weights degenerate


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_resampling_returns_valid_indices(scheme):
    rng = np.random.default_rng(0)
    for _ in range(20):
        indices = SCHEMES[scheme](WEIGHTS, rng)
        assert indices.shape == (len(WEIGHTS),) and indices.dtype.kind == "i"
        assert indices.min() >= 0 and indices.max() < len(WEIGHTS)
        assert 1 not in indices                       # a particle of zero weight is never drawn
    assert SCHEMES[scheme](WEIGHTS, rng, n=50).shape == (50,)


def test_systematic_counts_lie_within_floor_and_ceil_of_n_w():
    rng = np.random.default_rng(1)
    for _ in range(200):
        weights = rng.dirichlet(np.full(30, 0.5))
        counts = np.bincount(systematic_resample(weights, rng), minlength=30)
        expected = 30 * weights
        assert (counts >= np.floor(expected)).all() and (counts <= np.ceil(expected)).all()
        counts = np.bincount(stratified_resample(weights, rng), minlength=30)
        assert (counts >= np.floor(expected) - 1).all() and (counts <= np.ceil(expected) + 1).all()


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_resampling_is_unbiased(scheme):
    """The mean count of each particle over R draws is N w_i, within 4.5 standard errors (the
    multinomial's sqrt(N w (1 - w) / R) bounds those of the other two schemes)."""
    rng, draws, n = np.random.default_rng(2), 3000, len(WEIGHTS)
    counts = np.zeros(n)
    for _ in range(draws):
        counts += np.bincount(SCHEMES[scheme](WEIGHTS, rng), minlength=n)
    standard_error = np.sqrt(n * WEIGHTS * (1 - WEIGHTS) / draws)
    assert (np.abs(counts / draws - n * WEIGHTS) <= 4.5 * standard_error + 1e-12).all()


def test_errors_are_clear():
    kf, transition, log_likelihood, initial = linear_gaussian()
    with pytest.raises(ValueError, match="resampling must be one of"):
        ParticleFilter(transition, log_likelihood, initial, resampling="residual")
    with pytest.raises(ShapeError, match=r"log_likelihood must return \(10,\) values"):
        ParticleFilter(transition, lambda p, y: np.zeros(3), initial, n_particles=10).filter(np.zeros((2, 1)))
    with pytest.raises(ValueError, match="every particle has zero likelihood"):
        ParticleFilter(transition, lambda p, y: np.full(len(p), -np.inf), initial, n_particles=10).filter(
            np.zeros((2, 1)))
    with pytest.raises(ValueError, match="non-negative"):
        systematic_resample([0.5, -0.1, 0.6], np.random.default_rng(0))
