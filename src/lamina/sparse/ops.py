"""Ops on sparse tensors, with gradients to the values and to the dense operands
(torch.sparse semantics). Every one is a VJP over the stored entries: no dense Jacobian and,
except in ``to_dense``, no dense copy of the sparse operand."""

from __future__ import annotations

import math
from numbers import Number

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.segment import max_rows
from lamina.sparse.products import SampledDot, SparseDenseMM
from lamina.sparse.tensor import SparseTensor

__all__ = ["addmm", "log_softmax", "mm", "mul", "sampled_addmm", "softmax", "spmm", "sum"]


def _sparse(s, op: str) -> SparseTensor:
    if not isinstance(s, SparseTensor):
        raise TypeError(f"{op}: expected a SparseTensor, got {type(s).__name__}")
    return s


def _dense(x, op: str, dtype) -> Tensor:
    if isinstance(x, SparseTensor):
        raise TypeError(f"{op}: the second operand must be dense, got a SparseTensor of shape {x.shape}; "
                        "use to_dense() on it")
    x = x if isinstance(x, Tensor) else Tensor(x, dtype=dtype)
    if x.dtype != dtype:
        raise TypeError(f"{op}: the sparse values have dtype {dtype} but the dense operand has {x.dtype}; "
                        "expected the same dtype")
    return x


def mm(s: SparseTensor, x) -> Tensor:
    """Y = S X for a sparse matrix S (m, k) and a dense X (k, n): (m, n) dense
    (``torch.sparse.mm``). Gradients: dJ/dX = S^T dY, and for each stored entry e at (i, j)
    dJ/dv[e] = dY[i] . X[j]."""
    s = _sparse(s, "sparse.mm")
    s._require_matrix("sparse.mm")
    x = _dense(x, "sparse.mm", s.dtype)
    if x.ndim != 2 or x.shape[0] != s.shape[1]:
        raise ShapeError(f"sparse.mm: cannot multiply a sparse matrix of shape {s.shape} by a dense operand of "
                         f"shape {tuple(x.shape)}; expected shape ({s.shape[1]}, n)")
    return SparseDenseMM.apply(s.values, x, pattern=s.pattern())


def spmm(s: SparseTensor, x) -> Tensor:
    """S X for a sparse matrix S (m, k) and X (k,), (k, n) or batched (..., k, n): the same S
    applied to every matrix of the batch (one sparse product on the batch laid side by side);
    the result is (m,), (m, n) or (..., m, n). ``S @ X`` calls it."""
    s = _sparse(s, "sparse.spmm")
    x = _dense(x, "sparse.spmm", s.dtype)
    if x.ndim == 0 or (x.ndim == 1 and x.shape[0] != s.shape[1]) or (x.ndim > 1 and x.shape[-2] != s.shape[1]):
        raise ShapeError(f"sparse.spmm: cannot multiply a sparse matrix of shape {s.shape} by a dense operand "
                         f"of shape {tuple(x.shape)}; expected ({s.shape[1]},), ({s.shape[1]}, n) or "
                         f"(..., {s.shape[1]}, n)")
    if x.ndim == 1:
        return F.reshape(mm(s, F.reshape(x, (-1, 1))), (s.shape[0],))
    if x.ndim == 2:
        return mm(s, x)
    batch, (k, n) = tuple(x.shape[:-2]), x.shape[-2:]
    b = math.prod(batch)
    side_by_side = F.reshape(F.transpose(F.reshape(x, (b, k, n)), (1, 0, 2)), (k, b * n))
    y = F.reshape(mm(s, side_by_side), (s.shape[0], b, n))
    return F.reshape(F.transpose(y, (1, 0, 2)), batch + (s.shape[0], n))


def addmm(input, s: SparseTensor, x, beta: float = 1.0, alpha: float = 1.0) -> Tensor:  # noqa: A002
    """beta * input + alpha * S X (``torch.sparse.addmm``), input dense, broadcast to (m, n)."""
    product = mm(s, x)
    return beta * _dense(input, "sparse.addmm", s.dtype) + alpha * product


def sampled_addmm(s: SparseTensor, a, b, beta: float = 1.0, alpha: float = 1.0) -> SparseTensor:
    """beta * S + alpha * (A B) read only at the stored positions of S (``torch.sparse.sampled_addmm``):
    entry e at (i, j) becomes beta v[e] + alpha A[i] . B[:, j], for A (m, k) and B (k, n). The
    result has the layout and positions of S; gradients go to v, A and B without forming A B."""
    op = "sparse.sampled_addmm"
    s = _sparse(s, op)
    s._require_matrix(op)
    a, b = _dense(a, op, s.dtype), _dense(b, op, s.dtype)
    m, n = s.shape
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != m or b.shape[1] != n or a.shape[1] != b.shape[0]:
        raise ShapeError(f"{op}: A of shape {tuple(a.shape)} times B of shape {tuple(b.shape)} must give the "
                         f"shape of the sparse matrix {s.shape}; expected A ({m}, k) and B (k, {n})")
    sampled = SampledDot.apply(a, F.transpose(b), pattern=s.pattern())
    values = alpha * sampled if beta == 0 else beta * s.values + alpha * sampled
    return s.with_values(values)


def mul(s: SparseTensor, other) -> SparseTensor:
    """S * other for a number or a dense tensor broadcastable to S's shape: the product read only
    at the stored positions (zero elsewhere), so the result keeps S's positions and layout."""
    s = _sparse(s, "sparse.mul")
    if isinstance(other, Number):
        return s.with_values(s.values * other)
    other = _dense(other, "sparse.mul", s.dtype)
    try:
        full = F.broadcast_to(other, s.shape)
    except (ValueError, ShapeError):
        raise ShapeError(f"sparse.mul: a dense operand of shape {tuple(other.shape)} does not broadcast to the "
                         f"sparse tensor's shape {s.shape}") from None
    rows = F.reshape(full, (math.prod(s.sparse_shape()),) + s.shape[s.sparse_dim:])
    return s.with_values(s.values * F.take_rows(rows, s.flat_index()))


def _axes(dim, ndim: int, op: str) -> list[int]:
    dims = [dim] if isinstance(dim, int) else list(dim)
    axes = sorted({d + ndim if d < 0 else d for d in dims})
    if any(not 0 <= d < ndim for d in axes) or len(axes) != len(dims):
        raise ShapeError(f"{op}: dim {dim!r} is not a list of distinct axes of a tensor with {ndim} axes")
    return axes


def sum(s: SparseTensor, dim=None) -> Tensor:  # noqa: A001 - mirrors torch.sparse.sum
    """The sum of all stored values (dim None: a 0-d tensor) or over the axes ``dim`` (an int or
    a tuple), as a dense tensor of the remaining axes (torch's result, densified)."""
    s = _sparse(s, "sparse.sum")
    if dim is None:
        return F.sum(s.values)
    axes = _axes(dim, s.ndim, "sparse.sum")
    values = s.values
    dense_axes = [d - s.sparse_dim + 1 for d in axes if d >= s.sparse_dim]
    if dense_axes:
        values = F.sum(values, axis=tuple(dense_axes))
    kept = [d for d in range(s.sparse_dim) if d not in axes]
    if not kept:
        return F.sum(values, axis=0)
    kept_shape = tuple(s.shape[d] for d in kept)
    index = backend.xp.ravel_multi_index(tuple(s.indices[kept]), kept_shape)
    summed = F.segment_sum(values, index, math.prod(kept_shape))
    return F.reshape(summed, kept_shape + tuple(values.shape[1:]))


def _groups(s: SparseTensor, dim: int):
    """(group of each entry, number of groups): entries share a group when they agree on every
    sparse axis but ``dim``, the set a softmax along ``dim`` runs over."""
    others = [d for d in range(s.sparse_dim) if d != dim]
    if not others:
        return backend.xp.zeros(s.nnz, dtype=backend.xp.int64), 1
    key = backend.xp.ravel_multi_index(tuple(s.indices[others]), tuple(s.shape[d] for d in others))
    unique, group = backend.xp.unique(key, return_inverse=True)
    return group.reshape(-1), int(unique.shape[0])


def _softmax_args(s, dim: int, op: str) -> tuple[SparseTensor, int]:
    s = _sparse(s, op)
    (axis,) = _axes(dim, s.ndim, op)
    return s.coalesce(), axis


def softmax(s: SparseTensor, dim: int) -> SparseTensor:
    """The softmax along ``dim`` over the stored entries only (``torch.sparse.softmax``: the
    missing ones count as -inf): y[e] = exp(v[e]) / sum of exp(v[e']) over the entries e' that
    share every other coordinate with e. The input is coalesced first; the result has its positions."""
    s, axis = _softmax_args(s, dim, "sparse.softmax")
    if axis >= s.sparse_dim:
        return s.with_values(F.softmax(s.values, axis=axis - s.sparse_dim + 1))
    group, count = _groups(s, axis)
    return s.with_values(F.segment_softmax(s.values, group, count))


def log_softmax(s: SparseTensor, dim: int) -> SparseTensor:
    """log of :func:`softmax`, computed stably: y[e] = v[e] - m - log(sum of exp(v[e'] - m)),
    m the group's largest value (a constant: any m gives the same y and gradient)."""
    s, axis = _softmax_args(s, dim, "sparse.log_softmax")
    if axis >= s.sparse_dim:
        return s.with_values(F.log_softmax(s.values, axis=axis - s.sparse_dim + 1))
    group, count = _groups(s, axis)
    peak = backend.xp.take(max_rows(group, s.values.data, count), group, axis=0)
    shifted = s.values - peak
    log_total = F.log(F.segment_sum(F.exp(shifted), group, count))
    return s.with_values(shifted - F.take_rows(log_total, group))
