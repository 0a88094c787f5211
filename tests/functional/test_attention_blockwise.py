"""Blockwise (FlashAttention-style) attention, scaled_dot_product_attention(block_size=...):
the dense path's values and gradients, PyTorch's, block skipping and memory."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

import lamina
from helpers import (
    assert_close,
    check_gradients,
    check_second_derivatives,
    compare_double_backward_with_torch,
    compare_with_torch,
    randn,
)
from lamina import functional as F


def _run(q, k, v, **options):
    """Output and the gradients of q, k, v for J = sum(out * r), r fixed."""
    ours = [lamina.tensor(a, requires_grad=True, dtype=np.float64) for a in (q, k, v)]
    out = F.scaled_dot_product_attention(*ours, **options)
    (out * lamina.tensor(randn(*out.shape, seed=9), dtype=np.float64)).sum().backward()
    return [out.numpy()] + [t.grad for t in ours]


CASES = {  # (q shape, k shape, v shape, block, options)
    "square, block divides T": ((2, 3, 8, 4), (2, 3, 8, 4), (2, 3, 8, 5), 4, {}),
    "T not a multiple of the block": ((2, 3, 11, 4), (2, 3, 11, 4), (2, 3, 11, 3), 4, {}),
    "T_q < T_k, causal": ((1, 2, 7, 3), (1, 2, 13, 3), (1, 2, 13, 2), 3, {"causal": True}),
    "T_q > T_k, causal": ((1, 2, 13, 3), (1, 2, 6, 3), (1, 2, 6, 2), 4, {"causal": True}),
    "one block holds all": ((2, 5, 3), (2, 6, 3), (2, 6, 3), 64, {}),
    "block of one": ((1, 6, 3), (1, 5, 3), (1, 5, 4), 1, {"causal": True}),
    "broadcast batch axes": ((2, 1, 9, 4), (1, 3, 10, 4), (1, 3, 10, 2), 4, {}),
    "grouped query heads": ((2, 6, 9, 4), (2, 2, 10, 4), (2, 2, 10, 3), 4, {"enable_gqa": True, "causal": True}),
    "scale": ((1, 2, 9, 4), (1, 2, 9, 4), (1, 2, 9, 4), 4, {"scale": 0.3}),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("mask", [None, "bool", "float"])
def test_blockwise_equals_dense_values_and_gradients(name, mask):
    q_shape, k_shape, v_shape, block, options = CASES[name]
    q, k, v = randn(*q_shape, seed=1), randn(*k_shape, seed=2), randn(*v_shape, seed=3)
    t_q, t_k = q_shape[-2], k_shape[-2]
    if mask == "bool":
        options = dict(options, mask=np.random.default_rng(4).random((t_q, t_k)) < 0.7)
    elif mask == "float":
        options = dict(options, mask=randn(1, t_q, t_k, seed=5))
    dense = _run(q, k, v, **options)
    blockwise = _run(q, k, v, block_size=block, **options)
    for what, a, b in zip(("output", "dq", "dk", "dv"), blockwise, dense):
        assert_close(a, b, 1e-12, what)


def test_query_blocks_shared_among_threads_give_the_dense_result_every_time():
    # 2 x 2 x 400 x 400 scores: enough work for lamina's threads to take the query blocks
    q, k, v = randn(2, 4, 400, 3, seed=1), randn(2, 2, 400, 3, seed=2), randn(2, 2, 400, 2, seed=3)
    options = {"causal": True, "enable_gqa": True, "mask": randn(400, 400, seed=4)}
    dense = _run(q, k, v, **options)
    first = _run(q, k, v, block_size=48, **options)
    for what, a, b in zip(("output", "dq", "dk", "dv"), first, dense):
        assert_close(a, b, 1e-12, what)
    for a, b in zip(_run(q, k, v, block_size=48, **options), first):
        assert np.array_equal(a, b)                     # a fixed order of summation


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("causal", [False, True])
def test_blockwise_matches_torch_sdpa_with_float_mask(dtype, causal):
    q, k, v, bias = randn(2, 3, 10, 4, seed=1), randn(2, 3, 10, 4, seed=2), randn(2, 3, 10, 5, seed=3), randn(10, 10)
    bias_l = bias.astype(dtype)
    mask_t = torch.tensor(bias_l)
    if causal:                      # torch takes no mask with is_causal: the causal rule goes into the mask
        mask_t = mask_t.masked_fill(~torch.ones(10, 10, dtype=torch.bool).tril(), float("-inf"))
    compare_with_torch(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, mask=bias_l, causal=causal,
                                                                      block_size=3),
                       lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask_t),
                       q, k, v, dtype=dtype)


def test_blockwise_matches_torch_sdpa_with_bool_mask_and_grouped_heads():
    q, k, v = randn(2, 4, 9, 3, seed=1), randn(2, 2, 11, 3, seed=2), randn(2, 2, 11, 2, seed=3)
    keep = np.random.default_rng(0).random((9, 11)) < 0.6
    keep[:, 0] = True               # torch gives NaN where a query keeps no key
    compare_with_torch(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, mask=keep, enable_gqa=True,
                                                                      block_size=4),
                       lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(
                           q, k, v, attn_mask=torch.tensor(keep), enable_gqa=True),
                       q, k, v, dtype=np.float64)


def test_blockwise_gradcheck_and_second_derivatives():
    q, k, v = randn(1, 2, 5, 3, seed=1), randn(1, 2, 6, 3, seed=2), randn(1, 2, 6, 2, seed=3)
    mask = randn(5, 6, seed=4)

    def attention(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, mask=mask, causal=True, block_size=2)

    assert check_gradients(attention, q, k, v)
    assert check_second_derivatives(attention, q, k, v)
    compare_double_backward_with_torch(
        attention,
        lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=torch.tensor(mask).masked_fill(~torch.ones(5, 6, dtype=torch.bool).tril(), -torch.inf)),
        q, k, v)


def test_a_query_that_keeps_no_key_gets_zeros_as_in_the_dense_path():
    keep = np.ones((6, 7), dtype=bool)
    keep[2] = False
    keep[4, 3:] = False
    q, k, v = randn(1, 6, 3, seed=1), randn(1, 7, 3, seed=2), randn(1, 7, 2, seed=3)
    dense = _run(q, k, v, mask=keep)
    blockwise = _run(q, k, v, mask=keep, block_size=3)
    assert np.all(blockwise[0][0, 2] == 0) and np.isfinite(blockwise[1]).all()
    for what, a, b in zip(("output", "dq", "dk", "dv"), blockwise, dense):
        assert_close(a, b, 1e-12, what)


def _blocks(t: int, block: int, **options) -> tuple[int, int]:
    q = lamina.tensor(randn(1, t, 2), requires_grad=True)
    out = F.scaled_dot_product_attention(q, q, q, block_size=block, **options)
    return out._ctx.blocks


def test_causal_skips_the_blocks_above_the_diagonal():
    computed, total = _blocks(64, 8, causal=True)
    assert total == 64 and computed == 8 * 9 // 2           # the diagonal and below: 36 of 64
    assert _blocks(64, 8) == (64, 64)
    window = np.asarray(F.sliding_window_mask(64, 64, window=8).numpy())
    computed, _ = _blocks(64, 8, mask=window)
    assert computed == 8 + 7                                # the diagonal blocks and those just below


def test_auto_block_size_and_refusals():
    q = randn(1, 2, 300, 4)
    assert_close(F.scaled_dot_product_attention(q, q, q, block_size="auto").numpy(),
                 F.scaled_dot_product_attention(q, q, q).numpy(), 1e-5)
    with pytest.raises(ValueError, match="block_size.*dropout"):
        F.scaled_dot_product_attention(q, q, q, dropout=0.1, block_size=8)
    with pytest.raises(ValueError, match="return_weights"):
        F.scaled_dot_product_attention(q, q, q, return_weights=True, block_size=8)
    for bad in (0, -3, 2.5, "big", True):
        with pytest.raises(ValueError, match="block_size must be"):
            F.scaled_dot_product_attention(q, q, q, block_size=bad)


def _peak_mb(block_size) -> float:
    q = lamina.tensor(randn(1, 1, 768, 8, seed=1).astype(np.float32), requires_grad=True)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    F.scaled_dot_product_attention(q, q, q, block_size=block_size).sum().backward()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return (peak - base) / 2**20


def test_blockwise_memory_does_not_grow_with_the_square_of_the_length():
    dense, blockwise = _peak_mb(None), _peak_mb(64)
    assert dense > 2 * 768 * 768 * 4 / 2**20                # at least two (T, T) float32 arrays
    assert blockwise < dense / 5
