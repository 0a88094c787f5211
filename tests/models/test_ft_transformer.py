"""FT-Transformer: forward and every gradient against a torch re-implementation of the
reference layout fed the same weights (float64), the parameter count by hand, errors naming
the model, and learning on the breast-cancer data."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression

from lamina.errors import ShapeError
from lamina.models import FTTransformer, TabMLP
from tabular_checks import accuracy, compare_module, standardized_split, train_classifier


def _linear(p, prefix, x):
    return x @ p[prefix + ".weight"] + p[prefix + ".bias"]


def _layer_norm(p, prefix, x):
    return torch.nn.functional.layer_norm(x, x.shape[-1:], p[prefix + ".weight"], p[prefix + ".bias"], 1e-5)


def torch_ft_transformer(p, x_num, x_cat, cards, n_blocks, heads):
    """The reference layout written out: every token through every block, the head on the last token."""
    offsets = torch.tensor(np.cumsum((0, *cards[:-1])))
    tokens = [x_num[..., None] * p["tokenizer.num_weight"] + p["tokenizer.num_bias"],
              p["tokenizer.cat_embeddings"][x_cat + offsets] + p["tokenizer.cat_bias"],
              p["tokenizer.cls"].expand(len(x_num), 1, -1)]
    x = torch.cat(tokens, dim=1)
    n, t, d = x.shape
    for b in range(n_blocks):
        pre = f"blocks.{b}."
        h = x if b == 0 else _layer_norm(p, pre + "attention_normalization", x)
        q, k, v = (_linear(p, pre + "attention." + name, h).reshape(n, t, heads, d // heads).transpose(1, 2)
                   for name in ("query", "key", "value"))
        weights = torch.softmax(q @ k.transpose(2, 3) / (d // heads) ** 0.5, dim=-1)
        mixed = (weights @ v).transpose(1, 2).reshape(n, t, d)
        x = x + (_linear(p, pre + "attention.out", mixed) if heads > 1 else mixed)
        a, gate = _linear(p, pre + "linear_first", _layer_norm(p, pre + "ffn_normalization", x)).chunk(2, dim=-1)
        x = x + _linear(p, pre + "linear_second", a * torch.relu(gate))
    return _linear(p, "head", torch.relu(_layer_norm(p, "head_normalization", x[:, -1])))


@pytest.mark.parametrize("heads", [1, 2])
def test_forward_and_gradients_match_torch(f64, heads):
    cards = (3, 5)
    model = FTTransformer(4, cards, d_out=3, d_token=8, n_blocks=2, attention_heads=heads, ffn_d_hidden=6,
                          attention_dropout=0.0, ffn_dropout=0.0, residual_dropout=0.0)
    rng = np.random.default_rng(0)
    for param in model.parameters():                        # no zero biases, so that every term counts
        param.data[...] = rng.normal(0, 0.5, param.shape)
    x = rng.normal(size=(5, 4))
    ids = np.array([[0, 4], [2, 0], [1, 1], [2, 3], [0, 2]])
    compare_module(model, model, lambda p, a, b: torch_ft_transformer(p, a, b, cards, 2, heads), [x, ids])
    model.eval()
    compare_module(model, model, lambda p, a, b: torch_ft_transformer(p, a, b, cards, 2, heads), [x, ids], seed=1)


def test_dropout_acts_only_in_training(f64):
    model = FTTransformer(3, (), d_out=1, d_token=8, n_blocks=1, attention_heads=2, attention_dropout=0.5,
                          ffn_dropout=0.5, residual_dropout=0.5)
    x = np.random.default_rng(1).normal(size=(6, 3))
    assert not np.allclose(model(x).numpy(), model(x).numpy())
    model.eval()
    np.testing.assert_array_equal(model(x).numpy(), model(x).numpy())


def test_parameter_count_by_hand():
    d, h, n_num, cards, d_out = 8, 6, 4, (3, 5), 2
    model = FTTransformer(n_num, cards, d_out=d_out, d_token=d, n_blocks=2, attention_heads=2, ffn_d_hidden=h)
    tokenizer = 2 * n_num * d + sum(cards) * d + len(cards) * d + d
    attention = 4 * (d * d + d)
    ffn = (d * 2 * h + 2 * h) + (h * d + d)
    blocks = (attention + ffn + 2 * d) + (attention + ffn + 4 * d)      # the first block has no attention norm
    head = 2 * d + d * d_out + d_out
    assert model.num_parameters() == tokenizer + blocks + head == 1138
    one_head = FTTransformer(n_num, cards, d_out=d_out, d_token=d, n_blocks=2, attention_heads=1, ffn_d_hidden=h)
    assert one_head.num_parameters() == 1138 - 2 * (d * d + d)          # no output map with one head
    assert FTTransformer(3, d_token=192).ffn_d_hidden == 256               # 4/3 d_token by default


def test_errors_name_the_model():
    model = FTTransformer(3, (4,), d_out=2, d_token=8, n_blocks=1, attention_heads=2)
    with pytest.raises(ShapeError, match=r"FTTransformer: numerical features must have shape \(batch, 3\), "
                                         r"got \(2, 5\)"):
        model(np.zeros((2, 5)), np.zeros((2, 1), dtype=int))
    with pytest.raises(ValueError, match=r"FTTransformer: categorical feature 0 has id 4, out of range \[0, 4\)"):
        model(np.zeros((2, 3)), np.array([[1], [4]]))
    with pytest.raises(ShapeError, match="FTTransformer: expected 1 categorical features, got none"):
        model(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"FTTransformer: d_token \(10\) must be divisible by attention_heads "
                                         r"\(4\)"):
        FTTransformer(3, d_token=10, attention_heads=4)


def test_learns_breast_cancer_as_well_as_the_baselines():
    data = load_breast_cancer()
    x_train, y_train, x_test, y_test = standardized_split(data.data, data.target)
    baseline = LogisticRegression(max_iter=1000).fit(x_train, y_train).score(x_test, y_test)
    mlp = TabMLP(30, 2, d_layers=(32, 32), dropout=0.1)
    train_classifier(mlp, x_train, y_train, epochs=20, lr=3e-3)
    model = FTTransformer(30, (), d_out=2, d_token=16, n_blocks=1, attention_heads=2, attention_dropout=0.1,
                          ffn_dropout=0.1)
    start = time.perf_counter()
    train_classifier(model, x_train, y_train, epochs=15, lr=3e-3)
    seconds = time.perf_counter() - start
    mlp_accuracy, ft_accuracy = accuracy(mlp, x_test, y_test), accuracy(model, x_test, y_test)
    print(f"breast cancer: logistic {baseline:.3f}, MLP {mlp_accuracy:.3f}, FT-Transformer {ft_accuracy:.3f} "
          f"({seconds:.1f} s)")
    assert baseline > 0.94
    assert mlp_accuracy > baseline - 0.04
    assert ft_accuracy > baseline - 0.04
