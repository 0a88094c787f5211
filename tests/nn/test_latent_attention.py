"""MultiHeadLatentAttention: outputs, input and parameter gradients against a float64 PyTorch
rewrite of DeepSeek-V2's equations (naive and absorbed forms, with and without the query
latent); the absorbed form equals the naive one; decoding through the latent cache, token by
token or in pieces, equals the full causal call; the cache keeps kv_lora_rank +
qk_rope_head_dim numbers per token; finite differences; errors naming the layer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, randn
from lamina import nn
from lamina.errors import ShapeError
from lamina.text import caching_keys_values
from torch_linear_sequence import compare_layer_with_torch


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)
    yield
    lamina.set_default_dtype(np.float32)


def _layer(q_lora_rank=5, **options):
    return nn.MultiHeadLatentAttention(12, 3, kv_lora_rank=6, q_lora_rank=q_lora_rank, qk_nope_head_dim=4,
                                       qk_rope_head_dim=2, v_head_dim=3, rope_theta=100.0, **options)


def rope(x, base):
    """Rotate-half RoPE of x (..., T, d) at positions 0 .. T - 1."""
    t, d = x.shape[-2], x.shape[-1]
    angles = torch.arange(t, dtype=torch.float64)[:, None] * base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    first, second = x[..., :d // 2], x[..., d // 2:]
    return torch.cat([first * angles.cos() - second * angles.sin(), first * angles.sin() + second * angles.cos()], -1)


def rms(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def latent_attention_reference(layer):
    """DeepSeek-V2's equations (naive form) with torch ops."""
    h, r, eps, base = layer.num_heads, layer.kv_lora_rank, layer.rms_norm_eps, layer.rope_theta
    nope, rot, dv = layer.qk_nope_head_dim, layer.qk_rope_head_dim, layer.v_head_dim

    def reference(x, p):
        n, t, _ = x.shape
        if layer.q_lora_rank is None:
            q = x @ p["q_proj.weight"]
        else:
            q = rms(x @ p["q_a_proj.weight"], p["q_a_layernorm.weight"], eps) @ p["q_b_proj.weight"]
        q = q.reshape(n, t, h, nope + rot).transpose(1, 2)
        q_content, q_rotary = q[..., :nope], rope(q[..., nope:], base)
        compressed = x @ p["kv_a_proj_with_mqa.weight"]
        c_kv = rms(compressed[..., :r], p["kv_a_layernorm.weight"], eps)
        k_rotary = rope(compressed[..., r:], base)[:, None]                  # one key for every head
        kv = (c_kv @ p["kv_b_proj.weight"]).reshape(n, t, h, nope + dv).transpose(1, 2)
        k_content, v = kv[..., :nope], kv[..., nope:]
        scores = (q_content @ k_content.transpose(-1, -2) + q_rotary @ k_rotary.transpose(-1, -2)) / math.sqrt(
            nope + rot)
        scores = scores.masked_fill(torch.triu(torch.ones(t, t, dtype=torch.bool), 1), float("-inf"))
        heads = scores.softmax(-1) @ v
        return heads.transpose(1, 2).reshape(n, t, h * dv) @ p["o_proj.weight"]

    return reference


@pytest.mark.parametrize("q_lora_rank", [None, 5])
@pytest.mark.parametrize("absorb", [False, True])
def test_matches_a_torch_rewrite_of_the_equations(f64, q_lora_rank, absorb):
    layer = _layer(q_lora_rank)
    compare_layer_with_torch(layer, latent_attention_reference(layer), randn(2, 7, 12), absorb=absorb)


def test_absorbed_form_equals_the_naive_one_in_values_and_gradients(f64):
    layer = _layer()
    x, upstream = randn(2, 7, 12), lamina.tensor(randn(2, 7, 12, seed=4))
    results = []
    for absorb in (False, True):
        layer.zero_grad()
        inputs = lamina.tensor(x, requires_grad=True)
        out = layer(inputs, absorb=absorb)
        (out * upstream).sum().backward()
        results.append((out.numpy(), inputs.grad, {n: p.grad.copy() for n, p in layer.named_parameters()}))
    (naive, naive_grad, naive_params), (absorbed, absorbed_grad, absorbed_params) = results
    assert_close(absorbed, naive, 1e-10, "output")
    assert_close(absorbed_grad, naive_grad, 1e-10, "input gradient")
    for name, value in naive_params.items():
        assert_close(absorbed_params[name], value, 1e-10, name)


@pytest.mark.parametrize("absorb", [False, True])
def test_decoding_through_the_latent_cache_equals_the_full_call(f64, absorb):
    layer = _layer(absorb=absorb)
    x = lamina.tensor(randn(3, 8, 12))
    full = layer(x).numpy()
    layer.eval()
    with lamina.no_grad(), caching_keys_values(layer):
        steps = [layer(x[:, t:t + 1]).numpy() for t in range(8)]
        assert layer.cache.shape == (3, 8, 6 + 2)                  # kv_lora_rank + qk_rope_head_dim per token
        assert layer.cache.size // (3 * 8) == layer.kv_lora_rank + layer.qk_rope_head_dim
    assert_close(np.concatenate(steps, axis=1), full, 1e-10, "token by token")
    assert layer.cache is None and not layer.caching
    with lamina.no_grad(), caching_keys_values(layer):
        pieces = [layer(x[:, :3]).numpy(), layer(x[:, 3:4]).numpy(), layer(x[:, 4:]).numpy()]
    assert_close(np.concatenate(pieces, axis=1), full, 1e-10, "in pieces")


def test_reorder_and_crop_the_cache(f64):
    layer = _layer()
    x = lamina.tensor(randn(3, 6, 12))
    full = layer(x).numpy()
    layer.eval()
    with lamina.no_grad():
        layer.start_caching()
        layer(x[:, :4])
        layer.reorder_cache(np.asarray([2, 0]))
        assert_close(layer(x[[2, 0], 4:]).numpy(), full[[2, 0], 4:], 1e-10, "reordered rows")
        layer.crop_cache(3)
        assert layer.cached_steps == 3
        assert_close(layer(x[[2, 0], 3:]).numpy(), full[[2, 0], 3:], 1e-10, "after cropping")
        with pytest.raises(ShapeError, match="MultiHeadLatentAttention.*continues a cached sequence of batch size 2"):
            layer(x[:, :1])
        with pytest.raises(ValueError, match="MultiHeadLatentAttention: cannot cache latents for non-causal"):
            layer(x[[2, 0], :1], causal=False)
        layer.stop_caching()
    layer.train()
    layer.start_caching()
    with pytest.raises(ValueError, match="MultiHeadLatentAttention: the latent cache is for evaluation only"):
        layer(x)


def test_gradcheck(f64):
    layer = nn.MultiHeadLatentAttention(4, 2, kv_lora_rank=3, qk_nope_head_dim=2, qk_rope_head_dim=2, v_head_dim=2)
    assert check_gradients(lambda x: layer(x, absorb=True), randn(1, 4, 4))


def test_config_and_errors():
    layer = _layer()
    assert nn.MultiHeadLatentAttention(**layer.get_config()).get_config() == layer.get_config()
    defaults = nn.MultiHeadLatentAttention(16, 4, kv_lora_rank=8)
    assert (defaults.qk_nope_head_dim, defaults.qk_rope_head_dim, defaults.v_head_dim) == (4, 2, 4)
    with pytest.raises(ValueError, match="MultiHeadLatentAttention: d_model 10 does not divide into num_heads 4"):
        nn.MultiHeadLatentAttention(10, 4, kv_lora_rank=8)
    with pytest.raises(ValueError, match="MultiHeadLatentAttention: qk_rope_head_dim must be even.*got 3"):
        nn.MultiHeadLatentAttention(16, 4, kv_lora_rank=8, qk_rope_head_dim=3)
    with pytest.raises(ShapeError, match=r"MultiHeadLatentAttention.*shape \(2, 5, 11\).*\(batch, time, 12\)"):
        layer(lamina.tensor(randn(2, 5, 11)))
