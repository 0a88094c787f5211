"""Grouped-query attention as one node: the same values and gradients as repeating the
key/value heads (repeat_kv) before torch's scaled_dot_product_attention, to second order,
with broadcast batch axes and masks, and no reshape nodes around it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, compare_double_backward_with_torch, compare_with_torch, randn
from lamina import functional as F
from lamina.functional.attention import ScaledDotProductAttention


def repeat_kv(x, group: int):
    """torch: (N, h_kv, T, d) -> (N, h_kv group, T, d), each head repeated group times in place."""
    return torch.repeat_interleave(x, group, dim=-3)


def lamina_gqa(**options):
    return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, enable_gqa=True, **options)


def torch_repeated(group, **options):
    return lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(
        q, repeat_kv(k, group), repeat_kv(v, group), **options)


@pytest.mark.parametrize("h_q, h_kv", [(6, 2), (4, 1), (3, 3)])
@pytest.mark.parametrize("causal", [False, True])
def test_grouped_attention_equals_repeated_heads_in_torch(h_q, h_kv, causal):
    q, k, v = randn(2, h_q, 4, 3, seed=1), randn(2, h_kv, 5, 3, seed=2), randn(2, h_kv, 5, 2, seed=3)
    compare_with_torch(lamina_gqa(causal=causal), torch_repeated(h_q // h_kv, is_causal=causal),
                       q, k, v, dtype=np.float64)
    compare_with_torch(lamina_gqa(causal=causal), torch_repeated(h_q // h_kv, is_causal=causal),
                       q, k, v, dtype=np.float32)


def torch_causal_attention_written_out(group):
    """softmax(Q K^T / sqrt(d) over the causal keys) V with the K/V heads repeated, by plain
    torch ops (its fused attention has no second derivative on the CPU)."""
    def attend(q, k, v):
        scores = q @ repeat_kv(k, group).transpose(-1, -2) / q.shape[-1] ** 0.5
        future = torch.ones(scores.shape[-2:], dtype=torch.bool).triu(1)
        return torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1) @ repeat_kv(v, group)
    return attend


def test_grouped_attention_second_derivatives_match_torch():
    q, k, v = randn(1, 4, 3, 2, seed=4), randn(1, 2, 3, 2, seed=5), randn(1, 2, 3, 2, seed=6)
    compare_double_backward_with_torch(lamina_gqa(causal=True), torch_causal_attention_written_out(2), q, k, v)


def test_grouped_attention_broadcasts_batch_axes_and_per_head_masks():
    q, k, v = randn(2, 3, 4, 2, 3, seed=7), randn(1, 2, 5, 3, seed=8), randn(1, 2, 5, 3, seed=9)
    bias = randn(4, 2, 5, seed=10)                     # one additive mask per query head
    keep = np.random.default_rng(11).random((3, 1, 2, 5)) < 0.6
    keep[..., 0] = True
    for mask in (bias, keep):
        compare_with_torch(lamina_gqa(mask=mask),
                           torch_repeated(2, attn_mask=torch.tensor(mask)), q, k, v, dtype=np.float64)


def test_grouped_attention_is_one_node_on_the_inputs():
    q = lamina.tensor(randn(1, 4, 3, 2, seed=12), requires_grad=True)
    k = lamina.tensor(randn(1, 2, 3, 2, seed=13), requires_grad=True)
    v = lamina.tensor(randn(1, 2, 3, 2, seed=14), requires_grad=True)
    out = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    node = out._ctx
    assert isinstance(node, ScaledDotProductAttention)
    assert all(a is b for a, b in zip(node.inputs, (q, k, v)))
    assert out.shape == (1, 4, 3, 2)


def test_grouped_attention_weights_with_and_without_a_graph():
    q, k, v = randn(1, 4, 3, 2, seed=15), randn(1, 2, 5, 2, seed=16), randn(1, 2, 5, 2, seed=17)
    repeated = [np.repeat(x, 2, axis=1) for x in (k, v)]
    _, expected = F.scaled_dot_product_attention(q, *repeated, causal=True, return_weights=True)
    _, constant = F.scaled_dot_product_attention(q, k, v, causal=True, enable_gqa=True, return_weights=True)
    recorded = lamina.tensor(q, requires_grad=True)
    _, traced = F.scaled_dot_product_attention(recorded, k, v, causal=True, enable_gqa=True, return_weights=True)
    for weights in (constant, traced):
        assert weights.shape == (1, 4, 3, 5)
        assert_close(weights.numpy(), expected.numpy(), 1e-12)
