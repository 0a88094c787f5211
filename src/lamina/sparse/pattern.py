"""The positions of the stored entries of a sparse (m, k) matrix, and the two products
that run over them, on raw arrays.

For the entries e = 0..nnz-1 at (rows[e], cols[e]) holding values v[e] (duplicates allowed:
they add up), S is the (m, k) matrix sum_e v[e] [row rows[e], column cols[e]], and

    matmul(v, X)            = S X             (m, n) for X (k, n)
    transposed_matmul(v, Y) = S^T Y           (k, n) for Y (m, n)
    sampled_dot(A, B)[e]    = A[rows[e]] . B[cols[e]]   for A (m, n), B (k, n)

sampled_dot is (A B^T) read at the stored positions: the VJP of S X with respect to v is
sampled_dot(dY, X), and that of sampled_dot with respect to A is S(dv) B, so each product
is the other's gradient. On the CPU the products run through scipy's CSR kernels; other
array modules add the rows up with ``segment.sum_rows``.
"""

from __future__ import annotations

import numpy

from lamina import backend
from lamina.functional.segment import sum_rows


class Pattern:
    """The stored positions (rows, cols) of an (m, k) matrix; the values come per call."""

    def __init__(self, rows, cols, shape: tuple[int, int]):
        self.rows = rows
        self.cols = cols
        self.shape = (int(shape[0]), int(shape[1]))
        self._row_order = None
        self._transposed = None

    @property
    def nnz(self) -> int:
        return int(self.rows.shape[0])

    def transposed(self) -> Pattern:
        """The pattern of S^T: (cols, rows) in a (k, m) matrix (made once, then kept)."""
        if self._transposed is None:
            self._transposed = Pattern(self.cols, self.rows, self.shape[::-1])
            self._transposed._transposed = self
        return self._transposed

    def _csr_layout(self):
        """(order, column indices, row pointers): the entries sorted by row (stable), as
        scipy's CSR format wants them; order is None when they already are."""
        if self._row_order is None:
            rows = backend.to_numpy(self.rows)
            order = None if numpy.all(rows[1:] >= rows[:-1]) else numpy.argsort(rows, kind="stable")
            counts = numpy.bincount(rows, minlength=self.shape[0])
            indptr = numpy.concatenate([[0], numpy.cumsum(counts)]).astype(numpy.int64)
            cols = backend.to_numpy(self.cols)
            self._row_order = (order, cols if order is None else cols[order], indptr)
        return self._row_order

    def csr_matrix(self, values):
        """scipy's CSR matrix of S for 1-D NumPy ``values``, or None on another array module."""
        if type(values) is not numpy.ndarray or values.dtype.kind != "f":
            return None
        from scipy import sparse

        order, cols, indptr = self._csr_layout()
        data = values if order is None else values[order]
        return sparse.csr_matrix((data, cols, indptr), shape=self.shape)

    def matmul(self, values, dense, matrix=None):
        """S X for X (k, n) (``matrix``: S from :meth:`csr_matrix`, when already built)."""
        matrix = self.csr_matrix(values) if matrix is None else matrix
        if matrix is not None and type(dense) is numpy.ndarray:
            return numpy.ascontiguousarray(matrix @ dense, dtype=dense.dtype)
        return sum_rows(self.rows, values[:, None] * dense[self.cols], self.shape[0])

    def transposed_matmul(self, values, dense, matrix=None):
        """S^T Y for Y (m, n), through the same CSR matrix read column by column."""
        matrix = self.csr_matrix(values) if matrix is None else matrix
        if matrix is not None and type(dense) is numpy.ndarray:
            return numpy.ascontiguousarray(matrix.T @ dense, dtype=dense.dtype)
        return sum_rows(self.cols, values[:, None] * dense[self.rows], self.shape[1])

    def sampled_dot(self, a, b):
        """v[e] = a[rows[e]] . b[cols[e]] for a (m, n) and b (k, n): one dot product per entry."""
        return backend.xp.einsum("ij,ij->i", a[self.rows], b[self.cols])
