"""Arithmetic primitives: + - * / ** @ and negation, with broadcasting.

Local gradients (course notes, gradients on nodes): addition distributes the upstream
gradient, subtraction negates it for the subtrahend, multiplication scales it by the
other operand; broadcast operands get it summed back to their own shape.
"""

from __future__ import annotations

import numpy

from lamina import backend, parallel
from lamina.autograd import Function, Tensor
from lamina.autograd.function import cast
from lamina.errors import ShapeError
from lamina.functional._util import shape_error, sum_to, unbroadcast
from lamina.functional.elementwise import float_for, log, plain_number, where


class Add(Function):
    dtype_rule = "promote"
    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        try:
            return a + b
        except ValueError:
            raise shape_error("add", a.shape, b.shape) from None

    def backward(self, dy):
        sa, sb = self.shapes
        return unbroadcast(dy, sa), unbroadcast(dy, sb)

    def backward_graph(self, dy):
        a, b = self.inputs
        return sum_to(dy, a.shape), sum_to(dy, b.shape)


class Sub(Function):
    dtype_rule = "promote"
    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        try:
            return a - b
        except ValueError:
            raise shape_error("sub", a.shape, b.shape) from None

    def backward(self, dy):
        sa, sb = self.shapes
        return unbroadcast(dy, sa), (unbroadcast(-dy, sb) if self.needs_grad[1] else None)

    def backward_graph(self, dy):
        a, b = self.inputs
        return sum_to(dy, a.shape), (sum_to(-dy, b.shape) if self.needs_grad[1] else None)


class Mul(Function):
    dtype_rule = "promote"
    value_used_for = {0: (1,), 1: (0,)}          # each factor's value serves the other's gradient
    def forward(self, a, b):
        self.a, self.b = a, b
        try:
            return a * b
        except ValueError:
            raise shape_error("mul", a.shape, b.shape) from None

    def backward(self, dy):
        a, b = self.a, self.b
        da = unbroadcast(dy * b, a.shape) if self.needs_grad[0] else None
        db = unbroadcast(dy * a, b.shape) if self.needs_grad[1] else None
        return da, db

    def backward_graph(self, dy):
        a, b = self.inputs
        da = sum_to(dy * b, a.shape) if self.needs_grad[0] else None
        db = sum_to(dy * a, b.shape) if self.needs_grad[1] else None
        return da, db


class Div(Function):
    dtype_rule = "float"
    def forward(self, a, b):
        self.a, self.b = a, b
        try:
            return a / b
        except ValueError:
            raise shape_error("div", a.shape, b.shape) from None

    def backward(self, dy):
        a, b = self.a, self.b
        da = unbroadcast(dy / b, a.shape) if self.needs_grad[0] else None
        db = unbroadcast(-dy * a / (b * b), b.shape) if self.needs_grad[1] else None
        return da, db

    def backward_graph(self, dy):
        a, b = self.inputs
        da = sum_to(dy / b, a.shape) if self.needs_grad[0] else None
        db = sum_to(-dy * a / (b * b), b.shape) if self.needs_grad[1] else None
        return da, db


class Neg(Function):
    def forward(self, a):
        return -a

    def backward(self, dy):
        return (-dy,)

    def backward_graph(self, dy):
        return (-dy,)


class PowScalar(Function):
    """x ** p for a constant exponent p: d/dx = p x^(p-1)."""

    def forward(self, a):
        self.a = a
        return a**self.p

    def backward(self, dy):
        p = self.p
        if p == 0:
            return (backend.xp.zeros_like(dy),)
        if p == 2:
            return (dy * (2 * self.a),)
        return (dy * (p * self.a ** (p - 1)),)

    def backward_graph(self, dy):
        p = self.p
        if p == 0:
            return (dy * 0,)
        if p == 1:
            return (dy,)
        return (dy * (p * self.inputs[0] ** (p - 1)),)


class Pow(Function):
    """a ** b for tensors: d/da = b a^(b-1), d/db = a^b log a.

    As PyTorch: d/da is 0 where b = 0 (also at a = 0, where a^(b-1) is infinite), d/db is 0
    where a = 0 and b >= 0 (a^b log a -> 0 there), and d/db is NaN for a negative base.
    """
    dtype_rule = "promote"

    def forward(self, a, b):
        self.a, self.b = a, b
        try:
            self.y = a**b
        except ValueError as error:
            if "negative integer powers" in str(error):
                raise ValueError(f"pow: an integer base ({a.dtype}) to a negative integer exponent ({b.dtype}, least "
                                 f"{b.min()}) has no integer result; make the base a float tensor") from None
            raise shape_error("pow", a.shape, b.shape) from None
        return self.y

    def _log_base(self):
        """a, with 1 where a = 0 and b >= 0, so that a^b log(that) is 0 there; None when no a is 0."""
        zero = self.a == 0
        if not zero.any():
            return None
        return zero & (self.b >= 0)

    def backward(self, dy):
        xp = backend.xp
        a, b, y = self.a, self.b, self.y
        da = db = None
        with numpy.errstate(divide="ignore", invalid="ignore"):
            if self.needs_grad[0]:
                slope = b * a ** (b - 1)
                b_zero = b == 0
                if b_zero.any():
                    slope = xp.where(b_zero, 0, slope)
                da = unbroadcast(dy * slope, a.shape)
            if self.needs_grad[1]:
                at_zero = self._log_base()
                db = unbroadcast(dy * y * xp.log(a if at_zero is None else xp.where(at_zero, 1, a)), b.shape)
        return da, db

    def backward_graph(self, dy):
        a, b = self.inputs
        da = db = None
        with numpy.errstate(divide="ignore", invalid="ignore"):
            if self.needs_grad[0]:
                da = sum_to(where(self.b == 0, 0.0, dy * b * a ** (b - 1)), a.shape)
            if self.needs_grad[1]:
                at_zero = self._log_base()
                db = sum_to(dy * self.recorded_output(self.y) * log(a if at_zero is None else where(at_zero, 1.0, a)),
                            b.shape)
        return da, db


class MatMul(Function):
    """C = A @ B (batched, 1-D operands as NumPy): dJ/dA = dJ/dC B^T, dJ/dB = A^T dJ/dC."""
    value_used_for = {0: (1,), 1: (0,)}          # each factor's value serves the other's gradient

    def forward(self, a, b):
        self.a, self.b = a, b
        if a.ndim == 0 or b.ndim == 0:
            raise ShapeError(f"matmul: operands must have at least one dimension, got shapes {a.shape} and {b.shape}")
        try:
            return parallel.matmul(a, b)
        except ValueError:
            raise ShapeError(
                f"matmul: shapes {a.shape} and {b.shape} do not fit: the last axis of the first "
                f"({a.shape[-1]}) must equal the {'only' if b.ndim == 1 else 'second-to-last'} axis "
                f"of the second ({b.shape[0] if b.ndim == 1 else b.shape[-2]})"
            ) from None

    def backward(self, dy):
        a, b = self.a, self.b
        if a.ndim == 2 and b.ndim == 2:
            da = parallel.matmul(dy, b.T) if self.needs_grad[0] else None
            db = parallel.matmul(a.T, dy) if self.needs_grad[1] else None
            return da, db
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        if b.ndim == 1:
            dy = dy[..., None]
        if a.ndim == 1:
            dy = dy[..., None, :]
        da = db = None
        if self.needs_grad[0]:
            da = unbroadcast(parallel.matmul(dy, b2.swapaxes(-1, -2)), a2.shape).reshape(a.shape)
        if self.needs_grad[1]:
            db = unbroadcast(parallel.matmul(a2.swapaxes(-1, -2), dy), b2.shape).reshape(b.shape)
        return da, db

    def backward_graph(self, dy):
        a, b = self.inputs
        a2 = a.reshape(1, -1) if a.ndim == 1 else a
        b2 = b.reshape(-1, 1) if b.ndim == 1 else b
        if b.ndim == 1:
            dy = dy.expand_dims(-1)
        if a.ndim == 1:
            dy = dy.expand_dims(-2)
        da = sum_to(dy @ b2.swapaxes(-1, -2), a2.shape).reshape(a.shape) if self.needs_grad[0] else None
        db = sum_to(a2.swapaxes(-1, -2) @ dy, b2.shape).reshape(b.shape) if self.needs_grad[1] else None
        return da, db


def add(a, b) -> Tensor:
    return Add.apply(a, b)


def sub(a, b) -> Tensor:
    return Sub.apply(a, b)


def mul(a, b) -> Tensor:
    return Mul.apply(a, b)


def div(a, b) -> Tensor:
    return Div.apply(a, b)


def neg(a) -> Tensor:
    return Neg.apply(a)


def power(a, b) -> Tensor:
    """a ** b; a constant (Python or NumPy number) exponent uses the cheaper scalar rule, with
    PyTorch's result dtype: a float tensor keeps its dtype, an integer or boolean one raised to
    a float becomes the default float dtype, a boolean one raised to an integer int64."""
    b = plain_number(b)
    if isinstance(b, (int, float)) and not isinstance(b, bool):
        a = float_for(a if isinstance(a, Tensor) else Tensor._constant(a), b)
        if a.dtype.kind == "b":
            a = cast(a, numpy.int64)
        return PowScalar.apply(a, p=b)
    return Pow.apply(a, b)


def matmul(a, b) -> Tensor:
    return MatMul.apply(a, b)
