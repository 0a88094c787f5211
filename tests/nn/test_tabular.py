"""Inputs of tabular models: the feature tokenizer, periodic embeddings and piecewise-linear
encodings against their formulas and torch re-implementations (values and every gradient),
quantile bins, float64 gradient checks, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients
from lamina.errors import ShapeError
from lamina.nn import FeatureTokenizer, PeriodicEmbeddings, PiecewiseLinearEncoding, quantile_bins
from tabular_checks import compare_module


@pytest.fixture(autouse=True)
def _float64():
    lamina.set_default_dtype(np.float64)


def torch_tokens(p, x_num, x_cat, cardinalities):
    offsets = torch.tensor(np.cumsum((0, *cardinalities[:-1])))
    numbers = x_num[..., None] * p["num_weight"] + p["num_bias"]
    categories = p["cat_embeddings"][x_cat + offsets] + p["cat_bias"]
    cls = p["cls"].expand(len(x_num), 1, -1)
    return torch.cat([numbers, categories, cls], dim=1)


def test_feature_tokenizer_matches_its_formula():
    cards = (4, 2, 3)
    tokenizer = FeatureTokenizer(3, cards, d_token=5)
    x = np.random.default_rng(0).normal(size=(6, 3))
    ids = np.array([[0, 1, 2], [3, 0, 0], [2, 1, 1], [1, 1, 2], [0, 0, 0], [3, 1, 1]])
    compare_module(tokenizer, tokenizer, lambda p, a, b: torch_tokens(p, a, b, cards), [x, ids])
    out = tokenizer(x, ids).numpy()
    assert out.shape == (6, 3 + 3 + 1, 5) and tokenizer.n_tokens == 7
    table = tokenizer.cat_embeddings.data
    assert_close(out[1, 3 + 2], table[4 + 2 + 0] + tokenizer.cat_bias.data[2], 1e-15, "feature 2, category 0")
    assert_close(out[:, -1], np.broadcast_to(tokenizer.cls.data, (6, 5)), 0, "[CLS] last")
    bound = 1 / math.sqrt(5)
    assert all(np.abs(p.data).max() <= bound for p in tokenizer.parameters())


def test_feature_tokenizer_with_numbers_or_categories_alone():
    only_numbers = FeatureTokenizer(2, (), d_token=3)
    assert only_numbers(np.ones((4, 2))).shape == (4, 3, 3)
    only_categories = FeatureTokenizer(0, (5,), d_token=3)
    assert only_categories(None, np.array([[4], [0]])).shape == (2, 2, 3)
    assert only_numbers.num_parameters() == 2 * 2 * 3 + 3
    assert only_categories.num_parameters() == 5 * 3 + 3 + 3


def test_feature_tokenizer_errors_name_the_layer():
    tokenizer = FeatureTokenizer(2, (3,), d_token=4, name="tok")
    who = "FeatureTokenizer 'tok': "
    with pytest.raises(ShapeError, match=who + r"numerical features must have shape \(batch, 2\), got \(3, 4\)"):
        tokenizer(np.zeros((3, 4)), np.zeros((3, 1), dtype=int))
    with pytest.raises(ValueError, match=who + r"categorical feature 0 has id 3, out of range \[0, 3\)"):
        tokenizer(np.zeros((2, 2)), np.array([[0], [3]]))
    with pytest.raises(ShapeError, match=who + r"categorical features must have shape \(2, 1\), got \(3, 1\)"):
        tokenizer(np.zeros((2, 2)), np.zeros((3, 1), dtype=int))
    with pytest.raises(TypeError, match=who + "categorical features must be integer ids"):
        tokenizer(np.zeros((2, 2)), np.zeros((2, 1)))
    with pytest.raises(ValueError, match="at least one feature"):
        FeatureTokenizer(0, ())


def torch_periodic(p, x, lite):
    angles = 2 * math.pi * x[..., None] * p["frequencies"]
    v = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    out = v @ p["weight"] if lite else torch.einsum("nfk,fkd->nfd", v, p["weight"])
    return torch.relu(out + p["bias"])


@pytest.mark.parametrize("lite", [False, True])
def test_periodic_embeddings_match_torch(lite):
    layer = PeriodicEmbeddings(3, d_embedding=4, n_frequencies=5, frequency_scale=0.5, lite=lite)
    x = np.random.default_rng(1).normal(size=(7, 3))
    compare_module(layer, layer, lambda p, t: torch_periodic(p, t, lite), [x])
    assert layer(x).shape == (7, 3, 4)
    assert np.abs(layer.frequencies.data).max() <= 3 * 0.5
    assert layer.num_parameters() == 3 * 5 + (10 * 4 if lite else 3 * 10 * 4) + 3 * 4


def test_periodic_embeddings_gradients():
    layer = PeriodicEmbeddings(2, d_embedding=3, n_frequencies=2, frequency_scale=1.0, activation=False)
    assert check_gradients(lambda t: layer(t), np.random.default_rng(2).normal(size=(4, 2)))


def test_quantile_bins_are_the_training_quantiles():
    rng = np.random.default_rng(3)
    x = np.stack([rng.normal(size=200), rng.integers(0, 3, size=200).astype(float)], axis=1)
    bins = quantile_bins(x, n_bins=8)
    assert_close(bins[0], np.quantile(x[:, 0], np.linspace(0, 1, 9)), 1e-15, "feature 0 edges")
    assert_close(bins[1], np.array([0.0, 1.0, 2.0]), 0, "repeated quantiles merged")
    with pytest.raises(ValueError, match="quantile_bins: feature 1 takes a single value"):
        quantile_bins(np.stack([x[:, 0], np.ones(200)], axis=1))


def reference_encoding(x, bins):
    """The paper's encoding, one value and one bin at a time."""
    rows = []
    for sample in x:
        row = []
        for value, edges in zip(sample, bins):
            count = len(edges) - 1
            for t in range(count):
                ratio = (value - edges[t]) / (edges[t + 1] - edges[t])
                if t > 0:
                    ratio = max(ratio, 0.0)
                if t < count - 1:
                    ratio = min(ratio, 1.0)
                row.append(ratio)
        rows.append(row)
    return np.array(rows)


def torch_encoding(x, bins):
    parts = []
    for j, edges in enumerate(bins):
        edges = torch.tensor(edges)
        ratio = (x[:, j:j + 1] - edges[:-1]) / (edges[1:] - edges[:-1])
        lower = torch.cat([ratio[:, :1], ratio[:, 1:].clamp(min=0)], dim=1)
        parts.append(torch.cat([lower[:, :-1].clamp(max=1), lower[:, -1:]], dim=1))
    return torch.cat(parts, dim=1)


def test_piecewise_linear_encoding_matches_the_paper():
    rng = np.random.default_rng(4)
    train = rng.normal(size=(100, 3))
    bins = quantile_bins(train, n_bins=4)
    encoding = PiecewiseLinearEncoding(bins)
    x = np.concatenate([rng.normal(size=(5, 3)), [[-9.0, 0.0, 9.0]]])         # the last row beyond the edges
    out = encoding(x).numpy()
    assert out.shape == (6, encoding.n_bins) == (6, 12)
    assert_close(out, reference_encoding(x, bins), 1e-14, "encoding")
    assert out[-1, 0] < 0 and out[-1, -1] > 1                                    # outer bins are not clipped
    compare_module(encoding, encoding, lambda p, t: torch_encoding(t, bins), [x])
    one_bin = PiecewiseLinearEncoding([np.array([0.0, 2.0])])
    assert_close(one_bin(np.array([[3.0], [-1.0]])).numpy(), np.array([[1.5], [-0.5]]), 1e-15, "a single bin")


def test_piecewise_linear_encoding_errors():
    with pytest.raises(ValueError, match="PiecewiseLinearEncoding: the edges of feature 1 must be at least two "
                                         "increasing values"):
        PiecewiseLinearEncoding([np.array([0.0, 1.0]), np.array([1.0, 0.5])])
    encoding = PiecewiseLinearEncoding([np.array([0.0, 1.0])] * 2)
    with pytest.raises(ShapeError, match=r"numerical features must have shape \(batch, 2\), got \(4, 3\)"):
        encoding(np.zeros((4, 3)))
