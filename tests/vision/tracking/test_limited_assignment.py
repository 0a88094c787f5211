import itertools

import numpy as np
import pytest

from lamina.vision.tracking import limited_assignment


def _brute_force(cost, limit):
    """The least total of matched costs plus limit / 2 per unmatched row and column, over all matchings."""
    rows, cols = cost.shape
    best = (rows + cols) * limit / 2
    for size in range(1, min(rows, cols) + 1):
        for chosen_rows in itertools.combinations(range(rows), size):
            for chosen_cols in itertools.permutations(range(cols), size):
                picked = cost[list(chosen_rows), list(chosen_cols)]
                if (picked <= limit).all():
                    best = min(best, picked.sum() + (rows + cols - 2 * size) * limit / 2)
    return best


@pytest.mark.parametrize("shape, seed", [((3, 3), 0), ((2, 4), 1), ((4, 2), 2), ((3, 4), 3)])
def test_matches_the_best_limited_matching(shape, seed):
    cost = np.random.default_rng(seed).uniform(0, 1, shape)
    limit = 0.5
    matches, left_rows, left_cols = limited_assignment(cost, limit)
    assert (cost[matches[:, 0], matches[:, 1]] <= limit).all()
    assert sorted([*matches[:, 0], *left_rows]) == list(range(shape[0]))
    assert sorted([*matches[:, 1], *left_cols]) == list(range(shape[1]))
    total = cost[matches[:, 0], matches[:, 1]].sum() + (len(left_rows) + len(left_cols)) * limit / 2
    assert total == pytest.approx(_brute_force(cost, limit))


def test_empty_and_all_refused():
    matches, left_rows, left_cols = limited_assignment(np.empty((0, 3)), 0.8)
    assert matches.shape == (0, 2) and left_rows.size == 0 and list(left_cols) == [0, 1, 2]
    matches, left_rows, left_cols = limited_assignment(np.full((2, 2), 0.9), 0.8)
    assert matches.shape == (0, 2) and list(left_rows) == [0, 1] and list(left_cols) == [0, 1]
