"""lamina.keras.layers: Keras's names and arguments give Keras's shapes and parameter counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.helpers import check_gradients, compare_with_torch, randn

import lamina
from lamina import keras, nn
from lamina.keras import layers


def _run(layer, input_shape, dtype=np.float32):
    """(output shape, Keras's parameter count, trainable count) after one call on zeros."""
    x = np.zeros((2, *input_shape), dtype=dtype)
    out = layer(lamina.tensor(x) if dtype != np.int64 else x)
    out = out[0] if isinstance(out, (list, tuple)) else out
    total = sum(np.size(v) for v in layer.state_dict().values())
    trainable = sum(p.size for p in layer.parameters(trainable_only=True))
    return tuple(out.shape[1:]), total, trainable


# (layer, input shape without batch, Keras's output shape, Keras's parameter count, trainable count)
CASES = {
    "Dense": (lambda: layers.Dense(64), (784,), (64,), 784 * 64 + 64, None),
    "Conv1D": (lambda: layers.Conv1D(8, 3, padding="same"), (10, 4), (10, 8), 3 * 4 * 8 + 8, None),
    "Conv2D": (lambda: layers.Conv2D(32, 3), (28, 28, 1), (26, 26, 32), 320, None),
    "Conv2D strides same": (lambda: layers.Conv2D(16, (3, 3), strides=(2, 2), padding="same", use_bias=False),
                            (9, 9, 3), (5, 5, 16), 3 * 3 * 3 * 16, None),
    "Conv3D": (lambda: layers.Conv3D(4, 3), (5, 6, 7, 2), (3, 4, 5, 4), 27 * 2 * 4 + 4, None),
    "Conv2DTranspose": (lambda: layers.Conv2DTranspose(8, 3, strides=2, padding="same"), (4, 4, 3), (8, 8, 8),
                        9 * 3 * 8 + 8, None),
    "SeparableConv2D": (lambda: layers.SeparableConv2D(16, 3), (8, 8, 4), (6, 6, 16), 9 * 4 + 4 * 16 + 16, None),
    "DepthwiseConv2D": (lambda: layers.DepthwiseConv2D(3, depth_multiplier=2), (8, 8, 4), (6, 6, 8),
                        9 * 4 * 2 + 8, None),
    "MaxPooling1D": (lambda: layers.MaxPooling1D(2), (10, 3), (5, 3), 0, None),
    "MaxPooling2D": (lambda: layers.MaxPooling2D(pool_size=(2, 2)), (26, 26, 32), (13, 13, 32), 0, None),
    "MaxPooling2D strides": (lambda: layers.MaxPooling2D(3, strides=2), (9, 9, 2), (4, 4, 2), 0, None),
    "MaxPooling3D": (lambda: layers.MaxPooling3D(), (4, 4, 4, 2), (2, 2, 2, 2), 0, None),
    "AveragePooling1D": (lambda: layers.AveragePooling1D(), (10, 3), (5, 3), 0, None),
    "AveragePooling2D": (lambda: layers.AveragePooling2D(), (6, 6, 3), (3, 3, 3), 0, None),
    "AveragePooling3D": (lambda: layers.AveragePooling3D(), (4, 4, 4, 2), (2, 2, 2, 2), 0, None),
    "GlobalAveragePooling1D": (lambda: layers.GlobalAveragePooling1D(), (10, 3), (3,), 0, None),
    "GlobalAveragePooling2D": (lambda: layers.GlobalAveragePooling2D(), (5, 5, 7), (7,), 0, None),
    "GlobalAveragePooling2D keepdims": (lambda: layers.GlobalAveragePooling2D(keepdims=True), (5, 5, 7),
                                        (1, 1, 7), 0, None),
    "GlobalAveragePooling3D": (lambda: layers.GlobalAveragePooling3D(), (2, 3, 4, 5), (5,), 0, None),
    "GlobalMaxPooling1D": (lambda: layers.GlobalMaxPooling1D(), (10, 3), (3,), 0, None),
    "GlobalMaxPooling2D": (lambda: layers.GlobalMaxPooling2D(), (5, 5, 7), (7,), 0, None),
    "GlobalMaxPooling3D": (lambda: layers.GlobalMaxPooling3D(), (2, 3, 4, 5), (5,), 0, None),
    "Flatten": (lambda: layers.Flatten(), (5, 5, 64), (1600,), 0, None),
    "Reshape": (lambda: layers.Reshape((3, 4)), (12,), (3, 4), 0, None),
    "Dropout": (lambda: layers.Dropout(0.5), (7,), (7,), 0, None),
    "SpatialDropout2D": (lambda: layers.SpatialDropout2D(0.2), (4, 4, 3), (4, 4, 3), 0, None),
    "BatchNormalization": (lambda: layers.BatchNormalization(), (6, 6, 16), (6, 6, 16), 4 * 16, 2 * 16),
    "LayerNormalization": (lambda: layers.LayerNormalization(), (5, 8), (5, 8), 2 * 8, None),
    "Activation": (lambda: layers.Activation("softmax"), (4,), (4,), 0, None),
    "ReLU": (lambda: layers.ReLU(), (4,), (4,), 0, None),
    "LeakyReLU": (lambda: layers.LeakyReLU(), (4,), (4,), 0, None),
    "SimpleRNN": (lambda: layers.SimpleRNN(4), (6, 3), (4,), 3 * 4 + 4 * 4 + 4, None),
    "GRU": (lambda: layers.GRU(4, return_sequences=True), (6, 3), (6, 4), 3 * (3 * 4 + 4 * 4 + 2 * 4), None),
    "LSTM": (lambda: layers.LSTM(4), (6, 3), (4,), 4 * (3 * 4 + 4 * 4 + 4), None),
    "Bidirectional": (lambda: layers.Bidirectional(layers.LSTM(4, return_sequences=True)), (6, 3), (6, 8),
                      2 * 4 * (3 * 4 + 4 * 4 + 4), None),
    "TimeDistributed": (lambda: layers.TimeDistributed(layers.Dense(5)), (6, 3), (6, 5), 3 * 5 + 5, None),
    "Rescaling": (lambda: layers.Rescaling(1 / 255), (4, 4, 3), (4, 4, 3), 0, None),
    "Resizing": (lambda: layers.Resizing(8, 6), (4, 4, 3), (8, 6, 3), 0, None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_output_shapes_and_parameter_counts_are_keras(case):
    make, input_shape, output_shape, params, trainable = CASES[case]
    shape, total, trained = _run(make(), input_shape)
    assert shape == output_shape
    assert total == params
    assert trained == (params if trainable is None else trainable)


def test_embedding_and_attention_shapes_and_counts():
    shape, total, _ = _run(layers.Embedding(1000, 64), (10,), dtype=np.int64)
    assert shape == (10, 64) and total == 64000
    table = layers.Embedding(1000, 64)(np.zeros((1, 1), dtype=np.int64))
    del table
    embedding = layers.Embedding(50, 8)
    embedding(np.arange(50)[None])
    assert np.abs(embedding.weight.data).max() <= 0.05                    # Keras's U(-0.05, 0.05)

    mha = layers.MultiHeadAttention(num_heads=2, key_dim=4)
    query, value = lamina.tensor(randn(3, 5, 16)), lamina.tensor(randn(3, 7, 16, seed=1))
    out = mha(query, value)
    assert out.shape == (3, 5, 16)
    keras_count = 3 * (16 * 2 * 4 + 2 * 4) + 2 * 4 * 16 + 16
    assert sum(np.size(v) for v in mha.state_dict().values()) == keras_count
    out, scores = mha(query, value, return_attention_scores=True)
    assert scores.shape == (3, 2, 5, 7)


def test_keras_defaults_differ_from_lamina_where_keras_says():
    batch_norm = layers.BatchNormalization()
    assert (batch_norm.momentum, batch_norm.eps) == (0.99, 1e-3)
    assert layers.LeakyReLU().alpha == 0.3 and layers.LeakyReLU(alpha=0.1).alpha == 0.1
    assert layers.LayerNormalization().eps == 1e-3
    dense = layers.Dense(200)
    dense(lamina.tensor(np.zeros((1, 300), dtype=np.float32)))
    limit = np.sqrt(6 / (300 + 200))                                     # glorot uniform, not He
    assert np.abs(dense.weight.data).max() <= limit and np.abs(dense.weight.data).max() > 0.9 * limit
    assert isinstance(layers.ReLU(max_value=6), nn.ReLU6)


def test_moving_statistics_follow_keras_momentum():
    layer = layers.BatchNormalization(momentum=0.9)
    x = randn(16, 3) + 2.0
    layer(lamina.tensor(x))
    np.testing.assert_allclose(layer.running_mean, 0.1 * x.mean(axis=0), rtol=1e-5)


def test_layer_options_lamina_lacks_are_named():
    with pytest.raises(ValueError, match="MaxPooling2D: padding='full'"):
        layers.MaxPooling2D(padding="full")
    with pytest.raises(ValueError, match=r"Dense: option\(s\) \['kernel_regularizer'\]"):
        layers.Dense(4, kernel_regularizer="l2")
    with pytest.raises(ValueError, match="LSTM: only activation='tanh'"):
        layers.LSTM(4, activation="relu")


def test_rescaling_gradients_and_torch():
    layer = layers.Rescaling(0.5, offset=-1.0)
    assert check_gradients(lambda x: layer(x), randn(2, 3, 3, 2))
    compare_with_torch(lambda x: layer(x), lambda x: x * 0.5 - 1.0, randn(2, 3, 3, 2))


def test_resizing_gradients_and_torch():
    layer = layers.Resizing(5, 7)
    assert check_gradients(lambda x: layer(x), randn(2, 3, 4, 2))

    def reference(x):
        nchw = x.permute(0, 3, 1, 2)
        return torch.nn.functional.interpolate(nchw, size=(5, 7), mode="bilinear", align_corners=False).permute(
            0, 2, 3, 1)

    compare_with_torch(lambda x: layer(x), reference, randn(2, 3, 4, 2))


def test_functional_model_from_keras_layers():
    inputs = keras.Input(shape=(8, 8, 3))
    x = layers.Rescaling(1 / 255)(inputs)
    x = layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    y = layers.Add()([x, layers.Conv2D(4, 1)(x)])
    outputs = layers.Dense(2, activation="softmax")(layers.GlobalAveragePooling2D()(y))
    model = keras.Model(inputs, outputs)
    assert model.predict(np.zeros((3, 8, 8, 3), dtype=np.float32), verbose=0).shape == (3, 2)


@pytest.mark.parametrize("name", ["SimpleRNN", "LSTM"])
def test_one_bias_recurrent_layers_equal_lamina_with_a_zero_recurrent_bias(name, tmp_path):
    x = randn(3, 5, 4)
    keras_layer = getattr(layers, name)(6, return_sequences=True)
    out = keras_layer(lamina.tensor(x))
    assert "recurrent_bias" not in keras_layer.state_dict()
    plain = getattr(nn, name)(6, return_sequences=True)
    plain(lamina.tensor(x))
    plain.load_state_dict({**keras_layer.state_dict(), "recurrent_bias": np.zeros_like(keras_layer.bias.data)})
    np.testing.assert_allclose(out.data, plain(lamina.tensor(x)).data, rtol=1e-6, atol=1e-7)
    lamina.set_default_dtype(np.float64)
    try:
        small = getattr(layers, name)(3, return_sequences=True)
        small(lamina.tensor(randn(2, 3, 2)))
        assert check_gradients(lambda v: small(v), randn(2, 3, 2, seed=4))
    finally:
        lamina.set_default_dtype(np.float32)

    model = keras.Sequential([keras.Input((5, 4)), keras_layer])
    model.save(tmp_path / "rnn.keras")
    loaded = keras.models.load_model(tmp_path / "rnn.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), out.data, rtol=1e-6)
