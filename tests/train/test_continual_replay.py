"""ReplayBuffer's reservoir sampling (every item seen is kept with probability capacity /
seen, checked by frequency over many seeded streams) and ExperienceReplay's mixing of stored
samples into the mini-batches."""

from __future__ import annotations

import numpy as np
import pytest

from lamina.errors import ShapeError
from lamina.train.continual import ExperienceReplay, ReplayBuffer


def test_the_first_items_fill_the_buffer_in_order():
    buffer = ReplayBuffer(5)
    buffer.add(np.arange(3), np.arange(3) * 10)
    assert len(buffer) == 3 and buffer.seen == 3
    items, labels = buffer.contents()
    np.testing.assert_array_equal(items, [0, 1, 2])
    np.testing.assert_array_equal(labels, [0, 10, 20])


@pytest.mark.parametrize("capacity,stream,chunk", [(10, 50, 7), (4, 30, 1)])
def test_every_item_is_kept_with_probability_capacity_over_seen(capacity, stream, chunk):
    trials = 1500
    counts = np.zeros(stream)
    for trial in range(trials):
        buffer = ReplayBuffer(capacity, seed=trial)
        for start in range(0, stream, chunk):
            buffer.add(np.arange(start, min(start + chunk, stream)))
        (kept,) = buffer.contents()
        assert len(kept) == capacity and len(set(kept.tolist())) == capacity
        counts[kept] += 1
    frequency = counts / trials
    expected = capacity / stream
    margin = 5 * np.sqrt(expected * (1 - expected) / trials)        # five standard deviations
    assert np.abs(frequency - expected).max() < margin
    first, last = frequency[:stream // 2].mean(), frequency[stream // 2:].mean()
    assert abs(first - last) < margin                                # neither old nor new items favoured


def test_sample_draws_distinct_stored_rows_together():
    buffer = ReplayBuffer(8, seed=1)
    buffer.add(np.arange(20), np.arange(20) + 100)
    x, y = buffer.sample(5)
    assert len(set(x.tolist())) == 5
    np.testing.assert_array_equal(y, x + 100)
    assert set(x.tolist()) <= set(buffer.contents()[0].tolist())
    assert len(buffer.sample(50)[0]) == 8


def test_experience_replay_appends_old_samples_to_new_batches():
    replay = ExperienceReplay(capacity=6, replay_size=3, seed=0)
    x, y, ids = replay.mix(np.ones((4, 2)), np.zeros(4, dtype=int), np.zeros(4, dtype=int))
    assert x.shape == (4, 2)                                         # nothing stored yet
    x, y, ids = replay.mix(np.full((2, 2), 5.0), np.ones(2, dtype=int), np.ones(2, dtype=int))
    assert x.shape == (5, 2)
    np.testing.assert_array_equal(x[:2], 5.0)
    np.testing.assert_array_equal(x[2:], 1.0)                       # only the first batch was stored then
    np.testing.assert_array_equal(ids, [1, 1, 0, 0, 0])
    assert len(replay.buffer) == 6


def test_bad_use_is_named():
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(0)
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(3).sample(1)
    buffer = ReplayBuffer(3)
    buffer.add(np.zeros((2, 4)))
    with pytest.raises(ShapeError, match="ReplayBuffer.add"):
        buffer.add(np.zeros((2, 5)))
    with pytest.raises(ShapeError, match="equal length"):
        buffer.add(np.zeros((2, 4)), np.zeros(3))
