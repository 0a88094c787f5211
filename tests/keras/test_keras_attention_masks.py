"""lamina.keras's Attention, AdditiveAttention and MultiHeadAttention with Keras 3's masks:
values and gradients against torch re-implementations of Keras's formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.helpers import check_gradients, randn

import lamina
from lamina import keras
from lamina.keras import layers
from lamina.keras.masking import mask_of, tracking_masks

Q_MASK = np.array([[1, 1, 0], [1, 1, 1]], dtype=bool)
V_MASK = np.array([[1, 1, 0, 1], [0, 1, 1, 0]], dtype=bool)


def _torch_attention(kind, params, q, v, k, q_mask, v_mask, causal, use_scale, score_mode="dot"):
    """Keras 3's formulas: the scores, e - 1e9 (1 - M), softmax, alpha v, times the query's mask."""
    if kind == "AdditiveAttention":
        hidden = torch.tanh(q[:, :, None] + k[:, None])
        e = (hidden * params["scale"]).sum(-1) if use_scale else hidden.sum(-1)
    elif score_mode == "dot":
        e = q @ k.transpose(1, 2)
        e = e * params["scale"] if use_scale else e
    else:
        pairs = q[:, :, None] + k[:, None]
        e = params["concat_score_weight"] * torch.tanh(pairs * params["scale"] if use_scale else pairs).sum(-1)
    keep = torch.ones(e.shape, dtype=torch.bool)
    if v_mask is not None:
        keep = keep & torch.tensor(v_mask)[:, None, :]
    if causal:
        keep = keep & torch.ones(e.shape[1:], dtype=torch.bool).tril()
    weights = torch.softmax(e - 1e9 * (~keep).double(), dim=-1)
    out = weights @ v
    if q_mask is not None:
        out = out * torch.tensor(q_mask, dtype=torch.float64)[:, :, None]
    return out, weights


CASES = [
    ("Attention", {}, False),
    ("Attention", {"use_scale": True}, True),
    ("Attention", {"use_scale": True, "score_mode": "concat"}, False),
    ("Attention", {"score_mode": "concat"}, True),
    ("AdditiveAttention", {}, False),
    ("AdditiveAttention", {"use_scale": False}, True),
]


@pytest.mark.parametrize("kind,options,causal", CASES)
@pytest.mark.parametrize("with_key", [False, True])
def test_attention_layers_follow_keras_formulas_with_masks(kind, options, causal, with_key, float64):
    layer = getattr(layers, kind)(**options)
    q, v, k = randn(2, 3, 4), randn(2, 4, 5 if with_key else 4, seed=1), randn(2, 4, 4, seed=2)
    inputs = [q, v, k] if with_key else [q, v]
    layer.build([tuple(x.shape) for x in inputs])
    rng = np.random.default_rng(5)
    layer.load_state_dict({name: rng.uniform(0.5, 1.5, np.shape(p)) for name, p in layer.state_dict().items()})
    tensors = [lamina.tensor(x, requires_grad=True) for x in inputs]
    out, weights = layer(tensors, mask=[Q_MASK, V_MASK], use_causal_mask=causal, return_attention_scores=True)
    leaves = {name: torch.tensor(np.asarray(p), requires_grad=True) for name, p in layer.state_dict().items()}
    t_inputs = [torch.tensor(x, requires_grad=True) for x in inputs]
    t_key = t_inputs[2] if with_key else t_inputs[1]
    ref, ref_weights = _torch_attention(kind, leaves, t_inputs[0], t_inputs[1], t_key, Q_MASK, V_MASK, causal,
                                        layer.use_scale, getattr(layer, "score_mode", "dot"))
    np.testing.assert_allclose(out.numpy(), ref.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(weights.numpy(), ref_weights.detach().numpy(), rtol=1e-10, atol=1e-12)
    assert np.all(out.numpy()[~Q_MASK] == 0.0)
    up = randn(*out.shape, seed=3)
    (out * lamina.tensor(up)).sum().backward()
    (ref * torch.tensor(up)).sum().backward()
    for x, t in zip(tensors, t_inputs):
        np.testing.assert_allclose(x.grad, t.grad.numpy(), rtol=1e-9, atol=1e-12)
    for name, p in layer.named_parameters():
        np.testing.assert_allclose(p.grad, leaves[name].grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)
    # (key 0 kept: no query sees only masked keys, whose scores near -1e9 defeat centred differences)
    first_kept = V_MASK | np.array([[1, 0, 0, 0]], dtype=bool)
    assert check_gradients(lambda *xs: layer(list(xs), mask=[Q_MASK, first_kept], use_causal_mask=causal), *inputs)


def test_a_query_with_every_key_masked_follows_the_formula_without_nan(float64):
    layer = layers.Attention()
    q, v = randn(2, 3, 4), randn(2, 3, 4, seed=1)
    left = np.array([[0, 1, 1], [1, 1, 1]], dtype=bool)           # causal: query 0 of row 0 sees no key
    out = layer([q, v], mask=[None, left], use_causal_mask=True).numpy()
    ref, _ = _torch_attention("Attention", {}, torch.tensor(q), torch.tensor(v), torch.tensor(v), None, left,
                              True, False)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-10, atol=1e-12)


def test_masks_come_from_the_inputs_and_the_query_mask_passes_on(float64):
    ids = np.array([[1, 2, 0, 0], [3, 4, 5, 0]])
    embedding = layers.Embedding(6, 4, mask_zero=True)
    attention = layers.AdditiveAttention()
    inputs = keras.Input((4,), dtype="int64")
    vectors = embedding(inputs)
    model = keras.Model(inputs, attention([vectors, vectors]))
    with tracking_masks(model):
        out = model(ids)
        np.testing.assert_array_equal(mask_of(out), ids != 0)
    x = embedding(ids)
    expected = attention([x, x], mask=[ids != 0, ids != 0]).numpy()
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12)
    assert not np.allclose(expected, attention([x, x]).numpy())


def test_attention_dropout_drops_weights_in_training_only(float64):
    layer = layers.Attention(dropout=0.5)
    q, v = randn(2, 5, 3), randn(2, 6, 3, seed=1)
    layer.eval()
    plain, weights = layer([q, v], return_attention_scores=True)
    lamina.manual_seed(4)
    dropped, dropped_weights = layer([q, v], training=True, return_attention_scores=True)
    kept = dropped_weights.numpy() != 0
    assert 0 < kept.mean() < 1
    np.testing.assert_allclose(dropped_weights.numpy()[kept], 2 * weights.numpy()[kept], rtol=1e-12)
    np.testing.assert_allclose(dropped.numpy(), dropped_weights.numpy() @ v, rtol=1e-12)
    np.testing.assert_allclose(layer([q, v]).numpy(), plain.numpy(), rtol=1e-12)


def test_attention_layers_are_keras_and_refuse_bad_arguments():
    assert isinstance(layers.Attention(), lamina.keras.attention.Attention)
    with pytest.raises(ValueError, match="score_mode"):
        layers.Attention(score_mode="general")
    with pytest.raises(lamina.errors.ShapeError, match="share"):
        layers.Attention()([randn(1, 2, 3), randn(1, 2, 4)])
    layer = layers.AdditiveAttention()
    layer([randn(1, 2, 3), randn(1, 4, 3)])
    assert layer.scale.shape == (3,) and np.abs(layer.scale.numpy()).max() <= np.sqrt(3 / 3)
    assert layer.compute_output_shape([(None, 2, 3), (None, 4, 5)]) == (None, 2, 5)


# -- MultiHeadAttention: the query's mask inside the attention mask ------------------------------------------
def _torch_mha(w, x, q_mask, v_mask, heads, key_dim, value_dim):
    """Keras's MultiHeadAttention on the projected heads: M = m_q[:, :, None] & m_v[:, None, :],
    weights = softmax(where(M, e, -1e9)) * M (Keras's masked Softmax), then the output Dense."""
    n, steps, _ = x.shape

    def heads_of(name, width):
        y = x @ w[f"attention.{name}.weight"] + w[f"attention.{name}.bias"]
        return y.reshape(n, steps, heads, width).transpose(1, 2)

    q, k, v = heads_of("query_dense", key_dim), heads_of("key_dense", key_dim), heads_of("value_dense", value_dim)
    e = q @ k.transpose(-1, -2) / np.sqrt(key_dim)
    keep = (torch.tensor(q_mask)[:, :, None] & torch.tensor(v_mask)[:, None, :])[:, None]
    weights = torch.softmax(torch.where(keep, e, torch.tensor(-1e9, dtype=e.dtype)), dim=-1) * keep
    context = (weights @ v).transpose(1, 2).reshape(n, steps, heads * value_dim)
    return context @ w["attention.output_dense.weight"] + w["attention.output_dense.bias"]


def test_multi_head_attention_puts_the_query_mask_inside_the_attention_mask(float64):
    ids = np.array([[1, 2, 0, 0], [0, 3, 4, 5]])
    mask = ids != 0
    mha = layers.MultiHeadAttention(2, 3, value_dim=2)
    x = randn(2, 4, 5)
    mha(x, x)
    w = {name: torch.tensor(np.asarray(p), requires_grad=True) for name, p in mha.state_dict().items()}
    x_t = torch.tensor(x, requires_grad=True)
    ref = _torch_mha(w, x_t, mask, mask, 2, 3, 2)
    x_l = lamina.tensor(x, requires_grad=True)
    out = mha(x_l, x_l, query_mask=mask, value_mask=mask)
    np.testing.assert_allclose(out.numpy(), ref.detach().numpy(), rtol=1e-10, atol=1e-12)
    bias = mha.attention.output_dense.bias.numpy()
    np.testing.assert_allclose(out.numpy()[~mask], np.broadcast_to(bias, (int((~mask).sum()), 5)), rtol=1e-12)
    up = randn(*out.shape, seed=4)
    (out * lamina.tensor(up)).sum().backward()
    (ref * torch.tensor(up)).sum().backward()
    np.testing.assert_allclose(x_l.grad, x_t.grad.numpy(), rtol=1e-9, atol=1e-12)
    for name, p in mha.named_parameters():
        np.testing.assert_allclose(p.grad, w[name].grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)


def test_multi_head_attention_reads_the_query_mask_a_tensor_carries(float64):
    ids = np.array([[1, 2, 0, 0], [0, 3, 4, 5]])
    inputs = keras.Input((4,), dtype="int64")
    vectors = layers.Embedding(6, 4, mask_zero=True)(inputs)
    model = keras.Model(inputs, layers.MultiHeadAttention(2, 2)(vectors, vectors))
    out = model.predict(ids, verbose=0)
    embedding, mha = (next(layer for layer in model.layers if type(layer).__name__ == name)
                      for name in ("Embedding", "MultiHeadAttention"))
    x = embedding(ids)
    keys_only = mha(x, x, attention_mask=np.broadcast_to((ids != 0)[:, None, :], (2, 4, 4))).numpy()
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[ids != 0], keys_only[ids != 0], rtol=1e-10)
    bias = mha.attention.out_bias.numpy()
    np.testing.assert_allclose(out[ids == 0], np.broadcast_to(bias, (int((ids == 0).sum()), 4)), rtol=1e-10)
