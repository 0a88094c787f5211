"""MuZero: the value transform and its support codes, n-step targets against NumPy, the unrolled
loss against a PyTorch rewrite (values and gradients), min-max normalisation, a search with an
exact model, saving the network, and learning a sparse-reward chain."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import run_readme_section
from lamina.rl import MCTS, Chain, LatentMCTS, MinMaxStats, MuZeroNet, muzero_loss, muzero_targets, train_muzero
from lamina.rl.muzero import (
    LatentNode,
    inverse_value_transform,
    muzero_puct_scores,
    normalize_hidden_state,
    scalar_to_support,
    support_to_scalar,
    value_transform,
)


def test_value_transform_round_trips_and_matches_formula():
    x = np.array([-250.0, -3.7, -1.0, -1e-3, 0.0, 0.5, 2.0, 17.3, 1000.0])
    expected = np.sign(x) * (np.sqrt(np.abs(x) + 1) - 1) + 1e-3 * x
    np.testing.assert_allclose(value_transform(x), expected, rtol=1e-12)
    np.testing.assert_allclose(inverse_value_transform(value_transform(x)), x, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(value_transform(inverse_value_transform(x)), x, rtol=1e-9, atol=1e-9)


def test_support_codes_are_two_hot_and_invert():
    x = np.array([[-7.5, 0.0, 0.3], [2.0, 11.0, -0.8]])
    codes = scalar_to_support(x, 5)
    assert codes.shape == (2, 3, 11)
    np.testing.assert_allclose(codes.sum(-1), 1.0)
    assert ((codes > 0).sum(-1) <= 2).all()
    np.testing.assert_allclose(codes @ np.arange(-5, 6), value_transform(x), atol=1e-12)
    np.testing.assert_allclose(support_to_scalar(codes, 5), x, rtol=1e-9, atol=1e-9)
    clipped = scalar_to_support(np.array([1e6]), 2)
    np.testing.assert_array_equal(clipped, [[0, 0, 0, 0, 1]])


def reference_targets(rewards, root_values, policies, index, k_steps, n, gamma, final_value):
    """Straight from the definition: the discounted n-step return over the padded reward list."""
    T = len(rewards)
    padded_rewards = np.concatenate([rewards, np.zeros(k_steps + n + 1)])
    values, pis, mask = [], [], []
    for u in range(index, index + k_steps + 1):
        if u > T:
            values.append(0.0)
        else:
            end = min(u + n, T)
            boot = root_values[end] if end < T else final_value
            discounts = gamma ** np.arange(end - u)
            values.append(float(discounts @ padded_rewards[u:end]) + gamma ** (end - u) * boot)
        pis.append(policies[u] if u < T else np.zeros(policies.shape[1]))
        mask.append(float(u < T))
    return np.array(values), padded_rewards[index:index + k_steps], np.array(pis), np.array(mask)


@pytest.mark.parametrize("index,final_value", [(0, 0.0), (3, 0.0), (5, 0.7), (6, 0.7)])
def test_targets_match_numpy(index, final_value):
    rng = np.random.default_rng(3)
    rewards, root_values = rng.normal(size=7), rng.normal(size=7)
    policies = rng.dirichlet(np.ones(3), size=7)
    got = muzero_targets(rewards, root_values, policies, index, 3, 2, 0.9, final_value)
    expected = reference_targets(rewards, root_values, policies, index, 3, 2, 0.9, final_value)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    # t = 3, n = 2: z_3 = r_3 + 0.9 r_4 + 0.81 v_5
    if index == 3:
        assert got[0][0] == pytest.approx(rewards[3] + 0.9 * rewards[4] + 0.81 * root_values[5])


def _torch_mlp(x, weights):
    for i, (w, b) in enumerate(weights):
        x = x @ w + b
        if i < len(weights) - 1:
            x = torch.relu(x)
    return x


def _torch_normalize(s):
    low, high = s.min(-1, keepdim=True).values, s.max(-1, keepdim=True).values
    scale = high - low
    return (s - low) / (scale + (scale < 1e-5).to(s.dtype) * 1e-5)


def torch_muzero_loss(params, net, obs, actions, values, rewards, policies, mask):
    """An independent rewrite of the unrolled loss."""
    def group(prefix):
        names = sorted({k.rsplit(".", 1)[0] for k in params if k.startswith(prefix)}, key=len)
        return [(params[n + ".weight"], params[n + ".bias"]) for n in names]

    rep, dyn, pred = group("representation."), group("dynamics_net."), group("prediction.")
    A, L, K = net.action_size, net.latent_size, actions.shape[1]

    def head(out, target):
        if not net.support_size:
            return (out[:, 0] - torch.tensor(target, dtype=out.dtype)) ** 2
        code = torch.tensor(scalar_to_support(target, net.support_size), dtype=out.dtype)
        return -(code * torch.log_softmax(out, -1)).sum(-1)

    def policy(logits, k):
        pi = torch.tensor(policies[:, k] * mask[:, k, None], dtype=logits.dtype)
        return -(pi * torch.log_softmax(logits, -1)).sum(-1)

    s = _torch_normalize(_torch_mlp(torch.tensor(obs), rep))
    out = _torch_mlp(s, pred)
    total = head(out[:, A:], values[:, 0]) + policy(out[:, :A], 0)
    for k in range(1, K + 1):
        s_in = s * 0.5 + s.detach() * 0.5
        code = torch.nn.functional.one_hot(torch.tensor(actions[:, k - 1]), A).to(s.dtype)
        d = _torch_mlp(torch.cat([s_in, code], -1), dyn)
        s = _torch_normalize(d[:, :L])
        out = _torch_mlp(s, pred)
        total = total + (head(d[:, L:], rewards[:, k - 1]) + head(out[:, A:], values[:, k])
                         + policy(out[:, :A], k)) / K
    return total.mean()


@pytest.mark.parametrize("support_size", [0, 3])
def test_unrolled_loss_matches_torch(support_size):
    lamina.manual_seed(1)
    net = MuZeroNet(5, 3, latent_size=4, hidden=(6,), support_size=support_size)
    rng = np.random.default_rng(0)
    B, K = 4, 3
    obs = rng.normal(size=(B, 5)).astype(np.float32)
    actions = rng.integers(3, size=(B, K))
    values, rewards = rng.normal(size=(B, K + 1)) * 3, rng.normal(size=(B, K))
    policies = rng.dirichlet(np.ones(3), size=(B, K + 1))
    mask = np.ones((B, K + 1))
    mask[0, 2:] = 0
    loss, parts = muzero_loss(net, obs, actions, values, rewards, policies, mask)
    loss.backward()
    params = {k: torch.tensor(np.asarray(v), requires_grad=True) for k, v in net.state_dict().items()}
    expected = torch_muzero_loss(params, net, obs, actions, values, rewards, policies, mask)
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert loss.item() == pytest.approx(sum(parts.values()), rel=1e-5)
    named = dict(net.named_parameters())
    assert sorted(named) == sorted(params)
    for name, p in named.items():
        np.testing.assert_allclose(np.asarray(p.grad), params[name].grad.numpy(), rtol=2e-4, atol=2e-6, err_msg=name)


def test_min_max_normalisation_matches_formula():
    rng = np.random.default_rng(2)
    s = rng.normal(size=(3, 6))
    s[2] = 0.25                                              # a constant row: range 0 -> 1e-5
    got = normalize_hidden_state(lamina.tensor(s, dtype=np.float64)).numpy()
    scale = s.max(1, keepdims=True) - s.min(1, keepdims=True)
    scale[scale < 1e-5] += 1e-5
    np.testing.assert_allclose(got, (s - s.min(1, keepdims=True)) / scale, rtol=1e-12)
    assert got[:2].min() == 0 and got[:2].max() == pytest.approx(1.0)

    stats = MinMaxStats()
    assert stats.normalize(0.3) == 0.3                       # no range yet: unchanged
    for q in (0.5, -1.5, 2.5):
        stats.update(q)
    assert stats.normalize(1.5) == pytest.approx((1.5 + 1.5) / 4.0)


def test_puct_score_formula():
    assert issubclass(LatentMCTS, MCTS)                      # AlphaZero's search, extended
    leaf = LatentNode(3)
    leaf.prior = np.array([0.5, 0.3, 0.2])
    leaf.visits = np.array([2, 1, 0])
    leaf.value_sum = np.array([1.0, -0.5, 0.0])
    stats = MinMaxStats()
    for q in (0.5, -0.5, 1.0):
        stats.update(q)
    n = 4
    factor = np.sqrt(n) * (1.25 + np.log((n + 19652 + 1) / 19652))
    q_norm = np.array([(0.5 + 0.5) / 1.5, 0.0, 0.0])
    expected = q_norm + leaf.prior * factor / (1 + leaf.visits)
    np.testing.assert_allclose(muzero_puct_scores(leaf, stats), expected, rtol=1e-12)


class ExactChainModel:
    """Chain's true dynamics as a MuZero model: the latent state is the cell (the goal absorbing,
    with reward 0 after it), a uniform prior and value 0."""

    def __init__(self, n: int, step_reward: float = -0.01):
        self.n, self.step_reward = n, step_reward

    def initial_inference(self, observation):
        return int(np.argmax(observation)), np.full(2, 0.5), 0.0

    def recurrent_inference(self, cell, action):
        if cell == self.n - 1:
            return cell, 0.0, np.full(2, 0.5), 0.0
        nxt = max(cell + (1 if action == 1 else -1), 0)
        return nxt, 1.0 if nxt == self.n - 1 else self.step_reward, np.full(2, 0.5), 0.0


@pytest.mark.parametrize("cell", [0, 1, 3])
def test_search_with_exact_model_picks_the_optimal_action(cell):
    search = LatentMCTS(ExactChainModel(5), 2, n_simulations=60, discount=0.95, seed=0)
    observation = np.eye(5)[cell]
    assert search.select_action(observation) == 1
    visits = search.root.visits
    assert visits.sum() == 60 and visits[1] > visits[0]
    assert search.root_value() > 0                      # the goal's reward, discounted, is found


def test_search_with_root_noise_still_counts_all_simulations():
    search = LatentMCTS(ExactChainModel(4), 2, n_simulations=20, dirichlet_epsilon=0.25, seed=1)
    assert search.search(np.eye(4)[0]).sum() == 20
    assert not np.allclose(search.root.prior, 0.5)


def test_network_saves_and_loads(tmp_path):
    lamina.manual_seed(0)
    net = MuZeroNet(4, 2, latent_size=3, hidden=(5,), support_size=2)
    obs = np.random.default_rng(0).normal(size=(2, 4)).astype(np.float32)
    path = tmp_path / "muzero.safetensors"
    lamina.save(net, path)
    twin = lamina.load(path)
    assert type(twin) is MuZeroNet and twin.get_config() == net.get_config()
    for a, b in zip(net(lamina.tensor(obs)), twin(lamina.tensor(obs))):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def steps_to_goal(agent, env, cap: int = 20):
    observation, _ = env.reset()
    for step in range(1, cap + 1):
        observation, _, terminated, _, _ = env.step(agent.act(observation))
        if terminated:
            return step
    return None


def test_learns_sparse_chain():
    agent = train_muzero(lambda: Chain(5, step_reward=0.0), 300, max_episode_steps=30, updates_per_step=2,
                         random_steps=60, seed=0, td_steps=10, discount=0.9, dirichlet_alpha=1.0,
                         dirichlet_epsilon=0.5)
    assert steps_to_goal(agent, Chain(5, step_reward=0.0)) == 4          # n - 1 moves right: optimal
    assert agent.evaluate(Chain(5), episodes=2, max_steps=20) == pytest.approx(Chain(5).optimal_return)
    assert {"value_loss", "reward_loss", "policy_loss"} <= set(agent.history[-1])


def test_readme_section_runs():
    printed, names = run_readme_section("MuZero: planning with a learned model")
    assert "root visits" in printed and sum(names["visits"]) == 16
    assert names["visits"][1] > names["visits"][0]           # right, towards the reward
    assert "h^-1(h(100)) 100.0" in printed
    assert names["net"].head_size == 21


def test_categorical_heads_train_and_search():
    agent = train_muzero(lambda: Chain(4, step_reward=0.0), 40, max_episode_steps=10, seed=1, batch_size=8,
                         n_simulations=6, network={"latent_size": 4, "hidden": (8,), "support_size": 4})
    assert agent.net.head_size == 9
    losses = [h["value_loss"] for h in agent.history if "value_loss" in h]
    assert losses and np.isfinite(losses).all() and losses[-1] < losses[0]
    episode = agent.episodes[-1]
    np.testing.assert_allclose(episode["policies"].sum(1), 1.0)
    assert len(episode["root_values"]) == len(episode["actions"]) == len(episode["rewards"])
