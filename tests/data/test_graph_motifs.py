"""BA-Shapes and BA-2Motifs: the base graph's growth, the planted motifs, their labels and
the ground-truth edge masks, counted by hand."""

import numpy as np
import pytest

from lamina.data import ba_2motifs, ba_shapes, barabasi_albert, collate_graphs


def _pairs(graph):
    return {(int(a), int(b)) for a, b in graph.edge_index.T}


def test_barabasi_albert_grows_m_edges_per_node_to_distinct_targets():
    edges = barabasi_albert(50, 3, np.random.default_rng(0))
    assert edges.shape == (2, 3 + 3 * (50 - 4))                  # the star, then 3 per new node
    assert np.all(edges[0] < edges[1])                           # each new node joins older ones
    assert len({tuple(e) for e in edges.T}) == edges.shape[1]    # no repeated edge
    degrees = np.bincount(edges.reshape(-1), minlength=50)
    assert degrees.min() >= 3 and degrees.max() > 12             # hubs: preferential attachment


def test_ba_shapes_plants_houses_with_their_labels_and_mask():
    graph = ba_shapes(num_base=300, num_motifs=80, seed=0)
    assert graph.num_nodes == 700 and graph.x.shape == (700, 10) and np.all(graph.x == 1)
    np.testing.assert_array_equal(np.bincount(graph.y), [300, 160, 160, 80])
    pairs = _pairs(graph)
    assert all((b, a) in pairs for a, b in pairs)                # undirected: both directions
    assert graph.edge_mask.sum() == 80 * 6 * 2                   # six edges per house, both ways
    for k in (0, 41, 79):
        start = 300 + 5 * k
        np.testing.assert_array_equal(graph.y[start:start + 5], [1, 1, 2, 2, 3])
        np.testing.assert_array_equal(graph.motif[start:start + 5], k)
        house = {(start + a, start + b) for a, b in [(0, 1), (1, 2), (2, 3), (3, 0), (4, 0), (4, 1)]}
        assert house <= pairs
        own = graph.explanation_edges(start + 4)
        assert {(int(a), int(b)) for a, b in graph.edge_index[:, own].T} == house | {(b, a) for a, b in house}
        anchors = [a for a, b in pairs if b == start and a < 300]
        assert len(anchors) >= 1                                  # joined to the base graph
    assert not graph.explanation_edges(5).any()                  # a base node has no motif
    base_edges = barabasi_albert(300, 5, np.random.default_rng(0)).shape[1]
    extra = len(pairs) // 2 - base_edges - 80 * 7
    assert 0 < extra <= 70                                        # ~0.1 N random edges (repeats merge)


def test_ba_shapes_is_reproducible_and_checks_its_arguments():
    a, b, c = ba_shapes(40, 5, seed=3), ba_shapes(40, 5, seed=3), ba_shapes(40, 5, seed=4)
    np.testing.assert_array_equal(a.edge_index, b.edge_index)
    assert a.edge_index.shape != c.edge_index.shape or np.any(a.edge_index != c.edge_index)
    with pytest.raises(ValueError, match=r"ba_shapes: num_base must be an int >= 2, got 1"):
        ba_shapes(num_base=1)
    with pytest.raises(ValueError, match=r"barabasi_albert: m=5 must be below num_nodes=5"):
        ba_shapes(num_base=5, m=5)
    with pytest.raises(IndexError, match=r"explanation_edges: node 65 is out of range for 65 nodes"):
        a.explanation_edges(65)


def test_ba_2motifs_alternates_houses_and_cycles():
    graphs = ba_2motifs(num_graphs=6, num_base=20, seed=0)
    assert [g.y for g in graphs] == [0, 1, 0, 1, 0, 1]
    for g in graphs:
        assert g.num_nodes == 25 and g.edge_index.shape[1] == 2 * (19 + 1 + (6 if g.y == 0 else 5))
        assert g.edge_mask.sum() == (12 if g.y == 0 else 10)
        assert np.all(g.edge_index[:, g.edge_mask] >= 20)         # motif edges join motif nodes
    batch = collate_graphs(graphs)
    np.testing.assert_array_equal(batch.y, [0, 1, 0, 1, 0, 1])
