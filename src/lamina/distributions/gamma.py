"""Gamma and beta distributions, with reparameterized samples by implicit differentiation.

A Gamma(a, 1) draw is x = F^-1(u; a) for u ~ U(0, 1), F(x; a) = P(a, x) the regularized
incomplete gamma function. Holding u fixed, F(x(a); a) = u gives the implicit gradient
dx/da = -(dF/da) / (dF/dx), with dF/dx = x^(a-1) e^(-x) / Gamma(a) and dF/da, which has no
closed form, by a fourth-order central difference of P in a.
"""

from __future__ import annotations

import numpy

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.distributions import constraints
from lamina.distributions.distribution import Distribution, broadcast_parameters
from lamina.functional import clip, digamma, gammainc, lgamma, log, stack, xlogy
from lamina.functional.special import scipy_special

RELATIVE_STEP = 1e-3
"""The step of the difference quotient for dF/da, relative to a."""


def _dcdf_da(a, x):
    """dP(a, x)/da by the five-point stencil (error O(h^4), h = 1e-3 a): about 1e-11 relative."""
    p = scipy_special("gammainc")
    h = RELATIVE_STEP * a
    return (8.0 * (p(a + h, x) - p(a - h, x)) - (p(a + 2 * h, x) - p(a - 2 * h, x))) / (12.0 * h)


class StandardGammaDraw(Function):
    """x = F^-1(u; a), a Gamma(a, 1) draw from the uniform noise ``u`` (a constant); dx/da is the
    implicit gradient -(dF/da) / (dF/dx)."""

    def forward(self, a):
        a64 = backend.to_numpy(a).astype(numpy.float64)
        u = numpy.broadcast_to(self.u, numpy.broadcast_shapes(self.u.shape, a.shape))
        x = scipy_special("gammaincinv")(a64, u)
        self.x = numpy.maximum(x, numpy.finfo(a.dtype).tiny)   # tiny a: x underflows, kept > 0 as PyTorch
        self.a64 = numpy.broadcast_to(a64, x.shape)
        self.a_shape = a.shape
        return backend.xp.asarray(self.x.astype(a.dtype))

    def backward(self, dy):
        a, x = self.a64, self.x
        with numpy.errstate(divide="ignore", invalid="ignore", over="ignore", under="ignore"):
            density = numpy.exp(scipy_special("xlogy")(a - 1.0, x) - x - scipy_special("gammaln")(a))
            dx_da = -_dcdf_da(a, x) / density
        dx_da = numpy.where(numpy.isfinite(dx_da), dx_da, 0.0)
        grad = backend.to_numpy(dy) * dx_da
        extra = grad.ndim - len(self.a_shape)
        grad = grad.sum(axis=tuple(range(extra))) if extra else grad
        axes = tuple(i for i, n in enumerate(self.a_shape) if n == 1 and grad.shape[i] != 1)
        grad = grad.sum(axis=axes, keepdims=True) if axes else grad
        return (backend.xp.asarray(grad.reshape(self.a_shape).astype(dy.dtype)),)


def standard_gamma(concentration, u):
    """Gamma(concentration, 1) draws from uniform noise ``u``, differentiable in the concentration."""
    return StandardGammaDraw.apply(concentration, u=numpy.asarray(backend.to_numpy(u), dtype=numpy.float64))


class Gamma(Distribution):
    """Gamma(a, b) with concentration a and rate b: log p(x) = a log b + (a - 1) log x - b x -
    log Gamma(a); mean a / b, variance a / b^2, entropy a - log b + log Gamma(a) +
    (1 - a) digamma(a), cdf P(a, b x); rsample by implicit gradients (see the module)."""

    arg_constraints = {"concentration": constraints.positive, "rate": constraints.positive}
    support = constraints.nonnegative
    has_rsample = True

    def __init__(self, concentration, rate, validate_args: bool | None = None):
        self.concentration, self.rate = broadcast_parameters(concentration, rate)
        super().__init__(self.concentration.shape, validate_args=validate_args)

    @property
    def mean(self):
        return self.concentration / self.rate

    @property
    def variance(self):
        return self.concentration / (self.rate * self.rate)

    def rsample(self, sample_shape=()):
        u = self._noise("random", sample_shape)
        x = standard_gamma(self.concentration, u) / self.rate
        tiny = numpy.finfo(self.dtype).tiny
        return x if not bool((x.data < tiny).any()) else x.clip(tiny, None)

    def log_prob(self, value):
        value = self._value(value, "log_prob")
        a, b = self.concentration, self.rate
        return xlogy(a, b) + xlogy(a - 1.0, value) - b * value - lgamma(a)

    def entropy(self):
        a = self.concentration
        return a - log(self.rate) + lgamma(a) + (1.0 - a) * digamma(a)

    def cdf(self, value):
        return gammainc(self.concentration, self.rate * self._value(value, "cdf"))

    @property
    def mode(self) -> Tensor:
        """max((alpha - 1) / beta, 0) (also for Chi2)."""
        return clip((self.concentration - 1.0) / self.rate, 0.0, None)


class Beta(Distribution):
    """Beta(a, b) on [0, 1]: log p(x) = (a - 1) log x + (b - 1) log(1 - x) - log B(a, b),
    log B(a, b) = log Gamma(a) + log Gamma(b) - log Gamma(a + b); mean a / (a + b), variance
    a b / ((a + b)^2 (a + b + 1)); rsample X / (X + Y) for X ~ Gamma(a, 1), Y ~ Gamma(b, 1)."""

    arg_constraints = {"concentration1": constraints.positive, "concentration0": constraints.positive}
    support = constraints.unit_interval
    has_rsample = True

    def __init__(self, concentration1, concentration0, validate_args: bool | None = None):
        self.concentration1, self.concentration0 = broadcast_parameters(concentration1, concentration0)
        super().__init__(self.concentration1.shape, validate_args=validate_args)

    @property
    def mean(self):
        return self.concentration1 / (self.concentration1 + self.concentration0)

    @property
    def variance(self):
        a, b = self.concentration1, self.concentration0
        total = a + b
        return a * b / (total * total * (total + 1.0))

    def rsample(self, sample_shape=()):
        x = standard_gamma(self.concentration1, self._noise("random", sample_shape))
        y = standard_gamma(self.concentration0, self._noise("random", sample_shape))
        return x / (x + y)

    def _log_beta(self):
        a, b = self.concentration1, self.concentration0
        return lgamma(a) + lgamma(b) - lgamma(a + b)

    def log_prob(self, value):
        value = self._value(value, "log_prob")
        a, b = self.concentration1, self.concentration0
        return xlogy(a - 1.0, value) + xlogy(b - 1.0, 1.0 - value) - self._log_beta()

    def entropy(self):
        a, b = self.concentration1, self.concentration0
        return (self._log_beta() - (a - 1.0) * digamma(a) - (b - 1.0) * digamma(b)
                + (a + b - 2.0) * digamma(a + b))

    @property
    def mode(self) -> Tensor:
        """The Dirichlet mode's first entry for concentrations (a, b), as torch: (a - 1)_+ / ((a - 1)_+
        + (b - 1)_+), 1 when both are below 1 (the density is unbounded at both ends)."""
        from lamina.distributions.dirichlet import dirichlet_mode

        return dirichlet_mode(stack([self.concentration1, self.concentration0], axis=-1))[..., 0]
