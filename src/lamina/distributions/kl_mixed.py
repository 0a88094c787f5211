"""Closed-form KL(p || q) between families of different kinds (registered with
:func:`register_kl` on import), and the continuous Bernoulli's.

Most are KL(p || q) = -H(p) + E_p[-log q(x)]: p's entropy and the cross-entropy of q under p,
which needs only a few moments of p (its mean, its variance, E[log x]). KL is +inf where q
gives no density to a region p puts mass on: an unbounded p against a bounded or positive q,
a uniform p reaching outside q's support, a Poisson against a Bernoulli.
"""

from __future__ import annotations

import math

import numpy

from lamina import backend
from lamina.autograd import Tensor
from lamina.distributions.continuous import Exponential, Laplace, Uniform
from lamina.distributions.continuous_bernoulli import ContinuousBernoulli
from lamina.distributions.discrete import Bernoulli, Poisson
from lamina.distributions.gamma import Beta, Gamma
from lamina.distributions.kl import _infinite_where, register_kl
from lamina.distributions.lifetime import Pareto
from lamina.distributions.location_scale import Gumbel
from lamina.distributions.normal import Normal
from lamina.functional import digamma, erf, exp, lgamma, log, log1p, xlogy

LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


# -- cross-entropies E_p[-log q(x)] from p's moments ------------------------------------------
def _normal_cross_entropy(mean, variance, q: Normal):
    """log s + log sqrt(2 pi) + (Var_p[x] + (E_p[x] - mu)^2) / (2 s^2)."""
    shift = mean - q.loc
    return log(q.scale) + LOG_SQRT_2PI + (variance + shift * shift) / (q.scale * q.scale * 2.0)


def _gamma_cross_entropy(mean, mean_log, q: Gamma):
    """log Gamma(a) - a log b - (a - 1) E_p[log x] + b E_p[x]."""
    a = q.concentration
    return lgamma(a) - a * log(q.rate) - (a - 1.0) * mean_log + q.rate * mean


def _exponential_cross_entropy(mean, q: Exponential):
    """-log rate + rate E_p[x]."""
    return q.rate * mean - log(q.rate)


def _continuous_bernoulli_cross_entropy(mean, q: ContinuousBernoulli):
    """-(E_p[x] logits + log(1 - lambda) + log C(lambda))."""
    return -(mean * q.logits + log1p(-q.probs) + q._log_normalizer())


def _uniform_mean_log(p: Uniform):
    """E[log x] for x ~ U(l, h), 0 <= l: (h log h - l log l) / (h - l) - 1."""
    width = p.high - p.low
    return (xlogy(p.high, p.high) - xlogy(p.low, p.low)) / width - 1.0


def _outside_unit_interval(q: Uniform):
    """Where U(low, high) leaves part of [0, 1] without density."""
    return (q.low.data > 0.0) | (q.high.data < 1.0)


def _inside_unit_interval(p: Uniform):
    return (p.low.data >= 0.0) & (p.high.data <= 1.0)


# -- against a normal -------------------------------------------------------------------------
@register_kl(Beta, Normal)
@register_kl(ContinuousBernoulli, Normal)
@register_kl(Exponential, Normal)
@register_kl(Gamma, Normal)
@register_kl(Laplace, Normal)
@register_kl(Uniform, Normal)
def _kl_moments_normal(p, q):
    """-H(p) + log s + log sqrt(2 pi) + (Var_p[x] + (E_p[x] - mu)^2) / (2 s^2)."""
    return _normal_cross_entropy(p.mean, p.variance, q) - p.entropy()


@register_kl(Normal, Laplace)
def _kl_normal_laplace(p, q):
    """-H(p) + log(2 b) + E_p|x - mu_q| / b, with E|x - mu_q| = s sqrt(2 / pi) e^(-d^2 / (2 s^2)) +
    d erf(d / (s sqrt 2)) for d = mu_p - mu_q: log(b / s) + E|x - mu_q| / b - (1 + log(pi / 2)) / 2."""
    d = p.loc - q.loc
    z = d / p.scale
    mean_distance = p.scale * exp(z * z * -0.5) * math.sqrt(2.0 / math.pi) + d * erf(z * math.sqrt(0.5))
    return log(q.scale / p.scale) + mean_distance / q.scale - 0.5 * (1.0 + math.log(0.5 * math.pi))


# -- against positive families ----------------------------------------------------------------
@register_kl(Beta, Exponential)
@register_kl(ContinuousBernoulli, Exponential)
def _kl_moments_exponential(p, q):
    """-H(p) - log rate + rate E_p[x]."""
    return _exponential_cross_entropy(p.mean, q) - p.entropy()


@register_kl(Uniform, Exponential)
def _kl_uniform_exponential(p, q):
    """-log(h - l) - log rate + rate (l + h) / 2; +inf where the interval reaches below 0."""
    return _infinite_where(p.low.data < 0.0, _exponential_cross_entropy(p.mean, q) - p.entropy())


@register_kl(Beta, Gamma)
def _kl_beta_gamma(p, q):
    """-H(p) + E_p[-log q(x)], E_p[log x] = digamma(a) - digamma(a + b)."""
    mean_log = digamma(p.concentration1) - digamma(p.concentration1 + p.concentration0)
    return _gamma_cross_entropy(p.mean, mean_log, q) - p.entropy()


@register_kl(Uniform, Gamma)
def _kl_uniform_gamma(p, q):
    """-log(h - l) + E_p[-log q(x)]; +inf where the interval reaches below 0."""
    kl = _gamma_cross_entropy(p.mean, _uniform_mean_log(p), q) - p.entropy()
    return _infinite_where(p.low.data < 0.0, kl)


@register_kl(Bernoulli, Poisson)
def _kl_bernoulli_poisson(p, q):
    """-H(p) - p log rate + rate (log x! vanishes for x in {0, 1})."""
    return q.rate - p.probs * log(q.rate) - p.entropy()


# -- on the unit interval ---------------------------------------------------------------------
@register_kl(Beta, Uniform)
@register_kl(ContinuousBernoulli, Uniform)
def _kl_unit_interval_uniform(p, q):
    """-H(p) + log(high - low); +inf where [low, high] leaves part of [0, 1] out."""
    return _infinite_where(_outside_unit_interval(q), log(q.high - q.low) - p.entropy())


@register_kl(Uniform, Beta)
def _kl_uniform_beta(p, q):
    """-log(h - l) + log B(a, b) - (a - 1) E_p[log x] - (b - 1) E_p[log(1 - x)]; +inf where the
    interval leaves [0, 1]."""
    width = p.high - p.low
    mean_log = _uniform_mean_log(p)
    rest_high, rest_low = 1.0 - p.high, 1.0 - p.low
    mean_log_rest = (xlogy(rest_low, rest_low) - xlogy(rest_high, rest_high)) / width - 1.0
    kl = (q._log_beta() - log(width) - (q.concentration1 - 1.0) * mean_log
          - (q.concentration0 - 1.0) * mean_log_rest)
    return _infinite_where(~_inside_unit_interval(p), kl)


@register_kl(Beta, ContinuousBernoulli)
def _kl_beta_continuous_bernoulli(p, q):
    """-H(p) - E_p[x] logits - log(1 - lambda) - log C(lambda)."""
    return _continuous_bernoulli_cross_entropy(p.mean, q) - p.entropy()


@register_kl(Uniform, ContinuousBernoulli)
def _kl_uniform_continuous_bernoulli(p, q):
    """As for a beta p; +inf where the interval leaves [0, 1]."""
    kl = _continuous_bernoulli_cross_entropy(p.mean, q) - p.entropy()
    return _infinite_where(~_inside_unit_interval(p), kl)


@register_kl(ContinuousBernoulli, ContinuousBernoulli)
def _kl_continuous_bernoulli_continuous_bernoulli(p, q):
    """E_p[x] (logits_p - logits_q) + log(1 - lambda_p) + log C(lambda_p) - log(1 - lambda_q) -
    log C(lambda_q)."""
    own = log1p(-p.probs) + p._log_normalizer()
    other = log1p(-q.probs) + q._log_normalizer()
    return p.mean * (p.logits - q.logits) + own - other


# -- no density where p has mass: +inf --------------------------------------------------------
def _infinite(p, q) -> Tensor:
    """+inf over the broadcast batch shapes (a constant)."""
    shape = numpy.broadcast_shapes(p.batch_shape, q.batch_shape)
    return Tensor._wrap(backend.xp.full(shape, numpy.inf, dtype=p.dtype))


_UNBOUNDED_AGAINST_BOUNDED = {
    Exponential: (Beta, ContinuousBernoulli, Uniform),
    Gamma: (Beta, ContinuousBernoulli, Uniform),
    Gumbel: (Beta, ContinuousBernoulli),
    Laplace: (Beta, ContinuousBernoulli, Exponential, Gamma, Pareto, Uniform),
    Normal: (Beta, ContinuousBernoulli, Exponential, Gamma, Uniform),
    Pareto: (Beta, ContinuousBernoulli, Uniform),
    ContinuousBernoulli: (Pareto,),
    Poisson: (Bernoulli,),
}
for _p, _qs in _UNBOUNDED_AGAINST_BOUNDED.items():
    for _q in _qs:
        register_kl(_p, _q)(_infinite)
