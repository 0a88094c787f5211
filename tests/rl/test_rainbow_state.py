"""RainbowAgent's state dict: saved through a safetensors file, loaded into a fresh agent, it
restores every array, counter and pending n-step transition, and both agents then go on
identically (same returns, same weights, same replay priorities)."""

from __future__ import annotations

import pytest
from test_agent_state import assert_same_state, through_file

import lamina
from lamina.rl import Chain, RainbowAgent, TimeLimit, train_rainbow


def rainbow_agent(seed: int, buffer_size: int = 200) -> RainbowAgent:
    return RainbowAgent(10, 2, hidden=(16,), stream_hidden=16, atoms=11, v_min=0.0, v_max=2.0, n_step=3,
                        batch_size=8, buffer_size=buffer_size, learning_starts=16, target_update_interval=20,
                        beta_steps=200, seed=seed)


def test_rainbow_state_round_trips_and_the_restored_agent_goes_on_identically(tmp_path):
    lamina.manual_seed(0)
    agent = rainbow_agent(seed=0)
    train_rainbow(TimeLimit(Chain(10), 30), 50, agent=agent, seed=0)
    saved = agent.state_dict()
    assert saved["algorithm"] == "rainbow" and saved["env_steps"] == 50
    assert len(saved["n_step_pending"]) > 0             # ended mid-episode: transitions are still pending
    returns = train_rainbow(TimeLimit(Chain(10), 30), 40, agent=agent, seed=3)

    fresh = rainbow_agent(seed=7)
    fresh.load_state_dict(through_file(saved, tmp_path / "rainbow.safetensors"))   # sets the global generator too
    assert_same_state(fresh.state_dict(), saved)
    assert fresh.env_steps == 50 and fresh.buffer.beta == saved["buffer"]["beta"]
    params = [id(p) for p in fresh.online_net.parameters()]
    assert [id(p) for group in fresh.optimizer.param_groups for p in group["params"]] == params

    assert train_rainbow(TimeLimit(Chain(10), 30), 40, agent=fresh, seed=3) == returns
    after, expected = fresh.state_dict(), agent.state_dict()
    assert_same_state(after, expected)
    assert fresh.optimizer.step_count == agent.optimizer.step_count > 0


def test_rainbow_refuses_a_state_of_another_kind():
    agent = rainbow_agent(seed=0)
    with pytest.raises(ValueError, match="RainbowAgent.load_state_dict: the state is from 'dqn', not 'rainbow'"):
        agent.load_state_dict({"algorithm": "dqn"})
    with pytest.raises(ValueError, match="the state has 200 replay slots but the agent 100"):
        rainbow_agent(seed=0, buffer_size=100).load_state_dict(agent.state_dict())
