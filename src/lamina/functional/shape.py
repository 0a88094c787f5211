"""Shape primitives: reshape, transpose, indexing, broadcast, concat, stack, pad.

Each only moves values around, so its backward moves the upstream gradient back:
reshape reshapes it, transpose applies the inverse permutation, indexing scatters it
into zeros (adding where an index repeats), broadcast sums it.
"""

from __future__ import annotations

import copy
import math

import numpy

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.autograd.function import LinearMap
from lamina.errors import ShapeError
from lamina.functional._util import normalize_axes, unbroadcast


class Reshape(Function):
    def forward(self, a):
        self.in_shape = a.shape
        try:
            return a.reshape(self.shape)
        except ValueError:
            raise ShapeError(f"reshape: cannot reshape an input of shape {a.shape} ({a.size} elements) "
                             f"into {self.shape}") from None

    def backward(self, dy):
        return (dy.reshape(self.in_shape),)

    backward_graph = Function.linear_backward_graph


class Transpose(Function):
    def forward(self, a):
        if self.axes is None:
            self.axes = tuple(reversed(range(a.ndim)))
        if sorted(ax % a.ndim for ax in self.axes) != list(range(a.ndim)) or len(self.axes) != a.ndim:
            raise ShapeError(
                f"transpose: axes {self.axes} are not a permutation of the {a.ndim} axes of shape {a.shape}"
            )
        return a.transpose(self.axes)

    def backward(self, dy):
        inverse = [0] * len(self.axes)
        for i, ax in enumerate(self.axes):
            inverse[ax % len(self.axes)] = i
        return (dy.transpose(inverse),)

    backward_graph = Function.linear_backward_graph


def _has_advanced(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(not isinstance(i, (int, slice, type(None), type(Ellipsis))) for i in items)


class GetItem(Function):
    def forward(self, a):
        self.in_shape, self.dtype = a.shape, a.dtype
        try:
            return a[self.index]
        except IndexError as exc:
            raise IndexError(f"getitem: index {self.index!r} does not fit shape {a.shape}: {exc}") from None

    def backward(self, dy):
        da = backend.xp.zeros(self.in_shape, dtype=dy.dtype)
        if _has_advanced(self.index):
            backend.xp.add.at(da, self.index, dy)  # repeated indices accumulate
        else:
            da[self.index] = dy
        return (da,)

    backward_graph = Function.linear_backward_graph


class BroadcastTo(Function):
    def forward(self, a):
        self.in_shape = a.shape
        try:
            return backend.xp.broadcast_to(a, self.shape)
        except ValueError:
            raise ShapeError(f"broadcast_to: cannot broadcast shape {a.shape} to {self.shape}") from None

    def backward(self, dy):
        return (unbroadcast(dy, self.in_shape),)

    backward_graph = Function.linear_backward_graph


class Concat(Function):
    """The inputs joined along ``axis``, in their common dtype (PyTorch's promotion, not NumPy's:
    int64 with float32 gives float32); each gets back its slice of the gradient."""
    dtype_rule = "promote"

    def forward(self, *xs):
        axis = self.axis
        try:
            out = backend.xp.concatenate(xs, axis=axis)
        except (ValueError, backend.xp.exceptions.AxisError):
            raise ShapeError(f"concat: shapes {[x.shape for x in xs]} cannot be joined along axis {axis}") from None
        self.bounds = [0]
        for x in xs:
            self.bounds.append(self.bounds[-1] + x.shape[axis])
        self.ndim = out.ndim
        return out

    def backward(self, dy):
        axis = self.axis % self.ndim
        grads = []
        for lo, hi in zip(self.bounds[:-1], self.bounds[1:]):
            index = (slice(None),) * axis + (slice(lo, hi),)
            grads.append(dy[index])
        return tuple(grads)

    def backward_graph(self, dy):
        axis = self.axis % self.ndim
        return tuple(dy[(slice(None),) * axis + (slice(lo, hi),)] for lo, hi in zip(self.bounds[:-1], self.bounds[1:]))


class Stack(Function):
    """The inputs stacked along a new ``axis``, in their common dtype (as :class:`Concat`); each
    gets back its slice of the gradient."""
    dtype_rule = "promote"

    def forward(self, *xs):
        try:
            out = backend.xp.stack(xs, axis=self.axis)
        except (ValueError, backend.xp.exceptions.AxisError):
            shapes = [x.shape for x in xs]
            raise ShapeError(f"stack: shapes {shapes} cannot be stacked along axis {self.axis}") from None
        self.ndim = out.ndim
        return out

    def backward(self, dy):
        axis = self.axis % self.ndim
        return tuple(dy.take(i, axis=axis) for i in range(dy.shape[axis]))

    def backward_graph(self, dy):
        axis = self.axis % self.ndim
        return tuple(dy[(slice(None),) * axis + (i,)] for i in range(dy.shape[axis]))


class Pad(Function):
    """Constant padding; ``pad_width`` as NumPy's ((before, after), ...) per axis."""

    def forward(self, a):
        width = self.pad_width
        if isinstance(width, int):
            width = ((width, width),) * a.ndim
        width = tuple((int(lo), int(hi)) for lo, hi in width)
        if len(width) != a.ndim:
            raise ShapeError(f"pad: {len(width)} (before, after) pairs for an input of shape {a.shape}")
        self.slices = tuple(slice(lo, lo + n) for (lo, _), n in zip(width, a.shape))
        if not width:                        # a 0-d input has no axis to pad
            return a.copy()
        return backend.xp.pad(a, width, mode="constant", constant_values=self.value)

    def backward(self, dy):
        return (dy[self.slices],)

    def backward_graph(self, dy):
        # padding with a value is affine, not linear: the adjoint map is the zero-padding one
        linear = copy.copy(self)
        linear.value = 0.0
        return (LinearMap.apply(dy, op=linear, adjoint=True),)


def _shape_arg(shape) -> tuple[int, ...]:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return tuple(int(s) for s in shape)


def reshape(a, *shape) -> Tensor:
    return Reshape.apply(a, shape=_shape_arg(shape))


def transpose(a, *axes) -> Tensor:
    axes = _shape_arg(axes) if axes else None
    return Transpose.apply(a, axes=axes)


def swapaxes(a, axis1: int, axis2: int) -> Tensor:
    axes = list(range(a.ndim))
    axes[axis1], axes[axis2] = axes[axis2], axes[axis1]
    return Transpose.apply(a, axes=tuple(axes))


def flatten(a, start_dim: int = 0) -> Tensor:
    """Collapse the axes from ``start_dim`` on (``flatten(x, 1)`` keeps the batch axis)."""
    shape = a.shape[:start_dim] + (math.prod(a.shape[start_dim:]),)
    return Reshape.apply(a, shape=shape)


def expand_dims(a, axis: int) -> Tensor:
    shape = list(a.shape)
    axis = axis if axis >= 0 else axis + a.ndim + 1
    shape.insert(axis, 1)
    return Reshape.apply(a, shape=tuple(shape))


def squeeze(a, axis=None) -> Tensor:
    if axis is None:
        shape = tuple(n for n in a.shape if n != 1)
    else:
        axes = normalize_axes(axis, a.ndim, "squeeze")
        for ax in axes:
            if a.shape[ax] != 1:
                raise ShapeError(f"squeeze: axis {ax} of shape {a.shape} has size {a.shape[ax]}, not 1")
        shape = tuple(n for i, n in enumerate(a.shape) if i not in axes)
    return Reshape.apply(a, shape=shape)


def broadcast_to(a, shape) -> Tensor:
    return BroadcastTo.apply(a, shape=tuple(shape))


def getitem(a, index) -> Tensor:
    if isinstance(index, Tensor):
        index = index.data
    elif isinstance(index, tuple):
        index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
    elif isinstance(index, list):
        index = backend.xp.asarray(index)
    return GetItem.apply(a, index=index)


def concat(tensors, axis: int = 0) -> Tensor:
    """Join tensors along an existing axis; mixed dtypes promote as in PyTorch's ``cat``."""
    return Concat.apply(*tensors, axis=axis)


def stack(tensors, axis: int = 0) -> Tensor:
    """Join tensors along a new axis; mixed dtypes promote as in PyTorch's ``stack``."""
    return Stack.apply(*tensors, axis=axis)


def pad(a, pad_width, value: float = 0.0) -> Tensor:
    """Pad with a constant, as NumPy's ``pad``: ``pad_width`` is an int (every side of every
    axis), one (before, after) pair for every axis, or ((before, after), ...) one pair per
    axis (or another form NumPy broadcasts to those). (PyTorch's flat list of sides, last
    axis first, is :func:`pad1d`, :func:`pad2d` and :func:`pad3d`, which pad the spatial axes
    of channels-last inputs.)"""
    shape = backend.xp.shape(a.data if isinstance(a, Tensor) else a)
    return Pad.apply(a, pad_width=_pad_pairs(pad_width, shape), value=value)


def _pad_pairs(pad_width, shape: tuple) -> tuple:
    """``pad_width`` (any of NumPy's forms, which broadcast to one (before, after) pair per
    axis: an int, (n,), (before, after), ((before, after),) or one pair per axis, as numbers or
    an array) as a tuple of pairs of non-negative ints, one per axis of ``shape``."""
    width = pad_width.data if isinstance(pad_width, Tensor) else pad_width
    try:
        pairs = numpy.broadcast_to(numpy.asarray(backend.to_numpy(width)), (len(shape), 2))
    except (ValueError, TypeError):
        pairs = None
    if pairs is None or pairs.dtype.kind not in "iu" or (pairs < 0).any():
        raise ShapeError(f"pad: pad_width must be non-negative ints in one of NumPy's forms for the input of shape "
                         f"{tuple(shape)} (n, (n,), (before, after), ((before, after),) or one pair per axis), got "
                         f"{pad_width!r}; for PyTorch's flat list of sides use pad1d, pad2d or pad3d")
    return tuple((int(lo), int(hi)) for lo, hi in pairs)
