"""Matrix structure ops, batched over leading axes: triangles, diagonals, trace.

Each is linear in its input (it only selects or places values), so its backward applies
the adjoint selection to the upstream gradient: tril's is tril, diagonal's writes the
gradient onto a zero matrix's diagonal, diag_embed's reads the diagonal back.
"""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError
from lamina.functional._linalg_util import check_matrix
from lamina.functional.reduce import sum as sum_
from lamina.functional.shape import swapaxes


def _diagonal_positions(length: int, offset: int):
    """Row and column indices of the ``offset`` diagonal (above the main one when > 0)."""
    xp = backend.xp
    steps = xp.arange(length)
    return steps + max(-offset, 0), steps + max(offset, 0)


class Triangle(Function):
    """The lower (``op="tril"``) or upper (``op="triu"``) triangle bounded by diagonal ``k``."""

    def forward(self, a):
        check_matrix(self.op, a.shape, square=False)
        pick = backend.xp.tril if self.op == "tril" else backend.xp.triu
        return pick(a, self.k)

    def backward(self, dy):
        pick = backend.xp.tril if self.op == "tril" else backend.xp.triu
        return (pick(dy, self.k),)

    backward_graph = Function.linear_backward_graph


class Diagonal(Function):
    """The ``offset`` diagonal of the matrices in axes (axis1, axis2), as a new last axis."""

    def forward(self, a):
        if a.ndim < 2:
            raise ShapeError(f"diagonal: expected at least 2 dimensions, got shape {a.shape}")
        self.in_shape, self.dtype = a.shape, a.dtype
        try:
            return backend.xp.diagonal(a, self.offset, self.axis1, self.axis2).copy()
        except ValueError as exc:
            raise ShapeError(f"diagonal: axes ({self.axis1}, {self.axis2}) of shape {a.shape}: {exc}") from None

    def backward(self, dy):
        xp = backend.xp
        da = xp.zeros(self.in_shape, dtype=dy.dtype)
        # np.diagonal puts the diagonal last and keeps the other axes in order: so does this view
        view = xp.moveaxis(da, (self.axis1, self.axis2), (-2, -1))
        rows, cols = _diagonal_positions(dy.shape[-1], self.offset)
        view[..., rows, cols] = dy
        return (da,)

    backward_graph = Function.linear_backward_graph


class DiagEmbed(Function):
    """Matrices (..., n + |offset|, n + |offset|) with v (..., n) on the ``offset`` diagonal."""

    def forward(self, v):
        if v.ndim < 1:
            raise ShapeError(f"diag_embed: expected at least 1 dimension, got shape {v.shape}")
        size = v.shape[-1] + abs(self.offset)
        out = backend.xp.zeros(v.shape[:-1] + (size, size), dtype=v.dtype)
        rows, cols = _diagonal_positions(v.shape[-1], self.offset)
        out[..., rows, cols] = v
        return out

    def backward(self, dy):
        size = dy.shape[-1] - abs(self.offset)
        rows, cols = _diagonal_positions(size, self.offset)
        return (dy[..., rows, cols],)

    backward_graph = Function.linear_backward_graph


def tril(a, k: int = 0) -> Tensor:
    """The lower triangle of the last two axes: entries (i, j) with j - i <= k, zeros elsewhere."""
    return Triangle.apply(a, k=int(k), op="tril")


def triu(a, k: int = 0) -> Tensor:
    """The upper triangle of the last two axes: entries (i, j) with j - i >= k, zeros elsewhere."""
    return Triangle.apply(a, k=int(k), op="triu")


def diagonal(a, offset: int = 0, axis1: int = -2, axis2: int = -1, *, dim1: int | None = None,
             dim2: int | None = None) -> Tensor:
    """The diagonal a[..., i, i + offset] of the matrices in axes (axis1, axis2), as the last axis.
    The default axes are the last two, as ``torch.linalg.diagonal``'s (``torch.diagonal`` and
    ``numpy.diagonal`` take the first two); ``dim1``/``dim2`` are torch's names for them."""
    axis1 = axis1 if dim1 is None else dim1
    axis2 = axis2 if dim2 is None else dim2
    return Diagonal.apply(a, offset=int(offset), axis1=axis1, axis2=axis2)


def diag_embed(v, offset: int = 0) -> Tensor:
    """Square matrices in the last two axes with ``v``'s last axis on their ``offset`` diagonal."""
    return DiagEmbed.apply(v, offset=int(offset))


def trace(a) -> Tensor:
    """tr(A) = sum_i A[..., i, i], batched over leading axes (torch.diagonal(A).sum(-1))."""
    check_matrix("trace", a.shape, square=False)
    return sum_(diagonal(a), axis=-1)


def matrix_transpose(a) -> Tensor:
    """A^T: the last two axes swapped (torch's ``A.mT``)."""
    check_matrix("matrix_transpose", a.shape, square=False)
    return swapaxes(a, -1, -2)
