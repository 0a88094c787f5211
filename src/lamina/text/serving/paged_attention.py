"""Reading and writing the paged key/value cache: the prefill path stores a prompt's keys and
values slot by slot (slot s is block s // block_size, offset s % block_size) and attends
causally over the sequence's gathered cache; the decode step is
:func:`lamina.functional.paged_attention`."""

from __future__ import annotations

import numpy as np

from lamina.errors import ShapeError

__all__ = ["gather_paged_cache", "prefill_attention", "write_paged_cache"]


def write_paged_cache(key_cache: np.ndarray, value_cache: np.ndarray, keys: np.ndarray, values: np.ndarray,
                      slots) -> None:
    """Store ``keys``, ``values`` (T, h_kv, d) in the caches (num_blocks, block_size, h_kv, d)
    at the flat ``slots`` (T,), in place."""
    slots = np.asarray(slots)
    if keys.shape != values.shape or keys.shape[0] != slots.shape[0] or keys.shape[1:] != key_cache.shape[2:]:
        raise ShapeError(f"write_paged_cache: keys {keys.shape} and values {values.shape} must be (T, h_kv, d) = "
                         f"({slots.shape[0]}, {key_cache.shape[2]}, {key_cache.shape[3]}) for {slots.shape[0]} slots")
    block_size = key_cache.shape[1]
    key_cache[slots // block_size, slots % block_size] = keys
    value_cache[slots // block_size, slots % block_size] = values


def gather_paged_cache(cache: np.ndarray, block_table, length: int) -> np.ndarray:
    """The first ``length`` cached rows (length, h_kv, d) of the sequence owning ``block_table``."""
    num_blocks, block_size, kv_heads, d = cache.shape
    table = np.asarray(block_table)
    if length > table.shape[0] * block_size:
        raise ValueError(f"gather_paged_cache: {length} tokens do not fit in {table.shape[0]} blocks of {block_size}")
    return cache[table].reshape(-1, kv_heads, d)[:length]


def prefill_attention(query: np.ndarray, key_cache: np.ndarray, value_cache: np.ndarray, block_table,
                      start: int, scale: float) -> np.ndarray:
    """Causal attention of the queries (T, h, d) of positions start .. start + T - 1 over the
    sequence's cached keys and values of positions 0 .. start + T - 1 (their own included, so
    write them first): out_t = softmax(scale q_t K_{<= start + t}^T) V_{<= start + t}."""
    t, heads, d = query.shape
    length = start + t
    keys = gather_paged_cache(key_cache, block_table, length)
    values = gather_paged_cache(value_cache, block_table, length)
    group = heads // keys.shape[1]
    keys, values = np.repeat(keys, group, axis=1), np.repeat(values, group, axis=1)
    scores = np.einsum("thd,shd->hts", query, keys) * scale
    future = np.arange(length)[None, :] > (start + np.arange(t))[:, None]
    scores = np.where(future, -np.inf, scores)
    scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
    weights = scores / scores.sum(axis=-1, keepdims=True)
    return np.einsum("hts,shd->thd", weights, values)
