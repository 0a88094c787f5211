"""The key/value cache: a causal Transformer fed in pieces gives the outputs of one call on
the whole sequence, and sample_text, reading one new token per call through it, draws the
same text as rerunning the model on the whole prefix."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from helpers import assert_close, watch_call_lengths
from lamina import models, nn
from lamina.nn.multi_head_attention import MultiHeadAttention
from lamina.nn.transformer import PositionalEncoding, PositionEmbedding, TransformerEncoderLayer
from lamina.text import Vocabulary, sample_text
from lamina.text.generate import caching_keys_values

CHUNKS = (3, 1, 4)               # fed one after the other: 8 steps


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)
    yield
    lamina.set_default_dtype(np.float32)


def _in_chunks(model, x, chunks=CHUNKS) -> np.ndarray:
    """The outputs of ``model`` fed ``x`` (N, T, ...) a chunk of steps at a time, joined."""
    bounds = np.cumsum((0,) + tuple(chunks))
    return np.concatenate([model(x[:, a:b]).numpy() for a, b in zip(bounds[:-1], bounds[1:])], axis=1)


def _language_model(vocab_size: int, positional: str, norm_first: bool, max_len: int) -> nn.Sequential:
    """A small causal Transformer LM with dropout everywhere (inactive in evaluation)."""
    position = (nn.PositionalEncoding(max_len, dropout=0.1) if positional == "sinusoidal"
                else nn.Sequential(nn.PositionEmbedding(max_len), nn.Dropout(0.1)))
    blocks = [TransformerEncoderLayer(16, 2, 24, dropout=0.2, norm_first=norm_first, causal=True) for _ in range(2)]
    return nn.Sequential(nn.Embedding(vocab_size, 16), position, *blocks, nn.LayerNorm(-1), nn.Dense(vocab_size))


@pytest.mark.parametrize("norm_first", [False, True])
def test_a_cached_causal_encoder_layer_fed_in_chunks_gives_the_full_outputs(f64, norm_first):
    layer = TransformerEncoderLayer(8, 2, 16, dropout=0.3, norm_first=norm_first, causal=True)
    x = np.random.default_rng(1).normal(size=(2, 8, 8))
    layer(x)
    layer.eval()
    with lamina.no_grad():
        full = layer(x).numpy()
        layer.start_caching()
        assert layer.caching and layer.streamable
        chunked = _in_chunks(layer, x)
        assert layer.self_attention.cached_steps == 8
        layer.stop_caching()
        assert not layer.caching and not layer.streamable and layer.self_attention.cached_steps == 0
        again = layer(x).numpy()                        # no cache left: an ordinary call
    assert_close(chunked, full, 1e-10, "chunked outputs")
    np.testing.assert_array_equal(again, full)
    assert not np.allclose(chunked[:, 3], layer(x[:, 3:4]).numpy())   # step 3 does see the cached steps


@pytest.mark.parametrize("positional", ["sinusoidal", "learned"])
def test_a_cached_language_model_fed_in_chunks_gives_the_full_scores(f64, positional):
    model = models.transformer_language_model(11, d_model=16, num_heads=2, num_layers=2, dim_feedforward=24,
                                              max_len=10, dropout=0.1, positional=positional)
    ids = np.random.default_rng(2).integers(0, 11, (3, 8))
    model(ids)
    model.eval()
    assert not model.streamable
    with lamina.no_grad():
        full = model(ids).numpy()
        with caching_keys_values(model):
            assert model.streamable                     # every layer reads a piece at a time
            chunked = _in_chunks(model, ids)
        assert not any(getattr(m, "caching", False) for m in model.modules()) and not model.streamable
        np.testing.assert_array_equal(model(ids).numpy(), full)
    assert_close(chunked, full, 1e-10, "chunked scores")


@pytest.mark.parametrize("positional, norm_first", [("sinusoidal", False), ("sinusoidal", True),
                                                    ("learned", False), ("learned", True)])
def test_sampling_with_the_cache_draws_the_rerun_text_reading_each_token_once(f64, positional, norm_first):
    vocab = Vocabulary("abcdefgh", pad=None, unk=None, bos=".")    # no eos: all 40 tokens are drawn
    lamina.manual_seed(4)
    model = _language_model(len(vocab), positional, norm_first, max_len=24)
    model.build((None, 1))
    seen = watch_call_lengths(model)
    cached = sample_text(model, vocab, prompt="abc", max_length=40, seed=7, temperature=2.0)
    # bos abc in one call, one token per call up to 24 tokens, then the last 24 at each step
    assert seen == [4] + [1] * 20 + [24] * 19
    seen.clear()
    rerun = sample_text(model, vocab, prompt="abc", max_length=40, seed=7, temperature=2.0, stream=False)
    assert seen == list(range(4, 25)) + [24] * 19
    assert cached == rerun and len(cached) > 30 and cached.startswith("abc")     # bos drawn is left out
    assert len(set(cached[3:])) > 4                       # a real draw, not one repeated letter
    assert model.training and not any(getattr(m, "caching", False) for m in model.modules())


def test_sampling_reruns_models_the_cache_cannot_serve():
    vocab = Vocabulary("abc", bos=".")
    open_attention = nn.Sequential(nn.Embedding(len(vocab), 8), nn.PositionalEncoding(16),
                                   TransformerEncoderLayer(8, 2, 8, dropout=0.0), nn.Dense(len(vocab)))
    seen = watch_call_lengths(open_attention)
    sample_text(open_attention, vocab, prompt="abc", max_length=4, seed=0)
    assert seen == [4, 5, 6, 7]                            # not causal: rerun on the whole text

    class Pooled(nn.Module):
        """A causal layer, then a mean over time: the scores of step t depend on later steps."""

        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(len(vocab), 8)
            self.block = TransformerEncoderLayer(8, 2, 8, causal=True)
            self.out = nn.Dense(len(vocab))

        def forward(self, ids):
            h = self.block(self.embed(ids))
            return self.out(lamina.functional.add(h, lamina.functional.mean(h, axis=1, keepdims=True)))

    pooled = Pooled()
    seen = watch_call_lengths(pooled)
    sample_text(pooled, vocab, prompt="ab", max_length=3, seed=0)
    assert seen == [3, 4, 5]                               # not a chain of streamable layers: rerun
    transformer = models.transformer_language_model(len(vocab), d_model=8, num_heads=2, num_layers=1,
                                                    dim_feedforward=8)
    with pytest.raises(ValueError, match="stream=True needs a streamable model.*leave stream=None"):
        sample_text(transformer, vocab, stream=True)


def test_caching_is_refused_where_it_cannot_give_the_full_outputs():
    embed, pe = nn.Embedding(5, 8), PositionalEncoding(16)
    model = nn.Sequential(embed, pe, TransformerEncoderLayer(8, 2, 8, name="enc"))
    with pytest.raises(ValueError, match="TransformerEncoderLayer 'enc': cannot cache.*not causal"):
        with caching_keys_values(model):
            pass
    assert not pe.caching                                  # the layers started before it are stopped
    with pytest.raises(ValueError, match="caching_keys_values: Sequential has no layer that caches"):
        with caching_keys_values(models.rnn_language_model(5, embed_dim=4, hidden=4)):
            pass

    mha = MultiHeadAttention(8, 2, name="mha")
    x = np.random.default_rng(3).normal(size=(2, 3, 8)).astype(np.float32)
    mha(x)
    mha.eval()
    mha.start_caching()
    with pytest.raises(ValueError, match="already caching"):
        mha.start_caching()
    with lamina.no_grad():
        with pytest.raises(ValueError, match="MultiHeadAttention 'mha': cannot cache.*cross-attention"):
            mha(x, x, causal=True)
        with pytest.raises(ValueError, match="MultiHeadAttention 'mha': cannot cache.*non-causal"):
            mha(x)
        with pytest.raises(lamina.ShapeError, match=r"'mha': mask of shape \(3, 4\); expected \(3, 3\)"):
            mha(x, mask=np.ones((3, 4), dtype=bool), causal=True)
        with pytest.raises(lamina.ShapeError, match="MultiHeadAttention 'mha': while caching, key_mask.*\\(2, 3\\)"):
            mha(x, key_mask=np.ones((2, 2), dtype=bool), causal=True)
        mha.stop_caching()
        mha.start_caching()
        mha(x, causal=True)
        with pytest.raises(lamina.ShapeError, match="batch size 1 continues a cached sequence of batch size 2"):
            mha(x[:1], causal=True)
    with pytest.raises(ValueError, match="MultiHeadAttention 'mha'.*evaluation only"):
        mha(x, causal=True)                                # gradients on
    mha.stop_caching()

    layer = TransformerEncoderLayer(8, 2, 8, causal=True, name="dec")
    layer(x)
    layer.eval()
    with lamina.no_grad(), caching_keys_values(layer):
        with pytest.raises(ValueError, match="TransformerEncoderLayer 'dec': while caching.*must be causal"):
            layer(x, causal=False)


def test_cached_positions_continue_and_stop_at_max_len(f64):
    x = np.zeros((1, 4, 6))
    for layer in (PositionalEncoding(6, name="pos"), PositionEmbedding(6, name="pos")):
        full = layer(np.zeros((1, 6, 6))).numpy()
        with caching_keys_values(layer):
            np.testing.assert_array_equal(layer(x[:, :2]).numpy(), full[:, :2])
            np.testing.assert_array_equal(layer(x[:, :3]).numpy(), full[:, 2:5])
            with pytest.raises(lamina.ShapeError, match=r"'pos'.*2 steps, 7 with the 5 steps already cached, more "
                                                        r"than max_len=6"):
                layer(x[:, :2])
        np.testing.assert_array_equal(layer(x[:, :2]).numpy(), full[:, :2])   # from position 0 again
