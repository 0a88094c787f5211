"""DQN's and PPO's state dicts: saved through a safetensors file (as ``lamina train-rl`` does),
loaded into a fresh agent, they restore every array and counter, and both agents then go on
identically."""

from __future__ import annotations

import json

import numpy as np
import pytest

import lamina
from lamina.io import load_file, save_file
from lamina.io.state import flatten_state, unflatten_state
from lamina.rl import PPO, ActorCritic, DQNAgent, make, train_dqn, train_ppo


def through_file(state: dict, path) -> dict:
    tree, arrays = flatten_state(state, "agent")
    save_file(arrays, path, {"agent": json.dumps(tree)})
    arrays, metadata = load_file(path)
    return unflatten_state(json.loads(metadata["agent"]), arrays)


def assert_same_state(got, expected, where="state"):
    """Equal trees: the same keys and lengths, equal numbers and strings, arrays equal in dtype,
    shape and every value."""
    if isinstance(expected, dict):
        assert set(got) == set(expected), where
        for key in expected:
            assert_same_state(got[key], expected[key], f"{where}/{key}")
    elif isinstance(expected, (list, tuple)):
        assert len(got) == len(expected), where
        for i, (a, b) in enumerate(zip(got, expected)):
            assert_same_state(a, b, f"{where}/{i}")
    elif isinstance(expected, np.ndarray):
        assert isinstance(got, np.ndarray) and got.dtype == expected.dtype, where
        np.testing.assert_array_equal(got, expected, err_msg=where)
    else:
        assert got == expected and type(got) is type(expected), where


def dqn_agent(seed: int) -> DQNAgent:
    return DQNAgent.from_preset(make("CartPole-v1"), "zoo", seed=seed, hidden=(16,), buffer_size=300,
                                learning_starts=20, train_freq=8, gradient_steps=2, batch_size=16, eps_decay=200,
                                target_update_interval=12, lr_decay_steps=400, beta_steps=400)


@pytest.mark.parametrize("prioritized", [True, False])
def test_dqn_state_round_trips_and_the_restored_agent_goes_on_identically(tmp_path, prioritized):
    agent = dqn_agent(seed=0) if prioritized else DQNAgent(4, 2, hidden=(16,), buffer_size=300, batch_size=16,
                                                           seed=0)
    train_dqn(make("CartPole-v1"), total_steps=150, agent=agent, seed=0)
    saved = agent.state_dict()
    fresh = dqn_agent(seed=5) if prioritized else DQNAgent(4, 2, hidden=(16,), buffer_size=300, batch_size=16,
                                                           seed=5)
    fresh.load_state_dict(through_file(saved, tmp_path / "state.safetensors"))
    assert_same_state(fresh.state_dict(), saved)
    assert fresh.env_steps == 150 and fresh.steps_done == 150 and fresh.optimizer.lr == agent.optimizer.lr
    assert fresh.epsilon == agent.epsilon and len(fresh.buffer) == 150
    if prioritized:
        assert fresh.buffer.tree.total == agent.buffer.tree.total and fresh.buffer.beta == agent.buffer.beta
    # the optimizer still updates the fresh agent's own parameters
    params = [id(p) for p in fresh.policy_net.parameters()]
    assert [id(p) for group in fresh.optimizer.param_groups for p in group["params"]] == params

    returns = [train_dqn(make("CartPole-v1"), total_steps=60, agent=a, seed=3) for a in (agent, fresh)]
    assert returns[0] == returns[1]
    assert_same_state(fresh.state_dict(), agent.state_dict())


def test_dqn_refuses_a_state_of_another_kind():
    prioritized, uniform = dqn_agent(seed=0), DQNAgent(4, 2, hidden=(16,), buffer_size=300, seed=0)
    with pytest.raises(ValueError, match="prioritized=True replay but the agent prioritized=False"):
        uniform.load_state_dict(prioritized.state_dict())
    with pytest.raises(ValueError, match="the state is from 'ppo', not 'dqn'"):
        uniform.load_state_dict({"algorithm": "ppo"})
    small = DQNAgent(4, 2, hidden=(16,), buffer_size=100, seed=0)
    with pytest.raises(ValueError, match=r"'obs' is float32 \(300, 4\) in the state but float32 \(100, 4\)"):
        small.load_state_dict(uniform.state_dict())


@pytest.mark.parametrize("env_name", ["CartPole-v1", "Pendulum-v1"])
def test_ppo_state_round_trips_and_the_restored_agent_goes_on_identically(tmp_path, env_name):
    def new_ppo(seed):
        lamina.manual_seed(seed)
        env = make(env_name)
        return PPO(ActorCritic(env.observation_space.shape[0], env.action_space, hidden=(16,)), n_steps=32,
                   minibatch_size=32, seed=seed)

    agent = new_ppo(0)
    train_ppo(env_name, total_steps=128, num_envs=2, ppo=agent, seed=0)
    saved = agent.state_dict()
    assert agent.optimizer.step_count > 0
    returns_a = train_ppo(env_name, total_steps=128, num_envs=2, ppo=agent, seed=9)
    after_a = agent.state_dict()

    fresh = new_ppo(4)
    fresh.load_state_dict(through_file(saved, tmp_path / "state.safetensors"))   # sets the global generator too
    assert_same_state(fresh.state_dict(), saved)
    returns_b = train_ppo(env_name, total_steps=128, num_envs=2, ppo=fresh, seed=9)
    assert returns_b == returns_a
    assert_same_state(fresh.state_dict(), after_a)
    with pytest.raises(ValueError, match="the state is from 'dqn', not 'ppo'"):
        fresh.load_state_dict({"algorithm": "dqn"})
