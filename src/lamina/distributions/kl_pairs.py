"""Closed-form KL(p || q) for the heavy-tailed, extreme-value, positive, simplex and counting
families, and for mixed pairs of families (registered with :func:`register_kl` on import).
KL is +inf where q gives no density to a region p puts mass on (a Gumbel against a
distribution of positive values, for instance)."""

from __future__ import annotations

import math

import numpy

from lamina.autograd import Tensor
from lamina.distributions.continuous import Exponential, Uniform
from lamina.distributions.counts import Binomial, Geometric
from lamina.distributions.dirichlet import Dirichlet
from lamina.distributions.discrete import Poisson
from lamina.distributions.gamma import Beta, Gamma
from lamina.distributions.kl import _infinite_where, _kl_normal_normal, kl_divergence, register_kl
from lamina.distributions.lifetime import Pareto
from lamina.distributions.location_scale import EULER_GAMMA, Cauchy, Gumbel, HalfNormal
from lamina.distributions.normal import Normal
from lamina.distributions.transformed import TransformedDistribution
from lamina.functional import digamma, exp, lgamma, log, log1p, xlogy
from lamina.functional import sum as total

LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


@register_kl(Binomial, Binomial)
def _kl_binomial_binomial(p, q):
    """n (p log(p / q) + (1 - p) log((1 - p) / (1 - q))) for equal counts n; +inf where p has
    more trials than q (q cannot reach p's largest counts)."""
    n_p, n_q = numpy.broadcast_arrays(p.total_count.data, q.total_count.data)
    if bool(numpy.any(n_p < n_q)):
        raise NotImplementedError("kl_divergence(Binomial, Binomial): q has more trials than p "
                                  f"(total_count {n_q[n_p < n_q].tolist()[:5]} against {n_p[n_p < n_q].tolist()[:5]}); "
                                  "only p.total_count >= q.total_count is supported")
    kl = p.total_count * (p.probs * (p.logits - q.logits) + log1p(-p.probs) - log1p(-q.probs))
    return _infinite_where(n_p > n_q, kl)


@register_kl(Geometric, Geometric)
def _kl_geometric_geometric(p, q):
    """-H(p) - log(1 - q) (1 - p) / p - log q, written with q's logits."""
    return -p.entropy() - log1p(-q.probs) / p.probs - q.logits


@register_kl(Cauchy, Cauchy)
def _kl_cauchy_cauchy(p, q):
    """log(((s_p + s_q)^2 + (mu_p - mu_q)^2) / (4 s_p s_q))."""
    spread, shift = p.scale + q.scale, p.loc - q.loc
    return log(spread * spread + shift * shift) - log(p.scale * q.scale * 4.0)


@register_kl(HalfNormal, HalfNormal)
def _kl_halfnormal_halfnormal(p, q):
    """That of the normals N(0, s_p^2) and N(0, s_q^2) folded into them."""
    return _kl_normal_normal(Normal(0.0, p.scale, validate_args=False), Normal(0.0, q.scale, validate_args=False))


@register_kl(Gumbel, Gumbel)
def _kl_gumbel_gumbel(p, q):
    """log(s_q / s_p) + (mu_p - mu_q) / s_q + gamma (s_p / s_q - 1) +
    e^((mu_q - mu_p) / s_q) Gamma(1 + s_p / s_q) - 1."""
    ratio = p.scale / q.scale
    shift = (p.loc - q.loc) / q.scale
    return -log(ratio) + shift + ratio * EULER_GAMMA + exp(lgamma(ratio + 1.0) - shift) - (1.0 + EULER_GAMMA)


@register_kl(Dirichlet, Dirichlet)
def _kl_dirichlet_dirichlet(p, q):
    """log Gamma(a_0) - log Gamma(b_0) - sum_i (log Gamma(a_i) - log Gamma(b_i)) +
    sum_i (a_i - b_i) (digamma(a_i) - digamma(a_0)), a = p's concentration, b = q's."""
    a, b = p.concentration, q.concentration
    a0, b0 = total(a, axis=-1), total(b, axis=-1)
    expected_log = digamma(a) - digamma(total(a, axis=-1, keepdims=True))
    return lgamma(a0) - lgamma(b0) - total(lgamma(a) - lgamma(b), axis=-1) + total((a - b) * expected_log, axis=-1)


@register_kl(Pareto, Pareto)
def _kl_pareto_pareto(p, q):
    """alpha_q log(m_p / m_q) - log(alpha_q / alpha_p) + alpha_q / alpha_p - 1 for scales
    m_p >= m_q; +inf where p reaches below q's support."""
    ratio = q.alpha / p.alpha
    kl = q.alpha * log(p.scale / q.scale) - log(ratio) + ratio - 1.0
    return _infinite_where(p.scale.data < q.scale.data, kl)


@register_kl(Exponential, Gamma)
def _kl_exponential_gamma(p, q):
    """With r = b_q / lambda_p: -a_q log r + r + log Gamma(a_q) + gamma a_q - 1 - gamma."""
    ratio = q.rate / p.rate
    a = q.concentration
    return -a * log(ratio) + ratio + lgamma(a) + a * EULER_GAMMA - (1.0 + EULER_GAMMA)


@register_kl(Gamma, Exponential)
def _kl_gamma_exponential(p, q):
    """-H(p) - log lambda_q + lambda_q E_p[x]."""
    return -p.entropy() - log(q.rate) + q.rate * p.concentration / p.rate


@register_kl(Exponential, Gumbel)
def _kl_exponential_gumbel(p, q):
    """With c = lambda_p s_q and m = mu_q / s_q: log c - 1 - m + e^m c / (c + 1) + 1 / c."""
    c = p.rate * q.scale
    m = q.loc / q.scale
    return log(c) - 1.0 - m + exp(m) * c / (c + 1.0) + 1.0 / c


@register_kl(Gamma, Gumbel)
def _kl_gamma_gumbel(p, q):
    """-H(p) - E_p[log q(x)], with E_p[e^(-x / s)] = (1 + 1 / (b_p s))^(-a_p)."""
    a = p.concentration
    c = p.rate * q.scale
    m = q.loc / q.scale
    return ((a - 1.0) * digamma(a) - lgamma(a) - a + log(c) + a / c
            + exp(m - a * log1p(1.0 / c)) - m)


@register_kl(Normal, Gumbel)
def _kl_normal_gumbel(p, q):
    """-H(p) - E_p[log q(x)], with E_p[e^(-x / s)] = e^(-mu / s + sigma^2 / (2 s^2))."""
    mean_ratio = p.loc / q.scale
    spread = p.scale / q.scale
    m = q.loc / q.scale
    return (-log(spread) + mean_ratio - m + exp(spread * spread * 0.5 - mean_ratio + m)
            - (0.5 + LOG_SQRT_2PI))


@register_kl(Uniform, Gumbel)
def _kl_uniform_gumbel(p, q):
    """log(s / w) + (h + l) / 2 - (s / w)(e^-h - e^-l), h = (high - mu) / s, l = (low - mu) / s,
    w = high - low."""
    c = q.scale / (p.high - p.low)
    high = (p.high - q.loc) / q.scale
    low = (p.low - q.loc) / q.scale
    return log(c) + (high + low) * 0.5 - c * (exp(-high) - exp(-low))


@register_kl(Gumbel, Normal)
def _kl_gumbel_normal(p, q):
    """-H(p) - E_p[log q(x)], E_p[x] = mu + gamma s, Var_p[x] = (pi s)^2 / 6."""
    ratio = p.scale / q.scale
    shift = (p.loc + p.scale * EULER_GAMMA - q.loc) / q.scale
    spread = ratio * (math.pi * 0.5)
    return -log(ratio) + LOG_SQRT_2PI + spread * spread / 3.0 + shift * shift * 0.5 - (EULER_GAMMA + 1.0)


def _where_alpha_at_most(p, bound: float, kl):
    """+inf where Pareto p's mean (bound 1) or variance (bound 2) is infinite."""
    return _infinite_where(p.alpha.data <= bound, kl)


@register_kl(Pareto, Exponential)
def _kl_pareto_exponential(p, q):
    """log(alpha / (m lambda)) - 1 / alpha + lambda E_p[x] - 1, E_p[x] = alpha m / (alpha - 1)."""
    c = p.scale * q.rate
    kl = log(p.alpha / c) - 1.0 / p.alpha + p.alpha * c / (p.alpha - 1.0) - 1.0
    return _where_alpha_at_most(p, 1.0, kl)


@register_kl(Pareto, Gamma)
def _kl_pareto_gamma(p, q):
    """-H(p) - E_p[log q(x)] with E_p[log x] = log m + 1 / alpha."""
    mean_log = log(p.scale) + 1.0 / p.alpha
    a = q.concentration
    kl = (log(p.alpha) - mean_log + lgamma(a) - a * log(q.rate) + (1.0 - a) * mean_log
          + q.rate * p.alpha * p.scale / (p.alpha - 1.0) - 1.0)
    return _where_alpha_at_most(p, 1.0, kl)


@register_kl(Pareto, Normal)
def _kl_pareto_normal(p, q):
    """-H(p) - E_p[log q(x)] from the Pareto's mean and variance (finite for alpha > 2)."""
    two_var = q.scale * q.scale * 2.0
    c = p.scale / (p.alpha - 1.0)
    shift = p.alpha * c - q.loc
    kl = (log(q.scale * p.alpha / p.scale) + LOG_SQRT_2PI - 1.0 / p.alpha
          + (p.alpha * c * c / (p.alpha - 2.0) + shift * shift) / two_var - 1.0)
    return _where_alpha_at_most(p, 2.0, kl)


@register_kl(Uniform, Pareto)
def _kl_uniform_pareto(p, q):
    """(alpha + 1) E_p[log x] - log(alpha m^alpha w), E_p[log x] = (h log h - l log l) / w - 1;
    +inf where the interval reaches below the Pareto's scale."""
    width = p.high - p.low
    mean_log = (xlogy(p.high, p.high) - xlogy(p.low, p.low) - width) / width
    kl = mean_log * (q.alpha + 1.0) - (log(q.alpha) + q.alpha * log(q.scale) + log(width))
    return _infinite_where(p.low.data < q.scale.data, kl)


def _infinite(t: Tensor):
    """+inf of the shape of ``t`` (a constant)."""
    return Tensor._wrap(numpy.full(t.shape, numpy.inf, dtype=t.dtype))


for _p, _q in [(Gumbel, Exponential), (Gumbel, Gamma), (Gumbel, Pareto), (Gumbel, Uniform)]:
    register_kl(_p, _q)(lambda p, q: _infinite(p.loc.detach()))
for _p in (Exponential, Gamma, Normal):
    register_kl(_p, Pareto)(lambda p, q: _infinite(p.mean.detach()))
register_kl(Beta, Pareto)(lambda p, q: _infinite(p.concentration1.detach()))
register_kl(Poisson, Binomial)(lambda p, q: _infinite(p.rate.detach()))


@register_kl(TransformedDistribution, TransformedDistribution)
def _kl_transformed_transformed(p, q):
    """KL is unchanged by a bijection applied to both: that of the bases, for equal transforms."""
    if p.transforms != q.transforms or p.event_shape != q.event_shape:
        raise NotImplementedError("kl_divergence(TransformedDistribution, TransformedDistribution): only for equal "
                                  f"transforms and event shapes; got {p.transforms} and {q.transforms}")
    return kl_divergence(p.base_dist, q.base_dist)
