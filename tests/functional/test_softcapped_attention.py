"""Soft-capped attention (Gemma 2): values and gradients against torch written from Hugging
Face's Gemma2 eager attention (scores * scale, tanh cap, mask, softmax), grouped key/value
heads, boolean and additive masks, second derivatives, and the cap's effect."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, check_second_derivatives, compare_with_torch, randn
from lamina import functional as F


def torch_capped(cap, scale, causal=False, mask=None, group=1):
    def attend(q, k, v):
        k, v = torch.repeat_interleave(k, group, dim=1), torch.repeat_interleave(v, group, dim=1)
        scores = torch.tanh(q @ k.transpose(2, 3) * scale / cap) * cap
        t_q, t_k = scores.shape[-2:]
        keep = torch.ones(t_q, t_k, dtype=torch.bool)
        if causal:
            keep = torch.tril(keep, diagonal=t_k - t_q)
        if mask is not None and mask.dtype == bool:
            keep = keep & torch.tensor(mask)
        elif mask is not None:
            scores = scores + torch.tensor(mask)
        scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
        return torch.softmax(scores, dim=-1) @ v
    return attend


@pytest.mark.parametrize("h_q, h_kv", [(4, 2), (2, 2)])
@pytest.mark.parametrize("causal", [False, True])
def test_values_and_gradients_equal_torch(h_q, h_kv, causal):
    q, k, v = randn(2, h_q, 4, 3, seed=1) * 3, randn(2, h_kv, 5, 3, seed=2) * 3, randn(2, h_kv, 5, 2, seed=3)
    compare_with_torch(lambda a, b, c: F.softcapped_attention(a, b, c, causal=causal, scale=0.4, cap=1.5),
                       torch_capped(1.5, 0.4, causal, group=h_q // h_kv), q, k, v, dtype=np.float64)


@pytest.mark.parametrize("mask", [np.tril(np.ones((4, 5), dtype=bool), 1), randn(4, 5, seed=4)])
def test_masks_equal_torch(mask):
    q, k, v = randn(1, 2, 4, 3, seed=1), randn(1, 2, 5, 3, seed=2), randn(1, 2, 5, 3, seed=3)
    compare_with_torch(lambda a, b, c: F.softcapped_attention(a, b, c, mask=mask, cap=2.0),
                       torch_capped(2.0, 3 ** -0.5, mask=mask), q, k, v, dtype=np.float64)


def test_second_derivatives_and_the_cap():
    q, k, v = randn(1, 1, 3, 2, seed=1), randn(1, 1, 3, 2, seed=2), randn(1, 1, 3, 2, seed=3)
    assert check_gradients(lambda a, b, c: F.softcapped_attention(a, b, c, causal=True, cap=0.7), q, k, v)
    assert check_second_derivatives(lambda a: F.softcapped_attention(a, k, v, cap=0.7), q)
    large = 1e6      # a cap far above the scores: plain attention
    plain = F.scaled_dot_product_attention(q, k, v, causal=True).numpy()
    assert np.allclose(F.softcapped_attention(q, k, v, causal=True, cap=large).numpy(), plain, atol=1e-9)
    assert not np.allclose(F.softcapped_attention(q * 5, k * 5, v, cap=0.5).numpy(),
                           F.scaled_dot_product_attention(q * 5, k * 5, v).numpy(), atol=1e-3)
    with pytest.raises(ValueError, match="cap must be > 0"):
        F.softcapped_attention(q, k, v, cap=0.0)
    with pytest.raises(lamina.ShapeError, match=r"g dividing h, got q \(1, 1, 3, 2\), k \(1, 2, 3, 2\)"):
        F.softcapped_attention(q, randn(1, 2, 3, 2), randn(1, 2, 3, 2))
