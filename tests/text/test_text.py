"""lamina.text: vocabularies, the text corpora, padding and language-model windows."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

import lamina
from helpers import FixedBigram, watch_call_lengths
from lamina import models
from lamina.data.datasets import ChecksumError
from lamina.text import (
    Vocabulary,
    language_model_windows,
    load_names,
    load_tiny_shakespeare,
    pad_sequences,
    sample_text,
    shifted_pairs,
    word_tokens,
)

SHARED_TEXT = Path(__file__).resolve().parents[3] / "shared" / "data" / "text"


def test_a_character_vocabulary_orders_specials_then_frequency_and_round_trips():
    vocab = Vocabulary.from_texts(["abba", "cab"], pad="<pad>", unk="<unk>", bos=".", eos=".")
    assert vocab.tokens == ["<pad>", "<unk>", ".", "a", "b", "c"]      # a and b seen 3 times, a first
    assert (vocab.pad_id, vocab.unk_id, vocab.bos_id, vocab.eos_id) == (0, 1, 2, 2)
    ids = vocab.encode("cabz", add_bos=True, add_eos=True)
    assert ids.dtype == np.int64 and ids.tolist() == [2, 5, 3, 4, 1, 2]
    assert vocab.decode(ids) == "cab" and vocab.decode(ids, skip_specials=False) == ".cab<unk>."
    assert "a" in vocab and "z" not in vocab and vocab["c"] == 5 and len(vocab) == 6


def test_a_word_vocabulary_keeps_the_frequent_words_within_max_size():
    text = "The cat sat. The cat ran! A dog sat."
    assert word_tokens("Don't stop, Bob.") == ["don't", "stop", ",", "bob", "."]
    vocab = Vocabulary.from_texts(text, level="word", max_size=6, lower=True)
    assert vocab.tokens == ["<pad>", "<unk>", "the", "cat", "sat", "."]
    assert vocab.decode(vocab.encode("the dog sat .")) == "the sat ."   # dog is unknown: left out
    assert Vocabulary.from_texts(text, level="word", min_count=2, lower=True).tokens[2:] == ["the", "cat", "sat", "."]


def test_vocabulary_errors_name_the_problem():
    closed = Vocabulary("ab", unk=None)
    with pytest.raises(KeyError, match=r"token 'z' at position 1 .* no unknown token"):
        closed.encode("az")
    with pytest.raises(ValueError, match="add_bos=True but the vocabulary has no bos token"):
        closed.encode("a", add_bos=True)
    with pytest.raises(ValueError, match=r"id 9 outside \[0, 3\)"):
        closed.decode([1, 9])
    with pytest.raises(ValueError, match="level must be one of"):
        Vocabulary("ab", level="byte")


def test_vocabulary_saves_and_loads(tmp_path):
    vocab = Vocabulary.from_texts(["héllo wörld"], bos="<s>")
    vocab.save(tmp_path / "vocab.json")
    again = Vocabulary.load(tmp_path / "vocab.json")
    assert again == vocab and again.encode("wöh").tolist() == vocab.encode("wöh").tolist()


def test_pad_sequences_pads_and_truncates_at_either_end():
    seqs = [[1, 2, 3], [4], []]
    assert pad_sequences(seqs).tolist() == [[1, 2, 3], [0, 0, 4], [0, 0, 0]]
    assert pad_sequences(seqs, padding="post", value=9).tolist() == [[1, 2, 3], [4, 9, 9], [9, 9, 9]]
    assert pad_sequences(seqs, maxlen=2).tolist() == [[2, 3], [0, 4], [0, 0]]
    assert pad_sequences(seqs, maxlen=2, truncating="post").tolist() == [[1, 2], [0, 4], [0, 0]]
    with pytest.raises(ValueError, match="padding must be one of"):
        pad_sequences(seqs, padding="middle")


def test_pad_sequences_keeps_the_features_of_each_step():
    seqs = [np.arange(6).reshape(3, 2), np.ones((1, 2)), np.zeros((0, 2))]
    out = pad_sequences(seqs, dtype="float32")
    assert out.shape == (3, 3, 2) and out.dtype == np.float32
    np.testing.assert_array_equal(out[0], seqs[0])
    np.testing.assert_array_equal(out[1], [[0, 0], [0, 0], [1, 1]])
    assert not out[2].any()
    cut = pad_sequences(seqs, maxlen=2, padding="post", truncating="post", value=-1)
    assert cut.tolist() == [[[0, 1], [2, 3]], [[1, 1], [-1, -1]], [[-1, -1], [-1, -1]]]
    with pytest.raises(ValueError, match=r"sequence 1 has steps of shape \(3,\), sequence 0 of shape \(2,\)"):
        pad_sequences([np.ones((2, 2)), np.ones((1, 3))])


def test_shifted_pairs_mask_the_padding_of_the_targets():
    x, y = shifted_pairs([[2, 5, 6, 2], [2, 7, 2]], pad=0)
    assert x.tolist() == [[2, 5, 6], [2, 7, 0]] and y.tolist() == [[5, 6, 2], [7, 2, -100]]
    with pytest.raises(ValueError, match="sequence 1 has 1 ids"):
        shifted_pairs([[1, 2], [3]], pad=0)


def test_language_model_windows_shift_the_targets_by_one():
    ids = np.arange(10)
    x, y = language_model_windows(ids, 4)
    assert x.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]] and y.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    x, y = language_model_windows(ids, 4, stride=3)
    assert x[:, 0].tolist() == [0, 3] and (y == x + 1).all()
    with pytest.raises(ValueError, match="need 11 ids, got 10"):
        language_model_windows(ids, 10)


def test_corpora_are_found_checked_and_missing_files_are_named(tmp_path, monkeypatch):
    monkeypatch.delenv("LAMINA_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "names.txt").write_text("emma\nolivia\n")
    with pytest.raises(ChecksumError, match="SHA-256 mismatch"):
        load_names(tmp_path, download=False)
    with pytest.raises(FileNotFoundError, match=r"(?s)tiny_shakespeare: missing file\(s\): tinyshakespeare.txt.*"
                                                + str(tmp_path)):
        load_tiny_shakespeare(tmp_path, download=False)


@pytest.mark.skipif(not SHARED_TEXT.is_dir(), reason="no shared text corpora beside the project")
def test_the_real_corpora_load():
    names = load_names(SHARED_TEXT, download=False)
    assert len(names) == 32033 and names[0] == "emma" and all(n.isalpha() and n.islower() for n in names)
    text = load_tiny_shakespeare(SHARED_TEXT, download=False)
    assert len(text) == 1115394 and text.startswith("First Citizen:")
    assert hashlib.sha256(text.encode()).hexdigest().startswith("86c4e6aa")


def test_sample_text_follows_a_sharp_model_and_stops_at_eos():
    vocab = Vocabulary("abc", bos=".", eos=".")               # <pad> <unk> . a b c
    table = np.full((6, 6), -50.0)
    table[2, 3] = table[3, 4] = table[4, 5] = table[5, 2] = 50.0   # . -> a -> b -> c -> .
    model = FixedBigram(table)
    assert sample_text(model, vocab, seed=0) == "abc"
    assert sample_text(model, vocab, prompt="b", seed=0) == "bc"
    assert sample_text(model, vocab, max_length=2, seed=0) == "ab"
    assert model.training                                     # put back as it was
    flat = FixedBigram(np.zeros((6, 6)))
    nearly_flat = FixedBigram(np.eye(6)[[4] * 6] * 0.1)      # b a little likelier after any token
    draws = {sample_text(nearly_flat, vocab, max_length=1, seed=s, top_k=1) for s in range(5)}
    assert draws == {"b"}                                     # top_k=1: always the likeliest token
    assert len({sample_text(flat, vocab, max_length=1, seed=s, top_k=1) for s in range(20)}) > 1   # all tied
    assert len({sample_text(flat, vocab, max_length=3, seed=s, temperature=5.0) for s in range(20)}) > 5
    with pytest.raises(ValueError, match="temperature must be > 0"):
        sample_text(model, vocab, temperature=0)
    with pytest.raises(ValueError, match=r"must map ids \(1, 1\) to scores \(1, 1, 6\)"):
        sample_text(FixedBigram(np.zeros((6, 4))), vocab)


def test_sample_text_crops_the_context_to_the_position_layers_reach():
    vocab = Vocabulary("abc", bos=".", eos=".")
    model = models.transformer_language_model(len(vocab), d_model=8, num_heads=2, num_layers=1,
                                              dim_feedforward=8, max_len=4)
    seen = watch_call_lengths(model)
    text = sample_text(model, vocab, prompt="abcabc", max_length=5, seed=0, temperature=0.01)
    assert seen and max(seen) == 4                              # never more than max_len tokens
    assert text.startswith("abcabc")
    seen.clear()
    sample_text(model, vocab, prompt="ab", max_length=3, seed=0, context=2)
    assert max(seen) == 2
    with pytest.raises(ValueError, match="context must be a positive int"):
        sample_text(model, vocab, context=0)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_streaming_a_recurrent_model_samples_the_same_text_reading_each_token_once(cell):
    lamina.set_default_dtype(np.float64)          # the two paths round alike: the same draws
    vocab = Vocabulary("abcdefgh", pad=None, unk=None, bos=".")    # no eos: 40 letters are drawn
    lamina.manual_seed(3)
    model = models.rnn_language_model(len(vocab), embed_dim=6, hidden=12, cell=cell, num_layers=2, dropout=0.2)
    model.build((None, 1))
    layers = [m for m in model.modules() if hasattr(m, "reset_states")]
    layers[1].stateful = True                      # a flag the user set stays set
    seen = watch_call_lengths(model)
    streamed = sample_text(model, vocab, prompt="abc", max_length=40, seed=5, temperature=2.0)
    assert seen == [4] + [1] * (len(seen) - 1) and len(seen) == 40    # the prompt (bos abc) once, then a token
    seen.clear()
    rerun = sample_text(model, vocab, prompt="abc", max_length=40, seed=5, temperature=2.0, stream=False)
    assert seen == list(range(4, 4 + len(seen)))  # the whole prefix at every step
    assert streamed == rerun and streamed.startswith("abc") and len(streamed) > 23
    assert [m.stateful for m in layers] == [False, True] and all(m._carried is None for m in layers)
    assert model.training


def test_stream_is_refused_where_it_would_change_the_result():
    vocab = Vocabulary("abc", bos=".", eos=".")
    transformer = models.transformer_language_model(len(vocab), d_model=8, num_heads=2, num_layers=1,
                                                    dim_feedforward=8)
    with pytest.raises(ValueError, match="stream=True needs a streamable model.*Sequential is not"):
        sample_text(transformer, vocab, stream=True)
    rnn = models.rnn_language_model(len(vocab), embed_dim=4, hidden=4)
    with pytest.raises(ValueError, match="cannot keep to context=3"):
        sample_text(rnn, vocab, stream=True, context=3)
    assert sample_text(rnn, vocab, prompt="ab", max_length=3, seed=0, context=3).startswith("ab")
