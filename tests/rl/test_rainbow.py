"""Rainbow: the C51 projection against a loop over the paper's Algorithm 1, the C51 loss and the
dueling head against PyTorch, n-step folding against a hand loop, the network's save/load,
and a noisy-exploration learning run on a chain where a random walk rarely reaches the goal."""

import time

import numpy as np
import pytest
import torch

import lamina
from helpers import compare_with_torch, randn, run_readme_section
from lamina.rl import (
    Chain,
    NStepBuffer,
    RainbowAgent,
    RainbowNetwork,
    TimeLimit,
    c51_loss,
    categorical_projection,
    dueling_logits,
)


def _algorithm_1(next_probs, rewards, dones, gammas, support):
    """Bellemare et al. (2017), Algorithm 1, one atom at a time (an atom landing exactly on a
    support point gives it all of its mass)."""
    v_min, v_max, n = support[0], support[-1], len(support)
    delta_z = (v_max - v_min) / (n - 1)
    m = np.zeros_like(next_probs, dtype=np.float64)
    for row in range(len(next_probs)):
        for j in range(n):
            tz = min(max(rewards[row] + (1 - dones[row]) * gammas[row] * support[j], v_min), v_max)
            b = (tz - v_min) / delta_z
            lower, upper = int(np.floor(b)), int(np.ceil(b))
            if lower == upper:
                m[row, lower] += next_probs[row, j]
            else:
                m[row, lower] += next_probs[row, j] * (upper - b)
                m[row, upper] += next_probs[row, j] * (b - lower)
    return m


def _probs(rows, atoms, seed):
    logits = np.random.default_rng(seed).normal(size=(rows, atoms))
    return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


def test_categorical_projection_equals_algorithm_1():
    support = np.linspace(-2.0, 2.0, 5)
    rewards = np.array([0.5, 0.5, 5.0, -5.0, 0.3, -0.7, 1.2, 0.0])
    dones = np.array([0, 1, 0, 0, 0, 1, 0, 0])
    gammas = np.array([0.5, 0.5, 0.9, 0.9, 0.81, 0.9, 0.729, 1.0])
    # row 0: Tz = 0.5 + 0.5 z hits the atoms 0 and 1 exactly; rows 2, 3: every atom clipped to
    # v_max / v_min; row 7: gamma 1, r 0, the identity
    probs = _probs(len(rewards), 5, seed=0)
    expected = _algorithm_1(probs, rewards, dones, gammas, support)
    got = categorical_projection(probs, rewards, dones, gammas, support)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(got[2], [0, 0, 0, 0, 1], atol=1e-15)
    np.testing.assert_allclose(got[7], probs[7], rtol=1e-12)
    np.testing.assert_allclose(got[1], [0, 0, 0.5, 0.5, 0], rtol=1e-12)       # done: all mass at r = 0.5


def test_categorical_projection_random_batches_keep_their_mass():
    support = np.linspace(-10.0, 10.0, 51)
    rng = np.random.default_rng(1)
    probs = _probs(64, 51, seed=2)
    rewards, dones = rng.normal(scale=4.0, size=64), rng.random(64) < 0.3
    got = categorical_projection(probs, rewards, dones, 0.99**3, support)
    np.testing.assert_allclose(got, _algorithm_1(probs, rewards, dones, np.full(64, 0.99**3), support),
                               rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-12)
    assert got.min() >= 0.0
    with pytest.raises(ValueError, match="categorical_projection"):
        categorical_projection(probs[:, :50], rewards, dones, 0.9, support)


@pytest.mark.parametrize("weighted", [False, True])
def test_c51_loss_matches_torch(weighted):
    target = _probs(6, 7, seed=3)
    weights = np.random.default_rng(4).uniform(0.2, 1.0, 6) if weighted else None

    def theirs(logits):
        per_row = -(torch.tensor(target) * torch.log_softmax(logits, dim=-1)).sum(-1)
        return (per_row * torch.tensor(weights) if weighted else per_row).mean()

    compare_with_torch(lambda logits: c51_loss(logits, target, weights), theirs, randn(6, 7, seed=5),
                       dtype=np.float64)
    per_row = c51_loss(lamina.tensor(randn(6, 7, seed=5), dtype=np.float64), target, reduction="none")
    assert per_row.shape == (6,)


def test_dueling_logits_match_torch_and_ignore_a_shift_of_the_advantages():
    compare_with_torch(dueling_logits, lambda v, a: v[:, None, :] + a - a.mean(dim=1, keepdim=True),
                       randn(3, 5, seed=6), randn(3, 4, 5, seed=7), dtype=np.float64)
    value, advantage = (lamina.tensor(a, dtype=np.float64) for a in (randn(3, 5, seed=6), randn(3, 4, 5, seed=7)))
    shifted = advantage + lamina.tensor(randn(3, 1, 5, seed=8), dtype=np.float64)
    np.testing.assert_allclose(dueling_logits(value, shifted).numpy(), dueling_logits(value, advantage).numpy(),
                               rtol=1e-12, atol=1e-14)


def test_n_step_transitions_equal_a_hand_loop_across_episode_ends():
    n, gamma = 3, 0.9
    rng = np.random.default_rng(9)
    # episodes of 5 (terminated), 2 (truncated), 1 (terminated) and 6 (terminated) steps
    ends = {4: "terminated", 6: "truncated", 7: "terminated", 13: "terminated"}
    rewards = rng.normal(size=14)
    buffer, got = NStepBuffer(n, gamma), []
    for t in range(14):
        got += buffer.append(t, t % 2, rewards[t], t + 100, ends.get(t) == "terminated", ends.get(t) == "truncated")
    assert not buffer.pending
    expected = []
    for t in range(14):
        end = min(e for e in ends if e >= t)
        last = min(t + n - 1, end)
        total = sum(gamma ** (k - t) * rewards[k] for k in range(t, last + 1))
        expected.append((t, t % 2, total, last + 100, ends.get(last) == "terminated", gamma ** (last - t + 1)))
    assert len(got) == 14
    for have, want in zip(sorted(got, key=lambda step: step.obs), expected):
        assert have[:2] == want[:2] and have[3:5] == want[3:5]
        assert have.reward == pytest.approx(want[2], rel=1e-12) and have.discount == pytest.approx(want[5])


def test_the_network_saves_and_loads(tmp_path):
    lamina.manual_seed(0)
    net = RainbowNetwork(4, 3, hidden=(5,), stream_hidden=6, atoms=7, v_min=-2.0, v_max=3.0, sigma0=0.3)
    net.eval()
    obs = randn(2, 4, seed=10).astype(np.float32)
    expected = net(obs).numpy()
    assert expected.shape == (2, 3, 7)
    lamina.save(net, tmp_path / "rainbow.safetensors")
    twin = lamina.load(tmp_path / "rainbow.safetensors")
    twin.eval()
    np.testing.assert_array_equal(twin(obs).numpy(), expected)
    np.testing.assert_allclose(twin.support, np.linspace(-2.0, 3.0, 7))


def test_the_agent_stores_n_step_transitions_with_their_discounts():
    lamina.manual_seed(0)
    agent = RainbowAgent(2, 2, hidden=(4,), stream_hidden=4, atoms=5, n_step=2, gamma=0.5, learning_starts=10**6)
    obs = [np.array([k, 0.0], np.float32) for k in range(4)]
    agent.observe(obs[0], 1, 1.0, obs[1], False)
    agent.observe(obs[1], 0, 2.0, obs[2], False)
    agent.observe(obs[2], 1, 4.0, obs[3], True)
    assert len(agent.buffer) == 3
    np.testing.assert_allclose(agent.buffer.rewards[:3], [1.0 + 0.5 * 2.0, 2.0 + 0.5 * 4.0, 4.0])
    np.testing.assert_allclose(agent.discounts[:3], [0.25, 0.25, 0.5])
    np.testing.assert_array_equal(agent.buffer.terminated[:3], [False, True, True])


def test_learning_sets_kl_priorities_and_the_target_follows_every_interval():
    lamina.manual_seed(1)
    agent = RainbowAgent(3, 2, hidden=(4,), stream_hidden=4, atoms=5, v_min=-1.0, v_max=1.0, n_step=1,
                         batch_size=4, learning_starts=6, target_update_interval=9, seed=1)
    seen = []
    update = agent.buffer.update_priorities
    agent.buffer.update_priorities = lambda indices, errors: (seen.append(np.array(errors)), update(indices, errors))
    rng = np.random.default_rng(2)
    for step in range(9):
        agent.observe(rng.normal(size=3), step % 2, rng.normal(), rng.normal(size=3), step == 4)
        if step == 7:
            before = np.array(agent.target_net.value_stream.layers[0].bias_mu.data)
    assert len(seen) == 4 and all(errors.shape == (4,) and errors.min() >= 0.0 for errors in seen)
    moved = np.array(agent.online_net.value_stream.layers[0].bias_mu.data)
    assert not np.allclose(before, moved)                       # learning moved the online network
    np.testing.assert_array_equal(agent.target_net.value_stream.layers[0].bias_mu.data, moved)


def _random_returns(env, episodes, seed):
    rng = np.random.default_rng(seed)
    returns = []
    for _ in range(episodes):
        env.reset()
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(int(rng.integers(2)))
            total, done = total + reward, terminated or truncated
        returns.append(total)
    return np.array(returns)


@pytest.fixture(scope="module")
def readme_run():
    """The README section, run once and timed: it trains the agent of the learning test below,
    RainbowAgent.for_env(TimeLimit(Chain(10), 30), seed=0, hidden=(32,), stream_hidden=32, atoms=21,
    v_min=-1.0, v_max=1.5, gamma=0.95, learning_starts=64, target_update_interval=50) after
    lamina.manual_seed(0), on 800 steps; the one change keeps train_rainbow's episode returns."""
    start = time.perf_counter()
    printed, names = run_readme_section("Rainbow DQN", replace={
        "train_rainbow(env, 800, agent=agent, seed=0)": "returns = train_rainbow(env, 800, agent=agent, seed=0)"})
    return printed, names, time.perf_counter() - start


def test_rainbow_solves_a_chain_that_a_random_walk_rarely_finishes(readme_run):
    _, names, elapsed = readme_run
    env, agent, returns = names["env"], names["agent"], names["returns"]
    assert isinstance(agent, RainbowAgent) and isinstance(env, TimeLimit) and isinstance(env.env, Chain)
    greedy = []
    for _ in range(3):
        obs, _ = env.reset()
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(agent.predict(obs))
            total, done = total + reward, terminated or truncated
        greedy.append(total)
    random_mean = _random_returns(env, 50, seed=1).mean()
    assert greedy == [pytest.approx(Chain(10).optimal_return)] * 3
    assert np.mean(returns[-10:]) > 0.8 and random_mean < 0.2, (returns[-10:], random_mean)
    assert elapsed < 30.0


def test_readme_example_runs(readme_run):
    printed, names, _ = readme_run
    assert names["greedy"] == pytest.approx(names["env"].env.optimal_return)
    assert "greedy return" in printed
