"""Optimal transport between two mini-batches of points, for flow matching's couplings and
for measuring samples.

* :func:`squared_distances`: the cost C_ij = ||x_i - y_j||^2 between flattened samples.
* :func:`optimal_assignment`: the permutation that minimises sum_i C_{i, p(i)}, an exact
  optimal transport plan between two equal-size sets with uniform weights (the Hungarian
  algorithm, SciPy's ``linear_sum_assignment``).
* :func:`sinkhorn`: the entropy-regularised plan P = argmin <P, C> - reg H(P) with marginals
  a and b, by Sinkhorn's iterations on the dual potentials in the log domain (stable for a
  small ``reg``; the loop is :func:`lamina.functional.sinkhorn_potentials`):

      f <- reg (log a - logsumexp_j((g_j - C_ij) / reg)),
      g <- reg (log b - logsumexp_i((f_i - C_ij) / reg)),
      P_ij = exp((f_i + g_j - C_ij) / reg).

  As reg -> 0 the plan tends to the exact one (Peyre and Cuturi, Computational Optimal
  Transport, 4.2).
* :func:`wasserstein2`: the 2-Wasserstein distance between two equal-size point sets,
  W2 = sqrt(min_p mean_i ||x_i - y_p(i)||^2), exact through the assignment.
"""

from __future__ import annotations

import numbers

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.optimal_transport_entropic import sinkhorn_potentials

__all__ = ["optimal_assignment", "sinkhorn", "squared_distances", "wasserstein2"]


def _points(x, who: str, name: str) -> np.ndarray:
    """A batch as a float64 NumPy matrix (n, features)."""
    values = np.asarray(backend.to_numpy(x.data) if isinstance(x, Tensor) else x, dtype=np.float64)
    if values.ndim < 1 or values.shape[0] == 0:
        raise ShapeError(f"{who}: {name} must be a non-empty batch (n, ...), got shape {values.shape}")
    return values.reshape(len(values), -1)


def squared_distances(x, y, who: str = "squared_distances") -> np.ndarray:
    """C_ij = ||x_i - y_j||^2 between the rows of ``x`` (n, ...) and ``y`` (m, ...), each
    sample flattened (float64)."""
    a, b = _points(x, who, "x"), _points(y, who, "y")
    if a.shape[1] != b.shape[1]:
        raise ShapeError(f"{who}: samples of x {np.shape(x)} and y {np.shape(y)} differ in size; expected the same "
                         "shape after the batch axis")
    cost = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(cost, 0.0)


def optimal_assignment(x, y, who: str = "optimal_assignment") -> np.ndarray:
    """The permutation p (n ints) that pairs x_i with y_p(i) at the least total squared
    distance, for two batches of the same shape."""
    if np.shape(x) != np.shape(y):
        raise ShapeError(f"{who}: x of shape {tuple(np.shape(x))} and y of shape {tuple(np.shape(y))} must have "
                         "the same shape")
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(squared_distances(x, y, who))
    permutation = np.empty(len(rows), dtype=np.int64)
    permutation[rows] = cols
    return permutation


def sinkhorn(a, b, cost, reg: float = 0.05, iters: int = 200) -> np.ndarray:
    """The entropy-regularised optimal transport plan (n, m) between the weights ``a`` (n,)
    and ``b`` (m,) (non-negative, equal sums) for the cost matrix ``cost`` (n, m), after
    ``iters`` log-domain Sinkhorn iterations with regularisation ``reg`` > 0 (module notes).
    The plan's column sums equal b exactly, its row sums approach a."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    cost = np.asarray(cost, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1 or cost.shape != (a.size, b.size):
        raise ShapeError(f"sinkhorn: got weights a {a.shape}, b {b.shape} and a cost of shape {cost.shape}; "
                         f"expected a (n,), b (m,) and cost (n, m)")
    if (a < 0).any() or (b < 0).any() or not np.isclose(a.sum(), b.sum()):
        raise ValueError(f"sinkhorn: the weights must be non-negative with equal sums, got sums {a.sum()} and "
                         f"{b.sum()}")
    if isinstance(reg, bool) or not isinstance(reg, numbers.Real) or not reg > 0:
        raise ValueError(f"sinkhorn: reg must be a number > 0, got {reg!r}")
    if isinstance(iters, bool) or not isinstance(iters, numbers.Integral) or iters < 1:
        raise ValueError(f"sinkhorn: iters must be a positive int, got {iters!r}")
    with np.errstate(divide="ignore"):
        log_a, log_b = np.log(a), np.log(b)
    cost_tensor = Tensor(cost, dtype=np.float64)
    f, g = sinkhorn_potentials(Tensor(log_a, dtype=np.float64), Tensor(log_b, dtype=np.float64), cost_tensor,
                               float(reg), int(iters))
    f, g = backend.to_numpy(f.data), backend.to_numpy(g.data)
    return np.exp((f[:, None] + g[None, :] - cost) / reg)


def wasserstein2(x, y) -> float:
    """The exact 2-Wasserstein distance between the empirical distributions of two point sets
    of the same shape (n, ...): sqrt of the least mean squared distance over pairings."""
    permutation = optimal_assignment(x, y, "wasserstein2")
    cost = squared_distances(x, y, "wasserstein2")
    return float(np.sqrt(cost[np.arange(len(permutation)), permutation].mean()))
