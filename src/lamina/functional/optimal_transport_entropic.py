"""Entropic optimal transport: Sinkhorn's algorithm and what is built on it, on tensors.

With weights a (n,), b (m,), costs M (n, m) and a regularisation eps = ``reg`` > 0,

    OT_eps(a, b) = min_P <P, M> + eps KL(P | a b^T)   over P >= 0 with P 1 = a, P^T 1 = b,
    KL(P | Q) = sum P log(P / Q) - sum P + sum Q.

The optimal plan is P = diag(u) K diag(v) with K = exp(-M / eps) (Cuturi 2013), and u, v are
found by alternately matching the two marginals:

* ``method='standard'``: u <- a / (K v), v <- b / (K^T u); fast, but K underflows for a
  small eps.
* ``method='log'`` (default): the same on the potentials f = eps log u, g = eps log v,
  f <- eps (log a - logsumexp_j((g_j - M_ij) / eps)), and likewise for g; stable for any eps.

Every iteration is made of lamina ops, so plans and costs are differentiable by unrolling
the iterations (:func:`sinkhorn`, :func:`sinkhorn2`). :func:`sinkhorn2` can instead give the
envelope-theorem gradient (``gradient='envelope'``): the plan P for M and the dual potentials
for a and b, with no graph through the loop.

* :func:`sinkhorn_divergence` (Genevay et al. 2018, Feydy et al. 2019):
  S_eps(x, y) = OT_eps(a, b) - (OT_eps(a, a) + OT_eps(b, b)) / 2 between two point clouds.
* :func:`unbalanced_sinkhorn` (Chizat et al. 2018): the marginal constraints replaced by
  reg_m KL(P 1 | a) + reg_m KL(P^T 1 | b); the updates become f <- rho (f's balanced update)
  with rho = reg_m / (reg_m + eps), and tend to the balanced ones as reg_m -> infinity.
* :func:`barycenter` (Benamou et al. 2015): the entropic Wasserstein barycenter of k
  histograms on one support by iterative Bregman projections.
* :func:`entropic_gromov_wasserstein` (Peyre et al. 2016): a plan between two spaces known
  only through their distance matrices, by Sinkhorn on the linearised square-loss cost.
* :func:`sinkhorn_balance`: the bare matrix scaling (alternately divide rows and columns by
  their sums, times the target sums) that NeuralNDCG's and SwAV's scalings use.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.functional import reduce as R
from lamina.functional.arithmetic import matmul
from lamina.functional.elementwise import clip, exp, log
from lamina.functional.optimal_transport import (
    as_tensor,
    ot_cost_matrix,
    positive_int,
    positive_real,
    transport_inputs,
)
from lamina.functional.reduce_more import logsumexp

__all__ = ["barycenter", "entropic_gromov_wasserstein", "sinkhorn", "sinkhorn2", "sinkhorn_balance",
           "sinkhorn_divergence", "sinkhorn_potentials", "unbalanced_sinkhorn"]

METHODS = ("log", "standard")
GRADIENTS = ("unroll", "envelope")


def _values(t: Tensor) -> np.ndarray:
    return backend.to_numpy(t.data)


def sinkhorn_potentials(log_a: Tensor, log_b: Tensor, M: Tensor, reg: float, num_iter: int,
                        tol: float = 0.0, rho: float = 1.0) -> tuple[Tensor, Tensor]:
    """The log-domain Sinkhorn core shared by every solver here: from f = g = 0,

        f <- rho eps (log a - logsumexp_j((g_j - M_ij) / eps))
        g <- rho eps (log b - logsumexp_i((f_i - M_ij) / eps))

    ``num_iter`` times at most (rho = 1: balanced; rho < 1: unbalanced). With ``tol`` > 0
    it stops once the row marginal of P = exp((f + g - M) / eps) is within ``tol`` of a
    (balanced), or once no potential moves by more than ``tol`` eps (unbalanced). The
    inputs are not checked; returns (f, g)."""
    f = Tensor(np.zeros(M.shape[0]), dtype=M.dtype)
    g = Tensor(np.zeros(M.shape[1]), dtype=M.dtype)
    scaled = M / reg
    step = rho * reg
    for _ in range(num_iter):
        previous = (_values(f), _values(g))
        f = step * (log_a - logsumexp(g[None, :] / reg - scaled, axis=1))
        g = step * (log_b - logsumexp(f[:, None] / reg - scaled, axis=0))
        if tol > 0 and _converged(f, g, previous, log_a, scaled, reg, tol, rho):
            break
    return f, g


def _converged(f, g, previous, log_a, scaled, reg, tol, rho) -> bool:
    f_now, g_now = _values(f), _values(g)
    if rho < 1:
        return max(np.abs(f_now - previous[0]).max(), np.abs(g_now - previous[1]).max()) <= tol * reg
    rows = np.exp((f_now[:, None] + g_now[None, :]) / reg - _values(scaled)).sum(axis=1)
    return np.abs(rows - np.exp(_values(log_a))).max() <= tol


def _log_plan(f: Tensor, g: Tensor, M: Tensor, reg: float) -> Tensor:
    return (f[:, None] + g[None, :] - M) / reg


def _standard_scalings(a: Tensor, b: Tensor, M: Tensor, reg: float, num_iter: int, tol: float):
    kernel = exp(-M / reg)
    v = Tensor(np.ones(M.shape[1]), dtype=M.dtype)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):   # an underflowed kernel is reported below
        for _ in range(num_iter):
            u = a / matmul(kernel, v)
            v = b / matmul(kernel.T, u)
            if tol > 0:
                rows = _values(u) * (_values(kernel) @ _values(v))
                if np.abs(rows - _values(a)).max() <= tol:
                    break
    values = _values(u), _values(v)
    if not (np.isfinite(values[0]).all() and np.isfinite(values[1]).all()):
        raise FloatingPointError(f"sinkhorn: method='standard' overflowed (exp(-M / reg) underflows for reg = {reg}); "
                                 "use method='log'")
    return u, v, kernel


def _solve(a, b, M, reg, method, num_iter, tol, fn):
    """(P, F, G) for balanced entropic transport, all on the graph: the plan and the dual
    potentials F = reg log(u / a), G = reg log(v / b), so that P = a b^T exp((F + G - M) / reg)."""
    if method not in METHODS:
        raise ValueError(f"{fn}: method must be one of {METHODS}, got {method!r}")
    reg = positive_real(reg, "reg", fn)
    num_iter = positive_int(num_iter, "num_iter", fn)
    if tol < 0:
        raise ValueError(f"{fn}: tol must be >= 0, got {tol!r}")
    if method == "log":
        log_a, log_b = log(a), log(b)
        f, g = sinkhorn_potentials(log_a, log_b, M, reg, num_iter, tol)
        return exp(_log_plan(f, g, M, reg)), f - reg * log_a, g - reg * log_b
    u, v, kernel = _standard_scalings(a, b, M, reg, num_iter, tol)
    return u[:, None] * kernel * v[None, :], reg * log(u / a), reg * log(v / b)


def sinkhorn(a, b, M, reg: float, method: str = "log", num_iter: int = 1000, tol: float = 1e-9) -> Tensor:
    """The entropic optimal transport plan P (n, m) between the weights ``a`` (n,) and ``b``
    (m,) (> 0, equal sums; None: uniform) for the costs ``M`` (n, m) >= 0 (module notes).
    At most ``num_iter`` iterations, fewer once the row marginal is within ``tol`` of a (0:
    exactly ``num_iter``); the column marginal is exact after every iteration.
    Differentiable in a, b and M through the unrolled iterations."""
    a, b, M = transport_inputs(a, b, M, "sinkhorn", strictly_positive=True)
    return _solve(a, b, M, reg, method, num_iter, tol, "sinkhorn")[0]


def sinkhorn2(a, b, M, reg: float, method: str = "log", num_iter: int = 1000, tol: float = 1e-9,
              gradient: str = "unroll") -> Tensor:
    """The entropic transport cost OT_eps = <P, M> + reg KL(P | a b^T) of :func:`sinkhorn`'s
    plan (a scalar tensor).

    ``gradient='unroll'`` (default): the graph runs through every iteration, so the
    gradient is that of the computed (possibly not yet converged) value. ``'envelope'``:
    the loop runs without a graph and the gradient is that of the converged problem by the
    envelope theorem: the plan P for M and the dual potentials F = f - reg log a,
    G = g - reg log b for a and b (each defined up to an additive constant)."""
    fn = "sinkhorn2"
    if gradient not in GRADIENTS:
        raise ValueError(f"{fn}: gradient must be one of {GRADIENTS}, got {gradient!r}")
    a, b, M = transport_inputs(a, b, M, fn, strictly_positive=True)
    if gradient == "unroll":
        plan, F, G = _solve(a, b, M, reg, method, num_iter, tol, fn)
        return _entropic_cost(plan, F, G, a, b, M, reg)
    with no_grad():
        plan, F, G = _solve(a.detach(), b.detach(), M.detach(), reg, method, num_iter, tol, fn)
        value = _values(_entropic_cost(plan, F, G, a, b, M, reg))
    # at convergence OT_eps = <a, F> + <b, G> + reg (sum(a) sum(b) - sum(P)), whose
    # derivatives with P, F, G held are F, G and P: the surrogate below has them
    surrogate = R.sum(a * F) + R.sum(b * G) + R.sum(plan * M)
    return surrogate + float(value - _values(surrogate))


def _entropic_cost(plan, F, G, a, b, M, reg) -> Tensor:
    """<P, M> + reg KL(P | a b^T), with log(P / (a b^T)) = (F + G - M) / reg."""
    log_ratio = _log_plan(F, G, M, reg)
    return R.sum(plan * M) + reg * (R.sum(plan * log_ratio) - R.sum(plan) + R.sum(a) * R.sum(b))


def sinkhorn_divergence(x, y, reg: float, a=None, b=None, p: float = 2, method: str = "log",
                        num_iter: int = 1000, tol: float = 1e-9, gradient: str = "unroll") -> Tensor:
    """S_eps = OT_eps(x, y) - (OT_eps(x, x) + OT_eps(y, y)) / 2 between the point clouds ``x``
    (n, d) and ``y`` (m, d) with weights ``a`` and ``b`` (None: uniform), costs
    ||x_i - y_j||^p (:func:`ot_cost_matrix`), each term a :func:`sinkhorn2`. It is 0 for
    identical measures and positive otherwise; differentiable in x and y."""
    fn = "sinkhorn_divergence"
    x, y = as_tensor(x), as_tensor(y)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ShapeError(f"{fn}: expected point clouds x (n, d) and y (m, d), got shapes {x.shape} and {y.shape}")

    def cost(u, v, wu, wv):
        return sinkhorn2(wu, wv, ot_cost_matrix(u, v, p), reg, method, num_iter, tol, gradient)

    return cost(x, y, a, b) - (cost(x, x, a, a) + cost(y, y, b, b)) * 0.5


def unbalanced_sinkhorn(a, b, M, reg: float, reg_m: float, num_iter: int = 1000, tol: float = 1e-9) -> Tensor:
    """The plan of unbalanced entropic transport (Chizat et al. 2018; module notes):
    min_P <P, M> + reg KL(P | a b^T) + reg_m (KL(P 1 | a) + KL(P^T 1 | b)), for weights of
    any positive masses, by log-domain scaling with exponent reg_m / (reg_m + reg). Stops
    once the potentials move by less than ``tol`` reg; differentiable by unrolling."""
    fn = "unbalanced_sinkhorn"
    a, b, M = transport_inputs(a, b, M, fn, strictly_positive=True, balanced=False)
    reg = positive_real(reg, "reg", fn)
    reg_m = positive_real(reg_m, "reg_m", fn)
    num_iter = positive_int(num_iter, "num_iter", fn)
    f, g = sinkhorn_potentials(log(a), log(b), M, reg, num_iter, tol, rho=reg_m / (reg_m + reg))
    return exp(_log_plan(f, g, M, reg))


def barycenter(A, M, reg: float, weights=None, num_iter: int = 1000, tol: float = 1e-9) -> Tensor:
    """The entropic Wasserstein barycenter (n,) of the k histograms in the columns of ``A``
    (n, k), each of mass 1, on a support with costs ``M`` (n, n), weighted by ``weights`` (k,)
    (None: equal), by Benamou et al.'s iterative Bregman projections with K = exp(-M / reg):

        u_k = A_k / (K v_k),   p = prod_k (K^T u_k)^(w_k),   v_k = p / (K^T u_k),

    until p moves by less than ``tol``. Differentiable by unrolling."""
    fn = "barycenter"
    A = as_tensor(A)
    M = transport_inputs(None, None, M, fn)[2]
    if A.ndim != 2 or A.shape[0] != M.shape[0] or M.shape[0] != M.shape[1]:
        raise ShapeError(f"{fn}: expected histograms A (n, k) and square costs M (n, n), got shapes {A.shape} and "
                         f"{M.shape}")
    masses = _values(A).sum(axis=0)
    if (_values(A) < 0).any() or not np.allclose(masses, 1.0, rtol=1e-6):
        raise ValueError(f"{fn}: each column of A must be a histogram (>= 0, summing to 1), got sums {masses}")
    reg = positive_real(reg, "reg", fn)
    num_iter = positive_int(num_iter, "num_iter", fn)
    k = A.shape[1]
    w = np.full(k, 1.0 / k) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (k,) or (w < 0).any() or not np.isclose(w.sum(), 1.0):
        raise ValueError(f"{fn}: weights must be {k} non-negative numbers summing to 1, got {w}")
    kernel = exp(-M / reg)
    w = Tensor(w, dtype=M.dtype)
    v = Tensor(np.ones(A.shape), dtype=M.dtype)
    p = None
    for _ in range(num_iter):
        spread = matmul(kernel.T, A / matmul(kernel, v))                  # K^T u_k, (n, k)
        previous = None if p is None else _values(p)
        p = exp(R.sum(log(spread) * w[None, :], axis=1))
        v = p[:, None] / spread
        if tol > 0 and previous is not None and np.abs(_values(p) - previous).max() <= tol:
            break
    return p


def entropic_gromov_wasserstein(C1, C2, p=None, q=None, loss: str = "square_loss", epsilon: float = 0.1,
                                num_iter: int = 50, sinkhorn_iter: int = 200, tol: float = 1e-9) -> Tensor:
    """The entropic Gromov-Wasserstein plan T (n, m) between a space with distances ``C1`` (n, n)
    and weights ``p`` and one with ``C2`` (m, m) and ``q`` (None: uniform), for the square
    loss L(c1, c2) = (c1 - c2)^2 (Peyre et al. 2016): from T = p q^T, repeat ``num_iter``
    times T <- sinkhorn(p, q, L(C1, C2) (x) T, epsilon), where

        (L (x) T)_ij = (C1^2 p)_i + (C2^2 q)_j - 2 (C1 T C2^T)_ij,

    stopping once T moves by less than ``tol``. Differentiable by unrolling."""
    fn = "entropic_gromov_wasserstein"
    if loss != "square_loss":
        raise ValueError(f"{fn}: loss must be 'square_loss', got {loss!r}")
    C1, C2 = as_tensor(C1), as_tensor(C2)
    if C1.ndim != 2 or C2.ndim != 2 or C1.shape[0] != C1.shape[1] or C2.shape[0] != C2.shape[1]:
        raise ShapeError(f"{fn}: C1 and C2 must be square matrices, got shapes {C1.shape} and {C2.shape}")
    epsilon = positive_real(epsilon, "epsilon", fn)
    num_iter = positive_int(num_iter, "num_iter", fn)
    outer = Tensor(np.zeros((C1.shape[0], C2.shape[0])), dtype=C1.dtype)
    p, q, _ = transport_inputs(p, q, outer, fn, strictly_positive=True)
    constant = matmul(C1 * C1, p)[:, None] + matmul(C2 * C2, q)[None, :]
    plan = p[:, None] * q[None, :]
    for _ in range(num_iter):
        cost = constant - 2.0 * matmul(matmul(C1, plan), C2.T)
        cost = cost - float(_values(cost).min())               # a shift leaves the plan as it is
        previous = _values(plan)
        plan = _solve(p, q, cost, epsilon, "log", sinkhorn_iter, tol, fn)[0]
        if tol > 0 and np.abs(_values(plan) - previous).max() <= tol:
            break
    return plan


def _target(t) -> float | np.ndarray:
    return t if isinstance(t, int | float) else np.asarray(t, dtype=np.float64)


def sinkhorn_balance(matrix, row_sums=1.0, column_sums=1.0, num_iter: int = 50, tol: float = 0.0,
                     columns_first: bool = False, floor: float = 0.0, row_mask=None, column_mask=None) -> Tensor:
    """Sinkhorn's matrix scaling of non-negative matrices (..., n, m): alternately scale every
    row to ``row_sums`` and every column to ``column_sums`` (numbers, or arrays broadcasting
    against (..., n) and (..., m)), ``columns_first`` choosing which comes first, each sum
    floored at ``floor``. Runs ``num_iter`` rounds, fewer with ``tol`` > 0 once every row and
    column sum (those where ``row_mask`` / ``column_mask`` (..., n) / (..., m) are True) is
    within ``tol`` of its target. Differentiable by unrolling."""
    fn = "sinkhorn_balance"
    P = as_tensor(matrix)
    if P.ndim < 2:
        raise ShapeError(f"{fn}: expected matrices (..., n, m), got shape {P.shape}")
    num_iter = positive_int(num_iter, "num_iter", fn)

    def rescale(P, axis, target):
        total = R.sum(P, axis=axis, keepdims=True)
        if floor > 0:
            total = clip(total, floor, None)
        if isinstance(target, float | int) and target == 1:
            return P / total
        if isinstance(target, np.ndarray):
            target = Tensor(np.expand_dims(target, axis), dtype=P.dtype)
        return P / total * target

    rows, columns = _target(row_sums), _target(column_sums)
    steps = [(-2, columns), (-1, rows)] if columns_first else [(-1, rows), (-2, columns)]
    for _ in range(num_iter):
        for axis, target in steps:
            P = rescale(P, axis, target)
        if tol > 0 and _balanced(_values(P), row_sums, column_sums, row_mask, column_mask, tol):
            break
    return P


def _balanced(values, row_sums, column_sums, row_mask, column_mask, tol) -> bool:
    row_error = np.abs(values.sum(axis=-1) - np.asarray(row_sums))
    column_error = np.abs(values.sum(axis=-2) - np.asarray(column_sums))
    if row_mask is not None:
        row_error = row_error[np.asarray(row_mask, dtype=bool)]
    if column_mask is not None:
        column_error = column_error[np.asarray(column_mask, dtype=bool)]
    return row_error.max(initial=0.0) < tol and column_error.max(initial=0.0) < tol
