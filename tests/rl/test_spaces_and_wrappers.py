"""Spaces, seeding, TimeLimit, make and VectorEnv."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from lamina.rl import Box, Chain, Discrete, GridWorld, TimeLimit, VectorEnv, make


def test_discrete_space_samples_in_range_and_reproducibly():
    space = Discrete(3, start=2)
    space.seed(7)
    first = [space.sample() for _ in range(50)]
    space.seed(7)
    assert [space.sample() for _ in range(50)] == first
    assert set(first) == {2, 3, 4}
    assert 4 in space and 5 not in space and 1 not in space and 2.0 not in space


def test_box_samples_by_kind_of_bound():
    space = Box(np.array([-1.0, 0.0, -np.inf, -np.inf]), np.array([1.0, np.inf, 3.0, np.inf]))
    space.seed(0)
    draws = np.stack([space.sample() for _ in range(2000)])
    assert draws.dtype == np.float32 and draws.shape == (2000, 4)
    assert np.all(np.abs(draws[:, 0]) <= 1) and np.all(draws[:, 1] >= 0) and np.all(draws[:, 2] <= 3)
    assert abs(draws[:, 0].mean()) < 0.1 and abs(draws[:, 3].std() - 1) < 0.1
    assert all(space.contains(d) for d in draws[:10])
    assert not space.contains(np.array([2.0, 0, 0, 0])) and not space.contains(np.zeros(3))
    with pytest.raises(ValueError, match="low"):
        Box(1.0, 0.0, shape=(2,))


@pytest.mark.parametrize("name", ["CartPole-v1", "Pendulum-v1", "MountainCar-v0"])
def test_seeded_episodes_repeat(name):
    def episode(seed):
        env = make(name)
        env.action_space.seed(seed)
        obs, _ = env.reset(seed=seed)
        trace = [obs]
        for _ in range(30):
            obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            trace.append(np.append(obs, reward))
            if terminated or truncated:
                trace.append(env.reset()[0])
        return np.concatenate(trace)

    np.testing.assert_array_equal(episode(4), episode(4))
    assert not np.array_equal(episode(4), episode(5))


def test_unseeded_resets_follow_lamina_seed():
    lamina.manual_seed(11)
    a = make("CartPole-v1").reset()[0]
    lamina.manual_seed(11)
    b = make("CartPole-v1").reset()[0]
    np.testing.assert_array_equal(a, b)


def test_time_limit_truncates_and_restarts_its_count():
    env = TimeLimit(Chain(10), max_episode_steps=3)
    env.reset(seed=0)
    flags = [env.step(0)[2:4] for _ in range(3)]
    assert flags == [(False, False), (False, False), (False, True)]
    env.reset()
    assert env.step(1)[3] is False
    assert env.unwrapped.n == 10 and env.n == 10
    with pytest.raises(KeyError, match="no environment 'Nope'"):
        make("Nope")


def test_chain_and_grid_world_optimal_paths():
    chain = Chain(5)
    chain.reset(seed=0)
    total = 0.0
    for _ in range(4):
        obs, reward, terminated, _, _ = chain.step(1)
        total += reward
    assert terminated and obs.argmax() == 4 and total == pytest.approx(chain.optimal_return)
    grid = GridWorld(3)
    obs, _ = grid.reset(seed=0)
    assert obs.argmax() == 0
    assert grid.step(0)[0].argmax() == 0                    # wall above
    total = sum(grid.step(a)[1] for a in (1, 1, 2)) + 0.0
    obs, reward, terminated, _, _ = grid.step(2)
    assert terminated and obs.argmax() == 8 and total + reward == pytest.approx(grid.optimal_return)


def test_vector_env_resets_finished_copies_in_the_same_step():
    venv = VectorEnv([lambda: TimeLimit(Chain(3), 5)] * 2)
    obs, _ = venv.reset(seed=0)
    assert obs.shape == (2, 3) and np.all(obs[:, 0] == 1)
    obs, rewards, terminated, truncated, info = venv.step(np.array([1, 0]))
    assert obs[0].argmax() == 1 and obs[1].argmax() == 0
    obs, rewards, terminated, truncated, info = venv.step(np.array([1, 0]))
    assert terminated.tolist() == [True, False] and info["done"].tolist() == [True, False]
    assert info["final_obs"][0].argmax() == 2 and obs[0].argmax() == 0      # reset right away
    assert rewards[0] == 1.0 and rewards[1] == pytest.approx(-0.01)
    for _ in range(3):
        obs, rewards, terminated, truncated, info = venv.step(np.array([0, 0]))
    assert truncated.tolist() == [False, True] and not terminated[1] and info["done"][1]
    with pytest.raises(ValueError, match="3 actions for 2"):
        venv.step(np.zeros(3, dtype=int))
