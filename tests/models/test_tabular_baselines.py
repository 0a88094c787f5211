"""The MLP and ResNet baselines for tabular data: forward and every gradient against torch
re-implementations of the reference layouts (float64, batch norm in training and evaluation),
parameter counts by hand, PyTorch's initial ranges, errors, and learning wine."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from sklearn.datasets import load_wine

from lamina.errors import ShapeError
from lamina.models import TabMLP, TabResNet
from tabular_checks import accuracy, compare_module, standardized_split, train_classifier


def _linear(p, prefix, x):
    return x @ p[prefix + ".weight"] + p[prefix + ".bias"]


def torch_mlp(p, x, n_layers):
    for i in range(n_layers):
        x = torch.relu(_linear(p, f"blocks.{i}", x))
    return _linear(p, "head", x)


def torch_resnet(p, model, x, training):
    def norm(prefix, module, h):
        mean = torch.tensor(np.array(module.running_mean))
        var = torch.tensor(np.array(module.running_var))
        return TF.batch_norm(h, mean, var, p[prefix + ".weight"], p[prefix + ".bias"], training, 0.1, 1e-5)

    x = _linear(p, "first_layer", x)
    for i, block in enumerate(model.blocks):
        h = torch.relu(_linear(p, f"blocks.{i}.linear_first", norm(f"blocks.{i}.normalization",
                                                                   block.normalization, x)))
        x = x + _linear(p, f"blocks.{i}.linear_second", h)
    return _linear(p, "head", torch.relu(norm("head_normalization", model.head_normalization, x)))


def test_mlp_matches_torch(f64):
    model = TabMLP(5, 3, d_layers=(7, 4), dropout=0.0)
    x = np.random.default_rng(0).normal(size=(6, 5))
    compare_module(model, model, lambda p, t: torch_mlp(p, t, 2), [x])
    assert model.num_parameters() == (5 * 7 + 7) + (7 * 4 + 4) + (4 * 3 + 3)
    assert np.abs(model.blocks[0].weight.data).max() <= 1 / np.sqrt(5)


@pytest.mark.parametrize("training", [True, False])
def test_resnet_matches_torch(f64, training):
    model = TabResNet(5, 2, n_blocks=2, d_main=4, d_hidden=6, dropout_first=0.0, dropout_second=0.0)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(8, 5))
    if not training:
        model(x)                                            # running statistics off their start
        model.eval()
    compare_module(model, model, lambda p, t: torch_resnet(p, model, t, training), [x])
    block = (2 * 4) + (4 * 6 + 6) + (6 * 4 + 4)
    assert model.num_parameters() == (5 * 4 + 4) + 2 * block + 2 * 4 + (4 * 2 + 2)


def test_errors_name_the_model():
    with pytest.raises(ShapeError, match=r"TabResNet: numerical features must have shape \(batch, 5\), got \(2, 4\)"):
        TabResNet(5, 2)(np.zeros((2, 4)))
    with pytest.raises(ShapeError, match=r"TabMLP: numerical features must have shape \(batch, 3\)"):
        TabMLP(3, 2)(np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match=r"TabMLP: dropout must be in \[0, 1\), got 1.5"):
        TabMLP(3, 2, dropout=1.5)


def test_both_learn_wine():
    data = load_wine()
    x_train, y_train, x_test, y_test = standardized_split(data.data, data.target)
    for model in (TabMLP(13, 3, d_layers=(32, 32)), TabResNet(13, 3, n_blocks=1, d_main=32)):
        train_classifier(model, x_train, y_train, epochs=30, lr=3e-3, batch_size=32)
        assert accuracy(model, x_test, y_test) > 0.9, type(model).__name__
