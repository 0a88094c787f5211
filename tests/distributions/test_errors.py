"""Argument checks: bad parameters and values outside the support give clear errors naming the
distribution, the argument and the offending values; validate_args=False turns them off."""

from __future__ import annotations

import numpy as np
import pytest

import lamina.distributions as D
from lamina.errors import ShapeError


@pytest.mark.parametrize("make,match", [
    (lambda: D.Normal([0.0, 1.0], [1.0, -2.0]), r"Normal: argument scale must be > 0; got -2 at \(1,\)"),
    (lambda: D.Bernoulli(probs=[0.5, 1.5]), r"Bernoulli: argument probs must be in \[0, 1\]; got 1.5 at \(1,\)"),
    (lambda: D.Categorical(probs=[[0.5, 0.2], [0.0, 0.0]]),
     r"Categorical: argument probs must be a vector of weights >= 0 with a positive, finite sum .*\[0, 0\] at \(1,\)"),
    (lambda: D.Categorical(probs=[0.5, -0.1, 0.6]), r"Categorical: argument probs must be a vector of weights >= 0"),
    (lambda: D.OneHotCategorical(probs=[-1.0, -1.0]), r"Categorical: argument probs must be a vector of weights >= 0"),
    (lambda: D.Gamma(1.0, 0.0), r"Gamma: argument rate must be > 0; got 0 at"),
    (lambda: D.Poisson(-1.0), r"Poisson: argument rate must be >= 0; got -1 at"),
    (lambda: D.Uniform([0.0, 2.0], [1.0, 1.0]), r"Uniform: argument high must be > low; .*\[\[1\]\]"),
    (lambda: D.Normal(np.zeros(3), np.ones(2)), r"parameters of shapes \(3,\) and \(2,\) cannot be broadcast"),
    (lambda: D.Bernoulli(), r"Bernoulli: give exactly one of probs= and logits=, got neither"),
    (lambda: D.Categorical(probs=[0.5, 0.5], logits=[0.0, 0.0]), r"Categorical: give exactly one .* got both"),
    (lambda: D.Independent(D.Normal(np.zeros(3), 1.0), 2), r"Independent: reinterpreted_batch_ndims must be"),
    (lambda: D.MixtureSameFamily(D.Categorical(probs=[0.5, 0.5]), D.Normal(np.zeros(3), 1.0)),
     r"MixtureSameFamily: component_distribution has batch_shape \(3,\); expected .* \(2,\)"),
])
def test_bad_parameters(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


@pytest.mark.parametrize("call,match", [
    (lambda: D.Exponential(1.0).log_prob([1.0, -0.5]), r"Exponential.log_prob: value must be >= 0 .*-0.5 at \(1,\)"),
    (lambda: D.Bernoulli(probs=0.3).log_prob(0.5), r"Bernoulli.log_prob: value must be 0 or 1 .*got 0.5"),
    (lambda: D.Categorical(probs=[0.2, 0.8]).log_prob([1, 2]),
     r"Categorical.log_prob: value must be a whole number in \[0, 1\] .*got 2 at \(1,\)"),
    (lambda: D.Poisson(2.0).log_prob(1.5), r"Poisson.log_prob: value must be a whole number >= 0"),
    (lambda: D.Beta(1.0, 2.0).log_prob(1.2), r"Beta.log_prob: value must be in \[0, 1\]"),
    (lambda: D.Uniform(0.0, 1.0).log_prob(3.0), r"Uniform.log_prob: value must be in \[low, high\]"),
    (lambda: D.Normal(0.0, 1.0).icdf(1.5), r"Normal.icdf: value must be in \[0, 1\]"),
    (lambda: D.OneHotCategorical(probs=[0.5, 0.5]).log_prob([1.0, 1.0]), r"OneHotCategorical.log_prob: value must "
                                                                          r"be a one-hot vector"),
])
def test_values_outside_the_support(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_value_shape_that_does_not_broadcast():
    with pytest.raises(ShapeError, match=r"Normal.log_prob: value of shape \(2,\) does not broadcast with .*\(3,\)"):
        D.Normal(np.zeros(3), 1.0).log_prob(np.zeros(2))
    with pytest.raises(ShapeError, match=r"must end with the event shape \(3,\)"):
        D.Independent(D.Normal(np.zeros(3), 1.0), 1).log_prob(np.zeros((3, 1)))


def test_validate_args_false_skips_the_checks():
    with np.errstate(invalid="ignore"):
        assert np.isnan(D.Normal(0.0, -1.0, validate_args=False).log_prob(0.0).item())
    assert D.Uniform(0.0, 1.0, validate_args=False).log_prob(3.0).item() == -np.inf


def test_missing_closed_forms_say_so():
    with pytest.raises(NotImplementedError, match="Poisson.entropy is not implemented"):
        D.Poisson(1.0).entropy()
    with pytest.raises(NotImplementedError, match="Beta.cdf is not implemented"):
        D.Beta(1.0, 1.0).cdf(0.5)
