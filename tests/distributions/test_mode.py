"""``Distribution.mode`` of every family against torch.distributions (values, dtypes, and the
gradient where torch's mode is differentiable), the families whose mode torch leaves undefined,
and the low-rank normal's precision matrix."""

import numpy as np
import pytest
import torch
import torch.distributions as TD

import lamina
import lamina.distributions as LD
from helpers import compare_with_torch


def t(*values):
    return np.array(values, dtype=np.float64)


DIFFERENTIABLE = {
    "Normal": (t(0.5, -1.0), t(1.0, 2.0)),
    "LogNormal": (t(0.5, -1.0), t(1.0, 0.3)),
    "Laplace": (t(0.5,), t(1.0,)),
    "Cauchy": (t(0.5,), t(2.0,)),
    "Gumbel": (t(0.5,), t(2.0,)),
    "StudentT": (t(3.0,), t(0.5,), t(2.0,)),
    "VonMises": (t(0.5,), t(2.0,)),
    "Gamma": (t(2.0, 0.5, 1.5), t(1.0, 3.0, 2.0)),
    "Chi2": (t(3.0, 1.0, 5.0),),
    "Beta": (t(2.0, 0.5, 0.4, 3.0, 1.5), t(3.0, 0.2, 0.9, 1.0, 0.7)),
    "Dirichlet": (np.array([[2.0, 3.0, 1.5], [0.5, 0.3, 0.9], [0.2, 1.5, 0.5]]),),
    "Weibull": (t(1.0, 2.0), t(2.0, 3.0)),
    "Pareto": (t(1.0, 2.0), t(2.0, 3.0)),
    "MultivariateNormal": (t(1.0, 2.0), np.array([[2.0, 0.5], [0.5, 1.0]])),
    "LowRankMultivariateNormal": (t(1.0, 2.0), np.array([[1.0], [0.5]]), t(1.0, 2.0)),
}


@pytest.mark.parametrize("name", sorted(DIFFERENTIABLE))
def test_mode_and_its_gradient(name):
    args = DIFFERENTIABLE[name]
    compare_with_torch(lambda *p: getattr(LD, name)(*p).mode, lambda *p: getattr(TD, name)(*p).mode, *args,
                       dtype=np.float64, rtol=1e-10, grad=name not in ("Dirichlet", "Beta"))


def test_dirichlet_and_beta_modes_with_concentrations_below_one():
    # where every alpha < 1 the density is unbounded at each vertex: torch (and lamina) return the first
    for name, args in (("Dirichlet", DIFFERENTIABLE["Dirichlet"]), ("Beta", DIFFERENTIABLE["Beta"])):
        ours = getattr(LD, name)(*(lamina.tensor(a, dtype=np.float64) for a in args)).mode.numpy()
        theirs = getattr(TD, name)(*(torch.tensor(a) for a in args)).mode.numpy()
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, err_msg=name)
    compare_with_torch(lambda c: LD.Dirichlet(c).mode, lambda c: TD.Dirichlet(c).mode, np.array([[2.0, 3.0, 1.5]]),
                       dtype=np.float64, rtol=1e-10)


def test_constant_modes():
    for name, args in (("HalfNormal", (t(1.0, 2.0),)), ("HalfCauchy", (t(1.0, 2.0),)), ("Exponential", (t(2.0, 0.5),)),
                       ("Uniform", (t(0.0,), t(1.0,))), ("Poisson", (t(2.5, 3.0, 0.2),))):
        ours = getattr(LD, name)(*(lamina.tensor(a, dtype=np.float64) for a in args)).mode
        theirs = getattr(TD, name)(*(torch.tensor(a) for a in args)).mode
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy(), err_msg=name)


@pytest.mark.parametrize("name, kwargs", [
    ("Bernoulli", {"probs": t(0.3, 0.5, 0.7)}),
    ("Categorical", {"probs": np.array([[0.2, 0.8], [0.5, 0.5]])}),
    ("OneHotCategorical", {"probs": np.array([[0.2, 0.8], [0.6, 0.4]])}),
    ("Geometric", {"probs": t(0.3, 0.9)}),
    ("Binomial", {"total_count": 5, "probs": t(0.3, 0.99, 0.0)}),
    ("NegativeBinomial", {"total_count": t(3.0, 0.5, 10.0), "probs": t(0.4, 0.3, 0.8)}),
])
def test_discrete_modes(name, kwargs):
    ours = getattr(LD, name)(**{k: lamina.tensor(v, dtype=np.float64) if isinstance(v, np.ndarray) else v
                                for k, v in kwargs.items()}).mode
    theirs = getattr(TD, name)(**{k: torch.tensor(v) if isinstance(v, np.ndarray) else v
                                  for k, v in kwargs.items()}).mode
    assert ours.dtype == theirs.numpy().dtype
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_independent_takes_its_base_mode():
    base = LD.Gamma(lamina.tensor(t(2.0, 3.0)), lamina.tensor(t(1.0, 2.0)))
    np.testing.assert_array_equal(LD.Independent(base, 1).mode.numpy(), base.mode.numpy())


@pytest.mark.parametrize("make", [lambda: LD.Multinomial(3, probs=lamina.tensor(t(0.2, 0.8))),
                                  lambda: LD.ContinuousBernoulli(probs=lamina.tensor(t(0.3,))),
                                  lambda: LD.RelaxedBernoulli(lamina.tensor(0.5), probs=lamina.tensor(t(0.3,)))])
def test_families_whose_mode_torch_leaves_undefined(make):
    distribution = make()
    with pytest.raises(NotImplementedError, match=type(distribution).__name__ + r".*mode"):
        distribution.mode  # noqa: B018


def test_low_rank_precision_matrix():
    rng = np.random.default_rng(0)
    loc, factor, diag = rng.standard_normal((2, 4)), rng.standard_normal((2, 4, 2)), rng.uniform(0.5, 2.0, (2, 4))
    compare_with_torch(lambda m, w, d: LD.LowRankMultivariateNormal(m, w, d).precision_matrix,
                       lambda m, w, d: TD.LowRankMultivariateNormal(m, w, d).precision_matrix, loc, factor, diag,
                       dtype=np.float64, rtol=1e-9, grad=[False, True, True])
    low_rank = LD.LowRankMultivariateNormal(lamina.tensor(loc), lamina.tensor(factor), lamina.tensor(diag))
    np.testing.assert_allclose(low_rank.precision_matrix.numpy() @ low_rank.covariance_matrix.numpy(),
                               np.broadcast_to(np.eye(4), (2, 4, 4)), atol=1e-4)
