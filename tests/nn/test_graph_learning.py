"""Graph layers learn what node-wise models cannot: seeded, small and fast."""

import numpy as np

import lamina
from lamina import functional as F
from lamina import nn, optim
from lamina.data import DataLoader, Graph, collate_graphs, to_undirected


def _block_model(rng, sizes=(50, 50, 50), p_in=0.12, p_out=0.01, signal=0.35, width=8):
    """A stochastic block model: dense inside communities, sparse across; each node's
    features are its community's mean (small) plus unit noise."""
    labels = np.repeat(np.arange(len(sizes)), sizes)
    n = labels.shape[0]
    p = np.where(labels[:, None] == labels[None, :], p_in, p_out)
    upper = np.triu(rng.random((n, n)) < p, k=1)
    edges, _ = to_undirected(np.stack(np.nonzero(upper)), n)
    means = rng.standard_normal((len(sizes), width)) * signal
    return means[labels] + rng.standard_normal((n, width)), edges, labels


class TwoLayerGCN(nn.Module):
    def __init__(self):
        super().__init__()
        self.first, self.second = nn.GCNConv(16), nn.GCNConv(3)

    def forward(self, x, edges):
        return self.second(F.relu(self.first(x, edges)), edges)


def _accuracy_after_training(model, x, edges, labels, train, steps=80):
    x = lamina.tensor(x, dtype=np.float32)
    call = (lambda: model(x, edges)) if edges is not None else (lambda: model(x))
    call()
    opt = optim.Adam(model.parameters(), lr=0.02)
    for _ in range(steps):
        opt.zero_grad()
        loss = F.categorical_cross_entropy(call()[train], labels[train], from_logits=True)
        loss.backward()
        opt.step()
    predicted = call().numpy().argmax(axis=1)
    return float((predicted[~train] == labels[~train]).mean())


def test_gcn_beats_an_mlp_on_a_block_model():
    lamina.manual_seed(0)
    rng = np.random.default_rng(0)
    x, edges, labels = _block_model(rng)
    train = rng.random(labels.shape[0]) < 0.3
    gcn = _accuracy_after_training(TwoLayerGCN(), x, edges, labels, train)
    mlp = _accuracy_after_training(nn.Sequential(nn.Dense(16, activation="relu"), nn.Dense(3)), x, None, labels,
                                   train)
    assert gcn > 0.85 and gcn > mlp + 0.25, (gcn, mlp)


def _cycle_or_path(n, cycle):
    nodes = np.arange(n)
    ends = np.stack([nodes[:-1], nodes[1:]])
    if cycle:
        ends = np.concatenate([ends, [[n - 1], [0]]], axis=1)
    edges, _ = to_undirected(ends, n)
    return Graph(np.ones((n, 1), dtype=np.float32), edges, y=int(cycle))


class GIN(nn.Module):
    """One GIN layer, max pooling and a linear head. tanh rather than ReLU: the ones that
    fall with the degree (the detectors of path ends) must not start dead."""

    def __init__(self):
        super().__init__()
        self.conv = nn.GINConv(nn.Sequential(nn.Dense(16, activation="tanh"), nn.Dense(16, activation="tanh")))
        self.head = nn.Dense(2)

    def forward(self, batch):
        h = self.conv(batch.x, batch.edge_index)
        return self.head(nn.global_max_pool(h, batch.batch, batch.num_graphs))


def test_gin_tells_cycles_from_paths_with_a_data_loader():
    """Every node of a cycle has degree 2; a path has two ends of degree 1: the summed
    neighbourhoods tell them apart after one layer, and max pooling finds the ends
    whatever the length."""
    lamina.manual_seed(0)
    graphs = [_cycle_or_path(n, cycle) for n in range(4, 12) for cycle in (False, True)] * 3
    model = GIN()
    loader = DataLoader(graphs, batch_size=16, shuffle=True, seed=0, collate_fn=collate_graphs)
    model(next(iter(loader)))
    opt = optim.Adam(model.parameters(), lr=0.01)
    for _ in range(40):
        for batch in loader:
            opt.zero_grad()
            F.categorical_cross_entropy(model(batch), batch.y, from_logits=True).backward()
            opt.step()
    test = collate_graphs([_cycle_or_path(n, cycle) for n in (13, 15, 20) for cycle in (False, True)])
    predicted = model(test).numpy().argmax(axis=1)
    np.testing.assert_array_equal(predicted, test.y)
