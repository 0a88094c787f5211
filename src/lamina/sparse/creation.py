"""Making sparse tensors: from coordinates and values (COO), from CSR arrays, from a dense
tensor (its non-zero entries, with the gradient going back to it) and from scipy.sparse."""

from __future__ import annotations

import math

import numpy

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.autograd.function import cast
from lamina.errors import ShapeError
from lamina.sparse.tensor import SparseTensor

__all__ = ["from_dense", "from_scipy", "sparse_coo_tensor", "sparse_csr_tensor"]


def _integer_array(a, op: str, what: str):
    a = backend.xp.asarray(a.data if isinstance(a, Tensor) else a)
    if a.dtype.kind not in "iu" and a.size:
        raise TypeError(f"{op}: {what} must hold integers, got dtype {a.dtype}")
    return a.astype(numpy.int64, copy=False)


def _values_tensor(values, dtype) -> Tensor:
    if isinstance(values, Tensor):
        return values if dtype is None or values.dtype == dtype else cast(values, dtype)
    return Tensor(values, dtype=dtype)


def _check_shape(shape, sparse_dim: int, values: Tensor, op: str, inferred: tuple[int, ...]) -> tuple[int, ...]:
    """The tensor's shape: ``shape`` checked against the entries, or ``inferred`` when None."""
    dense_shape = tuple(values.shape[1:])
    if shape is None:
        return inferred + dense_shape
    shape = tuple(int(d) for d in shape)
    if len(shape) != sparse_dim + len(dense_shape) or shape[sparse_dim:] != dense_shape:
        raise ShapeError(f"{op}: shape {shape} does not fit {sparse_dim} sparse axes and values of shape "
                         f"{tuple(values.shape)}; expected shape[{sparse_dim}:] == {dense_shape}")
    if any(d < 0 for d in shape):
        raise ShapeError(f"{op}: shape {shape} has a negative size")
    too_small = [axis for axis in range(sparse_dim) if inferred[axis] > shape[axis]]
    if too_small:
        axis = too_small[0]
        raise ShapeError(f"{op}: an index {inferred[axis] - 1} on axis {axis} is out of range for shape {shape}")
    return shape


def sparse_coo_tensor(indices, values, shape=None, dtype=None) -> SparseTensor:
    """A COO sparse tensor with entries ``values`` (nnz, *dense_shape) at the coordinates
    ``indices`` (sparse_dim, nnz); ``shape`` = sparse_shape + dense_shape (None: the smallest
    sparse shape holding every index). Repeated coordinates add up. A ``values`` tensor that
    requires grad receives the gradients of everything computed from the sparse tensor."""
    indices = _integer_array(indices, "sparse_coo_tensor", "indices")
    values = _values_tensor(values, dtype)
    if indices.ndim != 2 or indices.shape[0] == 0:
        raise ShapeError(f"sparse_coo_tensor: indices of shape {tuple(indices.shape)} must be 2-D "
                         "(sparse_dim, nnz) with sparse_dim >= 1")
    if values.ndim == 0 or values.shape[0] != indices.shape[1]:
        raise ShapeError(f"sparse_coo_tensor: values of shape {tuple(values.shape)} must have one row per "
                         f"entry of indices of shape {tuple(indices.shape)} (nnz = {indices.shape[1]})")
    if indices.size and int(indices.min()) < 0:
        raise ValueError(f"sparse_coo_tensor: indices must be >= 0, found {int(indices.min())}")
    inferred = tuple(int(m) + 1 for m in indices.max(axis=1)) if indices.shape[1] else (0,) * indices.shape[0]
    shape = _check_shape(shape, indices.shape[0], values, "sparse_coo_tensor", inferred)
    return SparseTensor(indices, values, shape, "coo", coalesced=indices.shape[1] <= 1)


def sparse_csr_tensor(crow_indices, col_indices, values, shape=None, dtype=None) -> SparseTensor:
    """A CSR sparse matrix: row i holds the entries crow_indices[i] .. crow_indices[i + 1] - 1,
    at columns ``col_indices``, with ``values`` (nnz, *dense_shape)."""
    op = "sparse_csr_tensor"
    crow = _integer_array(crow_indices, op, "crow_indices")
    cols = _integer_array(col_indices, op, "col_indices")
    values = _values_tensor(values, dtype)
    if crow.ndim != 1 or cols.ndim != 1 or crow.shape[0] == 0:
        raise ShapeError(f"{op}: crow_indices of shape {tuple(crow.shape)} and col_indices of shape "
                         f"{tuple(cols.shape)} must be 1-D (crow_indices with m + 1 entries)")
    nnz = cols.shape[0]
    if values.ndim == 0 or values.shape[0] != nnz:
        raise ShapeError(f"{op}: values of shape {tuple(values.shape)} must have one row per column index "
                         f"(col_indices of shape {tuple(cols.shape)})")
    if int(crow[0]) != 0 or int(crow[-1]) != nnz or bool(backend.xp.any(crow[1:] < crow[:-1])):
        raise ValueError(f"{op}: crow_indices must start at 0, never decrease and end at nnz = {nnz}; "
                         f"got first {int(crow[0])}, last {int(crow[-1])}")
    if nnz and int(cols.min()) < 0:
        raise ValueError(f"{op}: col_indices must be >= 0, found {int(cols.min())}")
    rows = backend.xp.repeat(backend.xp.arange(crow.shape[0] - 1, dtype=numpy.int64), backend.xp.diff(crow))
    inferred = (crow.shape[0] - 1, int(cols.max()) + 1 if nnz else 0)
    shape = _check_shape(shape, 2, values, op, inferred)
    if shape[0] != crow.shape[0] - 1:
        raise ShapeError(f"{op}: crow_indices of shape {tuple(crow.shape)} describe {crow.shape[0] - 1} rows, "
                         f"but shape is {shape}")
    same_row = rows[1:] == rows[:-1]
    coalesced = not bool(backend.xp.any(same_row & (cols[1:] <= cols[:-1])))
    return SparseTensor(backend.xp.stack([rows, cols]), values, shape, "csr", crow, coalesced)


def from_dense(x, sparse_dim: int | None = None) -> SparseTensor:
    """The non-zero entries of ``x`` as a coalesced COO tensor (``Tensor.to_sparse``): the first
    ``sparse_dim`` axes (all by default) become sparse, a position stored when any of its
    values is non-zero. The values are gathered on the graph: gradients go back to x."""
    x = x if isinstance(x, Tensor) else Tensor(x)
    sparse_dim = x.ndim if sparse_dim is None else int(sparse_dim)
    if not 1 <= sparse_dim <= x.ndim:
        raise ShapeError(f"from_dense: sparse_dim {sparse_dim} must be in [1, {x.ndim}] for x of shape "
                         f"{tuple(x.shape)}")
    sparse_shape = tuple(x.shape[:sparse_dim])
    nonzero = x.data != 0
    if sparse_dim < x.ndim:
        nonzero = nonzero.reshape(sparse_shape + (math.prod(x.shape[sparse_dim:]),)).any(axis=-1)
    indices = backend.xp.stack(backend.xp.nonzero(nonzero)).astype(numpy.int64).reshape(sparse_dim, -1)
    flat = backend.xp.flatnonzero(nonzero)
    rows = F.reshape(x, (math.prod(sparse_shape),) + tuple(x.shape[sparse_dim:]))
    return SparseTensor(indices, F.take_rows(rows, flat), tuple(x.shape), "coo", coalesced=True)


def from_dense_csr(x) -> SparseTensor:
    """The non-zero entries of the matrix ``x`` in CSR layout (``Tensor.to_sparse_csr``)."""
    return from_dense(x, 2).to_sparse_csr()


def from_scipy(matrix, dtype=None) -> SparseTensor:
    """A scipy.sparse matrix as a SparseTensor: CSR stays CSR, every other format becomes COO."""
    from scipy import sparse

    if not sparse.issparse(matrix):
        raise TypeError(f"from_scipy: expected a scipy.sparse matrix or array, got {type(matrix).__name__}")
    if matrix.format == "csr":
        return sparse_csr_tensor(matrix.indptr, matrix.indices, matrix.data, matrix.shape, dtype)
    coo = matrix.tocoo()
    return sparse_coo_tensor(numpy.stack([coo.row, coo.col]), coo.data, matrix.shape, dtype)
