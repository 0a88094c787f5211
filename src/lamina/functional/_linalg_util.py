"""Array-level helpers shared by the linear-algebra ops: shape checks, LAPACK failures
reported with the batch index of the failing matrix, a batched triangular solve, and the
packing of several results into one array (an op has one output)."""

from __future__ import annotations

import contextlib
import math

import numpy

from lamina import backend, parallel
from lamina.errors import ShapeError


def mT(a):
    """The matrix transpose of the last two axes (an array or a tensor)."""
    return a.swapaxes(-1, -2)


def check_matrix(op: str, shape: tuple[int, ...], square: bool = True) -> None:
    """Raise a ShapeError unless ``shape`` is (..., n, n) (or (..., m, n) when not ``square``)."""
    if len(shape) < 2:
        raise ShapeError(f"{op}: expected a matrix or a batch of matrices (..., m, n), got shape {shape}")
    if square and shape[-1] != shape[-2]:
        raise ShapeError(f"{op}: expected square matrices (..., n, n), got shape {shape}")


def batch_index(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The batch index (over all axes but the last two) of matrix number ``flat``."""
    return tuple(int(i) for i in numpy.unravel_index(flat, shape[:-2])) if len(shape) > 2 else ()


def first_failure(test, a) -> tuple[int, ...] | None:
    """The batch index of the first matrix of ``a`` on which ``test`` raises LinAlgError."""
    for k, matrix in enumerate(a.reshape((-1,) + a.shape[-2:])):
        try:
            test(matrix)
        except numpy.linalg.LinAlgError:
            return batch_index(k, a.shape)
    return None


SMALL_MATRIX = 128
"""Matrices with both sides below this are factored on one BLAS thread: LAPACK's threads on
a batch of small matrices mostly wait on each other (eigh of 64 matrices 32x32 took 45 ms on
two threads against 8 ms on one, measured on 2 cores)."""


def lapack_threads(shape: tuple[int, ...]):
    """The thread setting for LAPACK calls on matrices of ``shape``: one thread when small."""
    return parallel.one_blas_thread() if max(shape[-2:], default=0) < SMALL_MATRIX else contextlib.nullcontext()


def run_checked(op: str, compute, a, problem: str, expected: str, test=None):
    """``compute()`` (on one BLAS thread for small matrices); a LAPACK failure is raised again
    as a LinAlgError naming ``op``, the shape of ``a``, the batch index of the first failing
    matrix (found with ``test``, by default ``compute``'s own routine on one matrix) and what
    was expected."""
    try:
        with lapack_threads(a.shape):
            return compute()
    except numpy.linalg.LinAlgError:
        where = first_failure(test or numpy.linalg.inv, backend.to_numpy(a))
        at = f" at batch index {where}" if where else ""
        raise numpy.linalg.LinAlgError(
            f"{op}: the matrix{at} of the input of shape {a.shape} is {problem}; expected {expected}") from None


def singular_check(op: str, compute, a):
    """:func:`run_checked` for ops that need an invertible matrix."""
    return run_checked(op, compute, a, "singular", "an invertible matrix")


def triangular_solve(a, b, lower: bool, transpose: bool = False, unit: bool = False, op: str = "solve_triangular"):
    """X with op(A) X = B for triangular A (only its ``lower`` or upper triangle is read; a
    ``unit`` diagonal is taken as ones; op(A) = A^T when ``transpose``), batched and
    broadcast over the leading axes; one BLAS trsm call per matrix, on one thread."""
    a_host, b_host = backend.to_numpy(a), backend.to_numpy(b)
    if not unit:
        zero = numpy.diagonal(a_host, axis1=-2, axis2=-1) == 0
        if zero.any():
            where = numpy.argwhere(zero)[0]
            raise numpy.linalg.LinAlgError(
                f"{op}: the triangular matrix at batch index {tuple(int(i) for i in where[:-1])} of the input of "
                f"shape {a_host.shape} has a zero on its diagonal (entry {int(where[-1])}); expected a nonzero "
                "diagonal")
    batch = numpy.broadcast_shapes(a_host.shape[:-2], b_host.shape[:-2])
    dtype = numpy.result_type(a_host, b_host)
    from scipy.linalg import blas  # SciPy loads on first use, not with lamina

    trsm = blas.get_blas_funcs("trsm", (numpy.empty(0, dtype),))
    count = math.prod(batch)                         # not -1: a reshape cannot infer it when a size is 0
    flat_a = numpy.broadcast_to(a_host, batch + a_host.shape[-2:]).reshape((count,) + a_host.shape[-2:])
    flat_b = numpy.broadcast_to(b_host, batch + b_host.shape[-2:]).reshape((count,) + b_host.shape[-2:])
    out = numpy.empty(flat_b.shape, dtype=dtype)
    if out.size == 0:
        return backend.xp.asarray(out.reshape(batch + b_host.shape[-2:]))
    with parallel.one_blas_thread():  # BLAS threads on many small solves only wait on each other
        for k in range(out.shape[0]):
            out[k] = trsm(1.0, flat_a[k], flat_b[k], lower=int(lower), trans_a=int(transpose), diag=int(unit))
    return backend.xp.asarray(out.reshape(batch + b_host.shape[-2:]))


def pack(*arrays, batch: tuple[int, ...]):
    """Arrays that share the leading axes ``batch``, flattened and joined along one last axis."""
    cut = len(batch)
    return backend.xp.concatenate([x.reshape(batch + (math.prod(x.shape[cut:]),)) for x in arrays], axis=-1)


def unpack(packed, shapes):
    """The pieces of :func:`pack` (arrays or tensors), each reshaped to ``batch + shape``."""
    batch, start, pieces = packed.shape[:-1], 0, []
    for shape in shapes:
        size = math.prod(shape)
        pieces.append(packed[..., start:start + size].reshape(batch + tuple(shape)))
        start += size
    return pieces
