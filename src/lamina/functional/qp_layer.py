"""A batched quadratic program as a differentiable layer (Amos & Kolter 2017, "OptNet").

For each problem of the batch,

    z* = argmin_z 1/2 z^T Q z + p^T z   s.t.   G z <= h,   A z = b,

with Q positive definite (or positive semi-definite and the problem bounded). The forward
is a primal-dual interior-point method with Mehrotra's predictor-corrector: with slacks
s = h - G z >= 0 and duals lam >= 0 (inequalities) and nu (equalities) it drives the KKT
residuals

    Q z + p + G^T lam + A^T nu = 0,   G z + s - h = 0,   A z - b = 0,   s * lam = 0

to zero by Newton steps on the system reduced to (z, nu). A problem with only equalities is
solved by one Newton step: the closed form [Q A^T; A 0] [z; nu] = [-p; b].

The backward differentiates the KKT conditions at the solution (OptNet's equations): with
the KKT matrix K = [[Q, G^T, A^T], [diag(lam) G, -diag(s), 0], [A, 0, 0]] and the incoming
gradient g = dJ/dz*, solve K^T [dz; dlam; dnu] = [-g; 0; 0] once, then

    dJ/dQ = 1/2 (dz z^T + z dz^T)     dJ/dp = dz
    dJ/dG = diag(lam) dlam z^T + lam dz^T     dJ/dh = -diag(lam) dlam
    dJ/dA = dnu z^T + nu dz^T                  dJ/db = -dnu.

The gradient is exact away from degenerate active sets (a constraint with s = lam = 0); at such a
point the interior-point iterates also converge only linearly, and z* is accurate to about 1e-6.
Second derivatives differentiate the KKT system again with the active set (lam > s) held fixed.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError
from lamina.functional.linalg import solve
from lamina.functional.shape import broadcast_to, concat, swapaxes

__all__ = ["qp_solve"]

MAX_ITERATIONS = 60
TOLERANCE = 1e-12
"""A problem is solved when its mean complementarity s * lam is below TOLERANCE and its KKT residuals
below RESIDUAL_TOLERANCE times the largest input entry (plus one)."""
RESIDUAL_TOLERANCE = 1e-10
STALLED = 1e-18
"""Complementarity below which an ill-conditioned problem (residuals stuck by round-off) is stopped."""
FRACTION_TO_BOUNDARY = 0.99


def _step_length(x: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """The largest a in (0, 1] per problem with x + a dx >= 0 (x > 0), for (batch, m) arrays."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(dx < 0, -x / dx, np.inf)
    return np.minimum(1.0, ratios.min(axis=1, initial=np.inf))


def _newton_direction(Q, G, A, s, lam, r_dual, r_ineq, r_eq, r_comp):
    """Solve the linearised KKT system for (dz, ds, dlam, dnu), ``r_comp`` the target of s dlam + lam ds:
    ds and dlam are eliminated, leaving [Q + G^T (lam/s) G, A^T; A, 0] [dz; dnu] = rhs."""
    n, k, m = Q.shape[-1], A.shape[1], G.shape[1]
    H, rhs_z = Q, -r_dual
    if m:
        H = Q + np.einsum("bin,bi,bim->bnm", G, lam / s, G)
        rhs_z = rhs_z - np.einsum("bin,bi->bn", G, (r_comp + lam * r_ineq) / s)
    K = np.zeros((len(Q), n + k, n + k))
    K[:, :n, :n], K[:, :n, n:], K[:, n:, :n] = H, A.transpose(0, 2, 1), A
    step = np.linalg.solve(K, np.concatenate([rhs_z, -r_eq], axis=1)[..., None])[..., 0]
    dz, dnu = step[:, :n], step[:, n:]
    G_dz = np.einsum("bin,bn->bi", G, dz)
    return dz, -r_ineq - G_dz, (r_comp + lam * r_ineq + lam * G_dz) / np.where(s > 0, s, 1.0), dnu


def _mehrotra_step(Q, G, A, z, s, lam, nu, r_dual, r_ineq, r_eq):
    """One predictor-corrector step of the problems given (all arrays share the leading batch axis)."""
    if not G.shape[1]:     # equalities only: one Newton step solves the problem
        dz, _, _, dnu = _newton_direction(Q, G, A, s, lam, r_dual, r_ineq, r_eq, lam)
        return z + dz, s, lam, nu + dnu
    mu = (s * lam).mean(axis=1)
    # predictor: the pure Newton (affine-scaling) direction
    dz, ds, dlam, dnu = _newton_direction(Q, G, A, s, lam, r_dual, r_ineq, r_eq, -s * lam)
    a_aff = np.minimum(_step_length(s, ds), _step_length(lam, dlam))[:, None]
    mu_aff = ((s + a_aff * ds) * (lam + a_aff * dlam)).mean(axis=1)
    sigma = (mu_aff / np.maximum(mu, 1e-300)) ** 3
    # corrector: centred towards sigma mu, with the second-order term of the predictor
    target = -s * lam - ds * dlam + (sigma * mu)[:, None]
    dz, ds, dlam, dnu = _newton_direction(Q, G, A, s, lam, r_dual, r_ineq, r_eq, target)
    a = np.minimum(1.0, FRACTION_TO_BOUNDARY * np.minimum(_step_length(s, ds), _step_length(lam, dlam)))[:, None]
    return z + a * dz, s + a * ds, lam + a * dlam, nu + a * dnu


def _interior_point(Q, p, G, h, A, b):
    """Solve the batch of QPs in float64; returns z (B, n), lam (B, m), nu (B, k), s (B, m). A problem
    stops being updated once solved (see TOLERANCE) or stalled."""
    batch, n = p.shape
    m, k = G.shape[1], A.shape[1]
    z, nu = np.zeros((batch, n)), np.zeros((batch, k))
    s, lam = np.maximum(h, 1.0), np.ones((batch, m))
    scale = 1.0 + max(np.abs(x).max(initial=0) for x in (Q, p, G, h, A, b))
    for _ in range(MAX_ITERATIONS):
        r_dual = (np.einsum("bnm,bm->bn", Q, z) + p + np.einsum("bin,bi->bn", G, lam)
                  + np.einsum("bjn,bj->bn", A, nu))
        r_ineq = np.einsum("bin,bn->bi", G, z) + s - h
        r_eq = np.einsum("bjn,bn->bj", A, z) - b
        residual = np.concatenate([np.abs(r_dual), np.abs(r_ineq), np.abs(r_eq)], axis=1).max(axis=1)
        mu = (s * lam).mean(axis=1) if m else np.zeros(batch)
        unsolved = ((residual >= RESIDUAL_TOLERANCE * scale) | (mu >= TOLERANCE)) & ((mu >= STALLED) | (m == 0))
        live = np.flatnonzero(unsolved)
        if not len(live):
            break
        z[live], s[live], lam[live], nu[live] = _mehrotra_step(
            Q[live], G[live], A[live], z[live], s[live], lam[live], nu[live], r_dual[live], r_ineq[live], r_eq[live])
    return z, lam, nu, s


def _kkt_adjoint(Q, G, A, lam, s, grad_z):
    """Solve K^T [dz; dlam; dnu] = [-grad_z; 0; 0] with the KKT matrix K at the solution."""
    batch, n = grad_z.shape
    m, k = G.shape[1], A.shape[1]
    K = np.zeros((batch, n + m + k, n + m + k))
    K[:, :n, :n] = Q
    K[:, :n, n:n + m] = G.transpose(0, 2, 1)
    K[:, :n, n + m:] = A.transpose(0, 2, 1)
    K[:, n:n + m, :n] = lam[..., None] * G
    K[:, n:n + m, n:n + m] = -s[..., None] * np.eye(m)
    K[:, n + m:, :n] = A
    rhs = np.zeros((batch, n + m + k))
    rhs[:, :n] = -grad_z
    sol = np.linalg.solve(K.transpose(0, 2, 1), rhs[..., None])[..., 0]
    return sol[:, :n], sol[:, n:n + m], sol[:, n + m:]


class QPSolve(Function):
    """z* of the batch of QPs; inputs Q (B|-, n, n), p (B|-, n), G, h, A, b (a leading batch axis or none)."""

    def forward(self, Q, p, G, h, A, b):
        xp = backend.xp
        arrays = [np.asarray(backend.to_numpy(x), dtype=np.float64) for x in (Q, p, G, h, A, b)]
        self.batched = [x.ndim == d for x, d in zip(arrays, (3, 2, 3, 2, 3, 2))]
        batch = max([x.shape[0] for x, flag in zip(arrays, self.batched) if flag], default=1)
        full = [x if flag else np.broadcast_to(x, (batch,) + x.shape) for x, flag in zip(arrays, self.batched)]
        self.Q, _, self.G, _, self.A, _ = full
        self.z, self.lam, self.nu, self.s = _interior_point(*full)
        self.dtypes = [x.dtype for x in (Q, p, G, h, A, b)]
        self.dtype = np.result_type(*self.dtypes)
        z = self.z if any(self.batched) else self.z[0]
        return xp.asarray(z, dtype=self.dtype)

    def composite(self, Q, p, G, h, A, b) -> Tensor:
        """z* again from ops that have second derivatives: the KKT system with the active set held fixed
        (lam > s), [Q, G^T, A^T; D G, D - I, 0; A, 0, 0] [z; lam; nu] = [-p; D h; b], D = diag(active)."""
        batch, n = self.z.shape
        m, k = self.G.shape[1], self.A.shape[1]
        dtype = self.dtype
        active = (self.lam > self.s).astype(dtype)
        Q, p, G, h, A, b = (broadcast_to(x, (batch,) + tuple(x.shape[-d:])) for x, d in
                            zip((Q, p, G, h, A, b), (2, 1, 2, 1, 2, 1)))
        Q = (Q + swapaxes(Q, 1, 2)) * 0.5
        released = Tensor(np.einsum("bi,ij->bij", active - 1.0, np.eye(m)), dtype=dtype)
        K = concat([
            concat([Q, swapaxes(G, 1, 2), swapaxes(A, 1, 2)], axis=2),
            concat([G * Tensor(active[..., None], dtype=dtype), released, Tensor(np.zeros((batch, m, k)), dtype=dtype)],
                   axis=2),
            concat([A, Tensor(np.zeros((batch, k, m + k)), dtype=dtype)], axis=2)], axis=1)
        rhs = concat([-p, h * Tensor(active, dtype=dtype), b], axis=1)
        z = solve(K, rhs)[:, :n]
        return z if any(self.batched) else z[0]

    backward_graph = Function.composite_backward_graph

    def backward(self, dy):
        xp = backend.xp
        g = np.asarray(backend.to_numpy(dy), dtype=np.float64).reshape(self.z.shape)
        dz, dlam, dnu = _kkt_adjoint(self.Q, self.G, self.A, self.lam, self.s, g)
        z, lam, nu = self.z, self.lam, self.nu
        outer = np.einsum("bi,bj->bij", dz, z)
        dQ = 0.5 * (outer + outer.transpose(0, 2, 1))
        scaled = lam * dlam
        dG = np.einsum("bi,bj->bij", scaled, z) + np.einsum("bi,bj->bij", lam, dz)
        dA = np.einsum("bi,bj->bij", dnu, z) + np.einsum("bi,bj->bij", nu, dz)
        grads = (dQ, dz, dG, -scaled, dA, -dnu)
        return tuple(xp.asarray(gr if flag else gr.sum(axis=0), dtype=dtype) if need else None
                     for gr, flag, need, dtype in zip(grads, self.batched, self.needs_grad, self.dtypes))


def _as_float_tensor(x, like_dtype=None) -> Tensor:
    if isinstance(x, Tensor):
        return x
    values = np.asarray(x)
    return Tensor(values, dtype=like_dtype or (values.dtype if values.dtype.kind == "f" else np.float64))


def _check(name: str, x: Tensor, trailing: tuple[int, ...]) -> None:
    if x.shape[-len(trailing):] != trailing or x.ndim not in (len(trailing), len(trailing) + 1):
        raise ShapeError(f"qp_solve: {name} must have shape {trailing} or (batch, {', '.join(map(str, trailing))}), "
                         f"got {x.shape}")


def qp_solve(Q, p, G=None, h=None, A=None, b=None, return_duals: bool = False):
    """z* = argmin 1/2 z^T Q z + p^T z s.t. G z <= h, A z = b for each problem of a batch; see the module
    docstring. Q (n, n), p (n,), G (m, n), h (m,), A (k, n), b (k,), each optionally with a leading batch axis
    (the others are shared). Arrays that are not tensors take p's dtype; z* ((batch,) n) comes in the widest
    input dtype (the solve itself runs in float64). With ``return_duals`` the duals (lam, nu) of the
    inequalities and equalities come too, as constants. Differentiable in every input."""
    p = _as_float_tensor(p)
    dtype = p.dtype
    Q = _as_float_tensor(Q, dtype)
    n = p.shape[-1]
    if (G is None) != (h is None) or (A is None) != (b is None):
        raise ValueError("qp_solve: give G with h and A with b (or neither of a pair)")
    G = _as_float_tensor(np.zeros((0, n)), dtype) if G is None else _as_float_tensor(G, dtype)
    h = _as_float_tensor(np.zeros(0), dtype) if h is None else _as_float_tensor(h, dtype)
    A = _as_float_tensor(np.zeros((0, n)), dtype) if A is None else _as_float_tensor(A, dtype)
    b = _as_float_tensor(np.zeros(0), dtype) if b is None else _as_float_tensor(b, dtype)
    m, k = G.shape[-2], A.shape[-2]
    for name, x, trailing in (("Q", Q, (n, n)), ("p", p, (n,)), ("G", G, (m, n)), ("h", h, (m,)),
                              ("A", A, (k, n)), ("b", b, (k,))):
        _check(name, x, trailing)
    batches = {x.shape[0] for x, d in ((Q, 3), (p, 2), (G, 3), (h, 2), (A, 3), (b, 2)) if x.ndim == d}
    if len(batches) > 1:
        raise ShapeError(f"qp_solve: the inputs with a batch axis disagree on its size: {sorted(batches)}")
    fn_out = QPSolve.apply(Q, p, G, h, A, b)
    if not return_duals:
        return fn_out
    node = fn_out._ctx
    if node is None:   # recompute the duals when no graph was recorded
        node = QPSolve()
        node.forward(Q.data, p.data, G.data, h.data, A.data, b.data)
    single = fn_out.ndim == 1
    lam, nu = (node.lam[0] if single else node.lam), (node.nu[0] if single else node.nu)
    return fn_out, Tensor(lam, dtype=fn_out.dtype), Tensor(nu, dtype=fn_out.dtype)
