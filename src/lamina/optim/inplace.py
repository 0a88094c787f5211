"""In-place vector updates for the optimizers: y += a x and y *= a.

With NumPy, ``y += a * x`` is two passes and a temporary (a x, then the add); BLAS's axpy
does it in one pass, and its scal scales in place. On the momentum update of a 784 x 512
weight (v = beta v + g; w -= lr v) the BLAS form takes about 60% of NumPy's time on one
thread. SciPy's BLAS wrappers are used for C-contiguous float32/float64 arrays on the CPU;
anything else (other dtypes, strided arrays, CuPy) takes the plain array expression.

The optimizers make these calls on one BLAS thread (:class:`lamina.parallel.one_blas_thread`):
SciPy's BLAS may be a library of its own, and after a threaded call its threads spin for a
while on the cores that NumPy's matrix products need next (a threaded update made the MLP
training step four times slower).
"""

from __future__ import annotations

import numpy

from lamina import parallel

_routines: dict | None = None


def _blas_routines() -> dict:
    """{dtype char: (axpy, scal)}, loaded on first use (SciPy's linear algebra takes a
    quarter of a second to import, and may bring a BLAS library of its own: lamina's
    thread control is told to look again)."""
    global _routines
    if _routines is None:
        try:
            from scipy.linalg import blas
            _routines = {"f": (blas.saxpy, blas.sscal), "d": (blas.daxpy, blas.dscal)}
        except ImportError:
            _routines = {}
        parallel.find_blas_again()
    return _routines


def _flat(*arrays):
    """The 1-D views BLAS takes and the (axpy, scal) pair for their dtype, or None where one
    of the arrays cannot go to BLAS: not a NumPy array (CuPy's, a subclass), another dtype
    or shape than the first, not C-contiguous, or (the last, written one) read-only. Called
    for every update of every parameter: kept to plain attribute checks."""
    first = arrays[0]
    dtype, shape = first.dtype, first.shape
    for a in arrays:
        if type(a) is not numpy.ndarray or a.dtype != dtype or a.shape != shape or not a.flags.c_contiguous:
            return None
    if not arrays[-1].flags.writeable:
        return None
    routines = (_routines if _routines is not None else _blas_routines()).get(dtype.char)
    if routines is None:
        return None
    return routines, [a.ravel() for a in arrays]   # views: the arrays are C-contiguous


def axpy(alpha: float, x, y) -> None:
    """y += alpha x, in place (x broadcast to y's shape as NumPy would)."""
    found = _flat(x, y)
    if found is None:
        y += alpha * x
        return
    (blas_axpy, _), (fx, fy) = found
    blas_axpy(fx, fy, a=alpha)


def scale(alpha: float, y) -> None:
    """y *= alpha, in place."""
    found = _flat(y)
    if found is None:
        y *= alpha
        return
    (_, blas_scal), (fy,) = found
    blas_scal(alpha, fy)
