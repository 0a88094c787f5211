"""Decode-step attention over a paged key/value cache (Kwon et al., "Efficient memory management
for large language model serving with PagedAttention", 2023).

The cache is a pool of fixed-size blocks: ``key_cache`` and ``value_cache`` (num_blocks,
block_size, h_kv, d). Sequence n owns the blocks ``block_tables[n]`` in order, so its token at
position p lives in block ``block_tables[n, p // block_size]``, slot ``p % block_size``. With
K_n, V_n the first ``context_lens[n]`` rows gathered that way, each query head i reads

    out[n, i] = softmax(scale q[n, i] K_n[:, g(i)]^T) V_n[:, g(i)],   g(i) = i // (h / h_kv)

(grouped-query attention when h_kv < h). A composite of gather, matmul and softmax, so it has
first and second derivatives with respect to the query and the caches.
"""

from __future__ import annotations

import numpy as np

from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.activation import softmax
from lamina.functional.arithmetic import matmul, mul
from lamina.functional.indexing import masked_fill
from lamina.functional.shape import getitem, reshape, transpose

__all__ = ["paged_attention"]

_WHO = "paged_attention"


def _check(query, key_cache, value_cache, tables: np.ndarray, lens: np.ndarray) -> None:
    if len(query.shape) != 3 or len(key_cache.shape) != 4 or tuple(key_cache.shape) != tuple(value_cache.shape):
        raise ShapeError(f"{_WHO}: expected query (N, h, d) and key/value caches (num_blocks, block_size, h_kv, d) of "
                         f"one shape, got {tuple(query.shape)}, {tuple(key_cache.shape)}, {tuple(value_cache.shape)}")
    n, heads, d = query.shape
    num_blocks, block_size, kv_heads, d_cache = key_cache.shape
    if d_cache != d or heads % kv_heads:
        raise ShapeError(f"{_WHO}: query (N, h, d) = {tuple(query.shape)} does not match the caches' (h_kv, d) = "
                         f"({kv_heads}, {d_cache}); expected equal d and h_kv dividing h")
    if tables.ndim != 2 or tables.shape[0] != n or lens.shape != (n,):
        raise ShapeError(f"{_WHO}: expected block_tables (N, max_blocks) and context_lens (N,) with N = {n}, got "
                         f"{tables.shape} and {lens.shape}")
    if np.any(lens < 1) or np.any(lens > tables.shape[1] * block_size):
        raise ValueError(f"{_WHO}: context_lens {lens.tolist()} must lie in [1, {tables.shape[1] * block_size}] "
                         f"(max_blocks {tables.shape[1]} x block_size {block_size})")
    if tables.size and (tables.min() < 0 or tables.max() >= num_blocks):
        raise ValueError(f"{_WHO}: block_tables name blocks outside [0, {num_blocks})")


def paged_attention(query, key_cache, value_cache, block_tables, context_lens, scale: float | None = None) -> Tensor:
    """One query token per sequence attending over its cached keys and values (see the module
    docstring). query (N, h, d); key_cache, value_cache (num_blocks, block_size, h_kv, d);
    block_tables (N, max_blocks) integer block ids (entries past a sequence's last block are
    ignored); context_lens (N,) the tokens each sequence has cached; ``scale`` default
    1 / sqrt(d). Returns (N, h, d)."""
    tables = np.asarray(block_tables)
    lens = np.asarray(context_lens)
    if tables.dtype.kind not in "iu" or lens.dtype.kind not in "iu":
        raise TypeError(f"{_WHO}: block_tables and context_lens must be integers, got {tables.dtype} and {lens.dtype}")
    _check(query, key_cache, value_cache, tables, lens)
    n, heads, d = query.shape
    _, block_size, kv_heads, _ = key_cache.shape
    scale = 1.0 / np.sqrt(d) if scale is None else float(scale)
    length = tables.shape[1] * block_size
    group = heads // kv_heads
    # (N, max_blocks, block_size, h_kv, d) -> (N, h_kv, S, d): each sequence's keys in order
    keys = transpose(reshape(getitem(key_cache, tables), n, length, kv_heads, d), 0, 2, 1, 3)
    values = transpose(reshape(getitem(value_cache, tables), n, length, kv_heads, d), 0, 2, 1, 3)
    q = reshape(query, n, kv_heads, group, d)                      # the heads of one key/value head together
    scores = mul(matmul(q, transpose(keys, 0, 1, 3, 2)), scale)     # (N, h_kv, group, S)
    past_end = np.arange(length)[None, :] >= lens[:, None]          # (N, S): slots not yet written
    weights = softmax(masked_fill(scores, past_end[:, None, None, :], -np.inf), axis=-1)
    return reshape(matmul(weights, values), n, heads, d)
