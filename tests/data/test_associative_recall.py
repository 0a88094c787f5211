"""associative_recall_task: the layout of the tokens, the answers against a plain loop over
the pairs (the last value stored under the query key), repeats only when allowed, seeding and
errors."""

from __future__ import annotations

import numpy as np
import pytest

from lamina.data import associative_recall_task


def _answers_by_loop(tokens: np.ndarray, num_keys: int) -> list[int]:
    answers = []
    for row in tokens:
        memory = {}
        for key, value in zip(row[:-1:2], row[1:-1:2]):
            memory[key] = value - num_keys
        answers.append(memory[row[-1]])
    return answers


@pytest.mark.parametrize("distinct_keys", [True, False])
def test_layout_and_answers(distinct_keys):
    tokens, targets = associative_recall_task(200, 6, 8, 5, distinct_keys=distinct_keys, seed=3)
    assert tokens.shape == (200, 13) and targets.shape == (200,)
    assert tokens.dtype == np.int64 and targets.dtype == np.int64
    keys, values = tokens[:, :-1:2], tokens[:, 1:-1:2]
    assert ((keys >= 0) & (keys < 8)).all() and ((values >= 8) & (values < 13)).all()
    assert all(query in row for query, row in zip(tokens[:, -1], keys))
    assert targets.tolist() == _answers_by_loop(tokens, 8)
    repeats = np.array([len(set(row)) < len(row) for row in keys])
    assert not repeats.any() if distinct_keys else repeats.mean() > 0.5


def test_seeded_and_checked():
    first, _ = associative_recall_task(4, seed=1)
    np.testing.assert_array_equal(first, associative_recall_task(4, seed=1)[0])
    assert not np.array_equal(first, associative_recall_task(4, seed=2)[0])
    with pytest.raises(ValueError, match="associative_recall_task: 9 pairs need as many distinct keys, got "
                                         "num_keys 8"):
        associative_recall_task(2, pairs=9, num_keys=8)
    with pytest.raises(ValueError, match="associative_recall_task: samples must be a positive int, got 0"):
        associative_recall_task(0)
