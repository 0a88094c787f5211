"""B-spline basis functions (the Cox-de Boor recursion) and Gaussian radial basis functions,
the two bases of Kolmogorov-Arnold network layers.

On knots t_0 <= t_1 <= ... <= t_{n+k}, the n basis functions of order (degree) k are

    B_{i,0}(x) = 1 if t_i <= x < t_{i+1}, else 0
    B_{i,p}(x) = (x - t_i) / (t_{i+p} - t_i) B_{i,p-1}(x)
               + (t_{i+p+1} - x) / (t_{i+p+1} - t_{i+1}) B_{i+1,p-1}(x),   p = 1 .. k

with a term whose denominator is zero (repeated knots) taken as zero. Inside [t_k, t_n) the
n functions are non-negative and sum to one (partition of unity). A KAN layer with
``grid_size`` G intervals on [lo, hi] uses the uniform grid extended by k knots on each
side, t_j = lo + (j - k) h, h = (hi - lo) / G, j = 0 .. G + 2k, so G + k functions cover
[lo, hi] exactly.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.elementwise import exp

__all__ = ["b_spline_basis", "extended_grid", "gaussian_rbf_basis"]


def _as_tensor(x) -> Tensor:
    if isinstance(x, Tensor):
        return x
    array = backend.xp.asarray(x)
    return Tensor._constant(array, array.dtype if array.dtype.kind == "f" else backend.get_default_dtype())


def extended_grid(grid_size: int, spline_order: int, grid_range=(-1.0, 1.0), dtype=None) -> np.ndarray:
    """The uniform knots lo + (j - k) h, j = 0 .. G + 2k, h = (hi - lo) / G (shape (G + 2k + 1,))."""
    check_grid_arguments("extended_grid", grid_size, spline_order, grid_range)
    lo, hi = float(grid_range[0]), float(grid_range[1])
    step = (hi - lo) / grid_size
    knots = lo + np.arange(-spline_order, grid_size + spline_order + 1) * step
    return knots.astype(dtype or backend.get_default_dtype())


def check_grid_arguments(who: str, grid_size, spline_order, grid_range) -> None:
    if isinstance(grid_size, bool) or not isinstance(grid_size, (int, np.integer)) or grid_size < 1:
        raise ValueError(f"{who}: grid_size must be an int >= 1 (the number of grid intervals), got {grid_size!r}")
    if isinstance(spline_order, bool) or not isinstance(spline_order, (int, np.integer)) or spline_order < 0:
        raise ValueError(f"{who}: spline_order must be an int >= 0 (3 for cubic splines), got {spline_order!r}")
    try:
        lo, hi = (float(v) for v in grid_range)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: grid_range must be a pair (low, high) of numbers, got {grid_range!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"{who}: grid_range must be finite with low < high, got {grid_range!r}")


def _safe_reciprocal(d: np.ndarray) -> np.ndarray:
    out = np.zeros_like(d)
    np.divide(1.0, d, out=out, where=d != 0)
    return out


def b_spline_basis(x, grid, order: int) -> Tensor:
    """The B-spline basis of ``order`` k on the knots ``grid`` at the points ``x``.

    ``x``: (..., n_in); ``grid``: the knots, (n_knots,) shared by every input or (n_in,
    n_knots), one row per input feature (efficient-kan's ``grid`` buffer). Returns (...,
    n_in, n_knots - 1 - k), differentiable in ``x`` (the knots are constants). Points outside
    [t_0, t_last) get all zeros.
    """
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < 0:
        raise ValueError(f"b_spline_basis: order must be an int >= 0, got {order!r}")
    x = _as_tensor(x)
    knots = np.asarray(grid.data if isinstance(grid, Tensor) else grid)
    if knots.ndim not in (1, 2) or knots.shape[-1] < order + 2:
        raise ShapeError(f"b_spline_basis: grid must have shape (n_knots,) or (n_in, n_knots) with n_knots >= "
                         f"order + 2 = {order + 2}, got {knots.shape}")
    if x.ndim < 1 or (knots.ndim == 2 and x.shape[-1] != knots.shape[0]):
        raise ShapeError(f"b_spline_basis: x of shape {x.shape} must end with the {knots.shape[0]} features "
                         f"of the grid of shape {knots.shape}")
    if np.any(np.diff(knots, axis=-1) < 0):
        raise ValueError("b_spline_basis: the knots of grid must be non-decreasing")
    knots = knots.astype(x.dtype)
    t = knots if knots.ndim == 2 else np.broadcast_to(knots, (x.shape[-1], knots.shape[-1]))
    xd = x.data[..., None]
    bases = Tensor._wrap(((xd >= t[:, :-1]) & (xd < t[:, 1:])).astype(x.dtype))
    xe = x[..., None]
    for p in range(1, order + 1):
        left = (xe - t[:, :-(p + 1)]) * _safe_reciprocal(t[:, p:-1] - t[:, :-(p + 1)])
        right = (t[:, p + 1:] - xe) * _safe_reciprocal(t[:, p + 1:] - t[:, 1:-p])
        bases = left * bases[..., :-1] + right * bases[..., 1:]
    return bases


def gaussian_rbf_basis(x, centers, width: float) -> Tensor:
    """FastKAN's basis: exp(-((x - c_j) / width)^2) for every centre c_j; (..., n_in) ->
    (..., n_in, n_centers)."""
    x = _as_tensor(x)
    c = np.asarray(centers, dtype=x.dtype)
    if c.ndim != 1 or c.size < 1:
        raise ShapeError(f"gaussian_rbf_basis: centers must be a non-empty 1-D array, got shape {c.shape}")
    if not width > 0:
        raise ValueError(f"gaussian_rbf_basis: width must be > 0, got {width!r}")
    z = (x[..., None] - c) * (1.0 / width)
    return exp(-(z * z))
