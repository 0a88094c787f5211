"""Masks for :func:`lamina.functional.flex_attention`, under PyTorch's names
(``torch.nn.attention.flex_attention``).

A mask_mod is a function ``mask_mod(b, h, q_idx, kv_idx) -> bool`` saying whether query
``q_idx`` of batch entry ``b`` and head ``h`` may attend to key ``kv_idx``. It is written as for
one position and called on integer arrays that broadcast against each other (b along the
batch axis, h along the heads, q_idx along the queries, kv_idx along the keys), so it must
use elementwise operations only: ``q_idx >= kv_idx`` (causal), ``q_idx - kv_idx < window``
(sliding window), ``doc[q_idx] == doc[kv_idx]`` (document masking, ``doc`` an integer array).

:func:`create_block_mask` cuts the (Q_LEN, KV_LEN) grid into blocks of BLOCK_SIZE and records
for each block whether the mask keeps none of it (empty: flex_attention skips it), all of it
(full: flex_attention computes it without calling mask_mod) or part of it (partial: mask_mod
is called on it).
"""

from __future__ import annotations

from collections.abc import Callable

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError

__all__ = ["BlockMask", "and_masks", "create_block_mask", "noop_mask", "or_masks"]

EMPTY, PARTIAL, FULL = 0, 1, 2


def index_grid(batch: int, heads: int, rows, cols):
    """(b, h, q_idx, kv_idx): integer arrays (batch, 1, 1, 1), (1, heads, 1, 1), (1, 1, len(rows), 1)
    and (1, 1, 1, len(cols)) that broadcast to the scores of those positions."""
    xp = backend.xp
    return (xp.arange(batch).reshape(-1, 1, 1, 1), xp.arange(heads).reshape(1, -1, 1, 1),
            xp.asarray(rows).reshape(1, 1, -1, 1), xp.asarray(cols).reshape(1, 1, 1, -1))


def evaluate_mask(mask_mod: Callable, b, h, q_idx, kv_idx, shape: tuple, who: str):
    """``mask_mod`` on the index arrays as a boolean array of ``shape`` (the arrays' broadcast)."""
    xp = backend.xp
    kept = mask_mod(b, h, q_idx, kv_idx)
    kept = xp.asarray(kept.data if isinstance(kept, Tensor) else kept)
    if kept.dtype != bool:
        raise TypeError(f"{who}: mask_mod must return booleans (True = attend), got dtype {kept.dtype}")
    try:
        return xp.broadcast_to(kept, shape)
    except ValueError:
        raise ShapeError(f"{who}: mask_mod returned shape {tuple(kept.shape)}, which does not broadcast to the "
                         f"positions {shape} it was called on; use elementwise operations only") from None


def _block_sizes(block_size) -> tuple[int, int]:
    sizes = tuple(block_size) if isinstance(block_size, (tuple, list)) else (block_size, block_size)
    if len(sizes) != 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes):
        raise ValueError(f"create_block_mask: BLOCK_SIZE must be a positive int or a pair (q, kv) of them, "
                         f"got {block_size!r}")
    return sizes


class BlockMask:
    """Which (query block, key block) tiles of the scores a mask_mod keeps: ``kinds`` (B, H,
    q blocks, kv blocks) holds EMPTY (0), PARTIAL (1) or FULL (2); B or H is 1 when the mask
    is the same for every batch entry or head. Made by :func:`create_block_mask`. A tile cut
    short by Q_LEN or KV_LEN is full when every position it has is kept (torch counts the
    positions past the end as removed, and calls such a tile partial)."""

    def __init__(self, kinds, mask_mod: Callable, seq_lengths: tuple[int, int], block_size: tuple[int, int]):
        self.kinds = kinds
        self.mask_mod = mask_mod
        self.seq_lengths = seq_lengths
        self.BLOCK_SIZE = block_size

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(B, H, Q_LEN, KV_LEN), as torch's BlockMask."""
        return (*self.kinds.shape[:2], *self.seq_lengths)

    def block_counts(self) -> dict[str, int]:
        """How many tiles, over every batch entry and head, are empty, partial and full."""
        return {name: int((self.kinds == kind).sum()) for name, kind in
                (("empty", EMPTY), ("partial", PARTIAL), ("full", FULL))}

    def sparsity(self) -> float:
        """The percentage of tiles that are empty (skipped), as torch's ``BlockMask.sparsity``."""
        return 100.0 * float((self.kinds == EMPTY).mean())

    def to_dense(self):
        """(B, H, q blocks, kv blocks) int32: 1 where a tile has at least one kept score."""
        return (self.kinds != EMPTY).astype(backend.xp.int32)

    def __repr__(self) -> str:
        counts = self.block_counts()
        return (f"BlockMask(shape={self.shape}, BLOCK_SIZE={self.BLOCK_SIZE}, sparsity={self.sparsity():.2f}%, "
                f"empty={counts['empty']}, partial={counts['partial']}, full={counts['full']})")


def create_block_mask(mask_mod: Callable, B: int | None, H: int | None, Q_LEN: int, KV_LEN: int,  # noqa: N803
                      device=None, BLOCK_SIZE: int | tuple[int, int] = 128, _compile: bool = False) -> BlockMask:  # noqa: N803
    """The :class:`BlockMask` of ``mask_mod`` over B batch entries, H heads, Q_LEN queries and
    KV_LEN keys (B or H None: the mask does not depend on it), in tiles of BLOCK_SIZE (one
    int, or (q, kv)). mask_mod is evaluated one row of tiles at a time, so memory grows as
    B H BLOCK_SIZE KV_LEN, not as Q_LEN KV_LEN. ``device`` and ``_compile`` are accepted for
    torch's signature and ignored."""
    xp = backend.xp
    if not callable(mask_mod):
        raise TypeError(f"create_block_mask: mask_mod must be callable, got {type(mask_mod).__name__}")
    batch, heads = 1 if B is None else B, 1 if H is None else H
    for name, value in (("B", batch), ("H", heads), ("Q_LEN", Q_LEN), ("KV_LEN", KV_LEN)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"create_block_mask: {name} must be a positive int, got {value!r}")
    q_block, kv_block = _block_sizes(BLOCK_SIZE)
    n_q, n_kv = -(-Q_LEN // q_block), -(-KV_LEN // kv_block)
    kinds = xp.empty((batch, heads, n_q, n_kv), dtype=xp.int8)
    padded = n_kv * kv_block - KV_LEN
    for i in range(n_q):
        rows = xp.arange(i * q_block, min((i + 1) * q_block, Q_LEN))
        grid = index_grid(batch, heads, rows, xp.arange(KV_LEN))
        kept = evaluate_mask(mask_mod, *grid, (batch, heads, len(rows), KV_LEN), "create_block_mask")
        widths = [(0, 0)] * 3 + [(0, padded)]        # keys past KV_LEN: neither kept nor removed
        tiles = (batch, heads, len(rows), n_kv, kv_block)
        some = xp.pad(kept, widths, constant_values=False).reshape(tiles).any(axis=(2, 4))
        every = xp.pad(kept, widths, constant_values=True).reshape(tiles).all(axis=(2, 4))
        kinds[:, :, i] = xp.where(every, FULL, xp.where(some, PARTIAL, EMPTY))
    return BlockMask(kinds, mask_mod, (Q_LEN, KV_LEN), (q_block, kv_block))


def noop_mask(b, h, q_idx, kv_idx):
    """The mask_mod that keeps every score."""
    xp = backend.xp
    return xp.ones(xp.broadcast_shapes(*(xp.shape(a) for a in (b, h, q_idx, kv_idx))), dtype=bool)


def and_masks(*mask_mods: Callable) -> Callable:
    """The mask_mod keeping a score where every one of ``mask_mods`` keeps it (all: noop_mask)."""
    def both(b, h, q_idx, kv_idx):
        kept = noop_mask(b, h, q_idx, kv_idx)
        for mod in mask_mods:
            kept = kept & _as_array(mod(b, h, q_idx, kv_idx))
        return kept
    return both


def or_masks(*mask_mods: Callable) -> Callable:
    """The mask_mod keeping a score where any one of ``mask_mods`` keeps it (none: keeps nothing)."""
    def either(b, h, q_idx, kv_idx):
        kept = ~noop_mask(b, h, q_idx, kv_idx)
        for mod in mask_mods:
            kept = kept | _as_array(mod(b, h, q_idx, kv_idx))
        return kept
    return either


def _as_array(kept):
    return backend.xp.asarray(kept.data if isinstance(kept, Tensor) else kept)
