"""Flex attention: scaled dot-product attention whose scores are changed by a function of
their position, under PyTorch's name and signature (``torch.nn.attention.flex_attention``).

For queries Q (B, H, T_q, E), keys K (B, H, T_k, E) and values V (B, H, T_k, E_v):

    s[b, h, i, j] = score_mod(scale q_i . k_j, b, h, i, j),   kept where mask_mod(b, h, i, j)
    O[b, h, i] = sum_j softmax_j(s[b, h, i, :]) v_j,   LSE[b, h, i] = log sum_j exp s[b, h, i, j]

``score_mod(score, b, h, q_idx, kv_idx)`` is written as for one score: ``score`` is a lamina
Tensor of scores and b, h, q_idx, kv_idx are integer arrays broadcasting against it (b on
the batch axis, h on the heads, q_idx on the queries, kv_idx on the keys), so elementwise
operations give each score its own value: ``score + slopes[h] * (kv_idx - q_idx)`` (ALiBi),
``score + table[q_idx - kv_idx + T - 1]`` (a learned relative bias). Tensors the function reads
(``slopes``, ``table``) get their gradients. The mask comes as a
:class:`lamina.functional.flex_masks.BlockMask` (:func:`create_block_mask`).

The queries are taken one block at a time (the block mask's query block size, or 128), and
within that block only the key tiles the block mask does not mark empty are scored; mask_mod
is called only on the partial ones. Each query block is one checkpointed computation
(:func:`lamina.autograd.checkpoint`): its scores are freed after the forward and computed
again in backward, so the scores alive at any time are those of one query block, (B, H,
block, T_k) at most, never (B, H, T_q, T_k). A query that keeps no key gets a zero output and
LSE = -inf, as in torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from lamina import backend
from lamina.autograd import Tensor
from lamina.autograd.checkpoint import checkpoint
from lamina.errors import ShapeError
from lamina.functional.elementwise import exp, log, where
from lamina.functional.flex_masks import EMPTY, FULL, BlockMask, evaluate_mask
from lamina.functional.shape import broadcast_to, concat

__all__ = ["flex_attention"]

#: Query rows per block when no block mask gives them.
QUERY_BLOCK = 128


class _QueryBlock:
    """The output and log-sum-exp of one block of queries, (..., rows, E_v + 1), over the key
    positions ``cols`` (an int array; ``partial``: a boolean array over them, where mask_mod
    applies). ``grid(rows, cols)`` gives the index arrays (b, h, q_idx, kv_idx)."""

    def __init__(self, rows, cols, partial, grid: Callable, score_mod, mask_mod, scale: float):
        self.rows, self.cols, self.partial, self.grid = rows, cols, partial, grid
        self.score_mod, self.mask_mod, self.scale = score_mod, mask_mod, scale
        self.__name__ = f"flex_attention's queries {rows[0]}..{rows[-1]}"

    def _keys(self, x: Tensor) -> Tensor:
        cols = self.cols
        if cols[-1] - cols[0] + 1 == len(cols):                 # one run of keys: a view
            return x[..., int(cols[0]):int(cols[-1]) + 1, :]
        return x[..., cols, :]

    def __call__(self, q_rows: Tensor, k: Tensor, v: Tensor) -> Tensor:
        xp = backend.xp
        s = (q_rows @ self._keys(k).swapaxes(-1, -2)) * self.scale
        if self.score_mod is not None:
            s = self._modified(s)
        if self.partial.any():
            b, h, q_idx, kv_idx = self.grid(self.rows, self.cols[self.partial])
            keep = xp.ones(s.shape, dtype=bool)
            keep[..., self.partial] = evaluate_mask(self.mask_mod, b, h, q_idx, kv_idx,
                                                    s.shape[:-1] + (len(kv_idx.ravel()),), "flex_attention")
            s = where(keep, s, -xp.inf)
        top = s.data.max(axis=-1, keepdims=True)
        shift = xp.where(xp.isfinite(top), top, 0)             # rows that keep no key
        p = exp(s - shift)
        total = p.sum(axis=-1, keepdims=True)
        empty = total.data == 0
        gap = empty.astype(total.dtype)
        out = (p @ self._keys(v)) / (total + gap)
        lse = where(empty, -xp.inf, log(total + gap) + shift)
        return concat([out, lse], axis=-1)

    def _modified(self, s: Tensor) -> Tensor:
        modified = self.score_mod(s, *self.grid(self.rows, self.cols))
        if not isinstance(modified, Tensor):
            modified = Tensor._constant(modified, s.dtype)
        if modified.shape != s.shape:
            try:
                modified = broadcast_to(modified, s.shape)
            except ValueError:
                raise ShapeError(f"flex_attention: score_mod returned shape {modified.shape} for scores of shape "
                                 f"{s.shape}; use elementwise operations only") from None
        return modified


def _check(query: Tensor, key: Tensor, value: Tensor, enable_gqa: bool) -> int:
    """The number of query heads per key/value head, after checking the shapes."""
    if query.ndim != 4 or key.ndim != 4 or value.ndim != 4:
        raise ShapeError(f"flex_attention: query, key and value must be 4-D (B, H, T, E), got shapes "
                         f"{query.shape}, {key.shape}, {value.shape}")
    (n, h_q, _, e), (n_k, h_kv, _, e_k) = query.shape, key.shape
    if n != n_k or value.shape[:3] != key.shape[:3] or e != e_k:
        raise ShapeError(f"flex_attention: query {query.shape}, key {key.shape} and value {value.shape} must share "
                         "the batch size, key and value their heads and length, query and key the feature size E")
    if h_q != h_kv and not (enable_gqa and h_q % h_kv == 0):
        raise ShapeError(f"flex_attention: query has {h_q} heads and key/value {h_kv}; they must be equal, or with "
                         "enable_gqa=True the key/value heads must divide the query heads")
    return h_q // h_kv


def _check_block_mask(block_mask: BlockMask, query: Tensor, key: Tensor) -> None:
    n, h = query.shape[:2]
    lengths = (query.shape[2], key.shape[2])
    if (tuple(block_mask.seq_lengths) != lengths or block_mask.kinds.shape[0] not in (1, n)
            or block_mask.kinds.shape[1] not in (1, h)):
        raise ShapeError(f"flex_attention: the block mask of shape {block_mask.shape} does not fit queries "
                         f"{query.shape} and keys {key.shape}: expected (1 or {n}, 1 or {h}, {lengths[0]}, "
                         f"{lengths[1]})")


def _index_grid(batch: int, heads: int, group: int) -> Callable:
    """grid(rows, cols) -> (b, h, q_idx, kv_idx), index arrays broadcasting against the scores
    (batch, heads, rows, cols), or with grouped heads against (batch, heads / group, group,
    rows, cols), where h is the query head."""
    xp = backend.xp
    b = xp.arange(batch).reshape(batch, 1, 1, 1, 1)
    h = xp.arange(heads).reshape(1, heads // group, group, 1, 1)
    if group == 1:
        b, h = b[..., 0], h[:, :, 0]

    def grid(rows, cols):
        extra = (1,) * (b.ndim - 2)
        return b, h, xp.asarray(rows).reshape(extra + (-1, 1)), xp.asarray(cols).reshape(extra + (1, -1))
    return grid


def flex_attention(query, key, value, score_mod: Callable | None = None, block_mask: BlockMask | None = None,
                   scale: float | None = None, enable_gqa: bool = False, return_lse: bool = False):
    """Attention with scores changed by ``score_mod`` and kept by ``block_mask`` (see the
    module docstring): query (B, H_q, T_q, E), key (B, H_kv, T_k, E), value (B, H_kv, T_k, E_v)
    -> output (B, H_q, T_q, E_v), and with ``return_lse`` also the log-sum-exp of each query's
    scores (B, H_q, T_q). ``scale`` replaces 1 / sqrt(E). ``enable_gqa``: H_kv may divide H_q,
    query head h then using key/value head h // (H_q / H_kv); score_mod and mask_mod see the
    query head."""
    xp = backend.xp
    query, key, value = (x if isinstance(x, Tensor) else Tensor(x) for x in (query, key, value))
    group = _check(query, key, value, enable_gqa)
    n, h_q, t_q, _ = query.shape
    t_k, e_v = key.shape[2], value.shape[-1]
    if block_mask is not None:
        _check_block_mask(block_mask, query, key)
        q_block, kv_block = block_mask.BLOCK_SIZE
        kinds = block_mask.kinds
    else:
        q_block, kv_block = QUERY_BLOCK, t_k
        kinds = xp.full((1, 1, -(-t_q // q_block), 1), FULL, dtype=xp.int8)
    scale = 1.0 / math.sqrt(query.shape[-1]) if scale is None else float(scale)
    grid = _index_grid(n, h_q, group)
    if group > 1:
        query = query.reshape((n, h_q // group, group, t_q, query.shape[-1]))
        key, value = (x.reshape((n, x.shape[1], 1) + x.shape[2:]) for x in (key, value))
    mask_mod = block_mask.mask_mod if block_mask is not None else None
    blocks = []
    for i, q0 in enumerate(range(0, t_q, q_block)):
        rows = xp.arange(q0, min(q0 + q_block, t_q))
        row_kinds = kinds[:, :, i].reshape(-1, kinds.shape[-1])
        used = ~(row_kinds == EMPTY).all(axis=0)
        cols = [xp.arange(j * kv_block, min((j + 1) * kv_block, t_k)) for j in xp.flatnonzero(used)]
        if not cols:                           # every key removed: zero outputs, LSE = -inf
            empty = xp.zeros(query.shape[:-2] + (len(rows), e_v + 1), dtype=query.dtype)
            empty[..., -1] = -xp.inf
            blocks.append(Tensor._wrap(empty))
            continue
        partial = [xp.full(len(c), not (row_kinds[:, j] == FULL).all()) for j, c in zip(xp.flatnonzero(used), cols)]
        run = _QueryBlock(rows, xp.concatenate(cols), xp.concatenate(partial), grid, score_mod, mask_mod, scale)
        blocks.append(checkpoint(run, query[..., q0:q0 + len(rows), :], key, value))
    both = concat(blocks, axis=-2) if len(blocks) > 1 else blocks[0]
    out, lse = both[..., :e_v], both[..., e_v]
    if group > 1:
        out, lse = out.reshape((n, h_q, t_q, e_v)), lse.reshape((n, h_q, t_q))
    return (out, lse) if return_lse else out
