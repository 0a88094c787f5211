"""DeBERTa: disentangled attention and a DeBERTa block against float64 PyTorch rewrites that gather
the relative positions index by index, finite-difference gradients, the relative-distance
buckets, the padding mask, the enhanced mask decoder and a masked-LM task that needs
relative positions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, compare_with_torch, randn
from lamina import functional as F
from lamina import models, optim
from lamina.models.deberta import DebertaLayer, disentangled_attention, relative_position_buckets

SPAN = 2


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)
    yield
    lamina.set_default_dtype(np.float32)


def _bucket(i: int, j: int, k: int) -> int:
    if i - j <= -k:
        return 0
    if i - j >= k:
        return 2 * k - 1
    return i - j + k


def torch_disentangled_attention(q, k, v, q_r, k_r, span, key_mask=None):
    """The published scores with each relative position read by an explicit index gather."""
    length, width = q.shape[2], q.shape[3]
    c2p_index = torch.tensor([[_bucket(i, j, span) for j in range(length)] for i in range(length)])
    p2c_index = torch.tensor([[_bucket(j, i, span) for j in range(length)] for i in range(length)])
    k_r_at = k_r[:, c2p_index]                         # (H, T_i, T_j, d): K_r[delta(i, j)]
    q_r_at = q_r[:, p2c_index]                         # (H, T_i, T_j, d): Q_r[delta(j, i)]
    c2c = torch.einsum("nhid,nhjd->nhij", q, k)
    c2p = torch.einsum("nhid,hijd->nhij", q, k_r_at)
    p2c = torch.einsum("nhjd,hijd->nhij", k, q_r_at)
    scores = (c2c + c2p + p2c) / math.sqrt(3 * width)
    if key_mask is not None:
        scores = scores.masked_fill(~torch.as_tensor(key_mask)[:, None, None, :], -1e9)
    return torch.softmax(scores, dim=-1) @ v


def test_buckets_are_the_clipped_relative_distances():
    buckets = relative_position_buckets(6, 6, 2)
    assert buckets.shape == (6, 6) and buckets.min() == 0 and buckets.max() == 3
    assert all(buckets[i, j] == _bucket(i, j, 2) for i in range(6) for j in range(6))
    assert buckets[0, 5] == 0 and buckets[5, 0] == 3 and buckets[3, 3] == 2 and buckets[2, 3] == 1


def test_disentangled_attention_equals_the_index_gather_rewrite():
    key_mask = np.array([[1, 1, 1, 0, 1], [1, 1, 1, 1, 1]], dtype=bool)
    arrays = [randn(2, 2, 5, 3, seed=s) for s in range(3)] + [randn(2, 2 * SPAN, 3, seed=s) for s in (3, 4)]
    compare_with_torch(lambda *xs: disentangled_attention(*xs, SPAN, key_mask),
                       lambda *xs: torch_disentangled_attention(*xs, SPAN, key_mask), *arrays, dtype=np.float64)


def test_disentangled_attention_gradients_by_finite_differences():
    arrays = [randn(1, 2, 4, 2, seed=s) for s in range(3)] + [randn(2, 2 * SPAN, 2, seed=s) for s in (3, 4)]
    assert check_gradients(lambda *xs: disentangled_attention(*xs, SPAN), *arrays)


def _torch_layer(params: dict, x, table, heads: int, span: int, eps: float, query_states=None):
    def dense(name, h):
        return h @ params[f"{name}.weight"] + params[f"{name}.bias"]

    def split(h):
        return h.reshape(*h.shape[:-1], heads, h.shape[-1] // heads).transpose(-2, -3)

    def norm(name, h):
        return torch.nn.functional.layer_norm(h, h.shape[-1:], params[f"{name}.weight"], params[f"{name}.bias"], eps)

    queries = x if query_states is None else query_states
    attended = torch_disentangled_attention(split(dense("query", queries)), split(dense("key", x)),
                                            split(dense("value", x)), split(dense("position_query", table)),
                                            split(dense("position_key", table)), span)
    merged = attended.transpose(1, 2).reshape(x.shape)
    a = norm("attention_norm", queries + dense("attention_output", merged))
    inner = torch.nn.functional.gelu(dense("intermediate", a))
    return norm("output_norm", a + dense("output", inner))


@pytest.mark.parametrize("with_queries", [False, True])
def test_layer_outputs_and_parameter_gradients_equal_the_rewrite(f64, with_queries):
    layer = DebertaLayer(4, 2, 6, SPAN)
    x, table, queries = randn(2, 5, 4, seed=1), randn(2 * SPAN, 4, seed=2), randn(2, 5, 4, seed=3)
    ours = [lamina.tensor(a, requires_grad=True) for a in (x, table, queries)]
    out = layer(ours[0], ours[1], query_states=ours[2] if with_queries else None)
    for p in layer.parameters():
        p.data = p.data + 0.1 * np.random.default_rng(4).normal(size=p.shape)
    out = layer(ours[0], ours[1], query_states=ours[2] if with_queries else None)
    upstream = randn(2, 5, 4, seed=5)
    F.sum(F.mul(out, upstream)).backward()
    params = {name: torch.tensor(np.asarray(p.data), requires_grad=True) for name, p in layer.named_parameters()}
    theirs = [torch.tensor(a, requires_grad=True) for a in (x, table, queries)]
    expected = _torch_layer(params, theirs[0], theirs[1], 2, SPAN, layer.layer_norm_eps,
                            theirs[2] if with_queries else None)
    (expected * torch.tensor(upstream)).sum().backward()
    assert_close(out.numpy(), expected.detach().numpy(), 1e-10, "layer output")
    for name, p in layer.named_parameters():              # the key biases get zero gradients (softmax shift)
        np.testing.assert_allclose(np.asarray(p.grad), params[name].grad.numpy(), rtol=1e-9, atol=1e-12,
                                   err_msg=name)
    for a, b, what in zip(ours, theirs, ("x", "relative table", "query_states")):
        if b.grad is not None:
            assert_close(np.asarray(a.grad), b.grad.numpy(), 1e-9, what)


def test_layer_gradients_by_finite_differences(f64):
    layer = DebertaLayer(4, 2, 6, SPAN)
    table = randn(2 * SPAN, 4, seed=2)
    assert check_gradients(lambda x, t: layer(x, t, key_mask=np.array([[1, 1, 0], [1, 1, 1]], dtype=bool)),
                           randn(2, 3, 4), table)


def _masked_lm(**options):
    config = {"hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 12,
              "max_relative_positions": 3, "max_position_embeddings": 8, **options}
    return models.DebertaForMaskedLM(9, **config)


def test_padding_is_irrelevant_under_the_attention_mask():
    model = _masked_lm()
    ids, mask = np.array([[1, 4, 2, 7, 0, 0]]), np.array([[1, 1, 1, 1, 0, 0]])
    first = model(ids, attention_mask=mask).numpy()
    ids[0, 4:] = [5, 8]
    second = model(ids, attention_mask=mask).numpy()
    np.testing.assert_allclose(first[0, :4], second[0, :4], atol=1e-5)
    assert not np.allclose(model(ids).numpy()[0, :4], second[0, :4], atol=1e-4)


def test_only_the_enhanced_mask_decoder_sees_absolute_positions():
    model = _masked_lm(num_hidden_layers=1)
    ids = np.array([[3, 1, 4, 1, 5]])
    hidden, scores = model.deberta(ids).numpy(), model(ids).numpy()
    table = model.position_embeddings.weight
    table.data = table.data[::-1].copy()
    np.testing.assert_array_equal(model.deberta(ids).numpy(), hidden)
    assert not np.allclose(model(ids).numpy(), scores, atol=1e-4)
    assert model.decode(ids).shape == (1, 5, 8)


def test_shape_errors_name_the_layer():
    layer = DebertaLayer(4, 2, 6, SPAN)
    with pytest.raises(lamina.ShapeError, match="relative_embeddings must have shape"):
        layer(lamina.tensor(randn(1, 3, 4)), lamina.tensor(randn(3, 4)))
    with pytest.raises(lamina.ShapeError, match="max_position_embeddings=8"):
        _masked_lm()(np.zeros((1, 9), dtype=np.int64))
    with pytest.raises(ValueError, match="not divisible"):
        DebertaLayer(5, 2, 6, SPAN)


def _left_copy_batch(rng, n: int, length: int, vocab: int, mask_id: int):
    """Random tokens in which token p repeats token p - 1 and is masked: recovering it needs the
    position just to the left, which only relative positions single out."""
    ids = rng.integers(0, vocab, (n, length))
    where = rng.integers(1, length, n)
    rows = np.arange(n)
    ids[rows, where] = ids[rows, where - 1]
    masked = ids.copy()
    masked[rows, where] = mask_id
    return masked, ids[rows, where], where


def test_masked_lm_learns_a_task_that_needs_relative_positions():
    lamina.manual_seed(0)
    rng = np.random.default_rng(0)
    vocab, length = 6, 7
    model = models.DebertaForMaskedLM(vocab + 1, max_position_embeddings=length, hidden_size=16,
                                      num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                                      max_relative_positions=2, decoder_steps=1)
    model(np.zeros((1, length), dtype=np.int64))
    optimizer = optim.Adam(model, lr=0.01)
    for _ in range(150):
        masked, targets, where = _left_copy_batch(rng, 32, length, vocab, vocab)
        scores = F.getitem(model(masked), (np.arange(32), where))
        loss = F.cross_entropy(scores, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    masked, targets, where = _left_copy_batch(np.random.default_rng(1), 256, length, vocab, vocab)
    with lamina.no_grad():
        guesses = model(masked).numpy()[np.arange(256), where].argmax(axis=-1)
    accuracy = float((guesses == targets).mean())
    assert accuracy > 0.8, accuracy                        # chance: 1 / 6
