"""``SparseTensor``: a tensor that stores only some of its entries, in COO or CSR layout.

COO (any number of sparse axes): ``indices`` (sparse_dim, nnz) integer coordinates and
``values`` (nnz, *dense_shape), for a tensor of shape sparse_shape + dense_shape. Entry e
holds values[e] at position indices[:, e]; every other position is 0; repeated positions add
up (``coalesce`` sums them and sorts the positions row-major).

CSR (two sparse axes): ``crow_indices`` (m + 1,), ``col_indices`` (nnz,) and ``values``: the
entries of row i are e = crow[i] .. crow[i + 1] - 1, at columns col[e].

``values`` is a :class:`~lamina.autograd.Tensor`: it can require grad, and every sparse op
sends gradients back to it. The positions are constants.
"""

from __future__ import annotations

import math

import numpy

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.sparse.pattern import Pattern

LAYOUTS = ("coo", "csr")


class SparseTensor:
    """A sparse tensor: positions (constant integer arrays) and ``values`` (a Tensor)."""

    # Tensor's operators return NotImplemented for this operand, so that ``dense * S``,
    # ``dense @ S``, ``dense + S`` and ``dense - S`` reach the reflected operators below.
    handles_tensor_operators = True

    def __init__(self, indices, values: Tensor, shape: tuple[int, ...], layout: str = "coo",
                 crow_indices=None, coalesced: bool = False):
        # Checked by the constructors (sparse_coo_tensor, sparse_csr_tensor); kept as given here.
        self._indices = indices
        self.values = values
        self.shape = tuple(int(d) for d in shape)
        self.layout = layout
        self._crow = crow_indices
        self._coalesced = bool(coalesced)
        self._pattern = None
        self._flat = None

    # -- description ---------------------------------------------------------------------
    @property
    def indices(self):
        """The (sparse_dim, nnz) coordinates of the stored entries (for CSR: rows and columns)."""
        return self._indices

    @property
    def crow_indices(self):
        """CSR row pointers (m + 1,): row i holds the entries crow[i] .. crow[i + 1] - 1."""
        self._require_layout("csr", "crow_indices")
        return self._crow

    @property
    def col_indices(self):
        """CSR column of each stored entry (nnz,)."""
        self._require_layout("csr", "col_indices")
        return self._indices[1]

    @property
    def nnz(self) -> int:
        """The number of stored entries (repeated positions counted separately)."""
        return int(self._indices.shape[1])

    @property
    def sparse_dim(self) -> int:
        return int(self._indices.shape[0])

    @property
    def dense_dim(self) -> int:
        return self.values.ndim - 1

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self):
        return self.values.dtype

    @property
    def requires_grad(self) -> bool:
        return self.values.requires_grad

    def is_coalesced(self) -> bool:
        """Whether the positions are unique and sorted row-major."""
        return self._coalesced

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        return (f"SparseTensor(shape={self.shape}, nnz={self.nnz}, layout={self.layout!r}, "
                f"dtype={self.dtype}{grad})")

    def _require_layout(self, layout: str, what: str) -> None:
        if self.layout != layout:
            raise ValueError(f"SparseTensor.{what}: defined for the {layout!r} layout; this tensor is "
                             f"{self.layout!r} (convert with to_sparse_{layout}())")

    def _require_matrix(self, op: str, dense_values: bool = False) -> None:
        """Raise unless this is a 2-D sparse matrix (with scalar values unless ``dense_values``)."""
        if self.sparse_dim != 2 or (self.dense_dim and not dense_values):
            raise ShapeError(f"{op}: expected a sparse matrix (2 sparse axes, one value per entry), got a "
                             f"sparse tensor of shape {self.shape} with {self.sparse_dim} sparse and "
                             f"{self.dense_dim} dense axes")

    # -- positions -------------------------------------------------------------------------
    def sparse_shape(self) -> tuple[int, ...]:
        return self.shape[:self.sparse_dim]

    def flat_index(self):
        """Each entry's row-major position among the sparse axes (nnz,)."""
        if self._flat is None:
            self._flat = backend.xp.ravel_multi_index(tuple(self._indices), self.sparse_shape())
        return self._flat

    def pattern(self) -> Pattern:
        """The stored positions of this sparse matrix, for the products (made once)."""
        if self._pattern is None:
            self._require_matrix("SparseTensor.pattern")
            self._pattern = Pattern(self._indices[0], self._indices[1], self.shape)
        return self._pattern

    def with_values(self, values: Tensor) -> SparseTensor:
        """The same positions and layout holding other ``values`` (nnz, ...)."""
        shape = self.sparse_shape() + tuple(values.shape[1:])
        out = SparseTensor(self._indices, values, shape, self.layout, self._crow, self._coalesced)
        out._pattern, out._flat = self._pattern, self._flat
        return out

    # -- conversions -----------------------------------------------------------------------
    def to_dense(self) -> Tensor:
        """The dense tensor: every entry's value added at its position, 0 elsewhere. The gradient
        to the values is dJ/dv[e] = dJ/dy[position of e]."""
        cells = math.prod(self.sparse_shape())
        summed = F.segment_sum(self.values, self.flat_index(), cells)
        return F.reshape(summed, self.shape)

    def coalesce(self) -> SparseTensor:
        """Unique positions sorted row-major, the values of repeated positions added (the gradient
        of each original entry is that of the entry it went into). Keeps the layout."""
        if self._coalesced:
            return self
        xp = backend.xp
        unique, inverse = xp.unique(self.flat_index(), return_inverse=True)
        values = F.segment_sum(self.values, inverse.reshape(-1), int(unique.shape[0]))
        indices = xp.stack(xp.unravel_index(unique, self.sparse_shape())).astype(numpy.int64)
        out = SparseTensor(indices.reshape(self.sparse_dim, -1), values, self.shape, "coo", coalesced=True)
        return out.to_sparse_csr() if self.layout == "csr" else out

    def to_sparse_coo(self) -> SparseTensor:
        """The COO form (the same entries in the same order)."""
        if self.layout == "coo":
            return self
        out = SparseTensor(self._indices, self.values, self.shape, "coo", coalesced=self._coalesced)
        out._pattern, out._flat = self._pattern, self._flat
        return out

    def to_sparse_csr(self) -> SparseTensor:
        """The CSR form of a sparse matrix (coalesced first, as torch's ``to_sparse_csr``)."""
        if self.layout == "csr":
            return self
        self._require_matrix("to_sparse_csr", dense_values=True)
        coalesced = self.coalesce()
        out = _csr_from_sorted(coalesced, True)
        out._pattern, out._flat = coalesced._pattern, coalesced._flat
        return out

    def to_scipy(self):
        """The matrix as a scipy.sparse matrix (csr_matrix for CSR, else coo_matrix), values detached."""
        from scipy import sparse

        self._require_matrix("to_scipy")
        data = backend.to_numpy(self.values.data)
        if self.layout == "csr":
            return sparse.csr_matrix((data, backend.to_numpy(self._indices[1]), backend.to_numpy(self._crow)),
                                     shape=self.shape)
        rows, cols = backend.to_numpy(self._indices)
        return sparse.coo_matrix((data, (rows, cols)), shape=self.shape)

    def detach(self) -> SparseTensor:
        return self.with_values(self.values.detach())

    def t(self) -> SparseTensor:
        """The transpose of a sparse matrix. COO swaps the coordinates (the values are shared);
        CSR reorders the entries by column, the values taken along on the graph."""
        self._require_matrix("SparseTensor.t", dense_values=True)
        rows, cols = self._indices
        if self.layout == "coo":
            out = SparseTensor(backend.xp.stack([cols, rows]), self.values, (self.shape[1], self.shape[0]) +
                               self.shape[2:], "coo", coalesced=self.nnz <= 1)
            if self._pattern is not None:
                out._pattern = self._pattern.transposed()
            return out
        order = backend.xp.lexsort((rows, cols))
        values = F.take_rows(self.values, order)
        coo = SparseTensor(backend.xp.stack([cols[order], rows[order]]), values,
                           (self.shape[1], self.shape[0]) + self.shape[2:], "coo", coalesced=False)
        return _csr_from_sorted(coo, self._coalesced)

    @property
    def T(self) -> SparseTensor:
        return self.t()

    # -- operators -------------------------------------------------------------------------
    def __matmul__(self, other):
        from lamina.sparse.ops import spmm

        return spmm(self, other)

    def __rmatmul__(self, other):
        from lamina.sparse.ops import dense_spmm

        return dense_spmm(other, self)

    def __mul__(self, other):
        from lamina.sparse.ops import mul

        return mul(self, other)

    __rmul__ = __mul__

    def __add__(self, other):
        from lamina.sparse.ops import add

        return add(self, other)

    __radd__ = __add__

    def __sub__(self, other):
        from lamina.sparse.ops import add

        return add(self, other, alpha=-1.0)

    def __rsub__(self, other):
        from lamina.sparse.ops import add

        return add(-self, other)

    def __neg__(self) -> SparseTensor:
        return self.with_values(-self.values)

    def __truediv__(self, other):
        from lamina.sparse.ops import div

        return div(self, other)

    def sum(self, dim=None):  # noqa: A003 - mirrors torch.sparse.sum
        from lamina.sparse.ops import sum as sparse_sum

        return sparse_sum(self, dim)


def _csr_from_sorted(coo: SparseTensor, coalesced: bool) -> SparseTensor:
    """CSR of a COO matrix whose entries are already sorted by row."""
    xp = backend.xp
    counts = xp.bincount(coo._indices[0], minlength=coo.shape[0])
    crow = xp.concatenate([xp.zeros(1, dtype=numpy.int64), xp.cumsum(counts)]).astype(numpy.int64)
    return SparseTensor(coo._indices, coo.values, coo.shape, "csr", crow, coalesced)
