"""Activations of later networks than the course notes' ones, each with its local gradient:
the smooth GELU (BERT, GPT, ViT), SiLU or swish and Mish, Softplus, and the piecewise-linear
hard sigmoid and hard swish of MobileNet v3.

Every one saves what its backward needs in one array where it can (the slope da/dz), and
stays finite for |z| up to 1e4 in float32.
"""

from __future__ import annotations

import math

from lamina import backend, parallel
from lamina.autograd import Function, Tensor
from lamina.functional.activation import TRANSCENDENTAL_COST, _sigmoid_into, chain_into, sigmoid, stable_sigmoid
from lamina.functional.elementwise import where
from lamina.functional.special import scipy_special

GELU_TANH_C = math.sqrt(2.0 / math.pi)
GELU_TANH_K = 0.044715
INV_SQRT_2 = 1.0 / math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def erfc(z):
    """The complementary error function 1 - erf(z) of an array, element-wise (SciPy's)."""
    return scipy_special("erfc")(z)


# erfc(a) ~ t exp(-a^2 + P(t)), t = 1 / (1 + a/2), a >= 0: a Chebyshev fit with a relative
# error below 1.2e-7 for every a (Numerical Recipes' erfcc), float32's own precision
_ERFC_P = (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806, 0.27886807, -1.13520398,
           1.48851587, -0.82215223, 0.17087277)


def _gelu_float32_into(z, slope, out):
    """GELU's a (into ``out``) and da/dz (into ``slope``) for a float32 block, with erfc
    from the fit above: about 25 NumPy passes over a cache-sized block, 10x faster than
    SciPy's double-precision erfc on float32 data."""
    xp = backend.xp
    f = z.dtype.type
    a = xp.asarray(xp.multiply(z, f(INV_SQRT_2)))   # Phi(z) = erfc(-z / sqrt 2) / 2; a = |z| / sqrt 2
    xp.abs(a, out=a)                                 # (asarray: an array, not a scalar, for a 0-d z)
    t = xp.asarray(xp.multiply(a, f(0.5)))
    t += 1
    xp.reciprocal(t, out=t)
    poly = xp.full_like(t, f(_ERFC_P[-1]))
    for c in _ERFC_P[-2::-1]:
        poly *= t
        poly += f(c)
    xp.square(a, out=a)                     # a^2 = z^2 / 2
    xp.negative(a, out=a)
    xp.exp(a, out=a)                        # e^(-z^2 / 2)
    xp.exp(poly, out=poly)
    poly *= t
    poly *= a                               # erfc(|z| / sqrt 2)
    poly *= f(0.5)                          # Phi(-|z|), the smaller tail
    # Phi(z) = Phi(-|z|) for z <= 0 and 1 - Phi(-|z|) for z > 0: tail + [z > 0] (1 - 2 tail)
    xp.greater(z, 0, out=out)
    flip = xp.multiply(poly, f(-2))
    flip += 1
    flip *= out
    poly += flip                            # Phi(z)
    xp.multiply(z, poly, out=out)           # a = z Phi(z)
    a *= z
    a *= f(INV_SQRT_2PI)                    # z phi(z)
    xp.add(poly, a, out=slope)


def _softplus_values(z):
    """log(1 + e^z) = max(z, 0) + log(1 + e^-|z|), without overflow for either sign."""
    xp = backend.xp
    out = xp.asarray(xp.abs(z))             # an array even for a 0-d z (NumPy returns a scalar)
    xp.negative(out, out=out)
    xp.exp(out, out=out)
    xp.log1p(out, out=out)
    out += xp.maximum(z, 0)
    return out


class _SlopeSaved(Function):
    """An activation whose backward is dJ/dz = dJ/da * slope, with the slope da/dz computed in
    the forward pass (one saved array, whatever the activation needs to compute it).

    The differentiable backward cannot use that array: the slope depends on z, and its own
    derivative d^2a/dz^2 is needed there. So each subclass also writes the slope as recorded
    ops on z (:meth:`slope_of`)."""

    def backward(self, dy):
        return (chain_into(_times, [dy, self.slope]),)

    def slope_of(self, z: Tensor) -> Tensor:
        """The slope da/dz as recorded ops on the input tensor ``z``, for :meth:`backward_graph`
        (the saved slope is a function of z, so its own derivative is needed there)."""
        raise NotImplementedError

    def backward_graph(self, dy):
        return (dy * self.slope_of(self.inputs[0]),)


def _times(a, b, out):
    backend.xp.multiply(a, b, out=out)


def _normal_density(z: Tensor) -> Tensor:
    """phi(z) = e^(-z^2/2) / sqrt(2 pi), by recorded ops."""
    return (z * z * -0.5).exp() * INV_SQRT_2PI


class _NormalCDF(Function):
    """Phi(z) = erfc(-z / sqrt 2) / 2, the standard normal CDF (GELU's gate, for its
    differentiable backward); dPhi/dz = phi(z)."""

    def forward(self, z):
        self.z = z
        out = erfc(z * -INV_SQRT_2)
        out *= 0.5
        return out

    def backward(self, dy):
        z = self.z
        return (dy * (backend.xp.exp(-0.5 * z * z) * INV_SQRT_2PI),)

    def backward_graph(self, dy):
        return (dy * _normal_density(self.inputs[0]),)


class GELU(_SlopeSaved):
    """a = z Phi(z), Phi the standard normal CDF: Phi(z) = (1 + erf(z / sqrt 2)) / 2, computed
    as erfc(-z / sqrt 2) / 2, which keeps its digits in the left tail where 1 + erf cancels
    (SciPy's erfc; on float32 NumPy arrays a float32 fit of erfc, as precise as float32);
    da/dz = Phi(z) + z phi(z), phi(z) = e^(-z^2/2) / sqrt(2 pi).

    ``approximate='tanh'``: a = z (1 + t) / 2 with t = tanh(u), u = sqrt(2/pi) (z + k z^3),
    k = 0.044715; da/dz = (1 + t) / 2 + z (1 - t^2) sqrt(2/pi) (1 + 3 k z^2) / 2."""

    approximate = "none"

    def forward(self, z):
        xp = backend.xp
        if self.approximate == "tanh":
            z2 = z * z
            t = xp.tanh(GELU_TANH_C * z * (1 + GELU_TANH_K * z2))
            half_one_plus_t = 0.5 * (1 + t)
            self.slope = half_one_plus_t + (0.5 * GELU_TANH_C) * z * (1 - t * t) * (1 + 3 * GELU_TANH_K * z2)
            return z * half_one_plus_t
        if xp.__name__ == "numpy" and z.dtype == xp.float32:
            self.slope = xp.empty_like(z)
            out = xp.empty_like(z)
            parallel.elementwise_chain(_gelu_float32_into, [z, self.slope, out], 6 * TRANSCENDENTAL_COST)
            return out
        cdf = erfc(z * -INV_SQRT_2)
        cdf *= 0.5
        density = xp.exp(-0.5 * z * z)
        density *= INV_SQRT_2PI * z
        self.slope = (cdf + density).astype(z.dtype, copy=False)       # float16: SciPy's erfc is wider
        return (z * cdf).astype(z.dtype, copy=False)

    def slope_of(self, z):
        if self.approximate == "tanh":
            t = ((z + GELU_TANH_K * z * z * z) * GELU_TANH_C).tanh()
            return 0.5 * (1 + t) + (0.5 * GELU_TANH_C) * z * (1 - t * t) * (1 + (3 * GELU_TANH_K) * z * z)
        return _NormalCDF.apply(z) + _normal_density(z) * z


def _silu_into(z, slope, out):
    """SiLU's a = z sigma(z) (into ``out``) and da/dz = sigma(z) + a (1 - sigma(z)) (into
    ``slope``) for one block, the sigmoid held in ``slope`` meanwhile."""
    xp = backend.xp
    _sigmoid_into(z, slope)
    xp.multiply(z, slope, out=out)
    rest = xp.subtract(1, slope)
    rest *= out
    slope += rest


class SiLU(_SlopeSaved):
    """a = z sigma(z) (swish with beta = 1); da/dz = sigma(z) (1 + z (1 - sigma(z))) =
    sigma(z) + a (1 - sigma(z))."""

    def forward(self, z):
        xp = backend.xp
        z = xp.asarray(z)
        self.slope = xp.empty_like(z)
        out = xp.empty_like(z)
        parallel.elementwise_chain(_silu_into, [z, self.slope, out], 2 * TRANSCENDENTAL_COST)
        return out

    def slope_of(self, z):
        s = sigmoid(z)
        return s * (1 + z * (1 - s))


class Softplus(_SlopeSaved):
    """a = log(1 + e^(beta z)) / beta, and a = z where beta z > threshold (as PyTorch, where
    the two agree to float precision); da/dz = sigma(beta z), and 1 above the threshold."""

    def forward(self, z):
        xp = backend.xp
        scaled = z * self.beta if self.beta != 1 else z
        a = _softplus_values(scaled)
        if self.beta != 1:
            a /= self.beta
        self.slope = stable_sigmoid(scaled)
        linear = scaled > self.threshold
        if linear.any():
            a = xp.where(linear, z, a)
            self.slope[linear] = 1
        return a

    def slope_of(self, z):
        slope = sigmoid(z * self.beta if self.beta != 1 else z)
        linear = z.data * self.beta > self.threshold
        return where(linear, 1.0, slope) if linear.any() else slope


class Mish(_SlopeSaved):
    """a = z tanh(softplus(z)); with t = tanh(softplus(z)), da/dz = t + z (1 - t^2) sigma(z)."""

    def forward(self, z):
        xp = backend.xp
        t = xp.tanh(_softplus_values(z))
        self.slope = 1 - t * t
        self.slope *= z
        self.slope *= stable_sigmoid(z)
        self.slope += t
        return z * t

    def slope_of(self, z):
        t = Softplus.apply(z, beta=1.0, threshold=math.inf).tanh()
        return t + z * (1 - t * t) * sigmoid(z)


class HardSigmoid(Function):
    """a = min(max(z + 3, 0), 6) / 6 (PyTorch's and Keras 3's); da/dz = 1/6 for -3 < z < 3,
    0 elsewhere (the kinks included)."""

    def forward(self, z):
        self.inside = (z > -3) & (z < 3)
        return chain_into(_hard_sigmoid_into, [z])

    def backward(self, dy):
        return (dy * self.inside / 6,)

    def backward_graph(self, dy):
        return (dy * (self.inside / 6),)


def _hard_sigmoid_into(z, out):
    xp = backend.xp
    xp.add(z, 3, out=out)
    xp.clip(out, 0, 6, out=out)
    out /= 6


class HardSwish(_SlopeSaved):
    """a = z min(max(z + 3, 0), 6) / 6; da/dz = 0 for z <= -3, z/3 + 1/2 for -3 < z < 3 and
    1 for z >= 3 (PyTorch's values at the kinks)."""

    def forward(self, z):
        xp = backend.xp
        self.slope = xp.asarray(z / 3 + 0.5)   # an array even for a 0-d z
        self.slope[z <= -3] = 0
        self.slope[z >= 3] = 1
        gate = xp.clip(z + 3, 0, 6)
        gate /= 6
        gate *= z
        return gate

    def slope_of(self, z):
        inside = (z.data > -3) & (z.data < 3)
        return where(inside, z / 3 + 0.5, self.slope)      # the saved slope is the constant 0 or 1 outside


def gelu(z, approximate: str = "none") -> Tensor:
    """GELU, a = z Phi(z); ``approximate='tanh'`` for the tanh form (GPT-2, BERT's code)."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return GELU.apply(z, approximate=approximate)


def gelu_tanh(z) -> Tensor:
    """GELU in its tanh approximation."""
    return GELU.apply(z, approximate="tanh")


def silu(z) -> Tensor:
    """SiLU (swish), a = z sigma(z)."""
    return SiLU.apply(z)


def softplus(z, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    """Softplus, a = log(1 + e^(beta z)) / beta (linear above ``threshold``)."""
    if not beta > 0:
        raise ValueError(f"softplus: beta must be positive, got {beta!r}")
    return Softplus.apply(z, beta=float(beta), threshold=float(threshold))


def mish(z) -> Tensor:
    """Mish, a = z tanh(softplus(z))."""
    return Mish.apply(z)


def hard_sigmoid(z) -> Tensor:
    """Hard sigmoid, a = relu6(z + 3) / 6."""
    return HardSigmoid.apply(z)


def hard_swish(z) -> Tensor:
    """Hard swish, a = z relu6(z + 3) / 6."""
    return HardSwish.apply(z)
