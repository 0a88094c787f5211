"""Probability paths of flow matching: x_t and u_t against their formulas, u_t as the time
derivative of x_t (centred differences), the optimal transport couplings against every
permutation and a Sinkhorn plan, and errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import lamina
from helpers import assert_close, randn
from lamina.errors import ShapeError
from lamina.models import (
    ConditionalFlowMatcher,
    ExactOptimalTransportConditionalFlowMatcher,
    TargetConditionalFlowMatcher,
    make_matcher,
)

T = np.array([0.0, 0.25, 0.5, 0.9, 1.0])


@pytest.fixture
def batch(f64):
    return randn(5, 2, 3, seed=1), randn(5, 2, 3, seed=2) + 3.0


def test_independent_path_formulas(batch):
    x0, x1 = batch
    t, xt, ut, eps = ConditionalFlowMatcher(sigma=0.3).sample_location_and_conditional_flow(x0, x1, T, True)
    tt = T[:, None, None]
    assert_close(t, T, 0, "t")
    assert_close(xt, tt * x1 + (1 - tt) * x0 + 0.3 * eps, 1e-12, "x_t")
    assert_close(ut, x1 - x0, 1e-12, "u_t")
    assert eps.std() > 0.5                                   # the noise is drawn, not zero


def test_lipman_path_formulas(batch):
    x0, x1 = batch
    sigma_min = 0.05
    t, xt, ut = TargetConditionalFlowMatcher(sigma=sigma_min).sample_location_and_conditional_flow(x0, x1, T)
    tt = T[:, None, None]
    assert_close(xt, (1 - (1 - sigma_min) * tt) * x0 + tt * x1, 1e-12, "x_t")
    assert_close(ut, x1 - (1 - sigma_min) * x0, 1e-12, "u_t")
    assert_close(xt[-1], x1[-1] + sigma_min * x0[-1], 1e-12, "x_1 within sigma_min of the data")


@pytest.mark.parametrize("matcher", [ConditionalFlowMatcher(0.0), ConditionalFlowMatcher(0.4),
                                     TargetConditionalFlowMatcher(0.1)], ids=repr)
def test_velocity_is_the_time_derivative_of_the_path(batch, matcher):
    x0, x1 = batch
    eps = randn(*x0.shape, seed=3)
    t, h = np.array([0.1, 0.3, 0.5, 0.7, 0.85]), 1e-5
    derivative = (matcher.sample_xt(x0, x1, t + h, eps) - matcher.sample_xt(x0, x1, t - h, eps)) / (2 * h)
    ut = matcher.compute_conditional_flow(x0, x1, t, matcher.sample_xt(x0, x1, t, eps))
    assert_close(derivative, ut, 1e-8, "d x_t / dt")


def test_times_are_drawn_uniformly_when_not_given(batch):
    x0, x1 = (np.repeat(a, 200, axis=0) for a in batch)
    t, xt, ut = ConditionalFlowMatcher().sample_location_and_conditional_flow(x0, x1)
    assert t.shape == (1000,) and t.min() >= 0 and t.max() <= 1
    assert abs(t.mean() - 0.5) < 0.05 and abs(t.var() - 1 / 12) < 0.01
    assert_close(xt, t[:, None, None] * x1 + (1 - t[:, None, None]) * x0, 1e-12, "x_t at the drawn times")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_ot_coupling_is_the_brute_force_optimum(f64, seed):
    x0, x1 = randn(6, 2, seed=seed), randn(6, 2, seed=seed + 20)
    matcher = ExactOptimalTransportConditionalFlowMatcher()
    rows, cols = matcher.couple(x0, x1)
    cost = ((x0[:, None] - x1[None]) ** 2).sum(-1)
    best = min(itertools.permutations(range(6)), key=lambda p: cost[np.arange(6), list(p)].sum())
    np.testing.assert_array_equal(rows, np.arange(6))
    np.testing.assert_array_equal(cols, best)
    t, xt, ut = matcher.sample_location_and_conditional_flow(x0, x1, 0.5)
    assert_close(ut, x1[cols] - x0, 1e-12, "u_t of the re-paired batch")
    assert_close(xt, 0.5 * (x0 + x1[cols]), 1e-12, "x_t of the re-paired batch")


def test_sinkhorn_coupling_draws_cheap_pairs(f64):
    x0, x1 = randn(64, 2, seed=4), randn(64, 2, seed=5)
    exact = ExactOptimalTransportConditionalFlowMatcher().couple(x0, x1)
    soft = ExactOptimalTransportConditionalFlowMatcher(method="sinkhorn", reg=0.01, iters=300).couple(x0, x1)
    independent = ConditionalFlowMatcher().couple(x0, x1)

    def mean_cost(pairs):
        return ((x0[pairs[0]] - x1[pairs[1]]) ** 2).sum(-1).mean()

    # drawn with replacement, the pairs may even beat the exact plan's mean a little
    assert mean_cost(soft) < 1.5 * mean_cost(exact) < 0.5 * mean_cost(independent)
    assert len(soft[0]) == 64


def test_make_matcher_and_config():
    matcher = make_matcher("exact_ot", sigma=0.2, method="sinkhorn")
    again = make_matcher(matcher.get_config())
    assert type(again) is ExactOptimalTransportConditionalFlowMatcher
    assert again.get_config() == matcher.get_config() and again.sigma == 0.2
    assert make_matcher(matcher) is matcher
    assert type(make_matcher("target")) is TargetConditionalFlowMatcher


def test_errors(batch):
    x0, x1 = batch
    with pytest.raises(ShapeError, match=r"ConditionalFlowMatcher: the source batch x0 of shape \(5, 2, 3\) and "
                                         r"the data batch x1 of shape \(4, 2, 3\) must have the same shape"):
        ConditionalFlowMatcher().sample_location_and_conditional_flow(x0, x1[:4])
    with pytest.raises(ValueError, match=r"ConditionalFlowMatcher: times t must lie in \[0, 1\], got \[1.5\]"):
        ConditionalFlowMatcher().sample_location_and_conditional_flow(x0, x1, np.array([0, 0.2, 1.5, 1, 0.3]))
    with pytest.raises(ValueError, match=r"TargetConditionalFlowMatcher: times t must lie in \[0, 1\], got \[-0.1"):
        TargetConditionalFlowMatcher().sample_location_and_conditional_flow(x0, x1, -0.1)
    with pytest.raises(ShapeError, match=r"t of shape \(2,\) does not fit a batch of 5"):
        ConditionalFlowMatcher().sample_location_and_conditional_flow(x0, x1, np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="ConditionalFlowMatcher: sigma must be a number >= 0, got -0.1"):
        ConditionalFlowMatcher(sigma=-0.1)
    with pytest.raises(ValueError, match="ExactOptimalTransportConditionalFlowMatcher: sigma must be a number >= 0"):
        ExactOptimalTransportConditionalFlowMatcher(sigma=-1)
    with pytest.raises(ValueError, match="method must be one of .'exact', 'sinkhorn'., got 'emd'"):
        ExactOptimalTransportConditionalFlowMatcher(method="emd")
    with pytest.raises(ValueError, match="make_matcher: matcher must be one of"):
        make_matcher("ddpm")
    lamina.set_default_dtype(np.float32)
