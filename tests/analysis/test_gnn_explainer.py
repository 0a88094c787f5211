"""GNNExplainer's masked forward and loss terms against a float64 torch rewrite, the
computation subgraph, the metrics against hand computations, and the errors."""

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch, randn
from lamina import functional as F
from lamina import nn
from lamina.analysis import (
    PGExplainer,
    computation_subgraph,
    edge_gradient_saliency,
    explanation_auc,
    fidelity,
    gnn_explainer,
    mask_penalty,
    masked_log_probability,
    message_passing_depth,
)
from lamina.analysis.graph_masks import reverse_edges
from lamina.data import Graph, to_undirected
from lamina.errors import ShapeError

# an undirected graph of 7 nodes (both directions of each pair), a triangle and a tail
PAIRS = np.array([[0, 0, 1, 2, 3, 4, 5], [1, 2, 2, 3, 4, 5, 6]])
EDGES, _ = to_undirected(PAIRS, 7)
N, E, F_IN, CLASSES = 7, EDGES.shape[1], 3, 3


class TinyGCN(nn.Module):
    """Two GCN layers with tanh between (smooth for the gradient check), edge weights passed on."""

    def __init__(self):
        super().__init__()
        self.first, self.second = nn.GCNConv(4), nn.GCNConv(CLASSES)

    def forward(self, x, edge_index, edge_weight=None):
        return self.second(F.tanh(self.first(x, edge_index, edge_weight)), edge_index, edge_weight)


def _tiny_model(dtype=np.float64):
    lamina.manual_seed(0)
    model = TinyGCN()
    model(lamina.tensor(randn(N, F_IN, seed=1), dtype=np.float32), EDGES)
    for p, seed in zip(model.parameters(), range(4)):      # biases away from zero
        p.data = randn(*p.shape, seed=10 + seed, scale=0.8).astype(p.dtype)
    return model.to(dtype)


def torch_masked_loss(model, x, edge_logits, feature_logits, target, center, coefs, reverse):
    """The GNNExplainer objective written from the formulas: dense D^-1/2 (A_m + I) D^-1/2 with
    A_m[i, j] the symmetric mask of the edge j -> i, the plain entropy -m log m - (1-m) log(1-m)."""
    w1, b1, w2, b2 = (torch.tensor(p.numpy()) for p in model.parameters())
    m = torch.sigmoid(edge_logits)
    m = 0.5 * (m + m[torch.from_numpy(reverse)])
    a = torch.zeros(N, N, dtype=torch.float64).index_put((torch.from_numpy(EDGES[1]), torch.from_numpy(EDGES[0])),
                                                        m, accumulate=True) + torch.eye(N, dtype=torch.float64)
    inv_sqrt = a.sum(dim=1) ** -0.5
    p = inv_sqrt[:, None] * a * inv_sqrt[None, :]
    xm = x * torch.sigmoid(feature_logits)
    out = p @ (torch.tanh(p @ (xm @ w1) + b1) @ w2) + b2
    log_p = torch.log_softmax(out[center], dim=-1)[target]

    def penalty(logits, size, entropy, reduce):
        s = torch.sigmoid(logits)
        h = -(s * torch.log(s) + (1 - s) * torch.log(1 - s))
        return size * reduce(s) + entropy * h.mean()

    size, entropy, feature_size, feature_entropy = coefs
    return (-log_p + penalty(edge_logits, size, entropy, torch.sum)
            + penalty(feature_logits, feature_size, feature_entropy, torch.mean))


COEFS = (0.05, 0.7, 0.3, 0.2)


def _ours(model, target=2, center=3):
    reverse = reverse_edges(EDGES)
    x = lamina.tensor(randn(N, F_IN, seed=1), dtype=np.float64)

    def loss(edge_logits, feature_logits):
        log_p = masked_log_probability(model, x, EDGES, edge_logits, target, center, feature_logits, reverse)
        return (-log_p + mask_penalty(edge_logits, COEFS[0], COEFS[1])
                + mask_penalty(feature_logits, COEFS[2], COEFS[3], size="mean"))
    return loss


def test_objective_and_mask_gradient_match_a_torch_rewrite():
    model = _tiny_model()
    reverse = reverse_edges(EDGES)
    x = torch.tensor(randn(N, F_IN, seed=1))
    arrays = (randn(E, seed=2, scale=1.5), randn(F_IN, seed=3))
    compare_with_torch(_ours(model), lambda z, u: torch_masked_loss(model, x, z, u, 2, 3, COEFS, reverse), *arrays,
                       dtype=np.float64)
    assert check_gradients(_ours(model), *arrays)


def test_reverse_edges_pairs_each_edge_with_its_reverse():
    reverse = reverse_edges(EDGES)
    np.testing.assert_array_equal(EDGES[:, reverse], EDGES[::-1])
    one_way = np.array([[0, 1], [1, 2]])
    np.testing.assert_array_equal(reverse_edges(one_way), [0, 1])        # no reverse: itself


def test_computation_subgraph_gives_the_node_the_same_output():
    model = _tiny_model()
    x = randn(N, F_IN, seed=1)
    full = model(lamina.tensor(x, dtype=np.float64), EDGES).numpy()
    assert message_passing_depth(model) == 2
    for node in range(N):
        sub = computation_subgraph(EDGES, N, node, 2)
        out = model(lamina.tensor(x[sub.nodes], dtype=np.float64), sub.edge_index).numpy()
        np.testing.assert_allclose(out[sub.center], full[node], rtol=1e-12, atol=1e-12)
    sub = computation_subgraph(EDGES, N, 6, 1)        # the edges into nodes 6 and 5
    np.testing.assert_array_equal(np.sort(sub.nodes), [4, 5, 6])
    assert sorted(map(tuple, EDGES[:, sub.edges].T)) == [(4, 5), (5, 6), (6, 5)]


def test_masks_near_one_or_zero_are_the_graph_with_or_without_the_edges():
    model = _tiny_model()
    x = lamina.tensor(randn(N, F_IN, seed=1), dtype=np.float64)
    full = F.log_softmax(model(x, EDGES)[3], axis=-1).numpy()[1]
    on = masked_log_probability(model, x, EDGES, lamina.tensor(np.full(E, 40.0), dtype=np.float64), 1, 3)
    np.testing.assert_allclose(on.numpy(), full, rtol=1e-12)
    keep = EDGES[0] != 2                          # every edge out of node 2 masked off
    without = F.log_softmax(model(x, EDGES[:, keep])[3], axis=-1).numpy()[1]
    off = masked_log_probability(model, x, EDGES, lamina.tensor(np.where(keep, 40.0, -40.0), dtype=np.float64), 1, 3)
    np.testing.assert_allclose(off.numpy(), without, rtol=1e-12)


def test_feature_mask_finds_the_one_feature_the_model_reads():
    """A GCN whose weight reads feature 0 only: the learned feature mask keeps it, drops the rest."""
    model = _tiny_model(np.float32)
    w = np.zeros((F_IN, 4), dtype=np.float32)
    w[0] = [2.0, -1.5, 1.0, 0.5]
    model.first.weight.data = w
    graph = Graph(randn(N, F_IN, seed=4).astype(np.float32) + 1.0, EDGES)
    explanation = gnn_explainer(model, graph, node=2, epochs=150, lr=0.05)
    mask = explanation.feature_mask
    assert mask[0] > 0.5 and mask[0] > mask[1:].max() + 0.3, mask   # measured: [0.97, 0.015, 0.016], seeds 0-2
    assert explanation.losses[-1] < explanation.losses[0]
    assert explanation.edge_mask.shape == (E,) and explanation.target == int(
        model(lamina.tensor(graph.x), EDGES).numpy()[2].argmax())


def test_explanation_auc_matches_a_hand_count():
    scores = np.array([0.9, 0.2, 0.7, 0.4, 0.1])
    truth = np.array([True, False, True, False, False])
    assert explanation_auc(scores, truth) == 1.0
    # over edges 1..4: positives {0.7}, negatives {0.2, 0.4, 0.1}: all three below
    assert explanation_auc(scores, truth, edges=[np.array([1, 2]), np.array([3, 4])]) == 1.0
    truth = np.array([True, True, False, False, True])   # pairs (pos > neg): 0.9 > both, 0.2 > none, 0.1 > none
    assert explanation_auc(scores, truth) == pytest.approx(2 / 6)


def test_fidelity_is_the_drop_in_probability_on_removing_or_keeping_the_top_edges():
    model = _tiny_model()
    graph = Graph(randn(N, F_IN, seed=1), EDGES)
    scores = np.linspace(0.0, 1.0, E)                       # the last two edges are the top two
    plus, minus = fidelity(model, graph, scores, node=3, k=2)

    def p(edges, c=None):
        probs = F.softmax(model(lamina.tensor(graph.x, dtype=np.float64), edges)[3], axis=-1).numpy()
        return probs if c is None else probs[c]

    c = int(p(EDGES).argmax())
    assert plus == pytest.approx(p(EDGES, c) - p(EDGES[:, :-2], c), rel=1e-12)
    assert minus == pytest.approx(p(EDGES, c) - p(EDGES[:, -2:], c), rel=1e-12)


def test_gradient_saliency_is_zero_outside_the_computation_subgraph():
    model = _tiny_model(np.float32)
    graph = Graph(randn(N, F_IN, seed=1).astype(np.float32), EDGES)
    scores = edge_gradient_saliency(model, graph, node=6)
    sub = computation_subgraph(EDGES, N, 6, 2)
    outside = np.setdiff1d(np.arange(E), sub.edges)
    assert np.all(scores[outside] == 0) and np.all(scores[sub.edges] >= 0) and scores.max() > 0


class NoEdgeWeights(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.GCNConv(2)

    def forward(self, x, edge_index):
        return self.conv(x, edge_index)


class IgnoresEdgeWeights(NoEdgeWeights):
    def forward(self, x, edge_index, edge_weight=None):
        return self.conv(x, edge_index)


def test_clear_errors():
    model = _tiny_model(np.float32)
    graph = Graph(randn(N, F_IN, seed=1).astype(np.float32), EDGES)
    with pytest.raises(IndexError, match=r"gnn_explainer: node 7 is out of range for a graph of 7 nodes"):
        gnn_explainer(model, graph, node=7)
    with pytest.raises(ShapeError, match=r"fidelity: edge_mask of shape \(5,\) for a graph of 14 edges"):
        fidelity(model, graph, np.ones(5), node=1)
    with pytest.raises(ShapeError, match=r"explanation_auc: edge_mask of shape \(3,\) for a graph of 14 edges"):
        explanation_auc(np.ones(3), np.zeros(E, dtype=bool))
    with pytest.raises(TypeError, match=r"gnn_explainer: NoEdgeWeights.forward\(x, edge_index\) takes no edge_weight"):
        gnn_explainer(NoEdgeWeights(), graph, node=1)
    with pytest.raises(TypeError, match=r"PGExplainer.fit: NoEdgeWeights.*takes no edge_weight"):
        PGExplainer().fit(NoEdgeWeights(), graph, nodes=[1])
    ignoring = IgnoresEdgeWeights()
    ignoring(lamina.tensor(graph.x), EDGES)
    with pytest.raises(ValueError, match=r"gnn_explainer: the prediction does not depend on the edge weights"):
        gnn_explainer(ignoring, graph, node=1, epochs=2)
    with pytest.raises(ValueError, match=r"explanation_auc: the 2 edges scored are all non-motif edges"):
        explanation_auc(np.ones(E), np.zeros(E, dtype=bool), edges=np.array([0, 1]))
    with pytest.raises(ShapeError, match=r"gnn_explainer: the model returned shape \(7, 3\) for one graph"):
        gnn_explainer(model, graph, node=None, epochs=1)
    with pytest.raises(RuntimeError, match=r"PGExplainer.explain: the explainer is not trained"):
        PGExplainer().explain(model, graph, node=1)


class GraphReadout(nn.Module):
    """A graph classifier: TinyGCN's node scores summed over the nodes, (1, classes)."""

    def __init__(self):
        super().__init__()
        self.gcn = TinyGCN()

    def forward(self, x, edge_index, edge_weight=None):
        return F.sum(self.gcn(x, edge_index, edge_weight), axis=0, keepdims=True)


def _numpy_edge_scores(explainer, z, edge_index, node=None):
    """sigmoid(MLP([z_j ; z_i (; z_v)])) in NumPy from the MLP's weights, then (m + m_reverse) / 2."""
    z = (z - explainer.shift) / explainer.scale
    parts = [z[edge_index[0]], z[edge_index[1]]] + ([np.repeat(z[node][None], edge_index.shape[1], 0)]
                                                    if node is not None else [])
    first, second = explainer.mlp
    hidden = np.maximum(np.concatenate(parts, axis=1) @ first.weight.numpy() + first.bias.numpy(), 0.0)
    m = 1.0 / (1.0 + np.exp(-(hidden @ second.weight.numpy() + second.bias.numpy())[:, 0]))
    return 0.5 * (m + m[reverse_edges(edge_index)])


def test_pg_explainer_on_graphs_is_one_forward_pass_of_its_mlp():
    from lamina.analysis import node_embeddings

    lamina.manual_seed(0)
    model = GraphReadout()
    graphs = [Graph(randn(N, F_IN, seed=k).astype(np.float32), EDGES) for k in range(4)]
    model(lamina.tensor(graphs[0].x), EDGES)
    explainer = PGExplainer(hidden=8, seed=0)
    losses = explainer.fit(model, graphs, epochs=20, lr=0.01)
    assert len(losses) == 20 and losses[-1] < losses[0]
    explanation = explainer.explain(model, graphs[1])
    np.testing.assert_array_equal(explanation.edges, np.arange(E))
    z = node_embeddings(model, graphs[1].x, EDGES)
    np.testing.assert_allclose(explanation.edge_mask, _numpy_edge_scores(explainer, z, EDGES), rtol=1e-5)
    assert explanation.target == int(model(lamina.tensor(graphs[1].x), EDGES).numpy().argmax())
    with pytest.raises(ValueError, match=r"PGExplainer.explain: the explainer was trained on graph predictions"):
        explainer.explain(model, graphs[1], node=2)


def test_pg_explainer_on_nodes_scores_the_computation_subgraph():
    from lamina.analysis import node_embeddings

    model = _tiny_model(np.float32)
    graph = Graph(randn(N, F_IN, seed=1).astype(np.float32), EDGES)
    explainer = PGExplainer(hidden=8, seed=0)
    explainer.fit(model, graph, nodes=[0, 3, 5], epochs=10)
    explanation = explainer.explain(model, graph, 6)
    sub = computation_subgraph(EDGES, N, 6, 2)
    np.testing.assert_array_equal(explanation.edges, sub.edges)
    outside = np.setdiff1d(np.arange(E), sub.edges)
    assert np.all(explanation.edge_mask[outside] == 0)
    z = node_embeddings(model, graph.x, EDGES)[sub.nodes]
    np.testing.assert_allclose(explanation.edge_mask[sub.edges],
                               _numpy_edge_scores(explainer, z, sub.edge_index, sub.center), rtol=1e-5)


def test_gnn_explainer_on_a_graph_scores_every_edge():
    lamina.manual_seed(0)
    model = GraphReadout()
    graph = Graph(randn(N, F_IN, seed=2).astype(np.float32), EDGES)
    model(lamina.tensor(graph.x), EDGES)
    explanation = gnn_explainer(model, graph, epochs=30, lr=0.05)
    np.testing.assert_array_equal(explanation.edges, np.arange(E))
    assert explanation.node is None and np.all((explanation.edge_mask > 0) & (explanation.edge_mask < 1))
    assert explanation.losses[-1] < explanation.losses[0]
    top = explanation.top_edges(3)
    rest = np.setdiff1d(np.arange(E), top)
    assert top.shape == (3,) and explanation.edge_mask[top].min() >= explanation.edge_mask[rest].max()
    assert list(explanation.edge_mask[top]) == sorted(explanation.edge_mask[top], reverse=True)


def _torch_tiny_gcn(model, x, edges, weights):
    """TinyGCN on any graph, dense: D^-1/2 (A_w + I) D^-1/2, A_w[i, j] the weight of edge j -> i."""
    w1, b1, w2, b2 = (torch.tensor(p.numpy()) for p in model.parameters())
    n = x.shape[0]
    a = torch.zeros(n, n, dtype=torch.float64).index_put((torch.from_numpy(edges[1]), torch.from_numpy(edges[0])),
                                                        weights, accumulate=True) + torch.eye(n, dtype=torch.float64)
    inv_sqrt = a.sum(dim=1) ** -0.5
    p = inv_sqrt[:, None] * a * inv_sqrt[None, :]
    return p @ (torch.tanh(p @ (x @ w1) + b1) @ w2) + b2


def test_pg_objective_over_joined_node_instances_matches_torch_instance_by_instance():
    """The nodes' computation subgraphs joined into one graph give the sum over instances of
    -log p + size_coef sum e + entropy_coef mean H(e), e = sigmoid(s) made symmetric."""
    model = _tiny_model()
    x = randn(N, F_IN, seed=1)
    graph = Graph(x, EDGES)
    explainer = PGExplainer(hidden=4, size_coef=0.03, entropy_coef=0.6)
    nodes = [1, 5]
    [(xb, edges, centers, _, targets, share)] = explainer._batches(model, [graph], nodes, 2, "test")
    reverse = reverse_edges(edges)

    def ours(s):
        return explainer._loss(model, xb, edges, centers, s, targets, share, reverse, "test")

    def theirs(s):
        """Instance by instance, each on its own subgraph (the joined graph keeps their order)."""
        start, loss = 0, 0.0
        for v, c in zip(nodes, targets):
            sub = computation_subgraph(EDGES, N, v, 2)
            e = sub.edges.shape[0]
            si = s[start:start + e]
            m = torch.sigmoid(si)
            weights = 0.5 * (m + m[torch.from_numpy(reverse_edges(sub.edge_index))])
            out = _torch_tiny_gcn(model, torch.tensor(x[sub.nodes]), sub.edge_index, weights)
            h = -(m * torch.log(m) + (1 - m) * torch.log(1 - m))
            loss = loss - torch.log_softmax(out[sub.center], dim=-1)[int(c)] + 0.03 * m.sum() + 0.6 * h.mean()
            start += e
        return loss

    compare_with_torch(ours, theirs, randn(edges.shape[1], seed=5, scale=2.0), dtype=np.float64)
