"""TopKPooling, SAGPooling, dense_diff_pool with to_dense_batch / to_dense_adj, Set2Set and
AttentionalAggregation against torch re-implementations of PyTorch Geometric's formulas."""

import math

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch, randn
from lamina import nn
from lamina.nn import graph as G
from lamina.nn.functional_call import functional_call

# three graphs: nodes 0-4 (node 4 isolated), 5-8 and the single node 9
BATCH = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 2])
N, F_IN = BATCH.shape[0], 3
EDGES = np.array([[0, 1, 2, 1, 3, 0, 5, 6, 7, 8, 6],
                  [1, 0, 1, 2, 0, 3, 6, 5, 8, 7, 8]])


def _t(index):
    return torch.from_numpy(np.asarray(index))


def _torch_sum(values, index, n):
    return torch.zeros((n,) + values.shape[1:], dtype=values.dtype).index_add_(0, _t(index), values)


def _torch_softmax(scores, index, n):
    peak = torch.zeros((n,) + scores.shape[1:], dtype=scores.dtype).scatter_reduce(
        0, _t(index).view(-1, *([1] * (scores.ndim - 1))).expand(scores.shape), scores, "amax", include_self=False)
    e = torch.exp(scores - peak.detach()[_t(index)])
    return e / _torch_sum(e, index, n)[_t(index)]


def _reference_perm(score, ratio=None, min_score=None):
    """Per graph in order: its nodes by decreasing score, the first ceil(ratio n) (or those
    above min(min_score, max - 1e-7))."""
    perm = []
    for g in np.unique(BATCH):
        nodes = np.flatnonzero(BATCH == g)
        ranked = nodes[np.argsort(-score[nodes], kind="stable")]
        if min_score is None:
            perm.extend(ranked[:math.ceil(ratio * nodes.shape[0])])
        else:
            perm.extend(ranked[score[ranked] > min(min_score, score[nodes].max() - 1e-7)])
    return np.array(perm)


def _reference_edges(perm):
    position = {int(v): k for k, v in enumerate(perm)}
    kept = [(position[j], position[i]) for j, i in EDGES.T if j in position and i in position]
    return np.array(kept, dtype=np.int64).T.reshape(2, -1)


def _features(fn):
    """The pooled features alone (they depend on the gate), for a gradient check."""
    return lambda *arrays: fn(*arrays)[0]


def _built(layer):
    layer.build([(N, F_IN), EDGES.shape])
    return layer.to(np.float64)


# -- TopKPooling / SAGPooling --------------------------------------------------------------
@pytest.mark.parametrize("ratio", [0.5, 0.3, 1.0])
def test_topk_pooling_matches_torch_and_keeps_ceil_ratio_nodes_per_graph(ratio):
    layer = _built(nn.TopKPooling(ratio))
    x, weight = randn(N, F_IN, seed=1), randn(F_IN, seed=2)
    score = np.tanh(x @ weight / np.linalg.norm(weight))
    perm = _reference_perm(score, ratio)

    def ours(x, weight):
        out, edges, _, batch, kept, gate = functional_call(layer, {"weight": weight}, x, EDGES, None, BATCH)
        np.testing.assert_array_equal(kept, perm)
        np.testing.assert_array_equal(edges, _reference_edges(perm))
        np.testing.assert_array_equal(batch, BATCH[perm])
        return out, gate

    def theirs(x, weight):
        gate = torch.tanh(x @ weight / weight.norm())[_t(perm)]
        return x[_t(perm)] * gate[:, None], gate

    compare_with_torch(ours, theirs, x, weight, dtype=np.float64)
    assert check_gradients(_features(ours), x, weight)
    counts = np.bincount(BATCH[perm], minlength=3)
    np.testing.assert_array_equal(counts, np.ceil(ratio * np.array([5, 4, 1])))


def test_topk_pooling_with_min_score_keeps_softmax_scores_above_it():
    layer = _built(nn.TopKPooling(None, min_score=0.3, multiplier=2.0))
    x, weight = randn(N, F_IN, seed=3), randn(F_IN, seed=4)
    score = (x @ weight / np.linalg.norm(weight))
    gate_np = _torch_softmax(torch.tensor(score), BATCH, 3).numpy()
    perm = _reference_perm(gate_np, min_score=0.3)

    def ours(x, weight):
        out, _, _, _, kept, gate = functional_call(layer, {"weight": weight}, x, EDGES, None, BATCH)
        np.testing.assert_array_equal(kept, perm)
        return out, gate

    def theirs(x, weight):
        gate = _torch_softmax(x @ weight / weight.norm(), BATCH, 3)[_t(perm)]
        return 2.0 * x[_t(perm)] * gate[:, None], gate

    compare_with_torch(ours, theirs, x, weight, dtype=np.float64)
    assert 9 in perm                                           # a lone node always scores 1


def test_sag_pooling_scores_with_a_graph_conv():
    layer = _built(nn.SAGPooling(0.5))
    layer(lamina.tensor(randn(N, F_IN), dtype=np.float64), EDGES, None, BATCH)
    layer.to(np.float64)
    x, rel, root, bias = randn(N, F_IN, seed=5), randn(F_IN, 1, seed=6), randn(F_IN, 1, seed=7), randn(1, seed=8)
    a = np.zeros((N, N))
    np.add.at(a, (EDGES[1], EDGES[0]), 1.0)
    perm = _reference_perm(np.tanh(a @ x @ rel + x @ root + bias).ravel(), 0.5)
    attr = np.arange(EDGES.shape[1], dtype=np.float64)

    def ours(x, rel, root, bias):
        values = {"gnn.rel_kernel": rel, "gnn.root_kernel": root, "gnn.bias": bias}
        out, edges, kept_attr, _, kept, gate = functional_call(layer, values, x, EDGES, attr, BATCH)
        np.testing.assert_array_equal(kept, perm)
        np.testing.assert_array_equal(edges, _reference_edges(perm))
        np.testing.assert_array_equal(EDGES[:, kept_attr.astype(int)], perm[edges])
        return out, gate

    def theirs(x, rel, root, bias):
        gate = torch.tanh(torch.tensor(a) @ x @ rel + x @ root + bias).view(-1)[_t(perm)]
        return x[_t(perm)] * gate[:, None], gate

    compare_with_torch(ours, theirs, x, rel, root, bias, dtype=np.float64)
    assert check_gradients(_features(ours), x, rel, root, bias)
    np.testing.assert_array_equal(np.bincount(BATCH[perm]), [3, 2, 1])


@pytest.mark.parametrize("ratio", [0.0, 1.5, -0.2, True])
def test_pooling_ratio_outside_the_unit_interval_is_refused(ratio):
    for layer in (nn.TopKPooling, nn.SAGPooling):
        with pytest.raises(ValueError, match=f"{layer.__name__}: ratio must be in \\(0, 1\\]"):
            layer(ratio)


def test_pooling_names_itself_when_the_graph_is_wrong():
    layer = _built(nn.TopKPooling(0.5))
    x = lamina.tensor(randn(N, F_IN), dtype=np.float64)
    with pytest.raises(ValueError, match="TopKPooling.*out of range"):
        layer(x, np.array([[0], [N]]), None, BATCH)
    with pytest.raises(Exception, match="TopKPooling"):
        layer(lamina.tensor(randn(N, F_IN + 2), dtype=np.float64), EDGES, None, BATCH)
    with pytest.raises(Exception, match="TopKPooling"):
        layer(x, EDGES, None, BATCH[:-1])


# -- dense batches and DiffPool ----------------------------------------------------------------
def test_to_dense_batch_and_to_dense_adj_pad_each_graph():
    x = randn(N, F_IN, seed=1)
    out, mask = G.to_dense_batch(lamina.tensor(x, dtype=np.float64), BATCH, fill_value=-1.0)
    assert out.shape == (3, 5, F_IN)
    for g in range(3):
        nodes = x[BATCH == g]
        np.testing.assert_array_equal(out.numpy()[g, :nodes.shape[0]], nodes)
        np.testing.assert_array_equal(out.numpy()[g, nodes.shape[0]:], -1.0)
        np.testing.assert_array_equal(mask[g], np.arange(5) < nodes.shape[0])
    weights = np.arange(1.0, EDGES.shape[1] + 1)
    adj = G.to_dense_adj(EDGES, BATCH, weights, max_num_nodes=6).numpy()
    expected = np.zeros((3, 6, 6))
    starts = [0, 5, 9]
    for (j, i), w in zip(EDGES.T, weights):
        g = BATCH[j]
        expected[g, j - starts[g], i - starts[g]] += w
    np.testing.assert_array_equal(adj, expected)
    with pytest.raises(ValueError, match="to_dense_adj: edge 4 -> 5 joins graphs 0 and 1"):
        G.to_dense_adj(np.array([[4], [5]]), BATCH)
    with pytest.raises(ValueError, match="to_dense_batch: batch must be sorted"):
        G.to_dense_batch(x, BATCH[::-1])


def torch_diff_pool(x, adj, s, mask):
    s = torch.softmax(s, dim=-1)
    m = torch.tensor(mask, dtype=x.dtype)[..., None]
    x, s = x * m, s * m
    out = s.transpose(1, 2) @ x
    out_adj = s.transpose(1, 2) @ adj @ s
    link = torch.norm(adj - s @ s.transpose(1, 2), p=2) / adj.numel()
    entropy = (-s * torch.log(s + 1e-15)).sum(dim=-1).mean()
    return out, out_adj, link, entropy


def test_dense_diff_pool_matches_torch_with_its_auxiliary_losses():
    _, mask = G.to_dense_batch(randn(N, F_IN), BATCH)
    adj = G.to_dense_adj(EDGES, BATCH).numpy()
    arrays = (randn(3, 5, F_IN, seed=1), adj, randn(3, 5, 2, seed=2))
    compare_with_torch(lambda x, a, s: G.dense_diff_pool(x, a, s, mask), lambda x, a, s: torch_diff_pool(x, a, s, mask),
                       *arrays, dtype=np.float64)
    def flat(x, a, s):
        return lamina.functional.concat([lamina.functional.reshape(o, (-1,)) for o in G.dense_diff_pool(x, a, s, mask)])

    assert check_gradients(flat, *arrays)
    with pytest.raises(lamina.errors.ShapeError, match="dense_diff_pool"):
        G.dense_diff_pool(arrays[0], adj[:, :4], arrays[2])


def test_diff_pool_losses_vanish_for_a_hard_assignment_of_cliques():
    """Two disjoint 2-cliques (with loops), each node sent surely to its own clique's
    cluster: S S^T equals A and every assignment has zero entropy."""
    adj = np.kron(np.eye(2), np.ones((2, 2)))[None]
    logits = np.kron(np.eye(2), np.ones((2, 1)))[None] * 60.0
    _, pooled_adj, link, entropy = G.dense_diff_pool(randn(1, 4, 2), adj, logits)
    assert link.item() < 1e-12 and entropy.item() < 1e-12
    np.testing.assert_allclose(pooled_adj.numpy()[0], 4 * np.eye(2), atol=1e-12)


# -- readouts ----------------------------------------------------------------------------------
def test_set2set_matches_torch_lstm():
    layer = nn.Set2Set(F_IN, processing_steps=3).to(np.float64)
    arrays = (randn(N, F_IN, seed=1), randn(2 * F_IN, 4 * F_IN, seed=2, scale=0.5),
              randn(F_IN, 4 * F_IN, seed=3, scale=0.5), randn(4 * F_IN, seed=4))

    def ours(x, wi, wh, b):
        return functional_call(layer, {"input_kernel": wi, "recurrent_kernel": wh, "bias": b}, x, BATCH)

    def theirs(x, wi, wh, b):
        cell = torch.nn.LSTMCell(2 * F_IN, F_IN).double()
        params = {"weight_ih": wi.T, "weight_hh": wh.T, "bias_ih": b, "bias_hh": torch.zeros_like(b)}
        h = c = torch.zeros(3, F_IN, dtype=x.dtype)
        q_star = torch.zeros(3, 2 * F_IN, dtype=x.dtype)
        for _ in range(3):
            h, c = torch.func.functional_call(cell, params, (q_star, (h, c)))
            a = _torch_softmax((x * h[_t(BATCH)]).sum(-1), BATCH, 3)
            q_star = torch.cat([h, _torch_sum(a[:, None] * x, BATCH, 3)], dim=1)
        return q_star

    compare_with_torch(ours, theirs, *arrays, dtype=np.float64)
    assert check_gradients(ours, *arrays)


def test_attentional_aggregation_matches_torch():
    gate, transform = nn.Dense(1), nn.Dense(2)
    layer = nn.AttentionalAggregation(gate, transform)
    layer(lamina.tensor(randn(N, F_IN), dtype=np.float64), BATCH)
    layer.to(np.float64)
    arrays = (randn(N, F_IN, seed=1), randn(F_IN, 1, seed=2), randn(1, seed=3), randn(F_IN, 2, seed=4),
              randn(2, seed=5))

    def ours(x, gw, gb, tw, tb):
        values = {"gate_nn.weight": gw, "gate_nn.bias": gb, "nn.weight": tw, "nn.bias": tb}
        return functional_call(layer, values, x, BATCH)

    def theirs(x, gw, gb, tw, tb):
        a = _torch_softmax(x @ gw + gb, BATCH, 3)
        return _torch_sum(a * (x @ tw + tb), BATCH, 3)

    # the gate's bias shifts every score alike: its gradient is 0 up to rounding
    compare_with_torch(ours, theirs, *arrays, dtype=np.float64, grad=[True, True, False, True, True])
    assert check_gradients(ours, *arrays)
    with pytest.raises(lamina.errors.ShapeError, match="AttentionalAggregation: gate_nn gave shape"):
        nn.AttentionalAggregation(nn.Dense(2))(randn(N, F_IN), BATCH)


def test_readouts_are_invariant_to_node_order_within_graphs():
    x = randn(N, F_IN, seed=9)
    perm = np.concatenate([np.random.default_rng(1).permutation(5), 5 + np.random.default_rng(2).permutation(4), [9]])
    for layer in (nn.Set2Set(F_IN, 2), nn.AttentionalAggregation(nn.Dense(1))):
        first = layer(lamina.tensor(x, dtype=np.float64), BATCH).numpy()
        np.testing.assert_allclose(layer(lamina.tensor(x[perm], dtype=np.float64), BATCH).numpy(), first,
                                   rtol=1e-6, atol=1e-7)


def test_layers_rebuild_from_their_config():
    layers = [nn.TopKPooling(0.3, multiplier=2.0), nn.SAGPooling(None, min_score=0.2), nn.Set2Set(4, 2),
              nn.AttentionalAggregation(nn.Dense(1), nn.Dense(3)), nn.GATv2Conv(2, heads=3, share_weights=True),
              nn.TransformerConv(2, heads=2, beta=True), nn.ChebConv(3, K=2, lambda_max=1.5),
              nn.GraphConv(2, aggr="max"), nn.APPNP(4, 0.2), nn.SGConv(2, K=3, cached=True), nn.GCN2Conv(0.1, 0.5, 3)]
    for layer in layers:
        config = nn.layer_to_config(layer)
        rebuilt = nn.layer_from_config(config)
        assert type(rebuilt) is type(layer) and nn.layer_to_config(rebuilt) == config
