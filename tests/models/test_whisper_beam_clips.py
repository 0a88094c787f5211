"""Whisper's beam search with ``patience`` and its maximum-likelihood ranker with
``length_penalty`` against a reference written here from Whisper's rules (on a model whose
scores depend on the whole prefix), ``clip_timestamps`` on a scripted model, and a tiny Whisper
transcribing with all the new options."""

from __future__ import annotations

import numpy as np
import pytest
from test_whisper_transcribe import ScriptedWhisper, _audio, _expected_windows, ts
from whisper_checks import SPECIALS, VOCAB, Words, tiny_whisper

from lamina import models
from lamina.autograd import Tensor
from lamina.models import whisper_window as window_module
from lamina.models.whisper import SAMPLE_RATE
from lamina.models.whisper_transcribe import decode_window, likelihood_scores, seek_clips

END = SPECIALS.end_of_text


def _scores_after(prefix: tuple[int, ...], seed: int) -> np.ndarray:
    """Raw scores (VOCAB,) after ``prefix``: random on the text tokens and the end token."""
    rng = np.random.default_rng([seed, len(prefix), *prefix])
    scores = np.full(VOCAB, -1e9)
    scores[:END + 1] = rng.standard_normal(END + 1) * 2.0
    scores[END] += 0.3 * len(prefix)                         # ending gets likelier as the text grows
    return scores


class PrefixModel:
    """Scores depend on the whole prefix, which the model keeps in its (reordered) caches."""

    def __init__(self, seed: int):
        self.seed = seed
        self.config = {"decoder_layers": 1, "vocab_size": VOCAB}

    def encode(self, features):
        return np.zeros((1, 1, 1))

    def decode(self, ids, encoded, caches=None, offset=0):
        ids = np.asarray(ids)
        if offset:
            ids = np.concatenate([caches[0]["prefix"][0].numpy(), ids], axis=1)
        caches[0]["prefix"] = (Tensor(ids.astype(np.float64)),)
        rows = ids.astype(np.int64)
        logits = np.stack([[_scores_after(tuple(row[:k + 1]), self.seed) for k in range(offset, rows.shape[1])]
                           for row in rows])
        return logits


def _log_softmax(x):
    return x - x.max() - np.log(np.exp(x - x.max()).sum())


def reference_beam(prompt, seed, beam, patience, length_penalty, steps):
    """Whisper's BeamSearchDecoder + MaximumLikelihoodRanker on full prefixes."""
    max_candidates = round(beam * (patience or 1.0))
    live = [(tuple(prompt), 0.0)] * beam
    finished = {}
    for _ in range(steps):
        scores, order = {}, []
        for prefix, total in live:
            log_p = _log_softmax(_scores_after(prefix, seed))
            for token in np.argsort(-log_p, kind="stable")[:beam + 1]:
                sequence = prefix + (int(token),)
                if sequence not in scores:
                    order.append(sequence)
                scores[sequence] = total + log_p[token]
        ranked = sorted(order, key=lambda q: -scores[q])
        new_live, done = [], []
        for sequence in ranked:
            if sequence[-1] == END:
                done.append(sequence)
            else:
                new_live.append((sequence, scores[sequence]))
                if len(new_live) == beam:
                    break
        for sequence in done:
            if len(finished) < max_candidates:
                finished[sequence[len(prompt):-1]] = scores[sequence]
        live = new_live
        if len(finished) >= max_candidates:
            break
    candidates = [(list(tokens), total) for tokens, total in finished.items()]
    for prefix, total in sorted(live, key=lambda item: -item[1]):
        if len(candidates) >= beam:
            break
        candidates.append((list(prefix[len(prompt):]), total))

    def rank(total, length):
        return total / (length if length_penalty is None else ((5 + length) / 6) ** length_penalty)
    return max(candidates, key=lambda c: rank(c[1], max(len(c[0]), 1)) if length_penalty is None
               else rank(c[1], len(c[0])))


@pytest.mark.parametrize("seed,beam,patience,length_penalty", [
    (0, 2, None, None), (1, 3, None, None), (2, 3, 2.0, None), (3, 2, 1.5, 1.0), (4, 4, 0.5, 0.0),
    (5, 3, 2.0, 0.6), (6, 5, None, 2.0), (7, 2, 3.0, None)])
def test_beam_search_with_patience_and_length_penalty_follows_whisper(seed, beam, patience, length_penalty):
    prompt = SPECIALS.prompt_ids("en")
    result = decode_window(PrefixModel(seed), None, prompt, SPECIALS, max_new_tokens=8, beam_width=beam,
                           patience=patience, length_penalty=length_penalty, encoded=np.zeros((1, 1, 1)))
    tokens, total = reference_beam(prompt, seed, beam, patience, length_penalty, 8)
    assert result.tokens == tokens
    assert result.sum_logprob == pytest.approx(total, abs=1e-9)


def test_the_ranker_divides_by_length_or_the_gnmt_penalty():
    sums, lengths = [-3.0, -4.0, -1.0], [3, 8, 0]
    assert likelihood_scores(sums, lengths) == pytest.approx([-1.0, -0.5, -1.0])
    assert likelihood_scores(sums, lengths, 1.0) == pytest.approx([-3.0 / (8 / 6), -4.0 / (13 / 6), -1.0 / (5 / 6)])
    assert likelihood_scores(sums, lengths, 0.0) == pytest.approx(sums)
    with pytest.raises(ValueError, match="patience"):
        decode_window(PrefixModel(0), None, [11], SPECIALS, max_new_tokens=2, beam_width=2, patience=0.0,
                      encoded=np.zeros((1, 1, 1)))


def test_best_of_samples_are_ranked_with_the_length_penalty(monkeypatch):
    prompt = SPECIALS.prompt_ids("en")
    texts, sums = [[1, 2], [1, 2, 3, 4, 5, 6], [7]], [-2.0, -4.5, -1.2]
    ids = np.full((3, len(prompt) + 7), END)
    for row, text in zip(ids, texts, strict=True):
        row[:len(prompt)], row[len(prompt):len(prompt) + len(text)] = prompt, text
    prompt_logits = np.zeros((1, len(prompt), VOCAB))
    monkeypatch.setattr(window_module, "_sample",
                        lambda *args: (ids, np.asarray(sums), np.ones(3, dtype=bool), prompt_logits))
    for length_penalty in (None, 0.0, 1.0, 3.0):
        penalties = [len(t) if length_penalty is None else ((5 + len(t)) / 6) ** length_penalty for t in texts]
        best = int(np.argmax([total / penalty for total, penalty in zip(sums, penalties, strict=True)]))
        result = decode_window(PrefixModel(0), None, prompt, SPECIALS, max_new_tokens=7, temperature=0.5, best_of=3,
                               length_penalty=length_penalty, encoded=np.zeros((1, 1, 1)))
        assert result.tokens == texts[best] and result.sum_logprob == sums[best]


# -- clip_timestamps ------------------------------------------------------------------------------
def test_seek_clips_pair_the_times():
    assert seek_clips(None, 7000) == [(0, 7000)]
    assert seek_clips("", 7000) == [(0, 7000)]
    assert seek_clips("5,12.5,40", 7000) == [(500, 1250), (4000, 7000)]
    assert seek_clips([1.0, 2.0], 7000) == [(100, 200)]


def test_only_the_clipped_ranges_are_decoded():
    audio = _audio(70.0)
    model = ScriptedWhisper([[ts(0.0), 1, ts(2.0), ts(2.0), 2], [ts(0.0), 3, ts(3.0)], [ts(0.0), 4, ts(9.0)]])
    segments = models.transcribe(model, audio, SPECIALS, language="en", condition_on_previous_text=False,
                                 clip_timestamps="5,12,40")
    expected = _expected_windows(audio, [500, 700, 4000])
    expected[0][:, 700:] = 0.0                                       # the clip ends at 12 s
    expected[1][:, 500:] = 0.0
    for seen, window in zip(model.windows, expected, strict=True):
        assert np.array_equal(seen, window)
    assert not model.tries
    assert np.allclose([(s.start, s.end) for s in segments], [(5.0, 7.0), (7.0, 10.0), (40.0, 49.0)])


# -- a tiny Whisper -------------------------------------------------------------------------------
def test_a_tiny_whisper_transcribes_with_the_new_options():
    model = tiny_whisper()
    audio = np.random.default_rng(4).standard_normal(int(40 * SAMPLE_RATE)).astype(np.float32) * 0.1
    result = models.transcribe(model, audio, SPECIALS, language="en", tokenizer=Words(), beam_width=3, patience=2.0,
                               length_penalty=1.0, word_timestamps=True, hallucination_silence_threshold=1.0,
                               clip_timestamps=[2.0, 20.0, 31.0], suppress_tokens=list(range(11, 19)), seed=0,
                               temperature=(0.0, 0.5))
    for segment in result:
        assert 2.0 <= segment.start <= segment.end <= 40.0 and not 20.0 < segment.start < 31.0
        times = [t for w in segment.words for t in (w.start, w.end)]
        assert times == sorted(times) and all(0.0 <= w.probability <= 1.0 for w in segment.words)
    assert "".join(w.word for s in result for w in s.words) == result.text
