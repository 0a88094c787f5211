"""Optimal transport: exact plans against SciPy's linear programming and assignment, the 1-D
and sliced distances, Sinkhorn's plans, costs and gradients against a PyTorch rewrite of the
unrolled iterations, the Sinkhorn divergence, unbalanced transport, barycenters,
Gromov-Wasserstein, and fitting a point cloud to two moons; the README's example runs."""


import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment, linprog
from scipy.stats import wasserstein_distance
from tests.helpers import check_gradients, check_second_derivatives, compare_with_torch

import lamina
import lamina.functional as F
from helpers import run_readme_section
from lamina.errors import ShapeError


def clouds(n=6, m=7, d=2, seed=0, shift=1.0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)), rng.standard_normal((m, d)) + shift


def histogram(size, seed):
    w = np.random.default_rng(seed).uniform(0.2, 1.0, size)
    return w / w.sum()


def squared_costs(x, y):
    return ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)


def linprog_cost(a, b, M):
    n, m = M.shape
    rows = np.kron(np.eye(n), np.ones((1, m)))
    columns = np.kron(np.ones((1, n)), np.eye(m))
    return linprog(M.ravel(), A_eq=np.vstack([rows, columns]), b_eq=np.concatenate([a, b]), bounds=(0, None)).fun


# -- exact transport -----------------------------------------------------------------------
def test_emd_is_the_linear_program_optimum_with_the_marginals():
    x, y = clouds()
    a, b, M = histogram(6, 1), histogram(7, 2), squared_costs(x, y)
    plan = F.emd(a, b, M)
    assert np.allclose(plan.sum(1), a, atol=1e-9) and np.allclose(plan.sum(0), b, atol=1e-9) and plan.min() >= 0
    assert np.isclose((plan * M).sum(), linprog_cost(a, b, M), rtol=1e-9)
    assert np.isclose(F.emd2(a, b, M).item(), linprog_cost(a, b, M), rtol=1e-9)


def test_emd_of_uniform_equal_sets_is_the_assignment():
    x, y = clouds(8, 8, seed=3)
    M = squared_costs(x, y)
    rows, cols = linear_sum_assignment(M)
    plan = F.emd(None, None, M)
    expected = np.zeros((8, 8))
    expected[rows, cols] = 1 / 8
    assert np.array_equal(plan, expected)
    assert np.isclose(F.emd2(None, None, M).item(), linprog_cost(np.full(8, 1 / 8), np.full(8, 1 / 8), M))


def test_emd2_gradient_is_the_plan():
    x, y = clouds()
    a, b, M = histogram(6, 1), histogram(7, 2), squared_costs(x, y)
    cost = lamina.tensor(M, requires_grad=True, dtype=np.float64)
    F.emd2(a, b, cost).backward()
    assert np.allclose(cost.grad, F.emd(a, b, M))


def test_wasserstein_1d_equals_emd_and_scipy():
    rng = np.random.default_rng(4)
    u, v = rng.standard_normal(9), rng.standard_normal(6) * 2 + 0.5
    wu, wv = histogram(9, 5), histogram(6, 6)
    for p in (1, 2, 3):
        exact = F.emd2(wu, wv, np.abs(u[:, None] - v[None, :]) ** p).item()
        assert np.isclose(F.wasserstein_1d(u, v, wu, wv, p=p).item(), exact, rtol=1e-9)
    assert np.isclose(F.wasserstein_1d(u, v).item(), wasserstein_distance(u, v), rtol=1e-12)
    assert np.isclose(F.wasserstein_1d(u, v, wu, wv).item(), wasserstein_distance(u, v, wu, wv), rtol=1e-12)
    columns = F.wasserstein_1d(np.stack([u, -u], 1), np.stack([v[:4], v[2:]], 1), p=2)
    assert columns.shape == (2,)
    assert np.isclose(columns.numpy()[1], F.wasserstein_1d(-u, v[2:6], p=2).item())


def test_wasserstein_1d_gradients_against_torch():
    rng = np.random.default_rng(7)
    u, v = rng.standard_normal(5), rng.standard_normal(3)

    def quantile_form(u, v):   # both sizes cut [0, 1] into 15 steps of 1/15
        us, vs = torch.sort(u).values, torch.sort(v).values
        return ((us.repeat_interleave(3) - vs.repeat_interleave(5)) ** 2).sum() / 15

    compare_with_torch(lambda u, v: F.wasserstein_1d(u, v, p=2), quantile_form, u, v, dtype=np.float64)
    assert check_gradients(lambda u, v: F.wasserstein_1d(u, v, p=2), u, v)


def test_sliced_wasserstein_is_zero_for_equal_clouds_and_descends():
    x, y = clouds(12, 12, seed=8, shift=2.0)
    assert F.sliced_wasserstein(x, x, 20, seed=0).item() == 0.0
    assert check_gradients(lambda x, y: F.sliced_wasserstein(x, y, 5, seed=1), x, y)
    moving = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    losses = []
    for step in range(15):
        loss = F.sliced_wasserstein(moving, y, 20, seed=step) ** 2
        loss.backward()
        losses.append(loss.item())
        moving = lamina.tensor(moving.numpy() - 0.5 * 12 * moving.grad / 2, requires_grad=True, dtype=np.float64)
    assert losses[-1] < 0.1 * losses[0]


# -- entropic transport ----------------------------------------------------------------------
def test_sinkhorn_plan_has_the_marginals_and_methods_agree():
    x, y = clouds()
    a, b, M = histogram(6, 1), histogram(7, 2), squared_costs(x, y)
    plan = F.sinkhorn(a, b, M, 0.5, tol=1e-10).numpy()
    assert np.abs(plan.sum(1) - a).max() < 1e-10 and np.abs(plan.sum(0) - b).max() < 1e-12
    standard = F.sinkhorn(a, b, M, 0.5, method="standard", tol=1e-10).numpy()
    assert np.allclose(plan, standard, atol=1e-10)
    assert np.isclose(F.sinkhorn2(a, b, M, 0.5).item(), F.sinkhorn2(a, b, M, 0.5, method="standard").item())


def test_sinkhorn_cost_tends_to_the_exact_cost():
    x, y = clouds()
    a, b, M = histogram(6, 1), histogram(7, 2), squared_costs(x, y)
    exact = F.emd2(a, b, M).item()
    gaps = [F.sinkhorn2(a, b, M, reg, num_iter=20000).item() - exact for reg in (1.0, 0.3, 0.1, 0.03)]
    assert all(gap > 0 for gap in gaps) and all(np.diff(gaps) < 0), gaps
    assert gaps[-1] < 0.1 * gaps[0]


def torch_sinkhorn2(a, b, M, reg, iterations):
    """Log-domain Sinkhorn unrolled: g, f alternately make the marginals exact, then
    <P, M> + reg KL(P | a b^T) of the plan P = exp((f + g - M) / reg)."""
    f, g = torch.zeros_like(a), torch.zeros_like(b)
    for _ in range(iterations):
        f = reg * torch.log(a) - reg * torch.logsumexp((g[None, :] - M) / reg, dim=1)
        g = reg * torch.log(b) - reg * torch.logsumexp((f[:, None] - M) / reg, dim=0)
    log_plan = (f[:, None] + g[None, :] - M) / reg
    plan = torch.exp(log_plan)
    kl = (plan * (log_plan - torch.log(a)[:, None] - torch.log(b)[None, :])).sum() - plan.sum() + a.sum() * b.sum()
    return (plan * M).sum() + reg * kl


def test_sinkhorn2_unrolled_gradients_against_torch():
    x, y = clouds(4, 5)
    a, b, M = histogram(4, 1), histogram(5, 2), squared_costs(x, y)
    compare_with_torch(lambda a, b, M: F.sinkhorn2(a, b, M, 0.7, num_iter=6, tol=0),
                       lambda a, b, M: torch_sinkhorn2(a, b, M, 0.7, 6), a, b, M, dtype=np.float64)

    def lamina_clouds(x, y):
        return F.sinkhorn2(a, b, F.ot_cost_matrix(x, y), 0.7, num_iter=6, tol=0)

    def torch_clouds(x, y):
        return torch_sinkhorn2(torch.tensor(a), torch.tensor(b), ((x[:, None] - y[None]) ** 2).sum(-1), 0.7, 6)

    compare_with_torch(lamina_clouds, torch_clouds, x, y, dtype=np.float64)
    assert check_gradients(lambda a, b, M: F.sinkhorn2(a / a.sum(), b / b.sum(), M, 0.7, num_iter=4, tol=0), a, b, M)
    assert check_gradients(lambda M: F.sinkhorn(a, b, M, 0.7, method="standard", num_iter=4, tol=0), M)
    assert check_second_derivatives(lambda M: F.sinkhorn2(a, b, M, 0.7, num_iter=3, tol=0), M)


def test_sinkhorn2_envelope_gradient_is_the_converged_gradient():
    x, y = clouds(4, 5)
    a, b, M = histogram(4, 1), histogram(5, 2), squared_costs(x, y)
    grads = {}
    for mode in ("unroll", "envelope"):
        cost = lamina.tensor(M, requires_grad=True, dtype=np.float64)
        value = F.sinkhorn2(a, b, cost, 0.5, num_iter=300, tol=0, gradient=mode)
        value.backward()
        grads[mode] = (value.item(), cost.grad)
    assert np.isclose(grads["unroll"][0], grads["envelope"][0], rtol=1e-12)
    assert np.allclose(grads["unroll"][1], grads["envelope"][1], atol=1e-9)
    assert np.allclose(grads["envelope"][1], F.sinkhorn(a, b, M, 0.5).numpy(), atol=1e-9)


def test_sinkhorn_divergence_vanishes_only_on_equal_clouds():
    x, y = clouds(8, 8, seed=2)
    assert abs(F.sinkhorn_divergence(x, x, 0.1).item()) < 1e-12
    assert F.sinkhorn_divergence(x, y, 0.1).item() > 0.1
    assert 0 < F.sinkhorn_divergence(x, x + 0.05, 0.1).item() < F.sinkhorn_divergence(x, x + 0.5, 0.1).item()


def test_unbalanced_sinkhorn_tends_to_the_balanced_plan():
    x, y = clouds()
    a, b, M = histogram(6, 1), histogram(7, 2), squared_costs(x, y)
    balanced = F.sinkhorn(a, b, M, 0.5).numpy()
    gaps = [np.abs(F.unbalanced_sinkhorn(a, b, M, 0.5, reg_m).numpy() - balanced).sum() for reg_m in (1, 10, 100, 1e5)]
    assert all(np.diff(gaps) < 0) and gaps[-1] < 1e-4, gaps
    heavier = F.unbalanced_sinkhorn(a, 3 * b, M, 0.5, 1.0).numpy()     # masses may differ
    assert 1.0 < heavier.sum() < 3.0


def test_barycenter_of_shifted_gaussians_lies_between_them():
    grid = np.linspace(0, 1, 40)
    M = (grid[:, None] - grid[None, :]) ** 2

    def gaussian(mean):
        h = np.exp(-((grid - mean) ** 2) / (2 * 0.05 ** 2)) + 1e-12
        return h / h.sum()

    A = np.stack([gaussian(0.25), gaussian(0.7)], 1)
    for w in (0.5, 0.8):
        middle = F.barycenter(A, M, 1e-3, weights=[w, 1 - w]).numpy()
        assert np.isclose(middle.sum(), 1.0, atol=1e-6)
        assert abs((middle * grid).sum() / middle.sum() - (w * 0.25 + (1 - w) * 0.7)) < 0.01
        assert middle[grid < 0.15].sum() < 0.01 and middle[grid > 0.8].sum() < 0.01   # a moved bump, not a mixture
    assert check_gradients(lambda A: F.barycenter(A, M[:5, :5], 0.1, num_iter=3, tol=0),
                           np.stack([histogram(5, 1), histogram(5, 2)], 1))


def torch_unbalanced(a, b, M, reg, reg_m, iterations):
    """Chizat et al.'s scaling u = (a / K v)^rho, v = (b / K^T u)^rho, rho = reg_m / (reg_m + reg)."""
    kernel, rho = torch.exp(-M / reg), reg_m / (reg_m + reg)
    v = torch.ones_like(b)
    for _ in range(iterations):
        u = (a / (kernel @ v)) ** rho
        v = (b / (kernel.T @ u)) ** rho
    return u[:, None] * kernel * v[None, :]


def torch_barycenter(A, M, reg, w, iterations):
    kernel, v = torch.exp(-M / reg), torch.ones_like(A)
    for _ in range(iterations):
        spread = kernel.T @ (A / (kernel @ v))
        p = torch.exp((torch.log(spread) * w).sum(1))
        v = p[:, None] / spread
    return p


def test_unbalanced_and_barycenter_against_torch():
    x, y = clouds(4, 5)
    a, b, M = histogram(4, 1), 2 * histogram(5, 2), squared_costs(x, y)
    compare_with_torch(lambda a, b, M: F.unbalanced_sinkhorn(a, b, M, 0.7, 2.0, num_iter=5, tol=0),
                       lambda a, b, M: torch_unbalanced(a, b, M, 0.7, 2.0, 5), a, b, M, dtype=np.float64)
    A = np.stack([histogram(5, 3), histogram(5, 4)], 1)
    C = squared_costs(y, y)
    compare_with_torch(lambda A, C: F.barycenter(A, C, 0.5, weights=[0.3, 0.7], num_iter=4, tol=0),
                       lambda A, C: torch_barycenter(A, C, 0.5, torch.tensor([0.3, 0.7], dtype=torch.float64), 4),
                       A, C, dtype=np.float64)


def test_entropic_gromov_wasserstein_matches_isometric_spaces():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((6, 2)) * np.array([3.0, 1.0])
    order = rng.permutation(6)
    rotation = np.array([[0.0, -1.0], [1.0, 0.0]])
    y = x[order] @ rotation.T
    C1, C2 = np.sqrt(squared_costs(x, x)), np.sqrt(squared_costs(y, y))
    plan = F.entropic_gromov_wasserstein(C1, C2, epsilon=0.01, num_iter=30).numpy()
    matched = plan.argmax(axis=1)
    assert np.array_equal(order[matched], np.arange(6))


def test_sinkhorn_balance_scales_to_the_targets():
    matrix = np.random.default_rng(0).uniform(0.1, 1.0, (2, 3, 4))
    out = F.sinkhorn_balance(matrix, 1 / 3, 1 / 4, num_iter=500, tol=1e-12).numpy()
    assert np.allclose(out.sum(-1), 1 / 3) and np.allclose(out.sum(-2), 1 / 4)
    assert check_gradients(lambda m: F.sinkhorn_balance(m, 1.0, 0.75, num_iter=3), matrix[0])


def test_errors_are_clear():
    M = np.ones((3, 4))
    with pytest.raises(ValueError, match=r"sinkhorn: balanced transport needs marginals of the same positive mass"):
        F.sinkhorn(np.full(3, 1 / 3), np.full(4, 0.5), M, 0.1)
    with pytest.raises(ValueError, match=r"emd: costs must be non-negative"):
        F.emd(None, None, -M)
    with pytest.raises(ValueError, match=r"emd: the weights a must be finite and non-negative"):
        F.emd(np.array([1.5, -0.5, 0.0]), None, M)
    with pytest.raises(ShapeError, match=r"sinkhorn2: b must be a vector of 4 weights"):
        F.sinkhorn2(None, np.full(3, 1 / 3), M, 0.1)
    with pytest.raises(ValueError, match=r"sinkhorn: reg must be a finite number > 0, got 0"):
        F.sinkhorn(None, None, M, 0)
    with pytest.raises(ValueError, match=r"sinkhorn: method must be one of"):
        F.sinkhorn(None, None, M, 0.1, method="fast")
    with pytest.raises(ShapeError, match=r"sliced_wasserstein: expected point clouds"):
        F.sliced_wasserstein(np.ones((3, 2)), np.ones((3, 3)))
    with pytest.raises(FloatingPointError, match="use method='log'"):
        F.sinkhorn(None, None, 1000 * M + np.eye(3, 4), 1e-3, method="standard")


# -- learning: a cloud flows to two moons ---------------------------------------------------
def two_moons(n, seed):
    rng = np.random.default_rng(seed)
    angles = rng.uniform(0, np.pi, n)
    upper = rng.random(n) < 0.5
    points = np.where(upper[:, None], np.stack([np.cos(angles), np.sin(angles)], 1),
                      np.stack([1 - np.cos(angles), 0.5 - np.sin(angles)], 1))
    return points + 0.05 * rng.standard_normal((n, 2))


def test_a_cloud_fitted_to_two_moons_by_the_sinkhorn_divergence():
    target = two_moons(48, seed=0)
    cloud = np.random.default_rng(1).standard_normal((48, 2)) * 0.3 + [0.5, 0.25]
    divergences = []
    for _ in range(25):
        x = lamina.tensor(cloud, requires_grad=True, dtype=np.float64)
        loss = F.sinkhorn_divergence(x, target, 0.01, num_iter=200, tol=1e-6, gradient="envelope")
        loss.backward()
        divergences.append(loss.item())
        cloud = cloud - 0.1 * 48 * x.grad         # each point a fifth of the way to its transport target
    print(f"sinkhorn divergence to two moons: {divergences[0]:.4f} -> {divergences[-1]:.2e}")
    assert divergences[-1] < 0.05 * divergences[0]


def test_readme_example_runs():
    printed, _ = run_readme_section("Optimal transport")
    values = dict(line.split(" = ") for line in printed.splitlines())
    assert float(values["emd"]) <= float(values["sinkhorn"])
    assert float(values["divergence"]) > 0
