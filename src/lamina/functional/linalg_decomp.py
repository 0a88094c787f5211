"""Matrix decompositions with gradients: symmetric eigendecomposition, SVD, QR, and what is
built on them (pseudo-inverse, matrix norms), batched over leading axes like ``torch.linalg``.

An op has one output, so eigh, svd and qr return their factors packed into one array that
the wrappers slice apart; the backward reads each factor's gradient from the packed one
(zeros for factors that were not used). Each gradient formula is written once and runs on
arrays (``backward``) or on tensors (``backward_graph``, so that it can be differentiated
again). The factors' gradients are undefined where eigenvalues or singular values repeat
(their formulas divide by the gaps), as in PyTorch; eigvalsh and svdvals have their own
ops, whose gradients need no gaps.
"""

from __future__ import annotations

import numbers
import operator

import numpy

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.functional._linalg_util import (
    check_matrix,
    lapack_threads,
    mT,
    pack,
    run_checked,
    triangular_solve,
    unpack,
)
from lamina.functional.elementwise import abs as abs_
from lamina.functional.linalg import solve_triangular
from lamina.functional.linalg_structure import tril
from lamina.functional.reduce import max as max_
from lamina.functional.reduce import min as min_
from lamina.functional.reduce import sum as sum_
from lamina.functional.reduce_more import norm
from lamina.functional.shape import concat, expand_dims, transpose

_UNUSED = None  # a factor whose upstream gradient is all zeros: its terms are skipped


def _used(g):
    data = g.data if isinstance(g, Tensor) else g
    return g if bool(backend.xp.any(data)) else _UNUSED


def _eye(n: int, dtype):
    return backend.xp.eye(n, dtype=dtype)


# -- symmetric eigendecomposition -------------------------------------------------------
def _eigh_gradient(w, v, gw, gv):
    """dJ/dA for A = V diag(w) V^T: V (diag(gw) + skew(V^T gV) / E) V^T with skew(M) = (M - M^T)/2
    and E_ij = w_j - w_i off the diagonal (symmetric, as torch's)."""
    eye = _eye(w.shape[-1], w.dtype)
    inner = eye * expand_dims(gw, -2) if isinstance(gw, Tensor) else eye * gw[..., None, :]
    if gv is not _UNUSED:
        m = mT(v) @ gv
        gaps = _outer_difference(w) + eye
        inner = inner + 0.5 * (m - mT(m)) / gaps
    return v @ inner @ mT(v)


def _outer_difference(w):
    """E_ij = w_j - w_i."""
    if isinstance(w, Tensor):
        return expand_dims(w, -2) - expand_dims(w, -1)
    return w[..., None, :] - w[..., :, None]


class Eigh(Function):
    """Eigenvalues w (ascending) and orthonormal eigenvectors V (columns) of symmetric A, read
    from its ``uplo`` triangle, packed as rows [w; V] of shape (..., n + 1, n)."""

    def forward(self, a):
        check_matrix("eigh", a.shape)
        w, v = run_checked("eigh", lambda: backend.xp.linalg.eigh(a, UPLO=self.uplo), a, "not diagonalizable "
                           "(no convergence)", "a finite symmetric matrix", numpy.linalg.eigh)
        self.packed = backend.xp.concatenate([w[..., None, :], v], axis=-2)
        return self.packed

    def backward(self, dy):
        w, v = self.packed[..., 0, :], self.packed[..., 1:, :]
        return (_eigh_gradient(w, v, dy[..., 0, :], _used(dy[..., 1:, :])),)

    def backward_graph(self, dy):
        packed = self.recorded_output(self.packed)
        gv = dy[..., 1:, :] if _used(dy.data[..., 1:, :]) is not _UNUSED else _UNUSED
        return (_eigh_gradient(packed[..., 0, :], packed[..., 1:, :], dy[..., 0, :], gv),)


class Eigvalsh(Function):
    """Eigenvalues of symmetric A, ascending; dJ/dA = V diag(g) V^T (defined at repeated
    eigenvalues too)."""

    def forward(self, a):
        check_matrix("eigvalsh", a.shape)
        w, self.v = run_checked("eigvalsh", lambda: backend.xp.linalg.eigh(a, UPLO=self.uplo), a,
                                "not diagonalizable (no convergence)", "a finite symmetric matrix", numpy.linalg.eigh)
        return w

    def backward(self, dy):
        return ((self.v * dy[..., None, :]) @ mT(self.v),)

    def backward_graph(self, dy):
        v = eigh(self.inputs[0], UPLO=self.uplo)[1]
        return ((v * expand_dims(dy, -2)) @ mT(v),)


# -- singular value decomposition -------------------------------------------------------
def _svd_gradient(u, s, vh, gu, gs, gvh):
    """dJ/dA for the reduced A = U diag(s) V^T, k = min(m, n) (Townsend, "Differentiating the
    singular value decomposition"): with skew(M) = M - M^T and E_ij = s_j^2 - s_i^2,
    U [skew(U^T gU) / E diag(s) + diag(s) skew(V^T gV) / E + diag(gs)] V^T
    + (I - U U^T) gU diag(1/s) V^T + U diag(1/s) gV^T (I - V V^T)."""
    tensors = isinstance(s, Tensor)
    m, n, k = u.shape[-2], vh.shape[-1], s.shape[-1]

    def row(x):  # x as a row (..., 1, k), to scale columns
        return expand_dims(x, -2) if tensors else x[..., None, :]

    def column(x):
        return expand_dims(x, -1) if tensors else x[..., :, None]

    eye = _eye(k, s.dtype)
    inner = eye * row(gs)
    gv = mT(gvh) if gvh is not _UNUSED else _UNUSED
    if gu is not _UNUSED or gv is not _UNUSED:
        gaps = _outer_difference(s * s) + eye
        terms = 0.0
        if gu is not _UNUSED:
            j = mT(u) @ gu
            terms = (j - mT(j)) * row(s)
        if gv is not _UNUSED:
            kv = vh @ gv
            terms = terms + column(s) * (kv - mT(kv))
        inner = inner + terms / gaps
    ga = u @ inner @ vh
    if m > k and gu is not _UNUSED:
        ga = ga + ((gu - u @ (mT(u) @ gu)) / row(s)) @ vh
    if n > k and gv is not _UNUSED:
        ga = ga + u @ mT((gv - mT(vh) @ (vh @ gv)) / row(s))
    return ga


class Svd(Function):
    """A = U diag(S) Vh, singular values descending, the three packed flat on one last axis."""

    def forward(self, a):
        check_matrix("svd", a.shape, square=False)
        u, s, vh = run_checked("svd", lambda: backend.xp.linalg.svd(a, full_matrices=self.full_matrices), a,
                               "not decomposable (no convergence)", "a finite matrix", numpy.linalg.svd)
        self.shapes = [u.shape[-2:], s.shape[-1:], vh.shape[-2:]]
        self.packed = pack(u, s, vh, batch=a.shape[:-2])
        return self.packed

    def _reduced(self, u, s, vh, gu, gs, gvh):
        """The reduced factors and gradients; the columns that full_matrices adds must get none."""
        k = s.shape[-1]
        if self.full_matrices and (_used(gu[..., k:]) is not _UNUSED or _used(gvh[..., k:, :]) is not _UNUSED):
            raise RuntimeError("svd: no gradient through the extra singular vectors of full_matrices=True "
                               f"(U of shape {u.shape}, Vh of shape {vh.shape}); use full_matrices=False")
        return u[..., :k], s, vh[..., :k, :], gu[..., :k], gs, gvh[..., :k, :]

    def backward(self, dy):
        u, s, vh, gu, gs, gvh = self._reduced(*unpack(self.packed, self.shapes), *unpack(dy, self.shapes))
        return (_svd_gradient(u, s, vh, _used(gu), gs, _used(gvh)),)

    def backward_graph(self, dy):
        grads = unpack(dy.data, self.shapes)
        self._reduced(*unpack(self.packed, self.shapes), *grads)
        k = self.shapes[1][0]
        u, s, vh = unpack(self.recorded_output(self.packed), self.shapes)
        gu, gs, gvh = unpack(dy, self.shapes)
        gu = gu[..., :k] if _used(grads[0]) is not _UNUSED else _UNUSED
        gvh = gvh[..., :k, :] if _used(grads[2]) is not _UNUSED else _UNUSED
        return (_svd_gradient(u[..., :k], s, vh[..., :k, :], gu, gs, gvh),)


class Svdvals(Function):
    """Singular values, descending; dJ/dA = U diag(g) V^T (defined at repeated values too)."""

    def forward(self, a):
        check_matrix("svdvals", a.shape, square=False)
        self.u, s, self.vh = run_checked("svdvals", lambda: backend.xp.linalg.svd(a, full_matrices=False), a,
                                         "not decomposable (no convergence)", "a finite matrix", numpy.linalg.svd)
        return s

    def backward(self, dy):
        return ((self.u * dy[..., None, :]) @ self.vh,)

    def backward_graph(self, dy):
        u, _, vh = svd(self.inputs[0])
        return ((u * expand_dims(dy, -2)) @ vh,)


# -- QR -----------------------------------------------------------------------------------
def _qr_square_gradient(q, r, gq, gr):
    """dJ/dA for A = QR with R square (m >= n, reduced) (Liao et al. 2019): with
    M = R gR^T - gQ^T Q and copyltu(M) = tril(M) + tril(M, -1)^T, dJ/dA = (gQ + Q copyltu(M)) R^-T."""
    tensors = isinstance(r, Tensor)
    lower = tril if tensors else backend.xp.tril
    m = r @ mT(gr) - mT(gq) @ q
    x = gq + q @ (lower(m) + mT(lower(m, -1)))
    if tensors:
        return mT(solve_triangular(r, mT(x), upper=True))
    return mT(triangular_solve(r, mT(x), lower=False, op="qr (gradient)"))


def _qr_gradient(a_shape, q, r, gq, gr):
    """The square-R rule; for m < n, A = [X | Y] = Q [R1 | R2]: X = Q R1 gets the rule with
    gQ + Y gR2^T, and Y = Q R2 gives Q gR2."""
    m, n = a_shape[-2], a_shape[-1]
    if m >= n:
        return _qr_square_gradient(q, r, gq, gr)
    y = q @ r[..., m:]
    gx = _qr_square_gradient(q, r[..., :m], gq + y @ mT(gr[..., m:]), gr[..., :m])
    gy = q @ gr[..., m:]
    if isinstance(r, Tensor):
        return concat([gx, gy], axis=-1)
    return backend.xp.concatenate([gx, gy], axis=-1)


class Qr(Function):
    """A = QR, Q with orthonormal columns, R upper triangular, packed flat on one last axis."""

    def forward(self, a):
        check_matrix("qr", a.shape, square=False)
        mode = "complete" if self.mode == "complete" else "reduced"
        with lapack_threads(a.shape):
            q, r = backend.xp.linalg.qr(a, mode=mode)
        self.shapes, self.a_shape = [q.shape[-2:], r.shape[-2:]], a.shape
        self.packed = pack(q, r, batch=a.shape[:-2])
        return self.packed

    def _check(self):
        m, n = self.a_shape[-2:]
        if self.mode == "complete" and m > n:
            raise RuntimeError(f"qr: no gradient for mode='complete' when rows > columns (input {self.a_shape}), "
                               "since Q's extra columns are not determined by A; use mode='reduced'")

    def backward(self, dy):
        self._check()
        return (_qr_gradient(self.a_shape, *unpack(self.packed, self.shapes), *unpack(dy, self.shapes)),)

    def backward_graph(self, dy):
        self._check()
        q, r = unpack(self.recorded_output(self.packed), self.shapes)
        return (_qr_gradient(self.a_shape, q, r, *unpack(dy, self.shapes)),)


# -- pseudo-inverse -------------------------------------------------------------------------
def _pinv_gradient(a, p, g):
    """dJ/dA for P = A^+ (constant rank; Golub and Pereyra 1973):
    -P^T G P^T + (I - A P) G^T P P^T + P^T P G^T (I - P A)."""
    pt, gt = mT(p), mT(g)
    outer = gt @ (p @ pt)
    inner = (pt @ p) @ gt
    return -(pt @ g @ pt) + (outer - a @ (p @ outer)) + (inner - (inner @ p) @ a)


class Pinv(Function):
    """The Moore-Penrose pseudo-inverse, through the SVD (or, for ``hermitian`` A, the
    eigendecomposition): singular values at most max(atol, rtol sigma_max) are taken as 0."""

    def forward(self, a):
        check_matrix("pinv", a.shape, square=False)
        self.a = a
        self.p = run_checked("pinv", lambda: _pseudo_inverse(a, self.atol, self.rtol, self.hermitian), a,
                             "not decomposable (no convergence)", "a finite matrix",
                             lambda m: _pseudo_inverse(m, self.atol, self.rtol, self.hermitian))
        return self.p

    def backward(self, dy):
        return (_pinv_gradient(self.a, self.p, dy),)

    def backward_graph(self, dy):
        return (_pinv_gradient(self.inputs[0], self.recorded_output(self.p), dy),)


def singular_value_cutoff(values, shape, dtype, atol, rtol):
    """The tolerance max(atol, rtol sigma_max) of pinv and matrix_rank, per matrix (keeping a last
    axis), from ``values`` (..., k) in any order; atol and rtol are numbers or arrays with one per
    matrix. rtol defaults to eps max(m, n) where atol is not given or 0, and to 0 where it is
    positive, as torch."""
    xp = backend.xp
    atol = xp.zeros((), dtype=dtype) if atol is None else xp.asarray(atol, dtype=dtype)[..., None]
    if rtol is None:
        rtol = xp.where(atol > 0, 0.0, xp.finfo(dtype).eps * max(shape[-2:], default=0))
    else:
        rtol = xp.asarray(rtol, dtype=dtype)[..., None]
    largest = xp.max(values, axis=-1, keepdims=True, initial=0.0)
    return xp.maximum(atol, rtol * largest)


def tolerance(op: str, name: str, value):
    """``value`` of pinv's or matrix_rank's ``atol`` / ``rtol`` as None, a float, or an array of
    them (from a Tensor or an array, one per matrix), each >= 0; else a ValueError naming ``op``."""
    if value is None:
        return None
    data = value.data if isinstance(value, Tensor) else value
    if isinstance(data, bool) or not isinstance(data, (numbers.Real, numpy.ndarray, backend.xp.ndarray)):
        raise ValueError(f"{op}: {name} must be a number >= 0, an array or Tensor of them, or None, got {value!r}")
    array = backend.xp.asarray(data, dtype=numpy.float64)
    if array.dtype.kind not in "fiu" or bool(backend.xp.any(~(array >= 0))):
        raise ValueError(f"{op}: {name} must be >= 0, got {value!r}")
    return float(array) if array.ndim == 0 else array


def _pseudo_inverse(a, atol, rtol, hermitian):
    xp = backend.xp
    if hermitian:
        w, v = xp.linalg.eigh(a)
        kept = xp.abs(w) > singular_value_cutoff(xp.abs(w), a.shape, a.dtype, atol, rtol)
        inverse = xp.where(kept, 1.0 / xp.where(kept, w, 1.0), 0.0).astype(a.dtype)
        return (v * inverse[..., None, :]) @ xp.swapaxes(v, -1, -2)
    u, s, vt = xp.linalg.svd(a, full_matrices=False)
    kept = s > singular_value_cutoff(s, a.shape, a.dtype, atol, rtol)
    inverse = xp.where(kept, 1.0 / xp.where(kept, s, 1.0), 0.0).astype(a.dtype)
    return (xp.swapaxes(vt, -1, -2) * inverse[..., None, :]) @ xp.swapaxes(u, -1, -2)


# -- wrappers -------------------------------------------------------------------------------
def _check_uplo(op: str, uplo: str) -> str:
    if uplo not in ("L", "U"):
        raise ValueError(f"{op}: UPLO must be 'L' or 'U', got {uplo!r}")
    return uplo


def _two_axes(op: str, dim, ndim: int) -> tuple[int, int]:
    """``dim`` as two distinct non-negative axes of an array of ``ndim`` axes, or a clear error."""
    try:
        rows, columns = (int(operator.index(d)) for d in dim)
    except (TypeError, ValueError):
        raise ValueError(f"{op}: dim must be a pair of axes, got {dim!r}") from None
    if ndim < 2 or not (-ndim <= rows < ndim and -ndim <= columns < ndim):
        raise ValueError(f"{op}: dim {tuple(dim)} is out of range for an input of {ndim} axes (a matrix "
                         "or a batch of matrices is needed)")
    rows, columns = rows % ndim, columns % ndim
    if rows == columns:
        raise ValueError(f"{op}: dim must name two different axes, got {tuple(dim)}")
    return rows, columns


def eigh(a, UPLO: str = "L") -> tuple[Tensor, Tensor]:  # noqa: N803 - torch's and NumPy's name
    """(w, V): eigenvalues ascending and orthonormal eigenvectors (columns) of symmetric A
    (..., n, n), from its lower (``UPLO='L'``) or upper triangle; A = V diag(w) V^T. The
    gradient is symmetric; V's is undefined where eigenvalues repeat (it divides by
    w_j - w_i), as in PyTorch. Eigenvectors are defined up to sign."""
    packed = Eigh.apply(a, uplo=_check_uplo("eigh", UPLO))
    return packed[..., 0, :], packed[..., 1:, :]


def eigvalsh(a, UPLO: str = "L") -> Tensor:  # noqa: N803
    """Eigenvalues (ascending) of symmetric A; the gradient V diag(g) V^T needs no distinct values."""
    return Eigvalsh.apply(a, uplo=_check_uplo("eigvalsh", UPLO))


def svd(a, full_matrices: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """(U, S, Vh) with A = U diag(S) Vh, singular values descending. Gradients are those of
    the reduced SVD and need distinct, nonzero singular values when U or Vh is used (as in
    PyTorch); singular vectors are defined up to sign."""
    packed = Svd.apply(a, full_matrices=bool(full_matrices))
    return tuple(unpack(packed, _svd_shapes(a.shape, full_matrices)))


def _svd_shapes(shape, full_matrices: bool):
    m, n = shape[-2:]
    k = min(m, n)
    return [(m, m if full_matrices else k), (k,), (n if full_matrices else k, n)]


def svdvals(a) -> Tensor:
    """Singular values, descending; the gradient U diag(g) Vh needs no distinct values."""
    return Svdvals.apply(a)


def qr(a, mode: str = "reduced") -> tuple[Tensor, Tensor]:
    """(Q, R) with A = QR: ``mode`` 'reduced' (Q (..., m, k), R (..., k, n), k = min(m, n)),
    'complete' (Q (..., m, m)) or 'r' (Q empty, as torch). Gradients for every shape in
    'reduced' and 'r' modes; in 'complete' mode when m <= n."""
    if mode not in ("reduced", "complete", "r"):
        raise ValueError(f"qr: mode must be 'reduced', 'complete' or 'r', got {mode!r}")
    m, n = a.shape[-2:] if len(a.shape) >= 2 else (None, None)
    packed = Qr.apply(a, mode=mode)
    k = m if mode == "complete" else min(m, n)
    q, r = unpack(packed, [(m, k), (k, n)])
    if mode == "r":
        return Tensor._wrap(backend.xp.zeros((0,), dtype=r.dtype)), r
    return q, r


def pinv(a, rtol=None, *, atol=None, hermitian: bool = False) -> Tensor:
    """The Moore-Penrose pseudo-inverse A^+ (..., n, m), as torch.linalg.pinv: singular values
    at most max(atol, rtol sigma_max) count as 0 (numbers, or Tensors with one per matrix; rtol
    defaults to eps max(m, n), or to 0 where a positive atol is given); ``hermitian`` reads
    symmetric A through its eigendecomposition. The gradient assumes the rank does not change
    near A."""
    rtol, atol = tolerance("pinv", "rtol", rtol), tolerance("pinv", "atol", atol)
    if hermitian:
        check_matrix("pinv", tuple(getattr(a, "shape", numpy.shape(a))))
    return Pinv.apply(a, rtol=rtol, atol=atol, hermitian=bool(hermitian))


def matrix_norm(a, ord="fro", dim=(-2, -1), keepdim: bool = False) -> Tensor:  # noqa: A002 - torch's name
    """A matrix norm over the two axes ``dim`` (rows, columns; default the last two): 'fro' (sqrt
    of the sum of squares), 'nuc' (sum of singular values), 2 / -2 (largest / smallest singular
    value), 1 / -1 (max / min absolute column sum), inf / -inf (max / min absolute row sum). As
    torch, the norms that are a maximum are 0 for an empty matrix, and those that are a minimum of
    no values raise an error."""
    rows, columns = _two_axes("matrix_norm", dim, a.ndim)
    if (rows, columns) != (a.ndim - 2, a.ndim - 1):
        order = [axis for axis in range(a.ndim) if axis not in (rows, columns)] + [rows, columns]
        out = matrix_norm(transpose(a, *order), ord)
        if keepdim:
            for axis in sorted((rows, columns)):
                out = expand_dims(out, axis)
        return out
    check_matrix("matrix_norm", a.shape, square=False)
    inf = float("inf")
    if ord == "fro":
        out = norm(a, 2, axis=(-2, -1))           # its gradient at A = 0 is 0
    elif ord == "nuc":
        out = sum_(svdvals(a), axis=-1)
    elif ord in (2, -2):
        values = svdvals(a)
        if values.shape[-1] == 0:       # an empty matrix: 0 for 2 (as torch), a clear error for -2
            if ord == -2:
                raise ValueError(f"matrix_norm: ord -2 (the smallest singular value) of an empty matrix (shape "
                                 f"{a.shape}) is a minimum of no values")
            out = sum_(values, axis=-1)
        else:
            out = values[..., 0] if ord == 2 else values[..., -1]
    elif ord in (1, -1, inf, -inf):
        sums = sum_(abs_(a), axis=-2 if ord in (1, -1) else -1)
        if ord > 0:
            out = max_(sums, axis=-1) if sums.shape[-1] else sum_(sums, axis=-1)   # 0 when empty, as torch
        else:
            out = min_(sums, axis=-1)
    else:
        raise ValueError(f"matrix_norm: ord must be 'fro', 'nuc', 2, -2, 1, -1, inf or -inf, got {ord!r}")
    return expand_dims(expand_dims(out, -1), -1) if keepdim else out

