"""FewShotTasks: N-way K-shot splits with classes renamed 0..n-1, exact counts, disjoint support
and query samples, determinism by seed, class splits, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from lamina.data import ArrayDataset, FewShotTask, FewShotTasks


def _data(classes=8, per_class=6):
    """Sample i has x = [i, label] so a task's samples can be traced back."""
    y = np.repeat(np.arange(classes), per_class)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    y = y[order] * 10                                            # labels 0, 10, ..., not 0..n-1
    x = np.stack([np.arange(len(y)), y], axis=1).astype(np.float32)
    return x, y


def test_counts_labels_and_disjoint_samples():
    x, y = _data()
    tasks = FewShotTasks((x, y), n_way=5, k_shot=2, q_queries=3, num_tasks=20, seed=1)
    assert len(tasks) == 20 and len(list(tasks)) == 20
    for task in tasks:
        assert isinstance(task, FewShotTask)
        (xs, ys), (xq, yq) = task
        assert xs.shape == (10, 2) and xq.shape == (15, 2)
        np.testing.assert_array_equal(ys, np.repeat(np.arange(5), 2))
        np.testing.assert_array_equal(yq, np.repeat(np.arange(5), 3))
        assert len(set(task.classes.tolist())) == 5
        # each new label stands for one original class, the same in support and query
        np.testing.assert_array_equal(xs[:, 1], task.classes[ys])
        np.testing.assert_array_equal(xq[:, 1], task.classes[yq])
        assert not set(xs[:, 0].tolist()) & set(xq[:, 0].tolist())
        assert len(set(xs[:, 0].tolist()) | set(xq[:, 0].tolist())) == 25
        assert task.support is task[0] and task.query is task[1]


def test_the_seed_fixes_the_tasks_in_any_order():
    x, y = _data()
    first = FewShotTasks((x, y), 3, 1, 2, num_tasks=10, seed=7)
    again = FewShotTasks(ArrayDataset(x, y), 3, 1, 2, num_tasks=10, seed=7)
    other = FewShotTasks((x, y), 3, 1, 2, num_tasks=10, seed=8)
    for i in reversed(range(10)):
        np.testing.assert_array_equal(first[i].support[0], again[i].support[0])
        np.testing.assert_array_equal(first[i].query[0], again[i].query[0])
    assert any(not np.array_equal(first[i].support[0], other[i].support[0]) for i in range(10))
    assert not np.array_equal(first[0].support[0], first[1].support[0])
    np.testing.assert_array_equal(first[-1].classes, first[9].classes)
    lamina.manual_seed(3)
    unseeded = FewShotTasks((x, y), 3, 1, 2)
    lamina.manual_seed(3)
    assert FewShotTasks((x, y), 3, 1, 2).seed == unseeded.seed


def test_a_class_split_keeps_tasks_on_its_classes():
    x, y = _data()
    meta_test = [50, 60, 70]
    tasks = FewShotTasks((x, y), 3, 2, 1, num_tasks=15, classes=meta_test, seed=0)
    np.testing.assert_array_equal(tasks.classes, meta_test)
    for task in tasks:
        assert sorted(task.classes.tolist()) == meta_test


def test_a_dataset_of_pairs():
    x, y = _data(classes=4, per_class=3)

    class Pairs:
        def __len__(self):
            return len(y)

        def __getitem__(self, i):
            return x[i], y[i]

    (xs, ys), (xq, yq) = FewShotTasks(Pairs(), 4, 2, 1, seed=2)[0]
    assert xs.shape == (8, 2) and xq.shape == (4, 2)
    np.testing.assert_array_equal(xs, FewShotTasks((x, y), 4, 2, 1, seed=2)[0].support[0])


def test_errors_are_clear():
    x, y = _data(classes=4, per_class=3)
    with pytest.raises(ValueError, match=r"n_way=5 is more than the 4 classes available \(\[0, 10, 20, 30\]\)"):
        FewShotTasks((x, y), 5, 1, 1)
    with pytest.raises(ValueError, match=r"k_shot \+ q_queries = 4 samples are needed from each class, but these "
                                         r"classes have fewer \(class: count\): \{0: 3, 10: 3, 20: 3, 30: 3\}"):
        FewShotTasks((x, y), 2, 2, 2)
    with pytest.raises(ValueError, match=r"classes \[99\] have no samples in the dataset"):
        FewShotTasks((x, y), 2, 1, 1, classes=[0, 99])
    with pytest.raises(ValueError, match="k_shot must be an integer >= 1, got 0"):
        FewShotTasks((x, y), 2, 0, 1)
    with pytest.raises(ValueError, match=r"labels must be one integer class per sample.*dtype float"):
        FewShotTasks((x, y.astype(float)), 2, 1, 1)
    with pytest.raises(IndexError, match="task 3 out of range for 3 tasks"):
        FewShotTasks((x, y), 2, 1, 1, num_tasks=3)[3]
