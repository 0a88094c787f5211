"""transformer_language_model's attention options: ALiBi positions, grouped-query attention and
sliding windows, read through the key/value cache as in one call, sampled as by a rerun, kept in
the layers' configs."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from helpers import assert_close, watch_call_lengths
from lamina import models, nn
from lamina.nn.layer import layer_from_config, layer_to_config
from lamina.text import Vocabulary, sample_text
from lamina.text.generate import caching_keys_values


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)
    yield
    lamina.set_default_dtype(np.float32)


@pytest.mark.parametrize("options", [dict(positional="alibi"), dict(positional="alibi", num_kv_heads=1),
                                     dict(positional="rotary", num_kv_heads=2, window=3)])
def test_the_cache_reads_in_pieces_what_one_call_reads(f64, options):
    lamina.manual_seed(1)
    model = models.transformer_language_model(11, d_model=16, num_heads=4, num_layers=2, dim_feedforward=24, **options)
    assert not any(isinstance(m, (nn.PositionalEncoding, nn.PositionEmbedding)) for m in model.modules())
    ids = np.random.default_rng(2).integers(0, 11, (3, 9))
    model(ids)
    model.eval()
    with lamina.no_grad():
        full = model(ids).numpy()
        with caching_keys_values(model):
            pieces = [model(ids[:, a:b]).numpy() for a, b in ((0, 4), (4, 5), (5, 9))]
    assert_close(np.concatenate(pieces, axis=1), full, 1e-10, "chunked scores")


def test_a_window_limits_how_far_back_a_layer_reads(f64):
    lamina.manual_seed(2)
    model = models.transformer_language_model(9, d_model=16, num_heads=2, num_layers=1, dim_feedforward=16,
                                              positional="alibi", window=3)
    ids = np.random.default_rng(3).integers(0, 9, (1, 8))
    model(ids)
    other = ids.copy()
    other[0, 0] = (other[0, 0] + 1) % 9
    base, changed = model(ids).numpy(), model(other).numpy()
    moved = np.abs(base - changed).max(axis=-1)[0]
    assert np.all(moved[:3] > 1e-6) and np.all(moved[3:] < 1e-12)     # step t sees steps t-2 .. t only


def test_sampling_through_the_cache_draws_the_rerun_text():
    vocab = Vocabulary("abcdefgh", pad=None, unk=None, bos=".")
    lamina.manual_seed(6)
    lm = models.transformer_language_model(len(vocab), d_model=16, num_heads=4, num_layers=1, dim_feedforward=16,
                                           positional="alibi", num_kv_heads=2, window=5)
    lm.build((None, 1))
    seen = watch_call_lengths(lm)
    cached = sample_text(lm, vocab, prompt="abc", max_length=15, seed=3, temperature=2.0)
    assert seen == [4] + [1] * 14
    rerun = sample_text(lm, vocab, prompt="abc", max_length=15, seed=3, temperature=2.0, stream=False)
    assert cached == rerun and len(cached) > 12 and cached.startswith("abc")   # a drawn bos is left out


def test_the_options_are_kept_in_the_layer_config():
    layer = nn.TransformerEncoderLayer(16, 4, 32, causal=True, alibi=True, num_kv_heads=2, window=6)
    config = layer_to_config(layer)["config"]
    assert (config["alibi"], config["num_kv_heads"], config["window"]) == (True, 2, 6)
    again = layer_from_config(layer_to_config(layer))
    attention = again.self_attention
    assert (attention.alibi, attention.num_kv_heads, attention.window) == (True, 2, 6)
    assert "alibi=True, num_kv_heads=2, window=6" in repr(again)
    plain = layer_to_config(nn.TransformerEncoderLayer(16, 4, 32))["config"]
    assert not {"alibi", "num_kv_heads", "window", "rotary"} & set(plain)
    with pytest.raises(ValueError, match="positional must be one of"):
        models.transformer_language_model(10, positional="absolute")
