"""The GPS and Graphormer-lite graph transformer layers and their positional / structural
encodings, plus the README's large-graph example."""


import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch, randn, run_readme_section
from lamina import nn
from lamina.data import (
    laplacian_pe,
    normalized_adjacency,
    random_sign_flip,
    random_walk_pe,
    shortest_path_distances,
    to_undirected,
)
from lamina.nn.functional_call import functional_call

EDGES = np.array([[0, 1, 2, 3, 4, 5, 6, 5, 0, 2],
                  [1, 2, 0, 4, 5, 6, 3, 3, 2, 1]])
BATCH = np.array([0, 0, 0, 1, 1, 1, 1])             # graph 0: nodes 0-2, graph 1: nodes 3-6
N, C, HEADS = 7, 4, 2


def _undirected_graph(n=9, seed=0):
    rng = np.random.default_rng(seed)
    ring = np.stack([np.arange(n), (np.arange(n) + 1) % n])
    chords = rng.integers(0, n, (2, 5))
    chords = chords[:, chords[0] != chords[1]]
    edges, _ = to_undirected(np.concatenate([ring, chords], axis=1), n)
    return edges


@pytest.mark.parametrize("normalization", ["sym", None])
def test_laplacian_pe_vectors_are_eigenvectors(normalization):
    n, k = 9, 3
    edges = _undirected_graph(n)
    pe = laplacian_pe(edges, n, k, normalization=normalization)
    if normalization == "sym":
        laplacian = np.eye(n) - normalized_adjacency(edges, n, add_loops=False)
    else:
        a = np.zeros((n, n))
        a[edges[1], edges[0]] = 1.0
        laplacian = np.diag(a.sum(1)) - a
    eigenvalues = np.linalg.eigvalsh(laplacian)
    assert pe.shape == (n, k)
    for column, expected in zip(pe.T, eigenvalues[1:k + 1]):
        lam = column @ laplacian @ column
        np.testing.assert_allclose(laplacian @ column, lam * column, atol=1e-10)
        assert abs(lam - expected) < 1e-10 and abs(np.linalg.norm(column) - 1) < 1e-12
    flipped = random_sign_flip(pe, 3)
    signs = np.sign((flipped * pe).sum(axis=0))
    assert np.allclose(flipped, pe * signs) and set(signs) <= {-1.0, 1.0}


def test_random_walk_pe_is_the_diagonal_of_random_walk_powers():
    ring = np.stack([np.arange(4), (np.arange(4) + 1) % 4])
    cycle, _ = to_undirected(ring, 4)
    np.testing.assert_allclose(random_walk_pe(cycle, 4, 4), np.tile([0.0, 0.5, 0.0, 0.5], (4, 1)))  # by hand
    n = 9
    edges = _undirected_graph(n, seed=1)
    a = np.zeros((n, n))
    np.add.at(a, (edges[0], edges[1]), 1.0)
    walk = a / a.sum(axis=1, keepdims=True)
    expected = np.stack([np.diag(np.linalg.matrix_power(walk, k)) for k in range(1, 6)], axis=1)
    np.testing.assert_allclose(random_walk_pe(edges, n, 5), expected, atol=1e-14)


def test_encoding_errors():
    with pytest.raises(ValueError, match="more than k nodes"):
        laplacian_pe(EDGES, N, 7)
    with pytest.raises(ValueError, match="walk_length"):
        random_walk_pe(EDGES, N, 0)


def _gps_layer():
    lamina.manual_seed(0)
    layer = nn.GPSLayer(C, heads=HEADS)
    layer(lamina.tensor(randn(N, C)), EDGES, BATCH)
    layer.to(np.float64)
    names = [name for name, _ in layer.named_parameters()]
    return layer, names


def torch_gps(x, p):
    """GPS by hand: GIN local step, masked multi-head attention, MLP, layer norms."""
    n, width = x.shape[0], C // HEADS

    def norm(h, name):
        return torch.nn.functional.layer_norm(h, (C,), p[f"{name}.weight"], p[f"{name}.bias"], eps=1e-5)

    def dense(h, name):
        return h @ p[f"{name}.weight"] + p[f"{name}.bias"]

    q, k, v = ((x @ p[f"{part}_weight"] + p[f"{part}_bias"]).reshape(n, HEADS, width)
               for part in ("query", "key", "value"))
    scores = torch.einsum("nhd,mhd->hnm", q, k) / width ** 0.5
    same = torch.from_numpy(BATCH[:, None] == BATCH[None, :])
    attention = torch.softmax(scores.masked_fill(~same, float("-inf")), dim=-1)
    mixed = torch.einsum("hnm,mhd->nhd", attention, v).reshape(n, C) @ p["output_weight"] + p["output_bias"]
    src, dst = torch.from_numpy(EDGES[0]), torch.from_numpy(EDGES[1])
    gin_in = x + torch.zeros_like(x).index_add_(0, dst, x[src])
    gin = dense(torch.relu(dense(gin_in, "local.mlp.dense")), "local.mlp.dense_1")
    h = norm(mixed + x, "norm_attention") + norm(gin + x, "norm_local")
    return norm(h + dense(torch.relu(dense(h, "mlp.dense")), "mlp.dense_1"), "norm_out")


def test_gps_layer_matches_a_torch_rewrite():
    layer, names = _gps_layer()
    params = [randn(*np.shape(value.numpy()), seed=10 + i, scale=0.7) for i, (_, value) in
              enumerate(layer.named_parameters())]

    def ours(x, *values):
        return functional_call(layer, dict(zip(names, values)), x, EDGES, BATCH)

    def theirs(x, *values):
        return torch_gps(x, dict(zip(names, values)))

    # a key bias shifts every score of a query alike: its gradient is zero, rounding noise
    compare_with_torch(ours, theirs, randn(N, C, seed=1), *params, dtype=np.float64,
                       grad=[True] + [name != "key_bias" for name in names])
    grad = [True] + [name.startswith(("query", "key_weight", "local.mlp.dense.")) for name in names]
    assert check_gradients(ours, randn(N, C, seed=1), *params, grad=grad)


def test_gps_attention_stays_inside_each_graph():
    layer, _ = _gps_layer()
    x = randn(N, C, seed=2)
    moved = x.copy()
    moved[4:] += 5.0                                   # change graph 1 only
    no_edges = np.zeros((2, 0), dtype=np.int64)
    first = layer(lamina.tensor(x, dtype=np.float64), no_edges, BATCH).numpy()
    second = layer(lamina.tensor(moved, dtype=np.float64), no_edges, BATCH).numpy()
    np.testing.assert_array_equal(first[:3], second[:3])
    assert not np.allclose(first[3], second[3])        # node 3 attends to the moved nodes of its graph


def test_gps_errors():
    with pytest.raises(ValueError, match="must divide"):
        nn.GPSLayer(6, heads=4)
    layer = nn.GPSLayer(4)
    with pytest.raises(ValueError, match="expected channels = 4"):
        layer(lamina.tensor(randn(3, 5)), np.zeros((2, 0), dtype=np.int64))
    layer, _ = _gps_layer()
    with pytest.raises(ValueError, match="one graph id per node"):
        layer(lamina.tensor(randn(N, C)), EDGES, BATCH[:-1])


def test_shortest_path_distances_match_floyd_warshall():
    n = 8
    rng = np.random.default_rng(4)
    edges = rng.integers(0, n, (2, 12))
    hops = np.full((n, n), np.inf)
    np.fill_diagonal(hops, 0)
    hops[edges[0], edges[1]] = np.minimum(hops[edges[0], edges[1]], 1)
    for k in range(n):
        hops = np.minimum(hops, hops[:, [k]] + hops[[k], :])
    expected = np.where(np.isinf(hops), -1, hops).astype(np.int64)
    assert np.array_equal(shortest_path_distances(edges, n), expected)
    assert (expected == -1).any() and (expected > 1).any()


def test_centrality_encoding_adds_degree_embeddings_by_hand():
    layer = nn.CentralityEncoding(max_degree=1)
    x = randn(N, C, seed=5)
    out = layer(lamina.tensor(x, dtype=np.float64), EDGES).numpy()
    d_in, d_out = np.bincount(EDGES[1], minlength=N), np.bincount(EDGES[0], minlength=N)
    z_in, z_out = layer.in_degree.numpy(), layer.out_degree.numpy()
    assert d_in.max() > 1 and d_out.max() > 1                # some degrees are clipped
    np.testing.assert_allclose(out, x + z_in[np.minimum(d_in, 1)] + z_out[np.minimum(d_out, 1)], rtol=1e-6)


# EDGES without 6 -> 3: node 6 reaches no other node, and 3 -> 6 takes three hops
GRAPHORMER_EDGES = EDGES[:, [0, 1, 2, 3, 4, 5, 7, 8, 9]]


def torch_graphormer(x, p, max_distance):
    """Pre-norm attention with a per-head bias indexed by the clipped hop distance."""
    n, width = x.shape[0], C // HEADS
    hops = shortest_path_distances(GRAPHORMER_EDGES, n)
    index = torch.from_numpy(np.where(hops < 0, max_distance + 1, np.minimum(hops, max_distance)))
    bias = p["spatial_bias"][index].permute(2, 0, 1)

    def norm(h, name):
        return torch.nn.functional.layer_norm(h, (C,), p[f"{name}.weight"], p[f"{name}.bias"], eps=1e-5)

    def dense(h, name):
        return h @ p[f"{name}.weight"] + p[f"{name}.bias"]

    y = norm(x, "norm_attention")
    q, k, v = ((y @ p[f"{part}_weight"] + p[f"{part}_bias"]).reshape(n, HEADS, width)
               for part in ("query", "key", "value"))
    scores = torch.einsum("nhd,mhd->hnm", q, k) / width ** 0.5 + bias
    same = torch.from_numpy(BATCH[:, None] == BATCH[None, :])
    attention = torch.softmax(scores.masked_fill(~same, float("-inf")), dim=-1)
    h = x + torch.einsum("hnm,mhd->nhd", attention, v).reshape(n, C) @ p["output_weight"] + p["output_bias"]
    return h + dense(torch.relu(dense(norm(h, "norm_ffn"), "ffn.dense")), "ffn.dense_1")


def test_graphormer_layer_matches_a_torch_rewrite():
    lamina.manual_seed(0)
    layer = nn.GraphormerLayer(C, heads=HEADS, max_distance=2)
    layer(lamina.tensor(randn(N, C)), GRAPHORMER_EDGES, BATCH)
    layer.to(np.float64)
    names = [name for name, _ in layer.named_parameters()]
    params = [randn(*np.shape(value.numpy()), seed=30 + i, scale=0.7) for i, (_, value) in
              enumerate(layer.named_parameters())]

    def ours(x, *values):
        return functional_call(layer, dict(zip(names, values)), x, GRAPHORMER_EDGES, BATCH)

    def theirs(x, *values):
        return torch_graphormer(x, dict(zip(names, values)), max_distance=2)

    compare_with_torch(ours, theirs, randn(N, C, seed=1), *params, dtype=np.float64,
                       grad=[True] + [name != "key_bias" for name in names])
    grad = [True] + [name in ("spatial_bias", "query_weight", "norm_attention.weight") for name in names]
    assert check_gradients(ours, randn(N, C, seed=1), *params, grad=grad)


def test_readme_large_graph_example_runs():
    printed, _ = run_readme_section("Graphs at scale, heterogeneous graphs and graph transformers")
    lines = printed.splitlines()
    assert float(lines[0].rsplit(" ", 1)[1]) > 0.8          # SAGE trained on neighbour samples
    assert float(lines[1].rsplit(" ", 1)[1]) > 0.8          # R-GCN on a heterogeneous graph
    assert lines[2:] == ["GPS output (60, 16)", "Graphormer output (60, 16)"]
