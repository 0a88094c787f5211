"""Segment reductions: rows of ``src`` grouped by an integer ``index``, one group (segment)
per output row, as in graph message passing (each edge's message goes to its target node)
and graph pooling (each node's features go to its graph).

For src of shape (E, ...) and index of shape (E,) with values in [0, N):

    segment_sum:      y[n] = sum over the e with index[e] = n of src[e]
    segment_mean:     y[n] = segment_sum / |{e : index[e] = n}|
    segment_max:      y[n] = max over the same e (elementwise)
    segment_softmax:  y[e] = exp(src[e]) / sum over the e' with index[e'] = index[e] of exp(src[e'])
    take_rows:        y[e] = x[index[e]], the adjoint of segment_sum

A segment no row goes to is 0 in segment_sum, segment_mean and segment_max. The index is a
constant: it gets no gradient.

Sums are one sparse product S @ src, with S the (N, E) 0/1 matrix holding a 1 at
(index[e], e); the gradient of segment_sum is S^T dy = dy[index], and that of take_rows is
S dy, so both directions avoid ``np.add.at``.
"""

from __future__ import annotations

import math

import numpy

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.autograd.function import _as_tensors
from lamina.errors import ShapeError
from lamina.functional.indexing import index_select

__all__ = ["segment_max", "segment_mean", "segment_softmax", "segment_sum", "take_rows"]


# -- raw kernels ----------------------------------------------------------------------------
def sum_rows(index, rows, num_segments: int):
    """``y[n] = sum of rows[e] over index[e] = n`` on raw arrays, rows of shape (E, ...)."""
    xp = backend.xp
    flat = rows.reshape(rows.shape[0], math.prod(rows.shape[1:]))
    if type(rows) is numpy.ndarray and rows.dtype.kind == "f":
        from scipy import sparse

        n = index.shape[0]
        s = sparse.csc_matrix((numpy.ones(n, dtype=rows.dtype), index, numpy.arange(n + 1)),
                              shape=(num_segments, n))
        out = numpy.ascontiguousarray(s @ flat)
    else:
        out = xp.zeros((num_segments, flat.shape[1]), dtype=rows.dtype)
        xp.add.at(out, index, flat)
    return out.reshape((num_segments,) + rows.shape[1:])


def max_rows(index, rows, num_segments: int):
    """``y[n] = max of rows[e] over index[e] = n`` (0 for an empty segment) on raw arrays:
    the rows sorted by segment, then one ``maximum.reduceat`` over the runs."""
    xp = backend.xp
    out = xp.zeros((num_segments,) + rows.shape[1:], dtype=rows.dtype)
    if index.shape[0] == 0:
        return out
    order = xp.argsort(index, kind="stable")
    ordered = index[order]
    starts = xp.flatnonzero(xp.concatenate([xp.ones(1, dtype=bool), ordered[1:] != ordered[:-1]]))
    out[ordered[starts]] = xp.maximum.reduceat(rows[order], starts, axis=0)
    return out


def _counts(index, num_segments: int):
    return backend.xp.bincount(index, minlength=num_segments)


# -- functions ------------------------------------------------------------------------------
class SegmentSum(Function):
    """y = S src (S: the (N, E) 0/1 matrix of the index); linear, so dJ/dsrc = S^T dy = dy[index]."""

    def forward(self, src):
        return sum_rows(self.index, src, self.num_segments)

    def backward(self, dy):
        return (backend.xp.take(dy, self.index, axis=0),)

    backward_graph = Function.linear_backward_graph


class TakeRows(Function):
    """y = S^T x = x[index] (rows of x copied, one per index entry); dJ/dx = S dy, the
    upstream rows summed into the row they were copied from."""

    def forward(self, x):
        return backend.xp.take(x, self.index, axis=0)

    def backward(self, dy):
        return (sum_rows(self.index, dy, self.num_segments),)

    backward_graph = Function.linear_backward_graph


class SegmentMax(Function):
    """y[n] = max of src[e] over index[e] = n. Around any input y is the linear map picking
    the maxima, so dJ/dsrc[e] = w_e dJ/dy[index[e]], with w_e = 1 / t where src[e] is one of
    the t entries equal to its segment's maximum (ties share it evenly, as PyTorch's
    ``scatter_reduce(..., 'amax')``), else 0; the second derivative is 0."""

    def forward(self, src):
        xp = backend.xp
        y = max_rows(self.index, src, self.num_segments)
        hits = (src == xp.take(y, self.index, axis=0)).astype(src.dtype)
        ties = sum_rows(self.index, hits, self.num_segments)
        self.share = hits / xp.maximum(xp.take(ties, self.index, axis=0), 1)
        return y

    def backward(self, dy):
        return (backend.xp.take(dy, self.index, axis=0) * self.share,)

    def backward_graph(self, dy):
        return (take_rows(dy, self.index, self.num_segments) * self.share,)


class SegmentSoftmax(Function):
    """y[e] = exp(src[e] - m) / sum over e' in e's segment of exp(src[e'] - m), m the segment's
    maximum (it cancels; subtracting it keeps exp from overflowing). As for any softmax,
    dJ/dsrc[e] = y[e] (dJ/dy[e] - sum over e' in e's segment of y[e'] dJ/dy[e'])."""

    def forward(self, src):
        xp = backend.xp
        peak = xp.take(max_rows(self.index, src, self.num_segments), self.index, axis=0)
        e = xp.exp(src - peak)
        total = xp.take(sum_rows(self.index, e, self.num_segments), self.index, axis=0)
        self.y = e / total
        return self.y

    def backward(self, dy):
        xp = backend.xp
        inner = xp.take(sum_rows(self.index, self.y * dy, self.num_segments), self.index, axis=0)
        return (self.y * (dy - inner),)

    def backward_graph(self, dy):
        y = self.recorded_output(self.y)
        inner = take_rows(segment_sum(y * dy, self.index, self.num_segments), self.index, self.num_segments)
        return (y * (dy - inner),)


# -- wrappers -------------------------------------------------------------------------------
def _segment_args(src, index, num_segments, op: str):
    """(src tensor, index array, number of segments) checked: index 1-D integer with one
    entry per row of src, values in [0, num_segments) (num_segments None: max + 1)."""
    (src,) = _as_tensors((src,))
    if src.ndim == 0:
        raise ShapeError(f"{op}: src must have at least one axis (one row per index entry), got a scalar")
    index = index.data if isinstance(index, Tensor) else backend.xp.asarray(index)
    if index.dtype.kind not in "iu":
        raise ValueError(f"{op}: index must hold integers, got dtype {index.dtype}")
    if index.ndim != 1 or index.shape[0] != src.shape[0]:
        raise ShapeError(f"{op}: index of shape {tuple(index.shape)} must be 1-D with one entry per row of "
                         f"src of shape {tuple(src.shape)}")
    if num_segments is None:
        num_segments = int(index.max()) + 1 if index.shape[0] else 0
    if isinstance(num_segments, bool) or not isinstance(num_segments, (int, numpy.integer)) or num_segments < 0:
        raise ValueError(f"{op}: num_segments must be an int >= 0, got {num_segments!r}")
    if index.shape[0] and (int(index.min()) < 0 or int(index.max()) >= num_segments):
        bad = int(index.min()) if int(index.min()) < 0 else int(index.max())
        raise ValueError(f"{op}: index value {bad} is out of range for {num_segments} segments; "
                         f"expected values in [0, {num_segments})")
    return src, index.astype(numpy.int64, copy=False), int(num_segments)


def segment_sum(src, index, num_segments: int | None = None) -> Tensor:
    """(N, ...) sums of the rows of ``src`` (E, ...) that share an ``index`` value:
    y[n] = sum over index[e] = n of src[e] (torch's ``zeros(N, ...).index_add_(0, index, src)``)."""
    src, index, n = _segment_args(src, index, num_segments, "segment_sum")
    return SegmentSum.apply(src, index=index, num_segments=n)


def segment_mean(src, index, num_segments: int | None = None) -> Tensor:
    """(N, ...) means of the rows of ``src`` that share an ``index`` value (0 for an empty segment)."""
    src, index, n = _segment_args(src, index, num_segments, "segment_mean")
    counts = backend.xp.maximum(_counts(index, n), 1).astype(src.dtype)
    return SegmentSum.apply(src, index=index, num_segments=n) / counts.reshape((n,) + (1,) * (src.ndim - 1))


def segment_max(src, index, num_segments: int | None = None) -> Tensor:
    """(N, ...) elementwise maxima of the rows of ``src`` that share an ``index`` value (0 for
    an empty segment); tied maxima share the gradient evenly."""
    src, index, n = _segment_args(src, index, num_segments, "segment_max")
    return SegmentMax.apply(src, index=index, num_segments=n)


def segment_softmax(src, index, num_segments: int | None = None) -> Tensor:
    """The softmax of ``src`` (E, ...) over each group of rows sharing an ``index`` value,
    separately for every trailing position (one softmax per attention head): the rows of
    one segment are positive and sum to 1. Same shape as src."""
    src, index, n = _segment_args(src, index, num_segments, "segment_softmax")
    return SegmentSoftmax.apply(src, index=index, num_segments=n)


def take_rows(x, index, num_rows: int | None = None) -> Tensor:
    """x[index] along the first axis (as ``index_select(x, 0, index)``), for index values in
    [0, len(x)); its gradient adds the upstream rows back by one sparse product."""
    (x,) = _as_tensors((x,))
    index = index.data if isinstance(index, Tensor) else backend.xp.asarray(index)
    if index.ndim != 1 or x.ndim == 0:
        raise ShapeError(f"take_rows: index of shape {tuple(index.shape)} must be 1-D and x of shape "
                         f"{tuple(x.shape)} must have at least one axis")
    if num_rows is not None and num_rows != x.shape[0]:
        raise ShapeError(f"take_rows: x of shape {tuple(x.shape)} has {x.shape[0]} rows, expected {num_rows}")
    if not backend.xp.issubdtype(index.dtype, backend.xp.integer) or (
            index.shape[0] and (int(index.min()) < 0 or int(index.max()) >= x.shape[0])):
        return index_select(x, 0, index)          # index_select gives the error message
    return TakeRows.apply(x, index=index.astype(numpy.int64, copy=False), num_segments=x.shape[0])
