"""The normal distribution and the log-normal (the law of e^X for a normal X)."""

from __future__ import annotations

import math

from lamina.autograd import Tensor
from lamina.distributions import constraints
from lamina.distributions.distribution import _LocationScale
from lamina.functional import erf, erfinv, exp, log

LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
SQRT_2 = math.sqrt(2.0)


class Normal(_LocationScale):
    """N(loc, scale^2): log p(x) = -(x - loc)^2 / (2 scale^2) - log scale - log sqrt(2 pi);
    entropy 1/2 + log sqrt(2 pi) + log scale; cdf (1 + erf((x - loc) / (scale sqrt 2))) / 2;
    rsample loc + scale eps, eps ~ N(0, 1)."""

    @property
    def mean(self):
        return self.loc

    @property
    def variance(self):
        return self.scale * self.scale

    @property
    def stddev(self):
        return self.scale

    def rsample(self, sample_shape=()):
        return self.loc + self._noise("standard_normal", sample_shape) * self.scale

    def log_prob(self, value):
        value = self._value(value, "log_prob")
        z = (value - self.loc) / self.scale
        return z * z * -0.5 - log(self.scale) - LOG_SQRT_2PI

    def entropy(self):
        return log(self.scale) + (0.5 + LOG_SQRT_2PI)

    def cdf(self, value):
        value = self._value(value, "cdf")
        return (erf((value - self.loc) / (self.scale * SQRT_2)) + 1.0) * 0.5

    def icdf(self, value):
        p = self._probability(value, "icdf")
        return self.loc + self.scale * erfinv(p * 2.0 - 1.0) * SQRT_2


class LogNormal(_LocationScale):
    """The law of e^X for X ~ N(loc, scale^2): log p(y) = log N(log y) - log y; mean
    e^(loc + scale^2 / 2), variance (e^(scale^2) - 1) e^(2 loc + scale^2), entropy that of the
    normal plus loc."""

    support = constraints.positive

    def __init__(self, loc, scale, validate_args: bool | None = None):
        super().__init__(loc, scale, validate_args=validate_args)
        self.base_dist = Normal(self.loc, self.scale, validate_args=False)

    @property
    def mean(self):
        return exp(self.loc + self.scale * self.scale * 0.5)

    @property
    def variance(self):
        s2 = self.scale * self.scale
        return (exp(s2) - 1.0) * exp(self.loc * 2.0 + s2)

    def rsample(self, sample_shape=()):
        return exp(self.base_dist.rsample(sample_shape))

    def log_prob(self, value):
        log_value = log(self._value(value, "log_prob"))
        return self.base_dist.log_prob(log_value) - log_value

    def entropy(self):
        return self.base_dist.entropy() + self.loc

    def cdf(self, value):
        return self.base_dist.cdf(log(self._value(value, "cdf")))

    def icdf(self, value):
        return exp(self.base_dist.icdf(self._probability(value, "icdf")))

    @property
    def mode(self) -> Tensor:
        """exp(mu - sigma^2)."""
        return exp(self.loc - self.scale * self.scale)
