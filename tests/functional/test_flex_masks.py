"""Block masks for flex_attention: the tiles torch's create_block_mask marks, the combinators
and_masks / or_masks / noop_mask, and the errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn.attention import flex_attention as torch_flex

import lamina
from lamina import functional as F
from lamina.functional.flex_masks import FULL, PARTIAL


def causal(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx


def sliding_window(b, h, q_idx, kv_idx):
    return (q_idx - kv_idx < 20) & (kv_idx - q_idx < 20)


def per_head_and_batch(b, h, q_idx, kv_idx):
    return kv_idx <= q_idx + 16 * h - 8 * b


DOCS = np.repeat(np.arange(4), [20, 30, 10, 36])


def same_document(b, h, q_idx, kv_idx):
    docs = DOCS if isinstance(q_idx, np.ndarray) else torch.tensor(DOCS)
    return docs[q_idx] == docs[kv_idx]


MODS = {"causal": (causal, None, None), "sliding window": (sliding_window, None, None),
        "per head and batch": (per_head_and_batch, 2, 3), "document": (same_document, None, None)}


@pytest.mark.parametrize("name", list(MODS))
def test_tiles_match_torch_create_block_mask(name):
    mod, batch, heads = MODS[name]
    ours = F.create_block_mask(mod, batch, heads, 96, 64, BLOCK_SIZE=16)
    theirs = torch_flex.create_block_mask(mod, batch, heads, 96, 64, device="cpu", BLOCK_SIZE=16)
    assert ours.shape == tuple(theirs.shape)
    assert np.array_equal(ours.to_dense(), theirs.to_dense().numpy())
    # torch counts, per query tile, the partial tiles (kv_num_blocks) and the full ones apart
    assert np.array_equal((ours.kinds == PARTIAL).sum(-1), theirs.kv_num_blocks.numpy())
    assert np.array_equal((ours.kinds == FULL).sum(-1), theirs.full_kv_num_blocks.numpy())
    assert ours.sparsity() == pytest.approx(theirs.sparsity())


def test_ragged_lengths_and_two_block_sizes():
    ours = F.create_block_mask(causal, None, None, 37, 45, BLOCK_SIZE=(8, 16))
    theirs = torch_flex.create_block_mask(causal, None, None, 37, 45, device="cpu", BLOCK_SIZE=(8, 16))
    assert ours.BLOCK_SIZE == (8, 16) and ours.kinds.shape == (1, 1, 5, 3)
    assert np.array_equal(ours.to_dense(), theirs.to_dense().numpy())
    # the last query tile (rows 32..36) keeps every key of tile 0 and 1: full here, where torch,
    # padding the rows past Q_LEN as removed, calls it partial
    assert list(ours.kinds[0, 0, 4]) == [FULL, FULL, PARTIAL]


def test_and_or_and_noop_masks_combine_elementwise():
    b, h, q_idx, kv_idx = np.arange(2)[:, None, None, None], np.arange(3)[:, None, None], np.arange(9)[:, None], \
        np.arange(11)
    window = sliding_window(b, h, q_idx, kv_idx)
    lower = causal(b, h, q_idx, kv_idx)
    both = F.and_masks(causal, sliding_window)(b, h, q_idx, kv_idx)
    either = F.or_masks(causal, sliding_window)(b, h, q_idx, kv_idx)
    assert both.shape == either.shape == (2, 3, 9, 11)
    assert np.array_equal(both, np.broadcast_to(lower & window, both.shape))
    assert np.array_equal(either, np.broadcast_to(lower | window, both.shape))
    assert F.noop_mask(b, h, q_idx, kv_idx).all() and F.and_masks()(b, h, q_idx, kv_idx).all()
    assert not F.or_masks()(b, h, q_idx, kv_idx).any()
    mask = F.create_block_mask(F.and_masks(causal, lambda b, h, q, k: q - k < 8), None, None, 32, 32, BLOCK_SIZE=8)
    assert mask.block_counts() == {"empty": 9, "partial": 4 + 3, "full": 0}   # the diagonal and the one below
    assert "sparsity=56.25%" in repr(mask)


def test_errors_name_the_function_and_values():
    with pytest.raises(ValueError, match="create_block_mask: Q_LEN must be a positive int, got 0"):
        F.create_block_mask(causal, None, None, 0, 4)
    with pytest.raises(ValueError, match="BLOCK_SIZE must be a positive int"):
        F.create_block_mask(causal, None, None, 4, 4, BLOCK_SIZE=(2, 0))
    with pytest.raises(TypeError, match="mask_mod must return booleans"):
        F.create_block_mask(lambda b, h, q, k: q - k, None, None, 4, 4)
    with pytest.raises(lamina.errors.ShapeError, match="mask_mod returned shape"):
        F.create_block_mask(lambda b, h, q, k: np.ones((3, 5), dtype=bool), None, None, 4, 4)
    with pytest.raises(TypeError, match="mask_mod must be callable"):
        F.create_block_mask("causal", None, None, 4, 4)
