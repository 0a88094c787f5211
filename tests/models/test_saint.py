"""SAINT: intersample attention against a float64 torch rewrite (values and gradients), its rows
permuted with the batch and mixing the batch's rows; the whole model against a torch rewrite
fed the same weights, float64 gradient checks, a save/load round trip, errors naming the
model, and learning (a categorical-interaction task, the breast-cancer data) against logistic
regression."""

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
from lamina.models import SAINT, IntersampleAttention
from tabular_checks import compare_module

CARDS = (3,)
IDS = np.array([[0], [2], [1], [2], [0]])
LAYOUTS = {"colrow": ["col", "row", "col", "row"], "col": ["col", "col"], "row": ["row", "row"]}


def _randomized(model):
    rng = np.random.default_rng(0)
    for param in model.parameters():                        # no zero biases, so that every term counts
        param.data[...] = rng.normal(0, 0.5, param.shape)
    return model


def _tiny(**options) -> SAINT:
    settings = {"d_out": 3, "d_token": 4, "n_blocks": 2, "attention_heads": 2, "intersample_heads": 2,
                "ffn_multiplier": 2, "num_hidden": 3, "head_hidden": 5, "attention_dropout": 0.0,
                "ffn_dropout": 0.0} | options
    return _randomized(SAINT(2, CARDS, **settings))


@pytest.mark.parametrize("heads", [1, 3])
def test_intersample_attention_matches_torch(f64, heads):
    layer = _randomized(IntersampleAttention(6, heads=heads))
    x = np.random.default_rng(1).normal(size=(5, 3, 2))
    compare_module(layer, layer, lambda p, a: reference.intersample_attention(
        {f"layer.{name}": value for name, value in p.items()}, "layer", a, heads), [x])


def test_intersample_attention_permutes_with_the_rows_and_mixes_them(f64):
    layer = _randomized(IntersampleAttention(6, heads=2))
    x = np.random.default_rng(2).normal(size=(5, 3, 2))
    order = np.array([3, 0, 4, 1, 2])
    out = layer(x).numpy()
    np.testing.assert_allclose(layer(x[order]).numpy(), out[order], rtol=1e-12, atol=1e-14)
    changed = x.copy()
    changed[0] += np.random.default_rng(3).normal(size=(3, 2))
    moved = np.abs(layer(changed).numpy() - out).reshape(5, -1).max(axis=1)
    assert (moved > 1e-6).all()                              # every row's output depends on row 0
    assert check_gradients(layer, x)


@pytest.mark.parametrize("attention_type", ["colrow", "col", "row"])
def test_forward_and_gradients_match_torch(f64, attention_type):
    model = _tiny(attention_type=attention_type)
    x = np.random.default_rng(4).normal(size=(5, 2))
    compare_module(model, model, lambda p, a, b: reference.saint(p, a, b, CARDS, LAYOUTS[attention_type], 2, 2),
                   [x, IDS])


@pytest.mark.parametrize("attention_type", ["colrow", "col"])
def test_rows_interact_only_through_intersample_attention(f64, attention_type):
    model = _tiny(attention_type=attention_type)
    x = np.random.default_rng(5).normal(size=(5, 2))
    order = np.array([4, 2, 0, 3, 1])
    out = model(x, IDS).numpy()
    np.testing.assert_allclose(model(x[order], IDS[order]).numpy(), out[order], rtol=1e-11, atol=1e-13)
    changed = x.copy()
    changed[0] += 1.0
    moved = np.abs(model(changed, IDS).numpy() - out).max(axis=1)
    assert moved[0] > 1e-6
    if attention_type == "colrow":
        assert (moved[1:] > 1e-9).all()
    else:
        assert (moved[1:] == 0).all()


def test_float64_gradients(f64):
    model = _tiny(n_blocks=1)
    x = np.random.default_rng(6).normal(size=(4, 2))
    assert check_gradients(lambda a: model(a, IDS[:4]), x)


def test_save_and_load_round_trip(tmp_path):
    model = SAINT(2, CARDS, d_out=2, d_token=4, n_blocks=1, attention_heads=2, intersample_heads=2,
                  num_hidden=3, head_hidden=5, pretraining=True)
    x = np.random.default_rng(7).normal(size=(5, 2)).astype(np.float32)
    train_mixed(model, x, IDS, np.array([0, 1, 1, 0, 1]), epochs=2)
    lamina.save(model, tmp_path / "saint.safetensors")
    twin = lamina.load(tmp_path / "saint.safetensors")
    twin.eval()
    assert type(twin) is SAINT and twin.get_config() == model.get_config()
    np.testing.assert_array_equal(twin(x, IDS).numpy(), model(x, IDS).numpy())


def test_pretraining_loss_matches_torch(f64):
    model = _tiny(pretraining=True, projection_dim=3)
    x = np.random.default_rng(8).normal(size=(5, 2))
    options = {"cutmix_probability": 0.4, "mixup_alpha": 0.7, "temperature": 0.5}
    compare_module(model, lambda a, b: model.pretraining_loss(a, b, rng=np.random.default_rng(9), **options),
                   lambda p, a, b: reference.saint_pretraining_loss(p, a, b, CARDS, LAYOUTS["colrow"], 2, 2,
                                                                    np.random.default_rng(9), **options), [x, IDS])


def test_pretraining_lowers_its_loss_and_leaves_predictions_alone():
    x_num, x_cat, _ = xor_task(256, seed=2)
    plain = SAINT(2, XOR_CARDINALITIES, d_out=2, d_token=8, n_blocks=1, attention_heads=2, num_hidden=8,
                  head_hidden=8)
    lamina.manual_seed(0)
    model = SAINT(2, XOR_CARDINALITIES, d_out=2, d_token=8, n_blocks=1, attention_heads=2, num_hidden=8,
                  head_hidden=8, pretraining=True)
    assert model.num_parameters() > plain.num_parameters()
    optimizer = lamina.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(50):
        optimizer.zero_grad()
        loss = model.pretraining_loss(x_num, x_cat, rng=np.random.default_rng(step))
        loss.backward()
        optimizer.step()
        losses.append(float(loss.numpy()))
    print(f"pre-training loss {np.mean(losses[:5]):.3f} -> {np.mean(losses[-5:]):.3f}")
    assert np.mean(losses[-5:]) < 0.85 * np.mean(losses[:5])
    assert model(x_num[:4], x_cat[:4]).shape == (4, 2)
    with pytest.raises(ValueError, match="SAINT: built without pre-training heads; pass pretraining=True"):
        plain.pretraining_loss(x_num, x_cat)


def test_errors_name_the_model():
    model = SAINT(3, (4,), d_out=2, d_token=4, n_blocks=1, attention_heads=2)
    with pytest.raises(ShapeError, match=r"SAINT: numerical features must have shape \(batch, 3\), got \(2, 5\)"):
        model(np.zeros((2, 5)), np.zeros((2, 1), dtype=int))
    with pytest.raises(ValueError, match=r"SAINT: categorical feature 0 has id 4, out of range \[0, 4\)"):
        model(np.zeros((2, 3)), np.array([[1], [4]]))
    with pytest.raises(ShapeError, match="SAINT: expected 1 categorical features, got none"):
        model(np.zeros((2, 3)))
    with pytest.raises(ShapeError, match="SAINT: 3 rows of numerical features but 2 of categorical"):
        model(np.zeros((3, 3)), np.zeros((2, 1), dtype=int))
    with pytest.raises(ValueError, match=r"SAINT: the row width \(1 \+ n_cat \+ n_num\) d_token = 20 must be "
                                         r"divisible by intersample_heads \(3\)"):
        SAINT(3, (4,), d_token=4, attention_heads=2, intersample_heads=3)
    with pytest.raises(ValueError, match="SAINT: attention_type must be one of"):
        SAINT(3, attention_type="rowcol")
    with pytest.raises(ShapeError, match=r"IntersampleAttention: expected rows \(N, ...\) of 6 values each, "
                                         r"got shape \(2, 5\)"):
        IntersampleAttention(6)(np.zeros((2, 5)))


def test_learns_a_categorical_interaction_that_logistic_regression_cannot():
    train, test = xor_task(1200, seed=0), xor_task(600, seed=1)
    baseline = logistic_accuracy(train, test)
    model = SAINT(2, XOR_CARDINALITIES, d_out=2, d_token=8, n_blocks=1, attention_heads=2, ffn_multiplier=2,
                  num_hidden=16, head_hidden=16, attention_dropout=0.0, ffn_dropout=0.0)
    start = time.perf_counter()
    train_mixed(model, *train, epochs=6)
    seconds = time.perf_counter() - start
    score = mixed_accuracy(model, *test)
    print(f"categorical XOR: logistic {baseline:.3f}, SAINT {score:.3f} ({seconds:.1f} s)")
    assert baseline < 0.6
    assert score > 0.85


def test_learns_breast_cancer_as_well_as_logistic_regression():
    (x_train, _, y_train), (x_test, _, y_test) = breast_cancer_with_categories()
    baseline = logistic_accuracy((x_train, np.zeros((len(x_train), 1)), y_train),
                                 (x_test, np.zeros((len(x_test), 1)), y_test))
    model = SAINT(30, (), d_out=2, d_token=8, n_blocks=1, attention_heads=2, ffn_multiplier=1, num_hidden=16,
                  head_hidden=16)
    start = time.perf_counter()
    train_mixed(model, x_train, None, y_train, epochs=10)
    seconds = time.perf_counter() - start
    score = mixed_accuracy(model, x_test, None, y_test)
    print(f"breast cancer: logistic {baseline:.3f}, SAINT {score:.3f} ({seconds:.1f} s)")
    assert baseline > 0.94
    assert score > baseline - 0.04


def test_readme_example_runs():
    printed, names = run_readme_section("TabTransformer and SAINT")
    assert isinstance(names["saint"], SAINT) and printed.split() == ["(8,", "2)", "(8,", "2)"]
