"""Exact optimal transport between discrete measures, and its 1-D and sliced forms.

For weights a (n,) and b (m,) of equal mass and a cost matrix M (n, m) >= 0, the
optimal transport problem (Kantorovich) is

    OT(a, b) = min_P <P, M>   over P >= 0 with P 1 = a and P^T 1 = b.

* :func:`emd`: the optimal plan P, by SciPy's linear programming (HiGHS) on the n + m
  transportation constraints, or by the Hungarian algorithm (``linear_sum_assignment``)
  when both sides are n points of the same weight (the plan is then a permutation / n).
* :func:`emd2`: the optimal cost <P, M>; its gradient with respect to M is the plan
  (envelope theorem; P is held constant).
* :func:`wasserstein_1d`: on the line the optimal plan matches quantiles, so
  W_p^p = int_0^1 |F_u^-1(t) - F_v^-1(t)|^p dt, exact from the sorted samples and
  differentiable in them.
* :func:`sliced_wasserstein`: (mean over random unit directions theta of W_p^p of the
  projections <x, theta> and <y, theta>)^(1/p) (Rabin et al. 2011; Bonneel et al. 2015).
* :func:`ot_cost_matrix`: M_ij = ||x_i - y_j||^p between two point clouds, on the graph.

The entropic solvers (Sinkhorn and relatives) live in
:mod:`lamina.functional.optimal_transport_entropic`.
"""

from __future__ import annotations

import numbers

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional import reduce as R
from lamina.functional.arithmetic import matmul, power
from lamina.functional.elementwise import abs as absolute
from lamina.functional.elementwise import where
from lamina.functional.indexing import gather

__all__ = ["emd", "emd2", "ot_cost_matrix", "sliced_wasserstein", "wasserstein_1d"]

MASS_RTOL = 1e-6
"""Relative tolerance for 'the two marginals carry the same mass' in balanced transport."""


def as_tensor(x, dtype=None) -> Tensor:
    if isinstance(x, Tensor):
        return x
    values = np.asarray(x)
    if dtype is None:
        dtype = values.dtype if values.dtype.kind == "f" else np.float64
    return Tensor(values, dtype=dtype)


def _numpy(x) -> np.ndarray:
    return np.asarray(backend.to_numpy(x.data) if isinstance(x, Tensor) else x, dtype=np.float64)


def cost_matrix(M, fn: str) -> Tensor:
    """``M`` as a 2-D float tensor of non-negative costs."""
    M = as_tensor(M)
    if M.ndim != 2:
        raise ShapeError(f"{fn}: the cost matrix M must be 2-D (n, m), got shape {M.shape}")
    values = backend.to_numpy(M.data)
    if not np.isfinite(values).all():
        raise ValueError(f"{fn}: the cost matrix M must be finite")
    if values.size and values.min() < 0:
        raise ValueError(f"{fn}: costs must be non-negative, got a minimum of {values.min()} (adding a constant to M "
                         "does not change the optimal plan)")
    return M


def weights(w, size: int, name: str, fn: str, like: Tensor, strictly_positive: bool = False) -> Tensor:
    """The weights ``w`` (``size``,) as a tensor in ``like``'s dtype; None gives uniform weights 1 / size."""
    if w is None:
        return Tensor(np.full(size, 1.0 / size), dtype=like.dtype)
    w = as_tensor(w, like.dtype)
    if w.shape != (size,):
        raise ShapeError(f"{fn}: {name} must be a vector of {size} weights to match M of shape {like.shape}, "
                         f"got shape {w.shape}")
    values = backend.to_numpy(w.data)
    if not np.isfinite(values).all() or (values < 0).any():
        raise ValueError(f"{fn}: the weights {name} must be finite and non-negative, got a minimum of {values.min()}")
    if strictly_positive and (values <= 0).any():
        raise ValueError(f"{fn}: the weights {name} must be > 0 (drop the points of weight 0), got a minimum of "
                         f"{values.min()}")
    return w


def check_equal_mass(a: Tensor, b: Tensor, fn: str) -> None:
    mass_a, mass_b = float(backend.to_numpy(a.data).sum()), float(backend.to_numpy(b.data).sum())
    if not np.isclose(mass_a, mass_b, rtol=MASS_RTOL, atol=0.0) or mass_a <= 0:
        raise ValueError(f"{fn}: balanced transport needs marginals of the same positive mass, got sum(a) = {mass_a} "
                         f"and sum(b) = {mass_b} (unbalanced_sinkhorn relaxes this)")


def positive_real(value, name: str, fn: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0 or not np.isfinite(value):
        raise ValueError(f"{fn}: {name} must be a finite number > 0, got {value!r}")
    return float(value)


def positive_int(value, name: str, fn: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{fn}: {name} must be an int >= 1, got {value!r}")
    return int(value)


def transport_inputs(a, b, M, fn: str, strictly_positive: bool = False, balanced: bool = True):
    """(a, b, M) as tensors after the checks every solver shares; a or b None: uniform."""
    M = cost_matrix(M, fn)
    n, m = M.shape
    a = weights(a, n, "a", fn, M, strictly_positive)
    b = weights(b, m, "b", fn, M, strictly_positive)
    if balanced:
        check_equal_mass(a, b, fn)
    return a, b, M


def _transport_lp(a: np.ndarray, b: np.ndarray, cost: np.ndarray) -> np.ndarray:
    from scipy.optimize import linprog
    from scipy.sparse import csr_matrix, eye, kron, vstack

    n, m = cost.shape
    rows = kron(eye(n), csr_matrix(np.ones((1, m))))          # sum_j P_ij = a_i
    columns = kron(csr_matrix(np.ones((1, n))), eye(m))       # sum_i P_ij = b_j
    result = linprog(cost.ravel(), A_eq=vstack([rows, columns]).tocsr(), b_eq=np.concatenate([a, b]),
                     bounds=(0, None), method="highs")
    if result.status != 0:
        raise RuntimeError(f"emd: the linear program failed: {result.message}")
    return np.maximum(result.x.reshape(n, m), 0.0)


def emd(a, b, M) -> np.ndarray:
    """The exact optimal transport plan P (n, m), float64, between the weights ``a`` (n,)
    and ``b`` (m,) (None: uniform) for the costs ``M`` (n, m) (module notes)."""
    a, b, M = transport_inputs(a, b, M, "emd")
    a, b, cost = _numpy(a), _numpy(b), _numpy(M)
    n, m = cost.shape
    if n == m and np.all(a == a[0]) and np.all(b == b[0]):
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(cost)
        plan = np.zeros((n, m))
        plan[rows, cols] = a[0]
        return plan
    return _transport_lp(a, b, cost)


def emd2(a, b, M) -> Tensor:
    """The exact optimal transport cost <P, M> (a scalar tensor). Differentiable with respect
    to M, whose gradient is the optimal plan P (the envelope theorem: a subgradient where
    the plan is not unique); a and b get no gradient."""
    plan = emd(a, b, M)
    M = as_tensor(M)
    return R.sum(Tensor(plan, dtype=M.dtype) * M)


def ot_cost_matrix(x, y, p: float = 2) -> Tensor:
    """M_ij = ||x_i - y_j||^p between the rows of ``x`` (n, d) and ``y`` (m, d), on the graph;
    p = 2 (the default) is the squared Euclidean distance. Where x_i = y_j the gradient is
    taken as 0."""
    fn = "ot_cost_matrix"
    x, y = as_tensor(x), as_tensor(y)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ShapeError(f"{fn}: expected point clouds x (n, d) and y (m, d), got shapes {x.shape} and {y.shape}")
    p = positive_real(p, "p", fn)
    squared = R.sum((x[:, None, :] - y[None, :, :]) ** 2, axis=2)
    if p == 2:
        return squared
    apart = backend.to_numpy(squared.data) > 0
    safe = where(apart, squared, 1.0)
    return where(apart, power(safe, p / 2), 0.0)


def _quantile_steps(u_weights: np.ndarray, v_weights: np.ndarray):
    """For sorted samples with normalised weights: the intervals (t_{k-1}, t_k] of [0, 1] on
    which both quantile functions are constant, as (index into u, index into v, length)."""
    cu, cv = np.cumsum(u_weights), np.cumsum(v_weights)
    cu[-1] = cv[-1] = 1.0
    levels = np.union1d(cu, cv)
    lengths = np.diff(levels, prepend=0.0)
    keep = lengths > 1e-14
    middles = (levels - lengths / 2)[keep]
    iu = np.minimum(np.searchsorted(cu, middles), len(cu) - 1)
    iv = np.minimum(np.searchsorted(cv, middles), len(cv) - 1)
    return iu, iv, lengths[keep]


def _distance_power(d: Tensor, p: float) -> Tensor:
    if p == 1:
        return absolute(d)
    if p == 2:
        return d * d
    return power(absolute(d), p)


def _sample_weights(w, n: int, name: str, fn: str) -> np.ndarray:
    if w is None:
        return np.full(n, 1.0 / n)
    w = _numpy(w)
    if w.shape != (n,) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"{fn}: {name} must be {n} finite non-negative weights with a positive sum, got shape "
                         f"{w.shape}")
    return w / w.sum()


def wasserstein_1d(u_values, v_values, u_weights=None, v_weights=None, p: float = 1) -> Tensor:
    """W_p^p between two distributions on the line given by their samples (module notes):
    ``u_values`` (n,) and ``v_values`` (m,) with optional weights (None: uniform; they are
    normalised). With (n, k) and (m, k) values (uniform weights only) each of the k
    columns is one problem and the result has shape (k,). Differentiable in the values
    (the gradient flows through the sort)."""
    fn = "wasserstein_1d"
    u, v = as_tensor(u_values), as_tensor(v_values)
    p = positive_real(p, "p", fn)
    if u.ndim not in (1, 2) or v.ndim != u.ndim or (u.ndim == 2 and u.shape[1] != v.shape[1]):
        raise ShapeError(f"{fn}: expected values (n,) and (m,), or (n, k) and (m, k), got shapes {u.shape} and "
                         f"{v.shape}")
    if u.shape[0] == 0 or v.shape[0] == 0:
        raise ShapeError(f"{fn}: both samples must be non-empty, got shapes {u.shape} and {v.shape}")
    if u.ndim == 2 and (u_weights is not None or v_weights is not None):
        raise ValueError(f"{fn}: weights are supported for 1-D values only, got values of shape {u.shape}")
    wu = _sample_weights(u_weights, u.shape[0], "u_weights", fn)
    wv = _sample_weights(v_weights, v.shape[0], "v_weights", fn)
    u_order = np.argsort(backend.to_numpy(u.data), axis=0, kind="stable")
    v_order = np.argsort(backend.to_numpy(v.data), axis=0, kind="stable")
    if u.ndim == 1:
        wu, wv = wu[u_order], wv[v_order]
    iu, iv, lengths = _quantile_steps(wu, wv)
    if u.ndim == 2:
        k = u.shape[1]
        iu, iv = np.broadcast_to(iu[:, None], (len(iu), k)), np.broadcast_to(iv[:, None], (len(iv), k))
        lengths = lengths[:, None]
    u_quantiles = gather(u, 0, np.take_along_axis(u_order, iu, axis=0))
    v_quantiles = gather(v, 0, np.take_along_axis(v_order, iv, axis=0))
    steps = Tensor(lengths, dtype=u.dtype)
    return R.sum(steps * _distance_power(u_quantiles - v_quantiles, p), axis=0)


def sliced_wasserstein(x, y, n_projections: int = 50, p: float = 2, seed: int | None = None) -> Tensor:
    """The sliced p-Wasserstein distance between the uniform empirical measures on the rows of
    ``x`` (n, d) and ``y`` (m, d): (mean_theta W_p^p(<x, theta>, <y, theta>))^(1/p) over
    ``n_projections`` directions drawn uniformly on the sphere from ``seed``.
    Differentiable in both clouds."""
    fn = "sliced_wasserstein"
    x, y = as_tensor(x), as_tensor(y)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ShapeError(f"{fn}: expected point clouds x (n, d) and y (m, d), got shapes {x.shape} and {y.shape}")
    n_projections = positive_int(n_projections, "n_projections", fn)
    p = positive_real(p, "p", fn)
    directions = np.random.default_rng(seed).standard_normal((x.shape[1], n_projections))
    directions /= np.linalg.norm(directions, axis=0, keepdims=True)
    theta = Tensor(directions, dtype=x.dtype)
    per_direction = wasserstein_1d(matmul(x, theta), matmul(y, theta), p=p)
    return R.mean(per_direction) ** (1.0 / p)
