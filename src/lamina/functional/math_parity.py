"""Element-wise math under PyTorch's names: hyperbolic and inverse trigonometric functions,
exp2, sinc, rounding toward zero, fmod and remainder, copysign, hypot, logaddexp, lerp,
addcmul, addcdiv, clamp with tensor bounds, heaviside, isclose and allclose.

The smooth one-input functions are primitives with the closed-form derivative:

- sinh' = cosh, cosh' = sinh, asinh' = 1 / sqrt(x^2 + 1), acosh' = 1 / sqrt(x^2 - 1),
  atanh' = 1 / (1 - x^2), asin' = 1 / sqrt(1 - x^2), acos' = -1 / sqrt(1 - x^2),
  atan' = 1 / (1 + x^2), (2^x)' = 2^x ln 2, sinc' = (cos(pi x) - sinc x) / x (Taylor forms near 0).

The two-input primitives: hypot h = sqrt(a^2 + b^2) (dh/da = a / h), logaddexp
y = log(e^a + e^b) (dy/da = e^(a - y)), its base-2 twin, fmod and remainder
(a - q b with q the quotient rounded toward zero or down: d/da = 1, d/db = -q), and copysign
(|a| with the sign of b: d/da = +-1, 0 at a = 0, as PyTorch). The rest are built from them.
"""

from __future__ import annotations

import math

import numpy

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.autograd.function import cast, result_dtype
from lamina.functional._util import fill_value, shape_error, sum_to, unbroadcast
from lamina.functional.activation import sigmoid
from lamina.functional.elementwise import clip_numbers, where
from lamina.functional.math_more import PiecewiseConstant, cos, reciprocal, rsqrt


def as_tensor(x, like=None) -> Tensor:
    """``x`` as a tensor; a number or array meeting a floating ``like`` takes its dtype."""
    if isinstance(x, Tensor):
        return x
    return Tensor._constant(x, like.dtype if isinstance(like, Tensor) else None)


# -- one input -----------------------------------------------------------------------------
class Sinh(Function):
    """y = sinh x; dy/dx = cosh x."""
    dtype_rule = "float"

    def forward(self, a):
        self.a = a
        return backend.xp.sinh(a)

    def backward(self, dy):
        return (dy * backend.xp.cosh(self.a),)

    def backward_graph(self, dy):
        return (dy * cosh(self.inputs[0]),)


class Sinc(Function):
    """y = sin(u) / u with u = pi x (1 at x = 0); dy/dx = pi (cos u - y) / u.

    Where |u| < eps^(1/6) of the dtype both lose their digits (the slope cancels, and for a
    tiny u overflows), so there the Taylor forms y = 1 - u^2/6 + u^4/120 and
    dy/dx = pi u (u^2/30 - 1/3) take over: their error is below eps."""
    dtype_rule = "float"

    def forward(self, a):
        xp = backend.xp
        self.u = u = xp.asarray(a * math.pi)          # arrays even for a 0-d a
        small = xp.abs(u) < numpy.finfo(u.dtype).eps ** (1 / 6)
        self.small = small if small.any() else None
        with numpy.errstate(divide="ignore", invalid="ignore"):
            self.y = xp.asarray(xp.sin(u) / u)
        if self.small is not None:
            v = u[small] ** 2
            self.y[small] = 1 - v / 6 * (1 - v / 20)
        return self.y

    def backward(self, dy):
        xp = backend.xp
        u = self.u
        with numpy.errstate(divide="ignore", invalid="ignore"):
            slope = xp.asarray((xp.cos(u) - self.y) / u)
        if self.small is not None:
            w = u[self.small]
            slope[self.small] = w * (w * w / 30 - 1 / 3)
        slope *= math.pi
        return (dy * slope,)

    def backward_graph(self, dy):
        x, y = self.inputs[0], self.recorded_output(self.y)
        if self.small is None:
            u = x * math.pi
            return (dy * (cos(u) - y) / u * math.pi,)
        u = where(self.small, 1.0, x) * math.pi
        w = where(self.small, x, 0.0) * math.pi
        slope = where(self.small, w * (w * w / 30.0 - 1.0 / 3.0), (cos(u) - y) / u)
        return (dy * slope * math.pi,)


class Cosh(Function):
    """y = cosh x; dy/dx = sinh x."""
    dtype_rule = "float"

    def forward(self, a):
        self.a = a
        return backend.xp.cosh(a)

    def backward(self, dy):
        return (dy * backend.xp.sinh(self.a),)

    def backward_graph(self, dy):
        return (dy * sinh(self.inputs[0]),)


class InverseTrig(Function):
    """asinh, acosh, atanh, asin, acos or atan (``self.op``); the derivative is
    :data:`INVERSE_SLOPES`' formula, written with tensor ops so that it works on arrays
    (wrapped) and on the graph alike."""
    dtype_rule = "float"

    def forward(self, a):
        self.a = a
        return getattr(backend.xp, INVERSE_NUMPY[self.op])(a)

    def backward(self, dy):
        return (dy * INVERSE_SLOPES[self.op](Tensor._wrap(self.a)).data,)

    def backward_graph(self, dy):
        return (dy * INVERSE_SLOPES[self.op](self.inputs[0]),)


INVERSE_NUMPY = {"asinh": "arcsinh", "acosh": "arccosh", "atanh": "arctanh",
                 "asin": "arcsin", "acos": "arccos", "atan": "arctan"}
INVERSE_SLOPES = {
    "asinh": lambda x: rsqrt(x * x + 1.0),
    "acosh": lambda x: rsqrt(x * x - 1.0),
    "atanh": lambda x: reciprocal(1.0 - x * x),
    "asin": lambda x: rsqrt(1.0 - x * x),
    "acos": lambda x: -rsqrt(1.0 - x * x),
    "atan": lambda x: reciprocal(1.0 + x * x),
}


class Exp2(Function):
    """y = 2^x; dy/dx = y ln 2."""
    dtype_rule = "float"

    def forward(self, a):
        self.y = backend.xp.exp2(a)
        return self.y

    def backward(self, dy):
        return (dy * self.y * math.log(2.0),)

    def backward_graph(self, dy):
        return (dy * self.recorded_output(self.y) * math.log(2.0),)


def sinh(x) -> Tensor:
    return Sinh.apply(x)


def cosh(x) -> Tensor:
    return Cosh.apply(x)


def asinh(x) -> Tensor:
    return InverseTrig.apply(x, op="asinh")


def acosh(x) -> Tensor:
    """The inverse of cosh, for x >= 1."""
    return InverseTrig.apply(x, op="acosh")


def atanh(x) -> Tensor:
    """The inverse of tanh, for -1 < x < 1."""
    return InverseTrig.apply(x, op="atanh")


def asin(x) -> Tensor:
    return InverseTrig.apply(x, op="asin")


def acos(x) -> Tensor:
    return InverseTrig.apply(x, op="acos")


def atan(x) -> Tensor:
    return InverseTrig.apply(x, op="atan")


def exp2(x) -> Tensor:
    """2^x."""
    return Exp2.apply(x)


def sinc(x) -> Tensor:
    """The normalized sinc sin(pi x) / (pi x), 1 at x = 0 (where its gradient is 0)."""
    return Sinc.apply(x)


def trunc(x) -> Tensor:
    """x rounded toward zero; the gradient is 0."""
    return PiecewiseConstant.apply(x, op="trunc")


def ceil(x) -> Tensor:
    """The smallest integer >= x; the gradient is 0."""
    return PiecewiseConstant.apply(x, op="ceil")


def frac(x) -> Tensor:
    """The fractional part x - trunc(x), with the sign of x; the gradient is 1."""
    x = as_tensor(x)
    return x - trunc(x)


def heaviside(x, values) -> Tensor:
    """The step function: 0 where x < 0 (or NaN), ``values`` where x = 0, 1 where x > 0. It has no
    gradient (a constant tensor), as in PyTorch."""
    a, v = as_tensor(x).data, as_tensor(values, as_tensor(x)).data
    try:
        out = backend.xp.where(a == 0, v, a > 0).astype(a.dtype, copy=False)   # NaN gives 0, as PyTorch
    except ValueError:
        raise shape_error("heaviside", a.shape, v.shape) from None
    return Tensor._wrap(out)


# -- two inputs ----------------------------------------------------------------------------
class Hypot(Function):
    """h = sqrt(a^2 + b^2), computed without overflow; dh/da = a / h, dh/db = b / h."""
    dtype_rule = "float"

    def forward(self, a, b):
        try:
            self.h = backend.xp.hypot(a, b)
        except ValueError:
            raise shape_error("hypot", a.shape, b.shape) from None
        self.a, self.b = a, b
        return self.h

    def backward(self, dy):
        scale = dy / self.h
        da = unbroadcast(scale * self.a, self.a.shape) if self.needs_grad[0] else None
        db = unbroadcast(scale * self.b, self.b.shape) if self.needs_grad[1] else None
        return da, db

    def backward_graph(self, dy):
        a, b = self.inputs
        scale = dy / self.recorded_output(self.h)
        da = sum_to(scale * a, a.shape) if self.needs_grad[0] else None
        db = sum_to(scale * b, b.shape) if self.needs_grad[1] else None
        return da, db


class LogAddExp(Function):
    """y = log_B(B^a + B^b) for base B = e or 2; dy/da = B^(a - y) = 1 / (1 + B^(b - a)) and
    dy/db = 1 / (1 + B^(a - b)) (the softmax weights of the pair, written in the differences so
    that one infinite operand takes the whole gradient, as in PyTorch)."""
    dtype_rule = "float"

    def forward(self, a, b):
        op = backend.xp.logaddexp2 if self.base2 else backend.xp.logaddexp
        try:
            y = op(a, b)
        except ValueError:
            raise shape_error("logaddexp2" if self.base2 else "logaddexp", a.shape, b.shape) from None
        self.a, self.b = a, b
        return y

    def _share(self, d):
        """1 / (1 + B^d): the weight of the operand that the other exceeds by d."""
        with numpy.errstate(over="ignore"):
            return 1.0 / (1.0 + (backend.xp.exp2(d) if self.base2 else backend.xp.exp(d)))

    def backward(self, dy):
        d = self.b - self.a
        da = unbroadcast(dy * self._share(d), self.a.shape) if self.needs_grad[0] else None
        db = unbroadcast(dy * self._share(-d), self.b.shape) if self.needs_grad[1] else None
        return da, db

    def backward_graph(self, dy):
        a, b = self.inputs
        d = (a - b) * (math.log(2.0) if self.base2 else 1.0)     # 1 / (1 + B^(b - a)) = sigmoid(d)
        da = sum_to(dy * sigmoid(d), a.shape) if self.needs_grad[0] else None
        db = sum_to(dy * sigmoid(-d), b.shape) if self.needs_grad[1] else None
        return da, db


class Modulo(Function):
    """r = a - q b with q = trunc(a / b) (fmod: r has the sign of a) or floor(a / b)
    (remainder: r has the sign of b); dr/da = 1, dr/db = -q (q is piecewise constant)."""
    dtype_rule = "promote"

    def forward(self, a, b):
        xp = backend.xp
        try:
            out = xp.fmod(a, b) if self.truncated else xp.remainder(a, b)
        except ValueError:
            raise shape_error("fmod" if self.truncated else "remainder", a.shape, b.shape) from None
        with numpy.errstate(divide="ignore", invalid="ignore"):
            ratio = a / b
        self.quotient = xp.trunc(ratio) if self.truncated else xp.floor(ratio)
        self.shapes = a.shape, b.shape
        return out

    def backward(self, dy):
        sa, sb = self.shapes
        da = unbroadcast(dy * backend.xp.ones_like(self.quotient), sa) if self.needs_grad[0] else None
        db = unbroadcast(-dy * self.quotient, sb) if self.needs_grad[1] else None
        return da, db

    def backward_graph(self, dy):
        sa, sb = self.shapes
        da = sum_to(dy * backend.xp.ones_like(self.quotient), sa) if self.needs_grad[0] else None
        db = sum_to(-dy * self.quotient, sb) if self.needs_grad[1] else None
        return da, db


class CopySign(Function):
    """|a| with the sign (bit) of b: a times s = +-1, so d/da = s, taken as 0 at a = 0
    (as PyTorch); b gets a zero gradient."""
    dtype_rule = "float"

    def forward(self, a, b):
        xp = backend.xp
        try:
            out = xp.copysign(a, b)
        except ValueError:
            raise shape_error("copysign", a.shape, b.shape) from None
        self.slope = xp.where(a == 0, 0, xp.where(xp.signbit(a) == xp.signbit(b), 1, -1)).astype(out.dtype)
        self.shapes = a.shape, b.shape
        return out

    def backward(self, dy):
        sa, sb = self.shapes
        da = unbroadcast(dy * self.slope, sa) if self.needs_grad[0] else None
        db = backend.xp.zeros(sb, dtype=dy.dtype) if self.needs_grad[1] else None
        return da, db

    def backward_graph(self, dy):
        sa, sb = self.shapes
        da = sum_to(dy * self.slope, sa) if self.needs_grad[0] else None
        db = Tensor._wrap(backend.xp.zeros(sb, dtype=dy.dtype)) if self.needs_grad[1] else None
        return da, db


def hypot(a, b) -> Tensor:
    """sqrt(a^2 + b^2) element-wise, with broadcasting and without overflow."""
    return Hypot.apply(a, b)


def logaddexp(a, b) -> Tensor:
    """log(e^a + e^b) element-wise, computed without overflow."""
    return LogAddExp.apply(a, b, base2=False)


def logaddexp2(a, b) -> Tensor:
    """log2(2^a + 2^b) element-wise, computed without overflow."""
    return LogAddExp.apply(a, b, base2=True)


def fmod(a, b) -> Tensor:
    """a - trunc(a / b) b: the remainder with the sign of a (C's fmod, ``torch.fmod``)."""
    return Modulo.apply(a, b, truncated=True)


def remainder(a, b) -> Tensor:
    """a - floor(a / b) b: the remainder with the sign of b (Python's %, ``torch.remainder``)."""
    return Modulo.apply(a, b, truncated=False)


def copysign(a, b) -> Tensor:
    """|a| with the sign of b (a -0.0 in b counts as negative)."""
    return CopySign.apply(a, b)


def lerp(start, end, weight) -> Tensor:
    """start + weight (end - start), element-wise; ``weight`` a number or a tensor. Integer or
    boolean ``start`` and ``end`` are computed in PyTorch's floating result dtype of the three
    operands (the default float dtype for a number weight), so that end - start cannot wrap."""
    start = as_tensor(start, end)
    end = as_tensor(end, start)
    if start.dtype.kind not in "fc" or end.dtype.kind not in "fc":
        target = _float_result_dtype(start, end, weight)
        start, end = cast(start, target), cast(end, target)
    return start + weight * (end - start)


def _float_result_dtype(*operands):
    """PyTorch's result dtype of an element-wise op on ``operands`` (tensors, numbers or arrays),
    integers and booleans taken to the default float dtype."""
    dims, zero_dims, numbers = [], [], []
    for x in operands:
        if isinstance(x, Tensor):
            (dims if x.ndim else zero_dims).append(x.dtype)
        else:
            numbers.append(backend.xp.asarray(x).dtype)
    return result_dtype(dims, zero_dims, numbers, to_float=True)


def addcmul(x, tensor1, tensor2, value: float = 1.0) -> Tensor:
    """x + value tensor1 tensor2, element-wise, in the dtype the three tensors promote to (as
    PyTorch, ``value`` takes no part in it: with integer tensors it is truncated to an integer)."""
    product = tensor1 * tensor2
    if isinstance(value, (int, float)) and value == 1:
        return x + product
    if isinstance(value, float) and all(t.dtype.kind in "biu" for t in (x, product) if isinstance(t, Tensor)):
        value = int(value)
    return x + value * product


def addcdiv(x, tensor1, tensor2, value: float = 1.0) -> Tensor:
    """x + value tensor1 / tensor2, element-wise."""
    return x + value * (tensor1 / tensor2)


def clamp(x, min=None, max=None) -> Tensor:  # noqa: A002 - PyTorch's names
    """x limited to [min, max]; either bound may be None, a number or a tensor (broadcast).

    With numbers it is :func:`~lamina.functional.clip`; an integer bound meeting an integer x
    is converted as PyTorch converts it (-1 wraps to 255 for uint8). With a tensor bound, as
    PyTorch: the result has the dtype of x and the bounds promoted together (an integer x
    with a float bound gives a float), where min > max the result is max; x gets the
    gradient where min <= x <= max, min where x < min < max, max where x > max or max < min,
    and none of them where x < min = max. NaN in x stays NaN and gets no gradient.
    """
    if min is None and max is None:
        raise ValueError("clamp: at least one of min and max must be given, got neither")
    if not isinstance(min, Tensor) and not isinstance(max, Tensor):
        for name, bound in (("min", min), ("max", max)):
            if bound is not None and backend.xp.ndim(bound) != 0:
                raise ValueError(f"clamp: {name} must be a number or a Tensor, got an array of shape "
                                 f"{backend.xp.shape(bound)}; wrap it with lamina.tensor")
        return clip_numbers(x, min, max, "clamp")
    x = as_tensor(x)
    dtype = _clamp_dtype(x, min, max)
    x = cast(x, dtype)
    lower, upper = (None if b is None else _clamp_bound(b, dtype) for b in (min, max))
    a = x.data
    low = None if lower is None else lower.data
    high = None if upper is None else upper.data
    stuck = None   # x < min == max: the value is that bound, and no input gets the gradient
    try:
        below = backend.xp.zeros(a.shape, dtype=bool) if low is None else a < low
        above = backend.xp.zeros(a.shape, dtype=bool) if high is None else a > high
        if low is not None and high is not None:
            stuck = below & (low == high)
            below, above = below & (low < high), above | (low > high)
    except ValueError:
        shapes = [a.shape] + [b.shape for b in (low, high) if b is not None]
        raise shape_error("clamp", *shapes) from None
    if stuck is not None and not stuck.any():
        stuck = None
    outside = below | above if stuck is None else below | above | stuck
    nan = backend.xp.isnan(a) if dtype.kind == "f" else None
    out = where(~outside if nan is None else ~(outside | nan), x, backend.xp.zeros((), dtype))
    if nan is not None and nan.any():
        out = where(nan, a, out)    # NaN stays NaN, with no gradient (as with number bounds)
    if lower is not None:
        out = where(below, lower, out)
    if upper is not None:
        out = where(above, upper, out)
    if stuck is not None:
        out = where(stuck, backend.xp.broadcast_to(high, stuck.shape), out)
    if dtype.kind == "f":
        nan_bound = [backend.xp.isnan(b) for b in (low, high) if b is not None]
        nan_bound = nan_bound[0] if len(nan_bound) == 1 else nan_bound[0] | nan_bound[1]
        if nan_bound.any():                 # a NaN bound gives NaN, with no gradient (as PyTorch)
            out = where(nan_bound, backend.xp.asarray(backend.xp.nan, dtype=dtype), out)
    return out


def _clamp_dtype(x: Tensor, *bounds):
    """PyTorch's result dtype of clamp: x and the tensor (or array) bounds promote as tensors
    (by their number of dimensions), number bounds as numbers (:func:`result_dtype`)."""
    dims, zero_dims, numbers = [], [], []
    for t in (x, *bounds):
        if t is None:
            continue
        array = t.data if isinstance(t, Tensor) else backend.xp.asarray(t)
        if array.ndim:
            dims.append(array.dtype)
        else:
            (zero_dims if isinstance(t, Tensor) else numbers).append(array.dtype)
    return result_dtype(dims, zero_dims, numbers)


def _clamp_bound(bound, dtype) -> Tensor:
    """A clamp bound as a tensor of the result ``dtype`` (a tensor stays on the graph)."""
    if isinstance(bound, Tensor):
        return cast(bound, dtype)
    if backend.xp.ndim(bound):
        return Tensor._wrap(backend.xp.asarray(bound).astype(dtype))
    return Tensor._wrap(fill_value(bound, dtype, "clamp"))


# -- comparisons (no gradient) -------------------------------------------------------------
def isclose(a, b, rtol: float = 1e-5, atol: float = 1e-8, equal_nan: bool = False) -> Tensor:
    """|a - b| <= atol + rtol |b| element-wise, as a boolean tensor (NaN equals NaN only
    with ``equal_nan``)."""
    x, y = as_tensor(a).data, as_tensor(b).data
    try:
        return Tensor._wrap(backend.xp.asarray(backend.xp.isclose(x, y, rtol=rtol, atol=atol, equal_nan=equal_nan)))
    except ValueError:
        raise shape_error("isclose", x.shape, y.shape) from None


def allclose(a, b, rtol: float = 1e-5, atol: float = 1e-8, equal_nan: bool = False) -> bool:
    """Whether :func:`isclose` holds everywhere."""
    return bool(isclose(a, b, rtol=rtol, atol=atol, equal_nan=equal_nan).data.all())

