"""qp_solve: the interior-point solution against SciPy and a brute-force active-set search, and its
implicit (KKT) gradient against finite differences and a PyTorch solve on the active set."""

import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from tests.helpers import check_gradients, check_second_derivatives, compare_with_torch

import lamina
from lamina import functional as F
from lamina.errors import ShapeError


def random_qp(n=4, m=6, k=2, seed=0, batch=None):
    """A strictly convex QP that z0 satisfies strictly (h = G z0 + slack, b = A z0)."""
    rng = np.random.default_rng(seed)
    lead = () if batch is None else (batch,)
    L = rng.standard_normal(lead + (n, n))
    Q = L @ np.swapaxes(L, -1, -2) + np.eye(n)
    p = 3 * rng.standard_normal(lead + (n,))
    G = rng.standard_normal(lead + (m, n))
    z0 = rng.standard_normal(lead + (n,))
    h = np.einsum("...ij,...j->...i", G, z0) + rng.uniform(0.1, 1.0, lead + (m,))
    A = rng.standard_normal(lead + (k, n))
    b = np.einsum("...ij,...j->...i", A, z0)
    return Q, p, G, h, A, b


def scipy_qp(Q, p, G, h, A, b):
    constraints = [{"type": "ineq", "fun": lambda z: h - G @ z, "jac": lambda z: -G}]
    if len(b):
        constraints.append({"type": "eq", "fun": lambda z: A @ z - b, "jac": lambda z: A})
    # ftol 1e-12: at 1e-15 SLSQP may stop at the optimum with "positive directional derivative" (it
    # cannot improve to that tolerance) and report failure; at 1e-12 it agrees with qp_solve to ~1e-12
    result = minimize(lambda z: 0.5 * z @ Q @ z + p @ z, np.zeros(len(p)), jac=lambda z: Q @ z + p,
                      method="SLSQP", constraints=constraints, options={"ftol": 1e-12, "maxiter": 1000})
    assert result.success, result.message
    return result.x


def brute_force_qp(Q, p, G, h):
    """Try every active set: the feasible KKT point with non-negative multipliers is the optimum."""
    n, m = len(p), len(h)
    for size in range(n + 1):
        for active in itertools.combinations(range(m), size):
            Ga = G[list(active)]
            K = np.block([[Q, Ga.T], [Ga, np.zeros((size, size))]])
            try:
                sol = np.linalg.solve(K, np.concatenate([-p, h[list(active)]]))
            except np.linalg.LinAlgError:
                continue
            z, lam = sol[:n], sol[n:]
            if (G @ z <= h + 1e-9).all() and (lam >= -1e-9).all():
                return z
    raise AssertionError("no KKT point found")


def test_qp_solve_matches_scipy_on_a_batch_of_random_feasible_problems():
    Q, p, G, h, A, b = random_qp(batch=3, seed=1)
    z = F.qp_solve(Q, p, G, h, A, b).numpy()
    assert z.shape == (3, 4)
    for i in range(3):
        np.testing.assert_allclose(z[i], scipy_qp(Q[i], p[i], G[i], h[i], A[i], b[i]), atol=1e-8)


def test_qp_solve_matches_a_brute_force_active_set_enumeration():
    for seed in range(4):
        Q, p, G, h, _, _ = random_qp(n=2, m=5, k=0, seed=seed)
        z = F.qp_solve(Q, p, G, h).numpy()
        np.testing.assert_allclose(z, brute_force_qp(Q, p, G, h), atol=1e-8)


def test_duals_satisfy_the_kkt_conditions():
    Q, p, G, h, A, b = random_qp(seed=2)
    z, lam, nu = (t.numpy() for t in F.qp_solve(Q, p, G, h, A, b, return_duals=True))
    np.testing.assert_allclose(Q @ z + p + G.T @ lam + A.T @ nu, 0, atol=1e-9)
    slack = h - G @ z
    assert (lam >= -1e-12).all() and (slack >= -1e-12).all()
    np.testing.assert_allclose(lam * slack, 0, atol=1e-10)
    assert (lam > 1e-3).sum() >= 1   # the test problem has active constraints


def test_equality_only_problem_equals_the_closed_form():
    Q, p, _, _, A, b = random_qp(n=5, k=2, seed=3)
    K = np.block([[Q, A.T], [A, np.zeros((2, 2))]])
    closed = np.linalg.solve(K, np.concatenate([-p, b]))[:5]
    np.testing.assert_allclose(F.qp_solve(Q, p, A=A, b=b).numpy(), closed, atol=1e-12)
    np.testing.assert_allclose(F.qp_solve(Q, p).numpy(), np.linalg.solve(Q, -p), atol=1e-12)


def nondegenerate(Q, p, G, h, A, b):
    z, lam, _ = (t.numpy() for t in F.qp_solve(Q, p, G, h, A, b, return_duals=True))
    return np.maximum(lam, h - np.einsum("...ij,...j->...i", G, z)).min() > 1e-3


@pytest.mark.parametrize("batch", [None, 2])
def test_gradients_for_every_input_equal_finite_differences(batch):
    Q, p, G, h, A, b = random_qp(n=3, m=4, k=1, seed=4, batch=batch)
    assert nondegenerate(Q, p, G, h, A, b)

    def solve(Q, p, G, h, A, b):
        sym = (Q + F.swapaxes(Q, -1, -2)) * 0.5     # keep Q symmetric under the perturbations
        return F.qp_solve(sym, p, G, h, A, b)

    assert check_gradients(solve, Q, p, G, h, A, b, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("batch", [None, 2])
def test_second_derivatives_hold_the_active_set_fixed(batch):
    Q, p, G, h, A, b = random_qp(n=3, m=4, k=1, seed=4, batch=batch)

    def solve(Q, p, G, h, A, b):
        return F.qp_solve((Q + F.swapaxes(Q, -1, -2)) * 0.5, p, G, h, A, b)

    assert check_second_derivatives(solve, Q, p, G, h, A, b)


def test_shared_matrices_with_batched_vectors_get_summed_gradients():
    Q, p, G, h, A, b = random_qp(n=3, m=4, k=1, seed=5)
    ps = p + 0.1 * np.random.default_rng(0).standard_normal((2, 3))
    assert nondegenerate(Q, ps, G, h, A, b)

    def solve(Q, p, h):
        return F.qp_solve((Q + F.swapaxes(Q, 0, 1)) * 0.5, p, G, h, A, b)

    assert check_gradients(solve, Q, ps, h, atol=1e-6, rtol=1e-4)


def test_gradients_match_a_torch_solve_of_the_kkt_system_on_the_active_set():
    Q, p, G, h, A, b = random_qp(n=4, m=6, k=1, seed=6)
    z, lam, _ = (t.numpy() for t in F.qp_solve(Q, p, G, h, A, b, return_duals=True))
    active = np.flatnonzero(lam > 1e-6)
    assert 1 <= len(active) and np.maximum(lam, h - G @ z).min() > 1e-3
    n, a, k = 4, len(active), 1

    def torch_solve(Q, p, G, h, A, b):
        Ga = G[active]
        top = torch.cat([(Q + Q.T) / 2, Ga.T, A.T], dim=1)
        mid = torch.cat([Ga, torch.zeros(a, a + k, dtype=Q.dtype)], dim=1)
        low = torch.cat([A, torch.zeros(k, a + k, dtype=Q.dtype)], dim=1)
        rhs = torch.cat([-p, h[active], b])
        return torch.linalg.solve(torch.cat([top, mid, low]), rhs)[:n]

    compare_with_torch(lambda *xs: F.qp_solve(*xs), torch_solve, Q, p, G, h, A, b, dtype=np.float64, rtol=1e-6)


def test_float32_inputs_give_float32_output():
    Q, p, G, h, A, b = (x.astype(np.float32) for x in random_qp(seed=7))
    z = F.qp_solve(Q, p, G, h, A, b)
    assert z.dtype == np.float32
    np.testing.assert_allclose(z.numpy(), F.qp_solve(*random_qp(seed=7)).numpy(), atol=1e-4)


def test_bad_inputs_raise_clear_errors():
    Q, p, G, h, A, b = random_qp(seed=8)
    with pytest.raises(ShapeError, match="qp_solve: G"):
        F.qp_solve(Q, p, G[:, :2], h)
    with pytest.raises(ValueError, match="G with h"):
        F.qp_solve(Q, p, G)
    with pytest.raises(ShapeError, match="batch axis"):
        F.qp_solve(np.stack([Q] * 2), np.stack([p] * 3))
    assert isinstance(F.qp_solve(lamina.tensor(Q), p), lamina.Tensor)
