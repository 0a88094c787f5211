"""ReplayBuffer: storage, wrap-around and uniform sampling."""

from __future__ import annotations

import numpy as np
import pytest

from lamina.rl import ReplayBuffer


def _fill(buffer: ReplayBuffer, count: int) -> None:
    size = buffer.obs.shape[1]
    for i in range(count):
        buffer.add(np.full(size, i), i % 3, float(i), np.full(size, i + 1), i % 4 == 0)


def test_buffer_wraps_around_overwriting_the_oldest():
    buffer = ReplayBuffer(5, (2,), seed=0)
    _fill(buffer, 3)
    assert len(buffer) == 3 and buffer.position == 3
    for i in range(3, 8):
        buffer.add(np.full(2, i), i % 3, float(i), np.full(2, i + 1), i % 4 == 0)
    assert len(buffer) == 5 and buffer.position == 3
    assert sorted(buffer.rewards.tolist()) == [3.0, 4.0, 5.0, 6.0, 7.0]
    assert buffer.rewards[:3].tolist() == [5.0, 6.0, 7.0]           # slots 0..2 rewritten
    assert buffer.obs.dtype == np.float32 and buffer.actions.dtype == np.int64


def test_sample_returns_whole_distinct_transitions_from_the_stored_ones():
    buffer = ReplayBuffer(50, (2,), seed=1)
    _fill(buffer, 80)
    batch = buffer.sample(20)
    values = batch.rewards.astype(int)
    assert len(set(values.tolist())) == 20 and values.min() >= 30
    np.testing.assert_array_equal(batch.obs[:, 0], values)
    np.testing.assert_array_equal(batch.next_obs[:, -1], values + 1)
    np.testing.assert_array_equal(batch.actions, values % 3)
    np.testing.assert_array_equal(batch.terminated, values % 4 == 0)


def test_sampling_is_uniform_and_seeded():
    buffer = ReplayBuffer(10, (1,), seed=3)
    _fill(buffer, 10)
    counts = np.bincount(np.concatenate([buffer.sample(3).rewards.astype(int) for _ in range(3000)]), minlength=10)
    assert counts.min() > 800 and counts.max() < 1000                # 900 expected each
    again = ReplayBuffer(10, (1,), seed=3)
    _fill(again, 10)
    first = ReplayBuffer(10, (1,), seed=3)
    _fill(first, 10)
    np.testing.assert_array_equal(again.sample(4).rewards, first.sample(4).rewards)


def test_sampling_more_than_stored_is_an_error():
    buffer = ReplayBuffer(10, (1,))
    _fill(buffer, 2)
    with pytest.raises(ValueError, match="asked for 3 transitions but only 2 stored"):
        buffer.sample(3)
