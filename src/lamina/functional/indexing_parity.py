"""Indexing, scatter and search ops after PyTorch: take, take_along_dim, scatter, scatter_reduce,
index_add, index_copy, index_fill, masked_select, masked_scatter, nonzero, argsort, msort,
unique, unique_consecutive, searchsorted, bucketize, histc and bincount.

Most are composites of gather, scatter_add, getitem, where and masked_fill, which have first
and second derivatives. Two reductions need their own backward: scatter_reduce's "amax"/"amin"
(dJ/dv = dJ/dy / c for each of the c contributions equal to the result, as PyTorch shares it
among ties) and "prod" (dJ/dv = dJ/dy times the product of the other contributions, zeros
included). Searches, counts and indices are integer arrays with no gradient.

Writes to one place from several positions (scatter, index_copy) keep the last one in
row-major order of the index, and only that value gets a gradient.
"""

from __future__ import annotations

import math

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError
from lamina.functional.arithmetic import div, mul
from lamina.functional.elementwise import where
from lamina.functional.indexing import (
    _along_axis,
    _check_along_axis,
    _check_range,
    _index_array,
    _one_axis,
    _raw,
    _shape_of,
    _stable_order,
    _whole_number,
    fill_masked,
    gather,
    masked_fill,
    scatter_add,
    sort,
)
from lamina.functional.reduce_more import prod
from lamina.functional.shape import broadcast_to, getitem, pad, reshape
from lamina.functional.shape_parity import _broadcast, _broadcast_shape, movedim


# -- where scattered values land ------------------------------------------------------------
def _scatter_args(x, axis, index, src, op: str):
    """(axis, index, src shape) checked as torch's scatter family: index has x's rank, is no
    longer than x off ``axis`` and no longer than src anywhere; its values lie in range."""
    shape = tuple(_shape_of(x))
    axis = _one_axis(axis, len(shape), op)
    index = _index_array(index, op)
    _check_along_axis(shape, index, axis, op)
    src_shape = None
    if src is not None:
        src_shape = tuple(_shape_of(src))
        if len(src_shape) != len(shape):
            raise ShapeError(f"{op}: src of shape {src_shape} must have as many axes as x of shape {shape}")
        if any(n > m for n, m in zip(index.shape, src_shape)):
            raise ShapeError(f"{op}: index of shape {index.shape} is longer than src of shape {src_shape} "
                             f"on some axis; expected at most src's length on every axis")
    _check_range(index, shape[axis] if shape else 0, op, f"axis {axis} of x of shape {shape}")
    return shape, axis, index % max(shape[axis], 1)


def _destinations(shape, axis: int, index):
    """The flat position in x (of ``shape``) that each entry of ``index`` writes to."""
    xp = backend.xp
    if index.size == 0:
        return xp.zeros(index.shape, dtype=xp.int64)
    coords = xp.broadcast_arrays(*_along_axis(index, axis))
    return xp.ravel_multi_index(coords, shape)


def _written(shape, dest):
    """The boolean mask of the places of x that ``dest`` writes to."""
    mask = backend.xp.zeros(shape, dtype=bool)
    mask.reshape(-1)[dest.reshape(-1)] = True
    return mask


def _last_writes(dest):
    """True at the entries of ``dest`` that are the last (row-major) to write their place."""
    xp = backend.xp
    flat = dest.reshape(-1)
    _, first_from_end = xp.unique(flat[::-1], return_index=True)
    last = xp.zeros(flat.shape, dtype=bool)
    last[flat.size - 1 - first_from_end] = True
    return last.reshape(dest.shape)


def _used_part(src, index_shape):
    """The corner of src that an index of ``index_shape`` reads."""
    if tuple(_shape_of(src)) == tuple(index_shape):
        return src
    return getitem(src, tuple(slice(0, n) for n in index_shape))


# -- take, take_along_dim -----------------------------------------------------------------------
def take(x, index) -> Tensor:
    """x read as a flat vector at ``index`` (any shape, which the result takes), as ``torch.take``."""
    shape = tuple(_shape_of(x))
    index = _index_array(index, "take")
    size = int(backend.xp.prod(shape)) if shape else 1
    _check_range(index, size, "take", f"x of shape {shape} read as a vector")
    return getitem(reshape(x, (-1,)), index)


def take_along_dim(x, indices, axis: int | None = None) -> Tensor:
    """y = x[.., indices[..], ..] along ``axis``, x and ``indices`` broadcast together on the other
    axes (``numpy.take_along_axis``, ``torch.take_along_dim``); with ``axis`` None, x and
    ``indices`` are read flat."""
    indices = _index_array(indices, "take_along_dim")
    if axis is None:
        return take(x, indices.reshape(-1))
    shape = tuple(_shape_of(x))
    axis = _one_axis(axis, len(shape), "take_along_dim")
    if indices.ndim != len(shape):
        raise ShapeError(f"take_along_dim: indices of shape {indices.shape} must have as many axes as x of shape "
                         f"{shape}")
    off = [s for d, s in enumerate(shape) if d != axis]
    off_i = [s for d, s in enumerate(indices.shape) if d != axis]
    common = _broadcast_shape("take_along_dim", off, off_i)
    x_shape = common[:axis] + (shape[axis],) + common[axis:]
    i_shape = common[:axis] + (indices.shape[axis],) + common[axis:]
    _check_range(indices, shape[axis], "take_along_dim", f"axis {axis} of x of shape {shape}")
    return gather(_broadcast(x, x_shape), axis, backend.xp.broadcast_to(indices, i_shape))


# -- scatter family ---------------------------------------------------------------------------
def scatter(x, axis: int, index, src=None, *, value=None) -> Tensor:
    """x with y[.., index[i], ..] = src[i] along ``axis`` for every position i of ``index`` (or the
    number ``value``), as ``torch.scatter``. ``src`` may also be a number. Where several
    positions write one place the last in row-major order wins and alone gets a gradient;
    overwritten places of x get none."""
    if src is not None and value is not None:
        raise ValueError("scatter: give src or value, not both")
    if src is None and value is None:
        raise ValueError("scatter: needs src (a tensor or a number) or value")
    if src is not None and not isinstance(src, (Tensor,)) and backend.xp.ndim(src) == 0:
        src, value = None, src
    shape, axis, index = _scatter_args(x, axis, index, src, "scatter")
    dest = _destinations(shape, axis, index)
    written = _written(shape, dest)
    if src is None:
        return fill_masked(x, written, value, "scatter")
    winners = where(_last_writes(dest), _used_part(src, index.shape), 0.0)
    return scatter_add(masked_fill(x, written, 0.0), axis, index, winners)


def _far_end(dtype, largest: bool):
    """The value of ``dtype`` that every other is at least (``largest``) or at most: -inf or
    inf, the integer limits, False or True."""
    xp = backend.xp
    if dtype.kind == "b":
        return not largest
    if dtype.kind in "iu":
        limits = xp.iinfo(dtype)
        return limits.min if largest else limits.max
    return -xp.inf if largest else xp.inf


class ScatterExtreme(Function):
    """y = x with the largest (``largest``) or smallest src value sent to each place, x's own
    value counted too when ``include_self``. Each of the c values equal to a result gets
    dJ/dy / c of its gradient, as PyTorch shares it among ties."""

    def forward(self, a, src):
        xp = backend.xp
        pick = xp.maximum if self.largest else xp.minimum
        used = src[tuple(slice(0, n) for n in self.index.shape)]
        self.src_shape = src.shape
        out = a.copy()
        if not self.include_self:
            out[self.written] = _far_end(out.dtype, self.largest)
        pick.at(out, self.where, used)
        ties = xp.zeros(out.shape, dtype=out.dtype if out.dtype.kind == "f" else xp.int64)
        self_ties = (a == out) if self.include_self else ~self.written
        src_ties = used == out[self.where]
        ties += self_ties
        xp.add.at(ties, self.where, src_ties.astype(out.dtype))
        ties = xp.maximum(ties, 1)
        self.self_share = self_ties / ties
        self.src_share = src_ties / ties[self.where]
        return out

    def backward(self, dy):
        dsrc = None
        if self.needs_grad[1]:
            dsrc = backend.xp.zeros(self.src_shape, dtype=dy.dtype)
            dsrc[tuple(slice(0, n) for n in self.index.shape)] = dy[self.where] * self.src_share
        return dy * self.self_share, dsrc

    def backward_graph(self, dy):
        # the shares are piecewise constant in x and src, so the VJP is linear in dy alone
        dsrc = None
        if self.needs_grad[1]:
            picked = mul(getitem(dy, self.where), self.src_share)
            dsrc = pad(picked, [(0, n - m) for n, m in zip(self.src_shape, picked.shape)])
        return mul(dy, self.self_share), dsrc


class ScatterProd(Function):
    """y = x (or 1 where written, without ``include_self``) times every src value sent to each
    place. dJ/dv = dJ/dy times the product of the other factors of its place, found without
    dividing by a zero: with no zero factor it is y / v, with one only that zero's is nonzero."""

    def forward(self, a, src):
        xp = backend.xp
        used = src[tuple(slice(0, n) for n in self.index.shape)]
        self.src_shape = src.shape
        out = a.copy()
        if not self.include_self:
            out[self.written] = 1
        xp.multiply.at(out, self.where, used)
        base = a if self.include_self else xp.where(self.written, xp.ones((), a.dtype), a)
        zeros = (base == 0).astype(xp.int64)
        xp.add.at(zeros, self.where, (used == 0).astype(xp.int64))
        nonzero_product = xp.where(base == 0, xp.ones((), a.dtype), base)
        xp.multiply.at(nonzero_product, self.where, xp.where(used == 0, xp.ones((), used.dtype), used))
        self.self_others = self._others(base, zeros, nonzero_product)
        self.src_others = self._others(used, zeros[self.where], nonzero_product[self.where])
        return out

    @staticmethod
    def _others(v, zeros, nonzero_product):
        """The product of the other factors of v's place."""
        xp = backend.xp
        safe = xp.where(v == 0, xp.ones((), v.dtype), v)
        others_of_a_zero = xp.where(zeros == 1, nonzero_product, 0)
        return xp.where(v == 0, others_of_a_zero, xp.where(zeros == 0, nonzero_product / safe, 0))

    def backward(self, dy):
        dsrc = None
        if self.needs_grad[1]:
            dsrc = backend.xp.zeros(self.src_shape, dtype=dy.dtype)
            dsrc[tuple(slice(0, n) for n in self.index.shape)] = dy[self.where] * self.src_others
        da = dy * self.self_others if self.include_self else backend.xp.where(self.written, 0, dy)
        return da, dsrc

    def composite(self, x, src):
        """The same product as a dense composite: factor [.., k, j] = src[.., j] where index[.., j]
        = k along the axis, else 1; the product over j, padded with 1s to x's shape, times x."""
        xp, ax = backend.xp, self.axis
        used = movedim(_used_part(src, self.index.shape), ax, -1)             # (.., m)
        index = xp.moveaxis(self.index, ax, -1)
        n = x.shape[ax]
        hits = index[..., None, :] == xp.arange(n)[:, None]                     # (.., n, m)
        factors = where(hits, broadcast_to(reshape(used, used.shape[:-1] + (1, used.shape[-1])), hits.shape), 1.0)
        products = movedim(prod(factors, axis=-1), -1, ax)
        products = pad(products, [(0, a - b) for a, b in zip(x.shape, products.shape)], value=1.0)
        base = x if self.include_self else masked_fill(x, self.written, 1.0)
        return mul(base, products)

    backward_graph = Function.composite_backward_graph


_REDUCTIONS = ("sum", "prod", "mean", "amax", "amin")


def scatter_reduce(x, axis: int, index, src, reduce: str, include_self: bool = True) -> Tensor:
    """x with the src values sent to each place (``index`` replacing position ``axis``, as in
    scatter) reduced by ``reduce``: "sum", "prod", "mean", "amax" or "amin", x's own value taking
    part when ``include_self`` (places nothing is sent to keep x), as ``torch.scatter_reduce``.
    Gradients as PyTorch's: "mean" divides by the count, "amax"/"amin" share among ties. An
    integer "mean" keeps the dtype and rounds down (floor division), as PyTorch's."""
    if reduce not in _REDUCTIONS:
        raise ValueError(f"scatter_reduce: reduce must be one of {_REDUCTIONS}, got {reduce!r}")
    shape, axis, index = _scatter_args(x, axis, index, src, "scatter_reduce")
    dest = _destinations(shape, axis, index)
    written = _written(shape, dest)
    if reduce in ("sum", "mean"):
        base = x if include_self else masked_fill(x, written, 0.0)
        total = scatter_add(base, axis, index, src)
        if reduce == "sum":
            return total
        xp = backend.xp
        dtype = total.dtype
        counts = xp.zeros(shape, dtype=dtype if dtype.kind == "f" else xp.int64)
        xp.add.at(counts.reshape(-1), dest.reshape(-1), 1)
        counts = xp.maximum(counts + (1 if include_self else 0), 1)
        if dtype.kind in "iu":      # no gradient to carry for integers
            return Tensor._wrap((total.data // counts).astype(dtype, copy=False))
        return div(total, counts)
    spots = _along_axis(index, axis)
    if reduce == "prod":
        return ScatterProd.apply(x, src, axis=axis, index=index, where=spots, written=written,
                                 include_self=bool(include_self))
    return ScatterExtreme.apply(x, src, axis=axis, index=index, where=spots, written=written,
                                include_self=bool(include_self), largest=reduce == "amax")


def _slice_index(x, axis, index, source, op: str):
    """A 1-D ``index`` of slices along ``axis`` spread to the shape of ``source`` (x's shape with
    len(index) on ``axis``), for the scatter ops."""
    shape = tuple(_shape_of(x))
    axis = _one_axis(axis, len(shape), op)
    index = _index_array(index, op)
    if index.ndim > 1:
        raise ShapeError(f"{op}: index must be 0-D or 1-D, got shape {index.shape}")
    index = index.reshape(-1)
    _check_range(index, shape[axis], op, f"axis {axis} of x of shape {shape}")
    if source is None:
        return axis, index
    src_shape = tuple(_shape_of(source))
    expected = shape[:axis] + (index.size,) + shape[axis + 1:]
    if src_shape != expected:
        raise ShapeError(f"{op}: source of shape {src_shape} does not fit x of shape {shape} and an index of "
                         f"{index.size} entries on axis {axis}; expected shape {expected}")
    spread = [1] * len(shape)
    spread[axis] = index.size
    return axis, backend.xp.broadcast_to(index.reshape(spread), expected)


def index_add(x, axis: int, index, source, alpha: float = 1.0) -> Tensor:
    """x with alpha * source[.., j, ..] added to the slice x[.., index[j], ..] along ``axis`` (repeated
    indices add up), as ``torch.index_add``."""
    axis, spread = _slice_index(x, axis, index, source, "index_add")
    return scatter_add(x, axis, spread, source if alpha == 1 else mul(source, alpha))


def index_copy(x, axis: int, index, source) -> Tensor:
    """x with the slice x[.., index[j], ..] along ``axis`` replaced by source[.., j, ..], as
    ``torch.index_copy`` (a repeated index keeps the last slice)."""
    axis, spread = _slice_index(x, axis, index, source, "index_copy")
    return scatter(x, axis, spread, source)


def index_fill(x, axis: int, index, value: float) -> Tensor:
    """x with the slices x[.., index[j], ..] along ``axis`` set to ``value``, as ``torch.index_fill``."""
    axis, index = _slice_index(x, axis, index, None, "index_fill")
    shape = tuple(_shape_of(x))
    mask = backend.xp.zeros(shape[axis], dtype=bool)
    mask[index] = True
    spread = [1] * len(shape)
    spread[axis] = shape[axis]
    return fill_masked(x, mask.reshape(spread), value, "index_fill")


# -- masks --------------------------------------------------------------------------------------
def _bool_mask(mask, op: str):
    mask = _raw(mask)
    if mask.dtype != bool:
        raise ValueError(f"{op}: mask must be boolean, got dtype {mask.dtype}")
    return mask


def masked_select(x, mask) -> Tensor:
    """The values of x where the boolean ``mask`` holds (both broadcast together), in row-major
    order, as a 1-D tensor (``torch.masked_select``), also when both are 0-d."""
    mask = _bool_mask(mask, "masked_select")
    shape = _broadcast_shape("masked_select", _shape_of(x), mask.shape) or (1,)
    return getitem(_broadcast(x, shape), backend.xp.nonzero(backend.xp.broadcast_to(mask, shape)))


def masked_scatter(x, mask, source) -> Tensor:
    """x with the places where ``mask`` (broadcast to x's shape) holds filled, in row-major order,
    by the leading values of the flattened ``source``, as ``torch.masked_scatter``."""
    xp = backend.xp
    mask = _bool_mask(mask, "masked_scatter")
    shape = tuple(_shape_of(x))
    if _broadcast_shape("masked_scatter", shape, mask.shape) != shape:
        raise ShapeError(f"masked_scatter: mask of shape {mask.shape} cannot be broadcast to x of shape {shape}")
    mask = xp.broadcast_to(mask, shape)
    wanted, size = int(mask.sum()), int(xp.prod(_shape_of(source)))
    if wanted > size:
        raise ShapeError(f"masked_scatter: mask selects {wanted} places but source of shape "
                         f"{tuple(_shape_of(source))} holds only {size} values")
    if wanted == 0:
        return reshape(x, shape)
    order = xp.maximum(xp.cumsum(mask.reshape(-1)) - 1, 0).reshape(shape)
    return where(mask, getitem(reshape(source, (-1,)), order), x)


def nonzero(x, as_tuple: bool = False):
    """The indices of the nonzero entries of x in row-major order: an (n, ndim) int64 array, or
    one 1-D array per axis with ``as_tuple`` (as ``torch.nonzero``); no gradient."""
    a = _raw(x)
    if as_tuple:
        return tuple(i.astype(backend.xp.int64) for i in backend.xp.nonzero(backend.xp.atleast_1d(a)))
    return backend.xp.argwhere(a).astype(backend.xp.int64)


# -- ordering and search ----------------------------------------------------------------------
def argsort(x, axis: int = -1, descending: bool = False, stable: bool = True):
    """The indices that sort x along ``axis`` (an int64 array), equal values keeping their order,
    NaN counted largest, as ``torch.argsort(stable=True)``; ``stable`` is accepted for torch's
    signature and the sort is always stable."""
    a = _raw(x)
    if a.ndim == 0:
        return backend.xp.zeros((), dtype=backend.xp.int64)
    axis = _one_axis(axis, a.ndim, "argsort")
    return _stable_order(a, axis, descending).astype(backend.xp.int64)


def msort(x) -> Tensor:
    """x sorted along its first axis (``torch.msort``), gradients going back to each value's source."""
    return sort(x, axis=0)[0]


def unique(x, sorted: bool = True, return_inverse: bool = False, return_counts: bool = False,  # noqa: A002
           axis: int | None = None):
    """The distinct values of x in increasing order (distinct slices along ``axis``, compared
    lexicographically), as ``torch.unique``; with ``return_inverse`` also where each value (slice)
    of x went, in x's shape (of length x.shape[axis]), and with ``return_counts`` how often each
    occurs. As in torch, NaN equals nothing, itself included: each NaN (each slice holding one)
    is a value of its own, NaN sorting last (torch leaves the order of slices holding a NaN
    unspecified). The values are a constant tensor; the result is sorted even when ``sorted`` is
    False."""
    xp = backend.xp
    a = _raw(x)
    if axis is not None:
        axis = _one_axis(axis, a.ndim, "unique")
        values, inverse, counts = xp.unique(a, return_inverse=True, return_counts=True, axis=axis)
    else:
        values, inverse, counts = xp.unique(a, return_inverse=True, return_counts=True, equal_nan=False)
    inverse = inverse.reshape(a.shape if axis is None else (a.shape[axis],)).astype(xp.int64)
    out = [Tensor._wrap(values)]
    if return_inverse:
        out.append(inverse)
    if return_counts:
        out.append(counts.astype(xp.int64))
    return out[0] if len(out) == 1 else tuple(out)


def unique_consecutive(x, return_inverse: bool = False, return_counts: bool = False, axis: int | None = None):
    """The first value of every run of equal consecutive values of x (flattened), or the first
    slice along ``axis`` of every run of equal consecutive slices, as ``torch.unique_consecutive``;
    with ``return_inverse`` also the run each value (slice) belongs to, in x's shape (of length
    x.shape[axis]), and with ``return_counts`` the length of each run. NaN equals nothing, so
    it (a slice holding it) starts a run of its own. The values are a constant tensor."""
    xp = backend.xp
    a = _raw(x)
    if axis is None:
        lines = a.reshape(-1)
        starts = lines[1:] != lines[:-1]
    else:
        axis = _one_axis(axis, a.ndim, "unique_consecutive")
        others = math.prod(a.shape[:axis] + a.shape[axis + 1:])
        if others == 0 and a.shape[axis]:
            raise ShapeError(f"unique_consecutive: slices along axis {axis} of x of shape {a.shape} are empty")
        lines = xp.moveaxis(a, axis, 0).reshape(a.shape[axis], others)
        starts = (lines[1:] != lines[:-1]).any(axis=1)
    first = xp.concatenate([xp.ones(min(lines.shape[0], 1), dtype=bool), starts])
    heads = xp.flatnonzero(first)
    values = lines[heads] if axis is None else xp.take(a, heads, axis=axis)
    out = [Tensor._wrap(values)]
    if return_inverse:
        inverse = xp.cumsum(first) - 1
        out.append(inverse.reshape(a.shape if axis is None else (a.shape[axis],)).astype(xp.int64))
    if return_counts:
        out.append(xp.diff(xp.concatenate([heads, xp.asarray([lines.shape[0]])])).astype(xp.int64))
    return out[0] if len(out) == 1 else tuple(out)


def _side(right: bool, side: str | None, op: str) -> str:
    if side is None:
        return "right" if right else "left"
    if side not in ("left", "right"):
        raise ValueError(f"{op}: side must be 'left' or 'right', got {side!r}")
    if right and side == "left":
        raise ValueError(f"{op}: side='left' contradicts right=True")
    return side


def searchsorted(sorted_sequence, values, right: bool = False, side: str | None = None, sorter=None,
                 out_int32: bool = False):
    """For each value, the index where it would be inserted into the sorted last axis of
    ``sorted_sequence`` to keep it sorted: before equal entries (``side="left"``) or after them
    (``right=True`` or ``side="right"``), as ``torch.searchsorted``. A sequence of more than one axis
    is a batch of rows, each searched for the matching row of ``values``. ``sorter`` holds the
    indices that sort an unsorted sequence along its last axis. Comparisons with NaN are false,
    as in torch's binary search: a NaN value lands after the whole row, and a row ending in NaN
    (sorted as torch.sort leaves it) is searched as torch searches it."""
    xp = backend.xp
    seq, vals = _raw(sorted_sequence), _raw(values)
    side = _side(right, side, "searchsorted")
    if seq.ndim == 0:
        raise ShapeError("searchsorted: sorted_sequence must have at least one axis, got a 0-D input")
    if sorter is not None:
        sorter = _index_array(sorter, "searchsorted")
        if sorter.shape != seq.shape:
            raise ShapeError(f"searchsorted: sorter of shape {sorter.shape} must match sorted_sequence of shape "
                             f"{seq.shape}")
        seq = xp.take_along_axis(seq, sorter, axis=-1)
    dtype = xp.int32 if out_int32 else xp.int64
    if seq.ndim > 1 and (vals.ndim != seq.ndim or vals.shape[:-1] != seq.shape[:-1]):
        raise ShapeError(f"searchsorted: values of shape {vals.shape} must share the leading axes of "
                         f"sorted_sequence of shape {seq.shape}")
    if seq.shape[-1] and seq.dtype.kind == "f" and xp.isnan(seq[..., -1]).any():
        return _compare_search(seq, vals, side).astype(dtype)
    if seq.ndim == 1:
        return xp.asarray(xp.searchsorted(seq, vals, side=side)).astype(dtype)
    n_rows = math.prod(seq.shape[:-1])
    rows, queries = seq.reshape(n_rows, seq.shape[-1]), vals.reshape(n_rows, vals.shape[-1])
    out = xp.stack([xp.searchsorted(r, q, side=side) for r, q in zip(rows, queries)]) if rows.size else \
        xp.zeros(queries.shape, dtype=dtype)
    return out.reshape(vals.shape).astype(dtype)


def _compare_search(seq, vals, side: str):
    """torch's binary search with IEEE comparisons, for a sequence ending in NaN: step right of
    the middle entry m unless m >= v (m > v on the right side), so every comparison with NaN
    steps right (NumPy instead orders NaN after every number)."""
    xp = backend.xp
    n = seq.shape[-1]
    rows = seq.reshape((1, n)) if seq.ndim == 1 else seq
    queries = vals.reshape((1, -1)) if seq.ndim == 1 else vals
    start = xp.zeros(queries.shape, dtype=xp.int64)
    end = xp.full(queries.shape, n, dtype=xp.int64)
    while True:
        active = start < end
        if not active.any():
            break
        middle = (start + end) // 2
        value = xp.take_along_axis(rows, xp.minimum(middle, n - 1), axis=-1)
        right = ~(value >= queries) if side == "left" else ~(value > queries)
        start = xp.where(active & right, middle + 1, start)
        end = xp.where(active & ~right, middle, end)
    return start.reshape(vals.shape)


def bucketize(x, boundaries, right: bool = False, out_int32: bool = False):
    """The bucket of each value of x among the 1-D increasing ``boundaries``: i such that
    b[i-1] < x <= b[i] (b[i-1] <= x < b[i] with ``right``), as ``torch.bucketize``."""
    bounds = _raw(boundaries)
    if bounds.ndim != 1:
        raise ShapeError(f"bucketize: boundaries must be 1-D, got shape {bounds.shape}")
    return searchsorted(bounds, x, right=right, out_int32=out_int32)


# -- counting -------------------------------------------------------------------------------------
def histc(x, bins: int = 100, min: float = 0.0, max: float = 0.0) -> Tensor:  # noqa: A002
    """Counts of x's values in ``bins`` equal bins over [min, max] (the data's range where min ==
    max; values outside are left out; the top edge belongs to the last bin), as ``torch.histc``;
    a constant tensor of x's dtype."""
    xp = backend.xp
    a = _raw(x)
    bins = _whole_number(bins, "histc", "bins", low=1)
    low, high = float(min), float(max)
    if low > high:
        raise ValueError(f"histc: min {low} must not exceed max {high}")
    if low == high and a.size:
        low, high = float(a.min()), float(a.max())
    if low == high:
        low, high = low - 1, high + 1
    dtype = a.dtype if a.dtype.kind == "f" else backend.get_default_dtype()
    inside = a[(a >= low) & (a <= high)].astype(xp.float64)
    which = ((inside - low) * bins / (high - low)).astype(xp.int64)
    counts = xp.bincount(xp.minimum(which, bins - 1), minlength=bins)
    return Tensor._wrap(counts.astype(dtype))


def bincount(x, weights=None, minlength: int = 0):
    """How often each value 0, 1, .. occurs in the 1-D non-negative integer x (at least
    ``minlength`` bins), as ``torch.bincount``: an int64 array, or with ``weights`` the sum of the
    weights of each value's occurrences, a tensor differentiable in the weights."""
    xp = backend.xp
    a = _index_array(x, "bincount")
    if a.ndim != 1:
        raise ShapeError(f"bincount: x must be 1-D, got shape {a.shape}")
    if a.size and int(a.min()) < 0:
        raise ValueError(f"bincount: x must hold non-negative integers, got {int(a.min())}")
    minlength = _whole_number(minlength, "bincount", "minlength")
    length = max(minlength, int(a.max()) + 1 if a.size else 0)
    if weights is None:
        return xp.bincount(a, minlength=length).astype(xp.int64)
    if tuple(_shape_of(weights)) != a.shape:
        raise ShapeError(f"bincount: weights of shape {tuple(_shape_of(weights))} must match x of shape {a.shape}")
    w = _raw(weights)
    dtype = w.dtype if w.dtype.kind == "f" else xp.float64
    return scatter_add(xp.zeros(length, dtype=dtype), 0, a, weights)
