"""negative_sampling and train_test_split_edges: what they return, checked edge by edge."""

import numpy as np
import pytest

from lamina.data import negative_sampling, to_undirected, train_test_split_edges


def _random_graph(n=30, p=0.15, seed=0):
    rng = np.random.default_rng(seed)
    upper = np.triu(rng.random((n, n)) < p, k=1)
    return to_undirected(np.stack(np.nonzero(upper)), n)[0]


def _pairs(edge_index):
    return set(zip(edge_index[0].tolist(), edge_index[1].tolist()))


@pytest.mark.parametrize("n,p", [(30, 0.15), (8, 0.6), (1500, 0.002)])
def test_negative_sampling_never_returns_an_edge_a_loop_or_a_repeat(n, p):
    edges = _random_graph(n, p)
    negatives = negative_sampling(edges, n, seed=1)
    assert negatives.shape == edges.shape and negatives.dtype == np.int64
    pairs = list(zip(negatives[0].tolist(), negatives[1].tolist()))
    assert len(set(pairs)) == len(pairs)
    assert not set(pairs) & _pairs(edges)
    assert np.all(negatives[0] != negatives[1]) and negatives.min() >= 0 and negatives.max() < n


def test_negative_sampling_can_take_every_non_edge_and_no_more():
    n = 6
    edges = _random_graph(n, 0.5, seed=3)
    free = n * n - n - edges.shape[1]
    everything = negative_sampling(edges, n, free, seed=0)
    assert len(_pairs(everything)) == free
    with_loops = negative_sampling(edges, n, free + n, seed=0, allow_self_loops=True)
    assert np.count_nonzero(with_loops[0] == with_loops[1]) == n
    with pytest.raises(ValueError, match=f"negative_sampling: asked for {free + 1} negative pairs .* only {free}"):
        negative_sampling(edges, n, free + 1)


def test_negative_sampling_is_uniform_over_the_non_edges():
    edges = np.array([[0, 1], [1, 2]])                        # 3 nodes: 9 - 3 loops - 2 edges = 4 non-edges
    counts = {}
    for seed in range(400):
        for pair in zip(*negative_sampling(edges, 3, 1, seed=seed)):
            counts[pair] = counts.get(pair, 0) + 1
    assert set(counts) == {(0, 2), (1, 0), (2, 0), (2, 1)}
    assert all(60 < c < 140 for c in counts.values()), counts         # 100 expected each
    np.testing.assert_array_equal(negative_sampling(edges, 3, 2, seed=5), negative_sampling(edges, 3, 2, seed=5))


def test_split_keeps_every_undirected_edge_exactly_once():
    n = 40
    edges = _random_graph(n, 0.2, seed=4)
    split = train_test_split_edges(edges, n, val_ratio=0.1, test_ratio=0.2, seed=0)
    m = edges.shape[1] // 2
    val, test = split.val_pos_edge_index, split.test_pos_edge_index
    assert val.shape[1] == int(0.1 * m) and test.shape[1] == int(0.2 * m)
    train = split.train_pos_edge_index
    assert _pairs(train) == _pairs(train[::-1])                       # both ways for message passing
    upper_train = train[:, train[0] < train[1]]
    parts = [upper_train, val, test]
    assert all(np.all(p[0] < p[1]) for p in parts)
    keys = np.concatenate([p[0] * n + p[1] for p in parts])
    assert keys.shape[0] == m and np.unique(keys).shape[0] == m
    assert set(keys.tolist()) == {j * n + i for j, i in _pairs(edges) if j < i}
    negatives = np.concatenate([split.val_neg_edge_index, split.test_neg_edge_index], axis=1)
    assert split.val_neg_edge_index.shape == val.shape and split.test_neg_edge_index.shape == test.shape
    assert not _pairs(negatives) & _pairs(edges) and np.all(negatives[0] < negatives[1])
    assert len(_pairs(negatives)) == negatives.shape[1]


def test_split_counts_an_edge_stored_one_way_or_twice_once_and_drops_loops():
    edges = np.array([[0, 1, 1, 2, 3, 3], [1, 0, 2, 3, 3, 0]])       # {0,1} twice, loop 3 -> 3
    split = train_test_split_edges(edges, 4, val_ratio=0.0, test_ratio=0.0, seed=0)
    assert _pairs(split.train_pos_edge_index) == {(0, 1), (1, 0), (1, 2), (2, 1), (2, 3), (3, 2), (0, 3), (3, 0)}
    with pytest.raises(ValueError, match="train_test_split_edges: val_ratio"):
        train_test_split_edges(edges, 4, val_ratio=1.0)
    with pytest.raises(ValueError, match="no training edges"):
        train_test_split_edges(edges, 4, val_ratio=0.5, test_ratio=0.5)
