"""F.hmm_log_likelihood, the HMM forward algorithm as differentiable ops: values against
brute-force enumeration of every state path, gradients against a torch rewrite of the forward
recursion, float64 gradient and second-derivative checks, padding by lengths and masks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import lamina
import lamina.functional as F
from helpers import assert_close, check_gradients, check_second_derivatives, compare_with_torch, randn
from lamina.errors import ShapeError

LENGTHS = [4, 2, 3]


def log_normalized(a, axis=-1):
    return a - np.log(np.exp(a).sum(axis=axis, keepdims=True))


def problem(k=3, steps=4, batch=3, seed=0):
    log_pi = log_normalized(randn(k, seed=seed))
    log_A = log_normalized(randn(k, k, seed=seed + 1))
    log_B = randn(batch, steps, k, seed=seed + 2)
    return log_pi, log_A, log_B


def brute_force(log_pi, log_A, log_B):
    """log sum over all K^T paths of pi[z_1] B[1, z_1] prod A[z_{t-1}, z_t] B[t, z_t]."""
    steps, k = log_B.shape
    scores = []
    for path in itertools.product(range(k), repeat=steps):
        score = log_pi[path[0]] + sum(log_B[t, path[t]] for t in range(steps))
        score += sum(log_A[path[t - 1], path[t]] for t in range(1, steps))
        scores.append(score)
    return np.logaddexp.reduce(scores)


def torch_forward(log_pi, log_A, log_B, lengths):
    """The forward recursion in torch, batch first, each row read to its own length."""
    results = []
    for n, length in enumerate(lengths):
        alpha = log_pi + log_B[n, 0]
        for t in range(1, length):
            alpha = log_B[n, t] + torch.logsumexp(alpha[:, None] + log_A, dim=0)
        results.append(torch.logsumexp(alpha, dim=0))
    return torch.stack(results)


def test_equals_brute_force_enumeration_over_state_paths():
    log_pi, log_A, log_B = problem()
    got = F.hmm_log_likelihood(log_pi, log_A, log_B, lengths=LENGTHS).numpy()
    expected = [brute_force(log_pi, log_A, log_B[n, :length]) for n, length in enumerate(LENGTHS)]
    assert_close(got, np.array(expected), 1e-10)
    single = F.hmm_log_likelihood(log_pi, log_A, log_B[0])
    assert single.shape == () and abs(single.item() - expected[0]) < 1e-10 * abs(expected[0])


def test_mask_equals_lengths_and_padding_is_ignored():
    log_pi, log_A, log_B = problem()
    mask = np.arange(4)[None, :] < np.array(LENGTHS)[:, None]
    by_lengths = F.hmm_log_likelihood(log_pi, log_A, log_B, lengths=LENGTHS).numpy()
    garbage = np.where(mask[:, :, None], log_B, 1e3)
    by_mask = F.hmm_log_likelihood(log_pi, log_A, garbage, mask=mask).numpy()
    assert_close(by_mask, by_lengths, 1e-12)


def test_values_and_gradients_match_torch_rewrite():
    log_pi, log_A, log_B = problem(seed=3)
    compare_with_torch(lambda p, a, b: F.hmm_log_likelihood(p, a, b, lengths=LENGTHS),
                       lambda p, a, b: torch_forward(p, a, b, LENGTHS),
                       log_pi, log_A, log_B, dtype=np.float64)


def test_gradient_with_respect_to_emissions_is_the_posterior():
    log_pi, log_A, log_B = problem(seed=5)
    b = lamina.tensor(log_B[0], requires_grad=True, dtype=np.float64)
    F.hmm_log_likelihood(log_pi, log_A, b).backward()
    steps, k = log_B[0].shape
    posterior = np.zeros((steps, k))
    total = brute_force(log_pi, log_A, log_B[0])
    for path in itertools.product(range(k), repeat=steps):
        score = log_pi[path[0]] + sum(log_B[0, t, path[t]] for t in range(steps))
        score += sum(log_A[path[t - 1], path[t]] for t in range(1, steps))
        posterior[np.arange(steps), path] += np.exp(score - total)
    assert_close(b.grad, posterior, 1e-10)


def test_float64_gradient_and_second_derivative_checks():
    log_pi, log_A, log_B = problem(k=2, steps=3, batch=2, seed=7)

    def fn(p, a, b):
        return F.hmm_log_likelihood(p, a, b, lengths=[3, 2])

    assert check_gradients(fn, log_pi, log_A, log_B)
    assert check_second_derivatives(fn, log_pi, log_A, log_B)


def test_trained_by_gradient_the_likelihood_rises():
    """An HMM layer: free parameters through log_softmax, a few gradient-ascent steps."""
    rng = np.random.default_rng(0)
    symbols = rng.integers(0, 3, size=(4, 6))
    logits = [lamina.tensor(randn(*shape, seed=s), requires_grad=True, dtype=np.float64)
              for s, shape in enumerate([(2,), (2, 2), (2, 3)])]

    def objective():
        log_pi, log_A, log_E = (F.log_softmax(p, axis=-1) for p in logits)
        log_B = log_E.T[lamina.tensor(symbols)]                        # (N, T, K)
        return F.hmm_log_likelihood(log_pi, log_A, log_B).sum()

    first = objective().item()
    for _ in range(20):
        for p in logits:
            p.grad = None
        objective().backward()
        for p in logits:
            p.data += 0.1 * p.grad
    assert objective().item() > first + 0.5


def test_shape_and_padding_errors():
    log_pi, log_A, log_B = problem()
    with pytest.raises(ShapeError, match=r"hmm_log_likelihood: .*log_A \(3, 3\)"):
        F.hmm_log_likelihood(log_pi, log_A[:2], log_B)
    with pytest.raises(ShapeError, match="log_B must be"):
        F.hmm_log_likelihood(log_pi, log_A, log_B[0, 0])
    with pytest.raises(ValueError, match="lengths must lie in"):
        F.hmm_log_likelihood(log_pi, log_A, log_B, lengths=[5, 1, 1])
    with pytest.raises(ValueError, match="prefix"):
        F.hmm_log_likelihood(log_pi, log_A, log_B, mask=np.array([[1, 0, 1, 0]] * 3, dtype=bool))
