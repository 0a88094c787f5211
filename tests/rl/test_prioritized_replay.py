"""Prioritized replay: the sum-tree (sums, updates, proportional search checked by a chi-square
test), the buffer's priorities, wrap-around and importance-sampling weights against the
formulas, and the weighted DQN loss against PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from helpers import assert_close
from lamina.rl import Batch, PrioritizedReplayBuffer, SumTree, dqn_loss, dqn_targets, mlp


def _fill(buffer, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        buffer.add(np.full(2, i), i % 2, float(i), np.full(2, i + 1), False)


@pytest.mark.parametrize("capacity", [1, 5, 8])
def test_sum_tree_keeps_every_inner_node_the_sum_of_its_children(capacity):
    tree = SumTree(capacity)
    rng = np.random.default_rng(capacity)
    values = rng.uniform(0, 3, capacity)
    tree.update(np.arange(capacity), values)
    tree.update([0, capacity - 1, 0], [0.5, 2.0, 4.0])            # the last repeat of a leaf wins
    values[capacity - 1], values[0] = 2.0, 4.0
    np.testing.assert_allclose(tree[np.arange(capacity)], values)
    assert tree.total == pytest.approx(values.sum())
    inner = np.arange(1, tree.leaves)
    np.testing.assert_allclose(tree.nodes[inner], tree.nodes[2 * inner] + tree.nodes[2 * inner + 1])


def test_sum_tree_find_returns_the_leaf_holding_each_prefix_sum():
    tree = SumTree(6)
    tree.update(np.arange(6), [1.0, 0.0, 2.0, 0.5, 0.0, 1.5])
    cumulative = np.array([0.0, 1.0, 1.0, 3.0, 3.5, 3.5, 5.0])
    probes = np.array([0.0, 0.999, 1.0, 2.9, 3.0, 3.49, 3.5, 4.99, 5.0 - 1e-12])
    expected = np.searchsorted(cumulative, probes, side="right") - 1
    np.testing.assert_array_equal(tree.find(probes), expected)
    assert 1 not in tree.find(np.linspace(0, 5, 1001)) and 4 not in tree.find(np.linspace(0, 5, 1001))


def test_sum_tree_draws_leaves_in_proportion_to_their_values_chi_square():
    tree = SumTree(7)
    values = np.array([1.0, 2.0, 3.0, 4.0, 0.0, 6.0, 0.5])
    tree.update(np.arange(7), values)
    rng = np.random.default_rng(0)
    counts = np.bincount(tree.find(rng.uniform(0, tree.total, 40000)), minlength=7)
    assert counts[4] == 0
    drawn = values > 0
    expected = 40000 * values[drawn] / values.sum()
    assert stats.chisquare(counts[drawn], expected).pvalue > 1e-3
    skewed = np.bincount(tree.find(rng.uniform(0, tree.total, 40000) ** 1.2), minlength=7)
    assert stats.chisquare(skewed[drawn], expected).pvalue < 1e-6      # the test can tell a wrong law


def test_sum_tree_rejects_bad_leaves_and_values():
    tree = SumTree(4)
    with pytest.raises(IndexError, match=r"SumTree.update: leaf indices must lie in \[0, 4\)"):
        tree.update(4, 1.0)
    with pytest.raises(ValueError, match="finite and >= 0"):
        tree.update(0, -1.0)


def test_new_transitions_get_the_largest_priority_and_updates_follow_the_td_errors():
    buffer = PrioritizedReplayBuffer(8, (2,), alpha=0.7, eps=0.01, seed=0)
    _fill(buffer, 4)
    np.testing.assert_allclose(buffer.tree[np.arange(4)], 1.0)
    buffer.update_priorities([1, 2], [-3.0, 0.2])
    np.testing.assert_allclose(buffer.tree[[1, 2]], [3.01 ** 0.7, 0.21 ** 0.7])
    assert buffer.max_priority == pytest.approx(3.01 ** 0.7)
    _fill(buffer, 1, start=4)
    assert buffer.tree[4] == pytest.approx(3.01 ** 0.7)
    np.testing.assert_allclose(buffer.probabilities([2]), 0.21 ** 0.7 / buffer.tree.total)


def test_the_buffer_wraps_around_and_the_overwritten_slots_take_fresh_priorities():
    buffer = PrioritizedReplayBuffer(5, (2,), seed=0)
    _fill(buffer, 5)
    buffer.update_priorities(np.arange(5), [0.0, 0.0, 0.0, 0.0, 2.0])
    _fill(buffer, 2, start=5)                                   # slots 0 and 1 rewritten
    assert len(buffer) == 5 and buffer.position == 2
    assert buffer.rewards[:2].tolist() == [5.0, 6.0]
    top = buffer.max_priority
    np.testing.assert_allclose(buffer.tree[np.arange(5)], [top, top, 1e-6 ** 0.6, 1e-6 ** 0.6, top])
    assert buffer.tree.total == pytest.approx(3 * top + 2 * 1e-6 ** 0.6)


def test_samples_carry_their_slots_and_the_normalised_importance_weights():
    buffer = PrioritizedReplayBuffer(16, (2,), alpha=0.6, beta=0.5, seed=3)
    _fill(buffer, 10)
    buffer.update_priorities(np.arange(10), np.linspace(0.1, 5.0, 10))
    batch, weights, indices = buffer.sample(6)
    np.testing.assert_array_equal(batch.rewards, indices.astype(np.float32))
    np.testing.assert_array_equal(batch.obs[:, 0], indices)
    priorities = (np.linspace(0.1, 5.0, 10) + 1e-6) ** 0.6
    expected = (10 * priorities[indices] / priorities.sum()) ** -0.5
    assert_close(weights, expected / expected.max(), 1e-6, "importance-sampling weights")
    assert weights.max() == pytest.approx(1.0)
    buffer.beta = 1.0
    full = (10 * priorities[indices] / priorities.sum()) ** -1.0
    assert_close(buffer.importance_weights(indices), full / full.max(), 1e-12, "weights at beta 1")


def test_sampling_favours_high_priorities_over_many_batches():
    buffer = PrioritizedReplayBuffer(4, (2,), alpha=1.0, seed=1)
    _fill(buffer, 4)
    buffer.update_priorities(np.arange(4), [1.0, 2.0, 3.0, 4.0])
    counts = np.bincount(np.concatenate([buffer.sample(2).indices for _ in range(5000)]), minlength=4)
    priorities = np.array([1.0, 2.0, 3.0, 4.0]) + 1e-6
    np.testing.assert_allclose(counts / counts.sum(), priorities / priorities.sum(), atol=0.015)


def test_weighted_dqn_loss_and_td_errors_match_torch():
    rng = np.random.default_rng(0)
    batch = Batch(rng.standard_normal((12, 4)).astype(np.float32), rng.integers(3, size=12),
                  rng.uniform(-3, 3, 12).astype(np.float32), rng.standard_normal((12, 4)).astype(np.float32),
                  np.arange(12) % 4 == 0)
    weights = rng.uniform(0.1, 1.0, 12).astype(np.float32)
    policy, target = mlp(4, (8,), 3), mlp(4, (8,), 3)
    loss, td_errors = dqn_loss(policy, target, batch, 0.9, double=True, weights=weights, return_td_errors=True)
    targets = dqn_targets(target, batch, 0.9, online_net=policy)
    q = policy(batch.obs).numpy()[np.arange(12), batch.actions]
    assert_close(td_errors, q - targets, 1e-6, "TD errors")
    q_torch = torch.tensor(q, requires_grad=True)
    expected = (torch.tensor(weights) * torch.nn.functional.smooth_l1_loss(
        q_torch, torch.tensor(targets), reduction="none")).mean()
    assert_close(loss.item(), expected.item(), 1e-5, "weighted loss")
