"""TD3 and DDPG: updates against a PyTorch re-implementation (clipped double Q targets with
clipped target noise, delayed actor and target updates), the state dict, argument checks,
and learning Pendulum-v1."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from test_sac import random_batch, sgd_step, torch_mlp, torch_params, torch_q

import lamina
from helpers import assert_close
from lamina import optim
from lamina.rl import DDPG, TD3, Box, evaluate_policy, make, td3_targets, train_ddpg, train_td3


def torch_actor(params, obs):
    return torch.tanh(torch_mlp(params, obs))


def torch_td3_update(nets, batch, target_noise, update_actor, gamma, tau, noise_clip, lr):
    """One TD3 update as Stable-Baselines3 writes it, on lists of torch weights."""
    obs, actions, next_obs = (torch.tensor(a) for a in (batch.obs, batch.actions, batch.next_obs))
    rewards, not_done = torch.tensor(batch.rewards), torch.tensor(1.0 - batch.terminated, dtype=torch.float32)
    with torch.no_grad():
        next_actions = torch_actor(nets["target_actor"], next_obs)
        if target_noise is not None:
            noise = torch.tensor(target_noise, dtype=torch.float32).clamp(-noise_clip, noise_clip)
            next_actions = (next_actions + noise).clamp(-1, 1)
        next_q = torch.min(torch.stack([torch_q(t, next_obs, next_actions) for t in nets["targets"]]), 0).values
        y = rewards + gamma * not_done * next_q
    critic_loss = sum(torch.nn.functional.mse_loss(torch_q(c, obs, actions), y) for c in nets["critics"])
    sgd_step([p for c in nets["critics"] for p in c], critic_loss, lr)
    stats = {"critic_loss": critic_loss.item()}
    if update_actor:
        actor_loss = -torch_q(nets["critics"][0], obs, torch_actor(nets["actor"], obs)).mean()
        sgd_step(nets["actor"], actor_loss, lr)
        stats["actor_loss"] = actor_loss.item()
        with torch.no_grad():
            pairs = list(zip(nets["critics"], nets["targets"])) + [(nets["actor"], nets["target_actor"])]
            for net, target in pairs:
                for p, p_target in zip(net, target):
                    p_target.mul_(1 - tau).add_(tau * p)
    return stats


def perturbed_agent(cls, lr: float):
    lamina.manual_seed(0)
    agent = cls(3, Box(-2.0, 2.0, (2,)), hidden=(16, 8), gamma=0.9, tau=0.1, seed=0)
    agent.actor_optimizer = optim.SGD(agent.actor.parameters(), lr=lr)
    agent.critic_optimizer = optim.SGD([p for c in agent.critics for p in c.parameters()], lr=lr)
    rng = np.random.default_rng(1)
    for net in [agent.target_actor, *agent.target_critics]:     # targets that differ from the networks
        for p in net.parameters():
            p.data += rng.normal(0, 0.1, p.shape).astype(np.float32)
    return agent


def torch_nets(agent) -> dict:
    return {"actor": torch_params(agent.actor), "target_actor": torch_params(agent.target_actor),
            "critics": [torch_params(c) for c in agent.critics],
            "targets": [torch_params(c) for c in agent.target_critics]}


def assert_same_weights(agent, nets, before, moved):
    ours = agent.networks()
    theirs = {"actor": nets["actor"], "target_actor": nets["target_actor"]}
    for i, (critic, target) in enumerate(zip(nets["critics"], nets["targets"])):
        theirs[f"critic{i}"], theirs[f"target_critic{i}"] = critic, target
    for name, net in ours.items():
        for k, (p, old, expected) in enumerate(zip(net.parameters(), before[name], theirs[name])):
            change = expected.detach().numpy() - old
            assert (np.abs(change).max() > 0) == (name in moved), f"{name} parameter {k}"
            assert_close(np.array(p.data) - old, change, 2e-4, f"{name} parameter {k}")


def test_td3_targets_use_the_clipped_noise_and_the_smaller_target_q():
    agent = perturbed_agent(TD3, 0.1)
    batch = random_batch()
    noise = np.random.default_rng(3).normal(0, 0.6, (16, 2))    # many draws beyond the clip of 0.5
    assert (np.abs(noise) > 0.5).mean() > 0.3
    nets = torch_nets(agent)
    next_obs = torch.tensor(batch.next_obs)
    with torch.no_grad():
        actions = (torch_actor(nets["target_actor"], next_obs) + torch.tensor(noise).float().clamp(-0.5, 0.5))
        q = [torch_q(t, next_obs, actions.clamp(-1, 1)) for t in nets["targets"]]
        expected = torch.tensor(batch.rewards) + 0.9 * torch.tensor(~batch.terminated) * torch.minimum(*q)
    ours = td3_targets(agent.target_actor, agent.target_critics, batch, 0.9, noise, 0.5)
    assert_close(ours, expected.numpy(), 1e-5, "targets")
    assert not np.allclose(ours, td3_targets(agent.target_actor, agent.target_critics, batch, 0.9, noise, 10.0))


def test_two_td3_updates_match_torch_with_the_delayed_actor_and_soft_target_updates():
    lr = 0.5
    agent = perturbed_agent(TD3, lr)
    nets = torch_nets(agent)
    batches = [random_batch(seed=s) for s in (4, 5)]
    noises = [np.random.default_rng(s).normal(0, 0.4, (16, 2)).astype(np.float32) for s in (6, 7)]
    for step, (batch, noise) in enumerate(zip(batches, noises)):
        before = {name: [np.array(p.data) for p in net.parameters()] for name, net in agent.networks().items()}
        update_actor = step == 1                      # policy_delay 2: the second update
        expected = torch_td3_update(nets, batch, noise, update_actor, 0.9, 0.1, 0.5, lr)
        stats = agent.update(batch, target_noise=noise)
        assert set(stats) == set(expected)
        for key, value in expected.items():
            assert stats[key] == pytest.approx(value, rel=1e-5), key
        moved = {"critic0", "critic1"} | ({"actor", "target_actor", "target_critic0", "target_critic1"}
                                          if update_actor else set())
        assert_same_weights(agent, nets, before, moved)


def test_a_ddpg_update_matches_torch_with_one_critic_and_no_target_noise():
    lr = 0.5
    agent = perturbed_agent(DDPG, lr)
    assert len(agent.critics) == 1 and agent.policy_delay == 1 and agent.target_policy_noise == 0
    nets = torch_nets(agent)
    batch = random_batch(seed=8)
    before = {name: [np.array(p.data) for p in net.parameters()] for name, net in agent.networks().items()}
    expected = torch_td3_update(nets, batch, None, True, 0.9, 0.1, 0.0, lr)
    stats = agent.update(batch)
    for key, value in expected.items():
        assert stats[key] == pytest.approx(value, rel=1e-5), key
    assert_same_weights(agent, nets, before, {"actor", "critic0", "target_actor", "target_critic0"})


@pytest.mark.parametrize("cls,train", [(TD3, train_td3), (DDPG, train_ddpg)])
def test_td3_and_ddpg_states_round_trip_and_explore_inside_the_bounds(tmp_path, cls, train):
    from test_agent_state import assert_same_state, through_file

    env = make("Pendulum-v1")
    settings = dict(hidden=(16, 16), batch_size=16, learning_starts=20, buffer_size=200)
    agent = cls.for_env(env, seed=0, **settings)
    train(env, 50, agent=agent, seed=0)
    assert agent.updates == 31
    fresh = cls.for_env(env, seed=3, **settings)
    fresh.load_state_dict(through_file(agent.state_dict(), tmp_path / "agent.safetensors"))
    assert_same_state(fresh.state_dict(), agent.state_dict())
    obs = env.reset(seed=1)[0]
    explored = np.array([agent.act(obs) for _ in range(30)])
    np.testing.assert_array_equal(explored, np.array([fresh.act(obs) for _ in range(30)]))
    assert explored.std() > 0 and np.all(np.abs(explored) <= 2.0)
    np.testing.assert_array_equal(agent.act(obs, True), fresh.act(obs, True))
    assert train(env, 20, agent=agent, seed=2) == train(env, 20, agent=fresh, seed=2)
    assert_same_state(fresh.state_dict(), agent.state_dict())


def test_td3_refuses_discrete_actions_and_bad_settings():
    with pytest.raises(ValueError, match="TD3: needs a flat Box action space"):
        TD3.for_env(make("CartPole-v1"))
    with pytest.raises(ValueError, match="DDPG: needs a flat Box action space"):
        train_ddpg("MountainCar-v0", 10)
    box = Box(-1.0, 1.0, (1,))
    for kwargs, message in [({"policy_delay": 0}, "policy_delay must be a positive int, got 0"),
                            ({"action_noise": -0.1}, "action_noise must be a number >= 0, got -0.1"),
                            ({"target_noise_clip": "x"}, "target_noise_clip must be a number >= 0, got 'x'"),
                            ({"buffer_size": 2.5}, "buffer_size must be an int >= 1, got 2.5")]:
        with pytest.raises(ValueError, match=f"TD3: {message}"):
            TD3(3, box, **kwargs)
    with pytest.raises(TypeError, match=r"train_td3: agent settings \['lr'\] given with a ready agent"):
        train_td3("Pendulum-v1", 5, agent=TD3(3, box, hidden=(4,)), lr=1e-3)


def test_td3_improves_clearly_on_the_pendulum():
    """Measured with these settings, the greedy return over these 5 episodes before training and
    after 5,000 steps: -1305 and -730 for seed 0, -1409 and -772 for seed 1 (TD3 needs more steps
    than SAC here; solved is about -200)."""
    start = time.perf_counter()
    lamina.manual_seed(0)
    env = make("Pendulum-v1")
    agent = TD3.for_env(env, seed=0, hidden=(64, 64), batch_size=128)
    untrained = evaluate_policy(agent, make("Pendulum-v1"), n_episodes=5, seed=100).mean()
    returns = train_td3(env, 5000, agent=agent, seed=0)
    greedy = evaluate_policy(agent, make("Pendulum-v1"), n_episodes=5, seed=100).mean()
    print(f"td3 {time.perf_counter() - start:.1f} s, returns {np.round(returns)}, greedy {untrained:.0f} -> "
          f"{greedy:.0f}")
    assert untrained < -1000 and greedy > -1000 and greedy > untrained + 400
