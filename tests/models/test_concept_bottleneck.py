"""Concept bottleneck models: the digit concepts, the joint loss against its formula in torch
(float64, values and gradients), interventions, the three training modes on digits (replacing
predicted concepts by true ones raises accuracy) and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from sklearn.datasets import load_digits

import lamina
from lamina.models import ConceptBottleneck, digit_concepts, fit_concept_bottleneck, intervention_accuracy
from lamina.nn import Dense, Sequential
from tabular_checks import compare_module


def _model(n_concepts=6, n_classes=10, width=16):
    return ConceptBottleneck(Dense(n_concepts), Sequential(Dense(width, activation="relu"), Dense(n_classes)),
                             n_concepts)


def test_digit_concepts_are_a_unique_code():
    codes = digit_concepts(np.arange(10))
    assert codes.shape == (10, 6) and set(np.unique(codes)) <= {0.0, 1.0}
    assert len({tuple(c) for c in codes}) == 10
    assert np.array_equal(digit_concepts(np.array([8, 8]))[:, :2], np.ones((2, 2)))   # 8: one and two loops


def test_joint_loss_matches_formula(f64):
    rng = np.random.default_rng(0)
    x, labels = rng.normal(size=(7, 5)), rng.integers(0, 3, 7)
    concepts = rng.uniform(size=(7, 4))                      # soft concept labels are allowed
    model = _model(4, 3, 6)
    model(x)
    lam = 0.7

    def torch_loss(p, t):
        c_logits = t @ p["concept_model.weight"] + p["concept_model.bias"]
        h = torch.relu(torch.sigmoid(c_logits) @ p["label_model.dense.weight"] + p["label_model.dense.bias"])
        label_logits = h @ p["label_model.dense_1.weight"] + p["label_model.dense_1.bias"]
        return (TF.cross_entropy(label_logits, torch.tensor(labels))
                + lam * TF.binary_cross_entropy_with_logits(c_logits, torch.tensor(concepts)))

    names = [n for n, _ in model.named_parameters()]
    assert "label_model.dense.weight" in names, names
    compare_module(model, lambda t: model.joint_loss(t, labels, concepts, lam), torch_loss, [x])


def test_intervention_replaces_the_chosen_concepts(f64):
    rng = np.random.default_rng(1)
    x, truth = rng.normal(size=(4, 5)), rng.integers(0, 2, (4, 3)).astype(float)
    model = ConceptBottleneck(Dense(3), Dense(2), 3)
    seen = []
    model.label_model.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].numpy()))
    logits, _ = model(x, truth, intervene=[0, 2])
    predicted = 1 / (1 + np.exp(-logits.numpy()))
    assert np.array_equal(seen[-1][:, [0, 2]], truth[:, [0, 2]])
    assert np.allclose(seen[-1][:, 1], predicted[:, 1], rtol=1e-12)


@pytest.mark.parametrize("mode", ["independent", "sequential", "joint"])
def test_intervention_raises_accuracy_on_digits(mode):
    data = load_digits()
    x, y = (data.data / 16).astype(np.float32), data.target
    concepts = digit_concepts(y)
    order = np.random.default_rng(0).permutation(len(x))
    train, test = order[:1200], order[1200:]
    lamina.manual_seed(0)
    model = fit_concept_bottleneck(_model(), x[train], y[train], concepts[train], mode=mode, epochs=10, lr=0.01,
                                   concept_weight=10.0)
    before = intervention_accuracy(model, x[test], y[test], concepts[test])
    after = intervention_accuracy(model, x[test], y[test], concepts[test], intervene=np.arange(6))
    print(f"{mode}: accuracy {before:.3f}, with all true concepts {after:.3f}")
    assert before > 0.5 and after > before + 0.05 and after > 0.95


def test_errors():
    model = _model()
    x = np.zeros((2, 64), dtype=np.float32)
    with pytest.raises(ValueError, match=r"concept labels must lie in \[0, 1\].*1.5"):
        model.joint_loss(x, np.array([0, 1]), np.full((2, 6), 1.5))
    with pytest.raises(ValueError, match=r"\(batch, 6\)"):
        model(x, np.zeros((2, 5)), intervene=[0])
    with pytest.raises(ValueError, match="mode"):
        fit_concept_bottleneck(model, x, np.array([0, 1]), np.zeros((2, 6)), mode="greedy")
    with pytest.raises(ValueError, match="digits 0..9"):
        digit_concepts(np.array([3, 12]))
