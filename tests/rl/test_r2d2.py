"""R2D2: the value rescaling and its inverse, the rescaled n-step targets against a loop, the
sequence writer against hand-built sequences, the priority mix by hand, burn-in without
gradients, the loss against a float64 PyTorch rewrite, the network's save/load, and a learning
run on a task that cannot be solved without memory."""

import time

import numpy as np
import pytest
import torch

import lamina
from helpers import run_readme_section
from lamina.autograd import tensor
from lamina.rl import (
    CueMemory,
    R2D2Agent,
    R2D2Network,
    SequenceReplayBuffer,
    SequenceWriter,
    StoredSequence,
    inverse_value_rescale,
    r2d2_loss,
    rescaled_n_step_targets,
    sequence_priorities,
    train_r2d2,
    unroll,
    value_rescale,
)

EPS = 1e-3


def _paper_inverse(y, eps=EPS):
    """h^-1 as printed by Pohlen et al. (2018), Proposition A.2 (R2D2's appendix)."""
    return np.sign(y) * (((np.sqrt(1 + 4 * eps * (np.abs(y) + 1 + eps)) - 1) / (2 * eps)) ** 2 - 1)


def test_value_rescaling_and_its_inverse_are_exact_inverses():
    magnitudes = np.logspace(-8, 8, 401)
    x = np.concatenate([-magnitudes[::-1], [0.0], magnitudes])
    np.testing.assert_allclose(inverse_value_rescale(value_rescale(x)), x, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(value_rescale(inverse_value_rescale(x)), x, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(value_rescale(x), np.sign(x) * (np.sqrt(np.abs(x) + 1) - 1) + EPS * x, rtol=1e-14)
    np.testing.assert_allclose(inverse_value_rescale(x), _paper_inverse(x), rtol=1e-9, atol=1e-9)
    assert inverse_value_rescale(value_rescale(3.5, eps=0.1), eps=0.1) == pytest.approx(3.5, rel=1e-12)


def _targets_loop(rewards, values, lengths, terminated, n, gamma):
    targets = np.zeros_like(rewards)
    for b in range(rewards.shape[0]):
        for t in range(lengths[b]):
            total, k = 0.0, 0
            while k < n and t + k < lengths[b]:
                total += gamma**k * rewards[b, t + k]
                k += 1
            if not (terminated[b] and t + k == lengths[b]):
                total += gamma**k * _paper_inverse(values[b, t + k])
            targets[b, t] = value_rescale(total)
    return targets


@pytest.mark.parametrize("n", [1, 3, 7])
def test_rescaled_n_step_targets_equal_a_loop(n):
    rng = np.random.default_rng(n)
    rewards = rng.normal(size=(4, 6)) * 5
    values = rng.normal(size=(4, 7)) * 3
    lengths, terminated = np.array([6, 6, 3, 1]), np.array([False, True, True, False])
    got = rescaled_n_step_targets(rewards, values, lengths, terminated, n, 0.9)
    np.testing.assert_allclose(got, _targets_loop(rewards, values, lengths, terminated, n, 0.9), rtol=1e-9,
                               atol=1e-12)
    assert np.all(got[2, 3:] == 0) and np.all(got[3, 1:] == 0)


def _step_state(t, episode):
    return np.full(2, 10.0 * episode + t), np.full(2, -10.0 * episode - t)


def test_the_writer_cuts_overlapping_sequences_with_their_start_states_and_pads_episode_ends():
    writer = SequenceWriter(4)                            # overlap 2: a new sequence every 2 steps
    written = []
    for episode, (steps, how) in enumerate([(7, "terminated"), (2, "truncated"), (4, "terminated")]):
        for t in range(steps):
            last = t == steps - 1
            written += [(episode, s) for s in writer.append(
                np.array([episode, t]), t % 2, float(t + 1), np.array([episode, t + 1]),
                last and how == "terminated", last and how == "truncated", _step_state(t, episode))]

    def expected(episode, start, end, terminated):     # steps start..end - 1 of the episode, hand-built
        obs = np.zeros((5, 2))
        obs[:end - start + 1] = [[episode, t] for t in range(start, end + 1)]
        actions, rewards = np.zeros(4, int), np.zeros(4)
        actions[:end - start] = [t % 2 for t in range(start, end)]
        rewards[:end - start] = [t + 1 for t in range(start, end)]
        return StoredSequence(obs, actions, rewards, end - start, terminated, *_step_state(start, episode))

    want = [expected(0, 0, 4, False), expected(0, 2, 6, False), expected(0, 4, 7, True),  # 4..6, padded
            expected(1, 0, 2, False),                                                  # truncated: bootstraps
            expected(2, 0, 4, True)]                    # ends with a full sequence: nothing padded after it
    assert [w[0] for w in written] == [0, 0, 0, 1, 2]
    assert len(written) == len(want)
    for (_, have), wanted in zip(written, want):
        for field in StoredSequence._fields:
            np.testing.assert_array_equal(getattr(have, field), getattr(wanted, field), err_msg=field)


def test_the_priority_mix_and_the_buffer_priorities():
    delta = np.array([[1.0, -3.0, 2.0, 5.0], [0.5, 0.0, 0.0, 0.0], [4.0, 4.0, 4.0, 4.0]])
    mask = np.array([[True, True, True, False], [True, False, False, False], [False] * 4])
    np.testing.assert_allclose(sequence_priorities(delta, mask), [0.9 * 3 + 0.1 * 2, 0.5, 0.0])
    np.testing.assert_allclose(sequence_priorities(delta, mask, eta=0.5), [0.5 * 3 + 0.5 * 2, 0.5, 0.0])
    buffer = SequenceReplayBuffer(3, 1, 2, 1, alpha=0.9, eps=1e-6, seed=0)
    for k in range(3):
        buffer.add(StoredSequence(np.full((3, 1), k), np.zeros(2, int), np.zeros(2), 2, False, np.zeros(1),
                                  np.zeros(1)))
    buffer.update_priorities([0, 1, 2], [2.9, 0.5, 0.0])
    np.testing.assert_allclose(buffer.tree[[0, 1, 2]], (np.array([2.9, 0.5, 0.0]) + 1e-6) ** 0.9)
    batch, weights, index = buffer.sample(2)
    assert set(index) <= {0, 1} and batch.obs.shape == (2, 3, 1) and weights.max() == 1.0


def _network(seed=0):
    lamina.manual_seed(seed)
    return R2D2Network(3, 2, hidden=5, lstm_units=4, head_hidden=6)


def test_burn_in_steps_get_no_gradient():
    net = _network()
    obs = tensor(np.random.default_rng(0).normal(size=(2, 6, 3)), requires_grad=True)
    state = tuple(np.random.default_rng(1).normal(size=(2, 4)).astype(np.float32) for _ in range(2))
    q = unroll(net, obs, state, burn_in=2)
    assert q.shape == (2, 4, 2)
    (q * q).sum().backward()
    assert np.all(obs.grad[:, :2] == 0) and np.abs(obs.grad[:, 2:]).sum() > 0
    obs.grad = None
    q = unroll(net, obs, state, burn_in=0)       # without burn-in the same steps do get gradients
    (q[:, 2:] * q[:, 2:]).sum().backward()
    assert np.abs(obs.grad[:, :2]).sum() > 0


def _torch_network(params):
    """The R2D2Network's forward pass in float64 torch (LSTM gates i, f, g, o)."""
    p = {k: torch.tensor(np.asarray(v, dtype=np.float64), requires_grad=True) for k, v in params.items()}

    def forward(obs, h, c):
        x = torch.relu(obs @ p["encoder.weight"] + p["encoder.bias"])
        bias = p["lstm.bias"] + p["lstm.recurrent_bias"]
        outputs = []
        for t in range(x.shape[1]):
            gates = x[:, t] @ p["lstm.kernel"] + h @ p["lstm.recurrent_kernel"] + bias
            i, f, g, o = gates.chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outputs.append(h)
        features = torch.stack(outputs, dim=1)

        def head(name):
            hidden = torch.relu(features @ p[f"{name}.dense.weight"] + p[f"{name}.dense.bias"])
            return hidden @ p[f"{name}.dense_1.weight"] + p[f"{name}.dense_1.bias"]
        advantage = head("advantage_head")
        return head("value_head") + advantage - advantage.mean(dim=-1, keepdim=True), h, c
    return p, forward


def _torch_h(x, eps=EPS):
    return torch.sign(x) * (torch.sqrt(x.abs() + 1) - 1) + eps * x


def _torch_h_inverse(y, eps=EPS):
    return torch.sign(y) * (((torch.sqrt(1 + 4 * eps * (y.abs() + 1 + eps)) - 1) / (2 * eps)) ** 2 - 1)


def _torch_loss(online, target, batch, gamma, n, burn_in, weights):
    """R2D2's loss written directly from the paper, one sequence and step at a time."""
    (_, forward), (_, target_forward) = online, target
    obs = torch.tensor(batch.obs)
    h, c = torch.tensor(batch.h, dtype=torch.float64), torch.tensor(batch.c, dtype=torch.float64)
    with torch.no_grad():
        _, h_b, c_b = forward(obs[:, :burn_in], h, c)
        _, th, tc = target_forward(obs[:, :burn_in], h, c)
        q_target, _, _ = target_forward(obs[:, burn_in:], th, tc)
    q, _, _ = forward(obs[:, burn_in:], h_b.detach(), c_b.detach())
    total = 0.0
    for b in range(len(batch.length)):
        length = batch.length[b] - burn_in
        per_step = []
        for t in range(length):
            k = min(n, length - t)
            ret = sum(gamma**j * batch.rewards[b, burn_in + t + j] for j in range(k))
            if not (batch.terminated[b] and t + k == length):
                best = int(q[b, t + k].argmax())
                ret = ret + gamma**k * _torch_h_inverse(q_target[b, t + k, best])
            y = _torch_h(torch.as_tensor(ret, dtype=torch.float64))
            per_step.append(0.5 * (q[b, t, batch.actions[b, burn_in + t]] - y.detach()) ** 2)
        if per_step:
            total = total + weights[b] * torch.stack(per_step).mean()
    return total / len(batch.length)


def _batch(rng, size=3, length=6, obs_dim=3, units=4):
    obs = rng.normal(size=(size, length + 1, obs_dim))
    lengths = np.array([6, 4, 5])
    for b, n in enumerate(lengths):
        obs[b, n + 1:] = 0.0
    return StoredSequence(obs, rng.integers(0, 2, (size, length)), rng.normal(size=(size, length)) * 3, lengths,
                          np.array([False, True, True]), rng.normal(size=(size, units)) * 0.5,
                          rng.normal(size=(size, units)) * 0.5)


def test_the_loss_equals_a_float64_torch_rewrite():
    previous = lamina.get_default_dtype()
    lamina.set_default_dtype(np.float64)
    try:
        online, target = _network(0), _network(1)
        batch = _batch(np.random.default_rng(2))
        weights = np.array([1.0, 0.5, 0.25])
        loss, delta, mask = r2d2_loss(online, target, batch, 0.9, 3, 2, weights)
        loss.backward()
        torch_online, torch_target = _torch_network(online.state_dict()), _torch_network(target.state_dict())
        expected = _torch_loss(torch_online, torch_target, batch, 0.9, 3, 2, weights)
        expected.backward()
    finally:
        lamina.set_default_dtype(previous)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-10)
    assert mask.sum(axis=1).tolist() == [4, 2, 3] and np.all(delta[~mask] == 0)
    grads = {name: param.grad for name, param in online.named_parameters()}
    for name, param in torch_online[0].items():
        np.testing.assert_allclose(grads[name], param.grad.numpy(), rtol=1e-8, atol=1e-12, err_msg=name)


def test_the_network_saves_and_loads(tmp_path):
    net = _network()
    obs = np.random.default_rng(3).normal(size=(2, 5, 3)).astype(np.float32)
    q, (h, c) = net(obs)
    lamina.save(net, tmp_path / "r2d2.safetensors")
    twin = lamina.load(tmp_path / "r2d2.safetensors")
    q2, (h2, c2) = twin(obs)
    assert type(twin) is R2D2Network and q.shape == (2, 5, 2) and h.shape == (2, 4)
    for a, b in [(q, q2), (h, h2), (c, c2)]:
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_the_agent_stores_the_state_it_started_each_sequence_from_and_resets_it_at_episode_ends():
    lamina.manual_seed(0)
    env = CueMemory(4)                                    # 6 steps an episode
    agent = R2D2Agent.for_env(env, seed=0, hidden=16, lstm_units=3, head_hidden=4, sequence_length=4, burn_in=1,
                              learning_starts=10**6)
    obs, _ = env.reset(seed=0)
    states = []
    for _ in range(6):
        states.append(agent.state)
        action = agent.act(obs)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        agent.observe(obs, action, reward, next_obs, terminated, truncated)
        obs = next_obs
    assert terminated and np.all(agent.state[0] == 0) and np.all(agent.state[1] == 0)
    assert len(agent.buffer) == 2 and agent.buffer.lengths[:2].tolist() == [4, 4]     # steps 0..3 and 2..5
    assert np.all(agent.buffer.h[0] == 0)
    np.testing.assert_allclose(agent.buffer.h[1], states[2][0][0], rtol=1e-6)
    np.testing.assert_allclose(agent.buffer.c[1], states[2][1][0], rtol=1e-6)
    assert np.abs(agent.buffer.h[1]).sum() > 0


def _greedy_wins(agent, env, episodes=100, forget=False):
    """Greedy episodes won; ``forget``: the recurrent state wiped before every step (no memory)."""
    env.reset(seed=123)
    wins = 0
    for _ in range(episodes):
        obs, _ = env.reset()
        agent.reset_state()
        done = False
        while not done:
            if forget:
                agent.reset_state()
            obs, reward, terminated, truncated, _ = env.step(agent.act(obs, greedy=True))
            done = terminated or truncated
        wins += reward > 0
    return wins


def test_r2d2_remembers_a_cue_a_memoryless_agent_cannot_use():
    lamina.manual_seed(0)
    env = CueMemory(3)        # the cue at step 0, the decision at step 4: without memory 50% is the best
    agent = R2D2Agent.for_env(env, seed=0, hidden=16, lstm_units=16, head_hidden=16, sequence_length=5, burn_in=0,
                              n_step=2, gamma=0.9, lr=3e-3, train_freq=2, target_update_interval=50,
                              exploration_steps=600)
    start = time.perf_counter()
    returns = train_r2d2(env, 1000, agent=agent, seed=0)
    elapsed = time.perf_counter() - start
    assert len(returns) == 200 and elapsed < 20
    assert _greedy_wins(agent, env) >= 95
    assert 30 <= _greedy_wins(agent, env, forget=True) <= 70       # the same network without its memory


def test_readme_example():
    printed, names = run_readme_section("R2D2: recurrent replay DQN")
    assert "greedy success 1.00" in printed and names["wins"] == 100
