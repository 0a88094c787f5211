"""Paged attention (decode step and prefill) equals ordinary attention over each sequence's
keys and values gathered into contiguous arrays, against PyTorch, with gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import check_gradients, compare_double_backward_with_torch, compare_with_torch, randn
from lamina import functional as F
from lamina.errors import ShapeError
from lamina.text.serving import gather_paged_cache, prefill_attention, write_paged_cache


def _layout(lens, block_size: int, num_blocks: int, seed: int = 0) -> np.ndarray:
    """Block tables (N, max_blocks): distinct shuffled blocks per sequence, unused entries 0."""
    rng = np.random.default_rng(seed)
    counts = [-(-n // block_size) for n in lens]
    blocks = rng.permutation(num_blocks)[:sum(counts)]
    tables = np.zeros((len(lens), max(counts)), dtype=np.int64)
    offsets = np.cumsum([0] + counts)
    for row, count in enumerate(counts):
        tables[row, :count] = blocks[offsets[row]:offsets[row] + count]
    return tables


def _torch_reference(tables, lens, scale):
    def attend(q, key_cache, value_cache):
        outs = []
        block_size = key_cache.shape[1]
        for row, n in enumerate(lens):
            keys = key_cache[torch.as_tensor(tables[row])].reshape(-1, *key_cache.shape[2:])[:n]   # (S, h_kv, d)
            values = value_cache[torch.as_tensor(tables[row])].reshape(-1, *value_cache.shape[2:])[:n]
            group = q.shape[1] // keys.shape[1]
            keys, values = keys.repeat_interleave(group, 1), values.repeat_interleave(group, 1)
            out = torch.nn.functional.scaled_dot_product_attention(
                q[row][:, None], keys.transpose(0, 1), values.transpose(0, 1), scale=scale)
            outs.append(out[:, 0])
        assert block_size >= 1
        return torch.stack(outs)
    return attend


@pytest.mark.parametrize("block_size, lens, kv_heads", [(1, [3, 1], 4), (4, [5, 9, 4], 4), (3, [7, 2], 2),
                                                        (8, [13, 1, 6], 1)])
def test_paged_attention_equals_attention_over_the_gathered_cache(block_size, lens, kv_heads):
    num_blocks, heads, d = 12, 4, 5
    tables = _layout(lens, block_size, num_blocks, seed=block_size)
    q = randn(len(lens), heads, d, seed=1)
    key_cache = randn(num_blocks, block_size, kv_heads, d, seed=2)
    value_cache = randn(num_blocks, block_size, kv_heads, d, seed=3)
    lens_array = np.array(lens)
    compare_with_torch(lambda a, k, v: F.paged_attention(a, k, v, tables, lens_array, 0.7),
                       _torch_reference(tables, lens, 0.7), q, key_cache, value_cache, dtype=np.float64)


def test_paged_attention_float32_and_default_scale_match_torch():
    lens, block_size = [6, 3], 4
    tables = _layout(lens, block_size, 5)
    q, k, v = randn(2, 2, 8, seed=4), randn(5, block_size, 2, 8, seed=5), randn(5, block_size, 2, 8, seed=6)
    compare_with_torch(lambda a, kc, vc: F.paged_attention(a, kc, vc, tables, np.array(lens)),
                       _torch_reference(tables, lens, 1 / np.sqrt(8)), q, k, v)


def test_paged_attention_gradients_by_finite_differences():
    lens, block_size = [5, 2], 2
    tables = _layout(lens, block_size, 6)
    caches = randn(6, block_size, 1, 3, seed=8), randn(6, block_size, 1, 3, seed=9)
    assert check_gradients(lambda a, k, v: F.paged_attention(a, k, v, tables, np.array(lens), 0.5),
                           randn(2, 2, 3, seed=7), *caches)


def test_paged_attention_second_derivatives_match_torch():
    lens, block_size = [3, 4], 2
    tables = _layout(lens, block_size, 5)
    compare_double_backward_with_torch(lambda a, k, v: F.paged_attention(a, k, v, tables, np.array(lens), 0.8),
                                       _torch_reference(tables, lens, 0.8), randn(2, 2, 3, seed=1),
                                       randn(5, block_size, 2, 3, seed=2), randn(5, block_size, 2, 3, seed=3))


def test_unwritten_slots_do_not_change_the_output():
    lens, block_size = [5], 4
    tables = _layout(lens, block_size, 3)
    q, k, v = randn(1, 2, 3, seed=1), randn(3, block_size, 2, 3, seed=2), randn(3, block_size, 2, 3, seed=3)
    before = F.paged_attention(q, k, v, tables, np.array(lens)).numpy()
    last = tables[0, 1]
    k[last, 1:], v[last, 1:] = 1e3, -1e3           # slots past position 4
    np.testing.assert_array_equal(F.paged_attention(q, k, v, tables, np.array(lens)).numpy(), before)


@pytest.mark.parametrize("block_size, start, length", [(4, 0, 7), (3, 5, 4), (2, 3, 1)])
def test_prefill_writes_the_cache_and_attends_causally(block_size, start, length):
    heads, kv_heads, d, num_blocks = 4, 2, 3, 10
    total = start + length
    table = _layout([total], block_size, num_blocks, seed=length)[0]
    key_cache, value_cache = np.zeros((2, num_blocks, block_size, kv_heads, d))
    keys, values = randn(total, kv_heads, d, seed=1), randn(total, kv_heads, d, seed=2)
    slots = np.array([table[p // block_size] * block_size + p % block_size for p in range(total)])
    write_paged_cache(key_cache, value_cache, keys[:start], values[:start], slots[:start])   # a cached prefix
    write_paged_cache(key_cache, value_cache, keys[start:], values[start:], slots[start:])
    np.testing.assert_array_equal(gather_paged_cache(key_cache, table, total), keys)
    q = randn(length, heads, d, seed=3)
    out = prefill_attention(q, key_cache, value_cache, table, start, 0.6)
    tk, tv = (torch.as_tensor(a).repeat_interleave(2, 1).transpose(0, 1) for a in (keys, values))
    mask = torch.arange(total)[None, :] <= (start + torch.arange(length))[:, None]
    expected = torch.nn.functional.scaled_dot_product_attention(torch.as_tensor(q).transpose(0, 1), tk, tv,
                                                                attn_mask=mask, scale=0.6).transpose(0, 1)
    np.testing.assert_allclose(out, expected.numpy(), rtol=1e-12, atol=1e-12)


def test_paged_attention_rejects_bad_shapes_and_lengths():
    q, cache, tables = randn(2, 4, 3), randn(4, 2, 2, 3), np.array([[0, 1], [2, 3]])
    with pytest.raises(ShapeError, match="paged_attention"):
        F.paged_attention(q, cache, cache[..., :2], tables, np.array([2, 3]))
    with pytest.raises(ShapeError, match="h_kv"):
        F.paged_attention(randn(2, 3, 3), cache, cache, tables, np.array([2, 3]))
    with pytest.raises(ValueError, match="context_lens"):
        F.paged_attention(q, cache, cache, tables, np.array([2, 5]))
    with pytest.raises(TypeError, match="integers"):
        F.paged_attention(q, cache, cache, tables.astype(float), np.array([2, 3]))
