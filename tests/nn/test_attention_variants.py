"""Grouped-query attention against torch's scaled_dot_product_attention(enable_gqa=True),
ALiBi biases against the paper's formula and slopes, sliding-window masks against explicit
masks, and MultiHeadAttention with each option: torch computations, gradients, the key/value
cache (one call on a sequence equals reading it step by step) and the configuration."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, compare_with_torch, randn
from lamina import functional as F
from lamina.nn.layer import layer_from_config, layer_to_config
from lamina.nn.multi_head_attention import MultiHeadAttention


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)
    yield
    lamina.set_default_dtype(np.float32)


# -- the functional forms -----------------------------------------------------------------
@pytest.mark.parametrize("h_q, h_kv", [(4, 2), (6, 1), (3, 3)])
@pytest.mark.parametrize("causal", [False, True])
def test_grouped_query_attention_matches_torch(h_q, h_kv, causal):
    q, k, v = randn(2, h_q, 5, 4, seed=0), randn(2, h_kv, 6, 4, seed=1), randn(2, h_kv, 6, 3, seed=2)
    compare_with_torch(
        lambda a, b, c: F.scaled_dot_product_attention(a, b, c, causal=causal, enable_gqa=True),
        lambda a, b, c: torch.nn.functional.scaled_dot_product_attention(a, b, c, is_causal=causal, enable_gqa=True),
        q, k, v, dtype=np.float64)


@pytest.mark.parametrize("heads_in_mask", [1, 4])
def test_grouped_query_attention_with_masks_matches_torch(heads_in_mask):
    q, k, v = randn(2, 4, 5, 4, seed=3), randn(2, 2, 5, 4, seed=4), randn(2, 2, 5, 4, seed=5)
    bias = randn(2, heads_in_mask, 5, 5, seed=6)
    keep = np.random.default_rng(7).random((5, 5)) < 0.7
    keep[:, 0] = True
    for mask in (bias, keep):
        compare_with_torch(
            lambda a, b, c, m=mask: F.scaled_dot_product_attention(a, b, c, mask=m, enable_gqa=True),
            lambda a, b, c, m=mask: torch.nn.functional.scaled_dot_product_attention(
                a, b, c, attn_mask=torch.tensor(m), enable_gqa=True),
            q, k, v, dtype=np.float64)


def test_grouped_query_attention_gradcheck_and_weights():
    q, k, v = randn(1, 4, 3, 2, seed=8), randn(1, 2, 4, 2, seed=9), randn(1, 2, 4, 2, seed=10)
    assert check_gradients(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, enable_gqa=True), q, k, v)
    _, weights = F.scaled_dot_product_attention(q, k, v, enable_gqa=True, return_weights=True)
    _, full = F.scaled_dot_product_attention(q, np.repeat(k, 2, axis=1), np.repeat(v, 2, axis=1),
                                             return_weights=True)
    assert weights.shape == (1, 4, 3, 4)
    assert_close(weights.numpy(), full.numpy(), 1e-6)


def test_grouped_query_attention_refuses_uneven_heads():
    with pytest.raises(lamina.errors.ShapeError, match="divides"):
        F.scaled_dot_product_attention(randn(1, 3, 2, 2), randn(1, 2, 2, 2), randn(1, 2, 2, 2), enable_gqa=True)


def torch_alibi_slopes(n):
    """The paper's reference slopes, written again: 2^(-8/c) powers, then every other one of 2c."""
    def power_of_two(m):
        start = 2 ** (-(2 ** -(math.log2(m) - 3)))
        return [start * start ** i for i in range(m)]
    if math.log2(n).is_integer():
        return power_of_two(n)
    c = 2 ** math.floor(math.log2(n))
    return power_of_two(c) + power_of_two(2 * c)[0::2][:n - c]


def test_alibi_slopes_are_the_papers():
    assert F.alibi_slopes(8) == pytest.approx([2.0 ** -i for i in range(1, 9)])
    twelve = [2.0 ** -i for i in range(1, 9)] + [2.0 ** -(i + 0.5) for i in range(4)]
    assert F.alibi_slopes(12) == pytest.approx(twelve)
    for n in (1, 3, 5, 6, 16, 20):
        assert F.alibi_slopes(n) == pytest.approx(torch_alibi_slopes(n))


@pytest.mark.parametrize("offset", [0, 3])
def test_alibi_bias_matches_the_formula(offset):
    slopes = torch.tensor(torch_alibi_slopes(6), dtype=torch.float64)
    queries = offset + torch.arange(4, dtype=torch.float64)[:, None]
    keys = torch.arange(7, dtype=torch.float64)[None, :]
    expected = -slopes[:, None, None] * (queries - keys).abs()
    got = F.alibi_bias(6, 4, 7, offset=offset, dtype=np.float64)
    assert_close(got.numpy(), expected.numpy(), 1e-12)


def test_sliding_window_mask_matches_an_explicit_mask():
    got = F.sliding_window_mask(5, 7, 3, offset=2).numpy()
    expected = np.zeros((5, 7), dtype=bool)
    for i in range(5):
        for j in range(7):
            expected[i, j] = 0 <= (i + 2) - j < 3
    np.testing.assert_array_equal(got, expected)
    assert F.sliding_window_mask(4, 4, 10).numpy().tolist() == np.tril(np.ones((4, 4), bool)).tolist()
    with pytest.raises(ValueError, match="window"):
        F.sliding_window_mask(3, 3, 0)


# -- MultiHeadAttention -------------------------------------------------------------------
def torch_attention(layer, x, causal, bias=None, keep=None):
    """The layer's computation written in torch from its weights: grouped K/V heads repeated."""
    e, h, g, d = layer.embed_dim, layer.num_heads, layer.num_kv_heads, layer.head_dim
    w = torch.tensor(layer.in_weight.numpy())
    b = torch.tensor(layer.in_bias.numpy())
    n, t = x.shape[:2]
    q = (x @ w[:, :e] + b[:e]).reshape(n, t, h, d).transpose(1, 2)
    k = (x @ w[:, e:e + g * d] + b[e:e + g * d]).reshape(n, t, g, d).transpose(1, 2)
    v = (x @ w[:, e + g * d:] + b[e + g * d:]).reshape(n, t, g, d).transpose(1, 2)
    k, v = k.repeat_interleave(h // g, dim=1), v.repeat_interleave(h // g, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d)
    if bias is not None:
        scores = scores + bias
    if causal:
        scores = scores.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), -math.inf)
    if keep is not None:
        scores = scores.masked_fill(~keep, -math.inf)
    heads = torch.softmax(scores, -1) @ v
    joined = heads.transpose(1, 2).reshape(n, t, e)
    return joined @ torch.tensor(layer.out_weight.numpy()) + torch.tensor(layer.out_bias.numpy())


def _built(seed=0, **options):
    lamina.manual_seed(seed)
    layer = MultiHeadAttention(8, 4, **options)
    layer(lamina.tensor(randn(1, 2, 8)), causal=True)
    layer.in_bias.data = randn(*layer.in_bias.shape, seed=seed + 1, scale=0.1)
    return layer


@pytest.mark.parametrize("num_kv_heads", [1, 2, 4])
def test_grouped_query_multi_head_attention_matches_torch(f64, num_kv_heads):
    layer = _built(num_kv_heads=num_kv_heads)
    assert layer.in_weight.shape == (8, 8 + 2 * num_kv_heads * 2)
    x = randn(2, 5, 8, seed=3)
    compare_with_torch(lambda a: layer(a, causal=True), lambda a: torch_attention(layer, a, True), x,
                       dtype=np.float64)
    assert check_gradients(lambda a: layer(a), randn(1, 3, 8, seed=4))


def test_grouped_query_matches_torch_enable_gqa_through_the_layer(f64):
    """The heads the layer feeds its attention equal torch's enable_gqa on the same projections."""
    layer = _built(num_kv_heads=2)
    x = lamina.tensor(randn(2, 4, 8, seed=5))
    q, k, v = (layer._project(x, part) for part in range(3))
    ours = F.scaled_dot_product_attention(q, k, v, causal=True, enable_gqa=True)
    theirs = torch.nn.functional.scaled_dot_product_attention(
        *(torch.tensor(t.numpy()) for t in (q, k, v)), is_causal=True, enable_gqa=True)
    assert_close(ours.numpy(), theirs.numpy(), 1e-12)


def test_alibi_multi_head_attention_matches_torch(f64):
    layer = _built(alibi=True)
    bias = torch.tensor(F.alibi_bias(4, 5, 5, dtype=np.float64).numpy())
    compare_with_torch(lambda a: layer(a, causal=True), lambda a: torch_attention(layer, a, True, bias=bias),
                       randn(2, 5, 8, seed=6), dtype=np.float64)


def test_sliding_window_multi_head_attention_matches_an_explicit_mask(f64):
    layer = _built(window=2, num_kv_heads=2)
    keep = torch.tensor(np.tril(np.ones((5, 5), bool)) & ~np.tril(np.ones((5, 5), bool), -2))
    compare_with_torch(lambda a: layer(a, causal=True), lambda a: torch_attention(layer, a, True, keep=keep),
                       randn(2, 5, 8, seed=7), dtype=np.float64)
    with pytest.raises(ValueError, match="causal"):
        layer(randn(1, 3, 8))


@pytest.mark.parametrize("options", [{"num_kv_heads": 1}, {"num_kv_heads": 2, "rotary": True},
                                     {"alibi": True}, {"window": 3}, {"window": 1},
                                     {"window": 2, "alibi": True, "num_kv_heads": 2}])
def test_the_cache_reads_step_by_step_as_one_call(f64, options):
    layer = _built(**options).eval()
    x = randn(2, 7, 8, seed=8)
    with lamina.no_grad():
        whole = layer(x, causal=True).numpy()
        layer.start_caching()
        parts = [layer(x[:, a:b], causal=True).numpy() for a, b in ((0, 3), (3, 4), (4, 7))]
        held = layer._cached_keys.shape
        layer.stop_caching()
    assert_close(np.concatenate(parts, axis=1), whole, 1e-10)
    window = options.get("window")
    assert held == (2, layer.num_kv_heads, 7 if window is None else window - 1, 2)


def test_the_options_keep_their_config():
    layer = MultiHeadAttention(8, 4, num_kv_heads=2, alibi=True, window=5)
    copy = layer_from_config(layer_to_config(layer))
    assert (copy.num_kv_heads, copy.alibi, copy.window) == (2, True, 5)
    assert "num_kv_heads=2" in repr(copy)
    plain = MultiHeadAttention(8, 4).get_config()
    assert not {"num_kv_heads", "alibi", "window"} & set(plain)
    with pytest.raises(ValueError, match="divide"):
        MultiHeadAttention(8, 4, num_kv_heads=3)
