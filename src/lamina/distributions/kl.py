"""KL(p || q) = E_p[log p(x) - log q(x)] in closed form, looked up by the types of p and q.

``register_kl(TypeP, TypeQ)`` adds a formula; :func:`kl_divergence` picks the most specific
registered pair for the arguments' classes (subclasses inherit their parents' formulas).
"""

from __future__ import annotations

import numpy

from lamina.distributions.composite import Independent
from lamina.distributions.continuous import Exponential, Laplace, Uniform
from lamina.distributions.discrete import Bernoulli, Categorical, OneHotCategorical, Poisson
from lamina.distributions.distribution import Distribution
from lamina.distributions.gamma import Beta, Gamma
from lamina.distributions.multivariate import MultivariateNormal, kl_multivariate_normal
from lamina.distributions.normal import LogNormal, Normal
from lamina.errors import ShapeError
from lamina.functional import digamma, exp, lgamma, log, softplus, where

_REGISTRY: dict = {}


def register_kl(type_p: type, type_q: type):
    """Decorator registering ``fn(p, q)`` as KL(p || q) for p of ``type_p`` and q of ``type_q``."""
    for t in (type_p, type_q):
        if not (isinstance(t, type) and issubclass(t, Distribution)):
            raise TypeError(f"register_kl: expected Distribution subclasses, got {t!r}")

    def decorator(fn):
        _REGISTRY[type_p, type_q] = fn
        return fn

    return decorator


def _lookup(type_p: type, type_q: type):
    """The formula registered for the closest ancestors of the two types (nearest p first)."""
    best, best_rank = None, None
    for (tp, tq), fn in _REGISTRY.items():
        if issubclass(type_p, tp) and issubclass(type_q, tq):
            rank = (type_p.__mro__.index(tp), type_q.__mro__.index(tq))
            if best_rank is None or rank < best_rank:
                best, best_rank = fn, rank
    return best


def kl_divergence(p: Distribution, q: Distribution):
    """KL(p || q) for each entry of the batch, a tensor on the graph of both parameter sets."""
    fn = _lookup(type(p), type(q))
    if fn is None:
        raise NotImplementedError(f"kl_divergence: no closed form registered for p a {type(p).__name__} and q a "
                                  f"{type(q).__name__}; add one with @register_kl({type(p).__name__}, "
                                  f"{type(q).__name__})")
    return fn(p, q)


def _infinite_where(mask, t):
    """t, and +inf where ``mask`` holds (q puts no mass where p does)."""
    return where(mask, numpy.inf, t) if bool(numpy.any(mask)) else t


def _zero_where(mask, t):
    return where(mask, 0.0, t) if bool(numpy.any(mask)) else t


@register_kl(Normal, Normal)
def _kl_normal_normal(p, q):
    """(var_p / var_q + (mu_p - mu_q)^2 / var_q - 1 - log(var_p / var_q)) / 2."""
    ratio = p.scale / q.scale
    ratio = ratio * ratio
    shift = (p.loc - q.loc) / q.scale
    return (ratio + shift * shift - 1.0 - log(ratio)) * 0.5


@register_kl(LogNormal, LogNormal)
def _kl_lognormal_lognormal(p, q):
    """KL is invariant under the map exp shared by both: that of the underlying normals."""
    return _kl_normal_normal(p.base_dist, q.base_dist)


@register_kl(Bernoulli, Bernoulli)
def _kl_bernoulli_bernoulli(p, q):
    """p log(p / q) + (1 - p) log((1 - p) / (1 - q)), by softplus of the logits."""
    pp, qp = p.probs.data, q.probs.data
    ones = p.probs * (softplus(-q.logits, threshold=numpy.inf) - softplus(-p.logits, threshold=numpy.inf))
    ones = _zero_where(pp == 0, _infinite_where(qp == 0, ones))
    zeros = (1.0 - p.probs) * (softplus(q.logits, threshold=numpy.inf) - softplus(p.logits, threshold=numpy.inf))
    zeros = _zero_where(pp == 1, _infinite_where(qp == 1, zeros))
    return ones + zeros


@register_kl(Categorical, Categorical)
def _kl_categorical_categorical(p, q):
    """sum_k p_k (log p_k - log q_k); +inf where q_k = 0 < p_k, and 0 terms where p_k = 0."""
    _same_events("Categorical", p.num_events, q.num_events)
    terms = p.probs * (p.logits - q.logits)
    pp, qp = numpy.broadcast_arrays(p.probs.data, q.probs.data)
    terms = _zero_where(pp == 0, _infinite_where(qp == 0, terms))
    return terms.sum(axis=-1)


@register_kl(OneHotCategorical, OneHotCategorical)
def _kl_onehot_onehot(p, q):
    return _kl_categorical_categorical(p._categorical, q._categorical)


def _same_events(name: str, k_p: int, k_q: int) -> None:
    if k_p != k_q:
        raise ShapeError(f"kl_divergence({name}, {name}): p has {k_p} categories and q has {k_q}")


@register_kl(Uniform, Uniform)
def _kl_uniform_uniform(p, q):
    """log((high_q - low_q) / (high_p - low_p)), +inf where p's interval leaves q's."""
    kl = log((q.high - q.low) / (p.high - p.low))
    return _infinite_where((q.low.data > p.low.data) | (q.high.data < p.high.data), kl)


@register_kl(Exponential, Exponential)
def _kl_exponential_exponential(p, q):
    """r - log r - 1 with r = rate_q / rate_p."""
    ratio = q.rate / p.rate
    return ratio - log(ratio) - 1.0


@register_kl(Laplace, Laplace)
def _kl_laplace_laplace(p, q):
    """log(b_q / b_p) + |mu_p - mu_q| / b_q + (b_p / b_q) e^(-|mu_p - mu_q| / b_p) - 1."""
    ratio = p.scale / q.scale
    distance = (p.loc - q.loc).abs()
    return -log(ratio) + distance / q.scale + ratio * exp(-distance / p.scale) - 1.0


@register_kl(Gamma, Gamma)
def _kl_gamma_gamma(p, q):
    """a_q log(b_p / b_q) + log Gamma(a_q) - log Gamma(a_p) + (a_p - a_q) digamma(a_p) +
    (b_q - b_p) a_p / b_p."""
    ap, bp, aq, bq = p.concentration, p.rate, q.concentration, q.rate
    return aq * log(bp / bq) + lgamma(aq) - lgamma(ap) + (ap - aq) * digamma(ap) + (bq - bp) * (ap / bp)


@register_kl(Beta, Beta)
def _kl_beta_beta(p, q):
    """log B(a_q, b_q) - log B(a_p, b_p) + (a_p - a_q) digamma(a_p) + (b_p - b_q) digamma(b_p) +
    (a_q - a_p + b_q - b_p) digamma(a_p + b_p)."""
    ap, bp, aq, bq = p.concentration1, p.concentration0, q.concentration1, q.concentration0
    total_p = ap + bp
    return (q._log_beta() - p._log_beta() + (ap - aq) * digamma(ap) + (bp - bq) * digamma(bp)
            + (aq + bq - total_p) * digamma(total_p))


@register_kl(Poisson, Poisson)
def _kl_poisson_poisson(p, q):
    """rate_p log(rate_p / rate_q) - (rate_p - rate_q)."""
    return p.rate * (log(p.rate) - log(q.rate)) - (p.rate - q.rate)


@register_kl(Independent, Independent)
def _kl_independent_independent(p, q):
    """The base distributions' KL summed over the reinterpreted axes (the same number in both)."""
    if p.reinterpreted_batch_ndims != q.reinterpreted_batch_ndims:
        raise NotImplementedError(f"kl_divergence(Independent, Independent): p reinterprets "
                                  f"{p.reinterpreted_batch_ndims} batch axes and q {q.reinterpreted_batch_ndims}; "
                                  "only equal numbers are supported")
    kl = kl_divergence(p.base_dist, q.base_dist)
    n = p.reinterpreted_batch_ndims
    return kl.sum(axis=tuple(range(-n, 0))) if n else kl


register_kl(MultivariateNormal, MultivariateNormal)(kl_multivariate_normal)
