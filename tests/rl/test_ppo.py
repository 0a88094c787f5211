"""PPO: GAE against its direct formula, the loss pieces against PyTorch, the policy's
distributions, and learning a tiny task."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, compare_with_torch
from lamina.rl import (
    PPO,
    ActorCritic,
    Box,
    Chain,
    Discrete,
    TimeLimit,
    clipped_surrogate_loss,
    compute_gae,
    evaluate_policy,
    ppo_loss,
    train_ppo,
    value_loss,
)


def direct_gae(rewards, values, next_values, terminated, dones, gamma, lam):
    """A_t = sum_l (gamma lambda)^l delta_{t+l}, the sum running to the end of t's episode."""
    steps, n = rewards.shape
    deltas = rewards + gamma * (1 - terminated) * next_values - values
    advantages = np.zeros_like(rewards)
    for env in range(n):
        for t in range(steps):
            for k in range(t, steps):
                advantages[t, env] += (gamma * lam) ** (k - t) * deltas[k, env]
                if dones[k, env]:
                    break
    return advantages


def test_gae_equals_the_direct_formula():
    rng = np.random.default_rng(0)
    rewards, values, next_values = rng.standard_normal((3, 7, 3))
    terminated = np.zeros((7, 3), dtype=bool)
    truncated = np.zeros((7, 3), dtype=bool)
    terminated[2, 0], terminated[5, 1], truncated[3, 1], truncated[4, 2] = True, True, True, True
    dones = terminated | truncated
    advantages, returns = compute_gae(rewards, values, next_values, terminated, dones, 0.9, 0.8)
    expected = direct_gae(rewards, values, next_values, terminated, dones, 0.9, 0.8)
    np.testing.assert_allclose(advantages, expected, rtol=1e-12)
    np.testing.assert_allclose(returns, expected + values, rtol=1e-12)
    one_step, _ = compute_gae(rewards, values, next_values, terminated, dones, 0.9, 0.0)
    np.testing.assert_allclose(one_step, rewards + 0.9 * (1 - terminated) * next_values - values)
    with pytest.raises(ValueError, match="one shape"):
        compute_gae(rewards, values[:3], next_values, terminated, dones)


def test_clipped_surrogate_matches_torch():
    rng = np.random.default_rng(1)
    old = rng.standard_normal(40)
    new = old + rng.uniform(-0.6, 0.6, 40)           # ratios from 0.55 to 1.8: clipped and not
    advantages = rng.standard_normal(40)
    ratio = np.exp(new - old)
    assert ((ratio < 0.8) & (advantages < 0)).any() and ((ratio > 1.2) & (advantages > 0)).any()

    def theirs(log_prob):
        ratio = torch.exp(log_prob - torch.tensor(old, dtype=log_prob.dtype))
        adv = torch.tensor(advantages, dtype=log_prob.dtype)
        return -torch.min(ratio * adv, torch.clamp(ratio, 0.8, 1.2) * adv).mean()

    compare_with_torch(lambda lp: clipped_surrogate_loss(lp, old, advantages, 0.2), theirs, new)
    compare_with_torch(lambda lp: clipped_surrogate_loss(lp, old, advantages, 0.2), theirs, new, dtype=np.float64)
    assert check_gradients(lambda lp: clipped_surrogate_loss(lp, old, advantages, 0.2), new)


@pytest.mark.parametrize("clip_range", [None, 0.1])
def test_value_loss_matches_torch(clip_range):
    rng = np.random.default_rng(2)
    values, returns, old_values = rng.standard_normal((3, 30))

    def theirs(v):
        r, old = torch.tensor(returns, dtype=v.dtype), torch.tensor(old_values, dtype=v.dtype)
        squared = (v - r) ** 2
        if clip_range is not None:
            squared = torch.max(squared, (old + torch.clamp(v - old, -clip_range, clip_range) - r) ** 2)
        return 0.5 * squared.mean()

    compare_with_torch(lambda v: value_loss(v, returns, old_values, clip_range), theirs, values, dtype=np.float64)
    assert check_gradients(lambda v: value_loss(v, returns, old_values, clip_range), values)


def _torch_actor(policy: ActorCritic) -> torch.nn.Sequential:
    state = list(policy.actor.state_dict().values())
    layers = []
    for k in range(0, len(state), 2):
        linear = torch.nn.Linear(*state[k].shape).double()
        with torch.no_grad():
            linear.weight.copy_(torch.tensor(state[k].T))
            linear.bias.copy_(torch.tensor(state[k + 1]))
        layers += [linear, torch.nn.Tanh()]
    return torch.nn.Sequential(*layers[:-1])


@pytest.mark.parametrize("space", [Discrete(3), Box(-1.0, 1.0, shape=(2,))], ids=["categorical", "normal"])
def test_policy_log_prob_entropy_and_whole_loss_match_torch(space):
    lamina.set_default_dtype(np.float64)
    rng = np.random.default_rng(3)
    policy = ActorCritic(4, space, hidden=(5,), log_std_init=-0.3)
    obs = rng.standard_normal((12, 4))
    actions = rng.integers(3, size=12) if isinstance(space, Discrete) else rng.standard_normal((12, 2))
    old_log_prob, advantages, returns, old_values = rng.standard_normal((4, 12))
    log_prob, entropy = policy.log_prob_entropy(lamina.tensor(obs), actions)
    values = policy.value(lamina.tensor(obs))
    loss, parts = ppo_loss(log_prob, entropy, values, old_log_prob, advantages, returns, clip_range=0.2,
                           vf_coef=0.7, ent_coef=0.05, old_values=old_values, clip_range_vf=0.3)
    loss.backward()

    actor = _torch_actor(policy)
    out = actor(torch.tensor(obs))
    if isinstance(space, Discrete):
        dist = torch.distributions.Categorical(logits=out)
        t_log_prob, t_entropy = dist.log_prob(torch.tensor(actions)), dist.entropy()
    else:
        log_std = torch.tensor(policy.log_std.data, requires_grad=True)
        dist = torch.distributions.Normal(out, log_std.exp())
        t_log_prob, t_entropy = dist.log_prob(torch.tensor(actions)).sum(-1), dist.entropy().sum(-1)
    assert_close(log_prob.numpy(), t_log_prob.detach().numpy(), 1e-10, "log_prob")
    assert_close(entropy.numpy(), t_entropy.detach().numpy(), 1e-10, "entropy")
    ratio = torch.exp(t_log_prob - torch.tensor(old_log_prob))
    adv = torch.tensor(advantages)
    t_policy_loss = -torch.min(ratio * adv, torch.clamp(ratio, 0.8, 1.2) * adv).mean()
    v, r, old = torch.tensor(values.numpy()), torch.tensor(returns), torch.tensor(old_values)
    t_value_loss = 0.5 * torch.max((v - r) ** 2, (old + torch.clamp(v - old, -0.3, 0.3) - r) ** 2).mean()
    t_loss = t_policy_loss + 0.7 * t_value_loss - 0.05 * t_entropy.mean()
    assert_close(loss.item(), t_loss.item(), 1e-10, "loss")
    assert parts["entropy"] == pytest.approx(t_entropy.mean().item(), rel=1e-10)
    t_loss.backward()
    for a, b in zip(policy.actor.parameters(), actor.parameters()):
        b = b.grad.numpy()
        assert_close(a.grad, b.T if b.ndim == 2 else b, 1e-9, "actor gradient")
    if not isinstance(space, Discrete):
        assert_close(policy.log_std.grad, log_std.grad.numpy(), 1e-9, "log_std gradient")


def test_ppo_solves_the_chain():
    ppo = PPO(ActorCritic(6, Discrete(2), hidden=(32,)), lr=3e-3, n_steps=64, seed=0)
    returns = train_ppo(lambda: TimeLimit(Chain(6), 30), total_steps=3072, num_envs=4, ppo=ppo, seed=0)
    assert len(returns) > 100 and np.mean(returns[-20:]) == pytest.approx(Chain(6).optimal_return)
    env = TimeLimit(Chain(6), 30)
    np.testing.assert_allclose(evaluate_policy(ppo, env, n_episodes=2, seed=0), env.unwrapped.optimal_return)


def test_ppo_learns_with_continuous_actions_within_the_bounds():
    env = TimeLimit(ContinuousTarget(), 5)
    policy = ActorCritic(1, env.action_space, hidden=(16,))
    ppo = PPO(policy, lr=3e-3, n_steps=64, seed=0)
    before = evaluate_policy(ppo, env, n_episodes=2, seed=0).mean()
    returns = train_ppo(lambda: TimeLimit(ContinuousTarget(), 5), total_steps=6144, num_envs=4, ppo=ppo, seed=0)
    after = evaluate_policy(ppo, env, n_episodes=2, seed=0).mean()
    assert np.mean(returns[-20:]) > np.mean(returns[:20]) and after > max(before, -0.05)
    assert abs(ppo.predict(np.zeros(1))[0] - 0.5) < 0.1


class ContinuousTarget(Chain):
    """One-dimensional: reward -(a - 0.5)^2 for an action a in [-1, 1] (the best action is 0.5)."""

    def __init__(self):
        super().__init__(2)
        self.observation_space = Box(-1.0, 1.0, shape=(1,))
        self.action_space = Box(-1.0, 1.0, shape=(1,))

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action):
        assert self.action_space.contains(np.asarray(action, dtype=np.float32))
        return np.zeros(1, dtype=np.float32), -float((np.asarray(action)[0] - 0.5) ** 2), False, False, {}
