"""Discrete diffusion (D3PM and MDLM): transition matrices and their products, the posterior
against Bayes' rule by brute force, the D3PM bound of a perfect denoiser, the MDLM loss against a
float64 torch rewrite, the SUBS parameterisation, sampling with an oracle denoiser, the
denoiser's config round trip and learning a toy language."""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch, randn, run_readme_section
from lamina import parallel
from lamina.models import (
    D3PM,
    DiscreteDiffusionLM,
    MaskedDiffusion,
    d3pm_betas,
    d3pm_transition_matrix,
    subs_log_probs,
)
from lamina.train import train_discrete_diffusion


@pytest.fixture(autouse=True)
def one_blas_thread():
    with parallel.one_blas_thread():
        yield


KERNELS = [("uniform", "cosine"), ("uniform", "linear"), ("absorbing", "mutual_info"), ("absorbing", "linear")]


@pytest.mark.parametrize("kernel, schedule", KERNELS)
def test_transition_rows_sum_to_one_and_cumulative_products(kernel, schedule):
    betas = d3pm_betas(6, schedule, beta_start=0.05, beta_end=0.4)
    process = D3PM(4, num_steps=6, kernel=kernel, betas=betas)
    states = 4 if kernel == "uniform" else 5
    for t, beta in enumerate(betas, start=1):
        matrix = d3pm_transition_matrix(beta, 4, kernel)
        assert matrix.shape == (states, states) and np.all(matrix >= 0)
        np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-12)
        np.testing.assert_array_equal(process.step_matrices[t], matrix)
        product = functools.reduce(np.matmul, [d3pm_transition_matrix(b, 4, kernel) for b in betas[:t]])
        np.testing.assert_allclose(process.cumulative_matrices[t], product, atol=1e-12)
        np.testing.assert_allclose(process.cumulative_matrices[t].sum(axis=1), 1.0, atol=1e-12)
    if kernel == "absorbing":
        assert np.all(process.step_matrices[1:, 4] == np.eye(5)[4])      # [MASK] is absorbing
        if schedule == "mutual_info":                                    # everything masked at T
            np.testing.assert_allclose(process.cumulative_matrices[-1][:, 4], 1.0)


def brute_force_posterior(process: D3PM, x_t: int, x0: int, t: int) -> np.ndarray:
    """q(x_{t-1} | x_t, x0) by Bayes' rule over explicit sums of paths (no cumulative matrices)."""
    states, steps = process.num_states, [process.step_matrices[s] for s in range(1, t + 1)]
    prior = np.zeros(states)
    for path in itertools.product(range(states), repeat=t - 1):          # x_1 .. x_{t-1}
        chain, weight = (x0,) + path, 1.0
        for s in range(t - 1):
            weight *= steps[s][chain[s], chain[s + 1]]
        prior[chain[-1]] += weight                                       # q(x_{t-1} | x0)
    joint = prior * steps[t - 1][:, x_t]                                 # q(x_{t-1}, x_t | x0)
    return joint / joint.sum()


@pytest.mark.parametrize("kernel", ["uniform", "absorbing"])
def test_posterior_equals_bayes_rule_by_brute_force(kernel):
    process = D3PM(3, num_steps=4, kernel=kernel, betas=np.array([0.1, 0.3, 0.25, 0.5]))
    states = process.num_states
    for t in (1, 2, 4):
        for x0, x_t in itertools.product(range(3), range(states)):
            if process.cumulative_matrices[t, x0, x_t] == 0:
                continue
            ours = process.q_posterior(np.array([[x_t]]), np.array([[x0]]), t)[0, 0]
            np.testing.assert_allclose(ours, brute_force_posterior(process, x_t, x0, t), atol=1e-12)


def test_reverse_step_is_the_posterior_averaged_over_predicted_x0():
    process = D3PM(3, num_steps=5, kernel="uniform", betas=d3pm_betas(5, "linear", 0.1, 0.5))
    rng = np.random.default_rng(0)
    x_t, t = rng.integers(0, 3, (2, 4)), np.array([3, 5])
    probs = rng.dirichlet(np.ones(3), (2, 4))
    ours = process.p_posterior(lamina.tensor(probs, dtype=np.float64), x_t, t).numpy()
    expected = sum(process.q_posterior(x_t, np.full((2, 4), x0), t) * probs[..., x0:x0 + 1] for x0 in range(3))
    np.testing.assert_allclose(ours, expected, atol=1e-12)


def oracle_logits(x0: np.ndarray, states: int) -> np.ndarray:
    return 60.0 * np.eye(states)[x0]


def test_d3pm_bound_of_a_perfect_denoiser_is_the_prior_term():
    betas = d3pm_betas(8, "linear", 0.02, 0.3)
    process = D3PM(5, num_steps=8, kernel="uniform", betas=betas)
    x0 = np.random.default_rng(1).integers(0, 5, (3, 6))
    bound = process.nll_bound(lambda x_t, t: lamina.tensor(oracle_logits(x0, 5), dtype=np.float64), x0, generator=0)
    keep, k = np.prod(1 - betas), 5                                      # Qbar_T = keep I + (1 - keep) / K
    same, other = keep + (1 - keep) / k, (1 - keep) / k
    analytic = same * math.log(same * k) + (k - 1) * other * math.log(other * k)
    assert bound["prior"] == pytest.approx(analytic, rel=1e-10)
    assert bound["nll"] == pytest.approx(analytic, rel=1e-6, abs=1e-9)
    absorbing = D3PM(5, num_steps=8, kernel="absorbing")
    bound = absorbing.nll_bound(lambda x_t, t: lamina.tensor(oracle_logits(x0, 5), dtype=np.float64), x0, generator=0)
    assert bound["nll"] == pytest.approx(0.0, abs=1e-9)
    uniform_guess = process.nll_bound(lambda x_t, t: lamina.tensor(np.zeros((3, 6, 5))), x0, generator=0)
    assert uniform_guess["nll"] > bound["nll"] + 0.1


def torch_d3pm_losses(logits, q_post, step_cols, prev, inverse, onehot, first):
    log_probs = torch.log_softmax(logits[..., :-1], -1)                 # [MASK]'s column dropped
    probs = log_probs.exp()
    summed = torch.einsum("nlk,nks->nls", probs * torch.tensor(inverse), torch.tensor(prev)) * torch.tensor(step_cols)
    p = summed / (summed.sum(-1, keepdim=True) + 1e-30)
    q = torch.tensor(q_post)
    kl = torch.where(q > 0, q * torch.log(torch.where(q > 0, q, 1.0)), 0.0).sum(-1) - (q * torch.log(p + 1e-30)).sum(-1)
    nll = -(log_probs * torch.tensor(onehot)).sum(-1)
    first = torch.tensor(first)
    return (kl * (1 - first) + nll * first).mean() + 0.1 * nll.mean()


def test_d3pm_hybrid_loss_equals_a_torch_rewrite_and_passes_gradcheck():
    process = D3PM(3, num_steps=4, kernel="absorbing", betas=np.array([0.2, 0.3, 0.4, 0.5]), hybrid_lambda=0.1)
    rng = np.random.default_rng(3)
    x0, t = rng.integers(0, 3, (3, 4)), np.array([1, 2, 4])
    x_t = process.q_sample(x0, t, rng)
    x_t[1, 0] = 3
    logits = randn(3, 4, 4, seed=2)
    later = np.where(t > 1, t, 2)                                        # t = 1 rows: the KL is not used
    cols = process.cumulative_matrices[later[:, None], :3, x_t]
    inverse = np.where(cols > 0, 1 / np.where(cols > 0, cols, 1), 0)
    args = (process.q_posterior(x_t, x0, later), process.step_matrices[later[:, None], :, x_t],
            process.cumulative_matrices[later - 1, :3], inverse, np.eye(3)[x0],
            np.broadcast_to((t == 1)[:, None], x0.shape).astype(float))

    def ours(z):
        vb, ce = process.losses(z, x0, x_t, t)
        return vb + process.hybrid_lambda * ce

    compare_with_torch(ours, lambda z: torch_d3pm_losses(z, *args), logits, dtype=np.float64)
    assert check_gradients(ours, logits)


def torch_mdlm_loss(logits, x0, x_t, weight, vocab):
    log_probs = torch.log_softmax(logits[..., :vocab], -1)
    picked = log_probs.gather(-1, torch.tensor(x0)[..., None])[..., 0]
    masked = torch.tensor(x_t == vocab, dtype=torch.float64)
    return (torch.tensor(weight)[:, None] * picked * masked).sum() / x0.size


@pytest.mark.parametrize("schedule", MaskedDiffusion.SCHEDULES)
def test_mdlm_loss_equals_torch_and_ignores_unmasked_positions(schedule):
    mdlm = MaskedDiffusion(5, schedule=schedule)
    rng = np.random.default_rng(4)
    x0, t = rng.integers(0, 5, (3, 6)), np.array([0.2, 0.6, 0.95])
    x_t = mdlm.q_sample(x0, t, rng)
    x_t[:, 0] = 5
    logits = randn(3, 6, 6, seed=5)
    weight = mdlm.alpha_prime(t) / (1 - mdlm.alpha(t))
    compare_with_torch(lambda z: mdlm.loss(z, x0, x_t, t), lambda z: torch_mdlm_loss(z, x0, x_t, weight, 5),
                       logits, dtype=np.float64)
    assert check_gradients(lambda z: mdlm.loss(z, x0, x_t, t), logits)
    unmasked = (x_t != 5)[..., None]
    z = lamina.tensor(logits + 20 * randn(3, 6, 6, seed=6) * unmasked, dtype=np.float64, requires_grad=True)
    loss = mdlm.loss(z, x0, x_t, t)
    assert loss.item() == pytest.approx(mdlm.loss(lamina.tensor(logits, dtype=np.float64), x0, x_t, t).item(),
                                        rel=1e-12)
    loss.backward()
    assert np.all(z.grad[np.broadcast_to(unmasked, z.shape)] == 0) and np.any(z.grad != 0)
    assert np.all(z.grad[..., 5] == 0)                                   # the [MASK] logit plays no part
    assert loss.item() > 0


@pytest.mark.parametrize("schedule", MaskedDiffusion.SCHEDULES)
def test_mdlm_weight_is_alpha_prime_over_one_minus_alpha(schedule):
    mdlm = MaskedDiffusion(3, schedule=schedule, eps=1e-3)
    t, h = np.linspace(0.05, 0.95, 7), 1e-6
    derivative = (mdlm.alpha(t + h) - mdlm.alpha(t - h)) / (2 * h)
    np.testing.assert_allclose(mdlm.alpha_prime(t), derivative, rtol=1e-7)
    np.testing.assert_allclose(mdlm.loss_weight(t), derivative / (1 - mdlm.alpha(t)), rtol=1e-6)
    assert mdlm.alpha(0.0) == 1.0 and mdlm.alpha(1.0) == pytest.approx(1e-3)
    if schedule == "loglinear":
        np.testing.assert_allclose(mdlm.loss_weight(t), -1 / t, rtol=1e-12)
    masked = np.mean([(mdlm.q_sample(np.zeros((2000, 1), dtype=np.int64), 0.3, 7) == 3).mean()])
    assert masked == pytest.approx(1 - mdlm.alpha(0.3), abs=0.03)


def test_subs_zeroes_the_mask_and_copies_unmasked_tokens():
    logits = randn(2, 4, 4, seed=8)
    x_t = np.array([[3, 0, 3, 2], [1, 3, 3, 3]])
    probs = np.exp(subs_log_probs(lamina.tensor(logits, dtype=np.float64), x_t, 3).numpy())
    assert probs.shape == (2, 4, 3)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-12)
    masked = x_t == 3
    np.testing.assert_array_equal(probs[~masked], np.eye(3)[x_t[~masked]])
    expected = torch.softmax(torch.tensor(logits[..., :3]), -1).numpy()
    np.testing.assert_allclose(probs[masked], expected[masked], atol=1e-12)


# -- sampling with an oracle that knows the data distribution --------------------------------
SUPPORT = np.array([[0, 1, 2], [2, 2, 0], [1, 0, 1], [0, 0, 0], [2, 1, 1]])
WEIGHTS = np.array([0.35, 0.25, 0.2, 0.15, 0.05])


def oracle(x_t, t=None):
    """Exact p(x0_l | x_t) per position: the data posterior given x_t's unmasked tokens."""
    consistent = np.all((x_t[:, None, :] == SUPPORT[None]) | (x_t[:, None, :] >= 3), axis=-1)
    posterior = consistent * WEIGHTS + 1e-12               # after an off-support draw: roughly uniform
    posterior /= posterior.sum(1, keepdims=True)
    marginals = np.einsum("ns,slv->nlv", posterior, np.eye(3)[SUPPORT])
    return lamina.tensor(np.log(marginals + 1e-300), dtype=np.float64)


def frequencies(samples):
    return np.array([np.all(samples == row, axis=1).mean() for row in SUPPORT])


def test_mdlm_sampling_with_an_oracle_gives_the_data_distribution():
    mdlm = MaskedDiffusion(3)
    freq = frequencies(mdlm.sample(oracle, 3000, 3, steps=200, generator=9))
    assert freq.sum() > 0.98           # tokens revealed in the same step are drawn independently
    np.testing.assert_allclose(freq, WEIGHTS, atol=0.03)


def test_mdlm_caching_skips_calls_and_changes_nothing_for_a_time_free_denoiser():
    mdlm = MaskedDiffusion(3)
    plain, plain_calls = mdlm.sample(oracle, 4, 3, steps=200, generator=11, return_calls=True)
    cached, cached_calls = mdlm.sample(oracle, 4, 3, steps=200, cache=True, generator=11, return_calls=True)
    np.testing.assert_array_equal(cached, plain)
    assert plain_calls == 200 and cached_calls <= 1 + 4 * 3          # one call after each reveal


def test_d3pm_sampling_with_an_oracle_gives_the_data_distribution():
    process = D3PM(3, num_steps=100, kernel="absorbing")
    freq = frequencies(process.sample(oracle, 3000, 3, generator=10))
    assert freq.sum() > 0.97
    np.testing.assert_allclose(freq, WEIGHTS, atol=0.03)


# -- the denoiser ------------------------------------------------------------------------------
@pytest.mark.parametrize("time_conditioning", [False, True])
def test_denoiser_shapes_and_config_round_trip(tmp_path, time_conditioning):
    model = DiscreteDiffusionLM(5, 6, dim=8, depth=1, heads=2, time_conditioning=time_conditioning)
    tokens = np.random.default_rng(0).integers(0, 6, (2, 6))
    out = model(tokens, np.array([0.1, 0.9])).numpy()
    assert out.shape == (2, 6, 6)
    if time_conditioning:
        assert not np.allclose(out, model(tokens, np.array([0.5, 0.5])).numpy())
    lamina.save(model, tmp_path / "ddlm.lam")
    copy = lamina.load(tmp_path / "ddlm.lam")
    np.testing.assert_array_equal(copy(tokens, np.array([0.1, 0.9])).numpy(), out)
    with pytest.raises(lamina.errors.ShapeError, match="DiscreteDiffusionLM"):
        model(np.zeros((2, 5), dtype=np.int64))


def toy_language(n: int, rng) -> np.ndarray:
    """Length-8 sequences over 4 symbols, each symbol 1 or 2 (mod 4) above the one before."""
    tokens = np.zeros((n, 8), dtype=np.int64)
    tokens[:, 0] = rng.integers(0, 4, n)
    for i in range(1, 8):
        tokens[:, i] = (tokens[:, i - 1] + rng.integers(1, 3, n)) % 4
    return tokens


def valid(tokens) -> np.ndarray:
    steps = (tokens[:, 1:] - tokens[:, :-1]) % 4
    return np.all((steps == 1) | (steps == 2), axis=1)


def test_a_tiny_mdlm_learns_a_toy_language():
    rng = np.random.default_rng(0)
    data = toy_language(2000, rng)
    lamina.manual_seed(0)
    model, mdlm = DiscreteDiffusionLM(4, 8, dim=32, depth=2, heads=4), MaskedDiffusion(4)
    train_discrete_diffusion(model, mdlm, data, epochs=12, batch_size=32, lr=1e-2, seed=0)
    samples = mdlm.sample(model, 200, 8, steps=16, cache=True, generator=1)
    counts = np.bincount(data.ravel(), minlength=4) / data.size
    unigram = rng.choice(4, size=(200, 8), p=counts)
    assert valid(samples).mean() > valid(unigram).mean() + 0.2
    unigram_perplexity = math.exp(-(counts * np.log(counts)).sum())
    bound = mdlm.nll_bound(model, toy_language(300, rng), num_samples=8, generator=2)
    assert bound["perplexity"] < unigram_perplexity - 0.7


def test_d3pm_training_lowers_the_bound_of_a_time_conditioned_denoiser():
    rng = np.random.default_rng(3)
    data, held_out = toy_language(512, rng), toy_language(128, rng)
    lamina.manual_seed(3)
    model = DiscreteDiffusionLM(4, 8, dim=16, depth=1, heads=2, time_conditioning=True)
    process = D3PM(4, num_steps=8, kernel="absorbing", hybrid_lambda=0.01)
    model(data[:1], np.zeros(1))
    before = process.nll_bound(model, held_out, generator=4)["nll"]
    history = train_discrete_diffusion(model, process, data, epochs=4, batch_size=32, lr=1e-2, seed=3)
    after = process.nll_bound(model, held_out, generator=4)["nll"]
    assert np.all(np.isfinite(history["loss"])) and after < before - 0.2


def test_readme_example_runs():
    printed, names = run_readme_section("Discrete diffusion language models")
    assert names["samples"].shape == (4, 8) and "perplexity" in printed
