"""Distributions in training: a REINFORCE policy on a contextual bandit, and a regression that
predicts its own noise level by maximum likelihood."""

from __future__ import annotations

import numpy as np

import lamina
import lamina.distributions as D


def _descend(params, lr):
    for p in params:
        p.data -= lr * p.grad
        p.grad = None


def test_reinforce_with_a_categorical_policy_learns_the_best_arms():
    rng = np.random.default_rng(0)
    mean_reward = np.array([[1.0, 0.2, 0.0, 0.3],          # context 0: arm 0 is best
                            [0.0, 0.1, 0.9, 0.4],          # context 1: arm 2
                            [0.2, 0.8, 0.1, 0.0]])         # context 2: arm 1
    weights = lamina.tensor(np.zeros((3, 4)), requires_grad=True, dtype=np.float64)
    lamina.manual_seed(0)
    for _ in range(150):
        context = rng.integers(0, 3, size=64)
        policy = D.Categorical(logits=lamina.tensor(np.eye(3)[context], dtype=np.float64) @ weights)
        action = policy.sample().numpy()
        reward = mean_reward[context, action] + 0.1 * rng.standard_normal(64)
        advantage = reward - reward.mean()
        loss = -(policy.log_prob(action) * advantage).mean()
        loss.backward()
        _descend([weights], lr=2.0)
    probs = D.Categorical(logits=weights).probs.numpy()
    np.testing.assert_array_equal(probs.argmax(axis=1), mean_reward.argmax(axis=1))
    assert probs.max(axis=1).min() > 0.8


def test_gaussian_likelihood_regression_recovers_the_noise_level():
    rng = np.random.default_rng(1)
    x = rng.uniform(-1.0, 1.0, 2000)
    true_log_sigma = np.log(0.2) + 0.8 * x                    # the noise grows with x
    y = 2.0 * x + 0.5 + np.exp(true_log_sigma) * rng.standard_normal(x.shape)
    xs, ys = lamina.tensor(x, dtype=np.float64), lamina.tensor(y, dtype=np.float64)
    params = [lamina.tensor(0.0, requires_grad=True, dtype=np.float64) for _ in range(4)]
    slope, intercept, log_sigma0, log_sigma1 = params
    optimizer = lamina.optim.Adam(params, lr=0.05)
    for _ in range(600):
        likelihood = D.Normal(xs * slope + intercept, (xs * log_sigma1 + log_sigma0).exp())
        loss = -likelihood.log_prob(ys).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert abs(slope.item() - 2.0) < 0.05 and abs(intercept.item() - 0.5) < 0.05
    assert abs(np.exp(log_sigma0.item()) - 0.2) < 0.02
    assert abs(log_sigma1.item() - 0.8) < 0.1
