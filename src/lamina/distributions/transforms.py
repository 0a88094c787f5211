"""Invertible maps y = f(x) with the log-determinant of their Jacobian, the pieces of a
:class:`~lamina.distributions.TransformedDistribution` (change of variables):

    log p_Y(y) = log p_X(f^-1(y)) - log |det df/dx| at x = f^-1(y).

Each transform is called on tensors (``t(x)``), has its inverse as a transform (``t.inv``, whose
call is f^-1), and gives ``log_abs_det_jacobian(x, y)`` element-wise, or summed over the last
``event_dim`` axes for a transform that acts on vectors (an AffineTransform with event_dim > 0).
"""

from __future__ import annotations

import math

import numpy

from lamina import backend
from lamina.autograd import Tensor
from lamina.distributions import constraints
from lamina.distributions.distribution import as_tensor
from lamina.functional import atanh, broadcast_to, clip, exp, expm1, log, log1p, sigmoid, sign, softplus, tanh
from lamina.functional import sum as total


def _tensor(x) -> Tensor:
    """``x`` as a tensor: floating arrays keep their dtype, numbers take the default one."""
    floating = isinstance(x, numpy.ndarray) and x.dtype.kind == "f"
    return as_tensor(x, x.dtype if floating else backend.get_default_dtype())


def _sum_rightmost(t: Tensor, n: int) -> Tensor:
    return total(t, axis=tuple(range(-n, 0))) if n > 0 else t


def _same_values(a, b) -> bool:
    a = a.data if isinstance(a, Tensor) else a
    b = b.data if isinstance(b, Tensor) else b
    return a is b or bool(numpy.all(numpy.asarray(a) == numpy.asarray(b)))


def _shape_of(value) -> tuple[int, ...]:
    return tuple(getattr(value, "shape", ()))


class Transform:
    """A bijection from ``domain`` to ``codomain``. ``sign`` is +1 or -1 for a monotone map of
    scalars (increasing or decreasing; a tensor when it varies per entry), ``event_dim`` the
    number of trailing axes that form one value."""

    domain: constraints.Constraint = constraints.real
    codomain: constraints.Constraint = constraints.real
    bijective = True
    sign = 1
    event_dim = 0

    def __call__(self, x) -> Tensor:
        return self._call(_tensor(x))

    @property
    def inv(self) -> Transform:
        """The inverse transform: ``t.inv(y)`` is f^-1(y)."""
        return _InverseTransform(self)

    def _call(self, x: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no forward map")

    def _inverse(self, y: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no inverse")

    def log_abs_det_jacobian(self, x, y) -> Tensor:
        """log |det df/dx| at x (with y = f(x)), one value per event."""
        raise NotImplementedError(f"{type(self).__name__}.log_abs_det_jacobian is not implemented")

    def forward_shape(self, shape) -> tuple[int, ...]:
        """The shape of f(x) for x of ``shape`` (parameters of the transform may broadcast it)."""
        return tuple(shape)

    def inverse_shape(self, shape) -> tuple[int, ...]:
        return tuple(shape)

    def __eq__(self, other) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class _InverseTransform(Transform):
    """f^-1 of a transform f: calls its inverse, and log|det| is minus f's at the swapped pair."""

    def __init__(self, transform: Transform):
        self._forward = transform

    @property
    def domain(self):
        return self._forward.codomain

    @property
    def codomain(self):
        return self._forward.domain

    @property
    def sign(self):
        return self._forward.sign

    @property
    def event_dim(self):
        return self._forward.event_dim

    @property
    def inv(self) -> Transform:
        return self._forward

    def _call(self, x):
        return self._forward._inverse(x)

    def _inverse(self, y):
        return self._forward._call(y)

    def log_abs_det_jacobian(self, x, y):
        return -self._forward.log_abs_det_jacobian(y, x)

    def forward_shape(self, shape):
        return self._forward.inverse_shape(shape)

    def inverse_shape(self, shape):
        return self._forward.forward_shape(shape)

    def __eq__(self, other) -> bool:
        return isinstance(other, _InverseTransform) and self._forward == other._forward

    def __hash__(self) -> int:
        return hash(("inverse", self._forward))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._forward!r})"


class ExpTransform(Transform):
    """y = e^x on the reals; log|dy/dx| = x."""

    codomain = constraints.positive

    def _call(self, x):
        return exp(x)

    def _inverse(self, y):
        return log(y)

    def log_abs_det_jacobian(self, x, y):
        return _tensor(x)


class AffineTransform(Transform):
    """y = loc + scale x; log|dy/dx| = log|scale|, summed over the last ``event_dim`` axes when
    the transform acts on vectors (matrices, ...) of that many axes."""

    def __init__(self, loc, scale, event_dim: int = 0):
        self.loc, self.scale = loc, scale
        self.event_dim = event_dim
        self.domain = self.codomain = (constraints.IndependentConstraint(constraints.real, event_dim)
                                       if event_dim else constraints.real)

    @property
    def sign(self):
        if isinstance(self.scale, (int, float)):
            return 1 if self.scale > 0 else -1 if self.scale < 0 else 0
        return sign(_tensor(self.scale))

    def _call(self, x):
        return x * self.scale + self.loc

    def _inverse(self, y):
        return (y - self.loc) / self.scale

    def log_abs_det_jacobian(self, x, y):
        x = _tensor(x)
        shape = tuple(x.shape)
        if isinstance(self.scale, (int, float)):
            per_entry = Tensor._wrap(numpy.full(shape, math.log(abs(self.scale)), dtype=x.dtype))
        else:
            per_entry = log(_tensor(self.scale).abs())
            full = numpy.broadcast_shapes(tuple(per_entry.shape), shape)
            per_entry = per_entry if tuple(per_entry.shape) == full else broadcast_to(per_entry, full)
        return _sum_rightmost(per_entry, self.event_dim)

    def forward_shape(self, shape):
        return numpy.broadcast_shapes(tuple(shape), _shape_of(self.loc), _shape_of(self.scale))

    def inverse_shape(self, shape):
        return self.forward_shape(shape)

    def __eq__(self, other) -> bool:
        return (isinstance(other, AffineTransform) and self.event_dim == other.event_dim
                and _same_values(self.loc, other.loc) and _same_values(self.scale, other.scale))

    def __hash__(self) -> int:
        return hash((type(self), self.event_dim))

    def __repr__(self) -> str:
        return f"AffineTransform(loc={self.loc!r}, scale={self.scale!r}, event_dim={self.event_dim})"


class SigmoidTransform(Transform):
    """y = 1 / (1 + e^-x), kept in [tiny, 1 - eps] so that its inverse log y - log(1 - y) stays
    finite; log|dy/dx| = log y (1 - y) = -softplus(-x) - softplus(x)."""

    codomain = constraints.unit_interval

    def _call(self, x):
        info = numpy.finfo(x.dtype)
        return clip(sigmoid(x), float(info.tiny), 1.0 - float(info.eps))

    def _inverse(self, y):
        info = numpy.finfo(y.dtype)
        y = clip(y, float(info.tiny), 1.0 - float(info.eps))
        return log(y) - log1p(-y)

    def log_abs_det_jacobian(self, x, y):
        x = _tensor(x)
        return -softplus(-x, threshold=math.inf) - softplus(x, threshold=math.inf)


class TanhTransform(Transform):
    """y = tanh x onto (-1, 1); log|dy/dx| = log(1 - tanh^2 x) = 2 (log 2 - x - softplus(-2x)),
    a form that stays accurate for large |x|."""

    codomain = constraints.Interval(-1.0, 1.0)

    def _call(self, x):
        return tanh(x)

    def _inverse(self, y):
        return atanh(y)

    def log_abs_det_jacobian(self, x, y):
        x = _tensor(x)
        return (math.log(2.0) - x - softplus(x * -2.0, threshold=math.inf)) * 2.0


class SoftplusTransform(Transform):
    """y = log(1 + e^x) onto the positive reals (x itself above 20, as PyTorch); inverse
    y + log(-expm1(-y)); log|dy/dx| = log sigmoid(x) = -softplus(-x)."""

    codomain = constraints.positive

    def _call(self, x):
        return softplus(x)

    def _inverse(self, y):
        return log(-expm1(-y)) + y

    def log_abs_det_jacobian(self, x, y):
        return -softplus(-_tensor(x))


class PowerTransform(Transform):
    """y = x^exponent on the positive reals; log|dy/dx| = log|exponent y / x|."""

    domain = constraints.positive
    codomain = constraints.positive

    def __init__(self, exponent):
        self.exponent = exponent

    @property
    def sign(self):
        if isinstance(self.exponent, (int, float)):
            return 1 if self.exponent > 0 else -1 if self.exponent < 0 else 0
        return sign(_tensor(self.exponent))

    def _call(self, x):
        return x ** self.exponent

    def _inverse(self, y):
        return y ** (1.0 / self.exponent)

    def log_abs_det_jacobian(self, x, y):
        return log((_tensor(y) * self.exponent / _tensor(x)).abs())

    def forward_shape(self, shape):
        return numpy.broadcast_shapes(tuple(shape), _shape_of(self.exponent))

    def inverse_shape(self, shape):
        return self.forward_shape(shape)

    def __eq__(self, other) -> bool:
        return isinstance(other, PowerTransform) and _same_values(self.exponent, other.exponent)

    def __hash__(self) -> int:
        return hash(type(self))

    def __repr__(self) -> str:
        return f"PowerTransform(exponent={self.exponent!r})"


class ComposeTransform(Transform):
    """parts[-1] o ... o parts[0]: x goes through the parts in order. Its log|det| is the sum of
    the parts' at the intermediate values, each summed over the axes that form one event of the
    composition (the largest event_dim of the parts)."""

    def __init__(self, parts: list[Transform]):
        parts = list(parts)
        bad = [p for p in parts if not isinstance(p, Transform)]
        if bad:
            raise TypeError(f"ComposeTransform: parts must be Transforms, got {type(bad[0]).__name__}")
        self.parts = parts
        self.event_dim = max((p.event_dim for p in parts), default=0)

    def _independent(self, constraint):
        extra = self.event_dim - constraint.event_dim
        return constraints.IndependentConstraint(constraint, extra) if extra > 0 else constraint

    @property
    def domain(self):
        return self._independent(self.parts[0].domain) if self.parts else constraints.real

    @property
    def codomain(self):
        return self._independent(self.parts[-1].codomain) if self.parts else constraints.real

    @property
    def sign(self):
        result = 1
        for part in self.parts:
            result = result * part.sign
        return result

    @property
    def inv(self) -> Transform:
        return ComposeTransform([p.inv for p in reversed(self.parts)])

    def _call(self, x):
        for part in self.parts:
            x = part(x)
        return x

    def _inverse(self, y):
        for part in reversed(self.parts):
            y = part.inv(y)
        return y

    def log_abs_det_jacobian(self, x, y):
        x = _tensor(x)
        if not self.parts:
            return _sum_rightmost(x * 0.0, self.event_dim)
        values = [x]
        for part in self.parts[:-1]:
            values.append(part(values[-1]))
        values.append(_tensor(y))
        result = None
        for part, before, after in zip(self.parts, values[:-1], values[1:]):
            term = _sum_rightmost(part.log_abs_det_jacobian(before, after), self.event_dim - part.event_dim)
            result = term if result is None else result + term
        return result

    def forward_shape(self, shape):
        for part in self.parts:
            shape = part.forward_shape(shape)
        return tuple(shape)

    def inverse_shape(self, shape):
        for part in reversed(self.parts):
            shape = part.inverse_shape(shape)
        return tuple(shape)

    def __eq__(self, other) -> bool:
        return isinstance(other, ComposeTransform) and self.parts == other.parts

    def __hash__(self) -> int:
        return hash(tuple(self.parts))

    def __repr__(self) -> str:
        return f"ComposeTransform({self.parts!r})"
