"""flex_attention: values and log-sum-exp against torch's flex_attention (eager, CPU: it
computes no gradients there), gradients against torch's scaled_dot_product_attention with
the equivalent dense bias and mask, a float64 gradient check, block skipping and memory.

The mask and score mods are the usual examples (causal, sliding window, prefix-LM, document
masking, ALiBi, a learned relative bias, soft-capping); written with elementwise operations,
the same function serves lamina (NumPy index arrays) and torch (index tensors)."""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest
import torch
from torch.nn.attention import flex_attention as torch_flex

import lamina
from helpers import assert_close, check_gradients, randn
from lamina import functional as F

B, H, T_Q, T_K, E = 2, 4, 21, 27, 4
DOCS = np.sort(np.random.default_rng(7).integers(0, 3, max(T_Q, T_K)))  # document of each position
SLOPES = np.asarray(F.alibi_slopes(H))


def causal(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx


def sliding_window(b, h, q_idx, kv_idx):
    return (q_idx >= kv_idx) & (q_idx - kv_idx < 6)


def prefix_lm(b, h, q_idx, kv_idx):
    return (kv_idx < 5) | (q_idx >= kv_idx)


def documents(docs):
    def same_document(b, h, q_idx, kv_idx):
        return docs[q_idx] == docs[kv_idx]
    return same_document


MASKS = {"none": None, "causal": causal, "sliding window": sliding_window, "prefix-LM": prefix_lm,
         "document": "document"}


def mask_pair(name):
    """The mask_mod for lamina and the one for torch."""
    mod = MASKS[name]
    if mod == "document":
        return documents(DOCS), documents(torch.tensor(DOCS))
    return mod, mod


def alibi(slopes):
    def add_alibi(score, b, h, q_idx, kv_idx):
        return score + slopes[h] * (kv_idx - q_idx)
    return add_alibi


def relative_bias(table):
    """A learned bias per query-key offset: table has T_Q + T_K - 1 entries."""
    def add_bias(score, b, h, q_idx, kv_idx):
        return score + table[q_idx - kv_idx + T_K - 1]
    return add_bias


def torch_flex_attention(q, k, v, score_mod, mask_mod, gqa=False, block=8):
    block_mask = None
    if mask_mod is not None:
        block_mask = torch_flex.create_block_mask(mask_mod, None, None, q.shape[2], k.shape[2], device="cpu",
                                                  BLOCK_SIZE=block)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                 # torch: "called without torch.compile()"
        return torch_flex.flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask, enable_gqa=gqa,
                                         return_lse=True)


def lamina_flex_attention(q, k, v, score_mod, mask_mod, gqa=False, block=8, scale=None):
    block_mask = None
    if mask_mod is not None:
        block_mask = F.create_block_mask(mask_mod, None, None, q.shape[2], k.shape[2], BLOCK_SIZE=block)
    return F.flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask, enable_gqa=gqa, scale=scale,
                            return_lse=True)


def inputs(h_kv=H, seed=0):
    return randn(B, H, T_Q, E, seed=seed), randn(B, h_kv, T_K, E, seed=seed + 1), randn(B, h_kv, T_K, 3, seed=seed + 2)


@pytest.mark.parametrize("mask", list(MASKS))
@pytest.mark.parametrize("score", ["none", "alibi"])
def test_values_and_lse_match_torch_flex_attention(mask, score):
    q, k, v = inputs()
    ours_mask, theirs_mask = mask_pair(mask)
    ours_score = alibi(SLOPES) if score == "alibi" else None
    theirs_score = alibi(torch.tensor(SLOPES)) if score == "alibi" else None
    out, lse = lamina_flex_attention(*(lamina.tensor(a, dtype=np.float64) for a in (q, k, v)), ours_score, ours_mask)
    out_t, lse_t = torch_flex_attention(*map(torch.tensor, (q, k, v)), theirs_score, theirs_mask)
    assert_close(out.numpy(), out_t.numpy(), 1e-12, "output")
    assert_close(lse.numpy(), lse_t.numpy(), 1e-12, "log-sum-exp")


def test_float32_grouped_heads_and_soft_capping_match_torch_flex_attention():
    q, k, v = (a.astype(np.float32) for a in inputs(h_kv=2))

    def soft_cap(score, b, h, q_idx, kv_idx):
        return 2.0 * F.tanh(score / 2.0) if isinstance(score, lamina.Tensor) else 2.0 * torch.tanh(score / 2.0)

    out, lse = lamina_flex_attention(*map(lamina.tensor, (q, k, v)), soft_cap, sliding_window, gqa=True)
    out_t, lse_t = torch_flex_attention(*map(torch.tensor, (q, k, v)), soft_cap, sliding_window, gqa=True)
    assert out.dtype == np.float32 and lse.dtype == np.float32
    assert_close(out.numpy(), out_t.numpy(), 1e-5, "output")
    assert_close(lse.numpy(), lse_t.numpy(), 1e-5, "log-sum-exp")


def torch_dense_reference(q, k, v, bias_of, mask_mod, gqa=False):
    """torch's scaled_dot_product_attention with the additive score_mod as a float mask
    (bias_of(zeros, b, h, q_idx, kv_idx)) and mask_mod's -inf, and the log-sum-exp of the
    same scores."""
    b, h, q_idx, kv_idx = (torch.arange(n).reshape(shape) for n, shape in
                           ((B, (B, 1, 1, 1)), (H, (1, H, 1, 1)), (T_Q, (1, 1, T_Q, 1)), (T_K, (1, 1, 1, T_K))))
    bias = bias_of(torch.zeros(B, H, T_Q, T_K, dtype=q.dtype), b, h, q_idx, kv_idx)
    if mask_mod is not None:
        bias = bias.masked_fill(~mask_mod(b, h, q_idx, kv_idx), -torch.inf)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=bias, enable_gqa=gqa)
    group = H // k.shape[1]
    scores = q @ k.repeat_interleave(group, dim=1).transpose(-1, -2) / E ** 0.5 + bias
    return out, torch.logsumexp(scores, dim=-1)


@pytest.mark.parametrize("mask", ["causal", "document", "prefix-LM"])
def test_gradients_of_a_learned_relative_bias_match_torch(mask):
    q, k, v = inputs(seed=3)
    table = randn(T_Q + T_K - 1, seed=4)
    ours_mask, theirs_mask = mask_pair(mask)
    ours = [lamina.tensor(a, dtype=np.float64, requires_grad=True) for a in (q, k, v, table)]
    theirs = [torch.tensor(a, requires_grad=True) for a in (q, k, v, table)]
    out, lse = lamina_flex_attention(*ours[:3], relative_bias(ours[3]), ours_mask)
    out_t, lse_t = torch_dense_reference(*theirs[:3], relative_bias(theirs[3]), theirs_mask)
    r, s = randn(*out_t.shape, seed=5), randn(*lse_t.shape, seed=6)
    ((out * r).sum() + (lse * s).sum()).backward()
    ((out_t * torch.tensor(r)).sum() + (lse_t * torch.tensor(s)).sum()).backward()
    assert_close(out.numpy(), out_t.detach().numpy(), 1e-12, "output")
    for name, a, b in zip(("q", "k", "v", "bias table"), ours, theirs):
        assert_close(a.grad, b.grad.numpy(), 1e-11, f"gradient of {name}")


def test_gradients_of_learned_alibi_slopes_with_grouped_heads_match_torch():
    q, k, v = inputs(h_kv=2, seed=8)
    ours = [lamina.tensor(a, dtype=np.float64, requires_grad=True) for a in (q, k, v, SLOPES)]
    theirs = [torch.tensor(a, requires_grad=True) for a in (q, k, v, SLOPES)]
    out, _ = lamina_flex_attention(*ours[:3], alibi(ours[3]), sliding_window, gqa=True)
    out_t, _ = torch_dense_reference(*theirs[:3], alibi(theirs[3]), sliding_window, gqa=True)
    r = randn(*out_t.shape, seed=5)
    (out * r).sum().backward()
    (out_t * torch.tensor(r)).sum().backward()
    assert_close(out.numpy(), out_t.detach().numpy(), 1e-12, "output")
    for name, a, b in zip(("q", "k", "v", "slopes"), ours, theirs):
        assert_close(a.grad, b.grad.numpy(), 1e-11, f"gradient of {name}")


def test_gradcheck_through_score_mod_parameters():
    q, k, v = randn(1, 2, 5, 3, seed=1), randn(1, 2, 7, 3, seed=2), randn(1, 2, 7, 2, seed=3)
    block_mask = F.create_block_mask(causal, None, None, 5, 7, BLOCK_SIZE=2)

    def attention(q, k, v, table, cap):
        def score_mod(score, b, h, q_idx, kv_idx):
            return cap * F.tanh((score + table[q_idx - kv_idx + 6]) / cap)
        out, lse = F.flex_attention(q, k, v, score_mod, block_mask, scale=0.7, return_lse=True)
        return out.sum(axis=-1) + lse

    assert check_gradients(attention, q, k, v, randn(12, seed=4), np.array(1.5))


def test_causal_block_mask_skips_the_blocks_above_the_diagonal():
    t, block = 64, 16
    q = lamina.tensor(randn(1, 1, t, 2), requires_grad=True)
    masked_columns, scored_columns = [], []

    def counted_causal(b, h, q_idx, kv_idx):
        masked_columns.append(kv_idx.shape[-1])
        return q_idx >= kv_idx

    def counted_identity(score, b, h, q_idx, kv_idx):
        scored_columns.append(kv_idx.shape[-1])
        return score

    block_mask = F.create_block_mask(counted_causal, None, None, t, t, BLOCK_SIZE=block)
    assert block_mask.block_counts() == {"empty": 6, "partial": 4, "full": 6}
    assert block_mask.sparsity() == pytest.approx(100 * 6 / 16)
    masked_columns.clear()
    out = F.flex_attention(q, q, q, score_mod=counted_identity, block_mask=block_mask)
    assert sum(scored_columns) == 10 * block            # the 10 tiles on and below the diagonal
    assert sum(masked_columns) == 4 * block             # mask_mod on the 4 partial tiles only
    out.sum().backward()                                # backward computes each query block again
    assert sum(scored_columns) == 2 * 10 * block and sum(masked_columns) == 2 * 4 * block
    expected = F.scaled_dot_product_attention(q.numpy(), q.numpy(), q.numpy(), causal=True)
    assert_close(out.numpy(), expected.numpy(), 1e-5)


def test_a_query_that_keeps_no_key_gets_zeros_and_minus_infinity_as_in_torch():
    q, k, v = inputs()

    def late_queries_only(b, h, q_idx, kv_idx):
        return (q_idx >= 10) & (kv_idx <= q_idx)

    out, lse = lamina_flex_attention(*(lamina.tensor(a, dtype=np.float64) for a in (q, k, v)), None,
                                     late_queries_only)
    out_t, lse_t = torch_flex_attention(*map(torch.tensor, (q, k, v)), None, late_queries_only)
    assert np.all(out.numpy()[:, :, :10] == 0) and np.all(lse.numpy()[:, :, :10] == -np.inf)
    assert_close(out.numpy(), out_t.numpy(), 1e-12, "output")
    assert np.allclose(lse.numpy(), lse_t.numpy(), rtol=1e-12, atol=1e-12)


def test_flex_attention_memory_stays_below_the_dense_path():
    t = 512
    q = lamina.tensor(randn(1, 1, t, 8).astype(np.float32), requires_grad=True)
    block_mask = F.create_block_mask(causal, None, None, t, t, BLOCK_SIZE=32)

    def peak(run):
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        run().sum().backward()
        used = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
        return used

    dense = peak(lambda: F.scaled_dot_product_attention(q, q, q, causal=True))
    flex = peak(lambda: F.flex_attention(q, q, q, block_mask=block_mask))
    assert flex < dense / 3


def test_names_where_torch_users_look_for_them():
    import lamina.nn.attention as attention
    import lamina.nn.functional as NF
    for name in ("flex_attention", "create_block_mask", "BlockMask", "and_masks", "or_masks", "noop_mask"):
        assert getattr(attention, name) is getattr(F, name) is getattr(NF, name), name
        assert name in F.__all__ and name in attention.__all__


def test_shape_errors_name_the_function_and_shapes():
    q = randn(1, 4, 6, 3)
    with pytest.raises(lamina.errors.ShapeError, match="flex_attention: query, key and value must be 4-D"):
        F.flex_attention(q[0], q[0], q[0])
    with pytest.raises(lamina.errors.ShapeError, match="4 heads and key/value 2.*enable_gqa"):
        F.flex_attention(q, q[:, :2], q[:, :2])
    with pytest.raises(lamina.errors.ShapeError, match="block mask of shape"):
        F.flex_attention(q, q, q, block_mask=F.create_block_mask(causal, None, None, 5, 6))
    with pytest.raises(lamina.errors.ShapeError, match="score_mod returned shape"):
        F.flex_attention(q, q, q, score_mod=lambda s, b, h, i, j: s.sum(axis=-1, keepdims=True).sum(axis=-2)[..., :2])
