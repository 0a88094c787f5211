"""LETOR / SVMlight reading and writing, the synthetic ranking task, and padded lists."""

import numpy as np
import pytest

from lamina.data import (
    DataLoader,
    LetorData,
    ListwiseDataset,
    collate_lists,
    read_letor,
    synthetic_ltr,
    synthetic_relevance,
    write_letor,
)
from lamina.errors import ShapeError

SAMPLE = """\
# a header comment
2 qid:10 1:0.5 3:-1.25 # doc-a
0 qid:10 2:3
1 qid:7 1:1e-3 2:0.1 3:7 #doc-c  with spaces

4 qid:7 3:2.5
"""


def test_read_by_hand(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text(SAMPLE)
    data = read_letor(path)
    np.testing.assert_array_equal(data.labels, [2, 0, 1, 4])
    assert data.labels.dtype == np.int64 and data.qids.dtype == np.int64
    np.testing.assert_array_equal(data.qids, [10, 10, 7, 7])
    np.testing.assert_allclose(data.features, [[0.5, 0, -1.25], [0, 3, 0], [1e-3, 0.1, 7], [0, 0, 2.5]], rtol=1e-7)
    assert data.comments == ["doc-a", "", "doc-c  with spaces", ""]
    assert data.num_queries == 2 and len(data) == 4
    assert read_letor(SAMPLE.splitlines(), num_features=5).features.shape == (4, 5)


def test_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    features = rng.standard_normal((6, 4))
    features[1, 2] = 0.0
    data = LetorData(features, np.array([0, 1, 2, 3, 4, 0]), np.array([3, 3, 3, 1, 1, 2]),
                     ["x", "", "doc 3", "", "", "last"])
    for skip_zeros in (False, True):
        path = write_letor(tmp_path / f"out{skip_zeros}.txt", data, skip_zeros=skip_zeros)
        back = read_letor(path, num_features=4, dtype=np.float64)
        np.testing.assert_array_equal(back.features, features)
        np.testing.assert_array_equal(back.labels, data.labels)
        np.testing.assert_array_equal(back.qids, data.qids)
        assert back.comments == data.comments
    assert "3:0" not in (tmp_path / "outTrue.txt").read_text().splitlines()[1]
    strings = LetorData(np.ones((2, 1)), np.array([0.5, 1.0]), np.array(["q-a", "q-b"]))
    back = read_letor(write_letor(tmp_path / "s.txt", strings))
    assert list(back.qids) == ["q-a", "q-b"] and back.labels.dtype == np.float64


def test_write_is_atomic(tmp_path):
    path = tmp_path / "kept.txt"
    path.write_text("old\n")
    bad = LetorData(np.ones((2, 1)), np.array([0, 1]), np.array([1, 1]), ["fine", "two\nlines"])
    with pytest.raises(ValueError, match="comment of row 1 holds a newline"):
        write_letor(path, bad)
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["kept.txt"]


def test_read_errors():
    with pytest.raises(ValueError, match="line 1: expected '<label> qid:<id>"):
        read_letor(["2 1:0.5"])
    with pytest.raises(ValueError, match="line 2: .*'1 qid:3 1:x'"):
        read_letor(["0 qid:3 1:1", "1 qid:3 1:x"])
    with pytest.raises(ValueError, match="feature numbers start at 1"):
        read_letor(["0 qid:3 0:1"])
    with pytest.raises(ValueError, match="feature number 3 > num_features=2"):
        read_letor(["0 qid:3 3:1"], num_features=2)
    with pytest.raises(ShapeError, match="labels and qids must be"):
        LetorData(np.ones((3, 2)), np.zeros(2), np.zeros(3))


def test_synthetic_task_labels_follow_the_hidden_function():
    data = synthetic_ltr(num_queries=60, list_size=(5, 12), num_features=6, seed=1)
    assert data.features.shape[1] == 6 and data.num_queries == 60
    counts = np.bincount(data.labels, minlength=5) / len(data)
    assert counts.argmax() == 0 and counts[4] > 0.01 and set(np.unique(data.labels)) == {0, 1, 2, 3, 4}
    utility = synthetic_relevance(data.features)
    correlation = np.corrcoef(utility, data.labels)[0, 1]
    assert correlation > 0.85                               # noise and query offsets apart, a monotone map
    sizes = np.bincount(data.qids)[1:]
    assert sizes.min() >= 5 and sizes.max() <= 12
    again = synthetic_ltr(num_queries=60, list_size=(5, 12), num_features=6, seed=1)
    np.testing.assert_array_equal(again.features, data.features)
    with pytest.raises(ValueError, match="num_features must be >= 5"):
        synthetic_ltr(num_features=3)


def test_listwise_dataset_and_padding():
    features = np.arange(12.0).reshape(6, 2)
    data = LetorData(features, np.array([1, 0, 2, 0, 3, 1]), np.array([5, 5, 2, 9, 2, 5]))
    lists = ListwiseDataset(data)
    assert len(lists) == 3 and list(lists.query_ids) == [5, 2, 9]          # order of first appearance
    x, y = lists[0]
    np.testing.assert_array_equal(x, features[[0, 1, 5]])
    np.testing.assert_array_equal(y, [1, 0, 1])
    batch_x, batch_y, mask = collate_lists([lists[i] for i in range(3)])
    assert batch_x.shape == (3, 3, 2)
    np.testing.assert_array_equal(batch_y, [[1, 0, 1], [2, 3, -1], [0, -1, -1]])
    np.testing.assert_array_equal(mask, batch_y != -1)
    assert np.all(batch_x[~mask] == 0)
    cut = collate_lists([lists[0], lists[2]], max_length=2)
    assert cut[0].shape == (2, 2, 2) and cut[2].sum() == 3
    loader = DataLoader(lists, batch_size=2, shuffle=False, collate_fn=collate_lists)
    shapes = [tuple(b[1].shape) for b in loader]
    assert shapes == [(2, 3), (1, 1)]


def test_collate_errors():
    with pytest.raises(ShapeError, match="one d"):
        collate_lists([(np.ones((2, 3)), np.zeros(2)), (np.ones((2, 4)), np.zeros(2))])
    with pytest.raises(ShapeError, match="list 0 has 2 feature rows but 3 labels"):
        collate_lists([(np.ones((2, 3)), np.zeros(3))])
