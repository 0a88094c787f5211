"""Attention sinks (StreamingLLM): a key/value cache of the first tokens and a window of the
last ones, positions assigned within the cache. Checked against the plain cache while the
text fits, against a float64 NumPy rewrite of the attention over [sinks, window] past it."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from helpers import assert_close, watch_call_lengths
from lamina import models
from lamina.nn.multi_head_attention import MultiHeadAttention
from lamina.text import Vocabulary, attention_sinks, caching_keys_values, sample_text, sample_texts


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)
    yield
    lamina.set_default_dtype(np.float32)


def _llama(vocab_size: int, context: int = 64, seed: int = 0):
    lamina.manual_seed(seed)
    model = models.llama("tiny", vocab_size=vocab_size, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=context,
                         initializer_range=0.5)     # sharp scores: the draws depend on the model
    model(lamina.tensor(np.zeros((1, 2), dtype=np.int64)))
    return model.eval()


def _steps(model, ids, chunks) -> np.ndarray:
    bounds = np.cumsum((0,) + tuple(chunks))
    return np.concatenate([model(lamina.tensor(ids[:, a:b])).numpy() for a, b in zip(bounds[:-1], bounds[1:])], 1)


def test_while_the_text_fits_the_sink_cache_is_the_plain_cache():
    model = _llama(10)
    ids = np.random.default_rng(0).integers(0, 10, (1, 20))
    with lamina.no_grad():
        with caching_keys_values(model):
            plain = _steps(model, ids, (6, 1, 1, 5, 7))
        with attention_sinks(model, sink_tokens=4, window=16):
            sinks = _steps(model, ids, (6, 1, 1, 5, 7))
    np.testing.assert_array_equal(sinks, plain)          # the same arrays through the same operations
    vocab = Vocabulary("abcdefghi", pad=None, unk=None, bos=".")       # 10 tokens, no eos
    for seed in (1, 2):
        expected = sample_text(model, vocab, "abc", max_length=30, seed=seed)
        assert sample_text(model, vocab, "abc", max_length=30, seed=seed, cache="sink", sink_tokens=4,
                           window=30) == expected


def test_the_cache_never_holds_more_than_sinks_and_window():
    model = _llama(11)
    ids = np.random.default_rng(1).integers(0, 11, (2, 40))
    layers = [m for m in model.modules() if isinstance(m, MultiHeadAttention)]
    held = []
    with lamina.no_grad(), attention_sinks(model, sink_tokens=2, window=5):
        for a, b in ((0, 4), (4, 14), *((t, t + 1) for t in range(14, 40))):
            model(lamina.tensor(ids[:, a:b]))
            held.append({(m._cached_keys.shape[2], m.attention_sinks.held, m.cached_steps) for m in layers})
    assert held[0] == {(4, 4, 4)} and all(h == {(7, 7, 7)} for h in held[1:])


def test_generation_runs_past_the_context_one_token_per_call():
    vocab = Vocabulary("abcdefghi", pad=None, unk=None, bos=".")
    model = _llama(len(vocab), context=16)
    seen = watch_call_lengths(model)
    text = sample_text(model, vocab, "abc", max_length=40, seed=0, cache="sink", sink_tokens=2, window=8)
    assert seen == [4] + [1] * 39 and len(text) > 16
    seen.clear()
    sample_text(model, vocab, "abc", max_length=40, seed=0)          # the plain cache reruns past the context
    assert seen[:13] == [4] + [1] * 12 and seen[13:] == [16] * 27


def _reference(x, layer: MultiHeadAttention, sinks: int, window: int) -> np.ndarray:
    """Token i attends over the keys {0 .. sinks - 1} and {i - window + 1 .. i}, the n kept
    keys turned to positions 0 .. n - 1 and the query to n - 1 (rotate-half RoPE)."""
    w = layer.in_weight.numpy().astype(np.float64)
    y = x[0] @ w + layer.in_bias.numpy()
    h, g, d = layer.num_heads, layer.num_kv_heads, layer.head_dim
    q, k, v = (y[:, layer.projection_columns(p)].reshape(len(x[0]), -1, d) for p in range(3))
    theta = 10000.0 ** (-np.arange(d // 2) * 2.0 / d)

    def turn(a, positions):
        angle = positions[:, None, None] * theta
        lo, hi = a[..., :d // 2], a[..., d // 2:]
        return np.concatenate([lo * np.cos(angle) - hi * np.sin(angle), lo * np.sin(angle) + hi * np.cos(angle)], -1)

    out = []
    for i in range(len(x[0])):
        kept = sorted(set(range(min(sinks, i + 1))) | set(range(max(0, i - window + 1), i + 1)))
        n = len(kept)
        keys = turn(k[kept], np.arange(n, dtype=np.float64))
        query = turn(q[i:i + 1], np.asarray([n - 1.0]))[0]
        heads = []
        for j in range(h):
            scores = keys[:, j // (h // g)] @ query[j] / np.sqrt(d)
            p = np.exp(scores - scores.max())
            heads.append((p / p.sum()) @ v[kept, j // (h // g)])
        out.append(np.concatenate(heads) @ layer.out_weight.numpy() + layer.out_bias.numpy())
    return np.asarray(out)[None]


def test_attention_over_sinks_and_window_matches_a_float64_rewrite(f64):
    lamina.manual_seed(3)
    layer = MultiHeadAttention(16, 4, rotary=True, num_kv_heads=2).eval()
    x = np.random.default_rng(1).normal(size=(1, 24, 16))
    layer(lamina.tensor(x), causal=True)
    layer.in_bias.data[:] = np.random.default_rng(0).normal(size=layer.in_bias.shape)
    with lamina.no_grad(), attention_sinks(layer, sink_tokens=3, window=5):
        got = np.concatenate([layer(lamina.tensor(x[:, a:b]), causal=True).numpy()
                              for a, b in ((0, 6), (6, 7), (7, 13), *((t, t + 1) for t in range(13, 24)))], 1)
    assert_close(got, _reference(x, layer, 3, 5), rtol=1e-10)
    with lamina.no_grad(), attention_sinks(layer, sink_tokens=0, window=4):       # window only, re-rotated
        got = layer(lamina.tensor(x), causal=True).numpy()
    assert_close(got, _reference(x, layer, 0, 4), rtol=1e-10)


def test_sample_texts_with_sinks_keeps_the_rows_of_each_text():
    vocab = Vocabulary("abcdefghi", pad=None, unk=None, bos="^", eos="$")
    model = _llama(len(vocab), seed=4)
    texts = sample_texts(model, vocab, "ab", num_samples=3, max_length=30, seed=5, cache="sink", sink_tokens=2,
                         window=6)
    alone = [sample_text(model, vocab, "ab", max_length=30, seed=5 + i, cache="sink", sink_tokens=2, window=6)
             for i in range(3)]
    assert texts == alone and len({len(t) for t in texts}) > 1         # texts end at different steps


def test_bad_options_and_models_without_rotary_positions_are_refused():
    vocab = Vocabulary("abcdefghi", pad=None, unk=None, bos=".")
    model = _llama(len(vocab))
    with pytest.raises(ValueError, match="attention_sinks: sink_tokens must be an int >= 0, got -1"):
        with attention_sinks(model, sink_tokens=-1, window=4):
            pass
    with pytest.raises(ValueError, match="sample_text: window must be an int >= 1, got -2"):
        sample_text(model, vocab, "ab", cache="sink", window=-2)
    with pytest.raises(ValueError, match="window must be an int >= 1, got None"):
        sample_text(model, vocab, "ab", cache="sink")
    with pytest.raises(ValueError, match="cache must be None or 'sink', got 'ring'"):
        sample_text(model, vocab, "ab", cache="ring", window=4)
    with pytest.raises(ValueError, match="leave stream=None"):
        sample_text(model, vocab, "ab", cache="sink", window=4, stream=False)
    table = models.transformer_language_model(len(vocab), d_model=8, num_heads=2, num_layers=1, dim_feedforward=8)
    with pytest.raises(ValueError, match="position tables .*only models with rotary positions"):
        sample_text(table, vocab, "ab", cache="sink", window=4)
    with pytest.raises(ValueError, match=r"need rotary self-attention; MultiHeadAttention.*rotary=False"):
        with attention_sinks(MultiHeadAttention(8, 2), window=4):
            pass
    layer = MultiHeadAttention(8, 2, rotary=True).eval()
    with lamina.no_grad(), attention_sinks(layer, window=4):
        with pytest.raises(ValueError, match="causal self-attention calls .* got causal=False"):
            layer(lamina.tensor(np.zeros((1, 3, 8), dtype=np.float32)))
