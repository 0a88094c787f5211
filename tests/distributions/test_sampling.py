"""Draws: reproducible under lamina.manual_seed, sample statistics within a few standard errors
of the mean and variance, and reparameterized draws differentiable in the parameters."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
import lamina.distributions as D
from helpers import check_gradients, positive, randn

N = 100_000

# name: (distribution, true mean, true variance); each with a batch of two
STATISTICS = {
    "normal": (lambda: D.Normal([0.5, -2.0], [1.0, 0.3]), [0.5, -2.0], [1.0, 0.09]),
    "lognormal": (lambda: D.LogNormal([0.0, 0.5], [0.25, 0.5]), np.exp([0.03125, 0.625]),
                  (np.exp([0.0625, 0.25]) - 1) * np.exp([0.0625, 1.25])),
    "laplace": (lambda: D.Laplace([1.0, -1.0], [0.5, 2.0]), [1.0, -1.0], [0.5, 8.0]),
    "uniform": (lambda: D.Uniform([0.0, -3.0], [1.0, 5.0]), [0.5, 1.0], [1 / 12, 64 / 12]),
    "exponential": (lambda: D.Exponential([0.5, 4.0]), [2.0, 0.25], [4.0, 1 / 16]),
    "gamma": (lambda: D.Gamma([0.5, 3.0], [1.0, 2.0]), [0.5, 1.5], [0.5, 0.75]),
    "beta": (lambda: D.Beta([0.5, 2.0], [0.5, 5.0]), [0.5, 2 / 7], [0.125, 10 / 392]),
    "bernoulli": (lambda: D.Bernoulli(probs=[0.2, 0.9]), [0.2, 0.9], [0.16, 0.09]),
    "poisson": (lambda: D.Poisson([0.7, 6.0]), [0.7, 6.0], [0.7, 6.0]),
    "mixture": (lambda: D.MixtureSameFamily(D.Categorical(probs=[0.3, 0.7]), D.Normal([-1.0, 2.0], [0.5, 1.0])),
                0.3 * -1.0 + 0.7 * 2.0, 0.3 * 0.25 + 0.7 * 1.0 + 0.3 * 0.7 * 9.0),
}


@pytest.mark.parametrize("name", list(STATISTICS))
def test_sample_mean_and_variance(name):
    make, mean, variance = STATISTICS[name]
    lamina.manual_seed(0)
    draws = make().sample((N,)).numpy().astype(np.float64)
    mean, variance = np.asarray(mean), np.asarray(variance)
    assert np.all(np.abs(draws.mean(0) - mean) < 5 * np.sqrt(variance / N)), (draws.mean(0), mean)
    np.testing.assert_allclose(draws.var(0), variance, rtol=0.05)


def test_categorical_and_one_hot_frequencies():
    probs = np.array([0.1, 0.6, 0.3])
    lamina.manual_seed(0)
    counts = np.bincount(D.Categorical(probs=probs).sample((N,)).numpy(), minlength=3) / N
    assert np.all(np.abs(counts - probs) < 5 * np.sqrt(probs * (1 - probs) / N))
    hot = D.OneHotCategorical(probs=probs).sample((N,)).numpy()
    assert np.all(hot.sum(-1) == 1)
    assert np.all(np.abs(hot.mean(0) - probs) < 5 * np.sqrt(probs * (1 - probs) / N))


def test_relaxed_draws_lie_on_the_simplex_and_harden_at_low_temperature():
    lamina.manual_seed(0)
    logits = np.log([0.2, 0.5, 0.3])
    soft = D.RelaxedOneHotCategorical(0.05, logits=logits).sample((20_000,)).numpy()
    np.testing.assert_allclose(soft.sum(-1), 1.0, rtol=1e-5)
    frequencies = np.bincount(soft.argmax(-1), minlength=3) / len(soft)
    np.testing.assert_allclose(frequencies, [0.2, 0.5, 0.3], atol=0.02)
    assert np.mean(soft.max(-1) > 0.9) > 0.9


def test_manual_seed_makes_draws_reproducible():
    d = D.Normal(np.zeros(3), 1.0)
    lamina.manual_seed(3)
    first = d.sample((4,)).numpy()
    lamina.manual_seed(3)
    np.testing.assert_array_equal(first, d.sample((4,)).numpy())
    assert not d.sample().requires_grad


def _rsample(make):
    def draw(*params):
        lamina.manual_seed(0)                   # the same noise at every evaluation
        return make(*params).rsample((3,))

    return draw


RSAMPLE = {
    "normal": (D.Normal, [randn(2), positive(2)]),
    "lognormal": (D.LogNormal, [randn(2), positive(2, low=0.3, high=1.0)]),
    "laplace": (D.Laplace, [randn(2), positive(2)]),
    "uniform": (D.Uniform, [randn(2), 2.0 + positive(2)]),
    "exponential": (D.Exponential, [positive(2)]),
    "gamma": (D.Gamma, [positive(2, low=0.5, high=3.0), positive(2, seed=1)]),
    "beta": (D.Beta, [positive(2, low=0.5, high=3.0), positive(2, seed=1, low=0.5, high=3.0)]),
    "relaxed_one_hot": (lambda t, z: D.RelaxedOneHotCategorical(t, logits=z), [np.array(0.5), randn(2, 3)]),
    "independent": (lambda m, s: D.Independent(D.Normal(m, s), 1), [randn(2, 3), positive(2, 3)]),
}


@pytest.mark.parametrize("name", list(RSAMPLE))
def test_rsample_gradients_with_fixed_noise(name):
    make, params = RSAMPLE[name]
    assert make(*params).has_rsample
    assert check_gradients(_rsample(make), *params)


def test_gamma_rsample_gradient_matches_the_mean_on_average():
    # E[x] = a / b, so the average of dx/da over many draws is 1 / b
    a = lamina.tensor([0.4, 2.5], requires_grad=True, dtype=np.float64)
    lamina.manual_seed(1)
    D.Gamma(a, 2.0).rsample((20_000,)).mean(axis=0).sum().backward()
    np.testing.assert_allclose(a.grad, [0.5, 0.5], rtol=0.03)


def test_no_rsample_is_a_clear_error():
    with pytest.raises(NotImplementedError, match="Bernoulli has no reparameterized sample"):
        D.Bernoulli(probs=0.3).rsample()


SCALAR_PARAMETERS = {
    "poisson": lambda: D.Poisson(lamina.tensor(2.0)),
    "binomial": lambda: D.Binomial(lamina.tensor(5.0), probs=lamina.tensor(0.3)),
    "negative_binomial": lambda: D.NegativeBinomial(lamina.tensor(3.0), probs=lamina.tensor(0.4)),
    "geometric": lambda: D.Geometric(probs=lamina.tensor(0.3)),
    "bernoulli": lambda: D.Bernoulli(probs=lamina.tensor(0.3)),
    "categorical": lambda: D.Categorical(probs=lamina.tensor([0.2, 0.8])),
    "one_hot_categorical": lambda: D.OneHotCategorical(probs=lamina.tensor([0.2, 0.8])),
    "multinomial": lambda: D.Multinomial(3, probs=lamina.tensor([0.2, 0.8])),
    "half_normal": lambda: D.HalfNormal(lamina.tensor(1.0)),
    "half_cauchy": lambda: D.HalfCauchy(lamina.tensor(1.0)),
    "cauchy": lambda: D.Cauchy(lamina.tensor(0.0), lamina.tensor(1.0)),
    "gumbel": lambda: D.Gumbel(lamina.tensor(0.0), lamina.tensor(1.0)),
    "student_t": lambda: D.StudentT(lamina.tensor(3.0)),
    "multivariate_normal": lambda: D.MultivariateNormal(lamina.tensor([0.0, 0.0]), scale_tril=np.eye(2)),
    "relaxed_bernoulli": lambda: D.RelaxedBernoulli(lamina.tensor(0.5), probs=lamina.tensor(0.3)),
    "relaxed_one_hot": lambda: D.RelaxedOneHotCategorical(lamina.tensor(0.5), probs=lamina.tensor([0.3, 0.7])),
}


@pytest.mark.parametrize("name", list(SCALAR_PARAMETERS))
def test_draws_from_scalar_parameters_are_arrays_of_the_event_shape(name):
    d = SCALAR_PARAMETERS[name]()
    draw = d.sample()
    assert isinstance(draw.data, np.ndarray)
    assert draw.shape == d.event_shape
    assert d.sample((3,)).shape == (3,) + d.event_shape
