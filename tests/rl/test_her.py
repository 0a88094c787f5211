"""Goal environments (bit flipping, point reaching) checked by hand, and the hindsight replay
buffer: the stored episodes, the goal steps of each strategy against a hand loop on the same
seeded generator, rewards recomputed with compute_reward, the relabelling ratio 1 - 1/(1+k),
the clipped targets and argument errors."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from lamina.errors import ShapeError
from lamina.rl import (
    Batch,
    BitFlipping,
    Chain,
    DQNAgent,
    HERAgent,
    HindsightReplayBuffer,
    PointReach,
    dqn_loss,
    dqn_targets,
    goal_conditioned,
    make,
    td3_targets,
    train_her,
)


def test_bit_flipping_dynamics_and_rewards_by_hand():
    env = BitFlipping(4)
    obs, info = env.reset(seed=3)
    state, goal = obs["observation"].copy(), obs["desired_goal"].copy()
    assert env.observation_space.contains(obs) and np.array_equal(obs["achieved_goal"], state)
    differing = [i for i in range(4) if state[i] != goal[i]]
    assert differing and not info["is_success"]
    for n, i in enumerate(differing):
        obs, reward, terminated, truncated, info = env.step(i)
        state[i] = 1 - state[i]
        assert np.array_equal(obs["observation"], state) and np.array_equal(obs["desired_goal"], goal)
        last = n == len(differing) - 1
        assert (reward, terminated, info["is_success"]) == ((0.0, True, True) if last else (-1.0, False, False))
        assert truncated == (n + 1 == 4)
    achieved = np.array([[0, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0]], dtype=np.float32)
    desired = np.array([[0, 1, 1, 0], [1, 1, 0, 1], [0, 0, 0, 0]], dtype=np.float32)
    assert np.array_equal(env.compute_reward(achieved, desired, {}), [0.0, -1.0, 0.0])
    assert np.array_equal(env.compute_terminated(achieved, desired, {}), [True, False, True])
    assert not BitFlipping(4, terminate_on_success=False).compute_terminated(achieved, desired, {}).any()


def test_bit_flipping_truncates_after_n_steps_and_checks_actions():
    env = BitFlipping(3, terminate_on_success=False)
    env.reset(seed=0)
    flags = [env.step(0)[3] for _ in range(3)]
    assert flags == [False, False, True]
    with pytest.raises(ValueError, match="BitFlipping.step: action 3"):
        env.step(3)


def test_point_reach_moves_by_the_bounded_velocity_and_pays_within_epsilon():
    env = PointReach(size=1.0, max_speed=0.2, epsilon=0.15, max_episode_steps=3)
    obs, _ = env.reset(seed=0)
    env.position = np.array([0.9, 0.0], dtype=np.float32)
    env.goal = np.array([1.0, 0.3], dtype=np.float32)
    obs, reward, terminated, truncated, info = env.step(np.array([1.0, 0.5]))
    assert np.allclose(obs["observation"], [1.0, 0.1]) and reward == -1.0      # x clipped at the wall
    obs, reward, terminated, truncated, info = env.step(np.array([3.0, 0.5]))  # the action is clipped to 1
    assert np.allclose(obs["achieved_goal"], [1.0, 0.2]) and reward == 0.0 and info["is_success"]
    assert not terminated and not truncated
    assert env.step(np.zeros(2))[3]
    achieved = np.array([[0.0, 0.0], [0.0, 0.0]])
    desired = np.array([[0.1, 0.1], [0.2, 0.0]])
    assert np.array_equal(env.compute_reward(achieved, desired, None), [0.0, -1.0])
    with pytest.raises(ShapeError, match=r"PointReach.compute_reward: .*\(2, 3\)"):
        env.compute_reward(np.zeros((2, 3)), np.zeros((2, 3)), {})
    with pytest.raises(ValueError, match="PointReach.step"):
        env.step(np.zeros(3))


def fill(buffer: HindsightReplayBuffer, env, n_episodes: int, seed: int) -> list[dict]:
    """Random episodes into ``buffer``; returns them as recorded by hand."""
    rng = np.random.default_rng(seed)
    episodes = []
    for e in range(n_episodes):
        obs, _ = env.reset(seed=seed + e)
        record = {"obs": [obs["observation"]], "achieved": [obs["achieved_goal"]], "desired": obs["desired_goal"],
                  "actions": []}
        done = False
        while not done:
            action = int(rng.integers(env.action_space.n))
            next_obs, _, terminated, truncated, _ = env.step(action)
            buffer.add(obs, action, 0.0, next_obs, terminated)
            if truncated:
                buffer.end_episode()
            record["obs"].append(next_obs["observation"])
            record["achieved"].append(next_obs["achieved_goal"])
            record["actions"].append(action)
            obs, done = next_obs, terminated or truncated
        episodes.append(record)
    return episodes


def test_the_buffer_stores_whole_episodes():
    env = BitFlipping(5)
    buffer = HindsightReplayBuffer(env, capacity=10, seed=0)
    episodes = fill(buffer, env, 6, seed=1)
    lengths = [len(e["actions"]) for e in episodes]
    assert any(n < 5 for n in lengths)            # some end early at the goal
    assert len(buffer) == sum(lengths) and buffer.n_episodes == 6
    for slot, e in enumerate(episodes):
        n = lengths[slot]
        assert buffer.lengths[slot] == n
        assert np.array_equal(buffer.obs[slot, :n + 1], e["obs"])
        assert np.array_equal(buffer.achieved[slot, :n + 1], e["achieved"])
        assert np.array_equal(buffer.actions[slot, :n], e["actions"])
        assert np.all(buffer.desired[slot, :n] == e["desired"])


def test_the_oldest_episodes_are_overwritten_once_full():
    env = BitFlipping(5, terminate_on_success=False)
    buffer = HindsightReplayBuffer(env, capacity=3, seed=0)
    episodes = fill(buffer, env, 5, seed=2)
    assert len(buffer) == 15 and buffer.n_episodes == 3 and buffer.position == 2
    assert np.array_equal(buffer.obs[0], episodes[3]["obs"]) and np.array_equal(buffer.obs[2], episodes[2]["obs"])


def hand_indices(lengths: list[int], strategy: str, k: int, batch_size: int, seed: int):
    """The buffer's sampling written as a loop over samples, on a generator seeded alike."""
    rng = np.random.default_rng(seed)
    flat = rng.integers(sum(lengths), size=batch_size)
    coins, uniforms = rng.random(batch_size), rng.random(batch_size)
    out = []
    for i in range(batch_size):
        episode, rest = 0, int(flat[i])
        while rest >= lengths[episode]:
            rest -= lengths[episode]
            episode += 1
        t, n = rest, lengths[episode]
        relabel = coins[i] < 1 - 1 / (1 + k)
        if strategy == "final":
            j = n - 1
        elif strategy == "episode":
            j = int(uniforms[i] * n)
        else:
            j = t + int(uniforms[i] * (n - t))
        out.append((episode, t, relabel, j if relabel else -1))
    return out


@pytest.mark.parametrize("strategy", ["future", "final", "episode"])
def test_goal_steps_match_a_hand_loop_and_rewards_match_compute_reward(strategy):
    env = BitFlipping(6)
    buffer = HindsightReplayBuffer(env, capacity=8, strategy=strategy, k=3, seed=11)
    episodes = fill(buffer, env, 8, seed=5)
    lengths = [len(e["actions"]) for e in episodes]
    indices = buffer.sample_indices(300)
    expected = hand_indices(lengths, strategy, 3, 300, seed=11)
    got = list(zip(*(a.tolist() for a in indices)))
    assert got == expected
    batch = buffer.batch_at(indices)
    for i, (episode, t, relabel, j) in enumerate(expected):
        record = episodes[episode]
        if relabel:
            assert strategy != "future" or t <= j
            assert strategy != "final" or j == len(record["actions"]) - 1
            goal = record["achieved"][j + 1]
        else:
            goal = record["desired"]
        assert np.array_equal(batch.obs[i], np.concatenate([record["obs"][t], goal]))
        assert np.array_equal(batch.next_obs[i], np.concatenate([record["obs"][t + 1], goal]))
        assert batch.actions[i] == record["actions"][t]
        reward = -float(np.any(record["achieved"][t + 1] != goal))
        assert batch.rewards[i] == reward and batch.terminated[i] == (reward == 0.0)
    assert np.array_equal(batch.rewards, env.compute_reward(batch.next_obs[:, :6], batch.next_obs[:, 6:], {}))
    relabelled = np.array([e[2] for e in expected])
    assert (batch.rewards[relabelled] == 0).mean() > (batch.rewards[~relabelled] == 0).mean()


def test_the_future_ratio_is_one_minus_one_over_one_plus_k():
    env = BitFlipping(6, terminate_on_success=False)
    for k, strategy in ((4, "future"), (1, "future"), (4, "none"), (0, "future")):
        buffer = HindsightReplayBuffer(env, capacity=4, strategy=strategy, k=k, seed=k)
        fill(buffer, env, 4, seed=0)
        fraction = buffer.sample_indices(40000).relabelled.mean()
        expected = 0.0 if strategy == "none" else 1 - 1 / (1 + k)
        assert abs(fraction - expected) < 0.01, (k, strategy, fraction)


def test_target_clipping_bounds_the_dqn_targets():
    lamina.manual_seed(0)
    agent = DQNAgent(4, 2, hidden=(8,), seed=0, target_clip=(-10.0, 0.0))
    buffer = HindsightReplayBuffer(BitFlipping(2), capacity=2, seed=0)
    env = BitFlipping(2)
    fill(buffer, env, 2, seed=0)
    batch = buffer.sample(16)
    batch = batch._replace(rewards=np.linspace(-30, 20, 16).astype(np.float32), terminated=np.zeros(16, bool))
    y = np.clip(dqn_targets(agent.target_net, batch, agent.gamma), -10.0, 0.0)
    q = agent.policy_net(lamina.tensor(batch.obs)).numpy()[np.arange(16), batch.actions]
    diff = np.abs(q - y)
    huber = np.where(diff < 1, 0.5 * diff ** 2, diff - 0.5).mean()
    loss = dqn_loss(agent.policy_net, agent.target_net, batch, agent.gamma, target_clip=(-10.0, 0.0))
    assert np.isclose(loss.item(), huber, rtol=1e-5)
    assert not np.isclose(dqn_loss(agent.policy_net, agent.target_net, batch, agent.gamma).item(), huber)
    her = HERAgent(PointReach(), "ddpg", hidden=(8,), gamma=0.9, seed=0)
    assert her.agent.target_clip == pytest.approx((-10.0, 0.0))
    assert HERAgent(PointReach(), "td3", hidden=(8,), clip_targets=False).agent.target_clip is None


def test_the_agent_acts_on_observation_and_goal_and_learns_from_the_buffer():
    env = make("BitFlipping-v0", n_bits=4)
    agent = HERAgent(env, "dqn", hidden=(8,), batch_size=8, seed=0)
    obs, _ = env.reset(seed=0)
    assert np.array_equal(goal_conditioned(obs), np.concatenate([obs["observation"], obs["desired_goal"]]))
    returns = train_her(env, agent=agent, total_steps=40, seed=0)
    assert len(returns) >= 10 and agent.buffer.n_episodes == len(returns)
    assert len(agent.buffer) == 40 - agent.buffer.staged
    assert agent.agent.buffer is agent.buffer and agent.predict(obs) in range(4)


def test_td3_clips_its_critic_targets():
    lamina.manual_seed(0)
    agent = HERAgent(PointReach(), "td3", hidden=(8,), gamma=0.5, seed=0).agent
    assert agent.target_clip == pytest.approx((-2.0, 0.0))
    rng = np.random.default_rng(0)
    batch = Batch(rng.normal(size=(8, 4)).astype(np.float32), rng.uniform(-1, 1, (8, 2)).astype(np.float32),
                  np.linspace(-5, 5, 8).astype(np.float32), rng.normal(size=(8, 4)).astype(np.float32),
                  np.zeros(8, bool))
    targets = td3_targets(agent.target_actor, agent.target_critics, batch, 0.5)
    with lamina.no_grad():
        q = [c(lamina.tensor(batch.obs), lamina.tensor(batch.actions)).numpy() for c in agent.critics]
    expected = sum(np.mean((qi - np.clip(targets, -2.0, 0.0)) ** 2) for qi in q)
    unclipped = sum(np.mean((qi - targets) ** 2) for qi in q)
    loss = agent.update(batch, target_noise=np.zeros((8, 2)))["critic_loss"]
    assert loss == pytest.approx(expected, rel=1e-5) and loss != pytest.approx(unclipped, rel=1e-3)


def test_state_round_trip_restores_the_buffer_and_the_networks():
    env = BitFlipping(4)
    agent = HERAgent(env, "dqn", hidden=(8,), batch_size=8, seed=0)
    train_her(env, agent=agent, total_steps=30, seed=0)
    other = HERAgent(env, "dqn", hidden=(8,), batch_size=8, seed=5)
    other.load_state_dict(agent.state_dict())
    assert other.buffer.size == agent.buffer.size and other.buffer.staged == agent.buffer.staged
    assert np.array_equal(other.buffer.sample(32).obs, agent.buffer.sample(32).obs)
    obs, _ = env.reset(seed=9)
    assert np.array_equal(other.agent.policy_net(lamina.tensor(goal_conditioned(obs)[None])).numpy(),
                          agent.agent.policy_net(lamina.tensor(goal_conditioned(obs)[None])).numpy())
    with pytest.raises(ValueError, match="HindsightReplayBuffer.load_state_dict: 'obs'"):
        HindsightReplayBuffer(BitFlipping(5), capacity=4).load_state_dict(agent.buffer.state_dict())


def test_bad_arguments_name_what_was_expected():
    with pytest.raises(ValueError, match="HindsightReplayBuffer: needs a goal environment"):
        HindsightReplayBuffer(Chain(), capacity=4)
    with pytest.raises(ValueError, match="strategy must be one of"):
        HindsightReplayBuffer(BitFlipping(3), capacity=4, strategy="last")
    with pytest.raises(ValueError, match="k must be an int >= 0"):
        HindsightReplayBuffer(BitFlipping(3), capacity=4, k=-1)
    with pytest.raises(ValueError, match="HERAgent: 'ddpg' does not fit the action space Discrete"):
        HERAgent(BitFlipping(3), "ddpg")
    with pytest.raises(ValueError, match="no closed episode"):
        HindsightReplayBuffer(BitFlipping(3), capacity=4).sample(2)
