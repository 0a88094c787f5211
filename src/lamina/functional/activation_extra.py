"""The rest of PyTorch's element-wise activations, each with its local gradient:

    hardtanh     a = min(max(z, min_val), max_val)          da/dz = 1 inside, 0 outside
    softsign     a = z / (1 + |z|)                          da/dz = 1 / (1 + |z|)^2
    log_sigmoid  a = log sigma(z) = -log(1 + e^-z)          da/dz = sigma(-z)
    celu         a = max(z, 0) + alpha (e^(min(z, 0)/alpha) - 1)   da/dz = e^(min(z, 0)/alpha)
    softmin      a = softmax(-z) along an axis
    tanhshrink   a = z - tanh z                             da/dz = tanh^2 z
    hardshrink   a = z where |z| > lambda, else 0           da/dz = 1 where |z| > lambda
    softshrink   a = z - lambda sign(z) where |z| > lambda, else 0   (the same slope)
    threshold    a = z where z > threshold, else value      da/dz = 1 where z > threshold

At the kinks the slope is PyTorch's: 0 for hardtanh at min_val and max_val, for the
shrinks at +-lambda and for threshold at the threshold. Every one stays finite for |z| up
to 1e4 in float32 (log_sigmoid as min(z, 0) - log(1 + e^-|z|), celu with expm1).
"""

from __future__ import annotations

import numbers

import numpy

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.functional.activation import Softmax, sigmoid, stable_sigmoid, tanh_values
from lamina.functional.elementwise import minimum
from lamina.functional.smooth_activation import _SlopeSaved

__all__ = ["celu", "hardshrink", "hardtanh", "log_sigmoid", "softmin", "softshrink", "softsign", "tanhshrink",
           "threshold"]


class _Gated(Function):
    """An activation whose slope is 1 where ``self.passes`` is True and 0 elsewhere."""

    def backward(self, dy):
        return (dy * self.passes,)

    def backward_graph(self, dy):
        return (dy * self.passes,)      # the gate is piecewise constant in z


class Hardtanh(_Gated):
    """a = min(max(z, min_val), max_val); the gradient passes where min_val < z < max_val.
    Integer z keeps its dtype, the bounds truncated to integers (as PyTorch)."""

    def forward(self, z):
        low, high = self.min_val, self.max_val
        if z.dtype.kind in "biu":
            low, high = _integer_bounds(z.dtype, low, high)
        self.passes = (z > low) & (z < high)
        return backend.xp.clip(z, low, high)


def _integer_bounds(dtype, low: float, high: float) -> tuple[int, int]:
    """hardtanh's bounds for integer inputs: truncated toward zero and kept within the dtype's range."""
    if dtype.kind == "b":
        raise TypeError("hardtanh: boolean inputs are not supported (as in PyTorch); cast them to a number dtype")
    if dtype.kind == "u" and low < 0:
        raise ValueError(f"hardtanh: an input of unsigned dtype {dtype} needs min_val >= 0, got min_val={low}")
    info = numpy.iinfo(dtype)
    return min(max(int(low), info.min), info.max), min(max(int(high), info.min), info.max)


class Softsign(_SlopeSaved):
    """a = z / (1 + |z|); da/dz = 1 / (1 + |z|)^2."""
    dtype_rule = "float"

    def forward(self, z):
        denominator = backend.xp.abs(z)
        denominator += 1
        self.slope = 1 / (denominator * denominator)
        return z / denominator

    def slope_of(self, z):
        return (z.abs() + 1) ** -2


class LogSigmoid(_SlopeSaved):
    """a = log sigma(z) = min(z, 0) - log(1 + e^-|z|) (no overflow for either sign);
    da/dz = 1 - sigma(z) = sigma(-z)."""

    def forward(self, z):
        xp = backend.xp
        self.slope = stable_sigmoid(-z)
        tail = xp.log1p(xp.exp(-xp.abs(z)))
        return xp.minimum(z, 0) - tail

    def slope_of(self, z):
        return sigmoid(-z)


class CELU(_SlopeSaved):
    """a = max(z, 0) + alpha (e^(min(z, 0) / alpha) - 1); da/dz = e^(min(z, 0) / alpha), which
    is 1 for z >= 0."""

    def forward(self, z):
        xp = backend.xp
        below = xp.expm1(xp.minimum(z, 0) / self.alpha)
        self.slope = below + 1
        return xp.maximum(z, 0) + self.alpha * below

    def slope_of(self, z):
        return (minimum(z, 0.0) / self.alpha).exp()


class Softmin(Softmax):
    """a = softmax(-z); dJ/dz = -(softmax's dJ/dz at -z)."""

    def forward(self, z):
        return super().forward(-z)

    def backward(self, dy):
        (dz,) = super().backward(dy)
        return (-dz,)

    def backward_graph(self, dy):
        (dz,) = super().backward_graph(dy)
        return (-dz,)


class Tanhshrink(_SlopeSaved):
    """a = z - tanh z; da/dz = 1 - (1 - tanh^2 z) = tanh^2 z."""
    dtype_rule = "float"

    def forward(self, z):
        t = tanh_values(z)
        self.slope = t * t
        return z - t

    def slope_of(self, z):
        t = z.tanh()
        return t * t


class Hardshrink(_Gated):
    """a = z where |z| > lambd, 0 elsewhere (0 at z = +-lambd)."""

    def forward(self, z):
        self.passes = backend.xp.abs(z) > self.lambd
        return z * self.passes


class Softshrink(_Gated):
    """a = z - clip(z, -lambd, lambd): z - lambd above lambd, z + lambd below -lambd, 0
    between."""

    def forward(self, z):
        xp = backend.xp
        self.passes = xp.abs(z) > self.lambd
        return z - xp.clip(z, -self.lambd, self.lambd)


class Threshold(_Gated):
    """a = z where z > threshold, ``value`` elsewhere."""

    def forward(self, z):
        self.passes = z > self.threshold
        return backend.xp.where(self.passes, z, backend.xp.asarray(self.value, dtype=z.dtype))


def _number(value, name: str, op: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{op}: {name} must be a number, got {value!r}")
    return float(value)


def _shrink_lambda(lambd, op: str) -> float:
    lambd = _number(lambd, "lambd", op)
    if lambd < 0:
        raise ValueError(f"{op}: lambd must be non-negative, got {lambd!r}")
    return lambd


def hardtanh(z, min_val: float = -1.0, max_val: float = 1.0) -> Tensor:
    """a = min(max(z, min_val), max_val) (min_val < max_val); relu6 is hardtanh(z, 0, 6)."""
    low, high = _number(min_val, "min_val", "hardtanh"), _number(max_val, "max_val", "hardtanh")
    if not low < high:
        raise ValueError(f"hardtanh: min_val must be less than max_val, got min_val={low}, max_val={high}")
    return Hardtanh.apply(z, min_val=low, max_val=high)


def softsign(z) -> Tensor:
    """a = z / (1 + |z|), a slower-saturating tanh."""
    return Softsign.apply(z)


def log_sigmoid(z) -> Tensor:
    """a = log sigma(z) = -softplus(-z), finite for every z."""
    return LogSigmoid.apply(z)


def celu(z, alpha: float = 1.0) -> Tensor:
    """Continuously differentiable ELU: a = max(z, 0) + alpha (e^(min(z, 0) / alpha) - 1),
    alpha > 0 (its slope is 1 at z = 0 for every alpha)."""
    alpha = _number(alpha, "alpha", "celu")
    if not alpha > 0:
        raise ValueError(f"celu: alpha must be positive, got {alpha!r}")
    return CELU.apply(z, alpha=alpha)


def softmin(z, axis: int = -1) -> Tensor:
    """a_i = e^(-z_i) / sum_j e^(-z_j) along ``axis``: the smallest z gets the most weight."""
    return Softmin.apply(z, axis=axis)


def tanhshrink(z) -> Tensor:
    """a = z - tanh z."""
    return Tanhshrink.apply(z)


def hardshrink(z, lambd: float = 0.5) -> Tensor:
    """a = z where |z| > lambd, else 0."""
    return Hardshrink.apply(z, lambd=_shrink_lambda(lambd, "hardshrink"))


def softshrink(z, lambd: float = 0.5) -> Tensor:
    """a = z - lambd sign(z) where |z| > lambd, else 0 (soft thresholding, the proximal step
    of an L1 penalty)."""
    return Softshrink.apply(z, lambd=_shrink_lambda(lambd, "softshrink"))


def threshold(z, threshold: float, value: float) -> Tensor:
    """a = z where z > threshold, else ``value``."""
    return Threshold.apply(z, threshold=_number(threshold, "threshold", "threshold"),
                           value=_number(value, "value", "threshold"))
