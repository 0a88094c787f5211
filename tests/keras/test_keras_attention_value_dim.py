"""lamina.keras.layers.MultiHeadAttention with value_dim != key_dim and inputs of different widths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.helpers import check_gradients, compare_with_torch, randn

import lamina
from lamina import nn
from lamina.errors import ShapeError
from lamina.keras import layers
from lamina.keras.attention import ProjectedAttention

HEADS, KEY_DIM, VALUE_DIM = 2, 3, 5



def _torch_reference(weights, query, value, key, mask=None, causal=False):
    """Keras's attention written out in torch from the layer's weights."""
    w = {name: torch.tensor(array) for name, array in weights.items()}

    def heads(x, part, width):
        y = x @ w[f"attention.{part}_dense.weight"] + w[f"attention.{part}_dense.bias"]
        return y.reshape(x.shape[0], x.shape[1], HEADS, width).transpose(1, 2)

    q, k, v = heads(query, "query", KEY_DIM), heads(key, "key", KEY_DIM), heads(value, "value", VALUE_DIM)
    scores = q @ k.transpose(-1, -2) / KEY_DIM ** 0.5
    if mask is not None:
        scores = scores.masked_fill(~torch.as_tensor(mask)[:, None], -torch.inf)
    if causal:
        t_q, t_k = scores.shape[-2:]
        scores = scores.masked_fill(torch.ones(t_q, t_k, dtype=torch.bool).triu(1), -torch.inf)
    joined = (scores.softmax(-1) @ v).transpose(1, 2).reshape(query.shape[0], query.shape[1], HEADS * VALUE_DIM)
    return joined @ w["attention.output_dense.weight"] + w["attention.output_dense.bias"]


def _inputs():
    return randn(2, 4, 6), randn(2, 5, 7, seed=1), randn(2, 5, 3, seed=2)


@pytest.mark.parametrize("masked", [False, True])
def test_value_dim_and_different_widths_match_torch(float64, masked):
    query, value, key = _inputs()
    layer = layers.MultiHeadAttention(HEADS, KEY_DIM, value_dim=VALUE_DIM)
    layer(lamina.tensor(query), lamina.tensor(value), lamina.tensor(key))
    assert isinstance(layer.attention, ProjectedAttention)
    weights = {name: np.asarray(array) for name, array in layer.state_dict().items()}
    mask = np.random.default_rng(3).random((2, 4, 5)) < 0.7 if masked else None
    if masked:
        mask[..., 0] = True                                   # every query sees at least one key

    def ours(q, v, k):
        return layer(q, v, k, attention_mask=mask, use_causal_mask=masked)

    def theirs(q, v, k):
        return _torch_reference(weights, q, v, k, mask=mask, causal=masked)

    out = compare_with_torch(ours, theirs, query, value, key, dtype=np.float64, rtol=1e-9)
    assert out[0].shape == (2, 4, 6)
    assert check_gradients(ours, query, value, key)


def test_keras_parameter_count_and_shapes():
    query, value, key = (lamina.tensor(a) for a in _inputs())
    layer = layers.MultiHeadAttention(HEADS, KEY_DIM, value_dim=VALUE_DIM)
    out, scores = layer(query, value, key, return_attention_scores=True)
    assert out.shape == (2, 4, 6) and scores.shape == (2, HEADS, 4, 5)
    e_q, e_v, e_k, h = 6, 7, 3, HEADS
    keras_count = (e_q * h * KEY_DIM + e_k * h * KEY_DIM + e_v * h * VALUE_DIM + h * VALUE_DIM * e_q
                   + 2 * h * KEY_DIM + h * VALUE_DIM + e_q)
    assert sum(np.size(v) for v in layer.state_dict().values()) == keras_count


def test_key_by_keyword_with_value_dim_and_equal_widths_keep_lamina_attention():
    query, value, key = (lamina.tensor(a) for a in _inputs())
    layer = layers.MultiHeadAttention(HEADS, KEY_DIM, value_dim=VALUE_DIM)
    assert layer(query, value, key=key).shape == (2, 4, 6)   # the key's width is read on the call
    same = layers.MultiHeadAttention(HEADS, KEY_DIM, value_dim=KEY_DIM)
    x = lamina.tensor(randn(2, 4, 6))
    assert same(x, x).shape == (2, 4, 6)
    assert isinstance(same.attention, nn.MultiHeadAttention)
    assert same.get_config()["value_dim"] == KEY_DIM


def test_errors_name_the_layer_and_shapes():
    with pytest.raises(ValueError, match="MultiHeadAttention: num_heads, key_dim and value_dim must be positive"):
        layers.MultiHeadAttention(2, 3, value_dim=0)
    layer = layers.MultiHeadAttention(HEADS, KEY_DIM, value_dim=VALUE_DIM)
    with pytest.raises(ShapeError, match=r"key \(2, 4, 3\) and value \(2, 5, 7\) must share"):
        layer(lamina.tensor(randn(2, 4, 6)), lamina.tensor(randn(2, 5, 7)), lamina.tensor(randn(2, 4, 3)))
    with pytest.raises(ShapeError, match="attention_mask of shape"):
        layer(lamina.tensor(randn(2, 4, 6)), lamina.tensor(randn(2, 5, 7)), attention_mask=np.ones((2, 5, 4), bool))
