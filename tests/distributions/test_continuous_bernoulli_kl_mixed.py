"""ContinuousBernoulli against torch.distributions in float64 (values and gradients, inside and
outside the Taylor band around 1/2), its draws and argument checks; and the mixed-family KL
pairs (and the continuous Bernoulli's) against torch.distributions.kl_divergence, their
infinite cases and a Monte Carlo check."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributions as TD
import torch.distributions.kl as TKL

import lamina
import lamina.distributions as D
from helpers import check_gradients, compare_with_torch, positive, randn
from lamina.distributions.kl import _REGISTRY


def uniform(low, high, *shape, seed=0):
    return np.random.default_rng(seed).uniform(low, high, shape)


# -- ContinuousBernoulli ------------------------------------------------------------------------
PROBS = np.array([0.03, 0.2, 0.4995, 0.5, 0.5004, 0.66, 0.93])      # three inside the band (0.499, 0.501]
VALUE = uniform(0.02, 0.98, 2, 7, seed=1)
METHODS = ("log_prob", "cdf", "icdf", "entropy", "mean", "variance", "stddev")


def _family(lib, kind):
    if kind == "probs":
        return lambda p: lib.ContinuousBernoulli(probs=p)
    return lambda z: lib.ContinuousBernoulli(logits=z)


def _parameters(kind):
    return PROBS if kind == "probs" else np.log(PROBS) - np.log1p(-PROBS)


def _method(make, method):
    if method in ("log_prob", "cdf", "icdf"):
        return lambda param, value: getattr(make(param), method)(value)
    return lambda param: (lambda a: a() if callable(a) else a)(getattr(make(param), method))


def _arrays(kind, method):
    return [_parameters(kind), VALUE] if method in ("log_prob", "cdf", "icdf") else [_parameters(kind)]


@pytest.mark.parametrize("kind", ["probs", "logits"])
@pytest.mark.parametrize("method", METHODS)
def test_continuous_bernoulli_matches_torch(kind, method):
    compare_with_torch(_method(_family(D, kind), method), _method(_family(TD, kind), method), *_arrays(kind, method),
                       dtype=np.float64)


@pytest.mark.parametrize("kind", ["probs", "logits"])
@pytest.mark.parametrize("method", ("log_prob", "cdf", "icdf", "entropy", "mean", "variance"))
def test_continuous_bernoulli_gradcheck(kind, method):
    assert check_gradients(_method(_family(D, kind), method), *_arrays(kind, method))


def test_continuous_bernoulli_rsample_is_the_icdf_of_uniform_noise():
    def draw(p):
        lamina.manual_seed(3)
        return D.ContinuousBernoulli(probs=p).rsample((4,))

    assert check_gradients(draw, PROBS)
    lamina.manual_seed(3)
    u = lamina.backend.rng().random((4, 7))
    np.testing.assert_allclose(draw(PROBS).numpy(), D.ContinuousBernoulli(probs=PROBS).icdf(u).numpy(), rtol=1e-12)


def test_continuous_bernoulli_draws_have_its_mean_and_variance():
    d = D.ContinuousBernoulli(probs=np.array([0.1, 0.5, 0.8]))
    lamina.manual_seed(0)
    draws = d.sample((50_000,)).numpy()
    assert draws.min() >= 0.0 and draws.max() <= 1.0
    mean, variance = d.mean.numpy(), d.variance.numpy()
    assert np.all(np.abs(draws.mean(0) - mean) < 5 * np.sqrt(variance / len(draws))), (draws.mean(0), mean)
    np.testing.assert_allclose(draws.var(0), variance, rtol=0.05)


def test_continuous_bernoulli_shapes_and_checks():
    d = D.ContinuousBernoulli(logits=randn(3))
    assert d.batch_shape == (3,) and d.expand((2, 3)).batch_shape == (2, 3)
    np.testing.assert_allclose(d.expand((2, 3)).mean.numpy(), np.broadcast_to(d.mean.numpy(), (2, 3)))
    assert D.ContinuousBernoulli(probs=0.3).dtype == np.float32 and d.has_rsample
    with pytest.raises(ValueError, match="ContinuousBernoulli: argument probs must be"):
        D.ContinuousBernoulli(probs=np.array([0.2, 1.5]))
    with pytest.raises(ValueError, match="exactly one of probs= and logits="):
        D.ContinuousBernoulli(probs=0.3, logits=0.1)
    with pytest.raises(ValueError, match=r"ContinuousBernoulli.log_prob: value must be in"):
        d.log_prob(np.array([0.5, 1.2, 0.1]))


# -- mixed KL pairs -----------------------------------------------------------------------------
def _cb(lib):
    return lambda p: lib.ContinuousBernoulli(probs=p)


def _family_of(name):
    return (lambda lib: _cb(lib)) if name == "ContinuousBernoulli" else (lambda lib: getattr(lib, name))


UNIT = uniform(0.05, 0.95, 3, seed=4)
PARAMETERS = {   # name: (p's parameters, q's parameters), each (3,)
    "Normal": [randn(3), positive(3, seed=1)],
    "Laplace": [randn(3, seed=2), positive(3, seed=3)],
    "Exponential": [positive(3, seed=5)],
    "Gamma": [positive(3, seed=6), positive(3, seed=7)],
    "Beta": [positive(3, seed=8), positive(3, seed=9)],
    "Bernoulli": [uniform(0.1, 0.9, 3, seed=10)],
    "Poisson": [positive(3, seed=11)],
    "ContinuousBernoulli": [np.array([0.2, 0.4996, 0.8])],
}
# a uniform p inside (0, 1) (for beta and continuous Bernoulli q), or on positive values, and a
# uniform q covering [0, 1]
UNIFORM_P = {"Beta": [uniform(0.05, 0.3, 3), uniform(0.5, 0.95, 3, seed=1)],
             "ContinuousBernoulli": [uniform(0.05, 0.3, 3), uniform(0.5, 0.95, 3, seed=1)]}
UNIFORM_P_DEFAULT = [positive(3, low=0.2, high=1.0), positive(3, seed=1, low=1.5, high=3.0)]
UNIFORM_Q = [uniform(-1.0, -0.1, 3, seed=2), uniform(1.1, 2.0, 3, seed=3)]
FINITE = [
    ("Bernoulli", "Poisson"), ("Beta", "Exponential"), ("Beta", "Gamma"), ("Beta", "Normal"), ("Beta", "Uniform"),
    ("Exponential", "Normal"), ("Gamma", "Normal"), ("Laplace", "Normal"), ("Normal", "Laplace"),
    ("Uniform", "Beta"), ("Uniform", "Exponential"), ("Uniform", "Gamma"), ("Uniform", "Normal"),
    ("ContinuousBernoulli", "ContinuousBernoulli"), ("Beta", "ContinuousBernoulli"),
    ("ContinuousBernoulli", "Exponential"), ("ContinuousBernoulli", "Normal"), ("ContinuousBernoulli", "Uniform"),
    ("Uniform", "ContinuousBernoulli"),
]
RTOL = {pair: 1e-8 for pair in FINITE if pair[0] == "Beta"}     # torch's trigamma (in dH/da) is off by ~5e-10


def _case(p_name, q_name):
    p = UNIFORM_P.get(q_name, UNIFORM_P_DEFAULT) if p_name == "Uniform" else PARAMETERS[p_name]
    q = UNIFORM_Q if q_name == "Uniform" else [a[::-1].copy() for a in PARAMETERS[q_name]]
    n = len(p)

    def kl(lib):
        return lambda *a: lib.kl_divergence(_family_of(p_name)(lib)(*a[:n]), _family_of(q_name)(lib)(*a[n:]))

    return kl(D), kl(TD), [*p, *q]


@pytest.mark.parametrize("p_name, q_name", FINITE, ids=[f"{p}-{q}" for p, q in FINITE])
def test_mixed_kl_matches_torch(p_name, q_name):
    ours, theirs, arrays = _case(p_name, q_name)
    compare_with_torch(ours, theirs, *arrays, dtype=np.float64, rtol=RTOL.get((p_name, q_name), 1e-10))


@pytest.mark.parametrize("p_name, q_name", FINITE, ids=[f"{p}-{q}" for p, q in FINITE])
def test_mixed_kl_gradcheck(p_name, q_name):
    ours, _, arrays = _case(p_name, q_name)
    assert check_gradients(ours, *arrays)


def test_every_torch_pair_between_lamina_families_is_registered():
    ours = {name for name in D.__all__ if isinstance(getattr(D, name), type)}
    for type_p, type_q in TKL._KL_REGISTRY:
        if type_p.__name__ in ours and type_q.__name__ in ours:
            assert (getattr(D, type_p.__name__), getattr(D, type_q.__name__)) in _REGISTRY, (type_p, type_q)


def _simple(name, lib):
    params = {"Uniform": (0.2, 0.7), "Pareto": (1.0, 2.0), "ContinuousBernoulli": (0.3,)}
    params = params.get(name, tuple(a[0] for a in PARAMETERS.get(name, [np.ones(1), np.ones(1)])))
    if lib is TD:
        params = tuple(torch.tensor(float(v), dtype=torch.float64) for v in params)
    return _family_of(name)(lib)(*params)


INFINITE = [(p, q) for (p, q) in ((tp.__name__, tq.__name__) for tp, tq in TKL._KL_REGISTRY)
            if TKL._KL_REGISTRY[getattr(TD, p), getattr(TD, q)].__name__.endswith("_infinity")
            and p in D.__all__ and q in D.__all__]


def test_the_infinite_pairs_follow_torch():
    assert len(INFINITE) >= 25
    for p_name, q_name in INFINITE:
        ours = D.kl_divergence(_simple(p_name, D).expand((2,)), _simple(q_name, D))
        assert ours.shape == (2,) and np.isinf(ours.numpy()).all(), (p_name, q_name)
        assert np.isinf(TD.kl_divergence(_simple(p_name, TD), _simple(q_name, TD)).numpy()).all()


def test_support_mismatches_give_infinity_entrywise():
    cases = [
        (D.Beta(2.0, 3.0), D.Uniform(np.array([-0.5, 0.1]), np.array([1.5, 1.5])), [False, True]),
        (D.Uniform(np.array([0.1, -0.1]), 0.9), D.Beta(2.0, 3.0), [False, True]),
        (D.Uniform(np.array([0.1, 0.4]), np.array([0.9, 1.3])), D.ContinuousBernoulli(probs=0.3), [False, True]),
        (D.ContinuousBernoulli(probs=0.3), D.Uniform(np.array([-0.1, -0.1]), np.array([1.1, 0.9])), [False, True]),
        (D.Uniform(np.array([-1.0, 1.0]), 2.0), D.Exponential(1.5), [True, False]),
        (D.Uniform(np.array([1.0, -1.0]), 2.0), D.Gamma(2.0, 1.5), [False, True]),
    ]
    for p, q, infinite in cases:
        np.testing.assert_array_equal(np.isinf(D.kl_divergence(p, q).numpy()), infinite, err_msg=repr((p, q)))


def test_unit_interval_boundaries_are_finite():
    # q = U(0, 1) covers the continuous Bernoulli's support: KL is -H(p) (PyTorch gives +inf on the boundary)
    p = D.ContinuousBernoulli(probs=np.array([0.2, 0.7]))
    np.testing.assert_allclose(D.kl_divergence(p, D.Uniform(0.0, 1.0)).numpy(), -p.entropy().numpy())
    assert np.isfinite(D.kl_divergence(D.Uniform(0.0, 1.0), p).numpy()).all()


def test_kl_is_a_monte_carlo_average_of_the_log_ratio():
    pairs = [(D.ContinuousBernoulli(probs=np.array([0.2, 0.85])), D.Normal(np.array([0.3, 1.0]), 0.7)),
             (D.Laplace(np.array([0.3, -1.0]), np.array([1.2, 0.5])), D.Normal(0.0, np.array([1.0, 2.0])))]
    lamina.manual_seed(0)
    for p, q in pairs:
        x = p.sample((100_000,))
        ratio = (p.log_prob(x) - q.log_prob(x)).numpy().astype(np.float64)
        estimate, error = ratio.mean(0), ratio.std(0) / np.sqrt(len(ratio))
        assert np.all(np.abs(D.kl_divergence(p, q).numpy() - estimate) < 5 * error), (p, q)
