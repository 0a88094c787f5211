"""Bandits: the policies' indices and posteriors against their formulas on hand-made histories,
LinUCB against a NumPy rewrite of Li et al.'s Algorithm 1, and regret on small bandits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lamina.errors import ShapeError
from lamina.rl.bandits import (
    KLUCB,
    UCB1,
    BernoulliBandit,
    Boltzmann,
    EpsilonGreedy,
    GaussianBandit,
    GaussianThompsonSampling,
    LinearContextualBandit,
    LinearThompsonSampling,
    LinUCB,
    NeuralLinearBandit,
    ThompsonSampling,
    UniformRandom,
    bernoulli_kl,
    run_bandit,
    sherman_morrison,
)

HISTORY = [(0, 1.0), (1, 0.0), (2, 1.0), (0, 0.0), (1, 1.0), (0, 1.0), (3, 0.0), (2, 1.0)]
PROBS = [0.1, 0.3, 0.5, 0.6, 0.7]


def played(policy, history=HISTORY):
    for arm, reward in history:
        policy.update(arm, reward)
    return policy


def test_ucb1_plays_every_arm_once_then_follows_its_index():
    policy = UCB1(4)
    assert [policy.act() for _ in range(1)] == [0]
    played(policy)
    t = len(HISTORY)
    for arm in range(4):
        rewards = [r for a, r in HISTORY if a == arm]
        expected = np.mean(rewards) + math.sqrt(2 * math.log(t) / len(rewards))
        assert policy.indices()[arm] == pytest.approx(expected, rel=1e-12)
    assert policy.act() == int(np.argmax(policy.indices()))
    unplayed = played(UCB1(5), HISTORY)
    assert np.isinf(unplayed.indices()[4]) and unplayed.act() == 4


def test_klucb_index_is_the_largest_mean_within_the_kl_budget():
    policy = played(KLUCB(4, iterations=60))
    t = len(HISTORY)
    for arm in range(4):
        rewards = [r for a, r in HISTORY if a == arm]
        mean, n, index = np.mean(rewards), len(rewards), policy.indices()[arm]
        assert index >= mean
        if index < 1 - 1e-9:
            assert n * bernoulli_kl(np.array(mean), np.array(index)) == pytest.approx(math.log(t), rel=1e-6)
    assert policy.indices()[2] == pytest.approx(1.0)  # two rewards of 1: kl(1, q) = -ln q stays small


def test_thompson_posteriors_follow_their_conjugate_updates():
    beta = played(ThompsonSampling(4, prior_alpha=2.0, prior_beta=3.0))
    for arm in range(4):
        rewards = [r for a, r in HISTORY if a == arm]
        assert beta.alpha[arm] == 2.0 + sum(rewards) and beta.beta[arm] == 3.0 + len(rewards) - sum(rewards)
    gauss = played(GaussianThompsonSampling(4, prior_mean=0.5, prior_std=2.0, noise_std=0.5))
    mean, std = gauss.posterior()
    rewards = [r for a, r in HISTORY if a == 0]
    precision = 1 / 4 + len(rewards) / 0.25
    assert std[0] == pytest.approx(precision**-0.5)
    assert mean[0] == pytest.approx((0.5 / 4 + sum(rewards) / 0.25) / precision)


def test_epsilon_greedy_decay_and_boltzmann_probabilities():
    policy = played(EpsilonGreedy(4, epsilon=0.5, decay=0.25, min_epsilon=0.1))
    assert policy.epsilon == pytest.approx(max(0.1, 0.5 / (1 + 0.25 * len(HISTORY))))
    greedy = played(EpsilonGreedy(4, epsilon=0.0))
    assert greedy.act() == 2  # the only arm with mean 1
    boltzmann = played(Boltzmann(4, temperature=0.5))
    logits = boltzmann.values / 0.5
    np.testing.assert_allclose(boltzmann.probabilities(), np.exp(logits) / np.exp(logits).sum(), rtol=1e-12)


def numpy_linucb(history, n_arms, dim, alpha, context):
    """Li et al. (2010), Algorithm 1, with explicit inverses."""
    A = [np.eye(dim) for _ in range(n_arms)]
    b = [np.zeros(dim) for _ in range(n_arms)]
    for x, arm, reward in history:
        A[arm] = A[arm] + np.outer(x, x)
        b[arm] = b[arm] + reward * x
    p = []
    for arm in range(n_arms):
        inverse = np.linalg.inv(A[arm])
        theta = inverse @ b[arm]
        p.append(theta @ context + alpha * np.sqrt(context @ inverse @ context))
    return np.array(A), np.array(b), np.array(p)


@pytest.mark.parametrize("use_sherman_morrison", [True, False])
def test_linucb_matches_a_numpy_rewrite(use_sherman_morrison):
    rng = np.random.default_rng(0)
    n_arms, dim, alpha = 3, 4, 0.7
    policy = LinUCB(n_arms, dim, alpha=alpha, sherman_morrison=use_sherman_morrison)
    history = [(rng.standard_normal(dim), int(rng.integers(n_arms)), float(rng.standard_normal())) for _ in range(40)]
    for x, arm, reward in history:
        policy.update(arm, reward, x)
    for _ in range(5):
        context = rng.standard_normal(dim)
        A, b, p = numpy_linucb(history, n_arms, dim, alpha, context)
        np.testing.assert_allclose(policy.A, A, rtol=1e-12)
        np.testing.assert_allclose(policy.b, b, rtol=1e-12)
        np.testing.assert_allclose(policy.A_inv, np.linalg.inv(A), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(policy.indices(context), p, rtol=1e-9)
        assert policy.act(context) == int(np.argmax(p))


def test_sherman_morrison_equals_the_explicit_inverse():
    rng = np.random.default_rng(1)
    m = rng.standard_normal((5, 5))
    a = m @ m.T + np.eye(5)
    x = rng.standard_normal(5)
    np.testing.assert_allclose(sherman_morrison(np.linalg.inv(a), x), np.linalg.inv(a + np.outer(x, x)),
                               rtol=1e-9, atol=1e-12)


def mean_regret(make_policy, seeds=(0, 1, 2), steps=2000):
    env = BernoulliBandit(PROBS)
    return np.mean([run_bandit(env, make_policy(seed), steps, seed=seed).regret for seed in seeds], axis=0)


def test_ucb1_and_thompson_regret_is_low_and_sublinear():
    random = mean_regret(lambda seed: UniformRandom(5, seed=seed))
    assert random[-1] / random[999] > 1.9  # linear regret doubles with the horizon
    for make in (lambda seed: UCB1(5, seed=seed), lambda seed: ThompsonSampling(5, seed=seed)):
        regret = mean_regret(make)
        assert regret[-1] < 0.3 * random[-1]
        assert regret[-1] / regret[999] < 1.6
        assert np.all(np.diff(regret) >= 0)


def test_gaussian_thompson_and_decaying_epsilon_greedy_beat_random():
    env = GaussianBandit([0.0, 0.5, 1.0, 0.2], stds=1.0)
    random = run_bandit(env, UniformRandom(4, seed=0), 1000, seed=0).regret[-1]
    for policy in (GaussianThompsonSampling(4, seed=0), EpsilonGreedy(4, epsilon=1.0, decay=0.05, seed=0),
                   Boltzmann(4, temperature=0.2, seed=0)):
        assert run_bandit(env, policy, 1000, seed=0).regret[-1] < 0.5 * random, type(policy).__name__


def test_contextual_policies_beat_context_free_ucb1():
    env = LinearContextualBandit(n_arms=4, dim=3, noise_std=0.1, theta_seed=0)
    context_free = run_bandit(env, UCB1(4, seed=0), 400, seed=0).regret[-1]
    for policy in (LinUCB(4, 3, alpha=1.0, seed=0), LinearThompsonSampling(4, 3, seed=0)):
        assert run_bandit(env, policy, 400, seed=0).regret[-1] < 0.25 * context_free, type(policy).__name__
    neural = NeuralLinearBandit(4, 3, hidden=(16,), train_every=50, train_steps=30, seed=0)
    assert run_bandit(env, neural, 300, seed=0).regret[-1] < 0.5 * context_free


def test_neural_linear_statistics_are_the_features_of_the_stored_rounds():
    rng = np.random.default_rng(3)
    policy = NeuralLinearBandit(2, 3, hidden=(8,), train_every=10, train_steps=3, seed=0)
    for _ in range(14):  # a retraining and refit at round 10, then incremental updates
        policy.update(int(rng.integers(2)), float(rng.standard_normal()), rng.standard_normal(3))
    z = policy.features(np.stack(policy.contexts))
    arms, rewards = np.array(policy.arms), np.array(policy.rewards)
    for arm in range(2):
        np.testing.assert_allclose(policy.zz[arm], z[arms == arm].T @ z[arms == arm], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(policy.zr[arm], z[arms == arm].T @ rewards[arms == arm], rtol=1e-5, atol=1e-6)
        mu, precision, a, _ = policy.posterior(arm)
        np.testing.assert_allclose(precision @ mu, policy.zr[arm], rtol=1e-8, atol=1e-10)
        assert a == policy.a0 + (arms == arm).sum() / 2


def test_runs_are_reproducible_with_a_seed():
    env = BernoulliBandit(PROBS)
    first = run_bandit(env, ThompsonSampling(5, seed=4), 200, seed=4)
    second = run_bandit(env, ThompsonSampling(5, seed=4), 200, seed=4)
    np.testing.assert_array_equal(first.actions, second.actions)
    np.testing.assert_array_equal(first.rewards, second.rewards)


def test_clear_errors():
    with pytest.raises(ShapeError, match=r"LinUCB: the context must be a vector of shape \(3,\), got \(4,\)"):
        LinUCB(2, 3).act(np.zeros(4))
    with pytest.raises(ShapeError, match="LinearThompsonSampling"):
        LinearThompsonSampling(2, 3).act(None)
    with pytest.raises(ValueError, match="arm 5 is not in 0..1"):
        LinUCB(2, 3).update(5, 1.0, np.zeros(3))
    with pytest.raises(ValueError, match="UCB1.update: arm -1"):
        UCB1(3).update(-1, 1.0)
    with pytest.raises(ValueError, match="BernoulliBandit.step: arm 7 is not one of the 5 arms"):
        BernoulliBandit(PROBS).step(7)
    with pytest.raises(ValueError, match=r"probabilities must lie in \[0, 1\]"):
        BernoulliBandit([0.5, 1.5])
    with pytest.raises(ValueError, match="the policy has 3 arms but the bandit 5"):
        run_bandit(BernoulliBandit(PROBS), UCB1(3), 10)
    with pytest.raises(ValueError, match=r"rewards in \[0, 1\]"):
        ThompsonSampling(2).update(0, 2.5)
    with pytest.raises(ShapeError, match="context"):
        run_bandit(LinearContextualBandit(3, 2), LinUCB(3, 4), 5)
