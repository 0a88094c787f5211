"""LinearAttention and PerformerAttention: outputs, input and parameter gradients against
PyTorch multi-head references (self- and cross-attention, causal), finite differences, the
feature redraw, the configuration round trip and the errors naming the layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, randn
from lamina import nn
from lamina.errors import ShapeError
from torch_linear_sequence import (
    compare_layer_with_torch,
    elu_plus_one,
    heads,
    kernel_attention_layer,
    linear,
    merged,
    performer,
    quadratic_linear_attention,
)


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)
    yield
    lamina.set_default_dtype(np.float32)


@pytest.mark.parametrize("feature_map", ["elu+1", "relu"])
@pytest.mark.parametrize("causal", [False, True])
def test_linear_attention_matches_torch(f64, causal, feature_map):
    layer = nn.LinearAttention(8, num_heads=2, feature_map=feature_map, causal=causal, chunk_size=3)
    phi = elu_plus_one if feature_map == "elu+1" else torch.relu
    reference = kernel_attention_layer(2, lambda q, k, v: quadratic_linear_attention(q, k, v, phi, causal))
    compare_layer_with_torch(layer, reference, randn(2, 7, 8))


def test_linear_attention_over_other_keys_matches_torch(f64):
    layer = nn.LinearAttention(8, num_heads=4)
    query, memory = randn(2, 3, 8), randn(2, 6, 8, seed=1)
    memory_t = torch.tensor(memory)

    def reference(x, params):
        q = heads(linear(x, params, "q_proj"), 4)
        k, v = (heads(linear(memory_t, params, name), 4) for name in ("k_proj", "v_proj"))
        return linear(merged(quadratic_linear_attention(q, k, v, elu_plus_one, False)), params, "out_proj")

    compare_layer_with_torch(layer, reference, query, key=lamina.tensor(memory, dtype=np.float64))


@pytest.mark.parametrize("causal", [False, True])
def test_performer_matches_torch_and_redraws_its_features(f64, causal):
    layer = nn.PerformerAttention(8, num_heads=2, num_features=6, causal=causal, chunk_size=2, seed=3)
    x = randn(2, 5, 8)
    w = torch.tensor(np.asarray(layer.state_dict()["projection"]))
    compare_layer_with_torch(layer, kernel_attention_layer(2, lambda q, k, v: performer(q, k, v, w, causal)), x)
    before = layer(lamina.tensor(x)).numpy()
    layer.redraw_features(seed=4)
    assert layer.state_dict()["projection"].shape == (6, 4)
    assert not np.allclose(layer(lamina.tensor(x)).numpy(), before)
    layer.redraw_features(seed=3)
    np.testing.assert_allclose(layer(lamina.tensor(x)).numpy(), before, rtol=1e-12)


def test_gradcheck_of_both_layers(f64):
    for layer in (nn.LinearAttention(4, 2, causal=True, chunk_size=2), nn.PerformerAttention(4, 2, seed=0)):
        layer.build((1, 3, 4))
        assert check_gradients(layer, randn(1, 3, 4))


def test_config_round_trip_and_default_features():
    layer = nn.PerformerAttention(16, num_heads=2, causal=True, seed=5)
    assert layer.num_features == 8 * 3                  # d ceil(log d) for d = 8
    copy = nn.PerformerAttention(**layer.get_config())
    np.testing.assert_array_equal(copy.state_dict()["projection"], layer.state_dict()["projection"])
    linear_layer = nn.LinearAttention(8, 2, feature_map="relu", causal=True)
    assert nn.LinearAttention(**linear_layer.get_config()).get_config() == linear_layer.get_config()


def test_errors_name_the_layer():
    with pytest.raises(ValueError, match="LinearAttention: embed_dim 6 is not divisible by num_heads 4"):
        nn.LinearAttention(6, 4)
    with pytest.raises(ValueError, match="LinearAttention: feature_map must be"):
        nn.LinearAttention(8, 2, feature_map="softmax")
    layer = nn.PerformerAttention(8, 2, causal=True)
    with pytest.raises(ShapeError, match=r"PerformerAttention: .*\(batch, time, 8\), got \(2, 5, 6\)"):
        layer(lamina.tensor(randn(2, 5, 6)))
    layer(lamina.tensor(randn(2, 5, 8)))
    with pytest.raises(ShapeError, match=r"PerformerAttention: got an input of shape \(2, 5\) .*expected a query"):
        layer(lamina.tensor(randn(2, 5)))
    with pytest.raises(ShapeError, match="PerformerAttention: a causal layer attends over its own input"):
        layer(lamina.tensor(randn(2, 5, 8)), lamina.tensor(randn(2, 4, 8)))
