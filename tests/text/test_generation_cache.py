"""Generation that reads each token once: caches reordered by row (beam search's parents),
beam search on the key/value cache or carried states finding the rerun's hypotheses, and
several samples drawn as the rows of one batch."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from helpers import assert_close, watch_call_lengths
from lamina import models, nn
from lamina.nn.multi_head_attention import MultiHeadAttention
from lamina.nn.transformer import PositionalEncoding, TransformerEncoderLayer
from lamina.nn.transformer_decoder import TransformerDecoderLayer
from lamina.nn.transformer_model import TransformerDecoder
from lamina.text import Vocabulary, beam_search_ids, beam_search_text, reorder_caches, sample_text, sample_texts
from lamina.text.generate import caching_keys_values, carrying_states

ROWS = np.array([1, 1, 0])            # repeated and reordered, as a beam's parents


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)
    yield
    lamina.set_default_dtype(np.float32)


@pytest.fixture
def vocab():
    return Vocabulary("abcdefghijklmnopqrstuvwxyz", pad=None, unk=None, bos=".", eos="$")


def _transformer(vocab_size: int, **options) -> nn.Sequential:
    lamina.manual_seed(3)
    model = models.transformer_language_model(vocab_size, d_model=16, num_heads=4, num_layers=2,
                                              dim_feedforward=24, **options)
    model.build((None, 1))
    return model


# -- reordering each layer's cache ---------------------------------------------------------
def test_a_reordered_attention_cache_continues_the_chosen_rows(f64):
    layer = TransformerEncoderLayer(8, 2, 16, causal=True, window=3, rotary=True, num_kv_heads=1)
    x = np.random.default_rng(0).normal(size=(2, 6, 8))
    layer(x)
    layer.eval()
    with lamina.no_grad():
        full = layer(x[ROWS]).numpy()
        with caching_keys_values(layer):
            first = layer(x[:, :4]).numpy()
            layer.reorder_cache(ROWS)
            rest = layer(x[ROWS, 4:]).numpy()
            assert layer.self_attention.cached_steps == 6
    assert_close(first[ROWS], full[:, :4], 1e-12, "before the reorder")
    assert_close(rest, full[:, 4:], 1e-12, "after the reorder")
    assert not np.allclose(rest, full[::-1, 4:])          # the rows do follow the index


def test_a_reordered_decoder_cache_reorders_the_memory_too(f64):
    rng = np.random.default_rng(1)
    tgt, memory = rng.normal(size=(2, 5, 8)), rng.normal(size=(2, 4, 8))
    for decoder in (TransformerDecoderLayer(8, 2, 16, dropout=0.0),
                    TransformerDecoder(TransformerDecoderLayer(8, 2, 16, dropout=0.0), 2)):
        decoder(tgt, memory)
        decoder.eval()
        with lamina.no_grad():
            full = decoder(tgt[ROWS], memory[ROWS], tgt_is_causal=True).numpy()
            decoder.start_caching()
            decoder(tgt[:, :3], memory)
            decoder.reorder_cache(ROWS)
            rest = decoder(tgt[ROWS, 3:], memory[ROWS]).numpy()
            decoder.stop_caching()
        assert_close(rest, full[:, 3:], 1e-12, f"{type(decoder).__name__} after the reorder")


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU])
def test_reordered_carried_states_continue_the_chosen_rows(f64, cell):
    layer = cell(5, return_sequences=True, stateful=True)
    x = np.random.default_rng(2).normal(size=(2, 6, 3))
    full = layer(x[ROWS]).numpy()
    layer.reset_states()
    layer.reorder_states(ROWS)                             # nothing carried yet: nothing to do
    layer(x[:, :2])
    layer.reorder_states(ROWS)
    assert_close(layer(x[ROWS, 2:]).numpy(), full[:, 2:], 1e-12, "after the reorder")


def test_reorder_caches_reaches_every_cache_of_a_model(f64):
    model = _transformer(9, positional="learned", max_len=16)
    ids = np.random.default_rng(3).integers(0, 9, (2, 7))
    model.eval()
    with lamina.no_grad():
        full = model(ids[ROWS]).numpy()
        with caching_keys_values(model):
            model(ids[:, :5])
            reorder_caches(model, ROWS)
            rest = model(ids[ROWS, 5:]).numpy()
    assert_close(rest, full[:, 5:], 1e-10, "scores after the reorder")


def test_reordering_is_refused_without_a_cache_or_with_bad_rows():
    mha = MultiHeadAttention(8, 2, name="mha")
    with pytest.raises(ValueError, match="MultiHeadAttention 'mha': reorder_cache needs a key/value cache.*not "
                                         "caching"):
        mha.reorder_cache([0])
    layer = TransformerEncoderLayer(8, 2, 8, causal=True, name="enc")
    with pytest.raises(ValueError, match="TransformerEncoderLayer 'enc': reorder_cache needs a key/value cache"):
        layer.reorder_cache([0])
    with pytest.raises(ValueError, match="PositionalEncoding 'pos': reorder_cache needs the cache mode"):
        PositionalEncoding(8, name="pos").reorder_cache([0])
    with pytest.raises(ValueError, match="TransformerDecoderLayer 'dec': reorder_cache needs a key/value cache"):
        TransformerDecoderLayer(8, 2, 8, name="dec").reorder_cache([0])
    with pytest.raises(ValueError, match="GRU 'gru': reorder_states needs a stateful layer"):
        nn.GRU(4, name="gru").reorder_states([0])
    with pytest.raises(ValueError, match="reorder_caches: Dense holds no key/value cache nor carried recurrent"):
        reorder_caches(nn.Dense(3), [0])

    x = np.zeros((2, 3, 8), dtype=np.float32)
    layer(x)
    layer.eval()
    with lamina.no_grad(), caching_keys_values(layer):
        layer(x)
        for rows, message in (([0, 2], r"row indices must lie in \[0, 2\) for a cache of 2 rows, got 0 .. 2"),
                              ([-1], r"row indices must lie in \[0, 2\)"),
                              ([[0, 1]], "non-empty 1-D array of integer row indices, got int64 of shape"),
                              ([0.5], "integer row indices, got float64"),
                              ([], "non-empty")):
            with pytest.raises(ValueError, match=f"MultiHeadAttention.*reorder_cache.*{message}"):
                layer.reorder_cache(rows)
    rnn = nn.LSTM(4, stateful=True, name="lstm")
    rnn(x)
    with pytest.raises(ValueError, match=r"LSTM 'lstm': reorder_states: row indices must lie in \[0, 2\)"):
        rnn.reorder_states([3])


# -- beam search on the caches -------------------------------------------------------------
def _both_ways(model, vocab, prompt="abc", max_length=12, width=3):
    """The hypotheses of beam search read incrementally and by rerunning, and the lengths of
    the calls each way made."""
    ids = list(vocab.encode(prompt, add_bos=True))
    seen = watch_call_lengths(model)
    fast = beam_search_ids(model, ids, vocab.eos_id, width, max_length, length_penalty=1.0, num_return=width)
    fast_calls = list(seen)
    seen.clear()
    slow = beam_search_ids(model, ids, vocab.eos_id, width, max_length, length_penalty=1.0, num_return=width,
                           rerun=True)
    return fast, slow, fast_calls, list(seen)


def _assert_same_hypotheses(fast, slow):
    assert [h.ids for h in fast] == [h.ids for h in slow]
    np.testing.assert_allclose([h.log_prob for h in fast], [h.log_prob for h in slow], rtol=0, atol=1e-5)
    assert len({tuple(h.ids) for h in fast}) == len(fast) > 1


@pytest.mark.parametrize("options", [{"positional": "sinusoidal"}, {"positional": "rotary"},
                                     {"positional": "learned", "window": 3}, {"positional": "alibi", "num_kv_heads": 1},
                                     {"positional": "rotary", "num_kv_heads": 2, "window": 4}])
def test_beam_search_on_the_key_value_cache_finds_the_rerun_hypotheses(vocab, options):
    model = _transformer(len(vocab), max_len=64, **options)
    fast, slow, fast_calls, slow_calls = _both_ways(model, vocab)
    _assert_same_hypotheses(fast, slow)
    steps = len(slow_calls)
    assert fast_calls == [4] + [1] * (steps - 1)          # the prompt once, then one token per hypothesis
    assert slow_calls == list(range(4, 4 + steps))
    assert model.training and not any(getattr(m, "caching", False) for m in model.modules())


def test_beam_search_reruns_once_the_text_outgrows_the_context():
    vocab = Vocabulary("abcdefgh", pad=None, unk=None, bos=".")         # no end token: every hypothesis runs on
    model = _transformer(len(vocab), max_len=8)
    fast, slow, fast_calls, slow_calls = _both_ways(model, vocab, max_length=9)
    _assert_same_hypotheses(fast, slow)
    # bos abc, then one token per hypothesis up to 8 tokens, then the last 8 tokens of each
    assert fast_calls == [4, 1, 1, 1, 1] + [8] * 4
    assert slow_calls == [4, 5, 6, 7, 8] + [8] * 4


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_beam_search_on_carried_states_finds_the_rerun_hypotheses(vocab, cell):
    lamina.manual_seed(5)
    model = models.rnn_language_model(len(vocab), embed_dim=8, hidden=12, cell=cell)
    model.build((None, 1))
    fast, slow, fast_calls, slow_calls = _both_ways(model, vocab)
    _assert_same_hypotheses(fast, slow)
    assert fast_calls == [4] + [1] * (len(slow_calls) - 1)
    assert not any(m.stateful for m in model.modules() if hasattr(m, "stateful"))
    text = beam_search_text(model, vocab, prompt="abc", beam_width=3, max_length=12)
    assert text == beam_search_text(model, vocab, prompt="abc", beam_width=3, max_length=12, rerun=True)
    assert text == vocab.decode(list(vocab.encode("abc", add_bos=True)) + fast[0].ids)


# -- batched sampling ----------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["transformer", "rnn", "rerun"])
def test_batched_samples_are_the_separate_draws_of_their_seeds(vocab, kind):
    if kind == "rnn":
        lamina.manual_seed(6)
        model = models.rnn_language_model(len(vocab), embed_dim=8, hidden=12, cell="gru")
        model.build((None, 1))
    else:
        model = _transformer(len(vocab), max_len=12)
    stream = False if kind == "rerun" else None
    batched = sample_texts(model, vocab, prompt="ab", num_samples=5, max_length=14, seed=11, stream=stream,
                           temperature=1.5)
    single = [sample_text(model, vocab, prompt="ab", max_length=14, seed=11 + i, stream=stream, temperature=1.5)
              for i in range(5)]
    assert batched == single
    assert len(set(batched)) == 5 and all(text.startswith("ab") for text in batched)
    assert len({len(text) for text in batched}) > 1        # some drew the end token early and left the batch


def test_batched_samples_read_the_prompt_once_and_one_token_per_row():
    vocab = Vocabulary("abcdefgh", pad=None, unk=None, bos=".")         # no end token: every row runs on
    model = _transformer(len(vocab), max_len=8)
    shapes = []
    original = model.forward
    model.forward = lambda ids: shapes.append(tuple(ids.shape)) or original(ids)
    texts = sample_texts(model, vocab, prompt="abc", num_samples=3, max_length=7, seed=0)
    # bos abc at once, one token per row up to 8 tokens, then the last 8 of each row
    assert shapes == [(1, 4)] + [(3, 1)] * 4 + [(3, 8)] * 2
    assert len(set(texts)) == 3 and all(text.startswith("abc") for text in texts)
    with pytest.raises(ValueError, match="sample_texts: num_samples must be a positive int, got 0"):
        sample_texts(model, vocab, num_samples=0)
    with pytest.raises(ValueError, match="sample_texts: temperature must be > 0"):
        sample_texts(model, vocab, temperature=0)


def test_carrying_states_is_left_as_it_was(vocab):
    model = models.rnn_language_model(len(vocab), embed_dim=4, hidden=4)
    with carrying_states(model):
        model(np.zeros((2, 3), dtype=np.int64))
        reorder_caches(model, [1, 0, 0])
        assert model(np.zeros((3, 1), dtype=np.int64)).shape == (3, 1, len(vocab))


def test_the_sample_command_draws_its_samples_in_one_batch(tmp_path, capsys, vocab):
    from lamina.cli import main

    model = _transformer(len(vocab), max_len=16)
    lamina.save(model, tmp_path / "model.safetensors", info={"vocabulary": vocab.get_config(), "corpus": "names"})
    assert main(["sample", str(tmp_path / "model.safetensors"), "--num-samples", "3", "--prompt", "ab",
                 "--seed", "4", "--max-length", "10"]) == 0
    printed = capsys.readouterr().out.splitlines()
    loaded = lamina.load_bundle(tmp_path / "model.safetensors").model
    assert printed == [sample_text(loaded, vocab, "ab", max_length=10, temperature=0.8, seed=4 + k) for k in range(3)]
