"""Location-scale families beyond the normal: Cauchy, Student's t and Gumbel on the reals, and
the half-normal and half-Cauchy (the law of |X| for X centred at 0) on [0, inf)."""

from __future__ import annotations

import math

import numpy

from lamina import backend
from lamina.autograd import Tensor
from lamina.distributions import constraints
from lamina.distributions.distribution import Distribution, _HalfScale, _LocationScale, broadcast_parameters
from lamina.distributions.gamma import standard_gamma
from lamina.distributions.normal import LOG_SQRT_2PI, SQRT_2
from lamina.functional import atan, digamma, erf, erfinv, exp, lgamma, log, log1p, rsqrt, tan, where

EULER_GAMMA = 0.57721566490153286061
"""The Euler-Mascheroni constant, the mean of the standard Gumbel distribution."""


def _full(distribution: Distribution, value: float) -> Tensor:
    """A constant of the batch shape (a moment that does not exist: NaN, or inf)."""
    return Tensor._wrap(backend.xp.full(distribution.batch_shape, value, dtype=distribution.dtype))


def _on_half_line(value: Tensor, log_p: Tensor) -> Tensor:
    """``log_p`` where ``value`` >= 0, and -inf below the support (as PyTorch, when values are
    not validated)."""
    return where(value.data >= 0, log_p, -math.inf)


def _open_unit_noise(distribution: Distribution, sample_shape):
    """Uniform noise in [tiny, 1 - eps], whose logarithms and those of 1 - u stay finite."""
    info = numpy.finfo(distribution.dtype)
    return numpy.clip(distribution._noise("random", sample_shape), info.tiny, 1.0 - info.eps)


class Cauchy(_LocationScale):
    """p(x) = 1 / (pi scale (1 + z^2)), z = (x - loc) / scale; cdf 1/2 + atan(z) / pi, entropy
    log(4 pi scale); mean and variance do not exist (NaN and inf, as PyTorch); rsample
    loc + scale c, c standard Cauchy."""

    @property
    def mean(self):
        return _full(self, numpy.nan)

    @property
    def variance(self):
        return _full(self, numpy.inf)

    def rsample(self, sample_shape=()):
        return self.loc + self._noise("standard_cauchy", sample_shape) * self.scale

    def log_prob(self, value):
        z = (self._value(value, "log_prob") - self.loc) / self.scale
        return -log1p(z * z) - log(self.scale) - math.log(math.pi)

    def cdf(self, value):
        return atan((self._value(value, "cdf") - self.loc) / self.scale) / math.pi + 0.5

    def icdf(self, value):
        return tan((self._probability(value, "icdf") - 0.5) * math.pi) * self.scale + self.loc

    def entropy(self):
        return log(self.scale) + math.log(4.0 * math.pi)


class HalfCauchy(_HalfScale):
    """|X| for X ~ Cauchy(0, scale): p(x) = 2 / (pi scale (1 + (x / scale)^2)) on x >= 0; cdf
    2 atan(x / scale) / pi, entropy log(2 pi scale); mean and variance infinite."""

    @property
    def mean(self):
        return _full(self, numpy.inf)

    @property
    def variance(self):
        return _full(self, numpy.inf)

    def rsample(self, sample_shape=()):
        return numpy.abs(self._noise("standard_cauchy", sample_shape)) * self.scale

    def log_prob(self, value):
        value = self._value(value, "log_prob")
        z = value / self.scale
        return _on_half_line(value, -log1p(z * z) - log(self.scale) + math.log(2.0 / math.pi))

    def cdf(self, value):
        return atan(self._value(value, "cdf") / self.scale) * (2.0 / math.pi)

    def icdf(self, value):
        return tan(self._probability(value, "icdf") * (math.pi / 2.0)) * self.scale

    def entropy(self):
        return log(self.scale) + math.log(2.0 * math.pi)


class HalfNormal(_HalfScale):
    """|X| for X ~ N(0, scale^2): log p(x) = log 2 - x^2 / (2 scale^2) - log scale - log sqrt(2 pi)
    on x >= 0; mean scale sqrt(2 / pi), variance scale^2 (1 - 2 / pi), cdf erf(x / (scale sqrt 2)),
    entropy 1/2 + log(scale sqrt(pi / 2))."""

    @property
    def mean(self):
        return self.scale * math.sqrt(2.0 / math.pi)

    @property
    def variance(self):
        return self.scale * self.scale * (1.0 - 2.0 / math.pi)

    def rsample(self, sample_shape=()):
        return numpy.abs(self._noise("standard_normal", sample_shape)) * self.scale

    def log_prob(self, value):
        value = self._value(value, "log_prob")
        z = value / self.scale
        return _on_half_line(value, z * z * -0.5 - log(self.scale) + (math.log(2.0) - LOG_SQRT_2PI))

    def cdf(self, value):
        return erf(self._value(value, "cdf") / (self.scale * SQRT_2))

    def icdf(self, value):
        return erfinv(self._probability(value, "icdf")) * self.scale * SQRT_2

    def entropy(self):
        return log(self.scale) + (0.5 + LOG_SQRT_2PI - math.log(2.0))


class Gumbel(_LocationScale):
    """The law of the maximum: log p(x) = -(z + e^-z) - log scale, z = (x - loc) / scale; cdf
    e^(-e^-z); mean loc + gamma scale (gamma Euler's constant), variance (pi scale)^2 / 6,
    entropy log scale + 1 + gamma; rsample loc - scale log(-log u), u ~ U(0, 1)."""

    @property
    def mean(self):
        return self.loc + self.scale * EULER_GAMMA

    @property
    def stddev(self):
        return self.scale * (math.pi / math.sqrt(6.0))

    @property
    def variance(self):
        return self.scale * self.scale * (math.pi * math.pi / 6.0)

    def rsample(self, sample_shape=()):
        u = _open_unit_noise(self, sample_shape)
        return self.loc - self.scale * numpy.log(-numpy.log(u))

    def log_prob(self, value):
        z = (self.loc - self._value(value, "log_prob")) / self.scale
        return z - exp(z) - log(self.scale)

    def cdf(self, value):
        return exp(-exp((self.loc - self._value(value, "cdf")) / self.scale))

    def icdf(self, value):
        return self.loc - self.scale * log(-log(self._probability(value, "icdf")))

    def entropy(self):
        return log(self.scale) + (1.0 + EULER_GAMMA)


class StudentT(Distribution):
    """Student's t with ``df`` degrees of freedom nu, location and scale:
    log p(x) = -(nu + 1)/2 log(1 + z^2 / nu) - log scale - log(nu pi)/2 - log B(nu/2, 1/2),
    z = (x - loc) / scale; mean loc (NaN for nu <= 1), variance scale^2 nu / (nu - 2) (inf for
    1 < nu <= 2, NaN for nu <= 1); rsample loc + scale X / sqrt(V / nu), X ~ N(0, 1),
    V ~ chi^2(nu) by the Gamma sampler's implicit gradients."""

    arg_constraints = {"df": constraints.positive, "loc": constraints.real, "scale": constraints.positive}
    support = constraints.real
    has_rsample = True

    def __init__(self, df, loc=0.0, scale=1.0, validate_args: bool | None = None):
        self.df, self.loc, self.scale = broadcast_parameters(df, loc, scale)
        super().__init__(self.df.shape, validate_args=validate_args)

    @property
    def mean(self):
        return where(self.df.data <= 1, numpy.nan, self.loc)

    @property
    def variance(self):
        df = self.df.data
        finite = where(df > 2, self.df, 3.0)         # keeps the unused branch finite
        value = self.scale * self.scale * finite / (finite - 2.0)
        return where(df <= 1, numpy.nan, where(df <= 2, numpy.inf, value))

    def rsample(self, sample_shape=()):
        normal = self._noise("standard_normal", sample_shape)
        chi2 = standard_gamma(self.df * 0.5, self._noise("random", sample_shape)) * 2.0
        return self.loc + self.scale * normal * rsqrt(chi2 / self.df)

    def _log_normalizer(self):
        """log(scale sqrt(nu pi)) + log Gamma(nu / 2) - log Gamma((nu + 1) / 2)."""
        df = self.df
        return (log(self.scale) + log(df) * 0.5 + 0.5 * math.log(math.pi) + lgamma(df * 0.5)
                - lgamma((df + 1.0) * 0.5))

    def log_prob(self, value):
        z = (self._value(value, "log_prob") - self.loc) / self.scale
        return (self.df + 1.0) * -0.5 * log1p(z * z / self.df) - self._log_normalizer()

    def entropy(self):
        df = self.df
        half, half_next = df * 0.5, (df + 1.0) * 0.5
        log_beta = lgamma(half) + math.lgamma(0.5) - lgamma(half_next)
        return (log(self.scale) + half_next * (digamma(half_next) - digamma(half)) + log(df) * 0.5 + log_beta)

    @property
    def mode(self) -> Tensor:
        """The most probable value: ``loc``."""
        return self.loc
