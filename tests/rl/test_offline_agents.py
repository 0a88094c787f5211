"""Offline agents: CQL's regularizer and total loss, IQL's expectile loss, advantage weights and
policy loss against PyTorch rewrites (float64, values and gradients to the networks'
parameters), the behaviour-cloning losses, argument errors, and learning CartPole from a fixed
dataset of expert and random episodes (BC, %BC, discrete CQL, IQL)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, compare_with_torch
from lamina.rl import Box, Discrete, evaluate_policy, make, mlp
from lamina.rl.offline import (
    IQL,
    BehaviorCloning,
    DiscreteCQL,
    OfflineDataset,
    advantage_weights,
    bc_loss,
    cartpole_expert,
    collect_dataset,
    concatenate_datasets,
    d4rl_style_dataset,
    discrete_cql_loss,
    discrete_cql_regularizer,
    expectile_loss,
)
from lamina.rl.replay import Batch


def torch_params(net):
    return [torch.tensor(np.array(p.data), requires_grad=True) for p in net.parameters()]


def torch_mlp(params, x):
    for k in range(0, len(params), 2):
        x = x @ params[k] + params[k + 1]
        if k + 2 < len(params):
            x = torch.relu(x)
    return x


def random_batch(n=12, obs_dim=4, n_actions=3, seed=0):
    rng = np.random.default_rng(seed)
    return Batch(rng.normal(size=(n, obs_dim)), rng.integers(0, n_actions, n), rng.normal(size=n),
                 rng.normal(size=(n, obs_dim)), rng.random(n) < 0.3)


def double_net(obs_dim, n_out, seed):
    lamina.manual_seed(seed)
    return mlp(obs_dim, (8, 8), n_out).double()


# -- CQL -------------------------------------------------------------------------------------------------


def test_discrete_cql_regularizer_matches_torch_logsumexp():
    actions = np.array([0, 2, 1, 2, 0])

    def torch_regularizer(q):
        return (torch.logsumexp(q, dim=1) - q.gather(1, torch.tensor(actions)[:, None])[:, 0]).mean()

    q = np.random.default_rng(1).normal(size=(5, 3)) * 3
    compare_with_torch(lambda t: discrete_cql_regularizer(t, actions), torch_regularizer, q, dtype=np.float64)
    assert check_gradients(lambda t: discrete_cql_regularizer(t, actions), q)


@pytest.mark.parametrize("td_loss", ["huber", "mse"])
def test_discrete_cql_loss_matches_a_torch_rewrite_with_gradients_to_the_q_network(td_loss):
    batch, gamma, alpha = random_batch(), 0.9, 0.7
    q_net, target_net = double_net(4, 3, 0), double_net(4, 3, 1)
    total, td, regularizer = discrete_cql_loss(q_net, target_net, batch, gamma, alpha, td_loss)
    q_net.zero_grad()
    total.backward()

    params, target_params = torch_params(q_net), torch_params(target_net)
    q = torch_mlp(params, torch.tensor(batch.obs))
    q_taken = q.gather(1, torch.tensor(batch.actions)[:, None])[:, 0]
    with torch.no_grad():
        next_max = torch_mlp(target_params, torch.tensor(batch.next_obs)).max(dim=1).values
        y = torch.tensor(batch.rewards) + gamma * (1 - torch.tensor(batch.terminated, dtype=torch.float64)) * next_max
    td_t = torch.nn.functional.smooth_l1_loss(q_taken, y) if td_loss == "huber" else torch.nn.functional.mse_loss(
        q_taken, y)
    reg_t = (torch.logsumexp(q, dim=1) - q_taken).mean()
    total_t = td_t + alpha * reg_t
    total_t.backward()
    for ours, theirs, what in ((total, total_t, "total"), (td, td_t, "td"), (regularizer, reg_t, "regularizer")):
        assert_close(ours.numpy(), theirs.detach().numpy(), 1e-10, what)
    for p, t in zip(q_net.parameters(), params):
        assert_close(p.grad, t.grad.numpy(), 1e-10, "gradient")
    assert all(p.grad is None or not np.any(p.grad) for p in target_net.parameters())


# -- IQL -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tau", [0.7, 0.2])
def test_expectile_loss_is_the_asymmetric_square_and_has_torch_gradients(tau):
    u = np.random.default_rng(2).normal(size=(7,))
    weights = np.abs(tau - (u < 0))
    value = expectile_loss(lamina.tensor(u, dtype=np.float64), tau).item()
    assert value == pytest.approx(np.mean(weights * u**2), rel=1e-12)

    def torch_expectile(d):
        return (torch.abs(tau - (d < 0).to(d.dtype)) * d**2).mean()

    compare_with_torch(lambda d: expectile_loss(d, tau), torch_expectile, u, dtype=np.float64)
    assert check_gradients(lambda d: expectile_loss(d, tau), u)


def test_expectile_and_iql_refuse_tau_outside_the_open_unit_interval():
    for tau in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match=r"tau must be in \(0, 1\)"):
            expectile_loss(lamina.tensor(np.ones(3)), tau)
        with pytest.raises(ValueError, match=r"IQL: tau must be in \(0.0, 1.0\)"):
            IQL(4, Discrete(2), tau=tau)


def test_advantage_weights_are_exponential_and_clipped_at_100():
    advantages = np.array([-2.0, 0.0, 0.5, 3.0, 1e4])
    weights = advantage_weights(advantages, beta=3.0)
    np.testing.assert_allclose(weights, np.minimum(np.exp(3.0 * advantages[:4]), 100.0).tolist() + [100.0])
    assert np.isfinite(weights).all() and weights.max() == 100.0


@pytest.mark.parametrize("discrete", [True, False])
def test_iql_losses_match_a_torch_rewrite(discrete):
    space = Discrete(3) if discrete else Box(-1.0, 1.0, (2,))
    lamina.manual_seed(0)
    agent = IQL(4, space, hidden=(8,), seed=0, tau=0.8, beta=2.0, gamma=0.9)
    for net in (agent.value, agent.policy, *agent.critics, *agent.target_critics):
        net.double()
    batch = random_batch()
    if not discrete:
        batch = batch._replace(actions=np.random.default_rng(5).uniform(-0.9, 0.9, (12, 2)))
    v_loss, advantages = agent.value_loss(batch)
    q_loss = agent.critic_loss(batch)
    pi_loss = agent.policy_loss(batch, advantages)
    for loss in (v_loss, q_loss, pi_loss):
        loss.backward()

    obs, next_obs = torch.tensor(batch.obs), torch.tensor(batch.next_obs)
    actions = torch.tensor(batch.actions)
    v_params, pi_params = torch_params(agent.value), torch_params(agent.policy)
    q_params = [torch_params(c) for c in agent.critics]
    target_params = [torch_params(c) for c in agent.target_critics]

    def q_of(params):
        if discrete:
            return torch_mlp(params, obs).gather(1, actions[:, None])[:, 0]
        return torch_mlp(params, torch.cat([obs, actions], dim=1))[:, 0]

    with torch.no_grad():
        target_q = torch.minimum(*[q_of(p) for p in target_params])
    u = target_q - torch_mlp(v_params, obs)[:, 0]
    v_loss_t = (torch.abs(0.8 - (u < 0).double()) * u**2).mean()
    with torch.no_grad():
        y = torch.tensor(batch.rewards) + 0.9 * (1 - torch.tensor(batch.terminated).double()) * torch_mlp(
            v_params, next_obs)[:, 0]
    q_loss_t = sum(((q_of(p) - y) ** 2).mean() for p in q_params)
    weights = torch.clamp(torch.exp(2.0 * u.detach()), max=100.0)
    outputs = torch_mlp(pi_params, obs)
    if discrete:
        log_prob = torch.log_softmax(outputs, dim=1).gather(1, actions[:, None])[:, 0]
    else:
        dist = torch.distributions.Normal(torch.tanh(outputs[:, :2]), torch.clamp(outputs[:, 2:], -5, 2).exp())
        log_prob = dist.log_prob(actions).sum(-1)
    pi_loss_t = -(weights * log_prob).mean()
    (v_loss_t + q_loss_t + pi_loss_t).backward()
    for ours, theirs, what in ((v_loss, v_loss_t, "value"), (q_loss, q_loss_t, "critic"), (pi_loss, pi_loss_t, "pi")):
        assert_close(ours.numpy(), theirs.detach().numpy(), 1e-10, what)
    nets = [agent.value, agent.policy, *agent.critics]
    for net, params in zip(nets, [v_params, pi_params, *q_params]):
        for p, t in zip(net.parameters(), params):
            assert_close(p.grad, t.grad.numpy(), 1e-9, f"gradient of {type(net).__name__}")


# -- behaviour cloning -----------------------------------------------------------------------------------


def test_bc_losses_match_torch():
    rng = np.random.default_rng(3)
    obs = rng.normal(size=(6, 4))
    policy = double_net(4, 3, 2)
    labels = rng.integers(0, 3, 6)
    ours = bc_loss(policy, obs, labels, discrete=True).item()
    params = torch_params(policy)
    theirs = torch.nn.functional.cross_entropy(torch_mlp(params, torch.tensor(obs)), torch.tensor(labels)).item()
    assert ours == pytest.approx(theirs, rel=1e-12)
    gaussian = double_net(4, 4, 3)
    actions = rng.uniform(-1, 1, (6, 2))
    ours = bc_loss(gaussian, obs, actions, discrete=False, loss="gaussian").item()
    out = torch_mlp(torch_params(gaussian), torch.tensor(obs))
    dist = torch.distributions.Normal(torch.tanh(out[:, :2]), torch.clamp(out[:, 2:], -5, 2).exp())
    assert ours == pytest.approx(-dist.log_prob(torch.tensor(actions)).sum(-1).mean().item(), rel=1e-12)
    deterministic = double_net(4, 2, 4)
    mse = bc_loss(deterministic, obs, actions, discrete=False, loss="mse").item()
    out = torch_mlp(torch_params(deterministic), torch.tensor(obs))
    assert mse == pytest.approx(((torch.tanh(out) - torch.tensor(actions)) ** 2).mean().item(), rel=1e-12)


@pytest.mark.parametrize("loss", ["mse", "gaussian"])
def test_behavior_cloning_copies_a_continuous_controller_within_the_bounds(loss):
    env = make("Pendulum-v1", max_episode_steps=50)

    def controller(obs):
        return np.clip([-1.5 * obs[2] - 3.0 * obs[1]], -2.0, 2.0).astype(np.float32)

    data = collect_dataset(env, controller, n_episodes=8, seed=0)
    lamina.manual_seed(0)
    agent = BehaviorCloning.for_env(env, loss=loss, lr=3e-3, seed=0)
    agent.fit(data, 300)
    test_obs = collect_dataset(env, controller, n_episodes=2, seed=50).observations
    predicted = np.array([agent.predict(obs) for obs in test_obs])
    error = np.abs(predicted - np.array([controller(obs) for obs in test_obs])).mean()
    print(f"BC ({loss}) on a Pendulum controller: mean absolute action error {error:.3f} (actions in [-2, 2])")
    assert error < 0.3 and predicted.min() >= -2.0 and predicted.max() <= 2.0


def test_discrete_actions_that_start_above_zero_come_back_shifted():
    env = make("CartPole-v1", max_episode_steps=50)
    data = collect_dataset(env, cartpole_expert, n_episodes=2, seed=0)
    data.actions = data.actions + 1
    lamina.manual_seed(0)
    agent = BehaviorCloning(4, Discrete(2, start=1), seed=0)
    agent.fit(data, 100)
    predicted = {agent.predict(obs) for obs in data.observations}
    assert predicted == {1, 2}


def test_agents_refuse_a_dataset_of_another_action_space():
    data = OfflineDataset(np.zeros((3, 4)), np.zeros((3, 2)), np.zeros(3), np.zeros((3, 4)), [0, 0, 1], [0, 0, 0])
    with pytest.raises(ValueError, match=r"BehaviorCloning: the action space is Discrete\(2\)"):
        BehaviorCloning(4, Discrete(2)).fit(data, 1)
    with pytest.raises(ValueError, match="DiscreteCQL: needs a Discrete action space"):
        DiscreteCQL(4, Box(-1, 1, (2,)))
    with pytest.raises(ValueError, match="observations of 5 values but the dataset's have 4"):
        BehaviorCloning(5, Box(-1, 1, (2,))).fit(data, 1)


# -- learning CartPole offline ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cartpole_data():
    env = make("CartPole-v1")
    expert = d4rl_style_dataset(env, "expert", cartpole_expert, n_episodes=4, seed=0)
    random = d4rl_style_dataset(env, "random", cartpole_expert, n_episodes=100, seed=1)
    return env, expert, concatenate_datasets([expert, random])


def score(agent, env):
    return float(evaluate_policy(agent, env, n_episodes=5, seed=100).mean())


def test_behavior_cloning_and_percentage_bc_on_cartpole(cartpole_data):
    env, expert, mixed = cartpole_data
    results = {}
    for name, data, fraction in (("BC expert", expert, 1.0), ("BC mixed", mixed, 1.0), ("10%BC mixed", mixed, 0.1)):
        lamina.manual_seed(0)
        agent = BehaviorCloning.for_env(env, seed=0, top_fraction=fraction)
        agent.fit(data, 300)
        results[name] = score(agent, env)
    print("CartPole-v1 mean return over 5 episodes:", results)
    assert results["BC expert"] > 300 and results["10%BC mixed"] > 300


def test_cql_and_iql_learn_cartpole_from_expert_and_random_episodes(cartpole_data):
    env, _, mixed = cartpole_data
    results = {}
    for name, make_agent, steps in (
            ("CQL", lambda: DiscreteCQL.for_env(env, seed=0), 1000),
            ("DQN (CQL alpha 0)", lambda: DiscreteCQL.for_env(env, seed=0, alpha=0.0), 1000),
            ("IQL", lambda: IQL.for_env(env, seed=0, lr=1e-3, tau=0.9, polyak=0.02), 600)):
        lamina.manual_seed(0)
        agent = make_agent()
        start = time.perf_counter()
        agent.fit(mixed, steps)
        results[name] = (score(agent, env), round(time.perf_counter() - start, 2))
    print("CartPole-v1 (mean return over 5 episodes, seconds of training):", results)
    assert results["CQL"][0] > 150 and results["IQL"][0] > 150
