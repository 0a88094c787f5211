"""Element-wise math: exp, log, sqrt, abs, clip, where, maximum, minimum.

Element-wise ops have diagonal Jacobians, so each backward is one element-wise product
of the upstream gradient with the local derivative.
"""

from __future__ import annotations

import numpy

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.autograd.function import cast
from lamina.functional._util import fill_value, shape_error, sum_to, unbroadcast


class Exp(Function):
    dtype_rule = "float"
    def forward(self, a):
        self.y = backend.xp.exp(a)
        return self.y

    def backward(self, dy):
        return (dy * self.y,)

    def backward_graph(self, dy):
        return (dy * self.recorded_output(self.y),)


class Log(Function):
    dtype_rule = "float"
    def forward(self, a):
        self.a = a
        return backend.xp.log(a)

    def backward(self, dy):
        return (dy / self.a,)

    def backward_graph(self, dy):
        return (dy / self.inputs[0],)


class Sqrt(Function):
    dtype_rule = "float"
    def forward(self, a):
        self.y = backend.xp.sqrt(a)
        return self.y

    def backward(self, dy):
        return (dy / (2 * self.y),)

    def backward_graph(self, dy):
        return (dy / (2 * self.recorded_output(self.y)),)


class Abs(Function):
    """|x|; the gradient at 0 is 0 (sign(0))."""

    def forward(self, a):
        self.a = a
        return backend.xp.abs(a)

    def backward(self, dy):
        return (dy * backend.xp.sign(self.a),)

    def backward_graph(self, dy):
        return (dy * backend.xp.sign(self.a),)


class Clip(Function):
    """Clamp to [low, high]; the gradient passes where low <= x <= high."""

    def forward(self, a):
        self.a = a
        return backend.xp.clip(a, self.low, self.high)

    def _inside(self):
        inside = backend.xp.ones(self.a.shape, dtype=bool)
        if self.low is not None:
            inside &= self.a >= self.low
        if self.high is not None:
            inside &= self.a <= self.high
        return inside

    def backward(self, dy):
        return (dy * self._inside(),)

    def backward_graph(self, dy):
        return (dy * self._inside(),)


class Where(Function):
    """cond ? a : b, the condition a constant boolean array."""
    dtype_rule = "promote"

    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        try:
            return backend.xp.where(self.cond, a, b)
        except ValueError:
            raise shape_error("where", self.cond.shape, a.shape, b.shape) from None

    def backward(self, dy):
        zero = dy.dtype.type(0)
        sa, sb = self.shapes
        da = unbroadcast(backend.xp.where(self.cond, dy, zero), sa) if self.needs_grad[0] else None
        db = unbroadcast(backend.xp.where(self.cond, zero, dy), sb) if self.needs_grad[1] else None
        return da, db

    def backward_graph(self, dy):
        sa, sb = self.shapes
        da = sum_to(where(self.cond, dy, 0.0), sa) if self.needs_grad[0] else None
        db = sum_to(where(self.cond, 0.0, dy), sb) if self.needs_grad[1] else None
        return da, db


class Maximum(Function):
    """Element-wise max(a, b) (course notes' max node); NaN in either operand propagates.

    As PyTorch's ``maximum``/``minimum``: the gradient goes to the strict winner, a tie splits
    it evenly (dy/2 to each), and where either operand is NaN both get the whole of it.
    """
    dtype_rule = "promote"

    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        try:
            return backend.xp.maximum(a, b) if self.largest else backend.xp.minimum(a, b)
        except ValueError:
            raise shape_error("maximum" if self.largest else "minimum", a.shape, b.shape) from None

    def _routes(self):
        """(a wins, b wins, tie) masks; with a NaN none holds, so neither operand is shut out."""
        a, b = self.inputs[0].data, self.inputs[1].data
        a_wins, b_wins = (a > b, a < b) if self.largest else (a < b, a > b)
        return a_wins, b_wins, a == b

    def backward(self, dy):
        xp = backend.xp
        a_wins, b_wins, tie = self._routes()
        zero = dy.dtype.type(0)
        share = xp.where(tie, dy * dy.dtype.type(0.5), dy)
        sa, sb = self.shapes
        da = unbroadcast(xp.where(b_wins, zero, share), sa) if self.needs_grad[0] else None
        db = unbroadcast(xp.where(a_wins, zero, share), sb) if self.needs_grad[1] else None
        return da, db

    def backward_graph(self, dy):
        a_wins, b_wins, tie = self._routes()
        share = where(tie, dy * 0.5, dy)
        sa, sb = self.shapes
        da = sum_to(where(b_wins, 0.0, share), sa) if self.needs_grad[0] else None
        db = sum_to(where(a_wins, 0.0, share), sb) if self.needs_grad[1] else None
        return da, db


def exp(a) -> Tensor:
    return Exp.apply(a)


def log(a) -> Tensor:
    return Log.apply(a)


def sqrt(a) -> Tensor:
    return Sqrt.apply(a)


def abs(a) -> Tensor:  # noqa: A001
    return Abs.apply(a)


def clip(a, low=None, high=None) -> Tensor:
    """``a`` limited to [low, high] (either may be None); a tensor bound makes it
    :func:`~lamina.functional.clamp`, whose bounds get their share of the gradient."""
    return clip_numbers(a, low, high, "clip")


def clip_numbers(a, low, high, op: str) -> Tensor:
    """:func:`clip`, ``op`` naming the caller in errors: a tensor bound goes to
    :func:`~lamina.functional.clamp`; a float bound makes an integer ``a`` float, and int bounds
    meeting an integer ``a`` are converted as PyTorch converts numbers (:func:`fill_value`: -1
    is 255 for uint8, a value the dtype cannot hold is refused)."""
    low, high = plain_number(low), plain_number(high)
    if isinstance(low, Tensor) or isinstance(high, Tensor):
        from lamina.functional.math_parity import clamp  # math_parity builds on this module

        return clamp(a, low, high)
    a = float_for(a, low, high)
    if isinstance(a, Tensor) and a.dtype.kind in "iu":
        low, high = (None if b is None else fill_value(b, a.dtype, op).item() for b in (low, high))
    return Clip.apply(a, low=low, high=high)


def plain_number(value):
    """A NumPy scalar or 0-d array as the Python number it holds (NumPy would let its dtype
    widen the result, where PyTorch's numbers take the tensor's); anything else as it is."""
    if isinstance(value, (numpy.generic, numpy.ndarray)) and numpy.ndim(value) == 0:
        return value.item()
    return value


def float_for(a, *numbers):
    """``a``, as a tensor in the default float dtype when it holds integers or booleans and
    one of ``numbers`` is a float (PyTorch's promotion for a float number meeting an integer
    tensor); ``a`` itself otherwise."""
    if any(isinstance(n, float) for n in numbers):
        a = a if isinstance(a, Tensor) else Tensor._constant(a)
        if a.dtype.kind in "biu":
            return cast(a, backend.get_default_dtype())
    return a


def where(cond, a, b) -> Tensor:
    """Pick from ``a`` where ``cond`` holds, else from ``b`` (no gradient to ``cond``)."""
    cond = cond.data if isinstance(cond, Tensor) else backend.xp.asarray(cond)
    return Where.apply(a, b, cond=cond.astype(bool, copy=False))


def maximum(a, b) -> Tensor:
    return Maximum.apply(a, b, largest=True)


def minimum(a, b) -> Tensor:
    return Maximum.apply(a, b, largest=False)
