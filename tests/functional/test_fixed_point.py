"""Fixed-point solvers: the same fixed point as SciPy, Anderson's iterates as the implicit-layers
tutorial's (a torch rewrite), step counts, batches, tensors and the errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize
import torch

from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional import (
    FixedPointError,
    anderson_acceleration,
    broyden,
    fixed_point_iteration,
    solve_fixed_point,
)

SOLVERS = [fixed_point_iteration, anderson_acceleration, broyden]


def _contraction(n: int, gamma: float, seed: int = 0, low: float = -1.0) -> tuple[np.ndarray, np.ndarray]:
    """A symmetric A with eigenvalues spread over [low gamma, gamma] and a vector b."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    return q @ np.diag(np.linspace(low * gamma, gamma, n)) @ q.T, rng.standard_normal(n)


@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: s.__name__)
def test_same_fixed_point_as_scipy_fixed_point(solver):
    a, b = _contraction(12, 0.8)

    def f(z):
        return np.tanh(a @ z + b)

    reference = scipy.optimize.fixed_point(f, np.zeros(12), xtol=1e-14, maxiter=5000, method="iteration")
    result = solver(f, np.zeros(12), tol=1e-13, max_iter=400)
    assert result.converged and result.residual <= 1e-13
    assert result.steps == len(result.residuals)
    np.testing.assert_allclose(result.solution, reference, atol=1e-11)


@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: s.__name__)
def test_same_root_as_scipy_root_on_a_linear_map(solver):
    a, b = _contraction(10, 0.6, seed=1)
    root = scipy.optimize.root(lambda z: a @ z + b - z, np.zeros(10), tol=1e-14).x
    np.testing.assert_allclose(np.linalg.solve(np.eye(10) - a, b), root, atol=1e-12)
    result = solver(lambda z: a @ z + b, np.zeros(10), tol=1e-13, max_iter=400)
    np.testing.assert_allclose(result.solution, root, atol=1e-11)


def test_anderson_and_broyden_take_far_fewer_steps_than_plain_iteration():
    a, b = _contraction(30, 0.97, seed=2, low=0.0)

    def f(z):
        return a @ z + b

    plain = fixed_point_iteration(f, np.zeros(30), tol=1e-8, max_iter=5000)
    anderson = anderson_acceleration(f, np.zeros(30), tol=1e-8, max_iter=400)
    quasi_newton = broyden(f, np.zeros(30), tol=1e-8, max_iter=400)
    assert plain.converged and anderson.converged and quasi_newton.converged
    assert plain.steps > 300
    assert anderson.steps * 3 < plain.steps, (anderson.steps, plain.steps)
    assert quasi_newton.steps * 3 < plain.steps, (quasi_newton.steps, plain.steps)
    exact = np.linalg.solve(np.eye(30) - a, b)
    for result in (plain, anderson, quasi_newton):          # error <= residual / (1 - 0.97)
        np.testing.assert_allclose(result.solution, exact, atol=1e-5)


def _tutorial_anderson(f, x0, m, lam, max_iter, tol, beta):
    """The implicit-layers tutorial's Anderson acceleration, batched, in torch."""
    bsz, d = x0.shape
    xs = torch.zeros(bsz, m, d, dtype=x0.dtype)
    fs = torch.zeros(bsz, m, d, dtype=x0.dtype)
    xs[:, 0], fs[:, 0] = x0, f(x0)
    xs[:, 1], fs[:, 1] = fs[:, 0], f(fs[:, 0])
    h = torch.zeros(bsz, m + 1, m + 1, dtype=x0.dtype)
    h[:, 0, 1:] = h[:, 1:, 0] = 1
    y = torch.zeros(bsz, m + 1, 1, dtype=x0.dtype)
    y[:, 0] = 1
    residuals = []
    for k in range(2, max_iter):
        n = min(k, m)
        g = fs[:, :n] - xs[:, :n]
        h[:, 1:n + 1, 1:n + 1] = torch.bmm(g, g.transpose(1, 2)) + lam * torch.eye(n, dtype=x0.dtype)[None]
        alpha = torch.linalg.solve(h[:, :n + 1, :n + 1], y[:, :n + 1])[:, 1:n + 1, 0]
        xs[:, k % m] = beta * (alpha[:, None] @ fs[:, :n])[:, 0] + (1 - beta) * (alpha[:, None] @ xs[:, :n])[:, 0]
        fs[:, k % m] = f(xs[:, k % m])
        residuals.append((fs[:, k % m] - xs[:, k % m]).norm().item() / (1e-9 + fs[:, k % m].norm().item()))
        if residuals[-1] < tol:
            break
    return xs[:, k % m], residuals


@pytest.mark.parametrize("beta", [1.0, 0.7])
def test_anderson_follows_the_tutorial_iterates(beta):
    rng = np.random.default_rng(3)
    w = rng.standard_normal((8, 8)) * 0.3
    x = rng.standard_normal((3, 8))
    max_iter = 12
    ours = anderson_acceleration(lambda z: np.tanh(z @ w + x), np.zeros((3, 8)), m=4, lam=1e-4, beta=beta,
                                 tol=0.0, max_iter=max_iter, relative_lam=False, raise_on_failure=False)
    wt, xt = torch.tensor(w), torch.tensor(x)
    final, residuals = _tutorial_anderson(lambda z: torch.tanh(z @ wt + xt), torch.zeros(3, 8, dtype=torch.float64),
                                          m=4, lam=1e-4, max_iter=max_iter, tol=0.0, beta=beta)
    np.testing.assert_allclose(ours.residuals[2:], residuals, rtol=1e-8)     # the tutorial starts counting at 2
    best = int(np.argmin(ours.residuals))
    assert best == len(ours.residuals) - 1
    np.testing.assert_allclose(ours.solution, final.numpy(), rtol=1e-10)


def test_relative_regularisation_keeps_anderson_fast_at_tight_tolerances():
    a, b = _contraction(30, 0.95, seed=4)
    fixed = anderson_acceleration(lambda z: a @ z + b, np.zeros(30), tol=1e-10, max_iter=300, relative_lam=False,
                                  raise_on_failure=False)
    relative = anderson_acceleration(lambda z: a @ z + b, np.zeros(30), tol=1e-10, max_iter=300)
    assert relative.converged and relative.steps < 200
    assert not fixed.converged


def test_batches_and_tensors():
    rng = np.random.default_rng(5)
    w = rng.standard_normal((6, 6)) * 0.2
    x = rng.standard_normal((4, 6))
    expected = fixed_point_iteration(lambda z: np.tanh(z @ w + x), np.zeros((4, 6)), tol=1e-14, max_iter=500).solution
    for solver in ("anderson", "broyden", "fixed_point"):
        result = solve_fixed_point(solver, lambda z: (z @ Tensor(w, dtype=np.float64) + Tensor(x, dtype=np.float64))
                                   .tanh(), Tensor(np.zeros((4, 6)), dtype=np.float64), tol=1e-13, max_iter=200)
        assert isinstance(result.solution, Tensor) and result.solution.shape == (4, 6)
        np.testing.assert_allclose(result.solution.data, expected, atol=1e-11)


def test_broyden_with_little_memory_still_converges():
    a, b = _contraction(20, 0.9, seed=6)
    result = broyden(lambda z: np.tanh(a @ z + b), np.zeros(20), tol=1e-10, max_iter=200, memory=3)
    assert result.converged
    np.testing.assert_allclose(result.solution, np.tanh(a @ result.solution + b), atol=1e-8)


def test_non_convergence_raises_with_the_residual():
    with pytest.raises(FixedPointError, match=r"did not converge in 5 evaluations.*residual"):
        fixed_point_iteration(lambda z: 2.0 * z + 1.0, np.zeros(3), max_iter=5)
    result = anderson_acceleration(lambda z: np.cos(z), np.zeros(3), max_iter=3, tol=1e-12, raise_on_failure=False)
    assert not result.converged and result.steps == 3 and np.isfinite(result.residual)


def test_shape_and_argument_errors():
    with pytest.raises(ShapeError, match=r"broyden: f returned shape \(4,\) for z of shape \(3,\)"):
        broyden(lambda z: np.zeros(4), np.zeros(3))
    with pytest.raises(ValueError, match="max_iter"):
        anderson_acceleration(np.cos, np.zeros(3), max_iter=0)
    with pytest.raises(ValueError, match="unknown solver"):
        solve_fixed_point("newton", np.cos, np.zeros(3))
