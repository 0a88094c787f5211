"""LU factorization with partial pivoting and the solves built on it, the symmetric indefinite
(LDL^T) factorization and its solves, and products of Householder reflectors, batched over
leading axes like ``torch.linalg``.

A (..., m, n) = P L U with P a permutation, L (..., m, k) unit lower triangular and U (..., k, n)
upper triangular, k = min(m, n). L and U are packed into one matrix LU (L below the diagonal, U
on and above it) and P into LAPACK's pivots (..., k): row i was swapped with row pivots[i]
(1-based, int32, as torch), for i = 1, ..., k in turn. P is I with its columns in the order
``perm`` that these swaps make of 0, ..., m - 1, so that (P^T A)[i] = A[perm[i]].

Each gradient rule is written once and runs on arrays (``backward``) or on tensors
(``backward_graph``, so that it can be differentiated again); the LDL^T ops have none, as in
torch. A^T below is the transpose of the last two axes.
"""

from __future__ import annotations

import math

import numpy

from lamina import backend, parallel
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError
from lamina.functional._linalg_util import batch_index, check_matrix, mT, triangular_solve
from lamina.functional._util import sum_to, unbroadcast
from lamina.functional.linalg import _as_tensor, solve_triangular
from lamina.functional.linalg_structure import tril, triu
from lamina.functional.shape import concat, expand_dims


# -- arrays or tensors alike ------------------------------------------------------------------
def _is_tensor(x) -> bool:
    return isinstance(x, Tensor)


def _lower(x, k: int = 0):
    return tril(x, k) if _is_tensor(x) else backend.xp.tril(x, k)


def _upper(x, k: int = 0):
    return triu(x, k) if _is_tensor(x) else backend.xp.triu(x, k)


def _join(parts, axis: int):
    return concat(parts, axis=axis) if _is_tensor(parts[0]) else backend.xp.concatenate(parts, axis=axis)


def _constant_like(array, like):
    """``array`` as a tensor when ``like`` is one (a constant on the graph), else as it is."""
    return Tensor._wrap(array) if _is_tensor(like) else array


def _tri_solve(t, b, *, upper: bool, transpose: bool = False, unit: bool = False, left: bool = True):
    """op(T)^-1 B (``left``) or B op(T)^-1, op(T) = T^T when ``transpose``; only the ``upper`` or
    lower triangle of T is read, its diagonal taken as ones when ``unit``."""
    if not left:
        return mT(_tri_solve(t, mT(b), upper=upper, transpose=not transpose, unit=unit))
    if _is_tensor(b):
        if not unit:
            _check_diagonal(t.data, upper)
        return solve_triangular(mT(t) if transpose else t, b, upper=upper != transpose, unitriangular=unit)
    return triangular_solve(t, b, lower=not upper, transpose=transpose, unit=unit, op="lu (gradient)")


def _check_diagonal(t, upper: bool) -> None:
    """The LinAlgError of the array path, naming ``lu (gradient)``, where T has a zero on its diagonal
    (a solve with no right-hand side: only its check runs)."""
    triangular_solve(t, backend.xp.zeros(t.shape[:-1] + (0,), t.dtype), lower=not upper, op="lu (gradient)")


def _per_matrix(routine, *arrays):
    """``routine`` (one LAPACK call, returning a tuple) on each matrix of ``arrays`` (host arrays
    whose batch axes are equal), on one BLAS thread; its results stacked back on those axes."""
    batch = arrays[0].shape[:-2]
    count = math.prod(batch)
    flat = [x.reshape((count,) + x.shape[len(batch):]) for x in arrays]
    with parallel.one_blas_thread():
        results = [routine(*(x[i] for x in flat)) for i in range(count)]
    return [numpy.stack(r).reshape(batch + numpy.shape(r[0])) for r in zip(*results)]


# -- pivots and permutations ------------------------------------------------------------------
def _permutation(pivots, m: int):
    """perm (..., m) from 1-based LAPACK pivots (..., k): the row swaps i <-> pivots[i] - 1 applied
    in turn to 0, ..., m - 1; (P^T A)[i] = A[perm[i]]."""
    pivots = backend.to_numpy(pivots)
    perm = numpy.broadcast_to(numpy.arange(m), pivots.shape[:-1] + (m,)).copy()
    for i in range(pivots.shape[-1]):
        j = (pivots[..., i:i + 1] - 1).astype(numpy.int64)
        row_i, row_j = perm[..., i:i + 1].copy(), numpy.take_along_axis(perm, j, axis=-1)
        numpy.put_along_axis(perm, j, row_i, axis=-1)
        perm[..., i:i + 1] = row_j
    return backend.xp.asarray(perm)


def _permutation_matrix(perm, dtype):
    """P (..., m, m) = I with its columns ordered by ``perm``: P[perm[i], i] = 1."""
    xp = backend.xp
    m = perm.shape[-1]
    return (xp.arange(m)[:, None] == perm[..., None, :]).astype(dtype)


def _rows(x, index):
    """x[..., index[..., i], :] for each i, the batch axes of ``x`` and ``index`` broadcast."""
    xp = backend.xp
    batch = numpy.broadcast_shapes(x.shape[:-2], index.shape[:-1])
    x = xp.broadcast_to(x, batch + x.shape[-2:])
    index = xp.broadcast_to(index, batch + index.shape[-1:])
    return xp.take_along_axis(x, index[..., None], axis=-2)


def _check_pivots(op: str, pivots, lu_shape: tuple[int, ...], broadcast: bool = False):
    """The pivots as an integer array of shape LU.shape[:-2] + (k,) with values in 1..m, or a clear error;
    with ``broadcast`` (as torch.lu_unpack), pivots whose batch axes broadcast to LU's are expanded to them."""
    data = backend.xp.asarray(pivots.data if _is_tensor(pivots) else pivots)
    m, k = lu_shape[-2], min(lu_shape[-2:])
    if data.dtype.kind not in "iu":
        raise TypeError(f"{op}: pivots must be integers (int32, as lu_factor gives them), got dtype {data.dtype}")
    wanted = tuple(lu_shape[:-2]) + (k,)
    if broadcast and tuple(data.shape) != wanted and _broadcasts_to(data.shape, wanted):
        data = backend.xp.broadcast_to(data, wanted)
    if tuple(data.shape) != wanted:
        also = " (or batch axes that broadcast to LU's)" if broadcast else ""
        raise ShapeError(f"{op}: LU of shape {lu_shape} needs pivots of shape {wanted}, got {tuple(data.shape)}{also}")
    if data.size and (bool(backend.xp.any(data < 1)) or bool(backend.xp.any(data > m))):
        raise ValueError(f"{op}: pivots must lie in 1..{m} (1-based row numbers), got values from "
                         f"{int(data.min())} to {int(data.max())}")
    return data


def _broadcasts_to(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """Whether an array of ``shape`` broadcasts to ``target`` (``target`` unchanged by it)."""
    try:
        return numpy.broadcast_shapes(tuple(shape), target) == target
    except ValueError:
        return False


# -- LU factorization -------------------------------------------------------------------------
def _getrf(a):
    """(LU, pivots (1-based int32), info) of each matrix of ``a`` by LAPACK's getrf; info is 0, or
    the 1-based index of the first zero on U's diagonal."""
    from scipy.linalg import lapack  # SciPy loads on first use, not with lamina

    host = numpy.ascontiguousarray(backend.to_numpy(a))
    batch, (m, n) = host.shape[:-2], host.shape[-2:]
    if host.size == 0:
        pivots = numpy.broadcast_to(numpy.arange(1, min(m, n) + 1, dtype=numpy.int32), batch + (min(m, n),))
        return host.copy(), pivots.copy(), numpy.zeros(batch, numpy.int32)
    lu, pivots, info = _per_matrix(lapack.get_lapack_funcs("getrf", (host,)), host)
    return lu, (pivots + 1).astype(numpy.int32), numpy.maximum(info, 0).astype(numpy.int32)


def _unit_lower(lu):
    """L (..., m, k) from the packed LU: its strict lower part with ones on the diagonal."""
    m, n = lu.shape[-2:]
    eye = backend.xp.eye(m, min(m, n), dtype=lu.dtype)
    return _lower(lu[..., :min(m, n)], -1) + _constant_like(eye, lu)


def _lu_factor_gradient(lu, p, g):
    """dJ/dA for A = P L U from dJ/dLU = G (gL = G[..., :k], gU = G[..., :k, :]; the entries L and U
    fix are not read), as torch's rule: for square A,
    P L^-T [tril(L^T gL, -1) + triu(gU U^T)] U^-T;
    for m < n, U = [U1 | U2]: P L^-T [tril(L^T gL - triu(gU) U^T, -1) U1^-T + triu(gU1) | gU2];
    for m > n, L = [L1; L2]: P [L1^-T triu(gU U^T - L^T tril(gL, -1)) + tril(gL1, -1); gL2] U^-T."""
    m, n = lu.shape[-2:]
    k = min(m, n)
    lower, upper = _unit_lower(lu), _upper(lu[..., :k, :])
    gl, gu = g[..., :k], g[..., :k, :]
    square = lu[..., :k, :k]
    if m == n:
        inner = _lower(mT(lower) @ gl, -1) + _upper(gu @ mT(upper))
        inner = _tri_solve(square, inner, upper=True, transpose=True, left=False)
        ga = _tri_solve(square, inner, upper=False, transpose=True, unit=True)
    elif m < n:
        inner = _lower(mT(lower) @ gl - _upper(gu) @ mT(upper), -1)
        inner = _tri_solve(square, inner, upper=True, transpose=True, left=False) + _upper(gu[..., :k])
        ga = _tri_solve(square, _join([inner, gu[..., k:]], axis=-1), upper=False, transpose=True, unit=True)
    else:
        inner = _upper(gu @ mT(upper) - mT(lower) @ _lower(gl, -1))
        inner = _tri_solve(square, inner, upper=False, transpose=True, unit=True) + _lower(gl[..., :k, :], -1)
        ga = _tri_solve(square, _join([inner, gl[..., k:, :]], axis=-2), upper=True, transpose=True, left=False)
    return _constant_like(p, ga) @ ga


class LuFactor(Function):
    """The packed LU (..., m, n) of A = P L U, factored beforehand (``lu`` and its ``pivots`` are
    given to the node); the gradient needs U's diagonal nonzero."""

    def forward(self, a):
        return self.lu

    def _p(self):
        return _permutation_matrix(_permutation(self.pivots, self.lu.shape[-2]), self.lu.dtype)

    def backward(self, dy):
        return (_lu_factor_gradient(self.lu, self._p(), dy).astype(dy.dtype, copy=False),)

    def backward_graph(self, dy):
        return (_lu_factor_gradient(self.recorded_output(self.lu), self._p(), dy),)


def _raise_on_failure(op: str, info, shape) -> None:
    """A LinAlgError naming ``op``, the first matrix whose U has a zero on its diagonal and where."""
    failed = numpy.flatnonzero(backend.to_numpy(info).reshape(-1))
    if failed.size:
        where = batch_index(int(failed[0]), shape)
        at = f" at batch index {where}" if where else ""
        entry = int(backend.to_numpy(info).reshape(-1)[failed[0]])
        raise numpy.linalg.LinAlgError(
            f"{op}: U[{entry},{entry}] of the matrix{at} of the input of shape {shape} is zero (the matrix is "
            "singular), so solving with it would divide by zero; expected an invertible matrix (lu_factor_ex "
            "without check_errors, and lu, factor it anyway)")


def _check_pivot(op: str, pivot) -> None:
    if not pivot:
        raise NotImplementedError(f"{op}: pivot=False (LU without pivoting) is not supported, as on torch's CPU; "
                                  "use pivot=True")


def lu_factor_ex(a, *, pivot: bool = True, check_errors: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """(LU, pivots, info) of A (..., m, n) = P L U by partial pivoting, as torch.linalg.lu_factor_ex:
    LU packs L (unit lower, below the diagonal) and U (on and above it), pivots (..., min(m, n)) are
    LAPACK's 1-based row swaps (int32), and info (...) is 0, or i where U[i, i] (1-based) is zero;
    with ``check_errors`` such a matrix raises. Gradients flow through LU (U's diagonal nonzero)."""
    return _lu_factor("lu_factor_ex", a, pivot, check_errors)


def _lu_factor(op: str, a, pivot: bool, check_errors: bool) -> tuple[Tensor, Tensor, Tensor]:
    _check_pivot(op, pivot)
    a = _as_tensor(a)
    check_matrix(op, a.shape, square=False)
    if a.dtype.kind != "f":
        raise TypeError(f"{op}: expected a floating-point matrix, got dtype {a.dtype}")
    packed, pivots, info = _getrf(a.data)
    if check_errors:
        _raise_on_failure(op, info, a.shape)
    xp = backend.xp
    lu = LuFactor.apply(a, lu=xp.asarray(packed.astype(a.dtype, copy=False)), pivots=xp.asarray(pivots))
    return lu, Tensor._wrap(xp.asarray(pivots)), Tensor._wrap(xp.asarray(info))


def lu_factor(a, *, pivot: bool = True) -> tuple[Tensor, Tensor]:
    """(LU, pivots) as torch.linalg.lu_factor: :func:`lu_factor_ex`, raising a LinAlgError that names
    the zero on U's diagonal when A is singular."""
    return _lu_factor("lu_factor", a, pivot, check_errors=True)[:2]


def lu_unpack(lu, pivots, unpack_data: bool = True, unpack_pivots: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """(P, L, U) from the packed LU (..., m, n) and its pivots, as torch.lu_unpack: P (..., m, m),
    L = tril(LU[..., :k], -1) + I (..., m, k), U = triu(LU[..., :k, :]) (..., k, n), k = min(m, n);
    the parts not asked for are empty. L and U carry gradients to LU; P is a constant."""
    lu = _as_tensor(lu)
    check_matrix("lu_unpack", lu.shape, square=False)
    pivots = _check_pivots("lu_unpack", pivots, tuple(lu.shape), broadcast=True)
    xp = backend.xp
    empty = Tensor._wrap(xp.zeros((0,), dtype=lu.dtype))
    p = empty
    if unpack_pivots:
        p = Tensor._wrap(_permutation_matrix(_permutation(pivots, lu.shape[-2]), lu.dtype))
    if not unpack_data:
        return p, empty, empty
    k = min(lu.shape[-2:])
    return p, _unit_lower(lu), triu(lu[..., :k, :])


def lu(a, *, pivot: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """(P, L, U) with A = P L U, A (..., m, n), by partial pivoting, as torch.linalg.lu: P (..., m, m)
    a permutation (a constant), L (..., m, k) unit lower triangular, U (..., k, n) upper triangular,
    k = min(m, n). A singular A is factored without error; the gradient (through L and U) needs U's
    diagonal nonzero."""
    packed, pivots, _ = _lu_factor("lu", a, pivot, check_errors=False)
    return lu_unpack(packed, pivots)


# -- solves with the factors ------------------------------------------------------------------
def _lu_solve(lu, perm, b, left: bool, adjoint: bool):
    """X with op(A) X = B (``left``) or X op(A) = B, op(A) = A^T when ``adjoint``, A = P L U, on
    arrays: L U X = P^T B by two triangular solves (U^T L^T P^T X = B for the adjoint)."""
    if not left:
        return mT(_lu_solve(lu, perm, mT(b), True, not adjoint))
    if not adjoint:
        y = triangular_solve(lu, _rows(b, perm), lower=True, unit=True, op="lu_solve")
        return triangular_solve(lu, y, lower=False, op="lu_solve")
    y = triangular_solve(lu, b, lower=False, transpose=True, op="lu_solve")
    y = triangular_solve(lu, y, lower=True, transpose=True, unit=True, op="lu_solve")
    return _rows(y, backend.xp.argsort(perm, axis=-1))


def _lu_solve_gradients(lu, p, x, gx, gb, left: bool, adjoint: bool):
    """dJ/dLU from X, G = dJ/dX and dJ/dB = op(A)^-T G (or G op(A)^-T): the gradient of the
    unfactored A, gA = -gB X^T (left), -X gB^T (left, adjoint), -X^T gB (right), -gB^T X (right,
    adjoint), taken through A = P L U: tril(P^T gA U^T, -1) + triu(L^T P^T gA)."""
    if left:
        ga = -(x @ mT(gb)) if adjoint else -(gb @ mT(x))
    else:
        ga = -(mT(gb) @ x) if adjoint else -(mT(x) @ gb)
    pga = mT(_constant_like(p, ga)) @ ga
    return _lower(pga @ mT(_upper(lu)), -1) + _upper(mT(_unit_lower(lu)) @ pga)


class LuSolve(Function):
    """X with op(A) X = B or X op(A) = B for A = P L U given as (LU, pivots); batch axes broadcast.
    dJ/dB is the solve with op(A)^T, and dJ/dLU the rule of :func:`_lu_solve_gradients`."""

    def forward(self, lu, b):
        self.lu, self.shapes = lu, (lu.shape, b.shape)
        self.perm = _permutation(backend.xp.asarray(self.pivots), lu.shape[-1])
        self.x = _lu_solve(lu, self.perm, b, self.left, self.adjoint).astype(numpy.result_type(lu, b), copy=False)
        return self.x

    def _p(self):
        return _permutation_matrix(self.perm, self.lu.dtype)

    def backward(self, dy):
        gb = _lu_solve(self.lu, self.perm, dy, self.left, not self.adjoint).astype(dy.dtype, copy=False)
        glu = None
        if self.needs_grad[0]:
            glu = unbroadcast(_lu_solve_gradients(self.lu, self._p(), self.x, dy, gb, self.left, self.adjoint),
                              self.shapes[0])
        return glu, unbroadcast(gb, self.shapes[1]) if self.needs_grad[1] else None

    def backward_graph(self, dy):
        lu, b = self.inputs
        gb = LuSolve.apply(lu, dy, pivots=self.pivots, left=self.left, adjoint=not self.adjoint)
        glu = None
        if self.needs_grad[0]:
            x = self.recorded_output(self.x)
            glu = sum_to(_lu_solve_gradients(lu, self._p(), x, dy, gb, self.left, self.adjoint), lu.shape)
        return glu, sum_to(gb, b.shape) if self.needs_grad[1] else None


def lu_solve(lu, pivots, b, *, left: bool = True, adjoint: bool = False) -> Tensor:
    """X with A X = B, as torch.linalg.lu_solve, for A = P L U given by :func:`lu_factor` (LU
    (..., n, n) and its pivots) and B (..., n, k); ``adjoint`` solves A^T X = B, ``left=False``
    X A = B (B (..., k, n)). Batch axes of LU and B broadcast. Gradients flow to B and to LU. A zero
    on U's diagonal raises a LinAlgError (torch returns inf there)."""
    lu, b = _as_tensor(lu), _as_tensor(b)
    check_matrix("lu_solve", lu.shape)
    pivots = _check_pivots("lu_solve", pivots, tuple(lu.shape))
    check_matrix("lu_solve", b.shape, square=False)
    n = lu.shape[-1]
    if (b.shape[-2] if left else b.shape[-1]) != n:
        wanted = f"(..., {n}, k)" if left else f"(..., k, {n})"
        raise ShapeError(f"lu_solve: LU of shape {lu.shape} needs B of shape {wanted} (left={left}), "
                         f"got B of shape {b.shape}")
    try:
        numpy.broadcast_shapes(lu.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ShapeError(f"lu_solve: the batch axes of LU {lu.shape[:-2]} and B {b.shape[:-2]} do not "
                         "broadcast") from None
    return LuSolve.apply(lu, b, pivots=pivots, left=bool(left), adjoint=bool(adjoint))


# -- Householder products ---------------------------------------------------------------------
def _reflectors(a, k: int):
    """V (..., m, k): column i is v_i, zero above row i, 1 at row i, A[i+1:, i] below."""
    m = a.shape[-2]
    return _lower(a[..., :k], -1) + _constant_like(backend.xp.eye(m, k, dtype=a.dtype), a)


def _tau_column(tau, i: int):
    """tau_i (..., 1, 1), to scale the matrices of a batch."""
    t = tau[..., i:i + 1]
    return expand_dims(t, -1) if _is_tensor(t) else t[..., None]


def _householder(a, tau, keep: bool = False):
    """Q = H_1 H_2 ... H_k I[:, :n] with H_i = I - tau_i v_i v_i^T, applied right to left on arrays
    or tensors; with ``keep``, also the partial products R_i = H_i ... H_k I[:, :n] (R_{k+1} first)."""
    m, n = a.shape[-2:]
    k = tau.shape[-1]
    v = _reflectors(a, k)
    eye = backend.xp.broadcast_to(backend.xp.eye(m, n, dtype=a.dtype), a.shape)
    q, kept = _constant_like(eye, a), []
    for i in reversed(range(k)):
        kept.append(q)
        vi = v[..., i:i + 1]
        q = q - vi @ (_tau_column(tau, i) * (mT(vi) @ q))
    return (q, v, kept[::-1]) if keep else q


class HouseholderProduct(Function):
    """Q = H_1 ... H_k I[:, :n], H_i = I - tau_i v_i v_i^T. Backward through each H_i in turn, with
    Y = H_i R and gY = dJ/dY: gR = H_i gY, g tau_i = -(v_i^T gY R^T v_i),
    g v_i = -tau_i (gY R^T v_i + R gY^T v_i), whose entries below row i are dJ/dA[i+1:, i]."""

    def forward(self, a, tau):
        self.tau, self.a_shape = tau, a.shape
        q, self.v, self.partial = _householder(a, tau, keep=True)
        return q

    def backward(self, dy):
        xp = backend.xp
        g, v, tau = dy, self.v, self.tau
        ga, gtau = xp.zeros(self.a_shape, dtype=dy.dtype), xp.zeros(tau.shape, dtype=dy.dtype)
        for i in range(tau.shape[-1]):
            vi, r, t = v[..., i:i + 1], self.partial[i], tau[..., i, None, None]
            rv, gv_ = mT(r) @ vi, mT(g) @ vi                       # R^T v, gY^T v
            gtau[..., i] = -(mT(gv_) @ rv)[..., 0, 0]
            ga[..., i + 1:, i] = -(t * (g @ rv + r @ gv_))[..., i + 1:, 0]
            g = g - vi @ (t * mT(gv_))
        return ga, gtau

    def composite(self, a, tau):
        return _householder(a, tau)

    backward_graph = Function.composite_backward_graph


def householder_product(a, tau) -> Tensor:
    """Q (..., m, n), the first n columns of H_1 H_2 ... H_k with H_i = I - tau_i v_i v_i^T, v_i
    read from column i of A (..., m, n) below the diagonal (with v_i[i] = 1 and zeros above), as
    torch.linalg.householder_product (LAPACK's orgqr); m >= n >= k for tau (..., k), whose batch
    axes are those of A. Gradients flow to A's strict lower part and to tau."""
    a, tau = _as_tensor(a), _as_tensor(tau)
    check_matrix("householder_product", a.shape, square=False)
    m, n = a.shape[-2:]
    if tau.ndim < 1 or tuple(tau.shape[:-1]) != tuple(a.shape[:-2]):
        raise ShapeError(f"householder_product: tau must have shape {tuple(a.shape[:-2])} + (k,) (A's batch axes), "
                         f"got {tuple(tau.shape)} for A of shape {tuple(a.shape)}")
    if not m >= n >= tau.shape[-1]:
        raise ShapeError(f"householder_product: expected m >= n >= k for A (..., m, n) of shape {tuple(a.shape)} and "
                         f"tau (..., k) of shape {tuple(tau.shape)}")
    return HouseholderProduct.apply(a, tau)


# -- symmetric indefinite factorization (LDL^T) ------------------------------------------------
class Undifferentiable(Function):
    """An output computed beforehand (``value``) whose op has no gradient, as in torch: backward
    raises instead of giving a silent zero."""

    def forward(self, *inputs):
        return self.value

    def backward(self, dy):
        raise RuntimeError(f"{self.op}: no gradient is defined (torch.linalg.{self.op} has none either); "
                           "detach its inputs, or use lu_factor / lu_solve or solve, which have gradients")


def _sytrf(a):
    """(LD, pivots, info) of each symmetric matrix of ``a`` (its lower triangle read) by LAPACK's
    sytrf (Bunch-Kaufman): A = P L D L^T P^T, L unit lower triangular (below LD's diagonal), D block
    diagonal with 1 x 1 and 2 x 2 blocks (on and next to it); pivots are LAPACK's (1-based; a pair of
    equal negative values marks a 2 x 2 block); info is 0, or i where D[i, i] (1-based) is zero."""
    from scipy.linalg import lapack

    host = numpy.ascontiguousarray(backend.to_numpy(a))
    n = host.shape[-1]
    if host.size == 0:
        batch = host.shape[:-2]
        return host.copy(), numpy.zeros(batch + (n,), numpy.int32), numpy.zeros(batch, numpy.int32)
    sytrf = lapack.get_lapack_funcs("sytrf", (host,))
    ld, pivots, info = _per_matrix(lambda m: sytrf(m, lower=1), host)
    return numpy.tril(ld), pivots.astype(numpy.int32), numpy.maximum(info, 0).astype(numpy.int32)


def _check_square_float(op: str, a: Tensor) -> None:
    check_matrix(op, a.shape)
    if a.dtype.kind != "f":
        raise TypeError(f"{op}: expected a floating-point matrix, got dtype {a.dtype}")


def ldl_factor_ex(a, *, hermitian: bool = False, check_errors: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """(LD, pivots, info) of symmetric A (..., n, n) (its lower triangle read) = P L D L^T P^T, as
    torch.linalg.ldl_factor_ex: LD holds L below the diagonal and the blocks of D on and next to
    it, pivots (..., n) are LAPACK's sytrf pivots (int32), info is 0, or i where D[i, i] (1-based)
    is zero; with ``check_errors`` such a matrix raises. ``hermitian`` is the same as symmetric for
    real A. No gradient, as torch."""
    return _ldl_factor("ldl_factor_ex", a, check_errors)


def _ldl_factor(op: str, a, check_errors: bool) -> tuple[Tensor, Tensor, Tensor]:
    a = _as_tensor(a)
    _check_square_float(op, a)
    ld, pivots, info = _sytrf(a.data)
    if check_errors:
        _raise_on_zero_block(op, info, a.shape)
    xp = backend.xp
    ld = Undifferentiable.apply(a, value=xp.asarray(ld.astype(a.dtype, copy=False)), op="ldl_factor")
    return ld, Tensor._wrap(xp.asarray(pivots)), Tensor._wrap(xp.asarray(info))


def _raise_on_zero_block(op: str, info, shape) -> None:
    flat = numpy.asarray(backend.to_numpy(info)).reshape(-1)
    failed = numpy.flatnonzero(flat)
    if failed.size:
        where = batch_index(int(failed[0]), shape)
        at = f" at batch index {where}" if where else ""
        raise numpy.linalg.LinAlgError(
            f"{op}: D[{flat[failed[0]]},{flat[failed[0]]}] of the matrix{at} of the input of shape {shape} is zero "
            "(the matrix is singular); expected an invertible symmetric matrix (ldl_factor_ex without "
            "check_errors reports this in info instead)")


def ldl_factor(a, *, hermitian: bool = False) -> tuple[Tensor, Tensor]:
    """(LD, pivots) as torch.linalg.ldl_factor: :func:`ldl_factor_ex`, raising a LinAlgError that
    names the zero of D when A is singular."""
    return _ldl_factor("ldl_factor", a, check_errors=True)[:2]


def ldl_solve(ld, pivots, b, *, hermitian: bool = False) -> Tensor:
    """X with A X = B for A = P L D L^T P^T given by :func:`ldl_factor` (LD (..., n, n), pivots) and
    B (..., n, k), as torch.linalg.ldl_solve (LAPACK's sytrs); batch axes broadcast. No gradient,
    as torch."""
    ld, b = _as_tensor(ld), _as_tensor(b)
    _check_square_float("ldl_solve", ld)
    n = ld.shape[-1]
    data = backend.xp.asarray(pivots.data if _is_tensor(pivots) else pivots)
    if data.dtype.kind not in "iu" or tuple(data.shape) != tuple(ld.shape[:-1]):
        raise ShapeError(f"ldl_solve: LD of shape {ld.shape} needs integer pivots of shape {tuple(ld.shape[:-1])}, "
                         f"got {data.dtype} of shape {tuple(data.shape)}")
    if data.size and (bool(backend.xp.any(data == 0)) or bool(backend.xp.any(abs(data) > n))):
        raise ValueError(f"ldl_solve: pivots must be nonzero with |pivot| <= {n} (LAPACK's sytrf pivots)")
    if b.ndim < 2 or b.shape[-2] != n:
        raise ShapeError(f"ldl_solve: LD of shape {ld.shape} needs B of shape (..., {n}, k), got B of shape {b.shape}")
    try:
        batch = numpy.broadcast_shapes(ld.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ShapeError(f"ldl_solve: the batch axes of LD {ld.shape[:-2]} and B {b.shape[:-2]} do not "
                         "broadcast") from None
    from scipy.linalg import lapack

    dtype = numpy.result_type(ld.dtype, b.dtype)
    host_ld = numpy.broadcast_to(backend.to_numpy(ld.data).astype(dtype), batch + (n, n))
    host_p = numpy.broadcast_to(backend.to_numpy(data), batch + (n,))
    host_b = numpy.broadcast_to(backend.to_numpy(b.data).astype(dtype), batch + b.shape[-2:])
    if host_b.size == 0:
        x = host_b.copy()
    else:
        sytrs = lapack.get_lapack_funcs("sytrs", (host_b,))
        x, _ = _per_matrix(lambda m, p, r: sytrs(m, p[:, 0], r, lower=1), host_ld, host_p[..., None], host_b)
    return Undifferentiable.apply(ld, b, value=backend.xp.asarray(x), op="ldl_solve")


__all__ = ["householder_product", "ldl_factor", "ldl_factor_ex", "ldl_solve", "lu", "lu_factor", "lu_factor_ex",
           "lu_solve", "lu_unpack"]
