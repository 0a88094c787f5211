"""Sparse attention patterns for long sequences: Longformer's sliding window with global
tokens, BigBird's block pattern, and attention computed only over the allowed blocks.

Longformer (Beltagy et al. 2020): token i sees the keys within ``window`` positions on each
side (the paper's window w = 2 * window), and a few global tokens see, and are seen by,
every token:

    keep[i, j] = |i - j| <= window  or  i in G  or  j in G

BigBird (Zaheer et al. 2020) works on blocks of ``block_size`` tokens; with n blocks, query
block a keeps key block b when

    |a - b| <= (num_window_blocks - 1) / 2      (sliding window of blocks)
    or a < g or b < g                           (the first g blocks are global)
    or b is one of the r random blocks of a      (drawn among the blocks not already kept)

the global rows keeping everything (no random blocks there).

Block-sparse attention computes softmax(Q K^T scale) V with the scores restricted to the
(query block, key block) pairs that a boolean block mask keeps. The key and value blocks of
each query block are gathered next to each other, so the scores computed are exactly
(kept blocks) * block_size^2 per batch entry; query blocks keeping the same number of key
blocks are batched together. It equals dense attention with the mask expanded to tokens
(:func:`expand_block_mask`).
"""

from __future__ import annotations

import math

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.activation import softmax
from lamina.functional.indexing import index_select
from lamina.functional.shape import concat, reshape, swapaxes

__all__ = ["bigbird_mask", "block_sparse_attention", "expand_block_mask", "longformer_mask"]


def _count(value, what: str, who: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{who}: {what} must be an int >= {low}, got {value!r}")
    return int(value)


def longformer_mask(seq_len: int, window: int, global_positions=()) -> Tensor:
    """The boolean mask (seq_len, seq_len), True where query i sees key j:
    |i - j| <= window, or i or j is one of ``global_positions``."""
    _count(seq_len, "seq_len", "longformer_mask")
    _count(window, "window", "longformer_mask", low=0)
    positions = np.asarray(list(global_positions), dtype=np.int64).reshape(-1)
    if positions.size and (positions.min() < 0 or positions.max() >= seq_len):
        raise ValueError(f"longformer_mask: global_positions must lie in [0, {seq_len}), got "
                         f"{positions.tolist()}")
    i = np.arange(seq_len)
    keep = np.abs(i[:, None] - i[None, :]) <= window
    keep[positions, :] = True
    keep[:, positions] = True
    return Tensor._wrap(backend.xp.asarray(keep))


def bigbird_mask(seq_len: int, block_size: int, num_window_blocks: int = 3, num_global_blocks: int = 1,
                 num_random_blocks: int = 1, seed: int = 0) -> Tensor:
    """BigBird's boolean block mask (n, n), n = seq_len / block_size (see the module
    docstring): a sliding window of ``num_window_blocks`` blocks (odd), the first
    ``num_global_blocks`` blocks global, and per other query block ``num_random_blocks``
    key blocks drawn without replacement, by NumPy's generator seeded with ``seed``, among
    those not already kept (all of them when fewer remain)."""
    who = "bigbird_mask"
    _count(seq_len, "seq_len", who)
    _count(block_size, "block_size", who)
    _count(num_window_blocks, "num_window_blocks", who)
    _count(num_global_blocks, "num_global_blocks", who, low=0)
    _count(num_random_blocks, "num_random_blocks", who, low=0)
    if seq_len % block_size:
        raise ShapeError(f"{who}: seq_len {seq_len} must be a multiple of block_size {block_size}")
    if num_window_blocks % 2 == 0:
        raise ValueError(f"{who}: num_window_blocks must be odd (centred on the query block), got "
                         f"{num_window_blocks}")
    n = seq_len // block_size
    b = np.arange(n)
    keep = np.abs(b[:, None] - b[None, :]) <= num_window_blocks // 2
    keep[:num_global_blocks, :] = True
    keep[:, :num_global_blocks] = True
    rng = np.random.default_rng(seed)
    for row in range(num_global_blocks, n):
        free = np.flatnonzero(~keep[row])
        chosen = rng.choice(free, size=min(num_random_blocks, free.size), replace=False)
        keep[row, chosen] = True
    return Tensor._wrap(backend.xp.asarray(keep))


def _host_block_mask(block_mask, who: str) -> np.ndarray:
    m = backend.to_numpy(block_mask.data if isinstance(block_mask, Tensor) else block_mask)
    m = np.asarray(m)
    if m.dtype != bool or m.ndim != 2:
        raise ShapeError(f"{who}: block_mask must be a 2-D boolean array (query blocks, key blocks), got "
                         f"dtype {m.dtype} and shape {m.shape}")
    return m


def expand_block_mask(block_mask, block_size: int) -> Tensor:
    """The token mask (n_q * block_size, n_k * block_size) of a block mask (n_q, n_k): every
    kept block becomes a block_size x block_size square of True."""
    m = _host_block_mask(block_mask, "expand_block_mask")
    _count(block_size, "block_size", "expand_block_mask")
    return Tensor._wrap(backend.xp.asarray(np.kron(m, np.ones((block_size, block_size), dtype=bool))))


def _as_tensor(x) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(x)


def block_sparse_attention(q, k, v, block_mask, block_size: int, scale: float | None = None,
                           stats: dict | None = None) -> Tensor:
    """softmax(Q K^T scale) V over the (query block, key block) pairs ``block_mask`` keeps,
    for Q (..., T_q, d), K (..., T_k, d), V (..., T_k, d_v) with T_q = n_q block_size and
    T_k = n_k block_size, ``block_mask`` boolean (n_q, n_k); leading axes broadcast.
    ``scale`` defaults to 1 / sqrt(d). A query block keeping no key block gets a zero
    context. Returns (..., T_q, d_v).

    ``stats``: a dict that receives ``score_entries``, the number of scores computed per
    batch entry (the kept blocks times block_size^2), and ``groups``, the number of batched
    products (one per distinct count of key blocks in a row)."""
    who = "block_sparse_attention"
    q, k, v = (_as_tensor(x) for x in (q, k, v))
    _count(block_size, "block_size", who)
    mask = _host_block_mask(block_mask, who)
    if q.ndim < 2 or k.ndim < 2 or v.ndim < 2 or q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ShapeError(f"{who}: expected q (..., T_q, d), k (..., T_k, d), v (..., T_k, d_v), got shapes "
                         f"{q.shape}, {k.shape}, {v.shape}")
    n_q, n_k = mask.shape
    if q.shape[-2] != n_q * block_size or k.shape[-2] != n_k * block_size:
        raise ShapeError(f"{who}: block_mask {mask.shape} with block_size {block_size} needs T_q = "
                         f"{n_q * block_size} and T_k = {n_k * block_size}, got q {q.shape} and k {k.shape}")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    xp = backend.xp
    q_blocks = reshape(q, q.shape[:-2] + (n_q, block_size, q.shape[-1]))
    k_blocks = reshape(k, k.shape[:-2] + (n_k, block_size, k.shape[-1]))
    v_blocks = reshape(v, v.shape[:-2] + (n_k, block_size, v.shape[-1]))
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    counts = mask.sum(axis=1)
    pieces, order, entries = [], [], 0
    for count in np.unique(counts):
        rows = np.flatnonzero(counts == count)
        order.append(rows)
        if count == 0:
            zeros = xp.zeros(lead + (rows.size, block_size, v.shape[-1]), dtype=v.dtype)
            pieces.append(Tensor._wrap(zeros))
            continue
        cols = np.stack([np.flatnonzero(mask[row]) for row in rows]).reshape(-1)
        keys = index_select(k_blocks, -3, xp.asarray(cols))
        values = index_select(v_blocks, -3, xp.asarray(cols))
        keys = reshape(keys, k.shape[:-2] + (rows.size, count * block_size, k.shape[-1]))
        values = reshape(values, v.shape[:-2] + (rows.size, count * block_size, v.shape[-1]))
        scores = (index_select(q_blocks, -3, xp.asarray(rows)) @ swapaxes(keys, -1, -2)) * scale
        entries += math.prod(scores.shape[-3:])
        pieces.append(softmax(scores, axis=-1) @ values)
    out = pieces[0] if len(pieces) == 1 else concat(pieces, axis=-3)
    inverse = np.argsort(np.concatenate(order))
    if not np.array_equal(inverse, np.arange(n_q)):
        out = index_select(out, -3, xp.asarray(inverse))
    if stats is not None:
        stats["score_entries"] = entries
        stats["groups"] = int(np.count_nonzero(np.unique(counts)))
    return reshape(out, out.shape[:-3] + (n_q * block_size, v.shape[-1]))
