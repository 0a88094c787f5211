"""Indexing and ordering ops: gather, index_select, scatter_add, masked_fill, sort, topk,
argmax, argmin, flip, roll, tile, repeat_interleave, split and chunk.

None of them computes new values; each moves, copies or drops values of its input. So
every backward moves the upstream gradient dJ/dy back to where the values came from:
a copy of one input value into k outputs gets the sum of those k gradients (the
backward of a fan-out), a dropped or overwritten value gets 0. Indices are constants:
they get no gradient.

Index convention: an index into an axis of length n lies in [-n, n), negatives counting
from the end as in NumPy (PyTorch accepts only [0, n)).
"""

from __future__ import annotations

import math

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError
from lamina.functional._util import fill_value, normalize_axes
from lamina.functional.elementwise import where
from lamina.functional.shape import getitem, pad


# -- argument checks ----------------------------------------------------------------------
def _shape_of(x) -> tuple[int, ...]:
    return tuple(x.shape) if hasattr(x, "shape") else backend.xp.asarray(x).shape


def _raw(x):
    """The array behind a Tensor, or ``x`` as an array."""
    return x.data if isinstance(x, Tensor) else backend.xp.asarray(x)


def _one_axis(axis, ndim: int, op: str) -> int:
    """``axis`` (an int, negatives allowed) as an axis in [0, ndim)."""
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise ValueError(f"{op}: axis must be an int, got {axis!r}")
    if not -ndim <= axis < ndim:
        raise ShapeError(f"{op}: axis {axis} is out of range for an input of {ndim} dimensions")
    return axis % ndim


def _whole_number(value, op: str, name: str, low: int = 0) -> int:
    """``value`` checked to be an int of at least ``low``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{op}: {name} must be an int >= {low}, got {value!r}")
    return value


def _index_array(index, op: str):
    """``index`` (a Tensor, array or list) as an integer array."""
    array = _raw(index)
    if array.dtype.kind not in "iu":
        raise ValueError(f"{op}: index must hold integers, got dtype {array.dtype}")
    return array


def _check_range(index, n: int, op: str, what: str) -> None:
    """Every value of ``index`` lies in [-n, n)."""
    if index.size == 0:
        return
    low, high = int(index.min()), int(index.max())
    if low < -n or high >= n:
        bad = low if low < -n else high
        raise ValueError(f"{op}: index {bad} is out of range for {what} of length {n}; expected values in [{-n}, {n})")


def _along_axis(index, axis: int) -> tuple:
    """The full advanced index that picks ``x[i_0, .., index[i_0, .., i_{d-1}], .., i_{d-1}]``
    for every position of ``index``: ``index`` itself on ``axis``, the position elsewhere."""
    xp = backend.xp
    full = []
    for d, n in enumerate(index.shape):
        if d == axis:
            full.append(index)
        else:
            shape = [1] * index.ndim
            shape[d] = n
            full.append(xp.arange(n).reshape(shape))
    return tuple(full)


def _check_along_axis(x_shape, index, axis: int, op: str) -> None:
    """``index`` has x's number of axes and is no longer than x on any axis but ``axis``."""
    if index.ndim != len(x_shape):
        raise ShapeError(f"{op}: index of shape {index.shape} must have as many axes as x of shape {tuple(x_shape)}")
    for d, (n, m) in enumerate(zip(index.shape, x_shape)):
        if d != axis and n > m:
            raise ShapeError(f"{op}: index of shape {index.shape} is longer than x of shape {tuple(x_shape)} "
                             f"on axis {d}; expected at most x's length on every axis but {axis}")


def _broadcasts_to(shape, target) -> bool:
    """Whether an array of ``shape`` broadcasts to ``target`` without changing it."""
    if len(shape) > len(target):
        return False
    return all(m in (1, n) for m, n in zip(reversed(shape), reversed(target)))


# -- functions ----------------------------------------------------------------------------
class Gather(Function):
    """y[.., i, ..] = x[.., index[.., i, ..], ..] along ``axis``; dJ/dx adds each dJ/dy
    into the place its value came from, so a repeated index sums its gradients."""

    def forward(self, a):
        self.in_shape = a.shape
        self.where = _along_axis(self.index, self.axis)
        return a[self.where]

    def backward(self, dy):
        da = backend.xp.zeros(self.in_shape, dtype=dy.dtype)
        backend.xp.add.at(da, self.where, dy)
        return (da,)

    backward_graph = Function.linear_backward_graph


class IndexSelect(Function):
    """Whole slices of x along ``axis``, in the order of a 1-D index (the embedding lookup
    e_v = E o_v, without forming o_v); a slice picked k times gets k gradients added."""

    def forward(self, a):
        self.in_shape = a.shape
        return backend.xp.take(a, self.index, axis=self.axis)

    def backward(self, dy):
        da = backend.xp.zeros(self.in_shape, dtype=dy.dtype)
        backend.xp.add.at(da, (slice(None),) * self.axis + (self.index,), dy)
        return (da,)

    backward_graph = Function.linear_backward_graph


class ScatterAdd(Function):
    """y = x, then y[.., index[.., i, ..], ..] += src[.., i, ..] along ``axis`` for every
    position of ``index``. y is linear in both: dJ/dx = dJ/dy, and dJ/dsrc gathers dJ/dy
    from the places each src value was added to (0 where src was not used)."""

    def forward(self, a, src):
        self.used = tuple(slice(0, n) for n in self.index.shape)
        self.where = _along_axis(self.index, self.axis)
        self.src_shape, self.src_dtype = src.shape, src.dtype
        out = a.copy()
        backend.xp.add.at(out, self.where, src[self.used].astype(out.dtype, copy=False))
        return out

    def backward(self, dy):
        dsrc = None
        if self.needs_grad[1]:
            dsrc = backend.xp.zeros(self.src_shape, dtype=self.src_dtype)
            dsrc[self.used] = dy[self.where]
        return dy, dsrc

    def backward_graph(self, dy):
        dsrc = None
        if self.needs_grad[1]:
            used = dy[self.where]                                   # a recorded gather, shaped as index
            dsrc = pad(used, [(0, n - m) for n, m in zip(self.src_shape, used.shape)])
        return dy, dsrc


class MaskedFill(Function):
    """y = value where mask, else x; the filled places pass no gradient back."""

    def forward(self, a):
        return backend.xp.where(self.mask, fill_value(self.value, a.dtype, self.op), a)

    def backward(self, dy):
        return (backend.xp.where(self.mask, dy.dtype.type(0), dy),)

    def backward_graph(self, dy):
        # not linear_backward_graph: with a nonzero value the forward is affine, not linear
        return (where(self.mask, 0.0, dy),)


class Flip(Function):
    """Reverse the order along ``axes``; flipping is its own inverse, so is its backward."""

    def forward(self, a):
        return backend.xp.flip(a, axis=self.axes)

    def backward(self, dy):
        return (backend.xp.flip(dy, axis=self.axes),)

    backward_graph = Function.linear_backward_graph


class Roll(Function):
    """Shift cyclically by ``shift`` along ``axis``; backward shifts back by -shift."""

    def forward(self, a):
        return backend.xp.roll(a, self.shift, axis=self.axis)

    def backward(self, dy):
        back = tuple(-s for s in self.shift) if isinstance(self.shift, tuple) else -self.shift
        return (backend.xp.roll(dy, back, axis=self.axis),)

    backward_graph = Function.linear_backward_graph


class Tile(Function):
    """x repeated r_d times end to end along each axis d; each value of x appears once in
    every tile, so dJ/dx is the sum of dJ/dy over the tiles."""

    def forward(self, a):
        self.in_shape = a.shape
        return backend.xp.tile(a, self.reps)

    def backward(self, dy):
        d = len(self.reps)
        shape = (1,) * (d - len(self.in_shape)) + tuple(self.in_shape)
        interleaved = tuple(v for r, n in zip(self.reps, shape) for v in (r, n))
        tiles = dy.reshape(interleaved).sum(axis=tuple(range(0, 2 * d, 2)))
        return (tiles.reshape(self.in_shape),)

    backward_graph = Function.linear_backward_graph


class RepeatInterleave(Function):
    """Each element repeated r times in place along ``axis`` (x flattened where axis is
    None); dJ/dx sums each group of r neighbouring gradients."""

    def forward(self, a):
        self.in_shape = a.shape
        return backend.xp.repeat(a, self.repeats, axis=self.axis)

    def backward(self, dy):
        r = self.repeats
        if r == 0:
            return (backend.xp.zeros(self.in_shape, dtype=dy.dtype),)
        if self.axis is None:
            return (dy.reshape(-1, r).sum(axis=1).reshape(self.in_shape),)
        ax = self.axis
        groups = dy.reshape(dy.shape[:ax] + (self.in_shape[ax], r) + dy.shape[ax + 1:])
        return (groups.sum(axis=ax + 1),)

    backward_graph = Function.linear_backward_graph


# -- wrappers -----------------------------------------------------------------------------
def gather(x, axis: int, index) -> Tensor:
    """y[i_0, .., i_k, .., i_{d-1}] = x[i_0, .., index[i_0, .., i_{d-1}], .., i_{d-1}], k = axis.

    As ``torch.gather``: ``index`` has as many axes as x, y takes its shape, and on every
    axis but ``axis`` it may be shorter than x (there is no broadcasting, unlike NumPy's
    ``take_along_axis``). Repeated indices add up their gradients.
    """
    shape = _shape_of(x)
    axis = _one_axis(axis, len(shape), "gather")
    index = _index_array(index, "gather")
    _check_along_axis(shape, index, axis, "gather")
    _check_range(index, shape[axis], "gather", f"axis {axis} of x of shape {shape}")
    return Gather.apply(x, axis=axis, index=index)


def index_select(x, axis: int, index) -> Tensor:
    """The slices ``x[.., index[j], ..]`` along ``axis`` for a 1-D integer ``index``, in its
    order: y's axis ``axis`` has len(index) entries. Repeated indices add up their gradients."""
    shape = _shape_of(x)
    axis = _one_axis(axis, len(shape), "index_select")
    index = _index_array(index, "index_select")
    if index.ndim != 1:
        raise ShapeError(f"index_select: index must be 1-D, got shape {index.shape}")
    _check_range(index, shape[axis], "index_select", f"axis {axis} of x of shape {shape}")
    return IndexSelect.apply(x, axis=axis, index=index)


def scatter_add(x, axis: int, index, src) -> Tensor:
    """x with each ``src[i_0, .., i_{d-1}]`` added at ``[i_0, .., index[i_0, .., i_{d-1}], .., i_{d-1}]``
    (``index`` replacing position ``axis``), as ``torch.Tensor.scatter_add``; values sent to
    one place add up.

    ``index`` has as many axes as x and src, is no longer than src on any axis and no longer
    than x on any axis but ``axis``; only the part of src that ``index`` covers is used.
    Gradients flow to x (unchanged) and to src.
    """
    shape, src_shape = _shape_of(x), _shape_of(src)
    axis = _one_axis(axis, len(shape), "scatter_add")
    index = _index_array(index, "scatter_add")
    if len(src_shape) != len(shape):
        raise ShapeError(f"scatter_add: src of shape {src_shape} must have as many axes as x of shape {shape}")
    _check_along_axis(shape, index, axis, "scatter_add")
    if any(n > m for n, m in zip(index.shape, src_shape)):
        raise ShapeError(f"scatter_add: index of shape {index.shape} is longer than src of shape {src_shape} "
                         f"on some axis; expected at most src's length on every axis")
    _check_range(index, shape[axis], "scatter_add", f"axis {axis} of x of shape {shape}")
    return ScatterAdd.apply(x, src, axis=axis, index=index)


def masked_fill(x, mask, value: float | Tensor) -> Tensor:
    """``value`` where the boolean ``mask`` (broadcast to x's shape) is True, else x; the
    filled places get gradient 0. ``value`` may be a 0-d tensor (as in PyTorch), which then
    gets the gradient of the places it fills. A number is converted to x's dtype as PyTorch
    does (:func:`fill_value`: -1 wraps to 255 in uint8, NaN in an integer dtype raises)."""
    return fill_masked(x, mask, value, "masked_fill")


def fill_masked(x, mask, value: float | Tensor, op: str) -> Tensor:
    """:func:`masked_fill` for the ops built on it, with ``op`` naming the caller in errors."""
    shape = _shape_of(x)
    mask = _raw(mask)
    if mask.dtype != bool:
        raise ValueError(f"{op}: mask must be boolean, got dtype {mask.dtype}")
    if not _broadcasts_to(mask.shape, shape):
        raise ShapeError(f"{op}: mask of shape {mask.shape} cannot be broadcast to x of shape {shape}")
    if isinstance(value, Tensor):
        if value.ndim != 0:
            raise ShapeError(f"{op}: value must be a number or a 0-d tensor, got a tensor of shape "
                             f"{value.shape}")
        if value.requires_grad:
            return where(backend.xp.broadcast_to(mask, shape), value, x)
        value = value.data
    return MaskedFill.apply(x, mask=mask, value=value, op=op)


def _stable_order(a, axis: int, descending: bool):
    """Indices that sort ``a`` along ``axis``; equal values keep their original order in
    both directions (and NaN counts as the largest value, as in PyTorch)."""
    xp = backend.xp
    if not descending:
        return xp.argsort(a, axis=axis, kind="stable")
    # Sort the reversed input ascending and reverse the result: ties stay in order, and unlike
    # sorting -a this works for unsigned integers and puts NaN first.
    n = a.shape[axis]
    backwards = xp.argsort(xp.flip(a, axis=axis), axis=axis, kind="stable")
    return xp.flip(n - 1 - backwards, axis=axis)


def sort(x, axis: int = -1, descending: bool = False) -> tuple[Tensor, object]:
    """(values, indices) of x sorted along ``axis``, with ``values = gather(x, axis, indices)``
    so the gradient of each sorted value goes back to the element it came from.

    The sort is stable: equal values keep their original order, ascending or descending
    (as ``torch.sort(..., stable=True)``). ``indices`` is an integer array, not a Tensor.
    """
    a = _raw(x)
    axis = _one_axis(axis, a.ndim, "sort")
    indices = _stable_order(a, axis, descending)
    return gather(x, axis, indices), indices


def topk(x, k: int, axis: int = -1, largest: bool = True, sorted: bool = True) -> tuple[Tensor, object]:  # noqa: A002
    """(values, indices) of the k largest (or smallest) entries along ``axis``, gradients
    flowing back through ``values = gather(x, axis, indices)``.

    Ties go to the earlier element. With ``sorted`` the k come largest first (smallest
    first when ``largest`` is False); without it they come in their order along ``axis``.
    """
    a = _raw(x)
    axis = _one_axis(axis, a.ndim, "topk")
    n = a.shape[axis]
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= n:
        raise ValueError(f"topk: k must be an int in [0, {n}] for axis {axis} of x of shape {a.shape}, got {k!r}")
    if 0 < k < n and a.dtype.kind in "iuf" and not (a.dtype.kind == "f" and backend.xp.isnan(a).any()):
        indices = _top_positions(a, k, axis, largest)       # partition: O(n) per row, then sort k
        if sorted:
            order = _stable_order(backend.xp.take_along_axis(a, indices, axis=axis), axis, descending=largest)
            indices = backend.xp.take_along_axis(indices, order, axis=axis)
    else:
        order = _stable_order(a, axis, descending=largest)
        indices = order[(slice(None),) * axis + (slice(0, k),)]
        if not sorted:
            indices = backend.xp.sort(indices, axis=axis)
    return gather(x, axis, indices), indices


def _top_positions(a, k: int, axis: int, largest: bool):
    """The positions of the k largest (smallest) values along ``axis``, in increasing order,
    ties at the k-th value going to the earlier elements; ``a`` holds no NaN."""
    xp = backend.xp
    rows = xp.moveaxis(a, axis, -1)
    n = rows.shape[-1]
    at = n - k if largest else k - 1
    kth = xp.partition(rows, at, axis=-1)[..., at:at + 1]
    chosen = rows >= kth if largest else rows <= kth
    # Each row holds at least k such values; exactly k in every row unless values tie with the k-th.
    if xp.count_nonzero(chosen) != chosen.size // n * k:
        tied = rows == kth
        wanted_ties = k - (rows > kth if largest else rows < kth).sum(axis=-1, keepdims=True)
        chosen &= ~tied | (xp.cumsum(tied, axis=-1) <= wanted_ties)
    # the flat positions of the chosen, row after row (a 1-D nonzero is far faster than a 2-D one)
    flat = xp.flatnonzero(chosen).reshape(-1, k)
    positions = (flat - (xp.arange(flat.shape[0]) * n)[:, None]).reshape(rows.shape[:-1] + (k,))
    return xp.moveaxis(positions, -1, axis)


def _arg_extreme(x, axis, keepdims: bool, op: str, pick):
    a = _raw(x)
    if axis is not None:
        axis = _one_axis(axis, a.ndim, op)
    if axis is None and a.size == 0:
        raise ShapeError(f"{op}: x of shape {a.shape} has no elements")
    if axis is not None and a.shape[axis] == 0:
        raise ShapeError(f"{op}: x of shape {a.shape} has no elements along axis {axis}")
    return backend.xp.asarray(pick(a, axis=axis, keepdims=keepdims))


def argmax(x, axis: int | None = None, keepdims: bool = False):
    """The index of the largest value along ``axis`` (of the flattened x where None), the
    first one where several are equal; an integer array, with no gradient."""
    return _arg_extreme(x, axis, keepdims, "argmax", backend.xp.argmax)


def argmin(x, axis: int | None = None, keepdims: bool = False):
    """The index of the smallest value along ``axis`` (of the flattened x where None), the
    first one where several are equal; an integer array, with no gradient."""
    return _arg_extreme(x, axis, keepdims, "argmin", backend.xp.argmin)


def flip(x, axis) -> Tensor:
    """x in reverse order along ``axis`` (an int or a tuple of ints)."""
    if axis is None:
        raise ValueError("flip: axis must be an int or a tuple of ints, got None")
    axes = normalize_axes(axis, len(_shape_of(x)), "flip")
    return Flip.apply(x, axes=axes)


def roll(x, shift, axis=None) -> Tensor:
    """x shifted cyclically by ``shift`` places along ``axis``: values pushed off the end come
    back at the start. With ``axis`` None x is rolled as a flat vector and keeps its shape;
    a tuple of shifts needs a tuple of axes of the same length (as ``torch.roll``)."""
    ndim = len(_shape_of(x))
    shifts = shift if isinstance(shift, (tuple, list)) else (shift,)
    for s in shifts:
        if isinstance(s, bool) or not isinstance(s, int):
            raise ValueError(f"roll: shift must be an int or a tuple of ints, got {shift!r}")
    if isinstance(shift, (tuple, list)) or isinstance(axis, (tuple, list)):
        axes = tuple(axis) if isinstance(axis, (tuple, list)) else None
        if axes is None or len(axes) != len(shifts):
            raise ValueError(f"roll: shift {shift!r} and axis {axis!r} must be tuples of the same length")
        return Roll.apply(x, shift=tuple(shifts), axis=tuple(_one_axis(a, ndim, "roll") for a in axes))
    if axis is not None:
        axis = _one_axis(axis, ndim, "roll")
    return Roll.apply(x, shift=shift, axis=axis)


def tile(x, reps) -> Tensor:
    """x repeated ``reps[d]`` times along each axis d, as ``numpy.tile`` and ``torch.tile``:
    a shorter ``reps`` is padded with leading 1s, a longer one adds leading axes to x."""
    reps = (reps,) if isinstance(reps, int) else tuple(reps)
    for r in reps:
        _whole_number(r, "tile", f"every entry of reps {reps}")
    reps = (1,) * (len(_shape_of(x)) - len(reps)) + reps
    return Tile.apply(x, reps=reps)


def repeat_interleave(x, repeats: int, axis: int | None = None) -> Tensor:
    """Each element repeated ``repeats`` times in place along ``axis`` ([a, b] -> [a, a, b, b]);
    with ``axis`` None, x is flattened first (as ``torch.repeat_interleave``)."""
    repeats = _whole_number(repeats, "repeat_interleave", "repeats")
    if axis is not None:
        axis = _one_axis(axis, len(_shape_of(x)), "repeat_interleave")
    return RepeatInterleave.apply(x, repeats=repeats, axis=axis)


def split(x, sections_or_sizes, axis: int = 0) -> list[Tensor]:
    """x cut into consecutive pieces along ``axis``, as ``torch.split``: an int is the length
    of every piece (the last may be shorter); a list gives each piece's length and must sum
    to the length of the axis."""
    shape = _shape_of(x)
    axis = _one_axis(axis, len(shape), "split")
    n = shape[axis]
    if isinstance(sections_or_sizes, (list, tuple)):
        sizes = list(sections_or_sizes)
        for s in sizes:
            _whole_number(s, "split", f"every size in {sizes}")
        if sum(sizes) != n:
            raise ValueError(f"split: sizes {sizes} sum to {sum(sizes)}, but axis {axis} of x of shape {shape} "
                             f"has length {n}")
    else:
        size = _whole_number(sections_or_sizes, "split", "the piece length", low=1)
        sizes = [min(size, n - start) for start in range(0, n, size)] or [0]
    pieces, start = [], 0
    for s in sizes:
        pieces.append(getitem(x, (slice(None),) * axis + (slice(start, start + s),)))
        start += s
    return pieces


def chunk(x, chunks: int, axis: int = 0) -> list[Tensor]:
    """x cut into ``chunks`` pieces along ``axis``, as ``torch.chunk``: every piece has
    ceil(n / chunks) entries but the last, which may be shorter, so there may be fewer
    than ``chunks`` pieces (an empty axis gives ``chunks`` empty ones)."""
    chunks = _whole_number(chunks, "chunk", "chunks", low=1)
    shape = _shape_of(x)
    n = shape[_one_axis(axis, len(shape), "chunk")]
    if n == 0:
        return split(x, [0] * chunks, axis)  # an empty axis gives ``chunks`` empty pieces
    return split(x, math.ceil(n / chunks), axis)
