"""StudentT, Cauchy, HalfCauchy, HalfNormal, Chi2, Gumbel, Weibull, Pareto, VonMises, Dirichlet
and the relaxed Bernoulli against torch.distributions in float64 (values and gradients), with
gradient checks of log_prob, entropy, cdf and rsample, sample statistics and argument checks."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch.distributions as TD
from torch.distributions.relaxed_bernoulli import LogitRelaxedBernoulli

import lamina
import lamina.distributions as D
from helpers import check_gradients, compare_with_torch, positive, randn


def uniform(low, high, *shape, seed=0):
    return np.random.default_rng(seed).uniform(low, high, shape)


def simplex(*shape, seed=0):
    p = positive(*shape, seed=seed, low=0.2, high=1.0)
    return p / p.sum(-1, keepdims=True)


ALL = ("log_prob", "cdf", "icdf", "entropy", "mean", "variance")
PROBS = uniform(0.05, 0.95, 3)
# name: (lamina constructor, torch constructor, parameters, value, methods)
CASES = {
    "student_t": (D.StudentT, TD.StudentT, [positive(3, low=2.5, high=6.0), randn(3), positive(3, seed=1)],
                  randn(2, 3, seed=2), ("log_prob", "entropy", "mean", "variance")),
    "cauchy": (D.Cauchy, TD.Cauchy, [randn(3), positive(3, seed=1)], randn(2, 3, seed=2, scale=3.0),
               ("log_prob", "cdf", "icdf", "entropy")),
    "half_cauchy": (D.HalfCauchy, TD.HalfCauchy, [positive(3)], positive(2, 3, seed=2, low=0.1, high=4.0),
                    ("log_prob", "cdf", "icdf", "entropy")),
    "half_normal": (D.HalfNormal, TD.HalfNormal, [positive(3)], positive(2, 3, seed=2, low=0.1, high=3.0), ALL),
    "chi2": (D.Chi2, TD.Chi2, [positive(3, low=1.0, high=5.0)], positive(2, 3, seed=2, low=0.2, high=5.0),
             ("log_prob", "entropy", "mean", "variance")),
    "gumbel": (D.Gumbel, TD.Gumbel, [randn(3), positive(3, seed=1)], randn(2, 3, seed=2), ALL),
    "weibull": (D.Weibull, TD.Weibull, [positive(3), positive(3, seed=1, low=0.7, high=3.0)],
                positive(2, 3, seed=2, low=0.1, high=3.0), ALL),
    "pareto": (D.Pareto, TD.Pareto, [positive(3, low=0.2, high=1.0), positive(3, seed=1, low=2.5, high=5.0)],
               positive(2, 3, seed=2, low=1.0, high=4.0), ALL),
    "von_mises": (D.VonMises, TD.VonMises, [randn(3), positive(3, seed=1, low=0.3, high=6.0)],
                  uniform(-3.0, 3.0, 2, 3, seed=2), ("log_prob", "mean", "variance")),
    "dirichlet": (D.Dirichlet, TD.Dirichlet, [positive(2, 4, low=0.5, high=3.0)], simplex(3, 2, 4, seed=2),
                  ("log_prob", "entropy", "mean", "variance")),
    "relaxed_bernoulli": (lambda t, z: D.RelaxedBernoulli(t, logits=z), lambda t, z: TD.RelaxedBernoulli(t, logits=z),
                          [np.array(0.6), randn(3)], uniform(0.05, 0.95, 2, 3, seed=2), ("log_prob",)),
    "relaxed_bernoulli_probs": (lambda t, p: D.RelaxedBernoulli(t, probs=p),
                                lambda t, p: TD.RelaxedBernoulli(t, probs=p), [np.array(1.3), PROBS],
                                uniform(0.05, 0.95, 2, 3, seed=2), ("log_prob",)),
    "logit_relaxed_bernoulli": (lambda t, z: D.LogitRelaxedBernoulli(t, logits=z),
                                lambda t, z: LogitRelaxedBernoulli(t, logits=z), [np.array(0.6), randn(3)],
                                randn(2, 3, seed=2, scale=3.0), ("log_prob",)),
}
# torch's von Mises normalizer is a polynomial fit (relative error ~1e-7); torch's trigamma is off by ~5e-10
RTOL = {"von_mises": 2e-6, "student_t": 1e-8, "chi2": 1e-8, "dirichlet": 1e-8}
PAIRS = [(name, method) for name, case in CASES.items() for method in case[4]]


def _call(dist, method, value=None):
    attribute = getattr(dist, method)
    return attribute(value) if value is not None else (attribute() if callable(attribute) else attribute)


def _inputs(name, method):
    ours, theirs, params, value, _ = CASES[name]
    n = len(params)
    if method in ("log_prob", "cdf", "icdf"):
        arg = np.broadcast_to(PROBS, value.shape[:-1] + PROBS.shape[-1:]) if method == "icdf" else value
        return (lambda *a: _call(ours(*a[:n]), method, a[n]), lambda *a: _call(theirs(*a[:n]), method, a[n]),
                [*params, np.array(arg)])
    return lambda *a: _call(ours(*a), method), lambda *a: _call(theirs(*a), method), list(params)


@pytest.mark.parametrize("name,method", PAIRS)
def test_matches_torch(name, method):
    ours, theirs, arrays = _inputs(name, method)
    compare_with_torch(ours, theirs, *arrays, dtype=np.float64, rtol=RTOL.get(name, 1e-10))


@pytest.mark.parametrize("name,method", [(n, m) for n, m in PAIRS if m in ("log_prob", "entropy", "cdf", "icdf")])
def test_gradcheck(name, method):
    ours, _, arrays = _inputs(name, method)
    D.set_default_validate_args(False)     # a difference step moves a probability vector off the simplex
    try:
        assert check_gradients(ours, *arrays)
    finally:
        D.set_default_validate_args(True)


def test_von_mises_is_exact_against_scipy():
    loc, kappa, x = randn(4), np.array([1e-3, 0.5, 4.0, 80.0]), uniform(-3.0, 3.0, 4, seed=1)
    d = D.VonMises(lamina.tensor(loc, dtype=np.float64), lamina.tensor(kappa, dtype=np.float64))
    np.testing.assert_allclose(d.log_prob(x).numpy(), scipy.stats.vonmises.logpdf(x, kappa, loc=loc), rtol=1e-12)
    np.testing.assert_allclose(d.variance.numpy(), 1 - scipy.special.i1e(kappa) / scipy.special.i0e(kappa), rtol=1e-12)
    assert check_gradients(lambda k: D.VonMises(0.3, k).log_prob(x), kappa)
    assert check_gradients(lambda k: D.VonMises(0.3, k).variance, kappa)


def test_moments_that_do_not_exist_follow_torch():
    df = np.array([0.5, 1.5, 4.0])
    student = D.StudentT(df, 0.2, 2.0)
    np.testing.assert_array_equal(student.mean.numpy(), TD.StudentT(*map(_t, (df, 0.2, 2.0))).mean.numpy())
    np.testing.assert_allclose(student.variance.numpy(), [np.nan, np.inf, 4.0 * 4.0 / 2.0])
    assert np.isnan(D.Cauchy(np.zeros(2), 1.0).mean.numpy()).all()
    assert np.isinf(D.HalfCauchy(np.ones(2)).variance.numpy()).all()
    np.testing.assert_allclose(D.Pareto(1.0, np.array([0.5, 1.5, 3.0])).mean.numpy(), [np.inf, 3.0, 1.5])


def _t(value):
    import torch

    return torch.tensor(np.asarray(value, dtype=np.float64))


def _rsample(make):
    def draw(*params):
        lamina.manual_seed(0)                   # the same noise at every evaluation
        return make(*params).rsample((3,))

    return draw


RSAMPLE = {
    "student_t": (D.StudentT, [positive(2, low=2.0, high=5.0), randn(2), positive(2, seed=1)]),
    "cauchy": (D.Cauchy, [randn(2), positive(2)]),
    "half_cauchy": (D.HalfCauchy, [positive(2)]),
    "half_normal": (D.HalfNormal, [positive(2)]),
    "chi2": (D.Chi2, [positive(2, low=1.0, high=4.0)]),
    "gumbel": (D.Gumbel, [randn(2), positive(2)]),
    "weibull": (D.Weibull, [positive(2), positive(2, seed=1)]),
    "pareto": (D.Pareto, [positive(2), positive(2, seed=1)]),
    "dirichlet": (D.Dirichlet, [positive(2, 3, low=0.5, high=3.0)]),
    "relaxed_bernoulli": (lambda t, z: D.RelaxedBernoulli(t, logits=z), [np.array(0.7), randn(2)]),
}


@pytest.mark.parametrize("name", list(RSAMPLE))
def test_rsample_gradients_with_fixed_noise(name):
    make, params = RSAMPLE[name]
    assert make(*params).has_rsample
    assert check_gradients(_rsample(make), *params)


N = 100_000
# name: (distribution, true mean, true variance); each with a batch of two
STATISTICS = {
    "student_t": (lambda: D.StudentT([10.0, 30.0], [1.0, -2.0], [1.0, 0.5]), [1.0, -2.0], [1.25, 0.25 * 30 / 28]),
    "half_normal": (lambda: D.HalfNormal([1.0, 3.0]), np.sqrt(2 / np.pi) * np.array([1.0, 3.0]),
                    (1 - 2 / np.pi) * np.array([1.0, 9.0])),
    "chi2": (lambda: D.Chi2([1.5, 6.0]), [1.5, 6.0], [3.0, 12.0]),
    "gumbel": (lambda: D.Gumbel([0.0, 2.0], [1.0, 0.5]), np.array([0.0, 2.0]) + 0.5772156649 * np.array([1.0, 0.5]),
               np.pi ** 2 / 6 * np.array([1.0, 0.25])),
    "weibull": (lambda: D.Weibull([1.0, 2.0], [1.5, 3.0]),
                np.array([1.0, 2.0]) * scipy.special.gamma(1 + 1 / np.array([1.5, 3.0])),
                np.array([1.0, 4.0]) * (scipy.special.gamma(1 + 2 / np.array([1.5, 3.0]))
                                        - scipy.special.gamma(1 + 1 / np.array([1.5, 3.0])) ** 2)),
    "pareto": (lambda: D.Pareto([1.0, 0.5], [9.0, 12.0]), [9 / 8, 0.5 * 12 / 11],
               [9 / (64 * 7), 0.25 * 12 / (121 * 10)]),
}


@pytest.mark.parametrize("name", list(STATISTICS))
def test_sample_mean_and_variance(name):
    make, mean, variance = STATISTICS[name]
    lamina.manual_seed(0)
    draws = make().sample((N,)).numpy().astype(np.float64)
    mean, variance = np.asarray(mean), np.asarray(variance)
    assert np.all(np.abs(draws.mean(0) - mean) < 5 * np.sqrt(variance / N)), (draws.mean(0), mean)
    np.testing.assert_allclose(draws.var(0), variance, rtol=0.05)


@pytest.mark.parametrize("make", [lambda: D.Cauchy([1.0, -2.0], [0.5, 3.0]), lambda: D.HalfCauchy([0.5, 3.0])])
def test_heavy_tailed_draws_have_the_quartiles_of_the_cdf(make):
    d = make()
    lamina.manual_seed(0)
    draws = d.sample((N,)).numpy()
    for q in (0.25, 0.5, 0.75):
        # the fraction of draws below the q-quantile is within 5 standard errors of q
        below = (draws < d.icdf(np.full(2, q)).numpy()).mean(0)
        assert np.all(np.abs(below - q) < 5 * np.sqrt(q * (1 - q) / N)), (q, below)


def test_von_mises_draws_have_the_mean_direction_and_resultant_length():
    d = D.VonMises(np.array([2.5, -1.0]), np.array([0.5, 8.0]))
    lamina.manual_seed(0)
    draws = d.sample((N,)).numpy().astype(np.float64)
    assert np.all(np.abs(draws) <= np.pi)
    resultant = np.cos(draws - np.array([2.5, -1.0])).mean(0)
    np.testing.assert_allclose(resultant, 1 - d.variance.numpy(), atol=5 / np.sqrt(N))
    np.testing.assert_allclose(np.sin(draws - np.array([2.5, -1.0])).mean(0), 0.0, atol=5 / np.sqrt(N))


def test_dirichlet_draws_lie_on_the_simplex_with_its_moments():
    alpha = np.array([[0.5, 1.0, 3.0], [2.0, 2.0, 5.0]])
    d = D.Dirichlet(alpha)
    lamina.manual_seed(0)
    draws = d.sample((N,)).numpy().astype(np.float64)
    np.testing.assert_allclose(draws.sum(-1), 1.0, rtol=1e-5)
    assert np.all(np.abs(draws.mean(0) - d.mean.numpy()) < 5 * np.sqrt(d.variance.numpy() / N))
    np.testing.assert_allclose(draws.var(0), d.variance.numpy(), rtol=0.05)


def test_relaxed_bernoulli_hardens_at_low_temperature():
    lamina.manual_seed(0)
    draws = D.RelaxedBernoulli(0.05, probs=np.array([0.2, 0.7])).sample((20_000,)).numpy()
    assert np.all((draws > 0) & (draws < 1))
    np.testing.assert_allclose((draws > 0.5).mean(0), [0.2, 0.7], atol=0.02)
    assert np.mean((draws < 0.05) | (draws > 0.95)) > 0.9


@pytest.mark.parametrize("make,match", [
    (lambda: D.StudentT([1.0, -1.0]), r"StudentT: argument df must be > 0; got -1 at \(1,\)"),
    (lambda: D.HalfNormal(0.0), r"HalfNormal: argument scale must be > 0; got 0"),
    (lambda: D.Chi2([2.0, -3.0]), r"Chi2: argument df must be > 0; got -3 at \(1,\)"),
    (lambda: D.Weibull(1.0, -0.5), r"Weibull: argument concentration must be > 0; got -0.5"),
    (lambda: D.Pareto(1.0, 0.0), r"Pareto: argument alpha must be > 0; got 0"),
    (lambda: D.VonMises(0.0, -1.0), r"VonMises: argument concentration must be > 0; got -1"),
    (lambda: D.Dirichlet([[1.0, 0.0], [1.0, 2.0]]), r"Dirichlet: argument concentration must be > 0; got \[1, 0\] "
                                                    r"at \(0,\)"),
    (lambda: D.Dirichlet(2.0), r"Dirichlet: concentration needs at least one axis"),
    (lambda: D.RelaxedBernoulli(0.5, probs=1.5), r"LogitRelaxedBernoulli: argument probs must be in \[0, 1\]"),
    (lambda: D.RelaxedBernoulli(0.5), r"LogitRelaxedBernoulli: give exactly one of probs= and logits="),
])
def test_bad_parameters(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


@pytest.mark.parametrize("call,match", [
    (lambda: D.HalfNormal(1.0).log_prob([1.0, -0.5]), r"HalfNormal.log_prob: value must be >= 0 .*-0.5 at \(1,\)"),
    (lambda: D.HalfCauchy(1.0).cdf(-1.0), r"HalfCauchy.cdf: value must be >= 0"),
    (lambda: D.Weibull(1.0, 2.0).log_prob(0.0), r"Weibull.log_prob: value must be > 0"),
    (lambda: D.Pareto(2.0, 3.0).log_prob([3.0, 1.5]), r"Pareto.log_prob: value must be >= scale .*1.5 at \(1,\)"),
    (lambda: D.Gumbel(0.0, 1.0).icdf(1.5), r"Gumbel.icdf: value must be in \[0, 1\]"),
    (lambda: D.Dirichlet(np.ones(3)).log_prob([0.5, 0.6, 0.1]), r"Dirichlet.log_prob: value must be a probability "
                                                                r"vector"),
    (lambda: D.RelaxedBernoulli(0.5, probs=0.3).log_prob(1.5), r"RelaxedBernoulli.log_prob: value must be in \[0, 1\]"),
])
def test_values_outside_the_support(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_von_mises_has_no_rsample_and_student_t_no_cdf():
    with pytest.raises(NotImplementedError, match="VonMises has no reparameterized sample"):
        D.VonMises(0.0, 1.0).rsample()
    with pytest.raises(NotImplementedError, match="StudentT.cdf is not implemented"):
        D.StudentT(3.0).cdf(0.5)


@pytest.mark.parametrize("name", ["HalfNormal", "HalfCauchy"])
def test_half_line_log_prob_is_minus_inf_below_zero_without_validation(name):
    import torch

    x = np.array([-1.0, 0.0, 1.5])
    ours = getattr(D, name)(np.array(1.3), validate_args=False)
    theirs = getattr(TD, name)(torch.tensor(1.3, dtype=torch.float64), validate_args=False)
    np.testing.assert_allclose(ours.log_prob(x).numpy(), theirs.log_prob(_t(x)).numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.cdf(x).numpy(), theirs.cdf(_t(x)).numpy(), rtol=1e-12)
