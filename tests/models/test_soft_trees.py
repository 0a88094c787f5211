"""The soft decision tree and the neural decision forest: predictions and losses (penalty
included) with every gradient against float64 torch rewrites that follow each leaf's path
node by node, the fixed-point leaf rule against a loop over leaves and its monotone
likelihood, routing on the simplex, configs, errors, and learning breast cancer next to an MLP."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer

import lamina
from lamina.models import NeuralDecisionForest, SoftDecisionTree, TabMLP, routing_probabilities
from lamina.nn.layer import layer_from_config, layer_to_config
from tabular_checks import compare_module, standardized_split, train_classifier


def leaf_paths(depth: int):
    """For each leaf, the (node, went right) pairs from the root, the leaves in left-to-right order."""
    paths = []
    for leaf in range(2**depth):
        node, path = 0, []
        for level in range(depth):
            right = (leaf >> (depth - 1 - level)) & 1
            path.append((node, right))
            node = 2 * node + 1 + right
        paths.append(path)
    return paths


def torch_reach(right, depth: int):
    """(probability of reaching each inner node (N, 2^depth - 1), of each leaf (N, 2^depth))."""
    nodes = [torch.ones(right.shape[:-1], dtype=right.dtype)] + [None] * (2**depth - 2)
    for node in range(2**depth - 1 - 2**(depth - 1)):
        nodes[2 * node + 1] = nodes[node] * (1 - right[..., node])
        nodes[2 * node + 2] = nodes[node] * right[..., node]
    leaves = []
    for path in leaf_paths(depth):
        p = torch.ones(right.shape[:-1], dtype=right.dtype)
        for node, went_right in path:
            p = p * (right[..., node] if went_right else 1 - right[..., node])
        leaves.append(p)
    return torch.stack(nodes, dim=-1), torch.stack(leaves, dim=-1)


def torch_sdt(p, x, y, depth, beta, strength, decay):
    """Frosst & Hinton: (log of the mixture prediction, weighted cross-entropy + strength * penalty)."""
    right = torch.sigmoid(beta * (x @ p["weight"] + p["bias"]))
    nodes, leaves = torch_reach(right, depth)
    log_q = torch.log_softmax(p["leaf_logits"], dim=1)
    prediction = torch.log(leaves @ torch.softmax(p["leaf_logits"], dim=1))
    loss = -(leaves * log_q[:, y].T).sum(dim=1).mean()
    for node in range(2**depth - 1):
        level = int(np.floor(np.log2(node + 1)))
        alpha = (nodes[:, node] * right[:, node]).sum() / nodes[:, node].sum()
        loss = loss - strength * decay**level * 0.5 * (torch.log(alpha) + torch.log(1 - alpha))
    return prediction, loss


@pytest.mark.parametrize("depth, beta", [(1, 1.0), (3, 2.5)])
def test_soft_decision_tree_matches_torch(f64, depth, beta):
    model = SoftDecisionTree(depth, 3, 4, inverse_temperature=beta, penalty_strength=0.3, penalty_decay=0.5)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 4)), rng.integers(0, 3, size=7)
    compare_module(model, model, lambda p, t: torch_sdt(p, t, y, depth, beta, 0.3, 0.5)[0], [x])
    compare_module(model, model.loss, lambda p, t, labels: torch_sdt(p, t, labels, depth, beta, 0.3, 0.5)[1],
                   [x, y])
    assert model.num_parameters() == 4 * (2**depth - 1) + (2**depth - 1) + 2**depth * 3


def torch_forest(p, x, depth, leaves_pi=None):
    """Kontschieder et al.: P_T[y|x] (N, trees, classes), mu from products of the left decisions."""
    left = torch.sigmoid(torch.einsum("nd,tdk->ntk", x, p["weight"]) + p["bias"])
    mu = torch_reach(1 - left, depth)[1]
    pi = torch.softmax(p["leaf_logits"], dim=-1) if leaves_pi is None else leaves_pi
    return torch.einsum("ntl,tlc->ntc", mu, pi)


def torch_forest_loss(predictions, y):
    return -torch.log(predictions[torch.arange(len(y)), :, y]).mean()


@pytest.mark.parametrize("leaf_update", ["gradient", "fixed_point"])
def test_neural_decision_forest_matches_torch(f64, leaf_update):
    model = NeuralDecisionForest(3, 2, 5, 4, leaf_update=leaf_update)
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(6, 5)), rng.integers(0, 4, size=6)
    pi = None
    if leaf_update == "fixed_point":
        model.update_leaves(x, y, iterations=3)                       # leaves off uniform
        pi = torch.tensor(np.asarray(model.leaf_distributions))
    else:
        model.leaf_logits.data[...] = rng.normal(size=model.leaf_logits.shape)
    compare_module(model, model, lambda p, t: torch.log(torch_forest(p, t, 2, pi).mean(dim=1)), [x])
    compare_module(model, model.loss, lambda p, t, labels: torch_forest_loss(torch_forest(p, t, 2, pi), labels),
                   [x, y])


def test_fixed_point_rule_matches_a_loop_and_raises_the_likelihood(f64):
    model = NeuralDecisionForest(2, 2, 3, 3)
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(20, 3)), rng.integers(0, 3, size=20)
    with lamina.no_grad():
        mu = model.routing(x).numpy()
    pi = np.asarray(model.leaf_distributions).copy()
    expected = np.zeros_like(pi)
    for t in range(2):
        tree = mu[:, t] @ pi[t]                                       # P_T[y|x] (N, classes)
        for leaf in range(4):
            for c in range(3):
                rows = y == c
                expected[t, leaf, c] = np.sum(pi[t, leaf, c] * mu[rows, t, leaf] / tree[rows, c])
            expected[t, leaf] /= expected[t, leaf].sum()
    losses = [float(model.loss(x, y).numpy())]
    model.update_leaves(x, y, iterations=1)
    np.testing.assert_allclose(model.leaf_distributions, expected, rtol=1e-12)
    for _ in range(4):
        model.update_leaves(x, y, iterations=1)
        losses.append(float(model.loss(x, y).numpy()))
    assert all(b <= a + 1e-12 for a, b in zip(losses, losses[1:])) and losses[-1] < losses[0] - 1e-3


def test_routing_probabilities_sum_to_one_per_level(f64):
    left = lamina.tensor(np.random.default_rng(3).uniform(size=(5, 2, 15)))
    levels, leaves = routing_probabilities(left, 4)
    assert [lv.shape for lv in levels] == [(5, 2, 1), (5, 2, 2), (5, 2, 4), (5, 2, 8)] and leaves.shape == (5, 2, 16)
    for reach in [*levels, leaves]:
        np.testing.assert_allclose(reach.numpy().sum(axis=-1), 1, rtol=1e-12)


def test_configs_round_trip_and_errors():
    for model in (SoftDecisionTree(2, 3, 4, inverse_temperature=2.0), NeuralDecisionForest(2, 3, 4, 2, "gradient")):
        clone = layer_from_config(layer_to_config(model))
        assert type(clone) is type(model) and clone.get_config() == model.get_config()
    with pytest.raises(ValueError, match="NeuralDecisionForest: leaf_update must be 'fixed_point' or 'gradient'"):
        NeuralDecisionForest(2, 3, 4, 2, leaf_update="adam")
    with pytest.raises(ValueError, match="update_leaves: the leaves are learned by gradient"):
        NeuralDecisionForest(2, 3, 4, 2, leaf_update="gradient").update_leaves(np.zeros((2, 4)), np.zeros(2, int))
    with pytest.raises(ValueError, match=r"SoftDecisionTree: labels must lie in \[0, 3\), got 0..5"):
        SoftDecisionTree(2, 3, 4).loss(np.zeros((2, 4)), np.array([0, 5]))
    with pytest.raises(ValueError, match="SoftDecisionTree: inverse_temperature must be positive"):
        SoftDecisionTree(2, 3, 4, inverse_temperature=0)
    with pytest.raises(lamina.errors.ShapeError, match=r"NeuralDecisionForest: .*\(batch, 4\), got \(2, 3\)"):
        NeuralDecisionForest(2, 3, 4, 2)(np.zeros((2, 3)))


def fit(model, x, y, epochs: int, lr: float, batch_size: int = 64, between_epochs=None):
    optimizer = lamina.optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(0)
    for _ in range(epochs):
        if between_epochs is not None:
            between_epochs()
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch_size):
            rows = order[start:start + batch_size]
            optimizer.zero_grad()
            model.loss(x[rows], y[rows]).backward()
            optimizer.step()


def test_trees_learn_breast_cancer_like_an_mlp():
    data = load_breast_cancer()
    x_train, y_train, x_test, y_test = standardized_split(data.data, data.target)
    mlp = TabMLP(30, 2, d_layers=(32, 32))
    train_classifier(mlp, x_train, y_train, epochs=20, lr=3e-3, batch_size=64)

    def accuracy(model):
        with lamina.no_grad():
            return float((model(x_test).numpy().argmax(axis=1) == y_test).mean())

    tree = SoftDecisionTree(3, 2, 30, penalty_strength=0.01)
    fit(tree, x_train, y_train, epochs=20, lr=3e-2)
    gradient_forest = NeuralDecisionForest(4, 3, 30, 2, leaf_update="gradient")
    fit(gradient_forest, x_train, y_train, epochs=20, lr=3e-2)
    forest = NeuralDecisionForest(4, 3, 30, 2)
    fit(forest, x_train, y_train, epochs=20, lr=3e-2,
        between_epochs=lambda: forest.update_leaves(x_train, y_train, iterations=10))
    forest.update_leaves(x_train, y_train, iterations=10)
    scores = {"mlp": accuracy(mlp), "soft tree": accuracy(tree), "forest (gradient)": accuracy(gradient_forest),
              "forest (fixed point)": accuracy(forest)}
    assert scores["mlp"] > 0.93, scores
    for name in ("soft tree", "forest (gradient)", "forest (fixed point)"):
        assert scores[name] > scores["mlp"] - 0.04, scores
