"""Hierarchical pooling models learn to classify small synthetic graphs: seeded and fast."""

import numpy as np

import lamina
from lamina import functional as F
from lamina import nn, optim
from lamina.data import Graph, collate_graphs, to_undirected


def _cycle_or_tree(n, cycle, rng):
    """A cycle of n nodes, or a random tree (each node joined to an earlier one); every
    node's feature is 1, so only the structure tells them apart."""
    nodes = np.arange(1, n)
    ends = np.stack([nodes - 1, nodes]) if cycle else np.stack([rng.integers(0, nodes), nodes])
    if cycle:
        ends = np.concatenate([ends, [[n - 1], [0]]], axis=1)
    return Graph(np.ones((n, 1), dtype=np.float32), to_undirected(ends, n)[0], y=int(cycle))


class PoolingClassifier(nn.Module):
    """GraphConv (sums see degrees) -> TopKPooling -> GATv2Conv -> attention readout -> logits."""

    def __init__(self):
        super().__init__()
        self.conv = nn.GraphConv(16)
        self.pool = nn.TopKPooling(0.5)
        self.attend = nn.GATv2Conv(16, heads=2, concat=False)
        self.readout = nn.AttentionalAggregation(nn.Dense(1))
        self.head = nn.Dense(2)

    def forward(self, batch):
        h = F.tanh(self.conv(batch.x, batch.edge_index))
        h, edges, _, nodes_batch, _, _ = self.pool(h, batch.edge_index, None, batch.batch)
        h = F.tanh(self.attend(h, edges))
        return self.head(self.readout(h, nodes_batch, batch.num_graphs))


def test_a_pooling_model_tells_cycles_from_trees():
    lamina.manual_seed(0)
    rng = np.random.default_rng(0)
    train = collate_graphs([_cycle_or_tree(n, c, rng) for n in range(5, 13) for c in (False, True) for _ in range(2)])
    test = collate_graphs([_cycle_or_tree(n, c, rng) for n in range(6, 15) for c in (False, True)])
    model = PoolingClassifier()
    model(train)
    opt = optim.Adam(model.parameters(), lr=0.02)
    for _ in range(60):
        opt.zero_grad()
        F.categorical_cross_entropy(model(train), train.y, from_logits=True).backward()
        opt.step()
    accuracy = float((model(test).numpy().argmax(axis=1) == test.y).mean())
    assert accuracy >= 0.9, accuracy
