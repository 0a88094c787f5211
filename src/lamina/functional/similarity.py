"""How alike two vectors are: cosine similarity, normalisation to unit norm, the distance
between paired vectors, and the matrix of p-norm (by default Euclidean) distances between two
sets of rows (the course notes' image retrieval: the stored signature vectors nearest a query's).

Each follows the PyTorch function of the same name, eps included, so values and
gradients agree with it; :func:`cdist` with p = 2 is one node, the others are built from
primitives.
"""

from __future__ import annotations

import numbers

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError
from lamina.functional._util import normalize_axes, sum_to, unbroadcast
from lamina.functional.elementwise import clip, where
from lamina.functional.reduce import sum as reduce_sum
from lamina.functional.reduce_more import norm, vector_order
from lamina.functional.shape import broadcast_to, expand_dims

#: Pairs whose squared distance is below this fraction of ||a_i||^2 + ||b_j||^2 are computed from
#: their difference: there the matrix-product form has lost more than two digits.
CDIST_EXACT_BELOW = 1e-2
""":func:`cdist` forms the differences a_i - b_j for as many rows of a at a time as keep
them under about this many values."""


def _as_tensors(*xs) -> tuple[Tensor, ...]:
    """Tensors for ``xs``; plain values take the dtype of the first tensor among them, as
    constant operands of an op do (the default dtype where there is none)."""
    dtype = next((x.dtype for x in xs if isinstance(x, Tensor)), None)
    return tuple(x if isinstance(x, Tensor) else Tensor(x, dtype=dtype) for x in xs)


def _broadcast_shape(op: str, *shapes) -> tuple[int, ...]:
    """The shape ``shapes`` broadcast to (NumPy's rule), or a ShapeError naming ``op``."""
    ndim = max(len(s) for s in shapes)
    padded = [(1,) * (ndim - len(s)) + tuple(s) for s in shapes]
    out = []
    for lengths in zip(*padded):
        longest = max(lengths)
        if any(n not in (1, longest) for n in lengths):
            listed = " and ".join(str(tuple(s)) for s in shapes)
            raise ShapeError(f"{op}: operands of shapes {listed} cannot be broadcast together")
        out.append(longest)
    return tuple(out)


def _check_eps(eps, op: str) -> None:
    if not isinstance(eps, numbers.Real) or isinstance(eps, bool) or not eps >= 0:
        raise ValueError(f"{op}: eps must be a number >= 0, got {eps!r}")


def _raised_value(n: Tensor, eps: float) -> Tensor:
    """``n`` with each value raised to at least ``eps``, and the gradient of ``n`` itself:
    PyTorch's cosine similarity clamps the norms in place outside the graph, so its
    gradient flows through the norm as if no clamp were there."""
    xp = backend.xp
    shift = xp.maximum(n.data, eps) - n.data
    return n + Tensor(shift, dtype=shift.dtype)


def cosine_similarity(a, b, axis: int = -1, eps: float = 1e-8) -> Tensor:
    """cos(a, b) = sum_i (a_i / max(||a||_2, eps)) (b_i / max(||b||_2, eps)) along ``axis``.

    As PyTorch 2.x (``torch.nn.functional.cosine_similarity``): ``a`` and ``b`` are
    broadcast together first (``axis`` counts in that shape); each norm is raised to at
    least eps on its own, not their product as in PyTorch 1.x; and the gradient passes
    through each norm as if it had not been raised. The result has ``axis`` removed.
    """
    _check_eps(eps, "cosine_similarity")
    a, b = _as_tensors(a, b)
    shape = _broadcast_shape("cosine_similarity", a.shape, b.shape)
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise ValueError(f"cosine_similarity: axis must be one int, got {axis!r}")
    axis = normalize_axes(axis, len(shape), "cosine_similarity")[0]
    if a.shape != shape:
        a = broadcast_to(a, shape)
    if b.shape != shape:
        b = broadcast_to(b, shape)
    unit_a = a / _raised_value(norm(a, axis=axis, keepdims=True), eps)
    unit_b = b / _raised_value(norm(b, axis=axis, keepdims=True), eps)
    return reduce_sum(unit_a * unit_b, axis=axis)


def normalize(x, p=2, axis=-1, eps: float = 1e-12) -> Tensor:
    """x / max(||x||_p, eps) along ``axis`` (an int or a tuple): vectors of unit p-norm, as
    ``torch.nn.functional.normalize``; ``p`` is 1, 2 or inf. The clamp is part of the
    graph: where ||x||_p < eps the divisor is the constant eps."""
    _check_eps(eps, "normalize")
    p = vector_order(p, "normalize", "p")
    (x,) = _as_tensors(x)
    return x / clip(norm(x, ord=p, axis=axis, keepdims=True), eps)


def pairwise_distance(a, b, p=2, eps: float = 1e-6) -> Tensor:
    """||a - b + eps||_p along the last axis, for the vectors of ``a`` and ``b`` paired up
    (broadcast together), as ``torch.nn.functional.pairwise_distance``: the eps added to
    every difference keeps the gradient finite where a = b. ``p`` is 1, 2 or inf."""
    _check_eps(eps, "pairwise_distance")
    p = vector_order(p, "pairwise_distance", "p")
    a, b = _as_tensors(a, b)
    shape = _broadcast_shape("pairwise_distance", a.shape, b.shape)
    if not shape:
        raise ShapeError("pairwise_distance: both operands are scalars; expected vectors along the last axis")
    return norm(a - b + eps, ord=p, axis=-1)


class Cdist(Function):
    """D_ij = ||a_i - b_j||_2 between the rows of a (..., n, d) and b (..., m, d).

    The squares come from one matrix product, D_ij^2 = ||a_i||^2 + ||b_j||^2 - 2 a_i . b_j.
    Where D_ij^2 is small against ||a_i||^2 + ||b_j||^2 (below ``CDIST_EXACT_BELOW`` of it)
    that difference has cancelled most of its digits, so those pairs (near-duplicates, a row
    with itself) are computed again from a_i - b_j, exactly.

    dD_ij/da_i = (a_i - b_j) / D_ij, so with W_ij = dJ/dD_ij / D_ij (0 where D_ij = 0, as
    PyTorch): dJ/da_i = a_i sum_j W_ij - sum_j W_ij b_j, that is a * (W 1) - W b, and
    dJ/db_j = b_j sum_i W_ij - sum_i W_ij a_i.
    """

    def forward(self, a, b):
        xp = backend.xp
        if a.ndim < 2 or b.ndim < 2 or a.shape[-1] != b.shape[-1]:
            raise ShapeError(f"cdist: operands of shapes {a.shape} and {b.shape} do not fit; expected rows "
                             f"(..., n, d) and (..., m, d) of the same length d")
        try:
            batch = _broadcast_shape("cdist", a.shape[:-2], b.shape[:-2])
        except ShapeError:
            raise ShapeError(f"cdist: the leading (batch) axes of shapes {a.shape} and {b.shape} cannot be "
                             f"broadcast together") from None
        dtype = xp.result_type(a, b)
        a, b = a.astype(dtype, copy=False), b.astype(dtype, copy=False)
        norms = (a * a).sum(axis=-1)[..., :, None] + (b * b).sum(axis=-1)[..., None, :]
        squares = norms - 2 * xp.matmul(a, b.swapaxes(-1, -2))
        cancelled = squares < CDIST_EXACT_BELOW * norms   # squares is a fresh array of shape batch + (n, m)
        if cancelled.any():
            n, m, d = a.shape[-2], b.shape[-2], a.shape[-1]
            rows_a = xp.broadcast_to(a, batch + (n, d)).reshape(-1, n, d)
            rows_b = xp.broadcast_to(b, batch + (m, d)).reshape(-1, m, d)
            k, i, j = xp.nonzero(cancelled.reshape(-1, n, m))
            diff = rows_a[k, i] - rows_b[k, j]
            squares.reshape(-1, n, m)[k, i, j] = (diff * diff).sum(axis=-1)
            self.close = (k, i, j, diff)
        else:
            self.close = None
        dist = xp.sqrt(xp.maximum(squares, 0))
        self.a, self.b, self.dist = a, b, dist
        return dist

    def backward(self, dy):
        xp = backend.xp
        a, b, dist = self.a, self.b, self.dist
        apart = dist > 0
        w = xp.where(apart, dy / xp.where(apart, dist, 1), 0)
        close = None
        if self.close is not None:  # a_i W_ij - W_ij b_j would cancel: use (a_i - b_j) W_ij itself
            k, i, j, diff = self.close
            n, m = dist.shape[-2:]
            w_close = w.reshape(-1, n, m)[k, i, j]
            w.reshape(-1, n, m)[k, i, j] = 0
            close = (k, i, j, diff * w_close[:, None])
        da = db = None
        if self.needs_grad[0]:
            da = a * w.sum(axis=-1)[..., None] - xp.matmul(w, b)
            if close is not None:
                xp.add.at(da.reshape(-1, *da.shape[-2:]), (close[0], close[1]), close[3])
            da = unbroadcast(da, a.shape)
        if self.needs_grad[1]:
            db = b * w.sum(axis=-2)[..., None] - xp.matmul(w.swapaxes(-1, -2), a)
            if close is not None:
                xp.add.at(db.reshape(-1, *db.shape[-2:]), (close[0], close[2]), -close[3])
            db = unbroadcast(db, b.shape)
        return da, db

    def backward_graph(self, dy):
        """The same VJP by tensor ops, D this node's output as a tensor: dJ/da = a * (W 1) - W b,
        dJ/db = b * (W^T 1) - W^T a. All pairs take this matrix-product form (near-duplicate
        pairs lose a few digits of their gradient here, unlike in :meth:`backward`)."""
        a, b = self.inputs
        apart = self.dist > 0
        dist = self.recorded_output(self.dist)
        w = where(apart, dy / where(apart, dist, 1.0), 0.0)
        da = sum_to(a * w.sum(axis=-1, keepdims=True) - w @ b, a.shape) if self.needs_grad[0] else None
        w_t = w.swapaxes(-1, -2)
        db = sum_to(b * w_t.sum(axis=-1, keepdims=True) - w_t @ a, b.shape) if self.needs_grad[1] else None
        return da, db


def _count_differences(diff: Tensor) -> Tensor:
    """sum_k min(ceil |d_k|, 1) over the last axis (NaN stays NaN), kept on the graph with gradient 0."""
    xp = backend.xp
    count = xp.minimum(xp.ceil(xp.abs(diff.data)), 1).sum(axis=-1)
    return Tensor._wrap(count.astype(diff.dtype, copy=False)) + reduce_sum(diff[..., :0], axis=-1)


def _max_difference(diff: Tensor) -> Tensor:
    """max_k |d_k| over the last axis (0 for no coordinates), every k attaining it getting the
    whole gradient: sum of the tied |d_k| less (ties - 1) times the constant maximum."""
    size = diff.abs()
    if size.shape[-1] == 0:
        return reduce_sum(size, axis=-1)
    largest = size.data.max(axis=-1)
    ties = size.data == largest[..., None]
    surplus = (ties.sum(axis=-1) - 1) * largest
    return reduce_sum(where(ties, size, 0.0), axis=-1) - Tensor._wrap(surplus.astype(diff.dtype, copy=False))


def _off_zero(t: Tensor) -> Tensor:
    """t with its zeros replaced by 1: a power of it has a finite slope where t is 0."""
    return where(t.data == 0, 1.0, t)


def _root(total: Tensor, p: float) -> Tensor:
    """total ** (1 / p), with gradient 0 where total is 0."""
    if p <= 1:
        return total ** (1.0 / p)
    return where(total.data == 0, 0.0, _off_zero(total) ** (1.0 / p))


def difference_norm(diff: Tensor, p: float) -> Tensor:
    """||d||_p over the last axis of differences d, with the values and gradients of torch's
    ``cdist`` / ``pdist``: p = 0 counts the nonzero d_k (gradient 0), p = inf is max_k |d_k|
    (every k attaining it gets the whole gradient), else (sum_k |d_k|^p)^(1/p), whose gradient
    is taken as 0 where d_k = 0 or the norm is 0 and the power's slope is infinite."""
    if p == 0:
        return _count_differences(diff)
    if p == float("inf"):
        return _max_difference(diff)
    if p == 2:
        return _root(reduce_sum(diff * diff, axis=-1), 2.0)
    size = diff.abs()
    if p < 1:
        size = where(size.data == 0, 0.0, _off_zero(size) ** float(p))
    else:
        size = size ** float(p)
    return _root(reduce_sum(size, axis=-1), float(p))


def cdist(a, b, p: float = 2.0) -> Tensor:
    """The p-norm distances ||a_i - b_j||_p between every row of ``a`` (..., n, d) and every
    row of ``b`` (..., m, d), as ``torch.cdist``: shape (..., n, m), the leading axes
    broadcast. p = 2 (Euclidean, one node, see :class:`Cdist`) is the default; any p >= 0
    is accepted: p = 0 counts the coordinates that differ, p = inf takes the largest
    |a_ik - b_jk|, other p form the differences (..., n, m, d) (see :func:`difference_norm`).
    The gradient at a zero distance is 0, as in PyTorch."""
    if not isinstance(p, numbers.Real) or isinstance(p, bool) or not p >= 0:
        raise ValueError(f"cdist: p must be a number >= 0 (or inf), got {p!r}")
    if p == 2:
        return Cdist.apply(a, b)
    a, b = _as_tensors(a, b)
    if a.ndim < 2 or b.ndim < 2 or a.shape[-1] != b.shape[-1]:
        raise ShapeError(f"cdist: operands of shapes {a.shape} and {b.shape} do not fit; expected rows "
                         f"(..., n, d) and (..., m, d) of the same length d")
    try:
        _broadcast_shape("cdist", a.shape[:-2], b.shape[:-2])
    except ShapeError:
        raise ShapeError(f"cdist: the leading (batch) axes of shapes {a.shape} and {b.shape} cannot be "
                         f"broadcast together") from None
    diff = expand_dims(a, -2) - expand_dims(b, -3)
    return difference_norm(diff, float(p))
