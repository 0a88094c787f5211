"""Differences, integrals and running reductions along one axis, under PyTorch's names:
diff, trapezoid, cumulative_trapezoid, logcumsumexp, cummax and cummin.

- diff: y_i = x_(i+1) - x_i, applied n times (a composite of slices).
- trapezoid: sum_i (x_(i+1) - x_i) (y_i + y_(i+1)) / 2, with spacing dx or sample points x;
  cumulative_trapezoid keeps the running sums.
- logcumsumexp: y_k = log sum_(j <= k) e^(x_j), one primitive run as a running logaddexp (no
  overflow, no underflow of early terms). dJ/dx_i = sum_(k >= i) dJ/dy_k e^(x_i - y_k); it is
  formed in log space, split by the sign of dJ/dy, as reversed running logaddexps.
- cummax/cummin: (values, indices), values = gather(x, axis, indices). As PyTorch, an element
  equal to the running extreme takes it over (ties report the latest index) and a NaN always
  takes over.
"""

from __future__ import annotations

import numpy

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.autograd.function import result_dtype
from lamina.errors import ShapeError
from lamina.functional._util import fill_value
from lamina.functional.elementwise import exp, log
from lamina.functional.indexing import gather
from lamina.functional.math_parity import as_tensor
from lamina.functional.reduce import max as reduce_max
from lamina.functional.reduce_more import cumsum
from lamina.functional.shape import concat, getitem, reshape
from lamina.functional.stats_parity import _axis


def _slice(ndim: int, axis: int, part: slice) -> tuple:
    return (slice(None),) * axis + (part,)


def _attach(x: Tensor, extra, axis: int, op: str, name: str) -> Tensor:
    """``extra`` (a number, or a tensor of x's shape but along ``axis``) as a tensor to join
    to x along ``axis``; a number becomes a slice of length 1."""
    if not isinstance(extra, Tensor) and backend.xp.ndim(extra) == 0:
        # a number joins in PyTorch's promoted dtype (2.5 next to integers makes floats), converted as
        # PyTorch converts numbers (fill_value: a value its integer dtype cannot hold is refused)
        dtype = result_dtype([x.dtype], [], [backend.xp.asarray(extra).dtype])
        shape = tuple(1 if i == axis else n for i, n in enumerate(x.shape))
        return Tensor._wrap(backend.xp.broadcast_to(fill_value(extra, dtype, op), shape))
    extra = as_tensor(extra, x)
    if extra.ndim == 0:
        shape = tuple(1 if i == axis else n for i, n in enumerate(x.shape))
        return Tensor._wrap(backend.xp.broadcast_to(extra.data, shape).astype(x.dtype))
    if extra.ndim != x.ndim or any(m != n for i, (m, n) in enumerate(zip(extra.shape, x.shape)) if i != axis):
        raise ShapeError(f"{op}: {name} of shape {extra.shape} must match x of shape {x.shape} on every axis "
                         f"but axis {axis}")
    return extra


def diff(x, n: int = 1, axis: int = -1, prepend=None, append=None) -> Tensor:
    """The n-th forward difference along ``axis``: y_i = x_(i+1) - x_i, n times, after
    joining ``prepend`` and ``append`` (numbers or tensors) to x's ends, in their common dtype.
    For booleans, as PyTorch: y_i = x_(i+1) != x_i (exclusive or)."""
    x = as_tensor(x)
    if x.ndim == 0:
        raise ShapeError("diff: x must have at least one axis, got a 0-d input")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"diff: n must be an int >= 0, got {n!r}")
    axis = _axis(axis, x.ndim, "diff")
    if n == 0:                              # no difference taken: x itself, as NumPy and PyTorch
        return x
    parts = [x]
    if prepend is not None:
        parts.insert(0, _attach(x, prepend, axis, "diff", "prepend"))
    if append is not None:
        parts.append(_attach(x, append, axis, "diff", "append"))
    y = concat(parts, axis=axis) if len(parts) > 1 else x
    for _ in range(n):
        if y.shape[axis] == 0:
            break
        later = getitem(y, _slice(y.ndim, axis, slice(1, None)))
        earlier = getitem(y, _slice(y.ndim, axis, slice(None, -1)))
        y = Tensor._wrap(later.data != earlier.data) if y.dtype == bool else later - earlier
    return y


def _trapezoids(y, x, dx, axis, op: str):
    y = as_tensor(y)
    if y.ndim == 0:
        raise ShapeError(f"{op}: y must have at least one axis, got a 0-d input")
    axis = _axis(axis, y.ndim, op)
    heights = getitem(y, _slice(y.ndim, axis, slice(1, None))) + getitem(y, _slice(y.ndim, axis, slice(None, -1)))
    if x is None:
        return heights * (0.5 * dx), axis
    x = as_tensor(x, y)
    if x.ndim == 1:
        if x.shape[0] != y.shape[axis]:
            raise ShapeError(f"{op}: x of length {x.shape[0]} must have as many points as axis {axis} of y of "
                             f"shape {y.shape}")
        widths = diff(x)
        widths = widths.reshape(tuple(-1 if i == axis else 1 for i in range(y.ndim)))
    else:
        widths = diff(x, axis=axis - y.ndim)
    try:
        return heights * widths * 0.5, axis
    except ValueError:
        raise ShapeError(f"{op}: x of shape {x.shape} does not broadcast against y of shape {y.shape}") from None


def trapezoid(y, x=None, dx: float = 1.0, axis: int = -1) -> Tensor:
    """The trapezoid rule along ``axis``: sum_i (x_(i+1) - x_i) (y_i + y_(i+1)) / 2, the
    sample points ``x`` (1-D along the axis, or y's shape) or evenly spaced by ``dx``."""
    areas, axis = _trapezoids(y, x, dx, axis, "trapezoid")
    return areas.sum(axis=axis)


def cumulative_trapezoid(y, x=None, dx: float = 1.0, axis: int = -1) -> Tensor:
    """The running trapezoid sums along ``axis`` (one fewer value than y there)."""
    areas, axis = _trapezoids(y, x, dx, axis, "cumulative_trapezoid")
    if areas.shape[axis] == 0:
        return areas
    return cumsum(areas, axis=axis)


def _running_logaddexp(a, axis: int, reverse: bool = False):
    xp = backend.xp
    if reverse:
        return xp.flip(xp.logaddexp.accumulate(xp.flip(a, axis), axis=axis), axis)
    return xp.logaddexp.accumulate(a, axis=axis)


class LogCumSumExp(Function):
    """y_k = log sum_(j <= k) e^(x_j) along ``axis``."""

    def forward(self, a):
        self.a = a
        self.y = _running_logaddexp(a, self.axis) if a.size else a.copy()
        return self.y

    def backward(self, dy):
        xp = backend.xp
        if dy.size == 0:
            return (dy,)
        with numpy.errstate(divide="ignore", invalid="ignore"):
            magnitude = xp.log(xp.abs(dy)) - self.y
            floor = xp.asarray(-xp.inf, dtype=dy.dtype)
            up = _running_logaddexp(xp.where(dy > 0, magnitude, floor), self.axis, reverse=True)
            down = _running_logaddexp(xp.where(dy < 0, magnitude, floor), self.axis, reverse=True)
            return (xp.exp(up + self.a) - xp.exp(down + self.a),)

    def composite(self, x):
        """The same values by recorded ops, shifted by each line's largest value."""
        shift = reduce_max(x, axis=self.axis, keepdims=True).detach()
        return log(cumsum(exp(x - shift), axis=self.axis)) + shift

    backward_graph = Function.composite_backward_graph


def logcumsumexp(x, axis: int) -> Tensor:
    """Running log-sum-exp along ``axis``: y_k = log(e^(x_0) + ... + e^(x_k)); a 0-d x is
    its own result (as PyTorch, for any ``axis``)."""
    x = as_tensor(x)
    if x.ndim == 0:
        return reshape(LogCumSumExp.apply(reshape(x, (1,)), axis=0), ())
    return LogCumSumExp.apply(x, axis=_axis(axis, x.ndim, "logcumsumexp"))


def _running_extreme(x, axis: int, largest: bool, op: str):
    x = as_tensor(x)
    xp = backend.xp
    if x.ndim == 0:
        return x, xp.zeros((), dtype=xp.int64)
    axis = _axis(axis, x.ndim, op)
    a = x.data
    running = (xp.maximum if largest else xp.minimum).accumulate(a, axis=axis) if a.size else a
    position = xp.arange(a.shape[axis]).reshape(tuple(-1 if i == axis else 1 for i in range(a.ndim)))
    takes_over = a == running
    if a.dtype.kind == "f":
        takes_over |= xp.isnan(a)
    indices = xp.maximum.accumulate(xp.where(takes_over, position, 0), axis=axis) if a.size else \
        xp.zeros(a.shape, dtype=xp.int64)
    indices = indices.astype(xp.int64)
    return gather(x, axis, indices), indices


def cummax(x, axis: int):
    """(values, indices) of the running maximum along ``axis``; ties report the latest
    index and a NaN, once met, stays (as PyTorch). The gradient goes to the indexed elements."""
    return _running_extreme(x, axis, True, "cummax")


def cummin(x, axis: int):
    """(values, indices) of the running minimum along ``axis``; see :func:`cummax`."""
    return _running_extreme(x, axis, False, "cummin")

