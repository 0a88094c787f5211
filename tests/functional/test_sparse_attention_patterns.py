"""Sparse attention patterns: Longformer and BigBird masks against hand-built examples, and
block-sparse attention against dense masked attention and a float64 PyTorch rewrite, in values
and gradients, with the number of computed scores; the README's example runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, compare_with_torch, randn, run_readme_section
from lamina import functional as F
from lamina.errors import ShapeError


def test_longformer_mask_equals_hand_built_example():
    got = F.longformer_mask(6, 1, global_positions=[0]).numpy()
    expected = np.array([[1, 1, 1, 1, 1, 1],
                         [1, 1, 1, 0, 0, 0],
                         [1, 1, 1, 1, 0, 0],
                         [1, 0, 1, 1, 1, 0],
                         [1, 0, 0, 1, 1, 1],
                         [1, 0, 0, 0, 1, 1]], dtype=bool)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("window, positions", [(0, []), (2, [3]), (1, [0, 9])])
def test_longformer_mask_is_symmetric_with_full_global_rows_and_columns(window, positions):
    m = F.longformer_mask(10, window, positions).numpy()
    np.testing.assert_array_equal(m, m.T)
    assert m[positions].all() and m[:, positions].all()
    others = [i for i in range(10) if i not in positions]
    for i in others:
        kept = set(np.flatnonzero(m[i]))
        assert kept == {j for j in range(10) if abs(i - j) <= window} | set(positions)


def test_bigbird_mask_without_random_blocks_equals_hand_built_example():
    got = F.bigbird_mask(12, 2, num_window_blocks=3, num_global_blocks=1, num_random_blocks=0).numpy()
    expected = np.array([[1, 1, 1, 1, 1, 1],
                         [1, 1, 1, 0, 0, 0],
                         [1, 1, 1, 1, 0, 0],
                         [1, 0, 1, 1, 1, 0],
                         [1, 0, 0, 1, 1, 1],
                         [1, 0, 0, 0, 1, 1]], dtype=bool)
    np.testing.assert_array_equal(got, expected)


def test_bigbird_random_blocks_are_seeded_and_counted_per_row():
    window = F.bigbird_mask(64, 4, 3, 2, 0).numpy()
    first = F.bigbird_mask(64, 4, 3, 2, 3, seed=7).numpy()
    np.testing.assert_array_equal(first, F.bigbird_mask(64, 4, 3, 2, 3, seed=7).numpy())
    assert not np.array_equal(first, F.bigbird_mask(64, 4, 3, 2, 3, seed=8).numpy())
    assert (first >= window).all()                        # window and global blocks kept
    extra = first & ~window
    assert not extra[:2].any()                            # global rows have no random blocks
    np.testing.assert_array_equal(extra[2:].sum(axis=1), 3)
    # fewer free blocks than asked: all of them are taken
    np.testing.assert_array_equal(F.bigbird_mask(16, 4, 3, 1, 5).numpy(), np.ones((4, 4), dtype=bool))


def test_mask_arguments_are_checked():
    with pytest.raises(ShapeError, match="multiple of block_size"):
        F.bigbird_mask(10, 4)
    with pytest.raises(ValueError, match="odd"):
        F.bigbird_mask(16, 4, num_window_blocks=2)
    with pytest.raises(ValueError, match="global_positions"):
        F.longformer_mask(5, 1, [5])
    with pytest.raises(ShapeError, match="T_q = 12"):
        F.block_sparse_attention(randn(10, 3), randn(12, 3), randn(12, 3), np.ones((3, 3), bool), 4)


def _torch_block_sparse(q, k, v, block_mask, block_size):
    """Dense softmax attention with the block mask expanded to tokens (every row keeps a key)."""
    keep = torch.from_numpy(np.kron(block_mask, np.ones((block_size, block_size), dtype=bool)))
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    return torch.softmax(scores.masked_fill(~keep, float("-inf")), dim=-1) @ v


MASKS = {
    "bigbird": F.bigbird_mask(24, 3, 3, 1, 2, seed=3).numpy(),
    "longformer blocks": F.longformer_mask(8, 1, [2]).numpy(),
    "rectangular": np.random.default_rng(1).random((8, 5)) < 0.5,
}


@pytest.mark.parametrize("name", list(MASKS))
def test_block_sparse_attention_matches_dense_masked_and_torch(name):
    block_mask = MASKS[name].copy()
    block_mask[:, 0] = True                               # every query row keeps a key
    n_q, n_k = block_mask.shape
    bs = 3
    q, k, v = randn(2, n_q * bs, 4, seed=1), randn(2, n_k * bs, 4, seed=2), randn(2, n_k * bs, 5, seed=3)
    compare_with_torch(lambda a, b, c: F.block_sparse_attention(a, b, c, block_mask, bs),
                       lambda a, b, c: _torch_block_sparse(a, b, c, block_mask, bs),
                       q, k, v, dtype=np.float64, rtol=1e-10)
    ours = [lamina.tensor(a, requires_grad=True, dtype=np.float64) for a in (q, k, v)]
    dense = [lamina.tensor(a, requires_grad=True, dtype=np.float64) for a in (q, k, v)]
    r = lamina.tensor(randn(2, n_q * bs, 5, seed=4), dtype=np.float64)
    out = F.block_sparse_attention(*ours, block_mask, bs)
    ref = F.scaled_dot_product_attention(*dense, mask=F.expand_block_mask(block_mask, bs))
    (out * r).sum().backward()
    (ref * r).sum().backward()
    assert_close(out.numpy(), ref.numpy(), 1e-12, "output")
    for a, b in zip(ours, dense):
        assert_close(a.grad, b.grad, 1e-12, "gradient")


def test_block_sparse_attention_gradient_check_with_broadcast_heads_and_empty_row():
    block_mask = np.array([[1, 1, 0], [0, 0, 0], [1, 0, 1]], dtype=bool)
    bs = 2
    out = F.block_sparse_attention(randn(2, 1, 6, 3), randn(1, 3, 6, 3), randn(1, 3, 6, 2), block_mask, bs)
    assert out.shape == (2, 3, 6, 2)
    np.testing.assert_array_equal(out.numpy()[..., 2:4, :], 0.0)   # a query block keeping no key
    assert check_gradients(lambda a, b, c: F.block_sparse_attention(a, b, c, block_mask, bs, scale=0.7),
                           randn(2, 1, 6, 3, seed=5), randn(1, 3, 6, 3, seed=6), randn(1, 3, 6, 2, seed=7))


@pytest.mark.parametrize("seed", [0, 1])
def test_computed_scores_are_the_kept_blocks_times_block_size_squared(seed):
    bs = 4
    block_mask = F.bigbird_mask(64, bs, 3, 1, 2, seed=seed).numpy()
    stats = {}
    F.block_sparse_attention(randn(1, 2, 64, 8), randn(1, 2, 64, 8), randn(1, 2, 64, 8), block_mask, bs, stats=stats)
    assert stats["score_entries"] == block_mask.sum() * bs**2
    assert stats["score_entries"] < 64 * 64 // 2          # well below dense attention's count
    assert stats["groups"] == len(np.unique(block_mask.sum(axis=1)))


def test_readme_example_runs():
    printed, names = run_readme_section("Sparse attention: Longformer and BigBird")
    assert "True" in printed and "False" not in printed
    assert names["stats"]["score_entries"] == names["block_mask"].numpy().sum() * 16
