"""TabTransformer: forward and every gradient against a torch rewrite fed the same weights
(float64), the continuous features bypassing the Transformer, float64 gradient checks, a
save/load round trip, errors naming the model, and learning (a categorical-interaction task,
the breast-cancer data) against logistic regression."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch_tabular_attention_reference as reference
from mixed_tabular_checks import (
    XOR_CARDINALITIES,
    breast_cancer_with_categories,
    logistic_accuracy,
    mixed_accuracy,
    train_mixed,
    xor_task,
)

import lamina
from helpers import check_gradients, run_readme_section
from lamina.errors import ShapeError
from lamina.models import TabTransformer
from tabular_checks import compare_module

CARDS = (3, 5)
IDS = np.array([[0, 4], [2, 0], [1, 1], [2, 3], [0, 2]])


def _tiny(**options) -> TabTransformer:
    settings = {"d_out": 3, "d_token": 8, "n_blocks": 2, "attention_heads": 2, "mlp_hidden": (6, 4),
                "attention_dropout": 0.0, "ffn_dropout": 0.0} | options
    model = TabTransformer(3, CARDS, **settings)
    rng = np.random.default_rng(0)
    for param in model.parameters():                        # no zero biases, so that every term counts
        param.data[...] = rng.normal(0, 0.5, param.shape)
    return model


def _prefixed(params: dict, prefix: str) -> dict:
    return {f"{prefix}.{name}": value for name, value in params.items()}


@pytest.mark.parametrize("shared", [0, 2])
def test_forward_and_gradients_match_torch(f64, shared):
    model = _tiny(shared_embedding_dim=shared)
    assert ("column_embeddings" in dict(model.named_parameters())) == bool(shared)
    x = np.random.default_rng(1).normal(size=(5, 3))
    compare_module(model, model, lambda p, a, b: reference.tab_transformer(p, a, b, CARDS, 2, 2, 2), [x, IDS])


def test_one_layer_matches_torch(f64):
    layer = _tiny(n_blocks=1).blocks[0]
    tokens = np.random.default_rng(2).normal(size=(4, 2, 8))
    compare_module(layer, layer, lambda p, t: reference.transformer_layer(_prefixed(p, "layer"), "layer", t, 2),
                   [tokens], seed=3)


def test_continuous_features_bypass_the_transformer(f64):
    model = _tiny()
    x = np.random.default_rng(4).normal(size=(5, 3))
    seen = []
    mlp_forward = model.mlp.forward
    model.mlp.forward = lambda features: seen.append(features.numpy()) or mlp_forward(features)
    before = model(x, IDS).numpy()
    after = model(x + np.random.default_rng(5).normal(size=x.shape), IDS).numpy()
    transformer_part = 2 * 8                                    # the flattened tokens of the 2 columns
    np.testing.assert_array_equal(seen[0][:, :transformer_part], seen[1][:, :transformer_part])
    assert np.abs(seen[0][:, transformer_part:] - seen[1][:, transformer_part:]).min() > 1e-6
    assert np.abs(before - after).max() > 1e-6
    tokens = model.contextual_embeddings(IDS).numpy()         # one category changed: every token of its row
    changed = IDS.copy()
    changed[0, 1] = 1
    moved = np.abs(model.contextual_embeddings(changed).numpy() - tokens).max(axis=-1)
    assert (moved[0] > 1e-6).all() and (moved[1:] == 0).all()


@pytest.mark.parametrize("normalization", ["layer", "batch", "none"])
def test_float64_gradients(f64, normalization):
    model = _tiny(n_blocks=1, continuous_normalization=normalization)
    x = np.random.default_rng(6).normal(size=(5, 3))
    assert check_gradients(lambda a: model(a, IDS), x)


def test_save_and_load_round_trip(tmp_path):
    model = TabTransformer(3, CARDS, d_out=2, d_token=8, n_blocks=1, attention_heads=2, shared_embedding_dim=2,
                           continuous_normalization="batch", mlp_hidden=(5,))
    x = np.random.default_rng(7).normal(size=(5, 3)).astype(np.float32)
    train_mixed(model, x, IDS, np.array([0, 1, 1, 0, 1]), epochs=2)    # moves weights and running statistics
    lamina.save(model, tmp_path / "tab_transformer.safetensors")
    twin = lamina.load(tmp_path / "tab_transformer.safetensors")
    twin.eval()
    assert type(twin) is TabTransformer and twin.get_config() == model.get_config()
    np.testing.assert_array_equal(twin(x, IDS).numpy(), model(x, IDS).numpy())


def test_parameter_count_by_hand():
    d, n_num, shared, hidden = 8, 3, 1, (6, 4)
    model = TabTransformer(n_num, CARDS, d_out=2, d_token=d, n_blocks=2, attention_heads=2, mlp_hidden=hidden)
    assert model.shared_embedding_dim == d // 8 == shared
    embeddings = sum(CARDS) * (d - shared) + len(CARDS) * shared
    layer = 2 * 2 * d + 4 * (d * d + d) + (d * 4 * d + 4 * d) + (4 * d * d + d)
    d_mlp = len(CARDS) * d + n_num
    mlp = (d_mlp * 6 + 6) + (6 * 4 + 4) + (4 * 2 + 2)
    assert model.num_parameters() == embeddings + 2 * layer + 2 * n_num + mlp
    wide = TabTransformer(n_num, CARDS, d_token=d, n_blocks=1, attention_heads=2)
    assert wide.mlp.hidden[0].units == 4 * d_mlp and wide.mlp.hidden[1].units == 2 * d_mlp


def test_errors_name_the_model():
    model = TabTransformer(3, (4,), d_out=2, d_token=8, n_blocks=1, attention_heads=2)
    with pytest.raises(ShapeError, match=r"TabTransformer: numerical features must have shape \(batch, 3\), "
                                         r"got \(2, 5\)"):
        model(np.zeros((2, 5)), np.zeros((2, 1), dtype=int))
    with pytest.raises(ValueError, match=r"TabTransformer: categorical feature 0 has id 4, out of range \[0, 4\)"):
        model(np.zeros((2, 3)), np.array([[1], [4]]))
    with pytest.raises(ShapeError, match="TabTransformer: expected 1 categorical features, got none"):
        model(np.zeros((2, 3)))
    with pytest.raises(ShapeError, match="TabTransformer: 3 rows of numerical features but 2 of categorical"):
        model(np.zeros((3, 3)), np.zeros((2, 1), dtype=int))
    with pytest.raises(ValueError, match="TabTransformer: needs at least one categorical column"):
        TabTransformer(3, ())
    with pytest.raises(ValueError, match=r"TabTransformer: the attention width \(10\) must be divisible by the "
                                         r"number of heads \(4\)"):
        TabTransformer(3, (2,), d_token=10, attention_heads=4)
    with pytest.raises(ValueError, match="TabTransformer: continuous_normalization must be one of"):
        TabTransformer(3, (2,), continuous_normalization="group")


def test_learns_a_categorical_interaction_that_logistic_regression_cannot():
    train, test = xor_task(1200, seed=0), xor_task(600, seed=1)
    baseline = logistic_accuracy(train, test)
    model = TabTransformer(2, XOR_CARDINALITIES, d_out=2, d_token=8, n_blocks=1, attention_heads=2,
                           mlp_hidden=(32, 16), continuous_normalization="batch", attention_dropout=0.0,
                           ffn_dropout=0.0)
    start = time.perf_counter()
    train_mixed(model, *train, epochs=10)
    seconds = time.perf_counter() - start
    score = mixed_accuracy(model, *test)
    print(f"categorical XOR: logistic {baseline:.3f}, TabTransformer {score:.3f} ({seconds:.1f} s)")
    assert baseline < 0.6
    assert score > 0.85


def test_learns_breast_cancer_as_well_as_logistic_regression():
    train, test = breast_cancer_with_categories()
    baseline = logistic_accuracy(train, test)
    model = TabTransformer(30, (4,) * 5, d_out=2, d_token=8, n_blocks=1, attention_heads=2, mlp_hidden=(32, 16))
    start = time.perf_counter()
    train_mixed(model, *train, epochs=10)
    seconds = time.perf_counter() - start
    score = mixed_accuracy(model, *test)
    print(f"breast cancer: logistic {baseline:.3f}, TabTransformer {score:.3f} ({seconds:.1f} s)")
    assert baseline > 0.94
    assert score > baseline - 0.04


def test_readme_example_runs():
    printed, names = run_readme_section("TabTransformer and SAINT")
    assert isinstance(names["tab"], TabTransformer) and printed.split() == ["(8,", "2)", "(8,", "2)"]
