"""Reductions: sum, mean, var, max, min over axes.

Sum hands every summed element the upstream gradient; mean hands each 1/n of it.
Sums run in PyTorch's dtypes (:func:`accumulate`): bool and integers in int64, which the
result keeps, float16 in float32, rounded back to float16 (as NumPy's mean does itself);
var works in float32 for float16.
Max and min route it to the selected element, as the course notes' max node: of
several tied elements, the first in row-major order (the one ``argmax`` picks) gets
all of it and the others get zero.
"""

from __future__ import annotations

import math

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.autograd.function import cast
from lamina.functional._util import normalize_axes


def accumulate(method: str, a, **kwargs):
    """``a.<method>(**kwargs)``, its sum, cumsum or cumprod, in PyTorch's dtypes: bool and
    integers in int64 (the result int64, so uint8 200 + 100 is 300, not a wrapped value), float16
    in float32 with the result rounded back to float16; other floats in their own dtype."""
    xp = backend.xp
    reduce = getattr(a, method)
    if a.dtype.kind in "biu":
        return reduce(dtype=xp.int64, **kwargs)
    if a.dtype == xp.float16:
        return reduce(dtype=xp.float32, **kwargs).astype(xp.float16)
    return reduce(**kwargs)


def in_float32(reduction, a):
    """``reduction(a)``; a float16 ``a`` is cast to float32 on the graph first and the result
    back to float16, as PyTorch computes its float16 reductions (the gradient comes back in float16)."""
    xp = backend.xp
    if getattr(a, "dtype", None) == xp.float16:
        return cast(reduction(cast(a, xp.float32)), xp.float16)
    return reduction(a)


def _expand(dy, in_shape, axes, keepdims):
    """Reshape a reduced gradient so it broadcasts against the input."""
    if not keepdims:
        shape = [1 if i in axes else n for i, n in enumerate(in_shape)]
        dy = dy.reshape(shape)
    return dy


class Sum(Function):
    def forward(self, a):
        self.axes = normalize_axes(self.axis, a.ndim, "sum")
        self.in_shape = a.shape
        return accumulate("sum", a, axis=self.axes, keepdims=self.keepdims)

    def backward(self, dy):
        dy = _expand(dy, self.in_shape, self.axes, self.keepdims)
        return (backend.xp.broadcast_to(dy, self.in_shape),)

    backward_graph = Function.linear_backward_graph


class Mean(Function):
    def forward(self, a):
        self.axes = normalize_axes(self.axis, a.ndim, "mean")
        self.in_shape = a.shape
        self.count = math.prod(a.shape[i] for i in self.axes)
        return a.mean(axis=self.axes, keepdims=self.keepdims)

    def backward(self, dy):
        dy = _expand(dy, self.in_shape, self.axes, self.keepdims)
        return (backend.xp.broadcast_to(dy / self.count, self.in_shape).astype(dy.dtype, copy=False),)

    backward_graph = Function.linear_backward_graph


class Extremum(Function):
    """max (``largest=True``) or min over axes; the gradient goes to the first extreme element."""

    def forward(self, a):
        axes = normalize_axes(self.axis, a.ndim, "max" if self.largest else "min")
        count = math.prod(a.shape[i] for i in axes)
        if count == 0:
            raise ValueError(f"{'max' if self.largest else 'min'}: no values to reduce over axes {axes} "
                             f"of the input of shape {a.shape}; expected each reduced axis to be non-empty")
        kept = tuple(i for i in range(a.ndim) if i not in axes)
        moved = a.transpose(kept + axes).reshape(tuple(a.shape[i] for i in kept) + (count,))
        pick = moved.argmax(axis=-1) if self.largest else moved.argmin(axis=-1)
        self.pick, self.moved_shape = pick, moved.shape
        self.kept, self.axes, self.in_shape = kept, axes, a.shape
        out = backend.xp.take_along_axis(moved, pick[..., None], axis=-1)[..., 0]
        if self.keepdims:
            out = out.reshape([1 if i in axes else n for i, n in enumerate(a.shape)])
        return out

    def backward(self, dy):
        xp = backend.xp
        grad = xp.zeros(self.moved_shape, dtype=dy.dtype)
        xp.put_along_axis(grad, self.pick[..., None], dy.reshape(self.pick.shape)[..., None], axis=-1)
        order = self.kept + self.axes
        grad = grad.reshape([self.in_shape[i] for i in order])
        inverse = [order.index(i) for i in range(len(order))]
        return (grad.transpose(inverse),)

    def backward_graph(self, dy):
        picked = self.backward(backend.xp.ones(dy.shape, dtype=dy.dtype))[0]   # 1 where each extreme is
        expanded = dy.reshape([1 if i in self.axes else n for i, n in enumerate(self.in_shape)])
        return (expanded * picked,)


def sum(a, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001 - mirrors NumPy
    return Sum.apply(a, axis=axis, keepdims=keepdims)


def mean(a, axis=None, keepdims: bool = False) -> Tensor:
    return Mean.apply(a, axis=axis, keepdims=keepdims)


def var(a, axis=None, keepdims: bool = False, ddof: int = 0) -> Tensor:
    """Variance (1/(n - ddof)) sum (x - mean)^2, built from primitives.

    As ``std``, ddof is an int >= 0 and n - ddof must be positive: where PyTorch returns
    inf or NaN (ddof >= n, or an empty axis), this raises a ValueError that says so.
    float16 input is worked in float32, as PyTorch does (its squares overflow float16 from
    256 on), and the result and gradient rounded back to float16.
    """
    if isinstance(ddof, bool) or not isinstance(ddof, int) or ddof < 0:
        raise ValueError(f"var: ddof must be an int >= 0, got {ddof!r}")
    if getattr(a, "dtype", None) == backend.xp.float16:
        return in_float32(lambda t: var(t, axis, keepdims, ddof), a)
    axes = normalize_axes(axis, a.ndim, "var")
    n = math.prod(a.shape[i] for i in axes)
    if n - ddof <= 0:
        raise ValueError(f"var: ddof={ddof} leaves n - ddof = {n - ddof} for n = {n} values "
                         f"(input of shape {a.shape}, axes {axes}); expected n - ddof > 0")
    centred = a - mean(a, axis=axes, keepdims=True)
    return sum(centred * centred, axis=axes, keepdims=keepdims) * (1.0 / (n - ddof))


def max(a, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001
    return Extremum.apply(a, axis=axis, keepdims=keepdims, largest=True)


def min(a, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001
    return Extremum.apply(a, axis=axis, keepdims=keepdims, largest=False)
