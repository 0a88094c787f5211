"""More element-wise math: trigonometry, log1p/expm1, powers, logs in other bases, rounding.

As in :mod:`lamina.functional.elementwise`, each op's Jacobian is diagonal, so each
backward multiplies the upstream gradient dJ/dy by the local derivative dy/dx element by
element. The piecewise-constant ops (sign, floor, round) have derivative 0 wherever it
exists; they pass a zero gradient everywhere, as PyTorch does.
"""

from __future__ import annotations

import math

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.functional._util import shape_error, sum_to, unbroadcast
from lamina.functional.elementwise import where


class Sin(Function):
    """y = sin x; dy/dx = cos x."""
    dtype_rule = "float"

    def forward(self, a):
        self.a = a
        return backend.xp.sin(a)

    def backward(self, dy):
        return (dy * backend.xp.cos(self.a),)

    def backward_graph(self, dy):
        return (dy * cos(self.inputs[0]),)


class Cos(Function):
    """y = cos x; dy/dx = -sin x."""
    dtype_rule = "float"

    def forward(self, a):
        self.a = a
        return backend.xp.cos(a)

    def backward(self, dy):
        return (-dy * backend.xp.sin(self.a),)

    def backward_graph(self, dy):
        return (-dy * sin(self.inputs[0]),)


class Tan(Function):
    """y = tan x; dy/dx = 1 + y^2."""
    dtype_rule = "float"

    def forward(self, a):
        self.y = backend.xp.tan(a)
        return self.y

    def backward(self, dy):
        return (dy * (1 + self.y * self.y),)

    def backward_graph(self, dy):
        y = self.recorded_output(self.y)
        return (dy * (1 + y * y),)


class Log1p(Function):
    """y = log(1 + x), exact for small x; dy/dx = 1 / (1 + x)."""
    dtype_rule = "float"

    def forward(self, a):
        self.a = a
        return backend.xp.log1p(a)

    def backward(self, dy):
        return (dy / (1 + self.a),)

    def backward_graph(self, dy):
        return (dy / (1 + self.inputs[0]),)


class Expm1(Function):
    """y = e^x - 1, exact for small x; dy/dx = e^x = y + 1."""
    dtype_rule = "float"

    def forward(self, a):
        self.y = backend.xp.expm1(a)
        return self.y

    def backward(self, dy):
        return (dy * (self.y + 1),)

    def backward_graph(self, dy):
        return (dy * (self.recorded_output(self.y) + 1),)


class Square(Function):
    """y = x^2; dy/dx = 2x."""

    def forward(self, a):
        self.a = a
        return a * a

    def backward(self, dy):
        return (dy * (2 * self.a),)

    def backward_graph(self, dy):
        return (dy * (2 * self.inputs[0]),)


class Reciprocal(Function):
    """y = 1 / x; dy/dx = -1 / x^2 = -y^2."""
    dtype_rule = "float"

    def forward(self, a):
        self.y = backend.xp.reciprocal(a)
        return self.y

    def backward(self, dy):
        return (-dy * (self.y * self.y),)

    def backward_graph(self, dy):
        y = self.recorded_output(self.y)
        return (-dy * (y * y),)


class Rsqrt(Function):
    """y = 1 / sqrt(x); dy/dx = -x^(-3/2) / 2 = -y^3 / 2."""
    dtype_rule = "float"

    def forward(self, a):
        self.y = backend.xp.reciprocal(backend.xp.sqrt(a))
        return self.y

    def backward(self, dy):
        y = self.y
        return (dy * (-0.5 * y * y * y),)

    def backward_graph(self, dy):
        y = self.recorded_output(self.y)
        return (dy * (-0.5 * y * y * y),)


class LogBase(Function):
    """y = log_b x = ln x / ln b, for b = 2 or 10; dy/dx = 1 / (x ln b)."""
    dtype_rule = "float"

    def forward(self, a):
        self.a = a
        return backend.xp.log2(a) if self.base == 2 else backend.xp.log10(a)

    def backward(self, dy):
        return (dy / (self.a * math.log(self.base)),)

    def backward_graph(self, dy):
        return (dy / (self.inputs[0] * math.log(self.base)),)


class PiecewiseConstant(Function):
    """sign, floor or round (``self.op``, a name in the array module): the gradient is 0."""

    def forward(self, a):
        op = getattr(backend.xp, self.op)
        return op(a, self.decimals) if self.op == "round" else op(a)

    def backward(self, dy):
        return (backend.xp.zeros_like(dy),)

    def backward_graph(self, dy):
        return (dy * 0.0,)


class Atan2(Function):
    """The angle of the point (x, y): atan2(y, x) in (-pi, pi].

    d/dy = x / (x^2 + y^2) and d/dx = -y / (x^2 + y^2), taken as 0 where x^2 + y^2 = 0 (as
    PyTorch); broadcast operands get their gradient summed back to their own shape.
    """
    dtype_rule = "float"

    def forward(self, y, x):
        self.y, self.x = y, x
        try:
            return backend.xp.arctan2(y, x)
        except ValueError:
            raise shape_error("atan2", y.shape, x.shape) from None

    def backward(self, dout):
        y, x = self.y, self.x
        squared = x * x + y * y
        scale = dout / backend.xp.where(squared == 0, math.inf, squared)
        dy = unbroadcast(scale * x, y.shape) if self.needs_grad[0] else None
        dx = unbroadcast(-scale * y, x.shape) if self.needs_grad[1] else None
        return dy, dx

    def backward_graph(self, dout):
        y, x = self.inputs
        squared = x * x + y * y
        scale = dout / where(squared.data == 0, math.inf, squared)
        dy = sum_to(scale * x, y.shape) if self.needs_grad[0] else None
        dx = sum_to(-scale * y, x.shape) if self.needs_grad[1] else None
        return dy, dx


def sin(a) -> Tensor:
    return Sin.apply(a)


def cos(a) -> Tensor:
    return Cos.apply(a)


def tan(a) -> Tensor:
    return Tan.apply(a)


def log1p(a) -> Tensor:
    """log(1 + x), accurate where x is tiny (where 1 + x would round to 1)."""
    return Log1p.apply(a)


def expm1(a) -> Tensor:
    """e^x - 1, accurate where x is tiny."""
    return Expm1.apply(a)


def square(a) -> Tensor:
    """x^2; booleans are squared as int64 (PyTorch's)."""
    if isinstance(a, Tensor) and a.dtype.kind == "b":
        a = Tensor._wrap(a.data.astype(backend.xp.int64))
    return Square.apply(a)


def reciprocal(a) -> Tensor:
    return Reciprocal.apply(a)


def rsqrt(a) -> Tensor:
    """1 / sqrt(x)."""
    return Rsqrt.apply(a)


def log2(a) -> Tensor:
    return LogBase.apply(a, base=2)


def log10(a) -> Tensor:
    return LogBase.apply(a, base=10)


def sign(a) -> Tensor:
    """-1, 0 or 1 by the sign of x; the gradient is 0. Booleans are their own sign (PyTorch's)."""
    a = a if isinstance(a, Tensor) else Tensor._constant(a)
    if a.dtype.kind == "b":
        return Tensor._wrap(a.data.copy())
    return PiecewiseConstant.apply(a, op="sign")


def floor(a) -> Tensor:
    """The largest integer <= x; the gradient is 0."""
    return PiecewiseConstant.apply(a, op="floor")


def round(a, decimals: int = 0) -> Tensor:  # noqa: A001 - mirrors NumPy
    """x rounded to ``decimals`` places, halves to even (as NumPy and PyTorch); the gradient is 0."""
    if isinstance(decimals, bool) or not isinstance(decimals, int):
        raise ValueError(f"round: decimals must be an int, got {decimals!r}")
    return PiecewiseConstant.apply(a, op="round", decimals=decimals)


def atan2(y, x) -> Tensor:
    """The angle atan2(y, x) of the point (x, y), element-wise with broadcasting."""
    return Atan2.apply(y, x)
