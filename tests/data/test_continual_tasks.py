"""permuted_tasks, split_tasks and rotated_tasks: the task sequences of continual learning
built from one labelled set, checked against their definitions."""

from __future__ import annotations

import numpy as np
import pytest

from lamina.data import permuted_tasks, rotated_tasks, split_tasks
from lamina.data.image_ops import rotate
from lamina.errors import ShapeError


def images(n=12, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 4, 4, 1)).astype(np.float32), rng.integers(0, 6, n)


def test_permuted_tasks_share_labels_and_permute_each_sample_alike():
    x, y = images()
    tasks = permuted_tasks(x, y, 3, seed=5)
    assert len(tasks) == 3
    flat = x.reshape(len(x), -1)
    for tx, ty in tasks:
        assert tx.shape == x.shape
        np.testing.assert_array_equal(ty, y)
        moved = tx.reshape(len(x), -1)
        order = [int(np.flatnonzero(flat[0] == v)[0]) for v in moved[0]]   # values are distinct
        np.testing.assert_array_equal(moved, flat[:, order])
        assert sorted(order) == list(range(16))
    assert not np.array_equal(tasks[0][0], tasks[1][0])


def test_permuted_tasks_are_reproducible_and_keep_first_is_the_identity():
    x, y = images()
    a, b = permuted_tasks(x, y, 2, seed=1), permuted_tasks(x[:5], y[:5], 2, seed=1)
    np.testing.assert_array_equal(a[1][0][:5], b[1][0])          # train and test splits match
    kept = permuted_tasks(x, y, 2, seed=1, keep_first=True)
    np.testing.assert_array_equal(kept[0][0], x)
    np.testing.assert_array_equal(kept[1][0], a[1][0])


def test_split_tasks_deal_classes_in_groups():
    x, y = images(40)
    tasks = split_tasks(x, y, 2)
    assert len(tasks) == 3
    for k, (tx, ty) in enumerate(tasks):
        keep = np.isin(y, [2 * k, 2 * k + 1])
        np.testing.assert_array_equal(tx, x[keep])
        np.testing.assert_array_equal(ty, y[keep])
    relabelled = split_tasks(x, y, 4, classes=[5, 0, 3, 1, 2, 4], relabel=True)
    assert len(relabelled) == 2
    np.testing.assert_array_equal(relabelled[0][1], np.array([[5, 0, 3, 1].index(v) for v in y if v in (5, 0, 3, 1)]))
    np.testing.assert_array_equal(relabelled[1][1], np.array([[2, 4].index(v) for v in y if v in (2, 4)]))


def test_rotated_tasks_turn_every_image():
    x, y = images(3)
    tasks = rotated_tasks(x, y, [0, 90])
    np.testing.assert_array_equal(tasks[0][0], x)
    np.testing.assert_array_equal(tasks[1][0], np.stack([rotate(im, 90.0) for im in x]))
    np.testing.assert_array_equal(tasks[1][0][..., 0], np.rot90(x[..., 0], 1, axes=(1, 2)))


def test_bad_arguments_are_named():
    x, y = images()
    with pytest.raises(ValueError, match="n_tasks"):
        permuted_tasks(x, y, 0)
    with pytest.raises(ShapeError, match="split_tasks"):
        split_tasks(x, y[:3], 2)
    with pytest.raises(ValueError, match="no sample"):
        split_tasks(x, y, 2, classes=[7, 8])
    with pytest.raises(ShapeError, match="NHWC"):
        rotated_tasks(x.reshape(len(x), -1), y, [10])
