"""kl_divergence against torch.distributions.kl_divergence (values and gradients in both
parameter sets), the registry, and its error for an unknown pair."""

from __future__ import annotations

import numpy as np
import pytest
import torch.distributions as TD

import lamina
import lamina.distributions as D
from helpers import check_gradients, compare_with_torch, positive, randn


def simplex(*shape, seed=0):
    p = positive(*shape, seed=seed, low=0.1, high=1.0)
    return p / p.sum(-1, keepdims=True)


# name: (lamina family, torch family, p's parameters, q's parameters)
PAIRS = {
    "normal": (D.Normal, TD.Normal, [randn(3), positive(3)], [randn(3, seed=1), positive(3, seed=2)]),
    "lognormal": (D.LogNormal, TD.LogNormal, [randn(3), positive(3)], [randn(3, seed=1), positive(3, seed=2)]),
    "bernoulli": (lambda p: D.Bernoulli(probs=p), lambda p: TD.Bernoulli(probs=p),
                  [positive(3, low=0.1, high=0.9)], [positive(3, seed=1, low=0.1, high=0.9)]),
    "categorical": (lambda p: D.Categorical(probs=p), lambda p: TD.Categorical(probs=p),
                    [simplex(2, 4)], [simplex(2, 4, seed=1)]),
    "categorical_logits": (lambda z: D.Categorical(logits=z), lambda z: TD.Categorical(logits=z),
                           [randn(2, 4)], [randn(2, 4, seed=1)]),
    "one_hot": (lambda p: D.OneHotCategorical(probs=p), lambda p: TD.OneHotCategorical(probs=p),
                [simplex(2, 4)], [simplex(2, 4, seed=1)]),
    "uniform": (D.Uniform, TD.Uniform, [np.array([0.0, 1.0]), np.array([1.0, 2.0])],
                [np.array([-1.0, 0.5]), np.array([2.0, 3.0])]),
    "exponential": (D.Exponential, TD.Exponential, [positive(3)], [positive(3, seed=1)]),
    "laplace": (D.Laplace, TD.Laplace, [randn(3), positive(3)], [randn(3, seed=1), positive(3, seed=2)]),
    "gamma": (D.Gamma, TD.Gamma, [positive(3), positive(3, seed=1)], [positive(3, seed=2), positive(3, seed=3)]),
    "beta": (D.Beta, TD.Beta, [positive(3), positive(3, seed=1)], [positive(3, seed=2), positive(3, seed=3)]),
    "poisson": (D.Poisson, TD.Poisson, [positive(3)], [positive(3, seed=1)]),
    "independent": (lambda m, s: D.Independent(D.Normal(m, s), 1), lambda m, s: TD.Independent(TD.Normal(m, s), 1),
                    [randn(2, 3), positive(2, 3)], [randn(2, 3, seed=1), positive(2, 3, seed=2)]),
}
RTOL = {"gamma": 1e-8, "beta": 1e-8}     # torch's trigamma is off by up to 5e-10


def _kl(make, n):
    return lambda *a: D.kl_divergence(make(*a[:n]), make(*a[n:]))


@pytest.mark.parametrize("name", list(PAIRS))
def test_matches_torch(name):
    ours, theirs, p, q = PAIRS[name]
    n = len(p)
    compare_with_torch(_kl(ours, n), lambda *a: TD.kl_divergence(theirs(*a[:n]), theirs(*a[n:])), *p, *q,
                       dtype=np.float64, rtol=RTOL.get(name, 1e-10))


@pytest.mark.parametrize("name", list(PAIRS))
def test_gradcheck(name):
    ours, _, p, q = PAIRS[name]
    D.set_default_validate_args(False)     # a difference step moves probability vectors off the simplex
    try:
        assert check_gradients(_kl(ours, len(p)), *p, *q)
    finally:
        D.set_default_validate_args(True)


def test_kl_of_a_distribution_with_itself_is_zero():
    d = D.Gamma(positive(4), positive(4, seed=1))
    np.testing.assert_allclose(D.kl_divergence(d, d).numpy(), 0.0, atol=1e-6)


def test_disjoint_supports_give_infinity_as_torch():
    p, q = D.Uniform(0.0, 2.0), D.Uniform(0.5, 3.0)
    assert np.isinf(D.kl_divergence(p, q).item())
    zero_mass = D.kl_divergence(D.Categorical(probs=[0.5, 0.5, 0.0]), D.Categorical(probs=[0.0, 0.5, 0.5]))
    assert np.isinf(zero_mass.item())
    assert np.isfinite(D.kl_divergence(D.Categorical(probs=[0.5, 0.5, 0.0]),
                                       D.Categorical(probs=[0.2, 0.5, 0.3])).item())


def test_unknown_pair_names_both_types():
    with pytest.raises(NotImplementedError, match="p a Normal and q a Cauchy"):
        D.kl_divergence(D.Normal(0.0, 1.0), D.Cauchy(0.0, 1.0))


def test_register_kl_adds_a_pair_and_subclasses_inherit_it():
    class Shifted(D.Normal):
        pass

    @D.register_kl(D.Normal, D.Cauchy)
    def _normal_cauchy(p, q):
        return p.loc * 0.0 + 7.0

    try:
        assert D.kl_divergence(Shifted(0.0, 1.0), D.Cauchy(0.0, 1.0)).item() == 7.0
        # the closest registered pair wins: Normal/Normal, not a more general one
        assert D.kl_divergence(Shifted(0.0, 1.0), D.Normal(0.0, 1.0)).item() == pytest.approx(0.0)
    finally:
        from lamina.distributions import kl

        del kl._REGISTRY[D.Normal, D.Cauchy]
    with pytest.raises(TypeError, match="register_kl: expected Distribution subclasses"):
        D.register_kl(int, D.Normal)


def test_kl_gradient_reaches_both_parameter_sets():
    loc = lamina.tensor([0.3], requires_grad=True, dtype=np.float64)
    target = lamina.tensor([1.0], requires_grad=True, dtype=np.float64)
    D.kl_divergence(D.Normal(loc, 1.0), D.Normal(target, 2.0)).sum().backward()
    np.testing.assert_allclose(loc.grad, (0.3 - 1.0) / 4.0)
    np.testing.assert_allclose(target.grad, -(0.3 - 1.0) / 4.0)


def test_the_vae_pieces_agree_with_normal_and_kl_divergence():
    # functional.gaussian_kl (the VAE's fused KL term) and reparameterize are the closed forms
    # KL(N(mu, sigma^2) || N(0, I)) summed over the code, and Normal(mu, sigma).rsample
    mu, log_var = randn(4, 3), randn(4, 3, seed=1, scale=0.5)
    ours = lamina.tensor(mu, dtype=np.float64), lamina.tensor(log_var, dtype=np.float64)
    posterior = D.Independent(D.Normal(ours[0], (ours[1] * 0.5).exp()), 1)
    prior = D.Independent(D.Normal(np.zeros((4, 3)), 1.0), 1)
    np.testing.assert_allclose(D.kl_divergence(posterior, prior).numpy(),
                               lamina.functional.gaussian_kl(*ours).numpy(), rtol=1e-12)
    lamina.manual_seed(2)
    drawn = posterior.rsample().numpy()
    lamina.manual_seed(2)
    np.testing.assert_allclose(drawn, lamina.functional.reparameterize(*ours).numpy(), rtol=1e-12)
