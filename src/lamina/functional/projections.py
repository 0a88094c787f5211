"""Euclidean projections onto simple convex sets, along the last axis, with exact gradients.

* :func:`project_box`: clip(x, lower, upper); the Jacobian is 1 inside the box, 0 where clipped.
* :func:`project_simplex`: onto {y >= 0, sum y = r}: y = max(x - tau, 0) with the threshold
  tau = (sum_{i in S} x_i - r) / |S| over the support S, found by sorting (Duchi et al. 2008).
  With S held fixed tau is linear in x, so the Jacobian is exact: diag(1_S) - 1_S 1_S^T / |S|.
* :func:`project_l1_ball`: onto {||y||_1 <= r}: x itself inside, else
  sign(x) * project_simplex(|x|, r).

These are the solutions of the quadratic programs :func:`lamina.functional.qp_solve` would solve,
computed directly.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.functional import reduce as R
from lamina.functional.elementwise import abs as absolute
from lamina.functional.elementwise import clip, where

__all__ = ["project_box", "project_l1_ball", "project_simplex"]


def _tensor(x) -> Tensor:
    if isinstance(x, Tensor):
        return x
    values = np.asarray(x)
    return Tensor(values, dtype=values.dtype if values.dtype.kind == "f" else np.float64)


def _positive_radius(radius: float, fn: str) -> float:
    if isinstance(radius, bool) or not isinstance(radius, (int, float)) or not radius > 0:
        raise ValueError(f"{fn}: radius must be a positive number, got {radius!r}")
    return float(radius)


def project_box(x, lower=None, upper=None) -> Tensor:
    """min(max(x, lower), upper), bounds broadcast against x (None: unbounded on that side)."""
    x = _tensor(x)
    if lower is not None and upper is not None and np.any(np.asarray(backend.to_numpy(_tensor(lower).data))
                                                          > np.asarray(backend.to_numpy(_tensor(upper).data))):
        raise ValueError("project_box: every lower bound must be <= its upper bound")
    return clip(x, lower, upper)      # torch's clamp: a value on a bound keeps its gradient


def _simplex_support(values: np.ndarray, radius: float) -> np.ndarray:
    """The support mask of the projection of each row of ``values`` onto the simplex of mass ``radius``."""
    ordered = -np.sort(-values, axis=-1)
    ranks = np.arange(1, values.shape[-1] + 1)
    thresholds = (np.cumsum(ordered, axis=-1) - radius) / ranks
    count = (ordered - thresholds > 0).sum(axis=-1, keepdims=True)
    tau = np.take_along_axis(thresholds, count - 1, axis=-1)
    return values - tau > 0


def project_simplex(x, radius: float = 1.0) -> Tensor:
    """argmin_y ||y - x||^2 s.t. y >= 0, sum(y) = radius, along the last axis; see the module docstring."""
    radius = _positive_radius(radius, "project_simplex")
    x = _tensor(x)
    support = _simplex_support(np.asarray(backend.to_numpy(x.data), dtype=np.float64), radius)
    mask = Tensor(support.astype(x.dtype), dtype=x.dtype)
    size = Tensor(support.sum(axis=-1, keepdims=True).astype(x.dtype), dtype=x.dtype)
    tau = (R.sum(x * mask, axis=-1, keepdims=True) - radius) / size
    return (x - tau) * mask


def project_l1_ball(x, radius: float = 1.0) -> Tensor:
    """argmin_y ||y - x||^2 s.t. ||y||_1 <= radius, along the last axis; see the module docstring."""
    radius = _positive_radius(radius, "project_l1_ball")
    x = _tensor(x)
    values = np.asarray(backend.to_numpy(x.data))
    inside = Tensor(np.abs(values).sum(axis=-1, keepdims=True) <= radius)
    sign = Tensor(np.sign(values).astype(values.dtype), dtype=x.dtype)
    return where(inside, x, sign * project_simplex(absolute(x), radius))
