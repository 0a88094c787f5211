"""MultiHeadAttention's per-head hook point ``head_outputs``: off by default, bit-identical outputs
when on and unpatched (ordinary, cached and grouped-query calls, in GPT-2 and Llama), the
heads' contexts (N, T, h, d) seen and replaced by hooks, gradients through a patched head
(float64 differences, PyTorch), and the layer's config and weights unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch, randn
from lamina import models
from lamina.nn import HeadOutputs, MultiHeadAttention
from lamina.text import caching_keys_values

E, HEADS, KV_HEADS, T = 8, 4, 2, 5


def _attention(**options) -> MultiHeadAttention:
    lamina.manual_seed(0)
    layer = MultiHeadAttention(E, HEADS, **options)
    layer(randn(1, 2, E))
    rng = np.random.default_rng(1)
    for p in layer.parameters():                       # nonzero biases
        p.data = (p.data + 0.1 * rng.standard_normal(p.shape)).astype(p.data.dtype)
    return layer.eval()


def _stepwise(model, ids, steps=(2, 1, 2)) -> np.ndarray:
    """The model's outputs read a few steps at a time through its key/value cache."""
    outputs, start = [], 0
    with lamina.no_grad(), caching_keys_values(model):
        for size in steps:
            outputs.append(model(ids[:, start:start + size]).numpy())
            start += size
    return np.concatenate(outputs, axis=1)


@pytest.mark.parametrize("options", [{}, {"num_kv_heads": KV_HEADS, "rotary": True}])
def test_enabled_but_unpatched_hooks_change_no_bit_ordinary_or_cached(options):
    layer = _attention(**options)
    x = randn(2, T, E, seed=3).astype(np.float32)
    with lamina.no_grad():
        before = layer(x, causal=True).numpy()
    cached = _cached_attention(layer, x)
    assert isinstance(layer.enable_head_hooks(), HeadOutputs) and layer.head_hooks_enabled
    seen = []
    layer.head_outputs.register_forward_hook(lambda module, inputs, z: seen.append(z.shape))
    with lamina.no_grad():
        after = layer(x, causal=True).numpy()
    assert np.array_equal(after, before) and seen == [(2, T, HEADS, E // HEADS)]
    assert np.array_equal(_cached_attention(layer, x), cached)
    assert seen[1:] == [(2, 2, HEADS, 2), (2, 1, HEADS, 2), (2, 2, HEADS, 2)]   # the cached calls pass it too


def _cached_attention(layer, x) -> np.ndarray:
    outputs, start = [], 0
    layer.start_caching()
    try:
        with lamina.no_grad():
            for size in (2, 1, 2):
                outputs.append(layer(x[:, start:start + size], causal=True).numpy())
                start += size
    finally:
        layer.stop_caching()
    return np.concatenate(outputs, axis=1)


def _gpt2():
    lamina.manual_seed(0)
    return models.GPT2(vocab_size=11, n_positions=8, n_embd=8, n_layer=2, n_head=2).eval()


def _llama():
    lamina.manual_seed(0)
    return models.Llama(vocab_size=11, hidden_size=8, intermediate_size=16, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8).eval()


@pytest.mark.parametrize("make", [_gpt2, _llama], ids=["gpt2", "llama_gqa"])
def test_language_models_give_bit_identical_logits_with_head_hooks_on(make):
    model = make()
    ids = np.random.default_rng(0).integers(0, 11, size=(2, T))
    with lamina.no_grad():
        plain = model(ids).numpy()
    plain_cached = _stepwise(model, ids)
    state = {name: value.copy() for name, value in model.state_dict().items()}
    attention = [m for m in model.modules() if isinstance(m, MultiHeadAttention)]
    configs = [m.get_config() for m in attention]
    for layer in attention:
        layer.enable_head_hooks()
    with lamina.no_grad():
        hooked = model(ids).numpy()
    assert np.array_equal(hooked, plain) and np.array_equal(_stepwise(model, ids), plain_cached)
    assert list(model.state_dict()) == list(state) and [m.get_config() for m in attention] == configs
    for layer in attention:
        layer.disable_head_hooks()
        assert not layer.head_hooks_enabled and "head_outputs" not in dict(layer.named_children())


def _patched_layer(factors: np.ndarray):
    """A float64 layer whose hook multiplies each head's context by its factor."""
    lamina.set_default_dtype(np.float64)
    try:
        layer = _attention(num_kv_heads=KV_HEADS)
    finally:
        lamina.set_default_dtype(np.float32)
    layer.enable_head_hooks().register_forward_hook(
        lambda module, inputs, z: z * lamina.tensor(factors[:, None], dtype=z.dtype))
    return layer


def _torch_attention(layer, x, factors):
    """The same grouped-query attention with scaled heads, written in PyTorch."""
    w_in, b_in = (torch.tensor(p.numpy()) for p in (layer.in_weight, layer.in_bias))
    w_out, b_out = torch.tensor(layer.out_weight.numpy()), torch.tensor(layer.out_bias.numpy())
    y = x @ w_in + b_in
    d, n = E // HEADS, x.shape[0]
    q = y[..., :E].reshape(n, -1, HEADS, d).transpose(1, 2)
    k = y[..., E:E + KV_HEADS * d].reshape(n, -1, KV_HEADS, d).transpose(1, 2)
    v = y[..., E + KV_HEADS * d:].reshape(n, -1, KV_HEADS, d).transpose(1, 2)
    z = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    z = z.transpose(1, 2) * torch.tensor(factors)[:, None]
    return z.reshape(n, -1, HEADS * d) @ w_out + b_out


def test_a_patched_head_changes_values_and_gradients_as_in_pytorch():
    factors = np.array([1.0, 0.0, 0.5, 2.0])
    layer = _patched_layer(factors)
    x = randn(2, T, E, seed=4)
    compare_with_torch(lambda v: layer(v, causal=True), lambda v: _torch_attention(layer, v, factors), x,
                       dtype=np.float64, rtol=1e-10)
    assert check_gradients(lambda v: layer(v, causal=True), x)
    layer.disable_head_hooks()                          # the hook goes with the hook point
    with lamina.no_grad():
        unpatched = layer(lamina.tensor(x, dtype=np.float64), causal=True).numpy()
    expected = _torch_attention(layer, torch.tensor(x), np.ones(HEADS)).numpy()
    np.testing.assert_allclose(unpatched, expected, rtol=1e-10, atol=1e-12)


def test_head_outputs_refuses_a_wrong_shape_and_enabling_twice_keeps_one_module():
    layer = _attention()
    first = layer.enable_head_hooks()
    assert layer.enable_head_hooks() is first
    assert first.compute_output_shape((None, 3, HEADS, 2)) == (None, 3, HEADS, 2)
    with pytest.raises(lamina.errors.ShapeError, match=r"HeadOutputs: .*\(2, 3, 8\).*\(batch, time, 4, 2\)"):
        first.compute_output_shape((2, 3, 8))
