"""Item sequences for next-item recommendation: chronological order, the leave-one-out
split, padding and truncation, next-item targets, negatives outside the history and the
synthetic Markov-chain data."""

from __future__ import annotations

import numpy as np
import pytest

from lamina.data import (
    Interactions,
    leave_one_out_sequences,
    next_item_examples,
    pad_sequences,
    sample_unseen_items,
    synthetic_markov_sequences,
    user_sequences,
)


def _log() -> Interactions:
    """User 0 reads 5, 2, 7, 1 (rows out of time order), user 1 nothing, user 2 reads 3, 4
    (a timestamp tie broken by row), user 3 reads 0, 6, 8."""
    rows = [(0, 7, 30), (2, 3, 5), (0, 5, 10), (3, 0, 1), (0, 1, 40), (2, 4, 5), (0, 2, 20), (3, 6, 2), (3, 8, 3)]
    users, items, times = (np.array(column) for column in zip(*rows))
    return Interactions(users, items, np.ones(len(rows)), times, n_users=4, n_items=9)


def test_user_sequences_are_chronological_with_ties_by_row():
    sequences = user_sequences(_log())
    assert [s.tolist() for s in sequences] == [[5, 2, 7, 1], [], [3, 4], [0, 6, 8]]


def test_leave_one_out_holds_out_the_last_two_items():
    split = leave_one_out_sequences(user_sequences(_log()))
    assert [s.tolist() for s in split.train] == [[5, 2], [], [3, 4], [0]]
    assert split.users.tolist() == [0, 3]
    assert [s.tolist() for s in split.valid_inputs] == [[5, 2], [0]]
    assert split.valid_targets.tolist() == [7, 6]
    assert [s.tolist() for s in split.test_inputs] == [[5, 2, 7], [0, 6]]
    assert split.test_targets.tolist() == [1, 8]


def test_padding_shifts_ids_pads_left_and_keeps_the_latest_items():
    rows = pad_sequences([[5, 2, 7, 1], [], [0]], max_len=3)
    assert rows.tolist() == [[3, 8, 2], [0, 0, 0], [0, 0, 1]]
    assert rows.dtype == np.int64
    with pytest.raises(ValueError, match="max_len"):
        pad_sequences([[1]], max_len=0)


def test_next_item_targets_follow_every_position():
    inputs, targets = next_item_examples([[5, 2, 7, 1], [3], [0, 6]], max_len=4)
    assert inputs.tolist() == [[0, 6, 3, 8], [0, 0, 0, 1]]
    assert targets.tolist() == [[0, 3, 8, 2], [0, 0, 0, 7]]
    # the target at each position is the input at the next position
    assert (inputs[:, 1:][targets[:, :-1] != 0] == targets[:, :-1][targets[:, :-1] != 0]).all()


def test_negatives_avoid_the_history_and_follow_popularity():
    histories = [np.array([0, 1, 2]), np.array([5]), np.array([], dtype=np.int64)]
    drawn = sample_unseen_items(histories, 6, 400, seed=0)
    for row, history in zip(drawn, histories):
        assert not np.isin(row, history).any()
    assert set(drawn[2].tolist()) == set(range(6))                       # uniform reaches every item
    counts = np.array([0, 10, 0, 30, 60, 0])
    popular = sample_unseen_items([np.array([4])], 6, 4000, method="popularity", item_counts=counts, seed=1)[0]
    assert set(popular.tolist()) == {1, 3}                               # never an unseen-count or history item
    assert (popular == 3).mean() == pytest.approx(0.75, abs=0.03)       # 30 / (10 + 30)
    distinct = sample_unseen_items(histories, 6, 3, distinct=True, seed=2)
    assert all(len(set(row.tolist())) == 3 for row in distinct)
    with pytest.raises(ValueError, match="fewer than count"):
        sample_unseen_items(histories, 6, 4, distinct=True)
    with pytest.raises(ValueError, match="item_counts"):
        sample_unseen_items(histories, 6, 2, method="popularity")


def test_markov_sequences_follow_the_cluster_chain_without_repeats():
    data = synthetic_markov_sequences(n_users=50, n_clusters=4, items_per_cluster=8, length=8, stay=0.1, follow=0.8,
                                      seed=3)
    again = synthetic_markov_sequences(n_users=50, n_clusters=4, items_per_cluster=8, length=8, stay=0.1, follow=0.8,
                                       seed=3)
    np.testing.assert_array_equal(data.items, again.items)
    sequences = user_sequences(data)
    assert data.n_items == 32 and all(len(s) == 8 and len(set(s.tolist())) == 8 for s in sequences)
    clusters = np.stack(sequences) // 8
    moves = (clusters[:, 1:] - clusters[:, :-1]) % 4
    # P(next) = 0.8 + 0.1 / 4 and P(same) = 0.1 + 0.1 / 4 under the chain
    assert (moves == 1).mean() == pytest.approx(0.825, abs=0.05)
    assert (moves == 0).mean() == pytest.approx(0.125, abs=0.04)
    with pytest.raises(ValueError, match="exhaust"):
        synthetic_markov_sequences(length=20, items_per_cluster=8)
