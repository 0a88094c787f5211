"""Binomial, Geometric, NegativeBinomial and Multinomial against torch.distributions in float64
(values and gradients), their draws and argument checks; enumerate_support and expand against
torch's."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch
import torch.distributions as TD

import lamina
import lamina.distributions as D
from helpers import check_gradients, compare_with_torch, positive, randn
from lamina.errors import ShapeError


def uniform(low, high, *shape, seed=0):
    return np.random.default_rng(seed).uniform(low, high, shape)


def simplex(*shape, seed=0):
    p = positive(*shape, seed=seed, low=0.1, high=1.0)
    return p / p.sum(-1, keepdims=True)


COUNTS = np.array([[0.0, 3.0, 7.0], [5.0, 1.0, 7.0]])
COUNT_VECTORS = np.array([[[2.0, 0.0, 3.0, 1.0], [0.0, 6.0, 0.0, 0.0]], [[1.0, 1.0, 1.0, 3.0], [4.0, 0.0, 2.0, 0.0]]])
MOMENTS = ("log_prob", "entropy", "mean", "variance")
# name: (lamina constructor, torch constructor, parameters, value, methods)
CASES = {
    "binomial_probs": (lambda p: D.Binomial(7, probs=p), lambda p: TD.Binomial(7, probs=p), [uniform(0.1, 0.9, 3)],
                       COUNTS, MOMENTS),
    "binomial_logits": (lambda z: D.Binomial(7.0, logits=z), lambda z: TD.Binomial(7.0, logits=z), [randn(3)],
                        COUNTS, MOMENTS),
    "binomial_counts": (lambda p: D.Binomial(np.array([7.0, 9.0, 12.0]), probs=p),
                        lambda p: TD.Binomial(torch.tensor([7.0, 9.0, 12.0], dtype=torch.float64), probs=p),
                        [uniform(0.1, 0.9, 3)], COUNTS, ("log_prob", "mean", "variance")),
    "geometric_probs": (lambda p: D.Geometric(probs=p), lambda p: TD.Geometric(probs=p), [uniform(0.1, 0.9, 3)],
                        COUNTS, MOMENTS),
    "geometric_logits": (lambda z: D.Geometric(logits=z), lambda z: TD.Geometric(logits=z), [randn(3)], COUNTS,
                         MOMENTS),
    "negative_binomial_probs": (lambda r, p: D.NegativeBinomial(r, probs=p),
                                lambda r, p: TD.NegativeBinomial(r, probs=p),
                                [positive(3, low=0.5, high=4.0), uniform(0.1, 0.9, 3)], COUNTS,
                                ("log_prob", "mean", "variance")),
    "negative_binomial_logits": (lambda r, z: D.NegativeBinomial(r, logits=z),
                                 lambda r, z: TD.NegativeBinomial(r, logits=z), [positive(3, low=0.5, high=4.0),
                                                                                randn(3)], COUNTS,
                                 ("log_prob", "mean", "variance")),
    "multinomial_probs": (lambda p: D.Multinomial(6, probs=p), lambda p: TD.Multinomial(6, probs=p),
                          [simplex(2, 4)], COUNT_VECTORS, MOMENTS),
    "multinomial_logits": (lambda z: D.Multinomial(6, logits=z), lambda z: TD.Multinomial(6, logits=z), [randn(2, 4)],
                           COUNT_VECTORS, MOMENTS),
}
RTOL = {"negative_binomial_probs": 1e-8, "negative_binomial_logits": 1e-8}   # torch's digamma in lgamma's gradient
# torch's Multinomial.entropy takes log n! in float32 (off by ~8e-8); test_multinomial_entropy_is_exact checks ours
RTOL_OF = {("multinomial_probs", "entropy"): 1e-7, ("multinomial_logits", "entropy"): 1e-7}
PAIRS = [(name, method) for name, case in CASES.items() for method in case[4]]


def _call(dist, method, value=None):
    attribute = getattr(dist, method)
    return attribute(value) if value is not None else (attribute() if callable(attribute) else attribute)


def _inputs(name, method):
    ours, theirs, params, value, _ = CASES[name]
    n = len(params)
    if method == "log_prob":
        return (lambda *a: ours(*a[:n]).log_prob(a[n]), lambda *a: theirs(*a[:n]).log_prob(a[n]), [*params, value],
                [True] * n + [False])
    return lambda *a: _call(ours(*a), method), lambda *a: _call(theirs(*a), method), list(params), True


@pytest.mark.parametrize("name,method", PAIRS)
def test_matches_torch(name, method):
    ours, theirs, arrays, grads = _inputs(name, method)
    rtol = RTOL_OF.get((name, method), RTOL.get(name, 1e-10))
    compare_with_torch(ours, theirs, *arrays, dtype=np.float64, grad=grads, rtol=rtol)


def test_multinomial_entropy_is_exact():
    probs = simplex(3, 4)
    expected = [scipy.stats.multinomial(6, p).entropy() for p in probs]
    ours = D.Multinomial(6, probs=lamina.tensor(probs, dtype=np.float64)).entropy()
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("probs", [[0.0, 1.0], [1.0, 0.0, 0.0], [[0.3, 0.7], [0.0, 1.0]]])
def test_multinomial_entropy_with_a_certain_category_is_finite(probs):
    probs = np.array(probs)
    ours = D.Multinomial(4, probs=lamina.tensor(probs, dtype=np.float64)).entropy().numpy()
    theirs = TD.Multinomial(4, probs=torch.tensor(probs)).entropy().numpy()
    assert np.isfinite(ours).all()
    np.testing.assert_allclose(ours, theirs, atol=1e-7)


@pytest.mark.parametrize("name,method", [(n, m) for n, m in PAIRS if m in ("log_prob", "entropy")])
def test_gradcheck(name, method):
    ours, _, arrays, grads = _inputs(name, method)
    D.set_default_validate_args(False)     # a difference step moves a probability vector off the simplex
    try:
        assert check_gradients(ours, *arrays, grad=grads)
    finally:
        D.set_default_validate_args(True)


N = 100_000
STATISTICS = {
    "binomial": (lambda: D.Binomial(np.array([10.0, 3.0]), probs=[0.3, 0.8]), [3.0, 2.4], [2.1, 0.48]),
    "geometric": (lambda: D.Geometric(probs=[0.3, 0.8]), [7 / 3, 0.25], [0.7 / 0.09, 0.2 / 0.64]),
    "negative_binomial": (lambda: D.NegativeBinomial([2.5, 6.0], probs=[0.4, 0.2]), [2.5 * 0.4 / 0.6, 6.0 * 0.25],
                          [2.5 * 0.4 / 0.36, 6.0 * 0.2 / 0.64]),
    "multinomial": (lambda: D.Multinomial(5, probs=[[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]]),
                    5 * np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]]),
                    5 * np.array([[0.16, 0.21, 0.25], [0.24, 0.21, 0.09]])),
}


@pytest.mark.parametrize("name", list(STATISTICS))
def test_sample_mean_and_variance(name):
    make, mean, variance = STATISTICS[name]
    d = make()
    lamina.manual_seed(0)
    draws = d.sample((N,)).numpy().astype(np.float64)
    assert draws.shape == (N,) + d.batch_shape + d.event_shape
    assert np.all(draws == np.floor(draws)) and np.all(draws >= 0)
    mean, variance = np.asarray(mean), np.asarray(variance)
    assert np.all(np.abs(draws.mean(0) - mean) < 5 * np.sqrt(variance / N)), (draws.mean(0), mean)
    np.testing.assert_allclose(draws.var(0), variance, rtol=0.05)
    np.testing.assert_allclose(d.mean.numpy(), mean, rtol=1e-6)          # float32 parameters
    np.testing.assert_allclose(d.variance.numpy(), variance, rtol=1e-6)


def test_multinomial_draws_sum_to_the_total_count():
    lamina.manual_seed(0)
    draws = D.Multinomial(7, logits=randn(3, 4)).sample((50,)).numpy()
    assert draws.shape == (50, 3, 4) and np.all(draws.sum(-1) == 7)


# -- enumerate_support ----------------------------------------------------------------------
SUPPORTS = {
    "bernoulli": (lambda: D.Bernoulli(probs=uniform(0.1, 0.9, 2, 3)), lambda: TD.Bernoulli(torch.rand(2, 3))),
    "categorical": (lambda: D.Categorical(probs=simplex(3, 4)), lambda: TD.Categorical(torch.rand(3, 4))),
    "one_hot": (lambda: D.OneHotCategorical(probs=simplex(2, 5)), lambda: TD.OneHotCategorical(torch.rand(2, 5))),
    "binomial": (lambda: D.Binomial(4, probs=uniform(0.1, 0.9, 3)), lambda: TD.Binomial(4, torch.rand(3))),
}


@pytest.mark.parametrize("name", list(SUPPORTS))
@pytest.mark.parametrize("expand", [True, False])
def test_enumerate_support_matches_torch(name, expand):
    ours, theirs = SUPPORTS[name][0](), SUPPORTS[name][1]()
    assert ours.has_enumerate_support and theirs.has_enumerate_support
    np.testing.assert_array_equal(ours.enumerate_support(expand).numpy(), theirs.enumerate_support(expand).numpy())
    if expand:        # the log-probabilities of the whole support sum to 1
        total = np.exp(ours.log_prob(ours.enumerate_support()).numpy()).sum(0)
        np.testing.assert_allclose(total, 1.0, rtol=1e-6)


def test_enumerate_support_refuses_continuous_and_uneven_binomials():
    assert not D.Normal(0.0, 1.0).has_enumerate_support
    with pytest.raises(NotImplementedError, match="Normal has no enumerable support"):
        D.Normal(0.0, 1.0).enumerate_support()
    with pytest.raises(NotImplementedError, match=r"Binomial.entropy needs one total_count .* from 2 to 5"):
        D.Binomial(np.array([2.0, 5.0]), probs=0.5).entropy()


# -- expand ---------------------------------------------------------------------------------
EXPANDS = {
    "normal": (D.Normal, TD.Normal, [randn(3), positive(3)], randn(3, seed=2), (2, 3), "log_prob"),
    "student_t": (D.StudentT, TD.StudentT, [positive(1, low=3.0, high=5.0), randn(1), positive(1)], randn(4, seed=2),
                  (2, 4), "log_prob"),
    "dirichlet": (D.Dirichlet, TD.Dirichlet, [positive(1, 3)], simplex(2, 3), (2,), "log_prob"),
    "categorical": (lambda z: D.Categorical(logits=z), lambda z: TD.Categorical(logits=z), [randn(1, 4)],
                    np.array([1, 3]), (5, 2), "log_prob"),
    "binomial": (lambda p: D.Binomial(6, probs=p), lambda p: TD.Binomial(6, probs=p), [uniform(0.1, 0.9, 3)],
                 COUNTS[0] - 0.0, (2, 3), "entropy"),
    "independent": (lambda m, s: D.Independent(D.Normal(m, s), 1), lambda m, s: TD.Independent(TD.Normal(m, s), 1),
                    [randn(3), positive(3)], randn(3, seed=2), (4,), "log_prob"),
    "multinomial": (lambda z: D.Multinomial(6, logits=z), lambda z: TD.Multinomial(6, logits=z), [randn(4)],
                    COUNT_VECTORS[0], (2,), "log_prob"),
    # a batch of 3 vectors of 3 values, the covariance (3, 3) shared: only its batch axes are expanded
    "multivariate_normal": (lambda m: D.MultivariateNormal(m, covariance_matrix=np.eye(3) * 2.0),
                            lambda m: TD.MultivariateNormal(m, covariance_matrix=torch.eye(3, dtype=torch.float64) * 2),
                            [randn(3, 3)], randn(3, seed=2), (2, 3), "log_prob"),
}


@pytest.mark.parametrize("name", list(EXPANDS))
def test_expand_matches_torch(name):
    ours, theirs, params, value, shape, method = EXPANDS[name]
    n = len(params)

    def run(make, *a):
        d = make(*a[:n]).expand(shape)
        return d.log_prob(a[n]) if method == "log_prob" else d.entropy()

    out = compare_with_torch(lambda *a: run(ours, *a), lambda *a: run(theirs, *a), *params, value,
                             dtype=np.float64, grad=[True] * n + [False])
    assert out[0].shape == shape


def test_expand_keeps_the_family_and_rejects_shapes_that_do_not_broadcast():
    loc = lamina.tensor(randn(3), requires_grad=True, dtype=np.float64)
    d = D.Gumbel(loc, 1.0).expand((2, 3))
    assert isinstance(d, D.Gumbel) and d.batch_shape == (2, 3) and d.sample((4,)).shape == (4, 2, 3)
    d.mean.sum().backward()
    np.testing.assert_allclose(loc.grad, [2.0, 2.0, 2.0])
    normal = D.MultivariateNormal(randn(3, 3), covariance_matrix=np.eye(3)).expand((2, 3))
    assert normal.covariance_matrix.shape == (2, 3, 3, 3) and normal.scale_tril.shape == (2, 3, 3, 3)
    hot = D.OneHotCategorical(probs=simplex(4)).expand((3,))
    assert hot.batch_shape == (3,) and hot.event_shape == (4,) and hot.sample().shape == (3, 4)
    with pytest.raises(ShapeError, match=r"Normal.expand: batch_shape \(3,\) cannot be broadcast to \(2,\)"):
        D.Normal(np.zeros(3), 1.0).expand((2,))


# -- argument checks --------------------------------------------------------------------------
@pytest.mark.parametrize("make,match", [
    (lambda: D.Binomial(2.5, probs=0.5), r"Binomial: argument total_count must be a whole number >= 0; got 2.5"),
    (lambda: D.Binomial(3, probs=[0.5, 1.2]), r"Binomial: argument probs must be in \[0, 1\]; got 1.2 at \(1,\)"),
    (lambda: D.Binomial(3), r"Binomial: give exactly one of probs= and logits=, got neither"),
    (lambda: D.Geometric(probs=[0.5, 0.0]), r"Geometric: argument probs must be > 0; got 0 at \(1,\)"),
    (lambda: D.NegativeBinomial(-1.0, probs=0.5), r"NegativeBinomial: argument total_count must be >= 0; got -1"),
    (lambda: D.NegativeBinomial(2.0, probs=1.0), r"NegativeBinomial: argument probs must be in \[0, 1\); got 1"),
    (lambda: D.Multinomial(2.5, probs=[0.5, 0.5]), r"Multinomial: total_count must be a whole number >= 0"),
    (lambda: D.Multinomial(3, probs=[0.5, -0.6]), r"Categorical: argument probs must be a vector of weights >= 0"),
])
def test_bad_parameters(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


@pytest.mark.parametrize("call,match", [
    (lambda: D.Binomial(np.array([3.0, 5.0]), probs=0.5).log_prob([4.0, 4.0]),
     r"Binomial.log_prob: value must be a whole number in \[0, total_count\] .*got 4 at \(0,\)"),
    (lambda: D.Geometric(probs=0.5).log_prob(1.5), r"Geometric.log_prob: value must be a whole number >= 0"),
    (lambda: D.NegativeBinomial(2.0, probs=0.5).log_prob(-1.0), r"NegativeBinomial.log_prob: value must be a whole"),
    (lambda: D.Multinomial(3, probs=[0.5, 0.5]).log_prob([2.0, 2.0]),
     r"Multinomial.log_prob: value must be a vector of whole numbers >= 0 summing to at most 3"),
])
def test_values_outside_the_support(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("name", ["Categorical", "OneHotCategorical", "Multinomial", "RelaxedOneHotCategorical"])
def test_unnormalized_probs_are_normalized_as_torch(name):
    weights = np.array([[1.0, 2.0, 1.0], [0.0, 3.0, 1.0]])
    lead = {"Multinomial": (4,), "RelaxedOneHotCategorical": (0.5,)}.get(name, ())
    ours = getattr(D, name)(*lead, probs=lamina.tensor(weights))
    theirs = getattr(TD, name)(*lead, probs=torch.tensor(weights))
    np.testing.assert_allclose(ours.probs.numpy(), theirs.probs.numpy(), rtol=1e-12)
    if name != "RelaxedOneHotCategorical":
        np.testing.assert_allclose(ours.entropy().numpy(), theirs.entropy().numpy(), rtol=1e-9, atol=1e-7)
