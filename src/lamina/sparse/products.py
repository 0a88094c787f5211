"""The two primitives of sparse linear algebra, each the other's gradient (see
:mod:`lamina.sparse.pattern`): for the pattern P of an (m, k) matrix S holding values v,

    SparseDenseMM(v, X) = S X                   dJ/dv = sampled_dot(dY, X),   dJ/dX = S^T dY
    SampledDot(A, B)[e] = A[r_e] . B[c_e]       dJ/dA = S(dv) B,              dJ/dB = S(dv)^T A

Both VJPs are written with the same two ops, so gradients of any order are available.
"""

from __future__ import annotations

from lamina.autograd import Function, Tensor


class SparseDenseMM(Function):
    """Y = S X, S (m, k) the sparse matrix of ``values`` at ``pattern``, X (k, n) dense:
    Y[i] = sum over the entries e of row i of v[e] X[c_e]."""

    def forward(self, values, dense):
        self.values, self.dense = values, dense
        self.matrix = self.pattern.csr_matrix(values)
        return self.pattern.matmul(values, dense, self.matrix)

    def backward(self, dy):
        dv = self.pattern.sampled_dot(dy, self.dense) if self.needs_grad[0] else None
        dx = self.pattern.transposed_matmul(self.values, dy, self.matrix) if self.needs_grad[1] else None
        return dv, dx

    def backward_graph(self, dy: Tensor) -> tuple:
        values, dense = self.inputs
        dv = SampledDot.apply(dy, dense, pattern=self.pattern) if self.needs_grad[0] else None
        dx = SparseDenseMM.apply(values, dy, pattern=self.pattern.transposed()) if self.needs_grad[1] else None
        return dv, dx


class SampledDot(Function):
    """v[e] = A[r_e] . B[c_e] for A (m, n), B (k, n): (A B^T) at the positions of ``pattern``."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return self.pattern.sampled_dot(a, b)

    def backward(self, dv):
        matrix = self.pattern.csr_matrix(dv)
        da = self.pattern.matmul(dv, self.b, matrix) if self.needs_grad[0] else None
        db = self.pattern.transposed_matmul(dv, self.a, matrix) if self.needs_grad[1] else None
        return da, db

    def backward_graph(self, dv: Tensor) -> tuple:
        a, b = self.inputs
        da = SparseDenseMM.apply(dv, b, pattern=self.pattern) if self.needs_grad[0] else None
        db = SparseDenseMM.apply(dv, a, pattern=self.pattern.transposed()) if self.needs_grad[1] else None
        return da, db
