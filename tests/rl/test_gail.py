"""GAIL: the discriminator's loss against PyTorch's binary cross-entropy (values and gradients
to its parameters), the three reward forms, imitating a corridor expert with PPO, and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close
from lamina.rl import Chain, Discrete, TimeLimit, VectorEnv, evaluate_policy
from lamina.rl.offline import collect_dataset
from lamina.rl.offline.gail import GAIL, Discriminator, discriminator_loss, gail_reward


def torch_params(net):
    return [torch.tensor(np.array(p.data), requires_grad=True) for p in net.parameters()]


def torch_logits(params, obs, actions, n_actions=3):
    x = torch.cat([torch.tensor(obs), torch.nn.functional.one_hot(torch.tensor(actions), n_actions).double()], dim=1)
    for k in range(0, len(params), 2):
        x = x @ params[k] + params[k + 1]
        if k + 2 < len(params):
            x = torch.relu(x)
    return x[:, 0]


def test_discriminator_loss_matches_torch_binary_cross_entropy():
    lamina.manual_seed(0)
    disc = Discriminator(4, Discrete(3), hidden=(8,))
    disc.net.double()
    rng = np.random.default_rng(0)
    expert_obs, policy_obs = rng.normal(size=(5, 4)), rng.normal(size=(7, 4))
    expert_actions, policy_actions = rng.integers(0, 3, 5), rng.integers(0, 3, 7)
    loss = discriminator_loss(disc, expert_obs, expert_actions, policy_obs, policy_actions)
    loss.backward()
    params = torch_params(disc.net)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    expert = torch_logits(params, expert_obs, expert_actions)
    policy = torch_logits(params, policy_obs, policy_actions)
    loss_t = bce(expert, torch.ones(5, dtype=torch.float64)) + bce(policy, torch.zeros(7, dtype=torch.float64))
    loss_t.backward()
    assert_close(loss.numpy(), loss_t.detach().numpy(), 1e-10, "loss")
    for ours, theirs in zip(disc.net.parameters(), params):
        assert_close(ours.grad, theirs.grad.numpy(), 1e-9, "gradient")
    d = torch.sigmoid(policy).detach().numpy()
    np.testing.assert_allclose(gail_reward(disc, policy_obs, policy_actions, "positive"), -np.log(1 - d), rtol=1e-9)
    np.testing.assert_allclose(gail_reward(disc, policy_obs, policy_actions, "negative"), np.log(d), rtol=1e-9)
    np.testing.assert_allclose(gail_reward(disc, policy_obs, policy_actions, "logit"), np.log(d / (1 - d)),
                               rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="kind must be one of"):
        gail_reward(disc, policy_obs, policy_actions, "exp")


def corridor():
    return TimeLimit(Chain(6), 30)


def test_gail_imitates_a_corridor_expert_without_its_rewards():
    env = corridor()
    expert = collect_dataset(env, lambda obs: 1, n_episodes=5, seed=0)
    lamina.manual_seed(0)
    gail = GAIL(VectorEnv([corridor] * 4), expert, reward="negative", hidden=(32,), disc_hidden=(32,),
                disc_lr=3e-3, lr=3e-3, n_steps=64, seed=0)
    returns, disc_losses = gail.learn(3072)
    print(f"GAIL on Chain(6): first returns {np.mean(returns[:10]):.3f}, last {np.mean(returns[-10:]):.3f}, "
          f"discriminator loss {disc_losses[0]:.3f} -> {disc_losses[-1]:.3f}")
    np.testing.assert_allclose(evaluate_policy(gail, env, n_episodes=2, seed=0), Chain(6).optimal_return)
    # a step cost alone would also teach "go right": the learned reward must prefer the expert's action
    cells = np.eye(6, dtype=np.float32)[:5]
    expert_reward = gail_reward(gail.discriminator, cells, np.ones(5, int), "negative")
    other_reward = gail_reward(gail.discriminator, cells, np.zeros(5, int), "negative")
    assert (expert_reward > other_reward).all()


def test_gail_refuses_an_expert_of_another_space():
    expert = collect_dataset(TimeLimit(Chain(4), 10), lambda obs: 1, n_episodes=1, seed=0)
    with pytest.raises(ValueError, match=r"expert's observations have shape \(4,\), the environment's \(6,\)"):
        GAIL(VectorEnv([corridor]), expert)
    with pytest.raises(ValueError, match="reward must be one of"):
        GAIL(VectorEnv([corridor]), expert, reward="survival")
