"""Argument checks shared by the state-space and mixture models: shapes, probability vectors
and matrices, positive-definite covariances, each failure naming the caller and the value."""

from __future__ import annotations

import numpy

from lamina.errors import ShapeError

PROBABILITY_TOLERANCE = 1e-6


def as_float_array(name: str, value, ndim: int | tuple[int, ...], owner: str) -> numpy.ndarray:
    """``value`` as a float64 array of ``ndim`` axes (one of them when a tuple)."""
    array = numpy.asarray(value.numpy() if hasattr(value, "numpy") else value, dtype=numpy.float64)
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if array.ndim not in allowed:
        raise ShapeError(f"{owner}: {name} must have {' or '.join(map(str, allowed))} axes; got shape {array.shape}")
    if not numpy.isfinite(array).all():
        raise ValueError(f"{owner}: {name} has non-finite entries")
    return array


def check_shape(name: str, array: numpy.ndarray, shape: tuple[int, ...], owner: str) -> None:
    if array.shape != tuple(shape):
        raise ShapeError(f"{owner}: {name} must have shape {tuple(shape)}; got {array.shape}")


def check_stochastic(name: str, array: numpy.ndarray, owner: str) -> None:
    """Each row along the last axis must be a probability vector (non-negative, sum 1)."""
    if (array < 0).any():
        raise ValueError(f"{owner}: {name} has negative entries (min {array.min():.3g}); rows must be "
                         "probability vectors")
    sums = array.sum(axis=-1)
    if not numpy.allclose(sums, 1.0, atol=PROBABILITY_TOLERANCE, rtol=0):
        raise ValueError(f"{owner}: the rows of {name} must sum to 1 (a stochastic matrix); got row sums "
                         f"{numpy.round(sums, 6).tolist()}")


def cholesky_factors(name: str, covariances: numpy.ndarray, owner: str) -> numpy.ndarray:
    """Lower Cholesky factors of symmetric positive-definite matrices (..., d, d)."""
    if covariances.shape[-1] != covariances.shape[-2]:
        raise ShapeError(f"{owner}: {name} must be square matrices (..., d, d); got shape {covariances.shape}")
    if not numpy.allclose(covariances, numpy.swapaxes(covariances, -1, -2), rtol=1e-8, atol=1e-10):
        raise ValueError(f"{owner}: {name} must be symmetric")
    try:
        return numpy.linalg.cholesky(covariances)
    except numpy.linalg.LinAlgError:
        smallest = numpy.linalg.eigvalsh(covariances).min()
        raise ValueError(f"{owner}: {name} must be positive definite; its smallest eigenvalue is "
                         f"{smallest:.3g}") from None


def check_positive(name: str, array: numpy.ndarray, owner: str) -> None:
    if (array <= 0).any():
        raise ValueError(f"{owner}: {name} must be positive (variances); got minimum {array.min():.3g}")


def split_lengths(total: int, lengths, owner: str) -> list[tuple[int, int]]:
    """(start, stop) of each sequence in a concatenation of ``total`` rows (hmmlearn's lengths)."""
    if lengths is None:
        return [(0, total)]
    lengths = [int(n) for n in numpy.asarray(lengths).reshape(-1)]
    if any(n < 1 for n in lengths) or sum(lengths) != total:
        raise ValueError(f"{owner}: lengths must be positive and sum to the number of rows {total}; "
                         f"got {lengths}")
    stops = numpy.cumsum(lengths)
    return [(int(stop - n), int(stop)) for n, stop in zip(lengths, stops)]
