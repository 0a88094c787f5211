"""Inverses, determinants, linear solves, Cholesky and the matrix exponential, batched over
leading axes (..., n, n) like ``torch.linalg``.

Forward passes call LAPACK (NumPy, SciPy); backward passes use the reverse-mode rules
(Giles 2008, "An extended collection of matrix derivative results"; Murray 2016 for
Cholesky), with triangular solves in place of inverses where the rule allows. Each
``backward_graph`` writes the same rule with these ops on tensors, so gradients of
gradients follow. A^T below is the transpose of the last two axes.
"""

from __future__ import annotations

import numpy

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError
from lamina.functional._linalg_util import (
    check_matrix,
    lapack_threads,
    mT,
    run_checked,
    singular_check,
    triangular_solve,
)
from lamina.functional._util import sum_to, unbroadcast
from lamina.functional.elementwise import where
from lamina.functional.linalg_structure import tril, triu
from lamina.functional.shape import concat, expand_dims, squeeze, swapaxes


def _as_tensor(a) -> Tensor:
    return a if isinstance(a, Tensor) else Tensor._constant(a)


def _host(a):
    return backend.to_numpy(a)


class Inv(Function):
    """Y = A^-1; dJ/dA = -Y^T (dJ/dY) Y^T."""

    def forward(self, a):
        check_matrix("inv", a.shape)
        self.y = singular_check("inv", lambda: backend.xp.linalg.inv(a), a)
        return self.y

    def backward(self, dy):
        yt = mT(self.y)
        return (-(yt @ dy @ yt),)

    def backward_graph(self, dy):
        yt = mT(self.recorded_output(self.y))
        return (-(yt @ dy @ yt),)


def _cofactors(a):
    """The cofactor matrix d A^-T of A, defined for singular A too: with A = U diag(s) V^T,
    det(U) det(V) U diag(prod_{j != i} s_j) V^T."""
    xp = backend.xp
    u, s, vh = xp.linalg.svd(a)
    ones = xp.ones(s.shape[:-1] + (1,), dtype=s.dtype)
    before = xp.cumprod(xp.concatenate([ones, s[..., :-1]], axis=-1), axis=-1)
    after = xp.flip(xp.cumprod(xp.concatenate([ones, xp.flip(s, axis=-1)[..., :-1]], axis=-1), axis=-1), axis=-1)
    orientation = xp.linalg.det(u) * xp.linalg.det(vh)
    return orientation[..., None, None] * ((u * (before * after)[..., None, :]) @ vh)


class Det(Function):
    """d = det(A); dJ/dA = g d A^-T, the cofactor matrix (through the SVD where A is singular;
    the second derivative needs A invertible)."""

    def forward(self, a):
        check_matrix("det", a.shape)
        self.a = a
        with lapack_threads(a.shape):
            self.d = backend.xp.asarray(backend.xp.linalg.det(a))
        return self.d

    def backward(self, dy):
        try:
            with lapack_threads(self.a.shape):
                cofactors = self.d[..., None, None] * mT(backend.xp.linalg.inv(self.a))
        except numpy.linalg.LinAlgError:
            cofactors = _cofactors(self.a)
        return (dy[..., None, None] * cofactors,)

    def backward_graph(self, dy):
        scale = expand_dims(expand_dims(dy * self.recorded_output(self.d), -1), -1)
        return (scale * mT(inv(self.inputs[0])),)


class SignLogAbsDet(Function):
    """(sign det A, log |det A|) stacked on a last axis of 2; only log |det A| has a gradient:
    d log|det A| / dA = A^-T."""

    def forward(self, a):
        check_matrix("slogdet", a.shape)
        self.a = a
        with lapack_threads(a.shape):
            sign, logabs = backend.xp.linalg.slogdet(a)
        return backend.xp.stack([sign, logabs], axis=-1)

    def backward(self, dy):
        inverse = singular_check("slogdet (gradient)", lambda: backend.xp.linalg.inv(self.a), self.a)
        return (dy[..., 1, None, None] * mT(inverse),)

    def backward_graph(self, dy):
        return (expand_dims(expand_dims(dy[..., 1], -1), -1) * mT(inv(self.inputs[0])),)


class Solve(Function):
    """X = A^-1 B (B of shape (..., n, k), batch axes broadcast); with G = dJ/dX:
    dJ/dB = A^-T G and dJ/dA = -(dJ/dB) X^T."""

    def forward(self, a, b):
        self.a, self.shapes = a, (a.shape, b.shape)
        self.x = singular_check("solve", lambda: backend.xp.linalg.solve(a, b), a)
        return self.x

    def backward(self, dy):
        db = singular_check("solve (gradient)", lambda: backend.xp.linalg.solve(mT(self.a), dy), self.a)
        da = unbroadcast(-(db @ mT(self.x)), self.shapes[0]) if self.needs_grad[0] else None
        return da, unbroadcast(db, self.shapes[1]) if self.needs_grad[1] else None

    def backward_graph(self, dy):
        a, b = self.inputs
        db = Solve.apply(mT(a), dy)
        da = sum_to(-(db @ mT(self.recorded_output(self.x))), a.shape) if self.needs_grad[0] else None
        return da, sum_to(db, b.shape) if self.needs_grad[1] else None


class SolveTriangular(Function):
    """X with A X = B (``left``) or X A = B, A triangular (only the ``upper`` or lower triangle
    read; the diagonal taken as ones when ``unitriangular``). With G = dJ/dX: on the left,
    dJ/dB = A^-T G and dJ/dA = -(dJ/dB) X^T; on the right, dJ/dB = G A^-T and
    dJ/dA = -X^T (dJ/dB); dJ/dA is kept to the triangle that is read."""

    def forward(self, a, b):
        check_matrix("solve_triangular", a.shape)
        check_matrix("solve_triangular", b.shape, square=False)
        n, along = a.shape[-1], (b.shape[-2] if self.left else b.shape[-1])
        if along != n:
            side = "rows" if self.left else "columns"
            raise ShapeError(f"solve_triangular: A of shape {a.shape} needs B with {n} {side} "
                             f"(left={self.left}), got B of shape {b.shape}")
        self.a, self.shapes = a, (a.shape, b.shape)
        self.x = self._solve(a, b, transpose=False)
        return self.x

    def _solve(self, a, b, transpose: bool):
        """op(A)^-1 B on the left, B op(A)^-1 on the right (op(A) = A^T when ``transpose``)."""
        lower, unit = not self.upper, self.unitriangular
        if self.left:
            return triangular_solve(a, b, lower, transpose, unit).astype(b.dtype, copy=False)
        return mT(triangular_solve(a, mT(b), lower, not transpose, unit)).astype(b.dtype, copy=False)

    def _triangle(self, g, pick):
        return pick(g, int(self.unitriangular)) if self.upper else pick(g, -int(self.unitriangular))

    def backward(self, dy):
        db = self._solve(self.a, dy, transpose=True)
        da = None
        if self.needs_grad[0]:
            da = -(db @ mT(self.x)) if self.left else -(mT(self.x) @ db)
            da = unbroadcast(self._triangle(da, backend.xp.triu if self.upper else backend.xp.tril), self.shapes[0])
        return da, unbroadcast(db, self.shapes[1]) if self.needs_grad[1] else None

    def backward_graph(self, dy):
        a, b = self.inputs
        db = solve_triangular(mT(a), dy, upper=not self.upper, left=self.left, unitriangular=self.unitriangular)
        da = None
        if self.needs_grad[0]:
            x = self.recorded_output(self.x)
            da = -(db @ mT(x)) if self.left else -(mT(x) @ db)
            da = sum_to(self._triangle(da, triu if self.upper else tril), a.shape)
        return da, sum_to(db, b.shape) if self.needs_grad[1] else None


def _cholesky_gradient(l, gl, solve, lower_part, transpose):
    """dJ/dA for A = L L^T from L and G = dJ/dL (Murray 2016): with P = tril(L^T G) and
    Phi = (P + tril(P, -1)^T) / 2, the symmetric dJ/dA = L^-T Phi L^-1. ``solve(L, B)`` gives
    L^-T B; the helpers work on arrays or on tensors alike."""
    p = lower_part(transpose(l) @ gl)
    phi = 0.5 * (p + transpose(lower_part(p, -1)))
    return solve(l, transpose(solve(l, phi)))  # L^-T (L^-T Phi)^T = L^-T Phi L^-1, Phi symmetric


class Cholesky(Function):
    """L with A = L L^T (U = L^T with A = U^T U when ``upper``), from A's lower triangle."""

    def forward(self, a):
        check_matrix("cholesky", a.shape)
        l_factor = run_checked("cholesky", lambda: backend.xp.linalg.cholesky(a), a, "not positive definite",
                               "a symmetric positive-definite matrix", numpy.linalg.cholesky)
        self.l = l_factor
        return backend.xp.ascontiguousarray(mT(l_factor)) if self.upper else l_factor

    def backward(self, dy):
        gl = mT(dy) if self.upper else dy

        def solve(l_factor, b):
            return triangular_solve(l_factor, b, lower=True, transpose=True, op="cholesky (gradient)")

        da = _cholesky_gradient(self.l, gl, solve, backend.xp.tril, mT)
        return (da.astype(dy.dtype, copy=False),)

    def backward_graph(self, dy):
        out = self.recorded_output(mT(self.l) if self.upper else self.l)
        l_factor, gl = (mT(out), mT(dy)) if self.upper else (out, dy)

        def solve(l_factor, b):
            return solve_triangular(mT(l_factor), b, upper=True)

        return (_cholesky_gradient(l_factor, gl, solve, tril, mT),)


class MatrixExp(Function):
    """exp(A) = sum_k A^k / k!. Its VJP at A applied to G is the Frechet derivative of exp at
    A^T in the direction G: L(A^T, G) = int_0^1 exp(s A^T) G exp((1 - s) A^T) ds."""

    def forward(self, a):
        import scipy.linalg  # SciPy loads on first use, not with lamina

        check_matrix("matrix_exp", a.shape)
        self.a = a
        if a.size == 0:                 # SciPy's expm fails on 0 x 0 matrices
            return backend.xp.zeros_like(a)
        with lapack_threads(a.shape):
            return backend.xp.asarray(scipy.linalg.expm(_host(a))).astype(a.dtype, copy=False)

    def backward(self, dy):
        import scipy.linalg

        if self.a.size == 0:
            return (backend.xp.zeros_like(dy),)
        a, g = _host(self.a), _host(dy)
        flat_a, flat_g = a.reshape((-1,) + a.shape[-2:]), g.reshape((-1,) + g.shape[-2:])
        with lapack_threads(a.shape):
            out = numpy.stack([scipy.linalg.expm_frechet(m.T, d, compute_expm=False) for m, d in zip(flat_a, flat_g)])
        return (backend.xp.asarray(out.reshape(a.shape)).astype(dy.dtype, copy=False),)

    def backward_graph(self, dy):
        # exp([[A^T, G], [0, A^T]]) = [[exp(A^T), L(A^T, G)], [0, exp(A^T)]] (Mathias 1996)
        at, n = mT(self.inputs[0]), self.inputs[0].shape[-1]
        zeros = Tensor._wrap(backend.xp.zeros(at.shape, dtype=at.dtype))
        block = concat([concat([at, dy], axis=-1), concat([zeros, at], axis=-1)], axis=-2)
        return (matrix_exp(block)[..., :n, n:],)


def inv(a) -> Tensor:
    """A^-1 of square matrices (..., n, n); raises LinAlgError naming the singular matrix."""
    return Inv.apply(a)


def det(a) -> Tensor:
    """det(A) of square matrices (..., n, n); its gradient is the cofactor matrix d A^-T (also at
    singular A); its second derivative needs A invertible."""
    return Det.apply(a)


def slogdet(a) -> tuple[Tensor, Tensor]:
    """(sign, log|det A|): the sign (a constant, -1, 0 or 1) and the log of the absolute
    determinant, with gradient A^-T; steadier than log(det(A)) for large n."""
    both = SignLogAbsDet.apply(a)
    return Tensor._wrap(both.data[..., 0]), both[..., 1]


def logdet(a) -> Tensor:
    """log det(A): NaN where det(A) < 0 and -inf where it is 0 (as torch.logdet)."""
    sign, logabs = slogdet(a)
    xp = backend.xp
    return logabs + xp.where(sign.data < 0, xp.asarray(xp.nan, dtype=logabs.dtype), xp.zeros((), logabs.dtype))


def solve(a, b, *, left: bool = True) -> Tensor:
    """X with A X = B for square A (..., n, n). B (..., n, k) is a batch of matrices, or, as
    torch.linalg.solve, a vector (n,) or a batch of vectors (..., n) when it is 1-D or has the
    shape of A without its last axis. Batch axes broadcast. With ``left=False``, X with X A = B
    for B (..., k, n), solved as A^T X^T = B^T."""
    a, b = _as_tensor(a), _as_tensor(b)
    check_matrix("solve", a.shape)
    if not left:
        if b.ndim < 2 or b.shape[-1] != a.shape[-1]:
            raise ShapeError(f"solve(left=False): A of shape {a.shape} needs B of shape (..., k, {a.shape[-1]}); "
                             f"got B of shape {b.shape}")
        return swapaxes(solve(swapaxes(a, -1, -2), swapaxes(b, -1, -2)), -1, -2)
    n = a.shape[-1]
    vector = b.ndim == 1 or (b.ndim == a.ndim - 1 and tuple(b.shape) == tuple(a.shape[:-1]))
    rows = b.shape[-1] if vector else (b.shape[-2] if b.ndim >= 2 else None)
    if rows != n:
        raise ShapeError(f"solve: A of shape {a.shape} needs B of shape (..., {n}, k) or (..., {n}); "
                         f"got B of shape {b.shape}")
    if not vector:
        return Solve.apply(a, b)
    return squeeze(Solve.apply(a, expand_dims(b, -1)), -1)


def solve_triangular(a, b, *, upper: bool, left: bool = True, unitriangular: bool = False) -> Tensor:
    """X with A X = B (``left``) or X A = B, A (..., n, n) upper or lower triangular (only that
    triangle is read; ``unitriangular`` takes its diagonal as ones), as torch.linalg.solve_triangular."""
    return SolveTriangular.apply(a, b, upper=bool(upper), left=bool(left), unitriangular=bool(unitriangular))


def cholesky(a, upper: bool = False) -> Tensor:
    """The Cholesky factor L (lower, A = L L^T) of symmetric positive-definite A, read from its
    lower triangle; ``upper`` gives U = L^T. The gradient is symmetric (as torch's)."""
    return Cholesky.apply(a, upper=bool(upper))


def cholesky_solve(b, l_factor, upper: bool = False) -> Tensor:
    """X with A X = B where A = L L^T (or U^T U when ``upper``), given the factor (torch's
    argument order): two triangular solves."""
    if upper:
        return solve_triangular(l_factor, solve_triangular(mT(l_factor), b, upper=False), upper=True)
    return solve_triangular(mT(l_factor), solve_triangular(l_factor, b, upper=False), upper=True)


def matrix_power(a, n: int) -> Tensor:
    """A^n for an integer n by repeated squaring; A^0 = I (on the graph, with a zero gradient, as
    torch) and A^-n = (A^-1)^n."""
    a = _as_tensor(a)
    check_matrix("matrix_power", a.shape)
    if int(n) != n:
        raise ValueError(f"matrix_power: expected an integer exponent, got {n!r}")
    n = int(n)
    if n == 0:
        eye = backend.xp.broadcast_to(backend.xp.eye(a.shape[-1], dtype=a.dtype), a.shape)
        return where(backend.xp.ones(a.shape, dtype=bool), eye, a)
    base, result = (inv(a) if n < 0 else a), None
    n = abs(n)
    while n:
        if n & 1:
            result = base if result is None else result @ base
        n >>= 1
        if n:
            base = base @ base
    return result


def matrix_exp(a) -> Tensor:
    """exp(A) of square matrices (..., n, n) (scipy.linalg.expm); gradients through the Frechet
    derivative."""
    return MatrixExp.apply(a)
