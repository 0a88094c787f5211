"""Offline datasets: returns to go against a hand loop with episode resets, the flags written by
collect_dataset, filtering, segments for sequence models, reward normalization, D4RL-style
mixes on CartPole and the errors for malformed data."""

from __future__ import annotations

import numpy as np
import pytest

from lamina.rl import Box, Discrete, make
from lamina.rl.offline import (
    OfflineDataset,
    cartpole_expert,
    check_action_space,
    collect_dataset,
    concatenate_datasets,
    d4rl_style_dataset,
    normalize_returns,
    normalized_score,
)


def toy_dataset(seed=0, episode_lengths=(3, 1, 4, 2), last_timeout=True):
    rng = np.random.default_rng(seed)
    n = sum(episode_lengths)
    terminals, timeouts = np.zeros(n, bool), np.zeros(n, bool)
    ends = np.cumsum(episode_lengths) - 1
    terminals[ends[:-1]] = True
    (timeouts if last_timeout else terminals)[ends[-1]] = True
    obs = rng.normal(size=(n, 3))
    return OfflineDataset(obs, rng.integers(0, 2, n), rng.normal(size=n), obs + 1, terminals, timeouts)


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_returns_to_go_restart_at_every_episode_end(gamma):
    data = toy_dataset()
    expected = np.zeros(len(data))
    running = 0.0
    for i in reversed(range(len(data))):
        if data.terminals[i] or data.timeouts[i]:
            running = 0.0
        running = data.rewards[i] + gamma * running
        expected[i] = running
    np.testing.assert_allclose(data.returns_to_go(gamma), expected, rtol=1e-6)
    assert data.episode_bounds() == [(0, 3), (3, 4), (4, 8), (8, 10)]
    np.testing.assert_array_equal(data.timesteps(), [0, 1, 2, 0, 0, 1, 2, 3, 0, 1])
    np.testing.assert_allclose(data.episode_returns(), [expected[s] for s in (0, 3, 4, 8)] if gamma == 1.0
                               else [data.rewards[s:e].sum() for s, e in data.episode_bounds()], rtol=1e-6)


def test_mismatched_lengths_and_open_last_episode_are_refused():
    data = toy_dataset()
    with pytest.raises(ValueError, match="one row per transition.*'rewards': 9"):
        OfflineDataset(data.observations, data.actions, data.rewards[:-1], data.next_observations,
                       data.terminals, data.timeouts)
    with pytest.raises(ValueError, match="last transition must end an episode"):
        OfflineDataset(data.observations, data.actions, data.rewards, data.next_observations,
                       np.zeros(len(data), bool), np.zeros(len(data), bool))


def test_action_space_mismatch_is_reported():
    data = toy_dataset()
    check_action_space(data, Discrete(2), "test")
    with pytest.raises(ValueError, match=r"outside Discrete\(1\)"):
        check_action_space(data, Discrete(1), "BehaviorCloning")
    with pytest.raises(ValueError, match="BehaviorCloning: the action space is Box"):
        check_action_space(data, Box(-1, 1, (2,)), "BehaviorCloning")


def test_collect_dataset_marks_terminals_timeouts_and_the_cut_episode():
    env = make("CartPole-v1", max_episode_steps=30)
    data = collect_dataset(env, cartpole_expert, n_episodes=3, seed=0)
    assert len(data) == 90 and data.timeouts.sum() == 3 and not data.terminals.any()
    np.testing.assert_array_equal(data.observations[1:30], data.next_observations[:29])
    random = collect_dataset(env, None, n_steps=100, seed=1)
    assert len(random) == 100 and random.terminals.sum() >= 3 and (random.terminals | random.timeouts)[-1]
    assert not (random.terminals & random.timeouts).any()
    again = collect_dataset(env, None, n_steps=100, seed=1)
    np.testing.assert_array_equal(random.actions, again.actions)
    with pytest.raises(ValueError, match="exactly one of n_steps and n_episodes"):
        collect_dataset(env, None, n_steps=5, n_episodes=5)


def test_collect_dataset_with_gaussian_noise_stays_within_the_bounds():
    env = make("Pendulum-v1", max_episode_steps=20)
    data = collect_dataset(env, lambda obs: np.array([1.9], np.float32), n_episodes=2, noise=0.5, seed=0)
    assert data.actions.shape == (40, 1) and data.actions.dtype == np.float32
    assert data.actions.max() <= 2.0 and data.actions.min() >= -2.0 and data.actions.std() > 0.1


def test_top_episodes_keeps_the_best_fraction_and_concatenation_keeps_episodes():
    data = toy_dataset()
    returns = data.episode_returns()
    best = data.top_episodes(0.5)
    np.testing.assert_allclose(np.sort(best.episode_returns()), np.sort(returns)[-2:], rtol=1e-6)
    both = concatenate_datasets([data, best])
    assert len(both.episode_bounds()) == 6 and len(both) == len(data) + len(best)
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
        data.top_episodes(0.0)


def test_segments_hold_consecutive_steps_of_one_episode_padded_at_the_end():
    data = toy_dataset(episode_lengths=(6, 2, 5))
    rtg, steps = data.returns_to_go(), data.timesteps()
    seg = data.segments(16, 4, np.random.default_rng(0), return_scale=2.0)
    assert seg["observations"].shape == (16, 4, 3) and seg["actions"].shape == (16, 4)
    assert seg["mask"][:, 0].all() and (~seg["mask"]).any()
    for b in range(16):
        n = int(seg["mask"][b].sum())
        assert seg["mask"][b, :n].all() and not seg["mask"][b, n:].any()
        row = int(np.flatnonzero((data.observations == seg["observations"][b, 0]).all(axis=1))[0])
        np.testing.assert_array_equal(seg["timesteps"][b, :n], steps[row:row + n])
        np.testing.assert_allclose(seg["returns_to_go"][b, :n], rtg[row:row + n] / 2.0, rtol=1e-6)
        assert np.all(np.diff(seg["timesteps"][b, :n]) == 1)
        assert (seg["observations"][b, n:] == 0).all()


def test_normalize_returns_scales_the_spread_of_episode_returns():
    data = toy_dataset()
    scaled = normalize_returns(data, scale=10.0)
    returns = scaled.episode_returns()
    assert returns.max() - returns.min() == pytest.approx(10.0, rel=1e-5)
    assert normalized_score(500.0, 20.0, 500.0) == pytest.approx(100.0)


def test_d4rl_style_mixes_on_cartpole_order_by_quality():
    env = make("CartPole-v1", max_episode_steps=200)
    means = {kind: d4rl_style_dataset(env, kind, cartpole_expert, n_episodes=6, seed=3).episode_returns().mean()
             for kind in ("random", "medium", "expert", "medium-replay")}
    print("CartPole(200) D4RL-style mean returns:", means)
    assert means["expert"] == 200 and means["random"] < means["medium"] < means["expert"]
    assert means["random"] < means["medium-replay"]
    mixed = d4rl_style_dataset(env, "medium-expert", cartpole_expert, n_episodes=3, seed=3)
    assert len(mixed.episode_bounds()) == 6
    with pytest.raises(ValueError, match="kind must be one of"):
        d4rl_style_dataset(env, "medium-random", cartpole_expert)
