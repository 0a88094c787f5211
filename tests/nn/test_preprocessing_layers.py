"""Keras-style preprocessing layers: Normalization, Discretization, CategoryEncoding,
Hashing, IntegerLookup and StringLookup (adapt, outputs, configs, saving)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.preprocessing import KBinsDiscretizer, StandardScaler

import lamina
from helpers import assert_close, check_gradients, check_second_derivatives, compare_with_torch, randn
from lamina import ShapeError, nn
from lamina.data import ArrayDataset, DataLoader
from lamina.functional.loss import binary_cross_entropy
from lamina.nn.adapt import stable_hash


def _features(n=60, d=4, seed=0):
    return np.random.default_rng(seed).normal(3.0, 2.0, (n, d)) * np.arange(1, d + 1)


# -- Normalization --------------------------------------------------------------------------
def test_normalization_matches_standard_scaler():
    x = _features()
    layer = nn.Normalization()
    layer.adapt(x)
    scaler = StandardScaler().fit(x)
    np.testing.assert_allclose(layer.mean, scaler.mean_, rtol=1e-12)
    np.testing.assert_allclose(layer.variance, scaler.var_, rtol=1e-12)
    out = layer(lamina.tensor(x, dtype=np.float64)).numpy()
    np.testing.assert_allclose(out, scaler.transform(x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("source", ["batches", "dataset", "loader", "generator", "tensor", "steps"])
def test_streaming_adapt_equals_one_shot(source):
    x = _features(n=53)
    whole = nn.Normalization()
    whole.adapt(x)
    layer = nn.Normalization()
    if source == "batches":
        layer.adapt(x, batch_size=7)
    elif source == "dataset":
        layer.adapt(ArrayDataset(x, np.zeros(len(x))), batch_size=10)     # (x, y) batches: x only
    elif source == "loader":
        layer.adapt(DataLoader(ArrayDataset(x), batch_size=8, shuffle=True, seed=0))
    elif source == "generator":
        layer.adapt(x[i:i + 5] for i in range(0, len(x), 5))
    elif source == "tensor":
        layer.adapt(lamina.tensor(x, dtype=np.float64), batch_size=11)
    else:
        layer.adapt(x, batch_size=10, steps=3)
        whole.adapt(x[:30])
    np.testing.assert_allclose(layer.mean, whole.mean, rtol=1e-12)
    np.testing.assert_allclose(layer.variance, whole.variance, rtol=1e-12)


def test_normalization_axes_images_and_scalar():
    rng = np.random.default_rng(1)
    images = rng.normal(size=(5, 3, 4, 2))
    per_channel = nn.Normalization(axis=-1)
    per_channel.adapt(images, batch_size=2)
    np.testing.assert_allclose(per_channel.mean, images.mean(axis=(0, 1, 2)), rtol=1e-12)
    per_pixel = nn.Normalization(axis=(1, 2))
    per_pixel.adapt(images)
    np.testing.assert_allclose(per_pixel.variance, images.var(axis=(0, 3)), rtol=1e-12)
    assert per_pixel(images).shape == images.shape
    scalar = nn.Normalization(axis=None)
    scalar.adapt(images, batch_size=3)
    assert scalar.mean.shape == () and np.isclose(scalar.variance, images.var())


def test_normalization_given_statistics_and_invert():
    x = randn(6, 3, seed=2)
    mean, variance = np.array([1.0, -2.0, 0.5]), np.array([4.0, 0.25, 0.0])
    layer = nn.Normalization(mean=mean, variance=variance)
    std = np.maximum(np.sqrt(variance), 1e-7)
    out = layer(lamina.tensor(x, dtype=np.float64)).numpy()
    np.testing.assert_allclose(out, (x - mean) / std, rtol=1e-12)
    inverse = nn.Normalization(mean=mean[:2], variance=variance[:2], invert=True)
    back = inverse(lamina.tensor(out[:, :2], dtype=np.float64)).numpy()
    np.testing.assert_allclose(back, x[:, :2], rtol=1e-12)


@pytest.mark.parametrize("invert", [False, True])
def test_normalization_gradients_and_torch(invert):
    x = randn(5, 3, seed=3)
    layer = nn.Normalization(invert=invert)
    layer.adapt(_features(d=3))
    assert check_gradients(lambda t: layer(t), x)
    mean = torch.tensor(layer.mean)
    std = torch.tensor(np.sqrt(layer.variance))

    def reference(t):
        return t * std.to(t.dtype) + mean.to(t.dtype) if invert else (t - mean.to(t.dtype)) / std.to(t.dtype)

    compare_with_torch(lambda t: layer(t), reference, x)
    compare_with_torch(lambda t: layer(t), reference, x, dtype=np.float64)
    assert check_second_derivatives(lambda t: layer(t) ** 3, x)


def test_normalization_takes_integer_inputs():
    layer = nn.Normalization(mean=2.0, variance=4.0)
    out = layer(np.array([[0, 2, 6]]))
    assert out.dtype == lamina.get_default_dtype()
    np.testing.assert_allclose(out.numpy(), [[-1.0, 0.0, 2.0]])


def test_normalization_errors_name_the_layer():
    with pytest.raises(RuntimeError, match="Normalization.*adapt"):
        nn.Normalization()(randn(2, 3))
    with pytest.raises(ValueError, match="Normalization.*no data"):
        nn.Normalization().adapt(np.zeros((0, 3)))
    with pytest.raises(ShapeError, match="Normalization.*axis 3 is out of range"):
        nn.Normalization(axis=3).adapt(randn(4, 3))
    with pytest.raises(ShapeError, match="batch axis"):
        nn.Normalization(axis=0).adapt(randn(4, 3))
    layer = nn.Normalization()
    layer.adapt(randn(4, 3))
    with pytest.raises(ShapeError, match=r"Normalization.*\(3,\).*\(5,\)"):
        layer(randn(2, 5))
    with pytest.raises(ValueError, match="both mean and variance"):
        nn.Normalization(mean=1.0)


# -- Discretization -------------------------------------------------------------------------
def test_discretization_fixed_boundaries_by_hand():
    layer = nn.Discretization(bin_boundaries=[0.0, 1.0, 2.0])
    out = layer(np.array([[-1.5, 0.0, 0.5], [1.0, 2.5, 1.99]]))
    assert out.dtype == np.int64 and not out.requires_grad
    np.testing.assert_array_equal(out.numpy(), [[0, 1, 1], [2, 3, 2]])
    hot = nn.Discretization(bin_boundaries=[0.0, 1.0], output_mode="multi_hot")(np.array([[-1.0, 0.5, 0.7]]))
    np.testing.assert_array_equal(hot.numpy(), [[1, 1, 0]])
    counts = nn.Discretization(bin_boundaries=[0.0, 1.0], output_mode="count")(np.array([[-1.0, 0.5, 0.7]]))
    np.testing.assert_array_equal(counts.numpy(), [[1, 2, 0]])


def test_discretization_adapt_matches_quantiles_and_sklearn():
    values = np.random.default_rng(4).normal(size=(400, 1))
    layer = nn.Discretization(num_bins=5)
    layer.adapt(values, batch_size=64)
    np.testing.assert_allclose(layer.bin_boundaries, np.quantile(values, [0.2, 0.4, 0.6, 0.8]), rtol=1e-12)
    binner = KBinsDiscretizer(n_bins=5, encode="ordinal", strategy="quantile", quantile_method="linear")
    expected = binner.fit(values).transform(values)
    np.testing.assert_array_equal(layer(values).numpy(), expected.astype(np.int64))


def test_discretization_errors():
    with pytest.raises(ValueError, match="Discretization.*num_bins"):
        nn.Discretization()
    with pytest.raises(RuntimeError, match="Discretization.*adapt"):
        nn.Discretization(num_bins=3)(np.zeros(2))
    with pytest.raises(ValueError, match="Discretization.*output_mode"):
        nn.Discretization(num_bins=3, output_mode="tf_idf")
    with pytest.raises(ValueError, match="Discretization.*no num_bins"):
        nn.Discretization(bin_boundaries=[0.0]).adapt(np.zeros(3))


# -- CategoryEncoding and Hashing -----------------------------------------------------------
def test_category_encoding_modes():
    one_hot = nn.CategoryEncoding(4, output_mode="one_hot")
    np.testing.assert_array_equal(one_hot([3, 2, 0, 1]).numpy(), np.eye(4)[[3, 2, 0, 1]])
    assert one_hot(np.array([[1], [2]])).shape == (2, 4)
    assert one_hot(np.array([[1, 2, 3]])).shape == (1, 3, 4)
    ids = np.array([[0, 1], [0, 0], [1, 2], [3, 1]])
    np.testing.assert_array_equal(nn.CategoryEncoding(4)(ids).numpy(),
                                  [[1, 1, 0, 0], [1, 0, 0, 0], [0, 1, 1, 0], [0, 1, 0, 1]])
    counts = nn.CategoryEncoding(4, output_mode="count")
    np.testing.assert_array_equal(counts(ids).numpy(), [[1, 1, 0, 0], [2, 0, 0, 0], [0, 1, 1, 0], [0, 1, 0, 1]])
    weights = np.array([[0.1, 0.2], [0.1, 0.1], [0.2, 0.3], [0.4, 0.2]])
    expected = np.zeros((4, 4))
    np.add.at(expected, (np.repeat(np.arange(4), 2), ids.reshape(-1)), weights.reshape(-1))
    assert_close(counts(ids, count_weights=weights).numpy(), expected, 1e-6)
    with pytest.raises(ValueError, match=r"CategoryEncoding.*\[0, 4\)"):
        counts(np.array([[4, 0]]))


def test_hashing_is_stable_and_masks():
    values = np.array([["cat", "dog"], ["", "cat"]])
    layer = nn.Hashing(num_bins=7)
    first = layer(values).numpy()
    assert first.dtype == np.int64 and first[0, 0] == first[1, 1] and first.max() < 7
    expected = [int.from_bytes(__import__("hashlib").blake2b(b"cat", digest_size=8).digest(), "little") % 7]
    assert first[0, 0] == expected[0]
    masked = nn.Hashing(num_bins=7, mask_value="")(values).numpy()
    assert masked[1, 0] == 0 and (masked[values != ""] >= 1).all()
    salted = stable_hash(np.arange(200), 1000, salt=42)
    assert not np.array_equal(salted, stable_hash(np.arange(200), 1000))
    assert np.array_equal(nn.Hashing(5, salt=[1, 2])(np.array([3, 4])).numpy(),
                          nn.Hashing(5, salt=(1, 2))(np.array([3, 4])).numpy())
    np.testing.assert_array_equal(nn.Hashing(7, output_mode="one_hot")(values[:, :1]).numpy(),
                                  np.eye(7)[first[:, 0]])


# -- IntegerLookup and StringLookup ---------------------------------------------------------
def test_integer_lookup_adapt_orders_by_frequency():
    layer = nn.IntegerLookup()
    layer.adapt(np.array([[12, 1138, 42], [42, 1000, 36]]))
    assert layer.get_vocabulary() == [-1, 42, 1138, 1000, 36, 12]   # ties: larger token first
    out = layer(np.array([[12, 1138, 7]]))
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out.numpy(), [[5, 2, 0]])
    capped = nn.IntegerLookup(max_tokens=3)
    capped.adapt(np.array([5, 5, 5, 6, 6, 7]))
    assert capped.get_vocabulary() == [-1, 5, 6] and capped.vocabulary_size() == 3


def test_string_lookup_mask_oov_and_invert():
    layer = nn.StringLookup(vocabulary=["a", "b", "c"], mask_token="", num_oov_indices=2)
    assert layer.get_vocabulary() == ["", "[UNK]", "[UNK]", "a", "b", "c"]
    out = layer(np.array([["a", "", "zzz", "c"]])).numpy()
    assert out[0, 0] == 3 and out[0, 1] == 0 and out[0, 3] == 5 and out[0, 2] in (1, 2)
    assert out[0, 2] == 1 + stable_hash(np.array(["zzz"], dtype=object), 2)[0]
    inverse = nn.StringLookup(vocabulary=["a", "b", "c"], mask_token="", invert=True)
    np.testing.assert_array_equal(inverse(np.array([[0, 1, 2, 4, 9]])), [["", "[UNK]", "a", "c", "[UNK]"]])
    strict = nn.StringLookup(vocabulary=["a"], num_oov_indices=0)
    np.testing.assert_array_equal(strict(["a"]).numpy(), [0])
    with pytest.raises(KeyError, match="StringLookup.*'b'.*num_oov_indices=0"):
        strict(["b"])


def test_string_lookup_encodings_drop_the_mask():
    layer = nn.StringLookup(vocabulary=["a", "b"], mask_token="", output_mode="count")
    assert layer.get_vocabulary() == ["[UNK]", "a", "b"]
    np.testing.assert_array_equal(layer(np.array([["a", "a", "", "x"], ["b", "", "", ""]])).numpy(),
                                  [[1, 2, 0], [0, 0, 1]])
    one_hot = nn.StringLookup(vocabulary=["a", "b"], output_mode="one_hot")
    np.testing.assert_array_equal(one_hot(np.array(["b", "q"])).numpy(), [[0, 0, 1], [1, 0, 0]])
    padded = nn.StringLookup(vocabulary=["a", "b"], output_mode="multi_hot", max_tokens=5, pad_to_max_tokens=True)
    np.testing.assert_array_equal(padded(np.array([["a", "b", "a"]])).numpy(), [[0, 1, 1, 0, 0]])


def test_string_lookup_tf_idf_by_hand():
    docs = np.array([["a", "b", "b"], ["b", "c", "c"], ["a", "a", "d"]])
    layer = nn.StringLookup(output_mode="tf_idf")
    layer.adapt(docs, batch_size=2)
    vocabulary = layer.get_vocabulary()
    assert vocabulary == ["[UNK]", "b", "a", "c", "d"]
    df = {"b": 2, "a": 2, "c": 1, "d": 1}
    idf = np.array([np.log1p(3 / (1 + df[t])) for t in vocabulary[1:]])
    np.testing.assert_allclose(layer.idf_weights, np.concatenate([[idf.mean()], idf]), rtol=1e-12)
    out = layer(np.array([["b", "b", "z"]])).numpy()
    assert_close(out, [[idf.mean(), 2 * idf[0], 0, 0, 0]], 1e-6)


def test_lookup_errors():
    with pytest.raises(RuntimeError, match="StringLookup.*adapt"):
        nn.StringLookup()(["a"])
    with pytest.raises(ValueError, match="IntegerLookup.*output_mode"):
        nn.IntegerLookup(output_mode="bag")
    with pytest.raises(ValueError, match="StringLookup.*repeats"):
        nn.StringLookup(vocabulary=["a", "a"])
    with pytest.raises(ValueError, match="StringLookup.*idf_weights"):
        nn.StringLookup(vocabulary=["a"], output_mode="tf_idf")
    with pytest.raises(ValueError, match="StringLookup.*no data"):
        nn.StringLookup().adapt([])


# -- configs, state dicts and saving --------------------------------------------------------
def _adapted_layers():
    rng = np.random.default_rng(5)
    norm = nn.Normalization()
    norm.adapt(_features(d=3))
    disc = nn.Discretization(num_bins=4, output_mode="one_hot")
    disc.adapt(rng.normal(size=50))
    ints = nn.IntegerLookup(output_mode="tf_idf")
    ints.adapt(rng.integers(0, 9, (20, 3)))
    strings = nn.StringLookup(mask_token="", num_oov_indices=2)
    strings.adapt(np.array(list("abracadabra")))
    return [
        (norm, randn(4, 3)), (disc, rng.normal(size=(4, 2))), (ints, rng.integers(0, 12, (4, 3))),
        (strings, np.array(list("abcxyz"))), (nn.CategoryEncoding(5, "count"), np.array([[1, 4, 4]])),
        (nn.Hashing(9, salt=3), np.array(["p", "q"])),
    ]


def test_config_round_trip_and_state_dict():
    for layer, x in _adapted_layers():
        expected = layer(x).numpy()
        assert layer.compute_output_shape(x.shape) == expected.shape
        config = nn.layer_to_config(layer)
        rebuilt = nn.layer_from_config(config)
        np.testing.assert_array_equal(rebuilt(x).numpy(), expected)
        state = layer.state_dict()
        for key in state:
            rebuilt.state_dict()[key][...] = 0      # spoil the copy, then restore it from the state dict
        rebuilt.load_state_dict(state)
        np.testing.assert_array_equal(rebuilt(x).numpy(), expected)


def test_state_dict_fills_a_fresh_layer():
    for layer, x in _adapted_layers():
        config = layer.get_config()
        for key in ("mean", "variance", "bin_boundaries", "vocabulary", "idf_weights"):
            if config.get(key) is not None:
                config[key] = None
        if isinstance(layer, nn.Discretization):
            config["num_bins"] = 4
        fresh = type(layer)(**config)
        fresh.load_state_dict(layer.state_dict())
        np.testing.assert_array_equal(fresh(x).numpy(), layer(x).numpy())
    with pytest.raises(KeyError, match="Normalization.load_state_dict.*unexpected keys \\['average'\\]"):
        nn.Normalization().load_state_dict({"average": np.zeros(3)})


def test_state_dict_holds_the_vocabulary():
    layer = nn.StringLookup(vocabulary=["héllo", "wörld"])
    other = nn.StringLookup(vocabulary=["aaaaaa", "bbbbbb"])         # same byte count, other tokens
    other.load_state_dict(layer.state_dict())
    assert other.get_vocabulary() == ["[UNK]", "héllo", "wörld"]
    np.testing.assert_array_equal(other(["wörld"]).numpy(), [2])


def test_model_with_normalization_learns_and_saves(tmp_path):
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    x, y = data.data, data.target.astype(np.float32)[:, None]
    lamina.manual_seed(0)
    norm = nn.Normalization()
    norm.adapt(x, batch_size=128)
    model = nn.Sequential(norm, nn.Dense(16), nn.ReLU(), nn.Dense(1))
    opt = lamina.optim.Adam(model, lr=0.01)
    for _ in range(60):
        loss = binary_cross_entropy(model(x), y, from_logits=True)
        opt.zero_grad()
        loss.backward()
        opt.step()
    logits = model(x).numpy()
    assert ((logits > 0) == (y > 0.5)).mean() > 0.95
    path = tmp_path / "cancer.safetensors"
    lamina.save(model, path)
    loaded = lamina.load(path)
    np.testing.assert_allclose(loaded(x).numpy(), logits, rtol=1e-6)


@pytest.mark.parametrize("make, x", [
    (lambda: nn.StringLookup(vocabulary=list("abcd"), output_mode="multi_hot"), np.array([list("abz"), list("dda")])),
    (lambda: nn.IntegerLookup(vocabulary=[5, 7, 9], output_mode="count"), np.array([[5, 5, 3], [9, 7, 7]])),
    (lambda: nn.Hashing(6, output_mode="one_hot"), np.array(["x", "y", "z"])),
])
def test_models_starting_with_a_lookup_save_and_load(make, x, tmp_path):
    lamina.manual_seed(0)
    model = nn.Sequential(make(), nn.Dense(2))
    expected = model(x).numpy()
    lamina.save(model, tmp_path / "lookup.safetensors")
    np.testing.assert_allclose(lamina.load(tmp_path / "lookup.safetensors")(x).numpy(), expected, rtol=1e-6)
