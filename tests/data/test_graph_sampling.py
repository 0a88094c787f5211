"""Mini-batches of one large graph: neighbour sampling, Cluster-GCN and GraphSAINT."""

import itertools

import numpy as np
import pytest

import lamina
from lamina import functional as F
from lamina import nn, optim
from lamina.data import (
    ClusterLoader,
    Graph,
    GraphSAINTEdgeSampler,
    GraphSAINTNodeSampler,
    GraphSAINTRandomWalkSampler,
    NeighborLoader,
    induced_subgraph,
    partition_graph,
    to_undirected,
)


def _random_graph(n=40, e=160, seed=0):
    rng = np.random.default_rng(seed)
    edges = rng.integers(0, n, (2, e))
    return Graph(x=rng.standard_normal((n, 3)), edge_index=edges, y=np.arange(n) % 3)


def _block_model(rng, sizes, p_in, p_out, signal, width=8):
    labels = np.repeat(np.arange(len(sizes)), sizes)
    n = labels.shape[0]
    p = np.where(labels[:, None] == labels[None, :], p_in, p_out)
    edges, _ = to_undirected(np.stack(np.nonzero(np.triu(rng.random((n, n)) < p, k=1))), n)
    means = rng.standard_normal((len(sizes), width)) * signal
    return Graph(x=(means[labels] + rng.standard_normal((n, width))).astype(np.float32), edge_index=edges, y=labels)


def test_neighbor_loader_subgraphs_are_consistent_samples():
    graph = _random_graph()
    fanouts = [3, 2]
    loader = NeighborLoader(graph, fanouts, batch_size=6, shuffle=True, seed=1)
    in_degree = np.bincount(graph.edge_index[1], minlength=graph.num_nodes)
    original = {tuple(col) for col in graph.edge_index.T}
    batches = list(loader)
    assert len(batches) == len(loader) == 7
    seen = np.concatenate([b.n_id[:b.batch_size] for b in batches])
    assert np.array_equal(np.sort(seen), np.arange(graph.num_nodes))             # every node a seed once
    for b in batches:
        assert np.unique(b.n_id).shape[0] == b.num_nodes                           # relabelling one-to-one
        globally = b.n_id[b.edge_index]
        assert np.array_equal(globally, graph.edge_index[:, b.e_id])             # relabelling consistent
        assert all(tuple(col) in original for col in globally.T)
        assert np.unique(b.e_id).shape[0] == b.e_id.shape[0]                     # without replacement
        assert np.array_equal(b.x, graph.x[b.n_id]) and np.array_equal(b.y, graph.y[b.n_id])
        # hop 1 samples min(fanout, degree) in-edges of every seed; hop 2 of every node found in hop 1
        seeds, added_1, _ = b.num_sampled_nodes
        assert seeds == b.batch_size and sum(b.num_sampled_nodes) == b.num_nodes
        assert sum(b.num_sampled_edges) == b.e_id.shape[0]
        hop_1 = b.n_id[seeds:seeds + added_1]
        targets = np.bincount(b.edge_index[1], minlength=b.num_nodes)
        for local, node in enumerate(b.n_id[:b.batch_size]):
            assert targets[local] == min(fanouts[0], in_degree[node])
        for node in hop_1:
            local = int(np.flatnonzero(b.n_id == node)[0])
            assert targets[local] == min(fanouts[1], in_degree[node])


def test_neighbor_loader_with_every_neighbour_matches_full_graph_inference():
    lamina.manual_seed(0)
    graph = _random_graph(n=30, e=90, seed=3)
    first, second = nn.SAGEConv(8), nn.SAGEConv(4, aggr="max")

    def model(x, edges):
        return second(F.relu(first(x, edges)), edges)

    full = model(lamina.tensor(graph.x), graph.edge_index).numpy()
    for b in NeighborLoader(graph, [-1, -1], batch_size=7, seed=0):
        out = model(lamina.tensor(b.x), b.edge_index).numpy()[:b.batch_size]
        assert np.array_equal(out, full[b.n_id[:b.batch_size]])


def test_neighbor_loader_errors():
    graph = _random_graph()
    with pytest.raises(ValueError, match="num_neighbors"):
        NeighborLoader(graph, [])
    with pytest.raises(ValueError, match=r"num_neighbors\[1\]"):
        NeighborLoader(graph, [5, 0])
    with pytest.raises(ValueError, match="3 fan-outs but the model has 2"):
        NeighborLoader(graph, [5, 5, 5]).check_layers(2)
    with pytest.raises(ValueError, match="input_nodes holds node 99, out of range"):
        NeighborLoader(graph, [5], input_nodes=[0, 99])
    with pytest.raises(ValueError, match="distinct"):
        NeighborLoader(graph, [5]).sample([1, 1])
    with pytest.raises(ValueError, match=r"expected ids in \[0, 2\)"):
        ClusterLoader(graph, 2, parts=np.arange(graph.num_nodes) % 3)


def test_cluster_partitions_cover_every_node_once_and_batches_keep_edges_between_clusters():
    graph = _random_graph(n=50, e=200, seed=2)
    parts = partition_graph(graph.edge_index, graph.num_nodes, 5, seed=0)
    assert parts.shape == (50,) and set(parts) == set(range(5))
    assert np.bincount(parts).max() == 10                                        # ceil(50 / 5)
    loader = ClusterLoader(graph, 5, clusters_per_batch=2, shuffle=True, seed=0)
    batches = list(loader)
    assert len(batches) == 3
    covered = np.concatenate([b.n_id for b in batches])
    assert np.array_equal(np.sort(covered), np.arange(50))
    for b in batches:
        members = set(b.n_id)
        inside = [e for e in range(graph.num_edges) if set(graph.edge_index[:, e]) <= members]
        assert np.array_equal(b.e_id, inside)
        assert np.array_equal(b.n_id[b.edge_index], graph.edge_index[:, b.e_id])


def test_bfs_partition_keeps_communities_together():
    rng = np.random.default_rng(0)
    graph = _block_model(rng, (40, 40), p_in=0.3, p_out=0.0, signal=0.0)
    parts = partition_graph(graph.edge_index, graph.num_nodes, 2, seed=0)
    assert all(np.unique(parts[graph.y == c]).shape[0] == 1 for c in (0, 1))


def _tiny_graph():
    edges = np.array([[0, 1, 1, 2, 2, 3, 3, 4, 0, 2],
                      [1, 0, 2, 1, 3, 2, 4, 3, 2, 0]])
    return Graph(x=np.zeros((5, 1)), edge_index=edges)


def _exact_inclusion(graph, miss, budget):
    """P(v in sample) and P(u and v in sample) for samples of ``budget`` independent draws,
    ``miss(S)`` the probability that one draw adds no node of the set S (inclusion-exclusion)."""
    p_node = np.array([1 - miss({v}) ** budget for v in range(graph.num_nodes)])
    p_edge = np.array([1 - miss({u}) ** budget - miss({v}) ** budget + miss({u, v}) ** budget
                       for u, v in graph.edge_index.T])
    return p_node, p_edge


@pytest.mark.parametrize("kind", ["node", "edge"])
def test_graphsaint_coefficients_match_their_definitions(kind):
    graph, budget, samples = _tiny_graph(), 2, 6000
    if kind == "node":
        sampler = GraphSAINTNodeSampler(graph, budget, seed=0)
        q = sampler.node_probabilities
        assert np.allclose(q, np.bincount(graph.edge_index[0]) / graph.num_edges)

        def miss(nodes):
            return 1 - sum(q[v] for v in nodes)
    else:
        sampler = GraphSAINTEdgeSampler(graph, budget, seed=0)
        q = sampler.edge_probabilities
        deg = np.bincount(graph.edge_index[1])
        by_hand = 1 / deg[graph.edge_index[0]] + 1 / deg[graph.edge_index[1]]
        assert np.allclose(q, by_hand / by_hand.sum())

        def miss(nodes):
            return 1 - sum(q[e] for e in range(graph.num_edges) if set(graph.edge_index[:, e]) & nodes)
    p_node, p_edge = _exact_inclusion(graph, miss, budget)
    loss_norm, edge_norm = sampler.coefficients(samples)
    expected_loss = 1 / (graph.num_nodes * p_node)
    expected_edge = p_node[graph.edge_index[1]] / p_edge               # 1 / alpha_uv = p_v / p_uv
    assert np.allclose(loss_norm, expected_loss, rtol=0.08), (loss_norm, expected_loss)
    assert np.allclose(edge_norm, expected_edge, rtol=0.08), (edge_norm, expected_edge)


def test_graphsaint_random_walk_inclusion_by_enumerating_walks():
    graph = _tiny_graph()
    sampler = GraphSAINTRandomWalkSampler(graph, budget=1, walk_length=2, seed=0)
    out = np.bincount(graph.edge_index[0])
    p_node = np.zeros(graph.num_nodes)
    for root, step_1, step_2 in itertools.product(range(5), repeat=3):
        hop_1 = np.sum((graph.edge_index[0] == root) & (graph.edge_index[1] == step_1)) / out[root]
        hop_2 = np.sum((graph.edge_index[0] == step_1) & (graph.edge_index[1] == step_2)) / out[step_1]
        for v in {root, step_1, step_2}:
            p_node[v] += hop_1 * hop_2 / 5
    loss_norm, _ = sampler.coefficients(6000)
    assert np.allclose(loss_norm, 1 / (5 * p_node), rtol=0.08)


def test_graphsaint_batches_carry_their_coefficients():
    graph = _random_graph()
    sampler = GraphSAINTNodeSampler(graph, budget=15, num_steps=3, sample_coverage=20, seed=0)
    batches = list(sampler)
    assert len(batches) == 3
    for b in batches:
        assert np.array_equal(b.loss_norm, sampler.loss_norm[b.n_id])
        assert np.array_equal(b.edge_norm, sampler.edge_norm[b.e_id])
        assert np.array_equal(b.n_id[b.edge_index], graph.edge_index[:, b.e_id])
        assert np.array_equal(b.e_id, induced_subgraph(graph, b.n_id).e_id)


class TwoLayerSAGE(nn.Module):
    def __init__(self):
        super().__init__()
        self.first, self.second = nn.SAGEConv(16), nn.SAGEConv(4)

    def forward(self, x, edges):
        return self.second(F.relu(self.first(x, edges)), edges)


def _test_accuracy(model, graph, test):
    return float((model(lamina.tensor(graph.x), graph.edge_index).numpy().argmax(1)[test] == graph.y[test]).mean())


def test_sage_trained_with_neighbor_sampling_nears_full_batch_training():
    rng = np.random.default_rng(0)
    graph = _block_model(rng, (500,) * 4, p_in=0.02, p_out=0.002, signal=0.3)
    train = rng.random(graph.num_nodes) < 0.5
    labels = graph.y

    lamina.manual_seed(0)
    full = TwoLayerSAGE()
    x = lamina.tensor(graph.x)
    full(x, graph.edge_index)
    opt = optim.Adam(full.parameters(), lr=0.02)
    for _ in range(40):
        opt.zero_grad()
        F.categorical_cross_entropy(full(x, graph.edge_index)[train], labels[train], from_logits=True).backward()
        opt.step()

    lamina.manual_seed(0)
    sampled = TwoLayerSAGE()
    loader = NeighborLoader(graph, [10, 5], batch_size=250, input_nodes=train, shuffle=True, seed=0)
    loader.check_layers(2)
    sampled(x, graph.edge_index)
    opt = optim.Adam(sampled.parameters(), lr=0.02)
    for _ in range(10):
        for b in loader:
            opt.zero_grad()
            logits = sampled(lamina.tensor(b.x), b.edge_index)[:b.batch_size]
            F.categorical_cross_entropy(logits, b.y[:b.batch_size], from_logits=True).backward()
            opt.step()
    full_acc, sampled_acc = _test_accuracy(full, graph, ~train), _test_accuracy(sampled, graph, ~train)
    print(f"test accuracy: full batch {full_acc:.3f}, neighbour sampling {sampled_acc:.3f}")
    assert full_acc > 0.8 and sampled_acc > full_acc - 0.05, (full_acc, sampled_acc)


class TwoLayerGraphConv(nn.Module):
    """Sum aggregation with edge weights, so GraphSAINT's edge_norm can rescale messages."""

    def __init__(self):
        super().__init__()
        self.first, self.second = nn.GraphConv(16), nn.GraphConv(4)

    def forward(self, x, edges, weight):
        return self.second(F.relu(self.first(x, edges, weight)), edges, weight)


def test_cluster_gcn_and_graphsaint_batches_train_a_model():
    rng = np.random.default_rng(1)
    graph = _block_model(rng, (300,) * 4, p_in=0.03, p_out=0.003, signal=0.3)
    train = rng.random(graph.num_nodes) < 0.5
    mean_weight = 1.0 / np.bincount(graph.edge_index[1], minlength=graph.num_nodes)[graph.edge_index[1]]
    full_weight = lamina.tensor(mean_weight, dtype=np.float32)
    accuracies = {}
    for kind in ("cluster", "saint"):
        lamina.manual_seed(0)
        model = TwoLayerGraphConv()
        model(lamina.tensor(graph.x), graph.edge_index, full_weight)
        opt = optim.Adam(model.parameters(), lr=0.02)
        if kind == "cluster":
            batches = ClusterLoader(graph, 12, clusters_per_batch=3, shuffle=True, seed=0)
        else:
            batches = GraphSAINTRandomWalkSampler(graph, budget=150, walk_length=3, num_steps=4, sample_coverage=50,
                                                  seed=0)
        for _ in range(25):
            for b in batches:
                weight = mean_weight[b.e_id] * (b.edge_norm if kind == "saint" else 1.0)
                per_node = F.categorical_cross_entropy(model(lamina.tensor(b.x), b.edge_index,
                                                             lamina.tensor(weight, dtype=np.float32)),
                                                       b.y, from_logits=True, reduction="none")
                node_weight = train[b.n_id] * (b.loss_norm if kind == "saint" else 1.0 / max(train[b.n_id].sum(), 1))
                opt.zero_grad()
                (per_node * lamina.tensor(node_weight, dtype=np.float32)).sum().backward()
                opt.step()
        predicted = model(lamina.tensor(graph.x), graph.edge_index, full_weight).numpy().argmax(1)
        accuracies[kind] = float((predicted == graph.y)[~train].mean())
    print("test accuracy:", accuracies)
    assert min(accuracies.values()) > 0.8, accuracies
