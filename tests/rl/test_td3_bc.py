"""TD3+BC: the actor loss and lambda against a float64 PyTorch rewrite (values, gradients to the
inputs and to the actor's parameters through a critic), a gradient check, the dataset's state
statistics and their use in updates and actions, TD3's target, and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, compare_with_torch
from lamina.errors import ShapeError
from lamina.rl import Box, Discrete
from lamina.rl.offline import TD3BC, OfflineDataset, state_statistics, td3_bc_actor_loss
from lamina.rl.replay import Batch


def torch_actor_loss(q, pi, actions, alpha=2.5):
    lam = alpha / q.abs().mean().detach()
    return -lam * q.mean() + ((pi - actions) ** 2).mean()


def test_actor_loss_and_lambda_match_a_torch_rewrite_and_pass_a_gradient_check():
    rng = np.random.default_rng(0)
    q, pi, actions = rng.normal(size=6) * 3, rng.uniform(-1, 1, (6, 2)), rng.uniform(-1, 1, (6, 2))
    compare_with_torch(lambda *a: td3_bc_actor_loss(*a)[0], torch_actor_loss, q, pi, actions, dtype=np.float64,
                       grad=[True, True, False])
    _, lam = td3_bc_actor_loss(lamina.tensor(q, dtype=np.float64), lamina.tensor(pi, dtype=np.float64), actions)
    assert lam == pytest.approx(2.5 / np.abs(q).mean())
    # lambda is a constant: the gradient to q is -lambda / B, not that of -alpha mean(q) / mean|q|
    assert check_gradients(lambda p: td3_bc_actor_loss(lamina.tensor(q, dtype=np.float64), p, actions)[0], pi)


def torch_params(net):
    return [torch.tensor(np.array(p.data), requires_grad=True) for p in net.parameters()]


def torch_mlp(params, x):
    for k in range(0, len(params), 2):
        x = x @ params[k] + params[k + 1]
        if k + 2 < len(params):
            x = torch.relu(x)
    return x


def small_agent(**options):
    lamina.manual_seed(0)
    return TD3BC(3, Box(-2.0, 2.0, (2,)), hidden=(8,), batch_size=5, seed=0, **options)


def random_batch(seed=1):
    rng = np.random.default_rng(seed)
    return Batch(rng.normal(size=(5, 3)), rng.uniform(-1, 1, (5, 2)), rng.normal(size=5), rng.normal(size=(5, 3)),
                 np.array([False, True, False, False, True]))


def test_actor_gradients_through_the_critic_match_a_torch_rewrite():
    agent = small_agent()
    actor, critic = agent.actor.double(), agent.critics[0].double()
    batch = random_batch()
    obs = lamina.tensor(batch.obs, dtype=np.float64)
    pi = actor(obs)
    loss, lam = td3_bc_actor_loss(critic(obs, pi), pi, batch.actions)
    loss.backward()
    actor_t, critic_t = torch_params(actor.net), torch_params(critic.net)
    obs_t = torch.tensor(batch.obs)
    pi_t = torch.tanh(torch_mlp(actor_t, obs_t))
    q_t = torch_mlp(critic_t, torch.cat([obs_t, pi_t], dim=1))[:, 0]
    loss_t = torch_actor_loss(q_t, pi_t, torch.tensor(batch.actions))
    loss_t.backward()
    assert_close(loss.numpy(), loss_t.detach().numpy(), 1e-10, "actor loss")
    assert lam == pytest.approx(2.5 / q_t.abs().mean().item(), rel=1e-12)
    for ours, theirs in zip(actor.parameters(), actor_t):
        assert_close(ours.grad, theirs.grad.numpy(), 1e-9, "actor gradient")


def dataset(seed=0, n=40):
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, 3)) * [1.0, 10.0, 0.1] + [5.0, -3.0, 0.0]
    ends = np.zeros(n, bool)
    ends[-1] = True
    return OfflineDataset(obs, rng.uniform(-2, 2, (n, 2)), rng.normal(size=n), obs + 1, np.zeros(n, bool), ends)


def test_state_statistics_are_the_mean_and_the_std_plus_a_thousandth():
    data = dataset()
    mean, std = state_statistics(data)
    np.testing.assert_allclose(mean, data.observations.astype(np.float64).mean(axis=0))
    np.testing.assert_allclose(std, data.observations.astype(np.float64).std(axis=0) + 1e-3)


def test_fit_normalises_the_states_of_batches_and_of_actions():
    data = dataset()
    agent = small_agent()
    agent.fit(data, 2)
    mean, std = state_statistics(data)
    np.testing.assert_allclose(agent.obs_mean, mean)
    batch = agent.unit_batch(data.sample(len(data), np.random.default_rng(0)))
    # the whole dataset, normalised, has mean 0 and std close to 1 (up to the 1e-3)
    normalized = agent.normalized(data.observations)
    np.testing.assert_allclose(normalized.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(normalized.std(axis=0), data.observations.std(axis=0) / std, rtol=1e-5)
    np.testing.assert_allclose(batch.next_obs, agent.normalized(batch.next_obs * std + mean), rtol=1e-4, atol=1e-5)
    with lamina.no_grad():
        expected = agent.actor(lamina.tensor(normalized[:1])).numpy()[0]
    np.testing.assert_allclose(agent.predict(data.observations[0]), agent.to_env(expected), rtol=1e-6)
    raw = small_agent(normalize=False)
    raw.fit(data, 1)
    np.testing.assert_array_equal(raw.obs_mean, 0.0)


def test_targets_are_td3s_clipped_double_q_at_the_smoothed_action():
    agent = small_agent(gamma=0.9)
    batch = random_batch()
    noise = np.random.default_rng(2).normal(size=(5, 2))
    y = agent.targets(batch, noise)
    next_obs = lamina.tensor(batch.next_obs.astype(np.float32))
    with lamina.no_grad():
        a = np.clip(agent.target_actor(next_obs).numpy() + np.clip(noise, -0.5, 0.5), -1, 1)
        q = np.minimum(*[c(next_obs, lamina.tensor(a.astype(np.float32))).numpy() for c in agent.target_critics])
    np.testing.assert_allclose(y, batch.rewards + 0.9 * (1 - batch.terminated) * q, rtol=1e-5)


def test_updates_report_lambda_every_second_step():
    agent = small_agent()
    history = [agent.update(random_batch()) for _ in range(4)]
    assert ["lam" in stats for stats in history] == [False, True, False, True]
    assert all(stats["lam"] > 0 for stats in history[1::2])


def test_td3_bc_refuses_discrete_actions_and_bad_shapes():
    with pytest.raises(ValueError, match="TD3BC: needs a Box action space"):
        TD3BC(4, Discrete(2))
    with pytest.raises(ShapeError, match=r"td3_bc_actor_loss: needs q \(B,\) and actions \(B, d\)"):
        td3_bc_actor_loss(lamina.tensor(np.zeros((3, 1))), lamina.tensor(np.zeros((3, 2))), np.zeros((3, 2)))
