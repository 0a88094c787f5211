"""kl_divergence for the newer families and mixed pairs against torch.distributions.kl_divergence
(values and gradients in both parameter sets), their infinite cases, and a Monte Carlo check."""

from __future__ import annotations

import numpy as np
import pytest
import torch.distributions as TD
import torch.distributions.transforms as TT

import lamina
import lamina.distributions as D
from helpers import check_gradients, compare_with_torch, positive, randn


def uniform(low, high, *shape, seed=0):
    return np.random.default_rng(seed).uniform(low, high, shape)


def _binomial(lib):
    return lambda p: lib.Binomial(5, probs=p)


def _transformed(lib, transforms):
    return lambda m, s: lib.TransformedDistribution(lib.Normal(m, s), transforms.ExpTransform())


# name: (lamina p family, torch p family, lamina q family, torch q family, p's parameters, q's parameters)
SAME = {
    "binomial": (_binomial, [uniform(0.1, 0.9, 3)], [uniform(0.1, 0.9, 3, seed=1)]),
    "geometric": (lambda lib: lambda p: lib.Geometric(probs=p), [uniform(0.1, 0.9, 3)], [uniform(0.1, 0.9, 3, seed=1)]),
    "cauchy": (lambda lib: lib.Cauchy, [randn(3), positive(3)], [randn(3, seed=1), positive(3, seed=2)]),
    "half_normal": (lambda lib: lib.HalfNormal, [positive(3)], [positive(3, seed=1)]),
    "gumbel": (lambda lib: lib.Gumbel, [randn(3), positive(3)], [randn(3, seed=1), positive(3, seed=2)]),
    "dirichlet": (lambda lib: lib.Dirichlet, [positive(2, 4)], [positive(2, 4, seed=1)]),
    "pareto": (lambda lib: lib.Pareto, [positive(3, low=1.0, high=2.0), positive(3, seed=1)],
               [positive(3, seed=2, low=0.2, high=0.9), positive(3, seed=3)]),
    "chi2": (lambda lib: lib.Chi2, [positive(3, low=1.0, high=4.0)], [positive(3, seed=1, low=1.0, high=4.0)]),
}
MIXED = {
    "exponential_gamma": (lambda lib: lib.Exponential, lambda lib: lib.Gamma, [positive(3)],
                          [positive(3, seed=1), positive(3, seed=2)]),
    "gamma_exponential": (lambda lib: lib.Gamma, lambda lib: lib.Exponential, [positive(3), positive(3, seed=1)],
                          [positive(3, seed=2)]),
    "exponential_gumbel": (lambda lib: lib.Exponential, lambda lib: lib.Gumbel, [positive(3)],
                           [randn(3, seed=1), positive(3, seed=2)]),
    "gamma_gumbel": (lambda lib: lib.Gamma, lambda lib: lib.Gumbel, [positive(3), positive(3, seed=1)],
                     [randn(3, seed=2), positive(3, seed=3)]),
    "normal_gumbel": (lambda lib: lib.Normal, lambda lib: lib.Gumbel, [randn(3), positive(3)],
                      [randn(3, seed=2), positive(3, seed=3)]),
    "uniform_gumbel": (lambda lib: lib.Uniform, lambda lib: lib.Gumbel, [randn(3), randn(3) + positive(3, seed=1)],
                       [randn(3, seed=2), positive(3, seed=3)]),
    "gumbel_normal": (lambda lib: lib.Gumbel, lambda lib: lib.Normal, [randn(3), positive(3)],
                      [randn(3, seed=2), positive(3, seed=3)]),
    "pareto_exponential": (lambda lib: lib.Pareto, lambda lib: lib.Exponential,
                           [positive(3), positive(3, seed=1, low=1.5, high=4.0)], [positive(3, seed=2)]),
    "pareto_gamma": (lambda lib: lib.Pareto, lambda lib: lib.Gamma,
                     [positive(3), positive(3, seed=1, low=1.5, high=4.0)], [positive(3, seed=2), positive(3, seed=3)]),
    "pareto_normal": (lambda lib: lib.Pareto, lambda lib: lib.Normal,
                      [positive(3), positive(3, seed=1, low=2.5, high=4.0)], [randn(3, seed=2), positive(3, seed=3)]),
    "uniform_pareto": (lambda lib: lib.Uniform, lambda lib: lib.Pareto, [positive(3, low=1.0, high=1.5),
                                                                         positive(3, seed=1, low=2.0, high=3.0)],
                       [positive(3, seed=2, low=0.2, high=0.9), positive(3, seed=3)]),
}
CASES = {name: (family, family, p, q) for name, (family, p, q) in SAME.items()} | MIXED
CASES["transformed"] = (lambda lib: _transformed(lib, lamina.distributions if lib is D else TT),
                        lambda lib: _transformed(lib, lamina.distributions if lib is D else TT),
                        [randn(3), positive(3)], [randn(3, seed=1), positive(3, seed=2)])
RTOL = {"dirichlet": 1e-8, "chi2": 1e-8, "gamma_gumbel": 1e-8, "gamma_exponential": 1e-8}   # torch's trigamma


def _kl(family_p, family_q, lib, n):
    return lambda *a: lib.kl_divergence(family_p(lib)(*a[:n]), family_q(lib)(*a[n:]))


@pytest.mark.parametrize("name", list(CASES))
def test_matches_torch(name):
    family_p, family_q, p, q = CASES[name]
    n = len(p)
    compare_with_torch(_kl(family_p, family_q, D, n), _kl(family_p, family_q, TD, n), *p, *q, dtype=np.float64,
                       rtol=RTOL.get(name, 1e-10))


@pytest.mark.parametrize("name", list(CASES))
def test_gradcheck(name):
    family_p, family_q, p, q = CASES[name]
    D.set_default_validate_args(False)     # a difference step moves probability vectors off the simplex
    try:
        assert check_gradients(_kl(family_p, family_q, D, len(p)), *p, *q)
    finally:
        D.set_default_validate_args(True)


def test_kl_is_a_monte_carlo_average_of_the_log_ratio():
    p, q = D.Gumbel(np.array([0.3, -1.0]), np.array([1.2, 0.5])), D.Normal(np.array([0.0, 0.5]), np.array([1.0, 2.0]))
    lamina.manual_seed(0)
    x = p.sample((200_000,))
    ratio = (p.log_prob(x) - q.log_prob(x)).numpy()
    estimate, error = ratio.mean(0), ratio.std(0) / np.sqrt(len(ratio))
    assert np.all(np.abs(D.kl_divergence(p, q).numpy() - estimate) < 5 * error)


def test_infinite_cases_follow_torch():
    cases = [
        (D.Pareto(np.array([1.0, 0.5]), 2.0), D.Pareto(np.array([0.8, 0.8]), 3.0), [False, True]),
        (D.Binomial(np.array([5.0, 6.0]), probs=0.3), D.Binomial(5.0, probs=0.6), [False, True]),
        (D.Pareto(1.0, np.array([0.8, 3.0])), D.Exponential(1.0), [True, False]),
        (D.Uniform(np.array([0.5, 1.5]), 3.0), D.Pareto(1.0, 2.0), [True, False]),
        (D.Gumbel(np.zeros(2), 1.0), D.Exponential(1.0), [True, True]),
        (D.Normal(np.zeros(2), 1.0), D.Pareto(1.0, 2.0), [True, True]),
        (D.Poisson(np.ones(2)), D.Binomial(3.0, probs=0.5), [True, True]),
    ]
    for p, q, infinite in cases:
        np.testing.assert_array_equal(np.isinf(D.kl_divergence(p, q).numpy()), infinite, err_msg=repr((p, q)))


def test_binomials_with_more_trials_in_q_are_refused():
    with pytest.raises(NotImplementedError, match=r"kl_divergence\(Binomial, Binomial\): q has more trials than p"):
        D.kl_divergence(D.Binomial(3.0, probs=0.5), D.Binomial(5.0, probs=0.5))
    with pytest.raises(NotImplementedError, match="only for equal transforms"):
        D.kl_divergence(D.TransformedDistribution(D.Normal(0.0, 1.0), D.ExpTransform()),
                        D.TransformedDistribution(D.Normal(0.0, 1.0), D.SigmoidTransform()))
