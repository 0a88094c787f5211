"""Evolution strategies: CMA-ES against a NumPy rewrite of Hansen's tutorial (defaults and one
generation's update), its budgets on the sphere and Rosenbrock, OpenAI-ES's gradient estimate
(unbiased; mirrored sampling lowers its variance) and its Adam step against torch, NES and PGPE
on the sphere, evolving a module's weights, and the errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lamina
from helpers import run_readme_section
from lamina import nn
from lamina.optim.evolution import (
    CMAES,
    PGPE,
    SNES,
    XNES,
    ClipUpStep,
    OpenAIES,
    centered_ranks,
    cma_parameters,
    es_gradient,
    evolve_module,
    module_vector,
    nes_utilities,
)


def sphere(x):
    return float(np.sum(x**2))


def rosenbrock(x):
    return float(np.sum(100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2))


# ---- CMA-ES: the tutorial's defaults, written out again term by term ---------------------------

@pytest.mark.parametrize("n", [2, 10, 100])
def test_cma_defaults_follow_the_tutorial_table(n):
    lam = 4 + math.floor(3 * math.log(n))
    mu = lam // 2
    w_prime = [math.log((lam + 1) / 2) - math.log(i) for i in range(1, lam + 1)]
    pos, neg = w_prime[:mu], w_prime[mu:]
    mu_eff = sum(pos) ** 2 / sum(w * w for w in pos)
    mu_eff_neg = sum(neg) ** 2 / sum(w * w for w in neg)
    c1 = 2 / ((n + 1.3) ** 2 + mu_eff)
    cmu = min(1 - c1, 2 * (0.25 + mu_eff + 1 / mu_eff - 2) / ((n + 2) ** 2 + 2 * mu_eff / 2))
    alpha_neg = min(1 + c1 / cmu, 1 + 2 * mu_eff_neg / (mu_eff + 2), (1 - c1 - cmu) / (n * cmu))
    weights = [w / sum(pos) for w in pos] + [alpha_neg * w / sum(abs(v) for v in neg) for w in neg]
    p = cma_parameters(n)
    assert (p.popsize, p.mu) == (lam, mu)
    np.testing.assert_allclose(p.weights, weights, rtol=1e-12)
    assert p.weights[:mu].sum() == pytest.approx(1.0)
    assert p.mu_eff == pytest.approx(mu_eff, rel=1e-12)
    assert p.c_1 == pytest.approx(c1, rel=1e-12) and p.c_mu == pytest.approx(cmu, rel=1e-12)
    assert p.c_c == pytest.approx((4 + mu_eff / n) / (n + 4 + 2 * mu_eff / n), rel=1e-12)
    assert p.c_sigma == pytest.approx((mu_eff + 2) / (n + mu_eff + 5), rel=1e-12)
    d_sigma = 1 + 2 * max(0, math.sqrt((mu_eff - 1) / (n + 1)) - 1) + (mu_eff + 2) / (n + mu_eff + 5)
    assert p.d_sigma == pytest.approx(d_sigma, rel=1e-12)
    assert p.chi_n == pytest.approx(math.sqrt(n) * (1 - 1 / (4 * n) + 1 / (21 * n * n)), rel=1e-12)


def test_cma_known_values_for_n_10():
    """lambda = 10, mu = 5 and mu_eff ~ 3.17 in 10-D (the tutorial's and pycma's numbers)."""
    p = cma_parameters(10)
    assert (p.popsize, p.mu) == (10, 5)
    assert p.mu_eff == pytest.approx(3.1672, abs=1e-4)


# ---- CMA-ES: one generation against the tutorial's pseudo-code -----------------------------

def tutorial_generation(m, sigma, C, p_sigma, p_c, g, xs, fs, params):
    """The update of the tutorial's Appendix A, with loops and sqrt(C)^-1 from an eigen-
    decomposition, from the candidates xs and their fitnesses fs."""
    n = m.size
    w, mu, mu_eff = params.weights, params.mu, params.mu_eff
    cs, ds, cc, c1, cmu = params.c_sigma, params.d_sigma, params.c_c, params.c_1, params.c_mu
    eigenvalues, B = np.linalg.eigh(C)
    C_inv_half = B @ np.diag(eigenvalues ** -0.5) @ B.T
    ranked = [xs[i] for i in np.argsort(fs)]
    ys = [(x - m) / sigma for x in ranked]
    y_w = sum(w[i] * ys[i] for i in range(mu))
    m_new = m + 1.0 * sigma * y_w
    p_sigma = (1 - cs) * p_sigma + np.sqrt(cs * (2 - cs) * mu_eff) * C_inv_half @ y_w
    chi_n = np.sqrt(n) * (1 - 1 / (4 * n) + 1 / (21 * n**2))
    sigma_new = sigma * np.exp(cs / ds * (np.linalg.norm(p_sigma) / chi_n - 1))
    h = 1.0 if np.linalg.norm(p_sigma) / np.sqrt(1 - (1 - cs) ** (2 * (g + 1))) < (1.4 + 2 / (n + 1)) * chi_n \
        else 0.0
    p_c = (1 - cc) * p_c + h * np.sqrt(cc * (2 - cc) * mu_eff) * y_w
    w_circ = [w[i] if w[i] >= 0 else w[i] * n / np.linalg.norm(C_inv_half @ ys[i]) ** 2 for i in range(len(w))]
    delta = (1 - h) * cc * (2 - cc)
    rank_mu = sum(w_circ[i] * np.outer(ys[i], ys[i]) for i in range(len(w)))
    C_new = (1 + c1 * delta - c1 - cmu * sum(w)) * C + c1 * np.outer(p_c, p_c) + cmu * rank_mu
    return m_new, sigma_new, C_new, p_sigma, p_c, h


@pytest.mark.parametrize("path, expected_h", [("short", 1.0), ("long", 0.0), (1.01, 0.0), (0.99, 1.0)])
def test_cma_generation_matches_the_tutorial_update(path, expected_h):
    """From a non-trivial state (C not the identity, non-zero paths) so every term counts;
    a long p_sigma switches h_sigma off (a number: ||p_sigma|| that times the first generation's bound)."""
    n, rng = 4, np.random.default_rng(3)
    m0, sigma0 = rng.normal(size=n), 0.7
    es = CMAES(m0, sigma0, seed=0)
    A = rng.normal(size=(n, n))
    C0 = A @ A.T + n * np.eye(n)
    ps0, pc0 = rng.normal(size=n), rng.normal(size=n)
    xs = m0 + sigma0 * rng.multivariate_normal(np.zeros(n), C0, size=es.popsize)
    fs = np.array([np.sum(np.arange(1, n + 1) * x**2) for x in xs])
    cs = es.params.c_sigma
    if path == "long":
        ps0 = 30 * ps0
    elif isinstance(path, float):
        step = tutorial_generation(m0, sigma0, C0, np.zeros(n), pc0, 0, xs, fs, es.params)[3]
        bound = (1.4 + 2 / (n + 1)) * es.params.chi_n * math.sqrt(1 - (1 - cs) ** 2)
        ps0 = (path * bound * ps0 / np.linalg.norm(ps0) - step) / (1 - cs)
    es.C = C0.copy()
    eigenvalues, es.B = np.linalg.eigh(C0)
    es.D = np.sqrt(eigenvalues)
    es.p_sigma, es.p_c = ps0.copy(), pc0.copy()
    es.tell(xs, fs)
    m, sigma, C, p_sigma, p_c, h = tutorial_generation(m0, sigma0, C0, ps0, pc0, 0, xs, fs, es.params)
    assert h == expected_h
    np.testing.assert_allclose(es.mean, m, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(es.p_sigma, p_sigma, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(es.p_c, p_c, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(es.C, C, rtol=1e-12, atol=1e-14)
    assert es.sigma == pytest.approx(sigma, rel=1e-12)


def test_cma_first_generation_from_its_own_samples():
    """The plain first generation (C = I, zero paths) on the samples ``ask`` drew."""
    es = CMAES(np.full(5, 2.0), 0.3, seed=7)
    xs = es.ask()
    fs = np.array([rosenbrock(x) for x in xs])
    es.tell(xs, fs)
    m, sigma, C, p_sigma, p_c, _ = tutorial_generation(np.full(5, 2.0), 0.3, np.eye(5), np.zeros(5), np.zeros(5),
                                                       0, xs, fs, es.params)
    for got, want in ((es.mean, m), (es.C, C), (es.p_sigma, p_sigma), (es.p_c, p_c)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    assert es.sigma == pytest.approx(sigma, rel=1e-12)
    assert es.result.evaluations == es.popsize and es.result.f == fs.min()


def test_cma_samples_follow_the_covariance():
    es = CMAES(np.zeros(2), 2.0, popsize=4000, seed=0)
    es.C = np.array([[2.0, 0.8], [0.8, 1.0]])
    eigenvalues, es.B = np.linalg.eigh(es.C)
    es.D = np.sqrt(eigenvalues)
    np.testing.assert_allclose(np.cov(es.ask().T), 4.0 * es.C, rtol=0.1, atol=0.2)


# ---- CMA-ES: budgets (10 seeds measured: sphere 1260-1570, Rosenbrock 2-D 312-678, 5-D 1432-2336) -

def test_cma_reaches_1e_8_on_the_10d_sphere():
    result = CMAES(np.ones(10), 0.5, seed=0).optimize(sphere, 1000, target=1e-8)
    assert result.f <= 1e-8
    assert result.evaluations <= 2500                      # 1310 with this seed
    assert sphere(result.x) == result.f


@pytest.mark.parametrize("n, budget", [(2, 1500), (5, 4000)])
def test_cma_solves_rosenbrock(n, budget):
    result = CMAES(np.zeros(n), 0.5, seed=0).optimize(rosenbrock, budget, target=1e-10)
    assert result.f <= 1e-10 and result.evaluations <= budget  # 528 (2-D) and 2040 (5-D)
    np.testing.assert_allclose(result.x, np.ones(n), atol=1e-4)


def test_cma_stopping_criteria():
    es = CMAES(np.ones(10), 0.5, seed=0)
    result = es.optimize(sphere, 5000)
    assert "tolfun" in es.stop() and result.f < 1e-12 and result.evaluations < 5000
    flat = CMAES(np.ones(3), 0.5, seed=0)
    flat.optimize(lambda x: 1.0, 5000)
    assert "equalfunvalues" in flat.stop() and flat.generation == 10 + math.ceil(30 * 3 / flat.popsize)


def test_unseeded_strategies_follow_lamina_manual_seed():
    draws = []
    for _ in range(2):
        lamina.manual_seed(11)
        draws.append(CMAES(np.zeros(3), 1.0).ask())
    np.testing.assert_array_equal(draws[0], draws[1])
    assert not np.array_equal(CMAES(np.zeros(3), 1.0).ask(), draws[0])


# ---- shaping ------------------------------------------------------------------------------

def test_centered_ranks_and_nes_utilities_by_hand():
    f = np.array([3.0, 1.0, 2.0, 7.0, 5.0])
    np.testing.assert_allclose(centered_ranks(f), [0.0, 0.5, 0.25, -0.5, -0.25])
    np.testing.assert_allclose(centered_ranks(np.array([2.0, 1.0, 2.0])), [-0.25, 0.5, -0.25])
    # lambda = 4: ln 3 - ln k for k = 1, 2 (then 0), over their sum ln 3 + ln 1.5, less 1/4.
    raw = np.array([math.log(3), math.log(1.5), 0.0, 0.0])
    by_rank = raw / raw.sum() - 0.25
    np.testing.assert_allclose(nes_utilities(np.array([4.0, -1.0, 0.0, 9.0])), by_rank[[2, 0, 1, 3]])


# ---- OpenAI-ES ----------------------------------------------------------------------------

A_QUAD = np.array([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.5, 1.0]])
B_QUAD = np.array([1.0, -2.0, 0.5])


def quadratic(x):
    return float(0.5 * x @ A_QUAD @ x + B_QUAD @ x + 4.0)


def gradient_estimates(antithetic: bool, repeats: int, popsize: int) -> np.ndarray:
    theta = np.array([0.5, -1.0, 2.0])
    estimates = []
    for seed in range(repeats):
        es = OpenAIES(theta, sigma=0.3, lr=1e-3, popsize=popsize, antithetic=antithetic, rank_shaping=False,
                      optimizer="sgd", momentum=0.0, seed=seed)
        xs = es.ask()
        es.tell(xs, [quadratic(x) for x in xs])
        estimates.append(es.gradient)
    return np.array(estimates)


def test_openai_es_gradient_is_unbiased_and_mirroring_lowers_its_variance():
    """On a quadratic, E[g] = grad f(theta) = A theta + b exactly; the mean of 1500 estimates lies
    within 4 standard errors of it. Mirrored pairs cancel f(theta) and the curvature term."""
    true = A_QUAD @ np.array([0.5, -1.0, 2.0]) + B_QUAD
    for antithetic in (False, True):
        g = gradient_estimates(antithetic, 1500, 100)
        standard_error = g.std(axis=0, ddof=1) / math.sqrt(len(g))
        assert np.all(np.abs(g.mean(axis=0) - true) < 4 * standard_error), (antithetic, g.mean(axis=0), true)
    plain, mirrored = gradient_estimates(False, 400, 10), gradient_estimates(True, 400, 10)
    assert mirrored.var(axis=0).sum() < 0.2 * plain.var(axis=0).sum()


def test_es_gradient_formula_by_hand():
    noise = np.array([[1.0, 0.0], [0.0, 2.0], [-1.0, 1.0]])
    np.testing.assert_allclose(es_gradient([2.0, 3.0, 1.0], noise, 0.5), [(2 - 1) / 1.5, (6 + 1) / 1.5])


def test_openai_es_adam_step_matches_torch():
    es = OpenAIES(np.array([1.0, -2.0, 0.5]), sigma=0.2, lr=0.05, popsize=8, weight_decay=0.01, seed=1)
    theta = torch.tensor(es.mean.copy(), requires_grad=True)
    adam = torch.optim.Adam([theta], lr=0.05, eps=1e-8)
    for _ in range(4):
        xs = es.ask()
        es.tell(xs, [quadratic(x) for x in xs])
        theta.grad = torch.from_numpy(es.gradient.copy())
        adam.step()
        np.testing.assert_allclose(es.mean, theta.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_openai_es_weight_decay_adds_theta():
    kwargs = dict(sigma=0.1, lr=0.01, popsize=6, optimizer="sgd", seed=0)
    plain, decayed = OpenAIES(np.ones(2), **kwargs), OpenAIES(np.ones(2), weight_decay=0.3, **kwargs)
    for es in (plain, decayed):
        xs = es.ask()
        es.tell(xs, [sphere(x) for x in xs])
    np.testing.assert_allclose(decayed.gradient - plain.gradient, 0.3 * np.ones(2))


def test_openai_es_converges_on_the_sphere():
    result = OpenAIES(np.ones(10), sigma=0.1, lr=0.05, popsize=20, seed=0).optimize(sphere, 300)
    assert result.f < 0.05                                   # from 10


# ---- NES and PGPE -------------------------------------------------------------------------

@pytest.mark.parametrize("make, generations, tolerance", [
    (lambda: SNES(np.ones(10), sigma=1.0, seed=0), 300, 1e-10),
    (lambda: XNES(np.ones(5), sigma=1.0, seed=0), 300, 1e-8),
    (lambda: PGPE(np.ones(10), sigma=0.5, lr=0.05, popsize=20, seed=0), 300, 0.05),
    (lambda: PGPE(np.ones(10), sigma=0.5, lr=0.02, popsize=20, optimizer="adam", seed=0), 300, 0.05),
])
def test_nes_and_pgpe_converge_on_the_sphere(make, generations, tolerance):
    es = make()
    start = sphere(es.mean)
    result = es.optimize(sphere, generations)
    assert result.f < tolerance * start


def test_xnes_learns_an_ill_conditioned_shape():
    """On f = x1^2 + 100 x2^2, B B^T stretches along x1 (the long axis of the level sets)."""
    es = XNES(np.array([1.0, 1.0]), sigma=0.5, seed=0)
    es.optimize(lambda x: float(x[0] ** 2 + 100 * x[1] ** 2), 150)
    shape = es.B @ es.B.T
    assert shape[0, 0] > 5 * shape[1, 1]
    assert np.linalg.det(es.B) == pytest.approx(1.0, rel=1e-8)


def test_snes_sigma_shrinks_and_pgpe_sampling_is_mirrored():
    es = SNES(np.ones(4), sigma=1.0, seed=0)
    es.optimize(sphere, 100)
    assert np.all(es.sigma < 0.1)
    pgpe = PGPE(np.zeros(3), popsize=6, seed=0)
    xs = pgpe.ask()
    np.testing.assert_allclose(xs[:3], -xs[3:])


def test_clipup_normalises_and_caps_the_speed():
    step = ClipUpStep(lr=0.1, momentum=0.9)
    np.testing.assert_allclose(step(np.array([3.0, 4.0])), [-0.06, -0.08])
    for _ in range(50):
        velocity = step(np.array([3.0, 4.0]))
    assert np.linalg.norm(velocity) == pytest.approx(0.2)


# ---- modules ------------------------------------------------------------------------------

def test_evolve_module_fits_a_line_and_loads_the_best_weights():
    lamina.manual_seed(0)
    layer = nn.Dense(1)
    layer.build((None, 1))
    x = np.linspace(-1, 1, 16, dtype=np.float32)[:, None]
    y = 2 * x - 1

    def mse(module):
        return float(np.mean((module(lamina.tensor(x)).numpy() - y) ** 2))

    result = evolve_module(layer, mse, "cma_es", generations=200, sigma=0.5, seed=0, target=1e-10)
    assert result.f <= 1e-10
    np.testing.assert_allclose(module_vector(layer), result.x, rtol=1e-6)
    np.testing.assert_allclose(sorted(module_vector(layer)), [-1.0, 2.0], atol=1e-4)
    assert mse(layer) == pytest.approx(result.f, abs=1e-9)


def test_evolve_module_takes_a_strategy_instance():
    layer = nn.Dense(2)
    layer.build((None, 3))
    target = np.arange(8.0)
    es = SNES(module_vector(layer), sigma=0.5, seed=0)
    result = evolve_module(layer, lambda m: sphere(module_vector(m) - target), es, generations=200)
    assert result.f < 1e-6
    with pytest.raises(ValueError, match="searches 3 values but the module has 8"):
        evolve_module(layer, lambda m: 0.0, SNES(np.zeros(3)), generations=1)


# ---- errors -------------------------------------------------------------------------------

def test_errors_name_what_was_wrong():
    es = CMAES(np.zeros(3), 0.5, seed=0)
    xs = es.ask()
    with pytest.raises(ValueError, match=r"CMAES.tell: expected solutions of shape \(7, 3\).*got \(6, 3\)"):
        es.tell(xs[:-1], np.zeros(6))
    with pytest.raises(ValueError, match="expected 7 fitnesses"):
        es.tell(xs, np.zeros(5))
    with pytest.raises(ValueError, match=r"fitnesses must be finite; entries \[2\]"):
        es.tell(xs, [0, 1, np.nan, 3, 4, 5, 6])
    with pytest.raises(ValueError, match="x0 must be a non-empty 1-D vector, got shape"):
        SNES(np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"expected solutions of shape \(4, 2\)"):
        PGPE(np.zeros(2), popsize=4).tell(np.zeros((4, 3)), np.zeros(4))
    for make in (lambda: CMAES(np.zeros(2), 0.0), lambda: OpenAIES(np.zeros(2), sigma=-1.0),
                 lambda: SNES(np.zeros(2), sigma=[1.0, 0.0]), lambda: XNES(np.zeros(2), sigma=0.0),
                 lambda: PGPE(np.zeros(2), sigma=-0.1)):
        with pytest.raises(ValueError, match="sigma0? must be finite and > 0"):
            make()
    with pytest.raises(ValueError, match="even popsize"):
        OpenAIES(np.zeros(2), popsize=5)
    with pytest.raises(ValueError, match="'adam', 'sgd' or 'clipup'"):
        OpenAIES(np.zeros(2), optimizer="rmsprop")
    with pytest.raises(ValueError, match="x0 has non-finite entries"):
        CMAES([0.0, np.inf], 1.0)


# ---- README -------------------------------------------------------------------------------

def test_readme_example_runs():
    _, names = run_readme_section("Evolution strategies and neuroevolution")
    assert names["result"].f <= 1e-8
    assert names["policy_result"].f <= -475
