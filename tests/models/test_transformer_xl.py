"""Transformer-XL: the relative attention equals a float64 torch rewrite of the paper's score
(a) + (b) + (c) + (d) that gathers each query-key distance explicitly (no shift trick), in
outputs and gradients; a float64 gradient check; causality; two segments with memory equal one
run over their concatenation with the span limited to the memory; no gradient reaches the
memories; the save/load round trip; memory beats no memory on a copy task spanning segments;
the README example."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, compare_with_torch, randn, run_readme_section
from lamina import functional as F
from lamina import models
from lamina.nn.functional_call import functional_call

_PARAMS = ("qkv_weight", "r_weight", "out_weight", "r_w_bias", "r_r_bias")


def _attention(d_model=6, num_heads=2, d_head=3):
    layer = models.RelativeMultiHeadAttention(d_model, num_heads, d_head=d_head)
    layer(np.zeros((1, 2, d_model), np.float32))
    return layer


def _params(layer, seed=1):
    return [randn(*getattr(layer, name).shape, seed=seed + i, scale=0.5) for i, name in enumerate(_PARAMS)]


def _torch_relative_attention(x, memory, qkv_weight, r_weight, out_weight, u, v, num_heads, mask=None):
    """The paper's score written out: A_ij = (q_i + u) . k_j + (q_i + v) . W_R R_{i-j}, with
    R_{i-j} the sinusoid of each query-key distance gathered one by one (no relative shift)."""
    n, t, d_model = x.shape
    m = memory.shape[1]
    context = torch.cat([memory.detach(), x], dim=1)
    k_len = m + t
    width = qkv_weight.shape[1] // 3
    d_head = width // num_heads
    q = (x @ qkv_weight[:, :width]).reshape(n, t, num_heads, d_head)
    k = (context @ qkv_weight[:, width:2 * width]).reshape(n, k_len, num_heads, d_head)
    val = (context @ qkv_weight[:, 2 * width:]).reshape(n, k_len, num_heads, d_head)
    inv_freq = 1.0 / 10000.0 ** (torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    distance = (m + torch.arange(t)[:, None] - torch.arange(k_len)[None, :]).clamp(min=0)   # (T, K)
    angles = distance[..., None].to(torch.float64) * inv_freq                               # (T, K, d/2)
    encodings = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)                  # R_{i-j}
    projected = (encodings @ r_weight).reshape(t, k_len, num_heads, d_head)                # W_R R_{i-j}
    term_a = torch.einsum("nihd,njhd->nhij", q, k)
    term_b = torch.einsum("nihd,ijhd->nhij", q, projected)
    term_c = torch.einsum("hd,njhd->nhj", u, k)[:, :, None, :]
    term_d = torch.einsum("hd,ijhd->hij", v, projected)[None]
    scores = (term_a + term_b + term_c + term_d) / math.sqrt(d_head)
    allowed = torch.arange(k_len)[None, :] <= (m + torch.arange(t))[:, None] if mask is None else torch.as_tensor(mask)
    scores = scores.masked_fill(~allowed, float("-inf"))
    heads = torch.einsum("nhij,njhd->nihd", torch.softmax(scores, dim=-1), val)
    return heads.reshape(n, t, width) @ out_weight


def test_relative_attention_matches_the_paper_formula_in_values_and_gradients():
    layer = _attention()
    x, memory = randn(2, 3, 6, seed=0), randn(2, 4, 6, seed=9)

    def ours(x, memory, *params):
        return functional_call(layer, dict(zip(_PARAMS, params)), x, memory)

    def theirs(x, memory, *params):
        return _torch_relative_attention(x, memory, *params, num_heads=2)

    compare_with_torch(ours, theirs, x, memory, *_params(layer), dtype=np.float64,
                       grad=[True, False, True, True, True, True, True])


def test_relative_attention_without_memory_and_with_a_given_mask_matches():
    layer = _attention(d_model=4, num_heads=1, d_head=5)
    x = randn(1, 5, 4, seed=3)
    mask = np.tril(np.ones((5, 5), bool)) & ~np.tril(np.ones((5, 5), bool), -3)      # a window of 3 steps
    compare_with_torch(lambda x, *p: functional_call(layer, dict(zip(_PARAMS, p)), x, None, mask=mask),
                       lambda x, *p: _torch_relative_attention(x, x[:, :0], *p, num_heads=1, mask=mask),
                       x, *_params(layer, seed=4), dtype=np.float64)


def test_relative_shift_picks_each_distance():
    t, k = 3, 5
    raw = np.arange(2 * t * k, dtype=np.float64).reshape(2, t, k)
    shifted = models.relative_shift(lamina.tensor(raw)).numpy()
    for i in range(t):
        for j in range(k - t + i + 1):
            assert shifted[:, i, j].tolist() == raw[:, i, j + t - 1 - i].tolist()


def test_gradients_of_the_relative_attention_pass_a_float64_check():
    layer = _attention(d_model=4, num_heads=2, d_head=2)
    assert check_gradients(lambda x, m, *p: functional_call(layer, dict(zip(_PARAMS, p)), x, m),
                           randn(1, 3, 4, seed=5), randn(1, 2, 4, seed=6), *_params(layer, seed=7),
                           grad=[True, False, True, True, True, True, True])


def _model(mem_len=3, seed=0, vocab=7, **options):
    lamina.manual_seed(seed)
    options = {"d_model": 8, "num_heads": 2, "num_layers": 2, "d_ff": 12, **options}
    return models.TransformerXL(vocab, mem_len=mem_len, **options)


def _ids(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 7, shape)


def test_a_later_token_leaves_earlier_outputs_unchanged(f64):
    model = _model()
    mems = model(_ids((2, 4), seed=1))[1]
    ids = _ids((2, 6))
    changed = ids.copy()
    changed[:, 3] = (changed[:, 3] + 1) % 7
    before, after = model(ids, mems)[0].numpy(), model(changed, mems)[0].numpy()
    assert_close(after[:, :3], before[:, :3], 1e-12, "earlier steps")
    assert np.abs(after[:, 3:] - before[:, 3:]).min() > 1e-6


@pytest.mark.parametrize("mem_len", [2, 4, 7])
def test_two_segments_with_memory_equal_one_run_with_the_span_limited(f64, mem_len):
    model, t = _model(mem_len=mem_len), 4
    first, second = _ids((2, t), seed=2), _ids((2, t), seed=3)
    _, mems = model(first)
    assert [m.shape for m in mems] == [(2, min(mem_len, t), 8)] * 2
    logits, _ = model(second, mems)
    rows = np.arange(2 * t)[:, None]
    start = (rows // t) * t                                 # the first step of each query's segment
    span = (np.arange(2 * t)[None, :] <= rows) & (np.arange(2 * t)[None, :] >= start - mem_len)
    whole, _ = model(np.concatenate([first, second], axis=1), mask=span)
    assert_close(logits.numpy(), whole.numpy()[:, t:], 1e-10, "second segment")
    if mem_len >= t:                                        # the memory holds all of the first segment
        assert_close(logits.numpy(), model(np.concatenate([first, second], axis=1))[0].numpy()[:, t:], 1e-10,
                     "causal run")


def test_memories_keep_the_last_steps_and_receive_no_gradient(f64):
    model = _model(mem_len=5)
    mems = [lamina.tensor(m.numpy(), requires_grad=True) for m in model(_ids((2, 3), seed=4))[1]]
    logits, new_mems = model(_ids((2, 4), seed=5), mems)
    F.mul(logits, logits).sum().backward()
    assert all(m.grad is None or not np.any(m.grad) for m in mems)
    assert all(not m.requires_grad for m in new_mems) and [m.shape for m in new_mems] == [(2, 5, 8)] * 2
    assert_close(new_mems[0].numpy()[:, :1], mems[0].numpy()[:, 2:], 0, "memory carried over")
    assert any(np.any(p.grad) for p in model.parameters())
    assert model(_ids((2, 4)))[1] and _model(mem_len=0)(_ids((2, 4)))[1] == []


def test_save_and_load_round_trip(tmp_path):
    model = _model(mem_len=2, dropout=0.1)
    model.eval()
    ids = _ids((1, 5))
    logits, mems = model(ids)
    lamina.save(model, tmp_path / "txl.safetensors")
    twin = lamina.load(tmp_path / "txl.safetensors")
    twin.eval()
    assert type(twin) is models.TransformerXL and twin.get_config() == model.get_config()
    assert np.array_equal(twin(ids)[0].numpy(), logits.numpy())
    assert np.array_equal(twin(ids, mems)[0].numpy(), model(ids, mems)[0].numpy())


def test_errors_name_the_layer_and_shapes():
    layer = _attention()
    with pytest.raises(lamina.ShapeError, match="RelativeMultiHeadAttention.*memory"):
        layer(np.zeros((2, 3, 6), np.float32), np.zeros((1, 2, 6), np.float32))
    with pytest.raises(lamina.ShapeError, match="mask"):
        layer(np.zeros((2, 3, 6), np.float32), mask=np.ones((3, 4), bool))
    with pytest.raises(ValueError, match="mem_len"):
        models.TransformerXL(5, mem_len=-1)
    with pytest.raises(ValueError, match="2 memories"):
        _model()(_ids((1, 3)), [np.zeros((1, 2, 8), np.float32)])


def _copy_task_loss(mem_len: int, steps: int = 120, t: int = 6, vocab: int = 8) -> float:
    """Each batch is a random segment followed by the same segment again; the loss is the
    next-token loss on the repeat, which only a model that sees the first segment can predict."""
    model = _model(mem_len=mem_len, seed=3, vocab=vocab, d_model=32, num_heads=2, num_layers=1, d_ff=32)
    rng = np.random.default_rng(0)

    def loss_of(segment):
        mems = model(segment)[1] if mem_len else None
        logits = model(segment, mems)[0]
        return F.cross_entropy(F.reshape(logits[:, :-1], -1, vocab), segment[:, 1:].reshape(-1))

    model(rng.integers(0, vocab, (1, t)))
    optimizer = lamina.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        model.zero_grad()
        loss = loss_of(rng.integers(0, vocab, (32, t)))
        loss.backward()
        optimizer.step()
    with lamina.no_grad():
        return float(loss_of(np.random.default_rng(99).integers(0, vocab, (256, t))).item())


def test_memory_lets_the_model_copy_across_segments():
    with_memory, without = _copy_task_loss(mem_len=6), _copy_task_loss(mem_len=0)
    assert without > 0.8 * math.log(8)                      # the repeat is unpredictable within one segment
    assert with_memory < 0.25 * without


def test_readme_example_runs():
    printed, names = run_readme_section("Transformer-XL: segment-level recurrence")
    assert isinstance(names["model"], models.TransformerXL)
    assert printed.split()[:4] == ["(2,", "8,", "50)", "[(2,"]
