"""Every distribution against torch.distributions in float64: log_prob, cdf, icdf, entropy,
mean, variance and stddev, with gradients with respect to the parameters and the value."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributions as TD

import lamina.distributions as D
from helpers import check_gradients, compare_with_torch, positive, randn


def uniform(low, high, *shape, seed=0):
    return np.random.default_rng(seed).uniform(low, high, shape)


def simplex(*shape, seed=0):
    p = positive(*shape, seed=seed, low=0.1, high=1.0)
    return p / p.sum(-1, keepdims=True)


def one_hot(index, k):
    return np.eye(k)[index]


LOW = randn(3, seed=5)
HIGH = LOW + positive(3, seed=6)
PROBS = simplex(3, 4)

# name: (lamina constructor, torch constructor, parameters, value, probabilities for icdf, methods)
ALL = ("log_prob", "cdf", "icdf", "entropy", "mean", "variance", "stddev")
CASES = {
    "normal": (D.Normal, TD.Normal, [randn(3, 1), positive(1, 4, seed=1)], randn(2, 3, 4, seed=2),
               uniform(0.05, 0.95, 3, 4), ALL),
    "lognormal": (D.LogNormal, TD.LogNormal, [randn(3), positive(3, seed=1, low=0.3, high=1.0)],
                  positive(2, 3, seed=2, low=0.2, high=4.0), uniform(0.05, 0.95, 3), ALL),
    "laplace": (D.Laplace, TD.Laplace, [randn(3), positive(3, seed=1)], randn(2, 3, seed=2),
                uniform(0.05, 0.95, 3), ALL),
    "uniform": (D.Uniform, TD.Uniform, [LOW, HIGH], LOW + uniform(0.1, 0.9, 2, 3) * (HIGH - LOW),
                uniform(0.05, 0.95, 3), ALL),
    "exponential": (D.Exponential, TD.Exponential, [positive(3)], positive(2, 3, seed=2, low=0.1, high=3.0),
                    uniform(0.05, 0.95, 3), ALL),
    "gamma": (D.Gamma, TD.Gamma, [positive(3, low=0.5, high=3.0), positive(3, seed=1)],
              positive(2, 3, seed=2, low=0.1, high=3.0), None, ("log_prob", "entropy", "mean", "variance", "stddev")),
    "beta": (D.Beta, TD.Beta, [positive(3, low=0.5, high=3.0), positive(3, seed=1, low=0.5, high=3.0)],
             uniform(0.1, 0.9, 2, 3), None, ("log_prob", "entropy", "mean", "variance", "stddev")),
    "bernoulli_probs": (lambda p: D.Bernoulli(probs=p), lambda p: TD.Bernoulli(probs=p), [uniform(0.1, 0.9, 3, 2)],
                        np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]]), None,
                        ("log_prob", "entropy", "mean", "variance", "stddev")),
    "bernoulli_logits": (lambda z: D.Bernoulli(logits=z), lambda z: TD.Bernoulli(logits=z), [randn(3, 2, scale=2.0)],
                         np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), None,
                         ("log_prob", "entropy", "mean", "variance")),
    "categorical_probs": (lambda p: D.Categorical(probs=p), lambda p: TD.Categorical(probs=p), [PROBS],
                          np.array([[0, 3, 1], [2, 2, 0]]), None, ("log_prob", "entropy")),
    "categorical_logits": (lambda z: D.Categorical(logits=z), lambda z: TD.Categorical(logits=z), [randn(3, 4)],
                           np.array([3, 0, 1]), None, ("log_prob", "entropy")),
    "one_hot_categorical": (lambda p: D.OneHotCategorical(probs=p), lambda p: TD.OneHotCategorical(probs=p), [PROBS],
                            one_hot([[1, 3, 0], [2, 0, 0]], 4), None, ("log_prob", "entropy", "mean", "variance")),
    "poisson": (D.Poisson, TD.Poisson, [positive(3, low=0.5, high=4.0)], np.array([[0.0, 2.0, 5.0], [1.0, 0.0, 3.0]]),
                None, ("log_prob", "mean", "variance", "stddev")),
    "relaxed_one_hot": (lambda t, z: D.RelaxedOneHotCategorical(t, logits=z),
                        lambda t, z: TD.RelaxedOneHotCategorical(t, logits=z), [np.array(0.7), randn(3, 4)],
                        simplex(2, 3, 4, seed=3), None, ("log_prob",)),
    "independent_normal": (lambda m, s: D.Independent(D.Normal(m, s), 1),
                           lambda m, s: TD.Independent(TD.Normal(m, s), 1), [randn(3, 4), positive(3, 4, seed=1)],
                           randn(2, 3, 4, seed=2), None, ("log_prob", "entropy", "mean", "variance")),
    "mixture_normal": (lambda z, m, s: D.MixtureSameFamily(D.Categorical(logits=z), D.Normal(m, s)),
                       lambda z, m, s: TD.MixtureSameFamily(TD.Categorical(logits=z), TD.Normal(m, s)),
                       [randn(2, 3), randn(2, 3, seed=1), positive(2, 3, seed=2)], randn(4, 2, seed=3), None,
                       ("log_prob", "cdf", "mean", "variance")),
    "mixture_independent": (lambda z, m, s: D.MixtureSameFamily(D.Categorical(logits=z),
                                                                D.Independent(D.Normal(m, s), 1)),
                            lambda z, m, s: TD.MixtureSameFamily(TD.Categorical(logits=z),
                                                                 TD.Independent(TD.Normal(m, s), 1)),
                            [randn(3), randn(3, 2, seed=1), positive(3, 2, seed=2)], randn(4, 2, seed=3), None,
                            ("log_prob", "mean", "variance")),
}

# torch's trigamma (digamma's derivative, in the entropies' gradients) is off by up to 5e-10 relatively
RTOL = {"gamma": 1e-8, "beta": 1e-8}
PAIRS = [(name, method) for name, case in CASES.items() for method in case[5]]
DIFFERENTIABLE_VALUE = {"normal", "lognormal", "laplace", "exponential", "gamma", "beta", "relaxed_one_hot",
                        "independent_normal", "mixture_normal", "mixture_independent"}


def _call(dist, method, value=None):
    attribute = getattr(dist, method)
    return attribute(value) if value is not None else (attribute() if callable(attribute) else attribute)


def _inputs(name, method):
    """The functions of arrays (lamina's and torch's) and the arrays, for one method."""
    ours, theirs, params, value, probs, _ = CASES[name]
    n = len(params)
    if method in ("log_prob", "cdf", "icdf"):
        arg = probs if method == "icdf" else value
        grads = [True] * n + [method == "icdf" or name in DIFFERENTIABLE_VALUE]
        if name == "gamma" and method == "cdf":
            grads[0] = False
        return (lambda *a: _call(ours(*a[:n]), method, a[n]), lambda *a: _call(theirs(*a[:n]), method, a[n]),
                [*params, arg], grads)
    return lambda *a: _call(ours(*a), method), lambda *a: _call(theirs(*a), method), list(params), True


@pytest.mark.parametrize("name,method", PAIRS)
def test_matches_torch(name, method):
    ours, theirs, arrays, grads = _inputs(name, method)
    compare_with_torch(ours, theirs, *arrays, dtype=np.float64, grad=grads, rtol=RTOL.get(name, 1e-10))


@pytest.mark.parametrize("name,method", [(n, m) for n, m in PAIRS if m in ("log_prob", "entropy", "cdf")])
def test_gradcheck(name, method):
    ours, _, arrays, grads = _inputs(name, method)
    D.set_default_validate_args(False)     # a probability vector moved by a difference step leaves the simplex
    try:
        assert check_gradients(ours, *arrays, grad=grads)
    finally:
        D.set_default_validate_args(True)


def test_gamma_cdf_matches_torch():
    a, b, x = positive(3, low=0.5, high=3.0), positive(3, seed=1), positive(2, 3, seed=2, low=0.1, high=3.0)
    compare_with_torch(lambda r, v: D.Gamma(a, r).cdf(v), lambda r, v: TD.Gamma(torch.tensor(a), r).cdf(v), b, x,
                       dtype=np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float32_and_float64_parameters_keep_their_dtype(dtype):
    import lamina

    loc = lamina.tensor(randn(3), dtype=dtype, requires_grad=True)
    d = D.Normal(loc, 1.5)
    assert d.log_prob(np.zeros(3)).dtype == dtype and d.sample((2,)).dtype == dtype and d.entropy().dtype == dtype
    assert D.Categorical(logits=loc).entropy().dtype == dtype


def test_shapes_follow_torch():
    d = D.Normal(np.zeros((3, 1)), np.ones((1, 4)))
    assert d.batch_shape == (3, 4) and d.event_shape == ()
    assert d.sample((5, 2)).shape == (5, 2, 3, 4) and d.sample(7).shape == (7, 3, 4)
    ind = D.Independent(d, 1)
    assert ind.batch_shape == (3,) and ind.event_shape == (4,) and ind.log_prob(np.zeros((3, 4))).shape == (3,)
    cat = D.Categorical(probs=PROBS)
    assert cat.batch_shape == (3,) and cat.sample((2,)).shape == (2, 3) and cat.sample().dtype == np.int64
    hot = D.OneHotCategorical(probs=PROBS)
    assert hot.event_shape == (4,) and hot.sample((2,)).shape == (2, 3, 4)
    mix = D.MixtureSameFamily(D.Categorical(logits=randn(2, 3)), D.Normal(randn(2, 3), positive(2, 3)))
    assert mix.batch_shape == (2,) and mix.sample((5,)).shape == (5, 2)
