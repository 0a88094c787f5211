"""Laplace, uniform and exponential distributions: closed forms for everything."""

from __future__ import annotations

import math

import numpy

from lamina import backend
from lamina.autograd import Tensor
from lamina.distributions import constraints
from lamina.distributions.distribution import Distribution, _LocationScale, broadcast_parameters
from lamina.functional import clip, expm1, log, log1p, sign, where


class Laplace(_LocationScale):
    """p(x) = e^(-|x - loc| / scale) / (2 scale); variance 2 scale^2, entropy 1 + log(2 scale);
    rsample loc - scale sign(u) log(1 - |u|), u ~ U(-1, 1)."""

    @property
    def mean(self):
        return self.loc

    @property
    def variance(self):
        return self.scale * self.scale * 2.0

    @property
    def stddev(self):
        return self.scale * math.sqrt(2.0)

    def rsample(self, sample_shape=()):
        eps = numpy.finfo(self.dtype).eps
        u = self._noise("uniform", sample_shape, low=eps - 1.0, high=1.0)
        return self.loc - self.scale * (numpy.sign(u) * numpy.log1p(-numpy.abs(u)))

    def log_prob(self, value):
        value = self._value(value, "log_prob")
        return -log(self.scale * 2.0) - (value - self.loc).abs() / self.scale

    def entropy(self):
        return log(self.scale * 2.0) + 1.0

    def cdf(self, value):
        d = self._value(value, "cdf") - self.loc
        return 0.5 - sign(d) * expm1(-d.abs() / self.scale) * 0.5

    def icdf(self, value):
        t = self._probability(value, "icdf") - 0.5
        return self.loc - self.scale * sign(t) * log1p(t.abs() * -2.0)


class Uniform(Distribution):
    """U(low, high): density 1 / (high - low) on [low, high]; mean (low + high) / 2, variance
    (high - low)^2 / 12, entropy log(high - low); rsample low + (high - low) u, u ~ U(0, 1)."""

    arg_constraints = {"low": constraints.real, "high": constraints.real}
    has_rsample = True

    def __init__(self, low, high, validate_args: bool | None = None):
        self.low, self.high = broadcast_parameters(low, high)
        super().__init__(self.low.shape, validate_args=validate_args)
        if self._validate_args and bool((self.high.data <= self.low.data).any()):
            bad = self.high.data <= self.low.data
            raise ValueError(f"Uniform: argument high must be > low; got high <= low at "
                             f"{numpy.argwhere(bad).tolist()[:5]}: low {self.low.data[bad].tolist()[:5]}, "
                             f"high {self.high.data[bad].tolist()[:5]}")

    @property
    def support(self):
        return constraints.Interval(self.low.data, self.high.data, description="in [low, high]")

    @property
    def mean(self):
        return (self.low + self.high) * 0.5

    @property
    def variance(self):
        width = self.high - self.low
        return width * width / 12.0

    def rsample(self, sample_shape=()):
        return self.low + (self.high - self.low) * self._noise("random", sample_shape)

    def log_prob(self, value):
        value = self._value(value, "log_prob")
        inside = (value.data >= self.low.data) & (value.data < self.high.data)
        return where(inside, -log(self.high - self.low), -numpy.inf)

    def entropy(self):
        return log(self.high - self.low)

    def cdf(self, value):
        value = self._value(value, "cdf")
        return clip((value - self.low) / (self.high - self.low), 0.0, 1.0)

    def icdf(self, value):
        return self.low + (self.high - self.low) * self._probability(value, "icdf")

    @property
    def mode(self) -> Tensor:
        """Undefined (every value of [low, high) is as probable): NaN, as torch."""
        return Tensor._wrap(backend.xp.full(self.high.shape, backend.xp.nan, dtype=self.high.dtype))


class Exponential(Distribution):
    """p(x) = rate e^(-rate x) on x >= 0; mean 1 / rate, variance 1 / rate^2, entropy 1 - log rate,
    cdf 1 - e^(-rate x); rsample e / rate, e ~ Exp(1)."""

    arg_constraints = {"rate": constraints.positive}
    support = constraints.nonnegative
    has_rsample = True

    def __init__(self, rate, validate_args: bool | None = None):
        (self.rate,) = broadcast_parameters(rate)
        super().__init__(self.rate.shape, validate_args=validate_args)

    @property
    def mean(self):
        return 1.0 / self.rate

    @property
    def variance(self):
        return 1.0 / (self.rate * self.rate)

    @property
    def stddev(self):
        return 1.0 / self.rate

    def rsample(self, sample_shape=()):
        return self._noise("standard_exponential", sample_shape) / self.rate

    def log_prob(self, value):
        return log(self.rate) - self.rate * self._value(value, "log_prob")

    def entropy(self):
        return 1.0 - log(self.rate)

    def cdf(self, value):
        return -expm1(-self.rate * self._value(value, "cdf"))

    def icdf(self, value):
        return -log1p(-self._probability(value, "icdf")) / self.rate

    @property
    def mode(self) -> Tensor:
        """The most probable value: 0."""
        return Tensor._wrap(backend.xp.zeros(self.rate.shape, dtype=self.rate.dtype))
