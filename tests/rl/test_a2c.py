"""A2C: the loss against PyTorch, one update as an RMSprop step on that loss's gradient, the
state dict, and learning CartPole-v1."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch, randn
from lamina.rl import A2C, ActorCritic, a2c_loss, evaluate_policy, make, train_a2c
from lamina.rl.networks import obs_tensor
from lamina.rl.vector import VectorEnv


def torch_a2c_loss(log_prob, entropy, values, advantages, returns):
    """Stable-Baselines3's A2C loss with vf_coef 0.5 and ent_coef 0.01."""
    policy_loss = -(advantages * log_prob).mean()
    value_loss = torch.nn.functional.mse_loss(returns, values)
    return policy_loss + 0.01 * -entropy.mean() + 0.5 * value_loss


def test_a2c_loss_matches_torch_and_has_exact_gradients():
    arrays = [randn(12, seed=s) for s in range(5)]

    def ours(log_prob, entropy, values, advantages, returns):
        return a2c_loss(log_prob, entropy, values, advantages.numpy(), returns.numpy(), 0.5, 0.01)[0]

    compare_with_torch(ours, torch_a2c_loss, *arrays, grad=[True, True, True, False, False])
    assert check_gradients(ours, *arrays, grad=[True, True, True, False, False])


def new_a2c(env_name: str, seed: int, **kwargs) -> A2C:
    lamina.manual_seed(seed)
    env = make(env_name)
    return A2C(ActorCritic(env.observation_space.shape[0], env.action_space, hidden=(16,)), seed=seed, **kwargs)


@pytest.mark.parametrize("env_name", ["CartPole-v1", "Pendulum-v1"])
def test_an_a2c_update_is_one_rmsprop_step_on_the_loss_of_the_whole_rollout(env_name):
    a2c = new_a2c(env_name, 0, max_grad_norm=None, ent_coef=0.01)
    venv = VectorEnv([lambda: make(env_name)] * 3)
    rollout, _ = a2c.collect(venv, venv.reset(seed=0)[0])
    assert rollout["obs"].shape[:2] == (5, 3)
    twin = new_a2c(env_name, 1)
    twin.policy.load_state_dict(a2c.policy.state_dict())
    flat = {key: value.reshape(-1, *value.shape[2:]) for key, value in rollout.items()}
    obs = obs_tensor(flat["obs"])
    log_prob, entropy = twin.policy.log_prob_entropy(obs, flat["actions"])
    loss, _ = a2c_loss(log_prob, entropy, twin.policy.value(obs), flat["advantages"], flat["returns"], 0.5, 0.01)
    loss.backward()
    before = [np.array(p.data) for p in a2c.policy.parameters()]
    parts = a2c.update(rollout)
    assert a2c.optimizer.step_count == 1
    assert parts["value_loss"] == pytest.approx(np.mean((flat["values"] - flat["returns"]) ** 2), rel=1e-5)
    for p, old, q in zip(a2c.policy.parameters(), before, twin.policy.parameters()):
        g = q.grad.astype(np.float64)     # RMSprop's first step: square_avg = (1 - 0.99) g^2
        expected = old - 7e-4 * g / (np.sqrt(0.01 * g * g) + 1e-5)
        np.testing.assert_allclose(p.data, expected, rtol=1e-5, atol=1e-7)


def test_a2c_returns_are_n_step_returns_bootstrapped_from_the_value():
    a2c = new_a2c("Pendulum-v1", 0)
    venv = VectorEnv([lambda: make("Pendulum-v1")])
    rollout, _ = a2c.collect(venv, venv.reset(seed=0)[0])
    rewards, next_values = rollout["rewards"][:, 0], rollout["next_values"][:, 0]
    expected = [sum(0.99 ** (k - t) * rewards[k] for k in range(t, 5)) + 0.99 ** (5 - t) * next_values[-1]
                for t in range(5)]
    np.testing.assert_allclose(rollout["returns"][:, 0], expected, rtol=1e-6)


def test_a2c_state_round_trips_and_refuses_bad_settings(tmp_path):
    from test_agent_state import assert_same_state, through_file

    agent = new_a2c("CartPole-v1", 0)
    train_a2c("CartPole-v1", total_steps=100, num_envs=2, a2c=agent, seed=0)
    saved = agent.state_dict()
    assert saved["algorithm"] == "a2c" and agent.optimizer.step_count == 10
    returns = train_a2c("CartPole-v1", total_steps=100, num_envs=2, a2c=agent, seed=5)
    fresh = new_a2c("CartPole-v1", 3)
    fresh.load_state_dict(through_file(saved, tmp_path / "a2c.safetensors"))   # sets the global generator too
    assert_same_state(fresh.state_dict(), saved)
    assert train_a2c("CartPole-v1", total_steps=100, num_envs=2, a2c=fresh, seed=5) == returns
    assert_same_state(fresh.state_dict(), agent.state_dict())
    with pytest.raises(ValueError, match="A2C.load_state_dict: the state is from 'ppo', not 'a2c'"):
        fresh.load_state_dict({"algorithm": "ppo"})
    with pytest.raises(ValueError, match="A2C: n_steps must be a positive int, got 0"):
        new_a2c("CartPole-v1", 0, n_steps=0)
    with pytest.raises(TypeError, match=r"train_a2c: A2C settings \['lr'\] given with a ready A2C"):
        train_a2c("CartPole-v1", 10, a2c=fresh, lr=1e-3)


def test_a2c_learns_to_balance_the_pole():
    start = time.perf_counter()
    lamina.manual_seed(0)
    env = make("CartPole-v1")
    a2c = A2C(ActorCritic(4, env.action_space), seed=0)
    returns = train_a2c("CartPole-v1", total_steps=16000, num_envs=8, a2c=a2c, seed=0)
    greedy = evaluate_policy(a2c, make("CartPole-v1"), n_episodes=5, seed=100)
    print(f"a2c {time.perf_counter() - start:.1f} s, first 20 {np.mean(returns[:20]):.1f}, "
          f"last 20 {np.mean(returns[-20:]):.1f}, greedy {greedy.mean():.1f}")
    assert np.mean(returns[-20:]) > 3 * np.mean(returns[:20]) and greedy.mean() > 150
