"""A GCN trained on BA-Shapes, explained by GNNExplainer and PGExplainer: the explanations
find the houses (explanation AUC against each node's own house, the evaluation of Ying et
al. 2019) and their top edges matter more to the prediction than random ones."""

import numpy as np
import pytest

import lamina
from lamina import functional as F
from lamina import nn, optim
from lamina.analysis import PGExplainer, edge_gradient_saliency, explanation_auc, fidelity, gnn_explainer
from lamina.data import ba_shapes

SEED = 0


class HouseGCN(nn.Module):
    """Three GCN layers of 20 units, their outputs concatenated into a linear head (as the
    model of the GNNExplainer paper); edge weights go to every layer."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList([nn.GCNConv(20) for _ in range(3)])
        self.head = nn.Dense(4)

    def forward(self, x, edge_index, edge_weight=None):
        outputs, h = [], x
        for conv in self.convs:
            h = F.relu(conv(h, edge_index, edge_weight))
            outputs.append(h)
        return self.head(F.concat(outputs, axis=1))


def trained_gcn(seed: int):
    """(model, graph, test accuracy, test nodes): 800 full-batch Adam steps on 80% of the nodes."""
    lamina.manual_seed(seed)
    graph = ba_shapes(num_base=300, num_motifs=80, seed=seed)
    rng = np.random.default_rng(seed)
    train = rng.random(graph.num_nodes) < 0.8
    model, x = HouseGCN(), lamina.tensor(graph.x)
    model(x, graph.edge_index)
    opt = optim.Adam(model.parameters(), lr=0.01)
    for _ in range(800):
        opt.zero_grad()
        F.categorical_cross_entropy(model(x, graph.edge_index)[train], graph.y[train], from_logits=True).backward()
        opt.step()
    model.eval()
    predicted = model(x, graph.edge_index).numpy().argmax(axis=1)
    return model, graph, float(np.mean(predicted[~train] == graph.y[~train])), np.flatnonzero(~train)


@pytest.fixture(scope="module")
def trained():
    return trained_gcn(SEED)


def house_nodes(graph, nodes, count, seed):
    return np.random.default_rng(seed).permutation([v for v in nodes if graph.y[v] > 0])[:count]


def pooled_auc(graph, explanations) -> float:
    """The AUC over the scored edges of every explanation, each against its node's own house."""
    scores = np.concatenate([e.edge_mask[e.edges] for e in explanations])
    truth = np.concatenate([graph.explanation_edges(e.node)[e.edges] for e in explanations])
    return explanation_auc(scores, truth)


def scores_auc(graph, nodes, score_fn) -> float:
    from lamina.analysis import computation_subgraph

    subs = [computation_subgraph(graph.edge_index, graph.num_nodes, int(v), 3).edges for v in nodes]
    scores = np.concatenate([score_fn(int(v))[s] for v, s in zip(nodes, subs)])
    truth = np.concatenate([graph.explanation_edges(int(v))[s] for v, s in zip(nodes, subs)])
    return explanation_auc(scores, truth)


def mean_fidelity_plus(model, graph, nodes, masks, k=6) -> float:
    return float(np.mean([fidelity(model, graph, m, node=int(v), k=k)[0] for v, m in zip(nodes, masks)]))


def random_masks(graph, explanations, seed):
    """Random scores on each explanation's computation subgraph (0 elsewhere)."""
    rng = np.random.default_rng(seed)
    masks = []
    for e in explanations:
        m = np.zeros(graph.num_edges)
        m[e.edges] = rng.random(e.edges.shape[0])
        masks.append(m)
    return masks


def test_gcn_learns_ba_shapes(trained):
    _, graph, accuracy, _ = trained
    majority = np.bincount(graph.y).max() / graph.num_nodes       # 300 base nodes of 700
    assert accuracy > majority + 0.3, (accuracy, majority)   # measured: 0.97, 0.90, 0.92 (seeds 0-2; majority 0.43)


def test_gnn_explainer_finds_the_houses(trained):
    model, graph, _, test = trained
    nodes = house_nodes(graph, test, 10, SEED)
    explanations = [gnn_explainer(model, graph, int(v), epochs=100, lr=0.01, entropy_coef=0.1,
                                  feature_mask=False) for v in nodes]
    auc = pooled_auc(graph, explanations)
    random = pooled_auc(graph, [type(e)(m, None, e.target, e.node, e.edges, [])
                                for e, m in zip(explanations, random_masks(graph, explanations, 1))])
    gradient = scores_auc(graph, nodes, lambda v: edge_gradient_saliency(model, graph, v))
    # measured, seeds 0-2 (and with OPENBLAS_CORETYPE=SkylakeX): AUC 0.96, 0.94, 0.96 (0.95, 0.97, 0.96);
    # random scores 0.51, 0.53, 0.44; the gradient baseline 0.997, 0.98, 0.99 is higher on this model
    assert auc > 0.85 and auc > random + 0.3, (auc, random, gradient)
    plus = mean_fidelity_plus(model, graph, nodes, [e.edge_mask for e in explanations])
    plus_random = mean_fidelity_plus(model, graph, nodes, random_masks(graph, explanations, 2))
    assert plus > plus_random + 0.1, (plus, plus_random)        # measured: 0.51 vs 0.21, 0.54 vs 0.21, 0.60 vs 0.13


def test_pg_explainer_explains_unseen_nodes_in_one_pass(trained):
    model, graph, _, test = trained
    rng = np.random.default_rng(SEED)
    motif_train = rng.permutation(np.setdiff1d(np.flatnonzero(graph.y > 0), test))[:30]
    lamina.manual_seed(SEED)
    explainer = PGExplainer(size_coef=0.005, seed=SEED)
    losses = explainer.fit(model, graph, nodes=motif_train, epochs=60, lr=0.003)
    assert losses[-1] < losses[0]
    nodes = house_nodes(graph, test, 40, SEED)
    explanations = [explainer.explain(model, graph, int(v)) for v in nodes]
    auc = pooled_auc(graph, explanations)
    assert auc > 0.9, auc             # measured: 0.98, 0.99, 0.98, seeds 0-2 (SkylakeX: 0.97, 0.99, 0.99)
    plus = mean_fidelity_plus(model, graph, nodes, [e.edge_mask for e in explanations])
    plus_random = mean_fidelity_plus(model, graph, nodes, random_masks(graph, explanations, 2))
    assert plus > plus_random + 0.05, (plus, plus_random)   # measured: 0.31 vs 0.13, 0.53 vs 0.15, 0.35 vs 0.13
