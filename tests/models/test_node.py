"""NODE: a layer and the dense model against a float64 torch port of the reference forward
(one-hot bin codes, entmax feature selection, entmoid thresholds) in values and every gradient,
the data-aware initialisation at the batch's quantiles, the oblivious structure (one feature and
threshold per level, shared by its nodes), configs, errors, and learning breast cancer and
Friedman #1 next to an MLP, and the README example."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer, make_friedman1

import lamina
from helpers import run_readme_section
from lamina.models import NODE, ObliviousDecisionTrees, TabMLP
from lamina.nn.layer import layer_from_config, layer_to_config
from tabular_checks import compare_module, standardized_split, torch_entmax15, train_classifier


def torch_entmoid(x):
    return torch_entmax15(torch.stack([x, torch.zeros_like(x)], dim=-1))[..., 0]


def torch_odst(p, x, depth, prefix=""):
    """The reference ODST forward: bins = entmoid(+-logits), matched against one-hot bin codes."""
    selectors = torch_entmax15(p[prefix + "selection_logits"], dim=0)
    values = torch.einsum("bi,ind->bnd", x, selectors)
    logits = (values - p[prefix + "thresholds"]) * torch.exp(-p[prefix + "log_temperatures"])
    bins = torch_entmoid(torch.stack([-logits, logits], dim=-1))                          # (b, n, d, 2)
    codes = (torch.arange(2**depth)[None, :] // 2 ** torch.arange(depth)[:, None] % 2).to(x.dtype)
    codes_1hot = torch.stack([codes, 1 - codes], dim=-1)                                 # (d, 2^d, 2)
    matches = torch.einsum("btds,dcs->btdc", bins, codes_1hot)
    weights = torch.prod(matches, dim=-2)
    response = torch.einsum("bnd,ncd->bnc", weights, p[prefix + "response"])
    return response.flatten(1, 2)


def torch_node(p, x, model):
    features = x
    outputs = []
    for k in range(model.num_layers):
        outputs.append(torch_odst(p, features, model.depth, f"layers.{k}."))
        features = torch.cat([features, outputs[-1]], dim=1)
    responses = torch.cat(outputs, dim=1).reshape(len(x), -1, model.tree_dim)
    return responses[..., :model.output_dim].mean(dim=1)


def test_layer_matches_torch(f64):
    layer = ObliviousDecisionTrees(5, 3, depth=3, tree_dim=2)
    x = np.random.default_rng(0).normal(size=(16, 5))
    layer(x)                                                          # data-aware initialisation
    compare_module(layer, layer, lambda p, t: torch_odst(p, t, 3), [x])


def test_dense_model_matches_torch(f64):
    model = NODE(2, 3, 2, 3, 4, output_dim=2)
    x = np.random.default_rng(1).normal(size=(12, 4))
    model(x)
    compare_module(model, model, lambda p, t: torch_node(p, t, model), [x])
    assert [layer.input_dim for layer in model.layers] == [4, 4 + 3 * 3]


@pytest.mark.parametrize("cutoff", [1.0, 0.5, 2.0])
def test_data_aware_initialisation_uses_batch_quantiles(f64, cutoff):
    layer = ObliviousDecisionTrees(4, 5, depth=2, threshold_init_beta=0.7, threshold_init_cutoff=cutoff)
    x = np.random.default_rng(2).normal(size=(50, 4)) * [1, 3, 0.1, 2]
    layer(x)
    with lamina.no_grad():
        values = layer.chosen_features(x).numpy()                    # (50, trees, depth)
    q = layer.threshold_quantiles
    expected = np.array([[np.quantile(values[:, t, d], q[t, d]) for d in range(2)] for t in range(5)])
    np.testing.assert_allclose(layer.thresholds.data, expected, rtol=1e-12)
    below = (values <= expected).mean(axis=0)                         # the empirical quantile level
    assert np.all(np.abs(below - q) <= 1 / 50 + 1e-12)
    spread = np.quantile(np.abs(values - expected), min(cutoff, 1), axis=0) / max(cutoff, 1)
    np.testing.assert_allclose(np.exp(layer.log_temperatures.data), spread + 1e-6, rtol=1e-10)
    before = layer.thresholds.data.copy()
    layer(x[:10] + 5)                                                 # only the first batch initialises
    np.testing.assert_array_equal(layer.thresholds.data, before)


def test_trees_are_oblivious(f64):
    """Hard selection and cold thresholds: every tree sends x to the leaf given by one question
    per level (the same feature and threshold whatever the path), and returns that leaf's response."""
    depth, trees = 3, 2
    layer = ObliviousDecisionTrees(6, trees, depth=depth, tree_dim=1)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 6))
    layer(x)
    assert layer.selection_logits.shape == (6, trees, depth) and layer.thresholds.shape == (trees, depth)
    chosen = rng.integers(0, 6, size=(trees, depth))
    logits = np.zeros((6, trees, depth))
    for t in range(trees):
        for d in range(depth):
            logits[chosen[t, d], t, d] = 10.0                           # entmax gives an exact one-hot
    layer.selection_logits.data[...] = logits
    layer.log_temperatures.data[...] = np.log(1e-3)
    with lamina.no_grad():
        out = layer(x).numpy()
    for t in range(trees):
        feature_values = x[:, chosen[t]]                               # (40, depth)
        far = np.all(np.abs(feature_values - layer.thresholds.data[t]) > 2e-3, axis=1)
        below = feature_values <= layer.thresholds.data[t]         # bit d of the leaf reached
        leaf = (below * 2 ** np.arange(depth)).sum(axis=1)
        np.testing.assert_allclose(out[far, t], layer.response.data[t, 0, leaf[far]], rtol=1e-12)
        assert far.sum() > 30


def test_configs_round_trip_and_errors():
    model = NODE(2, 4, 3, 2, 5, output_dim=1, threshold_init_beta=2.0)
    clone = layer_from_config(layer_to_config(model))
    assert type(clone) is NODE and clone.get_config() == model.get_config()
    with pytest.raises(ValueError, match=r"NODE: output_dim \(3\) may not exceed tree_dim \(2\)"):
        NODE(1, 4, 3, 2, 5, output_dim=3)
    with pytest.raises(lamina.errors.ShapeError, match=r"NODE: .*\(batch, 5\), got \(2, 4\)"):
        model(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="ObliviousDecisionTrees: depth must be a positive int"):
        ObliviousDecisionTrees(3, 2, depth=0)


def test_state_dict_keeps_the_initialisation():
    x = np.random.default_rng(4).normal(size=(30, 3))
    model = NODE(1, 4, 2, 1, 3)
    expected = model(x).numpy()
    clone = NODE(1, 4, 2, 1, 3)
    clone.load_state_dict(model.state_dict())
    np.testing.assert_allclose(clone(x[:5]).numpy(), expected[:5], rtol=1e-6)


def fit_regression(model, x, y, epochs: int, lr: float, batch_size: int = 64):
    optimizer = lamina.optim.Adam(model.parameters(), lr=lr)
    rng = np.random.default_rng(0)
    model(x[:256])                                                    # NODE's initialisation batch
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch_size):
            rows = order[start:start + batch_size]
            optimizer.zero_grad()
            ((model(x[rows])[:, 0] - lamina.tensor(y[rows])) ** 2).mean().backward()
            optimizer.step()
    model.eval()


def r_squared(model, x, y) -> float:
    with lamina.no_grad():
        prediction = model(x).numpy()[:, 0]
    return 1 - np.mean((prediction - y) ** 2) / np.var(y)


def test_node_learns_friedman_and_breast_cancer_like_an_mlp():
    x, y = make_friedman1(n_samples=800, noise=0.5, random_state=0)
    x_train, y_train, x_test, y_test = standardized_split(x, y)
    mean, std = y_train.mean(), y_train.std()
    y_train, y_test = (y_train - mean) / std, (y_test - mean) / std
    mlp = TabMLP(10, 1, d_layers=(64, 64), dropout=0.0)
    fit_regression(mlp, x_train, y_train, epochs=40, lr=3e-3)
    node = NODE(2, 16, 4, 1, 10)
    fit_regression(node, x_train, y_train, epochs=40, lr=1e-2)
    scores = {"mlp R2": r_squared(mlp, x_test, y_test), "node R2": r_squared(node, x_test, y_test)}

    data = load_breast_cancer()
    x_train, y_train, x_test, y_test = standardized_split(data.data, data.target)
    mlp = TabMLP(30, 2, d_layers=(32, 32))
    train_classifier(mlp, x_train, y_train, epochs=20, lr=3e-3, batch_size=64)
    node = NODE(2, 8, 3, 2, 30)
    node(x_train)
    train_classifier(node, x_train, y_train, epochs=30, lr=3e-2, batch_size=64)
    for name, model in (("mlp accuracy", mlp), ("node accuracy", node)):
        with lamina.no_grad():
            scores[name] = float((model(x_test).numpy().argmax(axis=1) == y_test).mean())
    assert scores["mlp R2"] > 0.8 and scores["mlp accuracy"] > 0.93, scores
    assert scores["node R2"] > scores["mlp R2"] - 0.08, scores
    assert scores["node accuracy"] > scores["mlp accuracy"] - 0.04, scores


def test_readme_example_runs():
    printed, names = run_readme_section("Differentiable trees")
    lines = printed.splitlines()
    assert lines[:3] == ["SoftDecisionTree True", "NeuralDecisionForest True", "NODE True"], printed
    np.testing.assert_allclose(names["F"].entmoid15(np.array([-2.0, 0.0, 1.0])).numpy(), [0, 0.5, 0.8307189], atol=1e-6)
    assert names["node"].layers[1].initialized
