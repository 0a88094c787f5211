"""The rest of ``torch.linalg`` that is built from lamina's ops: vector and general norms, rank,
condition number, chained products, least squares, tensor inverses and solves, Vandermonde
matrices, and the ``*_ex`` forms that report failures instead of raising.

Each is a composite: its gradient (and its gradient's gradient) comes from the ops it is made of.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import numpy

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional._linalg_util import check_matrix
from lamina.functional.arithmetic import matmul
from lamina.functional.elementwise import abs as abs_
from lamina.functional.elementwise import minimum, where
from lamina.functional.linalg import _as_tensor, cholesky, inv, solve
from lamina.functional.linalg_decomp import matrix_norm, pinv, singular_value_cutoff, svdvals, tolerance
from lamina.functional.reduce import sum as sum_
from lamina.functional.reduce_more import cumprod
from lamina.functional.reduce_more import norm as vector_norm_12
from lamina.functional.shape import concat, expand_dims, reshape, stack, transpose
from lamina.functional.shape_parity import cross as cross_
from lamina.functional.stats_parity import amax, amin


def _axes(dim, ndim: int, op: str) -> tuple[int, ...]:
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, numbers.Integral) else tuple(dim)
    out = []
    for d in dims:
        if not isinstance(d, numbers.Integral) or isinstance(d, bool) or not -max(ndim, 1) <= d < max(ndim, 1):
            raise ValueError(f"{op}: dim {dim!r} is out of range for an input of {ndim} axes")
        out.append(int(d) % max(ndim, 1))
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: dim {dim!r} repeats an axis")
    return tuple(out)


def vector_norm(x, ord=2, dim=None, keepdim: bool = False) -> Tensor:  # noqa: A002 - torch's name
    """||x||_p over the axes ``dim`` (None or (): all of them, as one vector), as torch.linalg.vector_norm:
    (sum |x_i|^p)^(1/p) for any real p, max |x_i| for inf, min |x_i| for -inf, and the number of
    non-zero entries for 0 (its gradient is 0). As torch's, the gradient is 0 at zero entries
    and at a zero norm, and a negative p gives 0 (gradient 0) wherever an entry is 0."""
    x = _as_tensor(x)
    if not isinstance(ord, numbers.Real) or isinstance(ord, bool):
        raise ValueError(f"vector_norm: ord must be a real number (or inf / -inf), got {ord!r}")
    axes = _axes(None if dim == () else dim, x.ndim, "vector_norm") if x.ndim else None
    reduced = x.size if axes is None else math.prod(x.shape[a] for a in axes)
    if reduced == 0 and ord < 0:
        raise ValueError(f"vector_norm: ord {ord} over no values (input of shape {x.shape}, dim {dim!r}) is a "
                         "minimum of no values")
    if ord == math.inf:
        return amax(abs_(x), axis=axes, keepdims=keepdim) if reduced else sum_(abs_(x), axis=axes, keepdims=keepdim)
    if ord == -math.inf:
        return amin(abs_(x), axis=axes, keepdims=keepdim)
    if ord == 0:                                     # min(|x|, 0) keeps the count on the graph, with gradient 0
        finite = where(backend.xp.isnan(x.data), 0.0, x)
        counted = Tensor._wrap((x.data != 0).astype(x.dtype))
        return sum_(counted + minimum(abs_(finite), 0.0), axis=axes, keepdims=keepdim)
    if ord in (1, 2):
        return vector_norm_12(x, ord, axis=axes, keepdims=keepdim)
    size = abs_(x)
    zero = size.data == 0
    terms = where(zero, 0.0, where(zero, 1.0, size) ** float(ord))
    total = sum_(terms, axis=axes, keepdims=keepdim)
    if ord > 0:
        empty = total.data == 0
        return where(empty, 0.0, where(empty, 1.0, total) ** (1.0 / ord))
    any_zero = backend.xp.any(zero, axis=axes, keepdims=keepdim)
    return where(any_zero, 0.0, where(any_zero, 1.0, total) ** (1.0 / ord))


def norm(a, ord=None, dim=None, keepdim: bool = False) -> Tensor:  # noqa: A002 - torch's name
    """torch.linalg.norm: a vector norm over one axis (``dim`` an int), a matrix norm over two
    (``dim`` a pair), or, with ``dim`` None, the 2-norm of all entries when ``ord`` is None, else
    the vector norm of a 1-D input or the matrix norm of a 2-D one."""
    a = _as_tensor(a)
    if dim is None:
        if ord is None:
            return vector_norm(a, 2, None, keepdim)
        if a.ndim not in (1, 2):
            raise ValueError(f"norm: with ord={ord!r} and dim=None the input must be 1-D or 2-D, got shape {a.shape}")
        dim = (0,) if a.ndim == 1 else (0, 1)
    dims = (dim,) if isinstance(dim, numbers.Integral) else tuple(dim)
    if len(dims) == 1:
        return vector_norm(a, 2 if ord is None else ord, dims, keepdim)
    if len(dims) == 2:
        return matrix_norm(a, "fro" if ord is None else ord, dims, keepdim)
    raise ValueError(f"norm: dim must be an int or a pair of ints, got {dim!r}")


def matrix_rank(a, *, atol=None, rtol=None, hermitian: bool = False) -> Tensor:
    """The number of singular values (absolute eigenvalues when ``hermitian``) above
    max(atol, rtol sigma_max), as int64 (atol and rtol numbers, or Tensors with one per matrix;
    rtol defaults as in :func:`pinv`); not differentiable."""
    a = _as_tensor(a)
    check_matrix("matrix_rank", a.shape, square=hermitian)
    atol, rtol = tolerance("matrix_rank", "atol", atol), tolerance("matrix_rank", "rtol", rtol)
    xp = backend.xp
    if a.shape[-1] == 0 or a.shape[-2] == 0:
        return Tensor._wrap(xp.zeros(a.shape[:-2], dtype=xp.int64))
    values = xp.abs(xp.linalg.eigvalsh(a.data)) if hermitian else xp.linalg.svd(a.data, compute_uv=False)
    cutoff = singular_value_cutoff(values, a.shape, a.dtype, atol, rtol)
    return Tensor._wrap(xp.sum(values > cutoff, axis=-1).astype(xp.int64))


def cond(a, p=None) -> Tensor:
    """The condition number kappa(A): sigma_max / sigma_min for p None or 2 (sigma_min / sigma_max
    for -2; A may be rectangular), else ||A||_p ||A^-1||_p for square A (p 'fro', 'nuc', 1, -1,
    inf, -inf; inf for a singular A, and 0 for an empty one), as torch.linalg.cond."""
    a = _as_tensor(a)
    xp = backend.xp
    if p is None or p in (2, -2):
        check_matrix("cond", a.shape, square=False)
        if a.shape[-1] == 0 or a.shape[-2] == 0:
            return Tensor._wrap(xp.zeros(a.shape[:-2], dtype=a.dtype))
        values = svdvals(a)
        ratio = values[..., 0] / values[..., -1]
        return ratio if p != -2 else 1.0 / ratio
    check_matrix("cond", a.shape)
    if a.shape[-1] == 0:
        return Tensor._wrap(xp.zeros(a.shape[:-2], dtype=a.dtype))
    inverse, info = inv_ex(a)
    singular = info.data != 0
    if not xp.any(singular):
        return matrix_norm(a, p) * matrix_norm(inverse, p)
    safe = where(singular[..., None, None], Tensor._wrap(xp.eye(a.shape[-1], dtype=a.dtype)), inverse)
    return where(singular, xp.inf, matrix_norm(a, p) * matrix_norm(safe, p))


def multi_dot(tensors) -> Tensor:
    """A_1 A_2 ... A_k multiplied in the order that needs the fewest multiplications (the
    classic dynamic programme over the chain); the first may be a vector (a row) and the last
    a vector (a column), as torch.linalg.multi_dot."""
    mats = [_as_tensor(t) for t in tensors]
    if len(mats) < 2:
        raise ValueError(f"multi_dot: expected at least two tensors, got {len(mats)}")
    first_vector, last_vector = mats[0].ndim == 1, mats[-1].ndim == 1
    if first_vector:
        mats[0] = expand_dims(mats[0], 0)
    if last_vector:
        mats[-1] = expand_dims(mats[-1], -1)
    for i, m in enumerate(mats):
        if m.ndim != 2:
            raise ShapeError(f"multi_dot: tensor {i} must be 2-D (the first and last may be 1-D), got shape {m.shape}")
    for i in range(len(mats) - 1):
        if mats[i].shape[1] != mats[i + 1].shape[0]:
            raise ShapeError(f"multi_dot: tensor {i} of shape {tuple(mats[i].shape)} cannot multiply tensor "
                             f"{i + 1} of shape {tuple(mats[i + 1].shape)}")
    sizes = [mats[0].shape[0]] + [m.shape[1] for m in mats]
    split = _chain_order(sizes)

    def product(i: int, j: int) -> Tensor:
        if i == j:
            return mats[i]
        k = split[i][j]
        return matmul(product(i, k), product(k + 1, j))

    out = product(0, len(mats) - 1)
    if first_vector:
        out = out[0]
    if last_vector:
        out = out[..., 0]
    return out


def _chain_order(sizes: list[int]) -> list[list[int]]:
    """split[i][j]: where the cheapest product of matrices i..j splits (matrix m is sizes[m] x sizes[m+1])."""
    n = len(sizes) - 1
    cost = [[0] * n for _ in range(n)]
    split = [[0] * n for _ in range(n)]
    for length in range(1, n):
        for i in range(n - length):
            j = i + length
            best = None
            for k in range(i, j):
                c = cost[i][k] + cost[k + 1][j] + sizes[i] * sizes[k + 1] * sizes[j + 1]
                if best is None or c < best:
                    best, split[i][j] = c, k
            cost[i][j] = best
    return split


def vecdot(x, y, dim: int = -1) -> Tensor:
    """sum_i x_i y_i along ``dim``, with broadcasting (real inputs), as torch.linalg.vecdot."""
    return sum_(_as_tensor(x) * _as_tensor(y), axis=dim)


class LstsqResult(NamedTuple):
    solution: Tensor
    residuals: Tensor
    rank: Tensor
    singular_values: Tensor


def lstsq(a, b, rcond: float | None = None, *, driver: str | None = None) -> LstsqResult:
    """min_X ||A X - B||_F for A (..., m, n) and B (..., m, k) (or (..., m)): X = A^+ B, with
    singular values at most rcond sigma_max dropped (default eps max(m, n)). Returns
    (solution, residuals, rank, singular_values) as torch's 'gelsd' driver: residuals, the squared
    column norms of A X - B, only when m > n and every A has full rank (else empty); a negative
    ``rcond`` means machine precision, as LAPACK's. Gradients
    flow through the solution (constant rank assumed)."""
    if driver not in (None, "gels", "gelsy", "gelsd", "gelss"):
        raise ValueError(f"lstsq: driver must be None, 'gels', 'gelsy', 'gelsd' or 'gelss', got {driver!r}")
    a, b = _as_tensor(a), _as_tensor(b)
    check_matrix("lstsq", a.shape, square=False)
    vector = b.ndim == a.ndim - 1
    bm = expand_dims(b, -1) if vector else b
    if bm.ndim < 2 or bm.shape[-2] != a.shape[-2]:
        raise ShapeError(f"lstsq: A of shape {a.shape} needs B of shape (..., {a.shape[-2]}, k) or "
                         f"(..., {a.shape[-2]}); got B of shape {b.shape}")
    if rcond is not None and rcond < 0:              # LAPACK's rule: machine precision
        rcond = float(backend.xp.finfo(a.dtype).eps)
    solution = matmul(pinv(a, rtol=rcond), bm)
    xp = backend.xp
    m, n = a.shape[-2], a.shape[-1]
    values = xp.linalg.svd(a.data, compute_uv=False) if m and n else xp.zeros(a.shape[:-2] + (0,), a.dtype)
    rank = xp.sum(values > singular_value_cutoff(values, a.shape, a.dtype, None, rcond), axis=-1).astype(xp.int64)
    if m > n and bool(xp.all(rank == n)):
        residuals = sum_((matmul(a, solution) - bm) ** 2, axis=-2)      # (..., k), (..., 1) for a vector B
    else:
        residuals = Tensor._wrap(xp.zeros((0,), dtype=a.dtype))
    if vector:
        solution = solution[..., 0]
    return LstsqResult(solution, residuals, Tensor._wrap(rank), Tensor._wrap(values))


def tensorinv(a, ind: int = 2) -> Tensor:
    """The inverse of A seen as a map from its last axes to its first ``ind`` ones:
    tensordot(tensorinv(A), A, ind) is the identity, as torch.linalg.tensorinv."""
    a = _as_tensor(a)
    if not isinstance(ind, numbers.Integral) or isinstance(ind, bool) or ind <= 0:
        raise ValueError(f"tensorinv: ind must be a positive integer, got {ind!r}")
    rows, columns = a.shape[:ind], a.shape[ind:]
    if math.prod(rows) != math.prod(columns):
        raise ShapeError(f"tensorinv: A of shape {a.shape} with ind={ind} is not square: the product of "
                         f"{rows} must equal that of {columns}")
    return reshape(inv(reshape(a, math.prod(rows), math.prod(columns))), *(columns + rows))


def tensorsolve(a, b, dims=None) -> Tensor:
    """X with tensordot(A, X, X.ndim) = B, as torch.linalg.tensorsolve; ``dims`` are axes of A
    moved to its end first."""
    a, b = _as_tensor(a), _as_tensor(b)
    if dims is not None:
        moved = _axes(dims, a.ndim, "tensorsolve")
        a = transpose(a, *[d for d in range(a.ndim) if d not in moved], *moved)
    rest = a.shape[b.ndim:]
    if tuple(a.shape[:b.ndim]) != tuple(b.shape) or math.prod(rest) != b.size:
        raise ShapeError(f"tensorsolve: A of shape {a.shape} must start with B's shape {b.shape} and its other "
                         f"axes must hold as many entries as B")
    x = solve(reshape(a, b.size, math.prod(rest)), reshape(b, b.size))
    return reshape(x, *rest)


def vander(x, N: int | None = None) -> Tensor:  # noqa: N803 - torch's name
    """The Vandermonde matrix (..., n, N) with columns x^0, x^1, ..., x^(N-1) (increasing powers,
    as torch.linalg.vander; N defaults to n), built by running products so that the gradient at
    x = 0 is exact."""
    x = _as_tensor(x)
    if x.ndim == 0:
        raise ShapeError("vander: x must have at least one axis, got a scalar")
    n = x.shape[-1] if N is None else N
    if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 0:
        raise ValueError(f"vander: N must be an integer >= 0, got {N!r}")
    columns = expand_dims(x, -1)
    ones = Tensor._wrap(backend.xp.ones(x.shape + (1,), dtype=x.dtype))
    if n <= 1:
        return ones[..., :n]
    powers = cumprod(concat([columns] * (n - 1), axis=-1), axis=-1)
    return concat([ones, powers], axis=-1)


def cross(a, b, dim: int = -1) -> Tensor:
    """The cross product of 3-vectors along ``dim``, with broadcasting, as torch.linalg.cross."""
    return cross_(_as_tensor(a), _as_tensor(b), axis=dim)


def _batch_info(op: str, compute, a: Tensor, shape_of_result) -> tuple[Tensor, Tensor]:
    """(result, info) for the ``*_ex`` forms: ``compute(a)`` when it succeeds (info all 0), else
    each failing matrix's result filled with NaN and its info set to 1, the others computed alone."""
    xp = backend.xp
    batch = a.shape[:-2]
    try:
        return compute(a), Tensor._wrap(xp.zeros(batch, dtype=xp.int32))
    except numpy.linalg.LinAlgError:
        pass
    flat = reshape(a, -1, *a.shape[-2:])
    results, info = [], xp.zeros(flat.shape[0], dtype=xp.int32)
    for i in range(flat.shape[0]):
        try:
            results.append(compute(flat[i]))
        except numpy.linalg.LinAlgError:
            info[i] = 1
            results.append(Tensor._wrap(xp.full(shape_of_result(flat[i]), xp.nan, dtype=a.dtype)))
    out = stack(results, axis=0)
    return reshape(out, *batch, *out.shape[1:]), Tensor._wrap(info.reshape(batch))


def inv_ex(a, *, check_errors: bool = False) -> tuple[Tensor, Tensor]:
    """(A^-1, info) as torch.linalg.inv_ex: info is 0 where A is invertible and non-zero where
    it is singular (that inverse is NaN); with ``check_errors`` a singular A raises."""
    a = _as_tensor(a)
    check_matrix("inv_ex", a.shape)
    if check_errors:
        return inv(a), Tensor._wrap(backend.xp.zeros(a.shape[:-2], dtype=backend.xp.int32))
    return _batch_info("inv_ex", inv, a, lambda m: m.shape)


def cholesky_ex(a, *, upper: bool = False, check_errors: bool = False) -> tuple[Tensor, Tensor]:
    """(L, info) as torch.linalg.cholesky_ex: info is 0 where A is positive definite and non-zero
    where it is not (that factor is NaN); with ``check_errors`` such an A raises."""
    a = _as_tensor(a)
    check_matrix("cholesky_ex", a.shape)
    if check_errors:
        return cholesky(a, upper=upper), Tensor._wrap(backend.xp.zeros(a.shape[:-2], dtype=backend.xp.int32))
    return _batch_info("cholesky_ex", lambda m: cholesky(m, upper=upper), a, lambda m: m.shape)


def solve_ex(a, b, *, left: bool = True, check_errors: bool = False) -> tuple[Tensor, Tensor]:
    """(X, info) as torch.linalg.solve_ex: X solves A X = B (X A = B without ``left``) where A
    is invertible, and info is non-zero (X NaN) where it is singular, for a single A; a batch of
    A is solved at once and raises on a singular one, as :func:`solve`."""
    a, b = _as_tensor(a), _as_tensor(b)
    check_matrix("solve_ex", a.shape)
    xp = backend.xp
    zero = Tensor._wrap(xp.zeros(a.shape[:-2], dtype=xp.int32))
    if check_errors or a.ndim > 2:
        return solve(a, b, left=left), zero
    try:
        return solve(a, b, left=left), zero
    except numpy.linalg.LinAlgError:
        out = solve(Tensor._wrap(xp.eye(a.shape[-1], dtype=a.dtype)), b, left=left)
        return Tensor._wrap(xp.full(out.shape, xp.nan, dtype=out.dtype)), Tensor._wrap(xp.ones((), dtype=xp.int32))


__all__ = ["LstsqResult", "cholesky_ex", "cond", "cross", "inv_ex", "lstsq", "matrix_rank", "multi_dot", "norm",
           "solve_ex", "tensorinv", "tensorsolve", "vander", "vecdot", "vector_norm"]
