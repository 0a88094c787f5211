"""Interpretable models: the neural additive model (exact additivity, ExU and ReLU feature nets
and penalties against torch rewrites in float64, learning breast cancer and recovering a known
shape function) and monotonic networks (monotone on random pairs, torch cross-check)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer

import lamina
from helpers import check_gradients, run_readme_section
from lamina.errors import ShapeError
from lamina.models import NAM, MonotonicDense, MonotonicNetwork, TabMLP
from tabular_checks import accuracy, compare_module, standardized_split, train_classifier


def torch_nam_features(p, x, unit, relu_n, n_hidden):
    """Feature i's net on column i, one at a time: (N, K) -> (N, K, n_outputs)."""
    outputs = []
    for i in range(x.shape[1]):
        column = x[:, i:i + 1]
        if unit == "exu":
            h = torch.clamp(torch.exp(p["first_weight"][i]) * (column - p["first_bias"][i]), 0, relu_n)
        else:
            h = torch.relu(column * p["first_weight"][i] + p["first_bias"][i])
        for j in range(n_hidden):
            h = h @ p[f"weight_{j}"][i] + p[f"bias_{j}"][i]
            if j < n_hidden - 1:
                h = torch.relu(h)
        outputs.append(h)
    return torch.stack(outputs, dim=1)


@pytest.mark.parametrize("unit", ["exu", "relu"])
def test_nam_matches_torch_feature_by_feature(f64, unit):
    model = NAM(4, hidden=(6, 3), n_outputs=2, unit=unit, relu_n=1.0)
    x = np.random.default_rng(0).normal(scale=0.3, size=(7, 4))
    compare_module(model, model, lambda p, t: torch_nam_features(p, t, unit, 1.0, 2).sum(1) + p["bias"], [x])
    compare_module(model, model.feature_outputs, lambda p, t: torch_nam_features(p, t, unit, 1.0, 2), [x])
    assert check_gradients(lambda t: model(t), x)


def test_nam_output_is_exactly_bias_plus_feature_nets(f64):
    model = NAM(5, hidden=(8, 4), unit="exu").eval()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(9, 5))
    contributions = model.feature_contributions(x)
    logits = model(x).numpy()
    assert np.array_equal(logits, contributions.sum(axis=1) + model.bias.numpy())
    moved = x.copy()
    moved[:, 2] = rng.normal(size=9)                  # only feature 2's contribution may change
    changed = model.feature_contributions(moved)
    assert np.array_equal(np.delete(changed, 2, axis=1), np.delete(contributions, 2, axis=1))
    grid = np.linspace(-2, 2, 11)
    shapes = model.shape_functions(grid)
    assert shapes.shape == (11, 5, 1)
    assert np.array_equal(shapes[:, 3], model.feature_contributions(np.repeat(grid[:, None], 5, 1))[:, 3])


def test_nam_penalties_and_feature_dropout(f64):
    model = NAM(3, hidden=(4,), feature_dropout=0.5)
    x = np.random.default_rng(2).normal(size=(200, 3))
    model.eval()
    model(x)
    c = model.feature_contributions(x)
    assert np.isclose(model.output_penalty().item(), (c ** 2).sum(axis=1).mean() / 3, rtol=1e-12)
    weights = [p.numpy() for n, p in model.named_parameters() if "weight" in n]
    assert np.isclose(model.weight_penalty().item(), sum((w ** 2).sum() for w in weights), rtol=1e-12)
    model.train()
    lamina.manual_seed(0)
    model(x)
    dropped = model.last_contributions.numpy()
    zeroed = dropped == 0
    assert 0.35 < zeroed.mean() < 0.65                # whole feature outputs dropped, the rest scaled by 2
    assert np.allclose(dropped[~zeroed], 2 * c[~zeroed])


def test_nam_learns_breast_cancer_close_to_an_mlp():
    data = load_breast_cancer()
    x_train, y_train, x_test, y_test = standardized_split(data.data.astype(np.float32), data.target, seed=0)
    lamina.manual_seed(0)
    nam = NAM(30, hidden=(16, 8), n_outputs=2, unit="relu", feature_dropout=0.1)
    train_classifier(nam, x_train, y_train, epochs=25, lr=0.01, batch_size=64)
    lamina.manual_seed(0)
    mlp = TabMLP(30, 2, d_layers=(64, 64), dropout=0.1)
    train_classifier(mlp, x_train, y_train, epochs=25, lr=0.003, batch_size=64)
    nam_acc, mlp_acc = accuracy(nam, x_test, y_test), accuracy(mlp, x_test, y_test)
    print(f"breast cancer test accuracy: NAM {nam_acc:.3f}, MLP {mlp_acc:.3f}")
    assert nam_acc > 0.9 and nam_acc >= mlp_acc - 0.05


def test_nam_recovers_a_monotone_shape_function():
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, size=(512, 3)).astype(np.float32)
    truth = [lambda v: np.tanh(2 * v), lambda v: np.sin(3 * v), lambda v: 0.5 * v ** 2]
    y = sum(f(x[:, i]) for i, f in enumerate(truth))[:, None].astype(np.float32)
    lamina.manual_seed(1)
    model = NAM(3, hidden=(16, 8), unit="relu")
    optimizer = lamina.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(40):
        order = rng.permutation(len(x))
        for start in range(0, len(x), 64):
            rows = order[start:start + 64]
            optimizer.zero_grad()
            lamina.functional.mse_loss(model(x[rows]), y[rows]).backward()
            optimizer.step()
    grid = np.linspace(-1, 1, 41)
    learned = model.eval().shape_functions(grid)[:, :, 0]
    correlations = [np.corrcoef(learned[:, i], truth[i](grid))[0, 1] for i in range(3)]
    print("shape-function correlations with the truth:", np.round(correlations, 4))
    assert correlations[0] > 0.95 and correlations[1] > 0.9
    assert np.all(np.diff(learned[:, 0]) > -0.05)   # the monotone effect is learned (nearly) monotone


def torch_monotonic_dense(p, prefix, x, signs, activation, n_convex, n_concave):
    w = p[prefix + "weight"]
    s = torch.tensor(signs, dtype=w.dtype)[:, None]
    w = torch.where(s == 0, w, s * w.abs())
    y = x @ w + p[prefix + "bias"]
    if activation is None:
        return y
    a, b = n_convex, n_convex + n_concave
    return torch.cat([torch.relu(y[:, :a]), -torch.relu(-y[:, a:b]), torch.clamp(y[:, b:], -1, 1)], dim=1)


def test_monotonic_dense_matches_torch(f64):
    signs = [1, -1, 0, 1]
    layer = MonotonicDense(4, 6, signs)
    x = np.random.default_rng(4).normal(size=(5, 4))
    assert (layer.n_convex, layer.n_concave) == (2, 2)
    compare_module(layer, layer, lambda p, t: torch_monotonic_dense(p, "", t, signs, "relu", 2, 2), [x])
    assert check_gradients(lambda t: layer(t), x)


def test_monotonic_network_matches_torch_and_is_monotone(f64):
    signs = [1, -1, 0]
    model = MonotonicNetwork(3, signs, hidden=(9, 6))

    def torch_net(p, t):
        h = torch_monotonic_dense(p, "layer_0.", t, signs, "relu", 3, 3)
        h = torch_monotonic_dense(p, "layer_1.", h, [1] * 9, "relu", 2, 2)
        return torch_monotonic_dense(p, "layer_2.", h, [1] * 6, None, 0, 0)

    rng = np.random.default_rng(5)
    compare_module(model, model, torch_net, [rng.normal(size=(6, 3))])
    x = rng.normal(scale=2.0, size=(2000, 3))
    step = np.abs(rng.normal(size=2000))
    base = model(x).numpy()[:, 0]
    for i, sign in enumerate(signs[:2]):
        moved = x.copy()
        moved[:, i] += step
        delta = sign * (model(moved).numpy()[:, 0] - base)
        assert np.all(delta >= -1e-12), f"not monotone in input {i}"
    free = x.copy()
    free[:, 2] += step
    assert np.any(model(free).numpy()[:, 0] != base)


def test_errors():
    with pytest.raises(ShapeError, match=r"NAM.*\(batch, 3\)"):
        NAM(3)(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="unit"):
        NAM(3, unit="tanh")
    with pytest.raises(ValueError, match="feature_dropout"):
        NAM(3, feature_dropout=1.0)
    with pytest.raises(ValueError, match=r"one of -1, 0, 1 per input \(3\)"):
        MonotonicNetwork(3, [1, 0])
    with pytest.raises(ValueError, match="-1, 0 or 1"):
        MonotonicDense(2, 2, [2, 0])
    with pytest.raises(ShapeError, match="MonotonicNetwork"):
        MonotonicNetwork(2, [1, 0])(np.zeros((3, 5)))


def test_readme_section_runs():
    printed, _ = run_readme_section("Interpretable-by-design models")
    lines = printed.splitlines()
    assert lines[0] == "True" and lines[1] == "True"
