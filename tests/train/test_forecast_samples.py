"""Scores of probabilistic forecasts: the sample CRPS against the mean over all pairs of samples
and against the Gaussian's closed form, the weighted quantile loss by hand, and the errors."""

import numpy as np
import pytest
from scipy import stats

from lamina.errors import ShapeError
from lamina.train import mean_weighted_quantile_loss, sample_crps, weighted_quantile_loss


def test_sample_crps_equals_the_pairwise_definition():
    rng = np.random.default_rng(0)
    samples, y = rng.standard_normal((9, 3, 4)), rng.standard_normal((3, 4))
    first = np.abs(samples - y).mean(axis=0)
    pairs = np.abs(samples[:, None] - samples[None, :]).mean(axis=(0, 1))
    assert sample_crps(samples, y) == pytest.approx(np.mean(first - 0.5 * pairs), rel=1e-12)


def test_sample_crps_by_hand_and_against_the_gaussian_closed_form():
    # samples {0, 2}, y = 1: E|X - y| = 1, E|X - X'| = (0 + 2 + 2 + 0) / 4 = 1, CRPS = 0.5
    assert sample_crps(np.array([[0.0], [2.0]]), np.array([1.0])) == pytest.approx(0.5)
    # N(mu, s^2) at y: s [w (2 Phi(w) - 1) + 2 phi(w) - 1 / sqrt(pi)], w = (y - mu) / s
    mu, s, y = 1.0, 2.0, np.array([0.3, 4.0])
    w = (y - mu) / s
    exact = np.mean(s * (w * (2 * stats.norm.cdf(w) - 1) + 2 * stats.norm.pdf(w) - 1 / np.sqrt(np.pi)))
    samples = mu + s * np.random.default_rng(1).standard_normal((20000, 2))
    assert sample_crps(samples, y) == pytest.approx(exact, rel=0.02)


def test_weighted_quantile_loss_by_hand():
    y, forecast = np.array([2.0, -4.0, 6.0]), np.array([1.0, -1.0, 8.0])
    # residuals 1, -3, -2 at q = 0.9: 0.9, 0.3, 0.2 -> 2 * 1.4 / 12
    assert weighted_quantile_loss(y, forecast, 0.9) == pytest.approx(2 * 1.4 / 12)
    quantiles = np.stack([forecast, y], axis=-1)
    assert mean_weighted_quantile_loss(y, quantiles, (0.9, 0.5)) == pytest.approx(1.4 / 12)


def test_bad_inputs_are_refused():
    with pytest.raises(ShapeError, match=r"sample_crps: samples have shape \(4, 3\) and y \(2,\)"):
        sample_crps(np.zeros((4, 3)), np.zeros(2))
    with pytest.raises(ValueError, match="level must be in"):
        weighted_quantile_loss(np.ones(2), np.ones(2), 1.0)
    with pytest.raises(ValueError, match="is 0, so the loss is undefined"):
        weighted_quantile_loss(np.zeros(2), np.ones(2), 0.5)
    with pytest.raises(ShapeError, match="expected the 2 levels"):
        mean_weighted_quantile_loss(np.ones(3), np.ones((3, 3)), (0.1, 0.9))
