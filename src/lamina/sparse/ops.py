"""Ops on sparse tensors, with gradients to the values and to the dense operands
(torch.sparse semantics). Every one is a VJP over the stored entries: no dense Jacobian and,
except in ``to_dense`` and the sum with a dense tensor, no dense copy of the sparse operand."""

from __future__ import annotations

import math
from numbers import Integral, Number

import numpy

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.segment import max_rows
from lamina.sparse.products import SampledDot, SparseDenseMM
from lamina.sparse.tensor import SparseTensor

__all__ = ["add", "addmm", "dense_spmm", "div", "log_softmax", "mm", "mul", "sampled_addmm", "softmax", "spmm", "sum"]


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


def dense_spmm(x, s: SparseTensor) -> Tensor:
    """X S for a dense X (m,), (n, m) or batched (..., n, m) and a sparse matrix S (m, k):
    (S^T X^T)^T, the batch going through :func:`spmm`; the result is (k,), (n, k) or (..., n, k).
    ``X @ S`` calls it."""
    op = "sparse.dense_spmm"
    s = _sparse(s, op)
    s._require_matrix(op)
    x = _dense(x, op, s.dtype)
    if x.ndim == 0 or x.shape[-1] != s.shape[0]:
        raise ShapeError(f"{op}: cannot multiply a dense operand of shape {tuple(x.shape)} by a sparse matrix of "
                         f"shape {s.shape}; expected ({s.shape[0]},), (n, {s.shape[0]}) or (..., n, {s.shape[0]})")
    if x.ndim == 1:
        return spmm(s.t(), x)
    return F.swapaxes(spmm(s.t(), F.swapaxes(x, -1, -2)), -1, -2)


def addmm(input, s: SparseTensor, x, beta: float = 1.0, alpha: float = 1.0) -> Tensor:  # noqa: A002
    """beta * input + alpha * S X (``torch.sparse.addmm``), input dense, broadcast to (m, n).
    With beta == 0 input is ignored, as in torch: its NaN and inf do not reach the result."""
    product = mm(s, x)
    added = _dense(input, "sparse.addmm", s.dtype)
    try:
        fits = numpy.broadcast_shapes(tuple(added.shape), tuple(product.shape)) == tuple(product.shape)
    except ValueError:
        fits = False
    if not fits:
        raise ShapeError(f"sparse.addmm: input of shape {tuple(added.shape)} does not broadcast to the shape "
                         f"{tuple(product.shape)} of S X")
    if beta == 0:
        return alpha * product
    return beta * added + alpha * product


def sampled_addmm(s: SparseTensor, a, b, beta: float = 1.0, alpha: float = 1.0) -> SparseTensor:
    """beta * S + alpha * (A B) read only at the stored positions of S (``torch.sparse.sampled_addmm``):
    entry e at (i, j) becomes beta v[e] + alpha A[i] . B[:, j], for A (m, k) and B (k, n). The
    result has the layout and positions of S; gradients go to v, A and B without forming A B.
    With beta == 0 the values of S are ignored (their NaN and inf do not propagate), the rule
    torch documents for addmm; only their positions are read."""
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


def _check_alike(s: SparseTensor, t: SparseTensor, op: str) -> None:
    if s.shape != t.shape or s.sparse_dim != t.sparse_dim:
        raise ShapeError(f"{op}: sparse tensors of shapes {s.shape} and {t.shape} with {s.sparse_dim} and "
                         f"{t.sparse_dim} sparse axes; expected the same shape and sparse axes")
    if s.dtype != t.dtype:
        raise TypeError(f"{op}: sparse tensors of dtypes {s.dtype} and {t.dtype}; expected the same dtype")


def _layout_of(out: SparseTensor, s: SparseTensor, t: SparseTensor) -> SparseTensor:
    """``out`` (coalesced COO) in CSR when both operands are CSR."""
    return out.to_sparse_csr() if s.layout == t.layout == "csr" else out


def add(s: SparseTensor, other, alpha: float = 1.0):
    """S + alpha other (``torch.add``). A sparse other of the same shape gives a sparse tensor
    holding the entries of both, coalesced (CSR when both are); a dense other gives the dense sum."""
    op = "sparse.add"
    s = _sparse(s, op)
    if isinstance(other, Number):
        raise TypeError(f"{op}: adding a number to every position of a sparse tensor of shape {s.shape} is not "
                        "supported; use to_dense() first")
    if not isinstance(other, SparseTensor):
        other = _dense(other, op, s.dtype)
        return s.to_dense() + (other if alpha == 1 else alpha * other)
    _check_alike(s, other, op)
    values = F.concat([s.values, other.values if alpha == 1 else alpha * other.values], axis=0)
    indices = backend.xp.concatenate([s.indices, other.indices], axis=1)
    return _layout_of(SparseTensor(indices, values, s.shape, "coo").coalesce(), s, other)


def div(s: SparseTensor, divisor) -> SparseTensor:
    """S / divisor for a number or a 0-d tensor (``torch.div``): the values divided, the positions kept."""
    s = _sparse(s, "sparse.div")
    if not isinstance(divisor, Number):
        divisor = _dense(divisor, "sparse.div", s.dtype)
        if divisor.ndim:
            raise ShapeError(f"sparse.div: the divisor must be a number or a 0-d tensor, got shape "
                             f"{tuple(divisor.shape)} (sparse tensor of shape {s.shape})")
    return s.with_values(s.values / divisor)


def mul(s: SparseTensor, other) -> SparseTensor:
    """S * other. For a number or a dense tensor broadcastable to S's shape: the product read only
    at the stored positions (zero elsewhere), so the result keeps S's positions and layout. For a
    sparse tensor of the same shape: the product at the positions both store (the operands
    coalesced first), coalesced (CSR when both are)."""
    s = _sparse(s, "sparse.mul")
    if isinstance(other, Number):
        return s.with_values(s.values * other)
    if isinstance(other, SparseTensor):
        return _mul_sparse(s, other)
    other = _dense(other, "sparse.mul", s.dtype)
    try:
        full = F.broadcast_to(other, s.shape)
    except (ValueError, ShapeError):
        raise ShapeError(f"sparse.mul: a dense operand of shape {tuple(other.shape)} does not broadcast to the "
                         f"sparse tensor's shape {s.shape}") from None
    rows = F.reshape(full, (math.prod(s.sparse_shape()),) + s.shape[s.sparse_dim:])
    return s.with_values(s.values * F.take_rows(rows, s.flat_index()))


def _mul_sparse(s: SparseTensor, t: SparseTensor) -> SparseTensor:
    _check_alike(s, t, "sparse.mul")
    a, b = s.coalesce(), t.coalesce()
    _, in_a, in_b = backend.xp.intersect1d(a.flat_index(), b.flat_index(), assume_unique=True, return_indices=True)
    values = F.take_rows(a.values, in_a) * F.take_rows(b.values, in_b)
    return _layout_of(SparseTensor(a.indices[:, in_a], values, s.shape, "coo", coalesced=True), s, t)


def _axes(dim, ndim: int, op: str) -> list[int]:
    dims = [dim] if isinstance(dim, Integral) else list(dim) if isinstance(dim, (tuple, list)) else None
    if dims is None or not all(isinstance(d, Integral) and not isinstance(d, bool) for d in dims):
        raise TypeError(f"{op}: dim must be an int or a tuple/list of ints, got {dim!r}")
    axes = sorted({int(d) + ndim if d < 0 else int(d) for d in dims})
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
