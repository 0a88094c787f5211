"""Samplers and likelihoods of score-based SDEs with the true score of a Gaussian mixture (closed
form at every t): the predictor and corrector steps by hand, predictor-corrector and
probability-flow ODE sampling reproduce the mixture, and the ODE log-likelihood is the
mixture's log-density."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logsumexp

from helpers import randn
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models import (
    VESDE,
    VPSDE,
    euler_maruyama_predictor,
    langevin_corrector,
    ode_log_likelihood,
    ode_sample,
    pc_sample,
    probability_flow_ode,
    reverse_diffusion_predictor,
    subVPSDE,
)

WEIGHTS = np.array([0.3, 0.7])
MEANS = np.array([[-2.0, 0.0], [1.5, 1.0]])
VARIANCES = np.array([[0.25, 0.5], [0.36, 0.16]])       # diagonal covariances


def mixture_score(sde):
    """grad log p_t for p_0 the mixture: component k is N(m(t) mu_k, m(t)^2 S_k + s(t)^2 I) at time t."""
    def score(x, t):
        m, s = sde.marginal_coefficients(t)
        variance = m[:, None, None] ** 2 * VARIANCES[None] + s[:, None, None] ** 2      # (n, K, d)
        diff = F.reshape(x, (x.shape[0], 1, 2)) - Tensor(m[:, None, None] * MEANS[None], dtype=x.dtype)
        log_joint = (diff * diff * Tensor(-0.5 / variance, dtype=x.dtype)).sum(axis=2) + Tensor(
            np.log(WEIGHTS) - 0.5 * np.log(2 * np.pi * variance).sum(2), dtype=x.dtype)
        responsibility = F.reshape(F.softmax(log_joint, axis=1), (x.shape[0], 2, 1))
        return (responsibility * diff * Tensor(-1.0 / variance, dtype=x.dtype)).sum(axis=1)
    return score


def mixture_log_density(x):
    diff = x[:, None] - MEANS[None]
    log_joint = np.log(WEIGHTS) - 0.5 * (diff ** 2 / VARIANCES).sum(2) - 0.5 * np.log(2 * np.pi * VARIANCES).sum(1)
    return logsumexp(log_joint, axis=1)


def check_mixture(samples, tolerance=0.08):
    mean = WEIGHTS @ MEANS
    variance = WEIGHTS @ (VARIANCES + MEANS ** 2) - mean ** 2
    left = samples[:, 0] < -0.25                                          # the first component's share
    np.testing.assert_allclose(samples.mean(0), mean, atol=tolerance)
    np.testing.assert_allclose(samples.var(0), variance, rtol=tolerance)
    assert abs(left.mean() - WEIGHTS[0]) < 0.03
    np.testing.assert_allclose(samples[left].var(0), VARIANCES[0], rtol=2 * tolerance)


def linear_score(x, t):
    return x * -2.0


def test_predictors_and_corrector_follow_their_updates():
    sde, x, t, dt = VPSDE(), randn(4, 2), np.array([0.9, 0.8, 0.5, 0.3]), 0.01
    b = (0.1 + 19.9 * t)[:, None]
    z = np.random.default_rng(3).standard_normal((4, 2))
    got, mean = euler_maruyama_predictor(sde, linear_score, x, t, dt, seed=3)
    expected_mean = x - (-b / 2 * x + b * 2 * x) * dt
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-12)
    np.testing.assert_allclose(got, expected_mean + np.sqrt(b * dt) * z, rtol=1e-12)
    got, mean = reverse_diffusion_predictor(sde, linear_score, x, t, dt, seed=3)
    expected_mean = x - (np.sqrt(1 - b * dt) - 1) * x - b * dt * 2 * x
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-12)
    np.testing.assert_allclose(got, expected_mean + np.sqrt(b * dt) * z, rtol=1e-12)
    # Langevin: eps = 2 alpha (snr ||z|| / ||score||)^2, norms averaged over the batch
    got, mean = langevin_corrector(sde, linear_score, x, t, snr=0.2, steps=1, dt=dt, seed=3)
    step = 2 * (1 - b * dt) * (0.2 * np.linalg.norm(z, axis=1).mean() / np.linalg.norm(2 * x, axis=1).mean()) ** 2
    np.testing.assert_allclose(mean, x - step * 2 * x, rtol=1e-12)
    np.testing.assert_allclose(got, x - step * 2 * x + np.sqrt(2 * step) * z, rtol=1e-12)
    drift = probability_flow_ode(sde, linear_score)(x, t)
    np.testing.assert_allclose(drift, -b / 2 * x + b / 2 * 2 * x, rtol=1e-12)


@pytest.mark.parametrize("sde, predictor, corrector", [
    (VPSDE(), "euler_maruyama", "langevin"),
    (subVPSDE(), "reverse_diffusion", None),
    (VESDE(0.01, 20.0), "reverse_diffusion", "langevin"),
], ids=["vp-em-langevin", "subvp-reverse-diffusion", "ve-reverse-diffusion-langevin"])
def test_predictor_corrector_sampling_reproduces_the_mixture(sde, predictor, corrector):
    samples = pc_sample(sde, mixture_score(sde), (4000, 2), steps=400, predictor=predictor, corrector=corrector,
                        seed=0)
    print(f"{type(sde).__name__} PC samples: mean {samples.mean(0)}, variance {samples.var(0)}")
    check_mixture(samples)


@pytest.mark.parametrize("sde, method", [(VPSDE(), "rk4"), (subVPSDE(), "heun"), (VESDE(0.01, 20.0), "rk4")],
                         ids=["vp-rk4", "subvp-heun", "ve-rk4"])
def test_probability_flow_ode_reproduces_the_mixture(sde, method):
    samples = ode_sample(sde, mixture_score(sde), (4000, 2), steps=100, method=method, seed=0)
    print(f"{type(sde).__name__} ODE samples: mean {samples.mean(0)}, variance {samples.var(0)}")
    check_mixture(samples)


POINTS = np.array([[-2.0, 0.3], [1.5, 1.0], [0.0, 0.0], [2.0, 0.5], [-1.0, -1.0]])


@pytest.mark.parametrize("sde, tolerance", [(VPSDE(), 1.5e-2), (VPSDE(0.1, 30.0), 1e-3), (subVPSDE(), 1.5e-2),
                                            (VESDE(0.01, 1000.0), 1e-2)],
                         ids=["vp", "vp-beta30", "subvp", "ve"])
def test_ode_log_likelihood_is_the_mixture_log_density(sde, tolerance):
    # the error left is mostly the prior's mismatch with p_T (smaller for a larger beta_max or sigma_max)
    got = ode_log_likelihood(sde, mixture_score(sde), POINTS, steps=60)
    print(f"{type(sde).__name__} log-likelihood error {got - mixture_log_density(POINTS)}")
    np.testing.assert_allclose(got, mixture_log_density(POINTS), atol=tolerance)


def test_hutchinson_estimate_averages_to_the_exact_log_likelihood():
    sde, points = VPSDE(), np.repeat(POINTS[:2], 300, axis=0)
    exact = ode_log_likelihood(sde, mixture_score(sde), POINTS[:2], steps=30)
    for noise in ("gaussian", "rademacher"):
        estimates = ode_log_likelihood(sde, mixture_score(sde), points, steps=30, trace="hutchinson", noise=noise,
                                       seed=0).reshape(2, 300)
        sem = estimates.std(1) / np.sqrt(300)
        print(f"Hutchinson ({noise}) {estimates.mean(1)} +- {sem} vs exact {exact}")
        assert np.all(np.abs(estimates.mean(1) - exact) < 4 * sem + 1e-3) and np.all(estimates.std(1) > 0)


def test_samplers_report_bad_arguments():
    sde = VPSDE()
    with pytest.raises(ValueError, match="pc_sample: predictor must be one of"):
        pc_sample(sde, linear_score, (2, 2), predictor="ancestral")
    with pytest.raises(ValueError, match="need a predictor, a corrector or both"):
        pc_sample(sde, linear_score, (2, 2), predictor=None, corrector=None)
    with pytest.raises(ValueError, match="ode_sample: method must be one of"):
        ode_sample(sde, linear_score, (2, 2), method="dopri5")
    with pytest.raises(ShapeError, match=r"score_fn must return a tensor of x's shape \(2, 2\), got \(2, 1\)"):
        ode_sample(sde, lambda x, t: x[:, :1], (2, 2), steps=2)
    with pytest.raises(ShapeError, match=r"ode_log_likelihood: x must be a batch of vectors \(n, d\)"):
        ode_log_likelihood(sde, linear_score, np.zeros((2, 2, 2)))
