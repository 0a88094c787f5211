"""Whisper's word timestamps: DTW against a brute force over all paths, the median filter against
scipy, word grouping and punctuation merging on hand-made tokens, the cross-attention scores
against PyTorch, an alignment of designed attention, and a tiny Whisper transcribing with every
option and word timestamps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch_whisper_reference import WhisperForConditionalGeneration
from whisper_checks import SPECIALS, VOCAB, Words, tiny_whisper

from helpers import assert_close, randn
from lamina import models
from lamina.models.whisper import SAMPLE_RATE, WHISPER_CONFIGS
from lamina.models.whisper_alignment import (
    WordTiming,
    default_alignment_heads,
    dtw,
    find_alignment,
    median_filter,
    merge_punctuations,
    split_to_word_tokens,
)


# -- dynamic time warping and the median filter ---------------------------------------------------
def _all_paths(n: int, m: int):
    """Every monotone path of steps (1, 1), (1, 0), (0, 1) from (0, 0) to (n - 1, m - 1)."""
    def extend(path):
        i, j = path[-1]
        if (i, j) == (n - 1, m - 1):
            yield path
            return
        for di, dj in ((1, 1), (1, 0), (0, 1)):
            if i + di < n and j + dj < m:
                yield from extend(path + [(i + di, j + dj)])
    yield from extend([(0, 0)])


@pytest.mark.parametrize("shape", [(1, 1), (1, 5), (4, 1), (3, 4), (4, 6), (5, 5)])
def test_dtw_finds_the_cheapest_path_of_a_brute_force(shape):
    cost = np.random.default_rng(sum(shape)).standard_normal(shape)
    best = min(_all_paths(*shape), key=lambda path: sum(cost[p] for p in path))
    rows, columns = dtw(cost)
    assert list(zip(rows.tolist(), columns.tolist(), strict=True)) == best


def test_dtw_breaks_ties_as_whisper():
    rows, columns = dtw(np.zeros((2, 3)))             # all paths cost 0: back from the end, (0, 1) steps first
    assert rows.tolist() == [0, 1, 1, 1] and columns.tolist() == [0, 0, 1, 2]


@pytest.mark.parametrize("width", [3, 7])
def test_the_median_filter_equals_scipy_with_reflect_padding(width):
    x = np.random.default_rng(width).standard_normal((2, 3, 20))
    expected = ndimage.median_filter(x, size=(1, 1, width), mode="mirror")   # x[1], x[0], x[1]: torch's reflect
    assert np.array_equal(median_filter(x, width), expected)
    short = x[..., :width // 2]
    assert median_filter(short, width) is short or np.array_equal(median_filter(short, width), short)
    with pytest.raises(ValueError, match="odd"):
        median_filter(x, 4)


# -- words ----------------------------------------------------------------------------------------
class Pieces:
    """A tokenizer whose tokens are byte strings (a character may span two tokens)."""

    def __init__(self, pieces: list[bytes]):
        self.pieces = pieces

    def decode(self, ids):
        return b"".join(self.pieces[i] for i in ids).decode("utf-8", errors="replace")


def test_tokens_are_grouped_into_words_on_spaces_and_whole_characters():
    e_acute = "é".encode()
    tokenizer = Pieces([b" Hel", b"lo", b",", b" caf", e_acute[:1], e_acute[1:], b" wor", b"ld", b"!", b"x"])
    words, groups = split_to_word_tokens(tokenizer, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    assert words == [" Hello", ",", " café", " world", "!x"]     # a mark stands alone; "x" joins the word before
    assert groups == [[0, 1], [2], [3, 4, 5], [6, 7], [8, 9]]
    words, groups = split_to_word_tokens(tokenizer, [3, 4, 5, 1], language="ja")   # every whole character a word
    assert words == [" caf", "é", "lo"] and groups == [[3], [4, 5], [1]]


def test_punctuation_joins_the_neighbouring_word():
    texts = [" \"", " Hello", ",", " world", "!", " (", " x", ")"]
    words = [WordTiming(text, [i], start=float(i), end=i + 0.5) for i, text in enumerate(texts)]
    merge_punctuations(words)
    kept = [(w.word, w.tokens, w.start, w.end) for w in words if w.word]
    assert kept == [(" \" Hello,", [0, 1, 2], 1.0, 1.5), (" world!", [3, 4], 3.0, 3.5), (" ( x)", [5, 6, 7], 6.0, 6.5)]
    apart = [WordTiming(" a ", [0]), WordTiming(".", [1])]
    merge_punctuations(apart)                          # a word ending in a space keeps the mark apart
    assert [w.word for w in apart] == [" a ", "."]


# -- cross-attention ------------------------------------------------------------------------------
def test_cross_attention_scores_equal_pytorch(f64):
    torch.manual_seed(0)
    config = WHISPER_CONFIGS["test"]
    reference = WhisperForConditionalGeneration(config).double()
    model = models.whisper("test")
    models.load_hf_whisper_state_dict(model, reference.state_dict())
    features, ids = randn(2, config["num_mel_bins"], 16, seed=2), np.array([[14, 1, 2, 3], [14, 4, 5, 6]])
    expected = []

    def record(module, inputs, output):
        x, encoded = inputs
        n, t, _ = x.shape

        def split(y):
            return y.view(n, -1, module.heads, module.head_dim).transpose(1, 2)
        q, k = split(module.q_proj(x) * module.head_dim ** -0.5), split(module.k_proj(encoded))
        expected.append((q @ k.transpose(-1, -2)).detach().numpy())

    for layer in reference.model.decoder.layers:
        layer.encoder_attn.register_forward_hook(record)
    reference(torch.tensor(features), torch.tensor(ids))
    scores = []
    logits = model.decode(model.shift_right(ids), model.encode(features), cross_attention_scores=scores)
    assert len(scores) == config["decoder_layers"] and scores[0].shape == (2, 2, 4, 8)
    for ours, theirs in zip(scores, expected, strict=True):
        assert_close(ours, theirs, 1e-10, "cross-attention scores")
    assert_close(logits.numpy(), model.decode(model.shift_right(ids), model.encode(features)).numpy(), 0.0, "logits")
    assert default_alignment_heads(4, 2) == [(2, 0), (2, 1), (3, 0), (3, 1)]


class DesignedAttention:
    """One decoder layer of two heads: head 0 attends to a 5-position block per row (row r of the
    text rows to positions 5r .. 5r + 4, and strongly to the positions past the audio; one row's
    scores are all raised), head 1 is noise; the logits favour each next text token by ``margin``."""

    def __init__(self, text: list[int], margin: float = 1.5):
        self.text, self.margin = text, margin

    def encode(self, features):
        return np.zeros((1, 30, 4))

    def decode(self, ids, encoded, cross_attention_scores=None):
        t = ids.shape[1]
        start = len(SPECIALS.prompt_ids("en")) - 1
        aligned = np.zeros((t, 30))
        for r in range(len(self.text) + 1):
            aligned[start + r, 5 * r:5 * r + 5] = 10.0
        aligned[:, 25:] = 1000.0                                        # past the audio: left out
        aligned[start + 2] += 30.0                                      # a row's offset: the softmax drops it
        noise = np.random.default_rng(0).standard_normal((t, 30)) * 20
        cross_attention_scores.append(np.stack([aligned, noise])[None])
        logits = np.zeros((1, t, VOCAB))
        for k, token in enumerate(self.text):
            logits[0, start + k, token] = self.margin
        return logits


def test_words_are_timed_by_their_attention():
    tokenizer = Pieces([b" a", b"b", b" c", b" d"])
    text = [0, 1, 2, 3]
    model = DesignedAttention(text)
    words = find_alignment(model, None, SPECIALS, text, 50, tokenizer, "en", alignment_heads=[(0, 0)])
    assert [(w.word, w.tokens) for w in words] == [(" ab", [0, 1]), (" c", [2]), (" d", [3])]
    assert np.allclose([(w.start, w.end) for w in words], [(0.0, 0.2), (0.2, 0.3), (0.3, 0.4)])
    p = np.exp(1.5) / (np.exp(1.5) + 9)                                 # softmax over the 10 text tokens
    assert np.allclose([w.probability for w in words], p)
    with pytest.raises(ValueError, match=r"alignment head \(1, 0\)"):
        find_alignment(model, None, SPECIALS, text, 50, tokenizer, "en", alignment_heads=[(1, 0)])


# -- a tiny Whisper end to end --------------------------------------------------------------------
def test_a_tiny_whisper_transcribes_with_every_option_and_word_timestamps():
    model = tiny_whisper()
    seconds = 45.0
    audio = np.random.default_rng(4).standard_normal(int(seconds * SAMPLE_RATE)).astype(np.float32) * 0.1
    specials_and_prompts = list(range(11, 19))
    result = models.transcribe(model, audio, SPECIALS, language="en", tokenizer=Words(), best_of=2, beam_width=2,
                               initial_prompt=[1, 2, 3], word_timestamps=True, suppress_tokens=specials_and_prompts,
                               seed=0)
    assert result and result.language == "en"
    for segment in result:
        assert 0.0 <= segment.start <= segment.end <= seconds
        assert segment.temperature in (0.0, 0.2, 0.4, 0.6, 0.8, 1.0) and segment.avg_logprob <= 0.0
        assert 0.0 <= segment.no_speech_prob <= 1.0 and segment.compression_ratio >= 0.0
        for word in segment.words:
            assert segment.start <= word.start <= word.end <= segment.end and 0.0 <= word.probability <= 1.0
    starts = [(s.start, s.end) for s in result]
    assert all(a[1] <= b[0] for a, b in zip(starts, starts[1:]))
    times = [t for s in result for w in s.words for t in (w.start, w.end)]
    assert times and times == sorted(times)
    assert "".join(w.word for s in result for w in s.words) == result.text
    assert result.as_dict()["segments"][0]["words"]
    plain = models.transcribe(model, audio[:3 * SAMPLE_RATE], SPECIALS, language="en", tokenizer=Words(),
                              return_timestamps=False, word_timestamps=True, suppress_tokens=specials_and_prompts,
                              alignment_heads=[(1, 1), (0, 0)], temperature=0.0)
    assert len(plain) == 1 and all(0.0 <= w.start <= w.end <= 3.0 for w in plain[0].words)
