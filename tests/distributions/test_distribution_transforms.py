"""Transforms (call, inverse, log|det J|) and TransformedDistribution against
torch.distributions in float64, values and gradients, with gradient checks and argument
errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch.distributions as TD
import torch.distributions.transforms as TT

import lamina
import lamina.distributions as D
from helpers import check_gradients, compare_with_torch, nonzero, positive, randn

# name: (lamina transform from parameters, torch transform from parameters, parameters, x)
TRANSFORMS = {
    "exp": (lambda: D.ExpTransform(), lambda: TT.ExpTransform(), [], randn(2, 3)),
    "affine": (lambda m, s: D.AffineTransform(m, s), lambda m, s: TT.AffineTransform(m, s), [randn(3), nonzero(3)],
               randn(2, 3, seed=1)),
    "affine_number": (lambda: D.AffineTransform(0.5, -2.0), lambda: TT.AffineTransform(0.5, -2.0), [], randn(2, 3)),
    "affine_event": (lambda m, s: D.AffineTransform(m, s, event_dim=1), lambda m, s: TT.AffineTransform(m, s, 1),
                     [randn(3), nonzero(3)], randn(2, 3, seed=1)),
    "sigmoid": (lambda: D.SigmoidTransform(), lambda: TT.SigmoidTransform(), [], randn(2, 3, scale=3.0)),
    "tanh": (lambda: D.TanhTransform(), lambda: TT.TanhTransform(), [], randn(2, 3, scale=2.0)),
    "softplus": (lambda: D.SoftplusTransform(), lambda: TT.SoftplusTransform(), [], randn(2, 3, scale=3.0)),
    "power": (lambda e: D.PowerTransform(e), lambda e: TT.PowerTransform(e), [nonzero(3)], positive(2, 3, seed=1)),
    "compose": (lambda m, s: D.ComposeTransform([D.AffineTransform(m, s), D.ExpTransform()]),
                lambda m, s: TT.ComposeTransform([TT.AffineTransform(m, s), TT.ExpTransform()]),
                [randn(3), nonzero(3)], randn(2, 3, seed=1)),
    "compose_event": (lambda s: D.ComposeTransform([D.SigmoidTransform(), D.AffineTransform(0.0, s, event_dim=1)]),
                      lambda s: TT.ComposeTransform([TT.SigmoidTransform(), TT.AffineTransform(0.0, s, 1)]),
                      [nonzero(3)], randn(2, 3, seed=1)),
    "inverse": (lambda: D.ExpTransform().inv, lambda: TT.ExpTransform().inv, [], positive(2, 3)),
}


def _forward(make):
    return lambda *a: make(*a[:-1])(a[-1])


def _inverse(make):
    return lambda *a: make(*a[:-1]).inv(a[-1])


def _log_det(make):
    def run(*a):
        t = make(*a[:-1])
        return t.log_abs_det_jacobian(a[-1], t(a[-1]))

    return run


def _image(name):
    """y = f(x) as an array, the input of the inverse."""
    _, theirs, params, x = TRANSFORMS[name]
    import torch

    return theirs(*(torch.tensor(p) for p in params))(torch.tensor(x)).numpy()


@pytest.mark.parametrize("part", ["call", "inv", "log_abs_det_jacobian"])
@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_matches_torch(name, part):
    ours, theirs, params, x = TRANSFORMS[name]
    wrap = {"call": _forward, "inv": _inverse, "log_abs_det_jacobian": _log_det}[part]
    value = _image(name) if part == "inv" else x
    constant = name == "affine_number" and part == "log_abs_det_jacobian"      # log 2 everywhere
    compare_with_torch(wrap(ours), wrap(theirs), *params, value, dtype=np.float64, grad=not constant)


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_gradcheck_and_round_trip(name):
    ours, _, params, x = TRANSFORMS[name]
    if name != "affine_number":
        assert check_gradients(_log_det(ours), *params, x)
    assert check_gradients(_forward(ours), *params, x)
    t = ours(*(lamina.tensor(p, dtype=np.float64) for p in params))
    np.testing.assert_allclose(t.inv(t(x)).numpy(), x, rtol=1e-9, atol=1e-12)
    log_det = t.log_abs_det_jacobian(x, t(x))
    # the inverse's log|det| is minus the forward one's at the swapped pair
    np.testing.assert_allclose(t.inv.log_abs_det_jacobian(t(x), x).numpy(), -log_det.numpy(), rtol=1e-12)


def test_transforms_compare_and_compose():
    assert D.ExpTransform() == D.ExpTransform() and D.ExpTransform() != D.SigmoidTransform()
    assert D.AffineTransform(1.0, 2.0) == D.AffineTransform(1.0, 2.0) != D.AffineTransform(1.0, 3.0)
    assert D.ExpTransform().inv.inv == D.ExpTransform() and D.ExpTransform().inv == D.ExpTransform().inv
    chain = D.ComposeTransform([D.AffineTransform(0.0, -1.0), D.ExpTransform()])
    assert chain.sign == -1 and chain.inv.parts == [D.ExpTransform().inv, D.AffineTransform(0.0, -1.0).inv]
    with pytest.raises(TypeError, match="ComposeTransform: parts must be Transforms, got ufunc"):
        D.ComposeTransform([np.exp])


# -- TransformedDistribution --------------------------------------------------------------------
def _logistic(ours):
    """The logistic distribution: logit of a uniform draw, shifted and scaled."""
    if ours:
        return lambda m, s: D.TransformedDistribution(D.Uniform(0.0, 1.0), [D.SigmoidTransform().inv,
                                                                            D.AffineTransform(m, s)])
    return lambda m, s: TD.TransformedDistribution(TD.Uniform(0.0, 1.0), [TT.SigmoidTransform().inv,
                                                                          TT.AffineTransform(m, s)])


# name: (lamina, torch, parameters, value, methods)
DISTRIBUTIONS = {
    "log_normal": (lambda m, s: D.TransformedDistribution(D.Normal(m, s), D.ExpTransform()),
                   lambda m, s: TD.TransformedDistribution(TD.Normal(m, s), TT.ExpTransform()),
                   [randn(3), positive(3)], positive(2, 3, seed=2), ("log_prob", "cdf", "icdf")),
    "logistic": (_logistic(True), _logistic(False), [randn(3), positive(3)], randn(2, 3, seed=2),
                 ("log_prob", "cdf", "icdf")),
    "decreasing": (lambda m, s: D.TransformedDistribution(D.Exponential(s), D.AffineTransform(m, -2.0)),
                   lambda m, s: TD.TransformedDistribution(TD.Exponential(s), TT.AffineTransform(m, -2.0)),
                   [randn(3), positive(3)], randn(2, 3, seed=2) - 3.0, ("log_prob", "cdf", "icdf")),
    "squashed_normal": (lambda m, s: D.TransformedDistribution(D.Normal(m, s), [D.TanhTransform(),
                                                                                D.AffineTransform(0.0, 2.0)]),
                        lambda m, s: TD.TransformedDistribution(TD.Normal(m, s), [TT.TanhTransform(),
                                                                                  TT.AffineTransform(0.0, 2.0)]),
                        [randn(3), positive(3)], np.tanh(randn(2, 3, seed=2)) * 2.0, ("log_prob", "cdf", "icdf")),
    "vector_affine": (lambda m, s: D.TransformedDistribution(D.Normal(m, 1.0), D.AffineTransform(0.0, s, event_dim=1)),
                      lambda m, s: TD.TransformedDistribution(TD.Normal(m, 1.0), TT.AffineTransform(0.0, s, 1)),
                      [randn(2, 3), positive(3)], randn(2, 3, seed=2), ("log_prob",)),
    "softplus_power": (lambda m, e: D.TransformedDistribution(D.Normal(m, 1.0), [D.SoftplusTransform(),
                                                                                  D.PowerTransform(e)]),
                       lambda m, e: TD.TransformedDistribution(TD.Normal(m, 1.0), [TT.SoftplusTransform(),
                                                                                    TT.PowerTransform(e)]),
                       [randn(3), positive(3)], positive(2, 3, seed=2), ("log_prob", "cdf", "icdf")),
}
PROBS = np.random.default_rng(3).uniform(0.05, 0.95, (2, 3))
PAIRS = [(name, method) for name, case in DISTRIBUTIONS.items() for method in case[4]]


def _distribution_inputs(name, method):
    ours, theirs, params, value, _ = DISTRIBUTIONS[name]
    n = len(params)
    arg = PROBS if method == "icdf" else value
    return (lambda *a: getattr(ours(*a[:n]), method)(a[n]), lambda *a: getattr(theirs(*a[:n]), method)(a[n]),
            [*params, arg])


@pytest.mark.parametrize("name,method", PAIRS)
def test_transformed_distribution_matches_torch(name, method):
    ours, theirs, arrays = _distribution_inputs(name, method)
    compare_with_torch(ours, theirs, *arrays, dtype=np.float64)


@pytest.mark.parametrize("name,method", [p for p in PAIRS if p[1] != "icdf"])
def test_transformed_distribution_gradcheck(name, method):
    ours, _, arrays = _distribution_inputs(name, method)
    assert check_gradients(ours, *arrays)


def test_shapes_support_and_draws():
    d = D.TransformedDistribution(D.Normal(np.zeros(3), 1.0), D.AffineTransform(0.0, np.ones((2, 1)) * 2.0))
    assert d.batch_shape == (2, 3) and d.event_shape == () and d.sample((4,)).shape == (4, 2, 3)
    vector = DISTRIBUTIONS["vector_affine"][0](randn(2, 3), positive(3))
    assert vector.batch_shape == (2,) and vector.event_shape == (3,) and vector.log_prob(np.zeros(3)).shape == (2,)
    positive_only = D.TransformedDistribution(D.Normal(0.0, 1.0), D.ExpTransform())
    with pytest.raises(ValueError, match=r"TransformedDistribution.log_prob: value must be > 0 .*-1 at \(1,\)"):
        positive_only.log_prob([1.0, -1.0])
    with pytest.raises(TypeError, match="TransformedDistribution: transforms must be a Transform or a list"):
        D.TransformedDistribution(D.Normal(0.0, 1.0), np.exp)
    lamina.manual_seed(0)
    draws = positive_only.sample((20_000,)).numpy()
    np.testing.assert_allclose(np.median(draws), 1.0, atol=0.03)      # e^0, the median of the log-normal


def test_transformed_log_prob_equals_the_closed_forms():
    loc, scale, x = randn(3), positive(3), positive(2, 3, seed=2)
    pushed = D.TransformedDistribution(D.Normal(loc, scale), D.ExpTransform())
    np.testing.assert_allclose(pushed.log_prob(x).numpy(), D.LogNormal(loc, scale).log_prob(x).numpy(), rtol=1e-12)
    k, lam = positive(3, seed=4), positive(3, seed=5)
    weibull = D.TransformedDistribution(D.Exponential(np.ones(3)), [D.PowerTransform(1.0 / k),
                                                                    D.AffineTransform(0.0, lam)])
    np.testing.assert_allclose(weibull.log_prob(x).numpy(), D.Weibull(lam, k).log_prob(x).numpy(), rtol=1e-12)
    np.testing.assert_allclose(weibull.cdf(x).numpy(), D.Weibull(lam, k).cdf(x).numpy(), rtol=1e-12)


def test_transformed_rsample_gradients_with_fixed_noise():
    def draw(loc, scale):
        lamina.manual_seed(0)
        return D.TransformedDistribution(D.Normal(loc, scale), [D.TanhTransform(), D.AffineTransform(1.0, 3.0)]
                                         ).rsample((4,))

    assert D.TransformedDistribution(D.Normal(0.0, 1.0), D.ExpTransform()).has_rsample
    assert not D.TransformedDistribution(D.Poisson(1.0), D.ExpTransform()).has_rsample
    assert check_gradients(draw, randn(3), positive(3))
