"""Continuous CQL(H) on SAC: the importance-sampled soft-maximum regularizer and the critic loss
against PyTorch rewrites (float64, gradients to the critics' parameters), the proposals'
densities, the Lagrange form's alpha' moving the right way, and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, compare_with_torch
from lamina.rl import Box, Discrete, make
from lamina.rl.offline import ContinuousCQL, collect_dataset, continuous_cql_regularizer
from lamina.rl.replay import Batch


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_regularizer_matches_a_torch_importance_sampled_logsumexp(temperature):
    rng = np.random.default_rng(0)
    q_data, q_sampled = rng.normal(size=5), rng.normal(size=(5, 6)) * 2
    log_density = rng.normal(size=(5, 6))

    def torch_regularizer(q_data, q_sampled):
        ood = temperature * torch.logsumexp((q_sampled - torch.tensor(log_density)) / temperature, dim=1)
        return (ood - q_data).mean()

    def ours(q_data, q_sampled):
        return continuous_cql_regularizer(q_data, q_sampled, log_density, temperature)

    compare_with_torch(ours, torch_regularizer, q_data, q_sampled, dtype=np.float64)
    assert check_gradients(ours, q_data, q_sampled)


def torch_params(net):
    return [torch.tensor(np.array(p.data), requires_grad=True) for p in net.parameters()]


def torch_q(params, obs, actions):
    x = torch.cat([obs, actions], dim=1)
    for k in range(0, len(params), 2):
        x = x @ params[k] + params[k + 1]
        if k + 2 < len(params):
            x = torch.relu(x)
    return x[:, 0]


def small_agent(**options):
    lamina.manual_seed(0)
    return ContinuousCQL(3, Box(-2.0, 2.0, (2,)), hidden=(8,), n_actions=3, batch_size=6, seed=0, **options)


def random_batch(seed=1):
    rng = np.random.default_rng(seed)
    return Batch(rng.normal(size=(6, 3)), rng.uniform(-1, 1, (6, 2)), rng.normal(size=6), rng.normal(size=(6, 3)),
                 rng.random(6) < 0.3)


def test_proposals_have_the_uniform_and_policy_densities():
    agent = small_agent()
    obs, actions, log_density = agent.sampled_actions(random_batch())
    assert obs.shape == (18, 3) and actions.shape == (18, 3, 2) and log_density.shape == (18, 3)
    np.testing.assert_array_equal(obs[:3], np.repeat(random_batch().obs[:1], 3, axis=0).astype(np.float32))
    assert np.all(np.abs(actions) <= 1.0)
    np.testing.assert_allclose(log_density[:, 0], -2 * math.log(2.0))


def test_critic_loss_matches_a_torch_rewrite_with_gradients_to_both_critics():
    agent = small_agent()
    for net in (agent.actor, *agent.critics, *agent.target_critics):
        net.double()
    batch = random_batch()
    samples = agent.sampled_actions(batch)
    targets = np.random.default_rng(2).normal(size=6)
    total, td, regularizers = agent.critic_loss(batch, targets, 2.5, samples)
    total.backward()

    obs, actions, log_density = samples
    sampled_obs = torch.tensor(np.repeat(obs, 3, axis=0), dtype=torch.float64)
    sampled_actions = torch.tensor(actions.reshape(-1, 2), dtype=torch.float64)
    density = torch.tensor(log_density.reshape(6, 9))
    data_obs, data_actions = torch.tensor(batch.obs), torch.tensor(batch.actions)
    total_t, params = 0.0, []
    for critic in agent.critics:
        p = torch_params(critic)
        params.append(p)
        q_data = torch_q(p, data_obs, data_actions)
        q_sampled = torch_q(p, sampled_obs, sampled_actions).reshape(6, 9)
        regularizer = (torch.logsumexp(q_sampled - density, dim=1) - q_data).mean()
        total_t = total_t + ((q_data - torch.tensor(targets)) ** 2).mean() + 2.5 * regularizer
    total_t.backward()
    assert_close(total.numpy(), total_t.detach().numpy(), 1e-10, "critic loss")
    for critic, p in zip(agent.critics, params):
        for ours, theirs in zip(critic.parameters(), p):
            assert_close(ours.grad, theirs.grad.numpy(), 1e-9, "gradient")


@pytest.mark.parametrize("gap, direction", [(100.0, -1), (-100.0, 1)])
def test_lagrange_alpha_prime_falls_below_the_gap_and_rises_above_it(gap, direction):
    env = make("Pendulum-v1", max_episode_steps=20)
    data = collect_dataset(env, None, n_episodes=3, seed=0)
    agent = ContinuousCQL.for_env(env, hidden=(16,), n_actions=2, batch_size=16, target_action_gap=gap, seed=0)
    history = agent.fit(data, 5)
    assert all(np.isfinite(list(stats.values())).all() for stats in history)
    assert np.sign(history[-1]["alpha_prime"] - history[0]["alpha_prime"]) == direction
    action = agent.predict(data.observations[0])
    assert action.shape == (1,) and -2.0 <= action[0] <= 2.0


def test_continuous_cql_refuses_discrete_actions_and_a_discrete_dataset():
    with pytest.raises(ValueError, match="ContinuousCQL: needs a Box action space"):
        ContinuousCQL(4, Discrete(2))
    env = make("CartPole-v1", max_episode_steps=10)
    data = collect_dataset(env, None, n_episodes=1, seed=0)
    with pytest.raises(ValueError, match=r"ContinuousCQL: the action space is Box.*int64"):
        ContinuousCQL(4, Box(-1, 1, (1,))).fit(data, 1)
