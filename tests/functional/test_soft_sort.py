"""soft_sort, soft_rank and soft_topk: against brute-force projections onto the permutahedron
(SciPy), a float64 torch rewrite of pool-adjacent-violators, finite differences and limits."""

import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

import lamina
import lamina.functional as F
from helpers import check_gradients, check_second_derivatives, compare_with_torch, randn, run_readme_section


# -- brute force: the projections as constrained problems solved by SciPy ----------------
def _permutahedron_constraints(w: np.ndarray) -> list[dict]:
    """mu in P(w): sum mu = sum w and, for every proper subset S, sum_S mu <= the |S| largest w."""
    n = len(w)
    top = np.cumsum(np.sort(w)[::-1])
    constraints = [{"type": "eq", "fun": lambda mu: mu.sum() - top[-1], "jac": lambda mu: np.ones(n)}]
    for size in range(1, n):
        for subset in itertools.combinations(range(n), size):
            row = np.zeros(n)
            row[list(subset)] = 1.0
            constraints.append({"type": "ineq", "fun": lambda mu, r=row, b=top[size - 1]: b - r @ mu,
                                "jac": lambda mu, r=row: -r})
    return constraints


def _project_l2(z: np.ndarray, w: np.ndarray) -> np.ndarray:
    """argmin_{mu in P(w)} ||mu - z||^2."""
    start = np.full(len(z), w.mean())
    result = minimize(lambda mu: 0.5 * np.sum((mu - z) ** 2), start, jac=lambda mu: mu - z, method="SLSQP",
                      constraints=_permutahedron_constraints(w), options={"ftol": 1e-15, "maxiter": 1000})
    return result.x


def _project_kl(z: np.ndarray, w: np.ndarray) -> np.ndarray:
    """argmin_{mu in P(w)} KL(mu, e^z) = sum mu log mu - mu - mu z (w > 0)."""
    start = np.full(len(z), w.mean())
    result = minimize(lambda mu: np.sum(mu * np.log(mu) - mu - mu * z), start, jac=lambda mu: np.log(mu) - z,
                      method="SLSQP", bounds=[(1e-9, None)] * len(z), constraints=_permutahedron_constraints(w),
                      options={"ftol": 1e-15, "maxiter": 1000})
    return result.x


def _brute_rank(x, eps, regularization):
    rho = np.arange(len(x), 0, -1.0)
    return _project_l2(x / eps, rho) if regularization == "l2" else _project_kl(x / eps, rho)


def _brute_sort(x, eps, regularization):
    rho = np.arange(len(x), 0, -1.0) / eps
    if regularization == "l2":
        return -_project_l2(rho, -x)
    return -np.log(_project_kl(rho, np.exp(-x)))


@pytest.mark.parametrize("regularization", ["l2", "kl"])
@pytest.mark.parametrize("n,eps,seed", [(4, 0.5, 0), (5, 1.0, 1), (6, 2.0, 2)])
def test_matches_brute_force_projection(regularization, n, eps, seed):
    x = randn(n, seed=seed)
    rank = F.soft_rank(lamina.tensor(x, dtype=np.float64), eps, regularization).numpy()
    ordered = F.soft_sort(lamina.tensor(x, dtype=np.float64), eps, regularization).numpy()
    np.testing.assert_allclose(rank, _brute_rank(x, eps, regularization), atol=1e-6)
    np.testing.assert_allclose(ordered, _brute_sort(x, eps, regularization), atol=1e-6)


def test_topk_matches_projection_onto_capped_simplex():
    x = randn(6, seed=3)
    top = (np.arange(6) < 2).astype(float)
    ours = F.soft_topk(lamina.tensor(x, dtype=np.float64), 2, 0.7).numpy()
    np.testing.assert_allclose(ours, _project_l2(x / 0.7, top), atol=1e-6)


# -- a torch rewrite of pool-adjacent-violators, differentiated by torch -------------------
def _torch_projection(z, w, regularization):
    """Rows of z, w sorted down; z - v with v the non-increasing isotonic fit, blocks by PAV."""
    rows = []
    for zr, wr in zip(z, w):
        blocks = []                              # (block value tensor, first, last)
        for i in range(len(zr)):
            blocks.append((i, i + 1))
            while len(blocks) > 1:
                (a, b), (c, d) = blocks[-2], blocks[-1]
                if _torch_value(zr, wr, a, b, regularization) > _torch_value(zr, wr, c, d, regularization):
                    break
                blocks[-2:] = [(a, d)]
        v = torch.cat([_torch_value(zr, wr, a, b, regularization).expand(b - a) for a, b in blocks])
        rows.append(zr - v)
    return torch.stack(rows)


def _torch_value(z, w, a, b, regularization):
    if regularization == "l2":
        return (z[a:b] - w[a:b]).mean()
    return torch.logsumexp(z[a:b], 0) - torch.logsumexp(w[a:b], 0)


def _torch_soft_rank(x, eps, regularization):
    order = torch.argsort(x, dim=1, descending=True)
    z = torch.gather(x, 1, order) / eps
    rho = torch.arange(x.shape[1], 0, -1, dtype=x.dtype).expand_as(z)
    w = rho if regularization == "l2" else rho.log()
    out = _torch_projection(z, w, regularization)
    out = out if regularization == "l2" else out.exp()
    return torch.empty_like(out).scatter(1, order, out)


def _torch_soft_sort(x, eps, regularization):
    w = torch.sort(-x, dim=1, descending=True).values
    rho = (torch.arange(x.shape[1], 0, -1, dtype=x.dtype) / eps).expand_as(w)
    return -_torch_projection(rho, w, regularization)


def _torch_soft_topk(x, k, eps):
    order = torch.argsort(x, dim=1, descending=True)
    z = torch.gather(x, 1, order) / eps
    top = (torch.arange(x.shape[1]) < k).to(x.dtype).expand_as(z)
    return torch.empty_like(z).scatter(1, order, _torch_projection(z, top, "l2"))


@pytest.mark.parametrize("regularization", ["l2", "kl"])
def test_rank_and_sort_match_torch_pav(regularization):
    x = randn(3, 7, seed=4)
    compare_with_torch(lambda t: F.soft_rank(t, 0.8, regularization),
                       lambda t: _torch_soft_rank(t, 0.8, regularization), x, dtype=np.float64)
    compare_with_torch(lambda t: F.soft_sort(t, 0.8, regularization),
                       lambda t: _torch_soft_sort(t, 0.8, regularization), x, dtype=np.float64)


def test_topk_matches_torch_pav():
    compare_with_torch(lambda t: F.soft_topk(t, 3, 0.5), lambda t: _torch_soft_topk(t, 3, 0.5),
                       randn(3, 7, seed=5), dtype=np.float64)


@pytest.mark.parametrize("regularization", ["l2", "kl"])
def test_gradients_match_finite_differences(regularization):
    x = randn(2, 5, seed=6)
    assert check_gradients(lambda t: F.soft_rank(t, 0.7, regularization), x)
    assert check_gradients(lambda t: F.soft_sort(t, 0.7, regularization), x)
    assert check_gradients(lambda t: F.soft_topk(t, 2, 0.7), x)
    assert check_second_derivatives(lambda t: F.soft_rank(t, 0.7, regularization) ** 2, x)


@pytest.mark.parametrize("regularization", ["l2", "kl"])
def test_limits_of_the_regularization_strength(regularization):
    x = randn(2, 6, seed=7)
    t = lamina.tensor(x, dtype=np.float64)
    hard_ranks = np.argsort(np.argsort(x, axis=1), axis=1) + 1.0
    np.testing.assert_allclose(F.soft_rank(t, 1e-4, regularization).numpy(), hard_ranks, atol=1e-6)
    np.testing.assert_allclose(F.soft_sort(t, 1e-4, regularization).numpy(), np.sort(x, axis=1), atol=1e-6)
    flat_ranks = F.soft_rank(t, 1e5, regularization).numpy()
    np.testing.assert_allclose(flat_ranks, np.full_like(x, 3.5), atol=1e-3)
    np.testing.assert_allclose(flat_ranks.sum(axis=1), 21.0, atol=1e-9)
    flat_sort = F.soft_sort(t, 1e5, regularization).numpy()
    centre = x.mean(axis=1) if regularization == "l2" else -np.log(np.exp(-x).mean(axis=1))
    np.testing.assert_allclose(flat_sort, np.repeat(centre[:, None], 6, axis=1), atol=1e-3)


def test_topk_sums_to_k_and_tends_to_the_hard_mask():
    x = randn(4, 9, seed=8)
    t = lamina.tensor(x, dtype=np.float64)
    for eps in (0.05, 1.0, 20.0):
        soft = F.soft_topk(t, 3, eps).numpy()
        np.testing.assert_allclose(soft.sum(axis=1), 3.0, atol=1e-9)
        assert soft.min() >= -1e-12 and soft.max() <= 1 + 1e-12
    hard = (np.argsort(np.argsort(-x, axis=1), axis=1) < 3).astype(float)
    np.testing.assert_allclose(F.soft_topk(t, 3, 1e-4).numpy(), hard, atol=1e-9)
    np.testing.assert_allclose(F.soft_topk(t, 3, 1e5).numpy(), np.full_like(x, 3 / 9), atol=1e-3)


def test_one_dimensional_input_and_errors():
    x = lamina.tensor(randn(5, seed=9))
    assert F.soft_rank(x).shape == (5,) and F.soft_sort(x).shape == (5,)
    with pytest.raises(ValueError, match="regularization"):
        F.soft_rank(x, 1.0, "l1")
    with pytest.raises(ValueError, match="regularization_strength"):
        F.soft_sort(x, 0.0)
    with pytest.raises(ValueError, match="k must be"):
        F.soft_topk(x, 6)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra = np.argsort(np.argsort(a, axis=1), axis=1)
    rb = np.argsort(np.argsort(b, axis=1), axis=1)
    return float(np.mean([np.corrcoef(x, y)[0, 1] for x, y in zip(ra, rb)]))


def test_learning_scores_with_a_soft_rank_spearman_loss():
    """A linear scorer of 4 features, started anti-correlated, learns to rank lists of 8 items
    by gradient descent on ||soft_rank(scores) - target ranks||^2."""
    rng = np.random.default_rng(10)
    features = rng.standard_normal((32, 8, 4))
    truth = features @ np.array([1.5, -2.0, 0.5, 1.0]) + 0.1 * rng.standard_normal((32, 8))
    target = lamina.tensor(np.argsort(np.argsort(truth, axis=1), axis=1) + 1.0, dtype=np.float64)
    weights = lamina.tensor(np.array([-1.0, 1.0, 0.0, -0.5]), requires_grad=True, dtype=np.float64)
    inputs = lamina.tensor(features, dtype=np.float64)
    before = _spearman(features @ weights.numpy(), truth)
    for _ in range(60):
        weights.grad = None
        scores = (inputs * weights).sum(axis=-1)
        loss = ((F.soft_rank(scores, 0.5) - target) ** 2).mean()
        loss.backward()
        weights.data -= 0.05 * weights.grad
    after = _spearman(features @ weights.numpy(), truth)
    assert before < -0.5 and after > 0.9, (before, after)


def test_readme_example_runs():
    printed, names = run_readme_section("Differentiable sorting, ranking and top-k")
    lines = printed.splitlines()
    assert lines[0] == "[[2. 4. 1. 3.]]" and lines[2] == "[[-1.   0.1  0.5  2. ]]"
    assert lines[3] == "[[0.3 1.  0.  0.7]]" and lines[4] == "[[-1.   0.1  0.5  2. ]]"
    np.testing.assert_allclose(names["smooth"](names["x"]).numpy(), _softmax_of(names["x"].numpy()), atol=0.05)
    assert np.abs(names["x"].grad).sum() > 0


def _softmax_of(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)
