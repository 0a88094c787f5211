import numpy as np
import pytest

from lamina.data import (
    DataLoader,
    Graph,
    add_remaining_self_loops,
    add_self_loops,
    collate_graphs,
    degree,
    normalized_adjacency,
    remove_self_loops,
    to_undirected,
)

EDGES = np.array([[0, 1, 1, 2, 2], [1, 2, 2, 2, 0]])       # 1 -> 2 twice, a loop at 2


def test_collate_offsets_edges_and_builds_batch():
    a = Graph(np.ones((2, 3)), [[0], [1]], edge_weight=[0.5], y=1)
    b = Graph(np.zeros((3, 3)), [[2, 0], [1, 2]], edge_weight=[1.0, 2.0], y=0)
    batch = collate_graphs([a, b])
    np.testing.assert_array_equal(batch.edge_index, [[0, 4, 2], [1, 3, 4]])
    np.testing.assert_array_equal(batch.batch, [0, 0, 1, 1, 1])
    np.testing.assert_array_equal(batch.ptr, [0, 2, 5])
    np.testing.assert_array_equal(batch.edge_weight, [0.5, 1.0, 2.0])
    np.testing.assert_array_equal(batch.y, [1, 0])
    assert batch.num_graphs == 2 and batch.x.shape == (5, 3)


def test_collate_works_as_a_data_loader_collate_fn():
    graphs = [Graph(np.full((n, 2), n, dtype=float), [[0], [n - 1]], y=n) for n in (1, 2, 3, 4, 5)]
    batches = list(DataLoader(graphs, batch_size=2, shuffle=False, collate_fn=collate_graphs))
    assert [b.num_graphs for b in batches] == [2, 2, 1]
    np.testing.assert_array_equal(batches[1].y, [3, 4])
    np.testing.assert_array_equal(batches[1].edge_index, [[0, 3], [2, 6]])


def test_collate_and_graph_errors():
    with pytest.raises(ValueError, match=r"different feature widths \[2, 3\]"):
        collate_graphs([Graph(np.ones((2, 2)), [[0], [1]]), Graph(np.ones((2, 3)), [[0], [1]])])
    with pytest.raises(ValueError, match="node 5, out of range for 2 nodes"):
        Graph(np.ones((2, 2)), [[0], [5]])
    with pytest.raises(ValueError, match=r"edge_weight of shape \(2,\).*shape \(1,\)"):
        Graph(np.ones((2, 2)), [[0], [1]], edge_weight=[1.0, 2.0])


def test_self_loop_helpers():
    without, w = remove_self_loops(EDGES, np.arange(5.0))
    np.testing.assert_array_equal(without, [[0, 1, 1, 2], [1, 2, 2, 0]])
    np.testing.assert_array_equal(w, [0, 1, 2, 4])
    every, w = add_self_loops(EDGES, 3, np.arange(5.0), fill_value=9.0)
    assert every.shape == (2, 8) and list(w[-3:]) == [9.0, 9.0, 9.0]
    remaining, _ = add_remaining_self_loops(EDGES, 3)
    np.testing.assert_array_equal(remaining[:, 5:], [[0, 1], [0, 1]])


def test_to_undirected_degree_and_normalized_adjacency():
    both, w = to_undirected(np.array([[0, 1], [1, 2]]), 3, edge_weight=np.array([2.0, 3.0]))
    np.testing.assert_array_equal(both, [[0, 1, 1, 2], [1, 0, 2, 1]])
    np.testing.assert_array_equal(w, [2.0, 2.0, 3.0, 3.0])
    np.testing.assert_array_equal(degree(EDGES[1], 4), [1, 1, 3, 0])
    a = normalized_adjacency(EDGES, 4)
    raw = np.array([[1, 0, 1, 0], [1, 1, 0, 0], [0, 2, 1, 0], [0, 0, 0, 1]], dtype=float)
    d = raw.sum(axis=1)
    np.testing.assert_allclose(a, raw / np.sqrt(d[:, None] * d[None, :]))
