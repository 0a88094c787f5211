"""Distributions of positive quantities (waiting times, sizes, sums of squares): chi-squared,
Weibull and Pareto."""

from __future__ import annotations

import math

import numpy

from lamina.autograd import Tensor
from lamina.distributions import constraints
from lamina.distributions.distribution import Distribution, broadcast_parameters
from lamina.distributions.gamma import Gamma
from lamina.distributions.location_scale import EULER_GAMMA
from lamina.functional import clip, exp, expm1, lgamma, log, log1p, xlogy


class Chi2(Gamma):
    """chi^2 with ``df`` degrees of freedom nu, the sum of nu squared standard normals: the
    Gamma(nu / 2, rate 1/2) distribution, with its formulas and reparameterized draws."""

    arg_constraints = {"df": constraints.positive}

    def __init__(self, df, validate_args: bool | None = None):
        (self.df,) = broadcast_parameters(df)
        super().__init__(self.df * 0.5, 0.5, validate_args=validate_args)


class Weibull(Distribution):
    """Weibull with scale lambda and concentration k: log p(x) = log(k / lambda) +
    (k - 1) log(x / lambda) - (x / lambda)^k on x > 0; cdf 1 - e^(-(x / lambda)^k); mean
    lambda Gamma(1 + 1/k), variance lambda^2 (Gamma(1 + 2/k) - Gamma(1 + 1/k)^2), entropy
    gamma (1 - 1/k) + log(lambda / k) + 1 (gamma Euler's constant); rsample lambda E^(1/k),
    E ~ Exp(1)."""

    arg_constraints = {"scale": constraints.positive, "concentration": constraints.positive}
    support = constraints.positive
    has_rsample = True

    def __init__(self, scale, concentration, validate_args: bool | None = None):
        self.scale, self.concentration = broadcast_parameters(scale, concentration)
        super().__init__(self.scale.shape, validate_args=validate_args)

    @property
    def mean(self):
        return self.scale * exp(lgamma(1.0 / self.concentration + 1.0))

    @property
    def variance(self):
        inverse = 1.0 / self.concentration
        return self.scale * self.scale * (exp(lgamma(inverse * 2.0 + 1.0)) - exp(lgamma(inverse + 1.0) * 2.0))

    def rsample(self, sample_shape=()):
        return self.scale * self._noise("standard_exponential", sample_shape) ** (1.0 / self.concentration)

    def log_prob(self, value):
        k = self.concentration
        z = self._value(value, "log_prob") / self.scale
        return log(k / self.scale) + xlogy(k - 1.0, z) - z ** k

    def cdf(self, value):
        return -expm1(-(self._value(value, "cdf") / self.scale) ** self.concentration)

    def icdf(self, value):
        return self.scale * (-log1p(-self._probability(value, "icdf"))) ** (1.0 / self.concentration)

    def entropy(self):
        inverse = 1.0 / self.concentration
        return (1.0 - inverse) * EULER_GAMMA + log(self.scale * inverse) + 1.0

    @property
    def mode(self) -> Tensor:
        """lambda ((k - 1) / k)^(1/k) (NaN for k < 1, as torch)."""
        k = self.concentration
        return self.scale * ((k - 1.0) / k) ** (1.0 / k)


class Pareto(Distribution):
    """Pareto with scale x_m and shape alpha on x >= x_m: log p(x) = log alpha + alpha log x_m -
    (alpha + 1) log x; cdf 1 - (x_m / x)^alpha; mean alpha x_m / (alpha - 1) (inf for alpha <= 1),
    variance x_m^2 alpha / ((alpha - 1)^2 (alpha - 2)) (inf for alpha <= 2), entropy
    log(x_m / alpha) + 1 + 1 / alpha; rsample x_m e^(E / alpha), E ~ Exp(1)."""

    arg_constraints = {"scale": constraints.positive, "alpha": constraints.positive}
    has_rsample = True

    def __init__(self, scale, alpha, validate_args: bool | None = None):
        self.scale, self.alpha = broadcast_parameters(scale, alpha)
        super().__init__(self.scale.shape, validate_args=validate_args)

    @property
    def support(self):
        return constraints.Interval(self.scale.data, math.inf, description=">= scale")

    @property
    def mean(self):
        a = clip(self.alpha, 1.0, None)
        with numpy.errstate(divide="ignore"):
            return a * self.scale / (a - 1.0)

    @property
    def variance(self):
        a = clip(self.alpha, 2.0, None)
        with numpy.errstate(divide="ignore"):
            return self.scale * self.scale * a / ((a - 1.0) * (a - 1.0) * (a - 2.0))

    def rsample(self, sample_shape=()):
        return self.scale * exp(self._noise("standard_exponential", sample_shape) / self.alpha)

    def log_prob(self, value):
        log_ratio = log(self._value(value, "log_prob") / self.scale)
        return log(self.alpha) - (self.alpha + 1.0) * log_ratio - log(self.scale)

    def cdf(self, value):
        return -expm1(-self.alpha * log(self._value(value, "cdf") / self.scale))

    def icdf(self, value):
        return self.scale * exp(-log1p(-self._probability(value, "icdf")) / self.alpha)

    def entropy(self):
        return log(self.scale / self.alpha) + 1.0 + 1.0 / self.alpha

    @property
    def mode(self) -> Tensor:
        """The most probable value: the scale x_m."""
        return self.scale
