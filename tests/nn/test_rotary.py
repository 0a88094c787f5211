"""Rotary position embeddings: the op against a torch formula (values, gradients, second
derivatives), the relative-position property, MultiHeadAttention with rotary positions
against a torch computation, and a rotary language model read through its key/value cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, check_second_derivatives, compare_with_torch, watch_call_lengths
from lamina import functional as F
from lamina import models
from lamina.nn.layer import layer_from_config, layer_to_config
from lamina.nn.multi_head_attention import MultiHeadAttention
from lamina.nn.transformer import TransformerEncoderLayer
from lamina.text import Vocabulary, sample_text
from lamina.text.generate import caching_keys_values


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)
    yield
    lamina.set_default_dtype(np.float32)


def torch_rotary(x, offset=0, base=10000.0):
    """The rotate-half RoPE written in torch: the pair (x_j, x_{j+d/2}) turned by p base^(-2j/d)."""
    t, d = x.shape[-2], x.shape[-1]
    inv = base ** (-torch.arange(0, d // 2, dtype=torch.float64) * 2.0 / d)
    angles = (offset + torch.arange(t, dtype=torch.float64))[:, None] * inv[None, :]
    cos, sin = torch.cos(angles).to(x.dtype), torch.sin(angles).to(x.dtype)
    a, b = x[..., : d // 2], x[..., d // 2:]
    return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("offset, base", [(0, 10000.0), (5, 10000.0), (2, 100.0)])
def test_rotary_embedding_matches_torch(dtype, offset, base):
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 8))
    compare_with_torch(lambda a: F.rotary_embedding(a, offset=offset, base=base),
                       lambda a: torch_rotary(a, offset, base), x, dtype=dtype)


def test_rotary_embedding_gradients_and_second_derivatives():
    x = np.random.default_rng(1).standard_normal((2, 5, 4))
    assert check_gradients(lambda a: F.rotary_embedding(a, offset=3), x)
    assert check_second_derivatives(lambda a: F.rotary_embedding(a, offset=3) ** 2, x)


def test_rotation_keeps_norms_and_scores_depend_on_the_offset_only():
    rng = np.random.default_rng(2)
    q, k = rng.standard_normal(16), rng.standard_normal(16)

    def rotated(v, p):
        return F.rotary_embedding(v[None, :], positions=[p]).numpy()[0]

    assert np.linalg.norm(rotated(q, 7)) == pytest.approx(np.linalg.norm(q), rel=1e-6)
    scores = {(m, n): float(rotated(q, m) @ rotated(k, n)) for m in (0, 3, 11) for n in (0, 2, 5, 14)}
    for (m, n), s in scores.items():
        assert s == pytest.approx(float(q @ rotated(k, n - m)), abs=1e-4), (m, n)
    assert abs(scores[(0, 2)] - scores[(0, 5)]) > 1e-3              # and the offset does matter


def test_rotary_embedding_errors():
    with pytest.raises(lamina.errors.ShapeError, match=r"even number of features, got shape \(2, 3, 5\)"):
        F.rotary_embedding(np.zeros((2, 3, 5)))
    with pytest.raises(lamina.errors.ShapeError, match=r"positions of shape \(2,\) for 3 steps"):
        F.rotary_embedding(np.zeros((3, 4)), positions=[0, 1])
    with pytest.raises(ValueError, match="MultiHeadAttention: rotary positions turn pairs.*each head has 3"):
        MultiHeadAttention(6, 2, rotary=True)


def _torch_rotary_attention(layer, x, causal):
    """MultiHeadAttention with rotary queries and keys, written in torch from the layer's weights."""
    w = torch.tensor(layer.in_weight.numpy(), requires_grad=True)
    b = torch.tensor(layer.in_bias.numpy(), requires_grad=True)
    w_o = torch.tensor(layer.out_weight.numpy(), requires_grad=True)
    b_o = torch.tensor(layer.out_bias.numpy(), requires_grad=True)
    n, t, e = x.shape
    h, d = layer.num_heads, layer.head_dim
    q, k, v = (x @ w + b).split(e, dim=-1)
    q, k, v = (z.reshape(n, t, h, d).transpose(1, 2) for z in (q, k, v))
    q, k = torch_rotary(q), torch_rotary(k)
    scores = q @ k.transpose(-1, -2) / d**0.5
    if causal:
        scores = scores.masked_fill(torch.triu(torch.ones(t, t, dtype=torch.bool), 1), float("-inf"))
    heads = torch.softmax(scores, dim=-1) @ v
    out = heads.transpose(1, 2).reshape(n, t, e) @ w_o + b_o
    return out, (w, b, w_o, b_o)


@pytest.mark.parametrize("causal", [False, True])
def test_rotary_multi_head_attention_matches_torch(f64, causal):
    rng = np.random.default_rng(3)
    layer = MultiHeadAttention(8, 2, rotary=True)
    x = rng.standard_normal((3, 5, 8))
    layer(x)
    layer.in_bias.data = rng.standard_normal(24)
    layer.out_bias.data = rng.standard_normal(8)
    xl = lamina.tensor(x, requires_grad=True)
    out = layer(xl, causal=causal)
    xt = torch.tensor(x, requires_grad=True)
    expected, weights = _torch_rotary_attention(layer, xt, causal)
    assert_close(out.numpy(), expected.detach().numpy(), 1e-10, "output")
    up = rng.standard_normal(out.shape)
    out.backward(up)
    (expected * torch.from_numpy(up)).sum().backward()
    assert_close(xl.grad, xt.grad.numpy(), 1e-10, "input gradient")
    for p, ref in zip((layer.in_weight, layer.in_bias, layer.out_weight, layer.out_bias), weights):
        assert_close(p.grad, ref.grad.numpy(), 1e-10, "parameter gradient")
    plain = MultiHeadAttention(8, 2)
    plain(x)
    plain.load_state_dict(layer.state_dict())
    assert not np.allclose(plain(x, causal=causal).numpy(), out.numpy())     # the positions change the result


def test_rotary_attention_gradcheck(f64):
    layer = MultiHeadAttention(4, 1, rotary=True)
    x = lamina.tensor(np.random.default_rng(4).standard_normal((2, 3, 4)), requires_grad=True)
    layer(x)
    assert lamina.gradcheck(lambda a, *_: layer(a, causal=True), x, *layer.parameters())


def test_rotary_layers_keep_their_config():
    layer = TransformerEncoderLayer(8, 2, 16, causal=True, rotary=True)
    config = layer_to_config(layer)
    assert config["config"]["rotary"] is True
    again = layer_from_config(config)
    assert again.rotary and again.self_attention.rotary and "rotary=True" in repr(again)
    attention = layer_from_config(layer_to_config(MultiHeadAttention(8, 2, rotary=True, rotary_base=500.0)))
    assert attention.rotary and attention.rotary_base == 500.0
    assert "rotary" not in layer_to_config(MultiHeadAttention(8, 2))["config"]      # old configs unchanged


def test_a_rotary_language_model_reads_through_its_cache_as_one_call(f64):
    model = models.transformer_language_model(11, d_model=16, num_heads=2, num_layers=2, dim_feedforward=24,
                                              positional="rotary")
    assert not any(isinstance(m, (lamina.nn.PositionalEncoding, lamina.nn.PositionEmbedding))
                   for m in model.modules())
    ids = np.random.default_rng(5).integers(0, 11, (3, 8))
    model(ids)
    model.eval()
    with lamina.no_grad():
        full = model(ids).numpy()
        with caching_keys_values(model):
            assert model.streamable
            pieces = [model(ids[:, a:b]).numpy() for a, b in ((0, 3), (3, 4), (4, 8))]
    assert_close(np.concatenate(pieces, axis=1), full, 1e-10, "chunked scores")
    vocab = Vocabulary("abcdefgh", pad=None, unk=None, bos=".")
    lamina.manual_seed(6)
    lm = models.transformer_language_model(len(vocab), d_model=16, num_heads=2, num_layers=1, dim_feedforward=16,
                                           positional="rotary")
    lm.build((None, 1))
    seen = watch_call_lengths(lm)
    cached = sample_text(lm, vocab, prompt="abc", max_length=20, seed=3, temperature=2.0)
    assert seen == [4] + [1] * 19                   # no context limit: every new token read once
    rerun = sample_text(lm, vocab, prompt="abc", max_length=20, seed=3, temperature=2.0, stream=False)
    assert cached == rerun and len(cached) == 23
