"""The von Mises distribution, the circular analogue of the normal, with the modified Bessel
function it is normalized by:

    log p(x) = kappa cos(x - mu) - log(2 pi I_0(kappa)),
    d log I_0(k)/dk = I_1(k) / I_0(k) = A(k),   dA/dk = 1 - A(k) / k - A(k)^2,

the second identity from I_0' = I_1 and I_1' = I_0 - I_1 / k. Both ops take their values from
SciPy's exponentially scaled Bessel functions (log I_0(k) = log i0e(k) + |k|), so they stay
finite for large concentrations.
"""

from __future__ import annotations

import math

import numpy

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.distributions import constraints
from lamina.distributions.distribution import Distribution, broadcast_parameters
from lamina.functional import cos
from lamina.functional.special import scipy_special


def _as_dtype_of(values, x):
    return backend.xp.asarray(values).astype(x.dtype, copy=False)


class LogBesselI0(Function):
    """y = log I_0(k); dy/dk = I_1(k) / I_0(k), itself an op (second derivatives)."""

    def forward(self, k):
        self.k = k
        return _as_dtype_of(backend.xp.log(scipy_special("i0e")(k)) + backend.xp.abs(k), k)

    def backward(self, dy):
        return (dy * _bessel_ratio_values(self.k),)

    def backward_graph(self, dy):
        return (dy * bessel_ratio(self.inputs[0]),)


def _bessel_ratio_values(k):
    return _as_dtype_of(scipy_special("i1e")(k) / scipy_special("i0e")(k), k)


class BesselRatio(Function):
    """y = I_1(k) / I_0(k); dy/dk = 1 - y / k - y^2 (its limit 1/2 at k = 0)."""

    def forward(self, k):
        self.k = k
        self.y = _bessel_ratio_values(k)
        return self.y

    def backward(self, dy):
        k, y = self.k, self.y
        with numpy.errstate(divide="ignore", invalid="ignore"):
            slope = backend.xp.where(k == 0, 0.5, 1.0 - y / k - y * y)
        return (dy * slope,)

    def backward_graph(self, dy):
        k, y = self.inputs[0], self.recorded_output(self.y)
        return (dy * (1.0 - y / k - y * y),)


def log_bessel_i0(k):
    """log I_0(k), element-wise (I_0 the modified Bessel function of the first kind, order 0)."""
    return LogBesselI0.apply(k)


def bessel_ratio(k):
    """I_1(k) / I_0(k), element-wise: the mean resultant length of VonMises(., k)."""
    return BesselRatio.apply(k)


class VonMises(Distribution):
    """Angles around ``loc`` mu with ``concentration`` kappa: log p(x) = kappa cos(x - mu) -
    log(2 pi I_0(kappa)); mean mu, circular variance 1 - I_1(kappa) / I_0(kappa). Draws (in
    [-pi, pi), no rsample) come from NumPy's von Mises sampler on lamina's generator."""

    arg_constraints = {"loc": constraints.real, "concentration": constraints.positive}
    support = constraints.real

    def __init__(self, loc, concentration, validate_args: bool | None = None):
        self.loc, self.concentration = broadcast_parameters(loc, concentration)
        super().__init__(self.loc.shape, validate_args=validate_args)

    @property
    def mean(self):
        return self.loc

    @property
    def variance(self):
        return 1.0 - bessel_ratio(self.concentration)

    def sample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        loc = numpy.broadcast_to(backend.to_numpy(self.loc.data).astype(numpy.float64), shape)
        kappa = numpy.broadcast_to(backend.to_numpy(self.concentration.data).astype(numpy.float64), shape)
        angles = backend.rng().vonmises(loc, kappa)
        wrapped = numpy.mod(angles + math.pi, 2.0 * math.pi) - math.pi
        return Tensor._wrap(backend.xp.asarray(wrapped.astype(self.dtype)))

    def log_prob(self, value):
        value = self._value(value, "log_prob")
        return self.concentration * cos(value - self.loc) - log_bessel_i0(self.concentration) - math.log(2 * math.pi)

    @property
    def mode(self) -> Tensor:
        """The most probable value: ``loc``."""
        return self.loc
