"""Score matching, NCE and contrastive divergence losses against torch rewrites of their formulas
(float64, values and gradients), and their optima on Gaussians."""

import math

import numpy as np
import pytest
import torch
from tests.helpers import assert_close, check_gradients, compare_with_torch, randn

import lamina
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.optim import Adam

N, D, H = 5, 3, 4


def lamina_score(w1, b1, w2):
    return lambda x: F.tanh(x @ w1 + b1) @ w2 - x


def torch_score(w1, b1, w2):
    return lambda x: torch.tanh(x @ w1 + b1) @ w2 - x


def score_arrays(seed=0):
    return randn(N, D, seed=seed), randn(D, H, seed=seed + 1), randn(H, seed=seed + 2), randn(H, D, seed=seed + 3)


def torch_jacobian_trace(scores, x):
    trace = 0.0
    for k in range(x.shape[1]):
        (row,) = torch.autograd.grad(scores[:, k].sum(), x, create_graph=True)
        trace = trace + row[:, k]
    return trace


def test_exact_score_matching_matches_torch():
    def ours(x, w1, b1, w2):
        return F.score_matching_loss(lamina_score(w1, b1, w2), x)

    def theirs(x, w1, b1, w2):
        x = x.detach().requires_grad_(True)
        s = torch_score(w1, b1, w2)(x)
        return (torch_jacobian_trace(s, x) + 0.5 * (s * s).sum(1)).mean()

    compare_with_torch(ours, theirs, *score_arrays(), dtype=np.float64, grad=[False, True, True, True])


@pytest.mark.parametrize("variance_reduction", [False, True])
def test_sliced_score_matching_matches_torch(variance_reduction):
    v = randn(2, N, D, seed=9)

    def ours(x, w1, b1, w2):
        return F.sliced_score_matching_loss(lamina_score(w1, b1, w2), x, n_projections=2,
                                            variance_reduction=variance_reduction, projections=v)

    def theirs(x, w1, b1, w2):
        x = x.detach().requires_grad_(True)
        s = torch_score(w1, b1, w2)(x)
        terms = []
        for p in range(2):
            vp = torch.tensor(v[p])
            (hvp,) = torch.autograd.grad((s * vp).sum(), x, create_graph=True)   # v^T ds/dx
            second = 0.5 * (s * s).sum(1) if variance_reduction else 0.5 * (s * vp).sum(1) ** 2
            terms.append((hvp * vp).sum(1) + second)
        return (sum(terms) / 2).mean()

    compare_with_torch(ours, theirs, *score_arrays(1), dtype=np.float64, grad=[False, True, True, True])


def test_sliced_with_scaled_basis_projections_is_exact_score_matching():
    # E[v v^T] = I for v uniform on {sqrt(d) e_k}: SSM-VR's Hessian-vector products then sum to the trace.
    x, w1, b1, w2 = (Tensor(a, dtype=np.float64) for a in score_arrays(2))
    basis = math.sqrt(D) * np.eye(D)
    projections = np.repeat(basis[:, None, :], N, axis=1)
    sliced = F.sliced_score_matching_loss(lamina_score(w1, b1, w2), x, D, variance_reduction=True,
                                          projections=projections)
    exact = F.score_matching_loss(lamina_score(w1, b1, w2), x)
    assert abs(sliced.item() - exact.item()) < 1e-12


def test_denoising_score_matching_matches_torch():
    eps, sigma = randn(N, D, seed=7), 0.3

    def ours(x, w1, b1, w2):
        return F.denoising_score_matching_loss(lamina_score(w1, b1, w2), x, sigma, noise=eps)

    def theirs(x, w1, b1, w2):
        e = torch.tensor(eps)
        r = torch_score(w1, b1, w2)(x + sigma * e) + e / sigma
        return 0.5 * (r * r).sum(1).mean()

    compare_with_torch(ours, theirs, *score_arrays(3), dtype=np.float64)


@pytest.mark.parametrize("loss", [
    lambda score, x: F.score_matching_loss(score, x),
    lambda score, x: F.sliced_score_matching_loss(score, x, 2, projections=randn(2, N, D, seed=4)),
    lambda score, x: F.sliced_score_matching_loss(score, x, 2, True, projections=randn(2, N, D, seed=4)),
    lambda score, x: F.denoising_score_matching_loss(score, x, 0.5, noise=randn(N, D, seed=6)),
], ids=["exact", "sliced", "sliced_vr", "denoising"])
def test_score_losses_pass_gradient_checks(loss):
    assert check_gradients(lambda x, w1, b1, w2: loss(lamina_score(w1, b1, w2), x), *score_arrays(4),
                           grad=[False, True, True, True])


def gaussian_log_model(mean, log_precision, log_normaliser):
    return lambda u: -0.5 * ((u - mean) ** 2 * log_precision.exp()).sum(axis=1) + log_normaliser


def standard_normal_log_density(u):
    return -0.5 * (u * u).sum(axis=1) - 0.5 * u.shape[1] * math.log(2 * math.pi)


def test_nce_loss_matches_torch():
    noise = randn(8, 2, seed=5)

    def ours(x, m, lp, c):
        return F.nce_loss(gaussian_log_model(m, lp, c), x, Tensor(noise, dtype=np.float64),
                          standard_normal_log_density)

    def theirs(x, m, lp, c):
        y = torch.tensor(noise)
        log_nu = math.log(8 / 4)
        g_x = gaussian_log_model(m, lp, c)(x) - standard_normal_log_density(x) - log_nu
        g_y = gaussian_log_model(m, lp, c)(y) - standard_normal_log_density(y) - log_nu
        return -(torch.nn.functional.logsigmoid(g_x).sum() + torch.nn.functional.logsigmoid(-g_y).sum()) / 4

    compare_with_torch(ours, theirs, randn(4, 2), randn(2, seed=1), randn(2, seed=2, scale=0.3), randn(1, seed=3),
                       dtype=np.float64)


def test_contrastive_divergence_loss_matches_torch():
    def theirs(a, b):
        return a.mean() - b.mean() + 0.3 * ((a * a).mean() + (b * b).mean())

    compare_with_torch(lambda a, b: F.contrastive_divergence_loss(a, b, 0.3), theirs, randn(6), randn(6, 1, seed=1),
                       dtype=np.float64)


def test_exact_score_matching_gradient_vanishes_at_the_gaussian_truth():
    # Model s(x) = -(x - mu) P: J = -tr P + 1/2 mean ||(x - mu) P||^2, so dJ/dmu = -P P^T (mean x - mu) and
    # dJ/dP = -I + S P (S the data's covariance about mu): both vanish at mu = mean x, P = S^-1.
    rng = np.random.default_rng(0)
    x = rng.multivariate_normal([1.0, -2.0], [[2.0, 0.6], [0.6, 0.5]], size=400)
    mean = x.mean(0)
    precision = np.linalg.inv((x - mean).T @ (x - mean) / len(x))

    def gradients(mu_value, p_value):
        mu = Tensor(mu_value, requires_grad=True, dtype=np.float64)
        p = Tensor(p_value, requires_grad=True, dtype=np.float64)
        F.score_matching_loss(lambda u: -((u - mu) @ p), Tensor(x, dtype=np.float64)).backward()
        return mu.grad, p.grad

    g_mu, g_p = gradients(mean, precision)
    assert np.abs(g_mu).max() < 1e-10 and np.abs(g_p).max() < 1e-10
    g_mu, g_p = gradients(mean + 0.1, precision * 1.1)
    assert np.abs(g_mu).max() > 1e-2 and np.abs(g_p).max() > 1e-2


def test_denoising_optimum_on_a_gaussian_is_the_smoothed_score():
    # Data N(m, s^2), noise sigma: the smoothed density is N(m, s^2 + sigma^2), whose score is
    # (m - x) / (s^2 + sigma^2). The affine score a x + b that minimises the DSM loss (least squares
    # on the same draws) has zero DSM gradient and approaches those coefficients.
    rng = np.random.default_rng(1)
    m, s, sigma = 0.5, 0.8, 0.6
    x = m + s * rng.standard_normal((20000, 1))
    eps = rng.standard_normal((20000, 1))
    design = np.hstack([x + sigma * eps, np.ones_like(x)])
    a_opt, b_opt = np.linalg.lstsq(design, -eps[:, 0] / sigma, rcond=None)[0]
    a = Tensor(np.array([a_opt]), requires_grad=True, dtype=np.float64)
    b = Tensor(np.array([b_opt]), requires_grad=True, dtype=np.float64)
    F.denoising_score_matching_loss(lambda u: u * a + b, Tensor(x, dtype=np.float64), sigma, noise=eps).backward()
    assert abs(a.grad[0]) < 1e-9 and abs(b.grad[0]) < 1e-9
    smoothed = s * s + sigma * sigma
    assert abs(a_opt + 1 / smoothed) < 0.03 and abs(b_opt - m / smoothed) < 0.03


def test_nce_recovers_the_normaliser_of_an_unnormalised_gaussian():
    rng = np.random.default_rng(2)
    mean, std = np.array([0.5, -0.3]), np.array([0.7, 1.2])
    x = Tensor(mean + std * rng.standard_normal((2000, 2)), dtype=np.float64)
    noise_std = 2.0
    y = Tensor(noise_std * rng.standard_normal((2000, 2)), dtype=np.float64)

    def log_noise(u):
        return -0.5 * (u * u).sum(axis=1) / noise_std ** 2 - 2 * math.log(noise_std * math.sqrt(2 * math.pi))

    m = lamina.nn.Parameter(np.zeros(2))
    lp = lamina.nn.Parameter(np.zeros(2))
    c = lamina.nn.Parameter(np.zeros(1))
    optimizer = Adam([m, lp, c], lr=0.05)
    for _ in range(300):
        optimizer.zero_grad()
        F.nce_loss(gaussian_log_model(m, lp, c), x, y, log_noise).backward()
        optimizer.step()
    true_c = -np.log(2 * np.pi * std.prod())       # -log Z of exp(-sum (x - mean)^2 / (2 std^2))
    print(f"NCE log-normaliser {c.data[0]:.4f} vs true {true_c:.4f}; std {np.exp(-lp.data / 2)} vs {std}")
    assert abs(c.data[0] - true_c) < 0.1
    assert_close(np.exp(-lp.data / 2), std, 0.05, "learned standard deviations")


@pytest.mark.parametrize("call, message", [
    (lambda x: F.denoising_score_matching_loss(lambda u: u, x, 0.0), "sigma must be a positive"),
    (lambda x: F.denoising_score_matching_loss(lambda u: u[:, :1], x, 0.1), "score_fn must return"),
    (lambda x: F.sliced_score_matching_loss(lambda u: u, x, 0), "n_projections"),
    (lambda x: F.sliced_score_matching_loss(lambda u: u, x, projections=np.zeros((1, 2, 2))), "projections"),
    (lambda x: F.score_matching_loss(lambda u: u, x[0]), "batch of vectors"),
    (lambda x: F.nce_loss(lambda u: u, x, x, lambda u: u.sum(axis=1)), "log_model must return"),
    (lambda x: F.contrastive_divergence_loss(x, x, 0.1), "one energy per sample"),
    (lambda x: F.contrastive_divergence_loss(x[:, 0], x[:, 0], -1.0), "alpha"),
])
def test_errors_are_clear(call, message):
    with pytest.raises((ValueError, ShapeError), match=message):
        call(Tensor(randn(4, 3)))


def test_nce_and_contrastive_divergence_pass_gradient_checks():
    noise = Tensor(randn(6, 2, seed=5), dtype=np.float64)
    assert check_gradients(
        lambda x, m, lp, c: F.nce_loss(gaussian_log_model(m, lp, c), x, noise, standard_normal_log_density),
        randn(3, 2), randn(2, seed=1), randn(2, seed=2, scale=0.3), randn(1, seed=3))
    assert check_gradients(lambda a, b: F.contrastive_divergence_loss(a, b, 0.5), randn(4), randn(4, seed=1))
