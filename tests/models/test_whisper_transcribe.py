"""Whisper's long-form transcription on scripted models (designed logits): sequential seeking,
average log-probability and no-speech probability against their definitions, the compression
ratio against gzip, temperature fallback, silence skipping and the previous-text prompt."""

from __future__ import annotations

import gzip
import zlib

import numpy as np
import pytest
from whisper_checks import SPECIALS, VOCAB

from lamina import models
from lamina.models import WhisperSegment, WhisperSpecialTokens
from lamina.models.whisper import N_FRAMES, SAMPLE_RATE
from lamina.models.whisper_transcribe import (
    DEFAULT_TEMPERATURES,
    WindowDecoding,
    compression_ratio,
    decode_window,
    decode_with_fallback,
    token_compression_ratio,
)

END, SOP = SPECIALS.end_of_text, SPECIALS.start_of_prev


def ts(seconds: float) -> int:
    return SPECIALS.timestamp_id(seconds)


class Letters:
    """Token i < 10 is the letter 'abcdefghij'[i]."""

    def decode(self, ids):
        return "".join("abcdefghij"[i] for i in ids)

    def encode(self, text):
        return ["abcdefghij".index(c) for c in text if c != " "]


class ScriptedWhisper:
    """Each decoding try (a decoder call from position 0) follows the next script: its logits are
    ``margin`` on the script's token (then on the end token) and 0 elsewhere; the row at
    <|startoftranscript|> has ``no_speech`` on <|nocaptions|>. Records the windows and prompts."""

    def __init__(self, tries, n_ctx: int = 448):
        self.config = {"num_mel_bins": 8, "max_target_positions": n_ctx, "decoder_layers": 1, "vocab_size": VOCAB}
        self.tries = [t if isinstance(t, dict) else {"tokens": t} for t in tries]
        self.windows, self.prompts, self.training = [], [], False

    def eval(self):
        self.training = False

    def train(self, mode=True):
        self.training = mode

    def encode(self, features):
        self.windows.append(np.array(features[0]))
        return np.zeros((len(features), 1, 1))

    def decode(self, ids, encoded, caches=None, offset=0):
        ids = np.asarray(ids)
        if offset == 0:
            self.current = self.tries.pop(0)
            self.prompt = ids[0].tolist()
            self.prompts.append(self.prompt)
        script = self.current["tokens"] + [END]
        margin, no_speech = self.current.get("margin", 20.0), self.current.get("no_speech", 0.0)
        logits = np.zeros((ids.shape[0], ids.shape[1], VOCAB))
        for k in range(ids.shape[1]):
            step = offset + k - (len(self.prompt) - 1)
            if 0 <= step < len(script):
                logits[:, k, script[step]] = margin
            if offset + k == self.prompt.index(SPECIALS.start_of_transcript):
                logits[:, k, SPECIALS.no_captions] = no_speech
        return logits


def _audio(seconds: float) -> np.ndarray:
    return np.random.default_rng(3).standard_normal(int(seconds * SAMPLE_RATE)).astype(np.float32) * 0.1


def _expected_windows(audio: np.ndarray, seeks: list[int]) -> list[np.ndarray]:
    mel = models.whisper_log_mel_spectrogram(audio, 8, padding=N_FRAMES * 160).numpy()
    content = mel.shape[-1] - N_FRAMES
    windows = []
    for seek in seeks:
        window = np.zeros((8, N_FRAMES), dtype=mel.dtype)
        frames = min(N_FRAMES, content - seek)
        window[:, :frames] = mel[:, seek:seek + frames]
        windows.append(window)
    return windows


# -- sequential long form -------------------------------------------------------------------------
def test_long_form_seeks_to_the_last_complete_timestamp():
    audio = _audio(70.0)
    script = [[ts(0.0), 1, ts(5.0), ts(5.0), 2, ts(12.34), ts(12.34), 3],      # unfinished: next window at 12.34 s
              [ts(0.0), 4, ts(29.0)],                                          # lone ending: whole window
              [ts(0.0), 5]]                                                    # no pair: one segment
    model = ScriptedWhisper(script)
    segments = models.transcribe(model, audio, SPECIALS, language="en", condition_on_previous_text=False)
    assert not model.tries and isinstance(segments, models.WhisperTranscription)
    for seen, expected in zip(model.windows, _expected_windows(audio, [0, 1234, 4234]), strict=True):
        assert np.array_equal(seen, expected)
    assert [s.tokens for s in segments] == [[1], [2], [4], [5]]
    times = [(s.start, s.end) for s in segments]
    assert np.allclose(times, [(0.0, 5.0), (5.0, 12.34), (12.34, 41.34), (42.34, 70.0)])
    assert all(s.temperature == 0.0 and s.avg_logprob > -1e-3 for s in segments)


def test_long_form_without_timestamps_uses_consecutive_windows():
    audio = _audio(70.0)
    model = ScriptedWhisper([[1], [2, 3], [4]])
    segments = models.transcribe(model, audio, SPECIALS, language="en", return_timestamps=False,
                                 tokenizer=Letters(), condition_on_previous_text=False)
    for seen, expected in zip(model.windows, _expected_windows(audio, [0, 3000, 6000]), strict=True):
        assert np.array_equal(seen, expected)
    assert [p[-1] for p in model.prompts] == [SPECIALS.no_timestamps] * 3
    assert [s[:4] for s in segments] == [(0.0, 30.0, [1], "b"), (30.0, 60.0, [2, 3], "cd"), (60.0, 70.0, [4], "e")]
    assert segments.text == "bcde" and segments.as_dict()["segments"][1]["text"] == "cd"
    assert segments[0] == WhisperSegment(0.0, 30.0, [1], "b", *segments[0][4:])


# -- one window's measures ------------------------------------------------------------------------
def _log_softmax(row: np.ndarray) -> np.ndarray:
    return row - np.log(np.exp(row - row.max()).sum()) - row.max()


def test_avg_logprob_and_no_speech_prob_follow_their_definitions():
    tokens, margin, no_speech = [3, 1, 4, 1, 5], 2.5, 4.0
    model = ScriptedWhisper([{"tokens": tokens, "margin": margin, "no_speech": no_speech}])
    prompt = SPECIALS.prompt_ids("en")
    suppressed = [11, 12, 13, 14, 15, 16, 17, 18]
    result = decode_window(model, np.zeros((1, 8, 10)), prompt, SPECIALS, max_new_tokens=20,
                           suppress_tokens=suppressed)
    assert result.tokens == tokens and result.ended
    total = 0.0
    for token in tokens + [END]:                      # each step: margin on the token, 0 elsewhere, suppression
        row = np.zeros(VOCAB)
        row[token] = margin
        row[suppressed] = -np.inf
        total += _log_softmax(row)[token]
    assert result.sum_logprob == pytest.approx(total, rel=1e-12)
    assert result.avg_logprob == pytest.approx(total / (len(tokens) + 1), rel=1e-12)
    sot_row = np.zeros(VOCAB)
    sot_row[SPECIALS.no_captions] = no_speech         # read before any suppression
    assert result.no_speech_prob == pytest.approx(np.exp(_log_softmax(sot_row)[SPECIALS.no_captions]), rel=1e-12)


def test_the_compression_ratio_equals_gzip_on_the_text():
    for text in ["the cat sat on the mat", "abc" * 40, "ab" * 3, "ünïcödé text ünïcödé text ünïcödé"]:
        data = text.encode("utf-8")
        deflated = len(gzip.compress(data, compresslevel=6, mtime=0)) - 18 + 6   # gzip's framing, zlib's framing
        assert compression_ratio(text) == pytest.approx(len(data) / deflated)
    assert compression_ratio("hello world, " * 20) > 2.4 > compression_ratio("hello world")
    ids = [3, 70000, 5, 70000] * 10
    packed = b"".join(i.to_bytes(3, "little") for i in ids)                 # 51,865+ ids: 3 bytes each
    assert token_compression_ratio(ids, 100000) == len(packed) / len(zlib.compress(packed))


# -- temperature fallback -------------------------------------------------------------------------
def _result(t, ratio=1.0, logprob=-0.1, no_speech=0.01, n=4):
    return WindowDecoding([1] * n, logprob * (n + 1), no_speech, t, ratio)


def test_fallback_moves_through_the_temperatures_in_order_until_one_passes():
    seen = []

    def decode_at(t, failing=2):
        seen.append(t)
        return _result(t, ratio=3.0 if len(seen) <= failing else 1.5)

    assert decode_with_fallback(decode_at, DEFAULT_TEMPERATURES).temperature == 0.4
    assert seen == [0.0, 0.2, 0.4]
    seen.clear()
    last = decode_with_fallback(lambda t: decode_at(t, failing=99), DEFAULT_TEMPERATURES)
    assert seen == list(DEFAULT_TEMPERATURES) and last.temperature == 1.0
    seen.clear()
    decode_with_fallback(decode_at, DEFAULT_TEMPERATURES, compression_ratio_threshold=None)
    assert seen == [0.0]
    low = [_result(0.0, logprob=-1.5), _result(0.2, logprob=-0.5)]
    assert decode_with_fallback(lambda t: low.pop(0), DEFAULT_TEMPERATURES).temperature == 0.2
    silent = _result(0.0, logprob=-1.5, no_speech=0.9)                       # silence: no fallback
    assert decode_with_fallback(lambda t: silent, DEFAULT_TEMPERATURES) is silent
    unsure = [_result(0.0, ratio=3.0, no_speech=0.9), _result(0.2)]           # repetitive, likely: fallback
    assert decode_with_fallback(lambda t: unsure.pop(0), DEFAULT_TEMPERATURES).temperature == 0.2


def test_a_repetitive_window_is_redone_at_the_next_temperature():
    repetitive, normal = [1, 2] * 40, [3, 1, 4]
    model = ScriptedWhisper([repetitive, repetitive, normal, normal])
    segments = models.transcribe(model, _audio(50.0), SPECIALS, language="en", return_timestamps=False,
                                 tokenizer=Letters(), condition_on_previous_text=False, seed=0, best_of=2)
    assert not model.tries and len(model.prompts) == 4
    assert [s.temperature for s in segments] == [0.4, 0.0]
    assert [s.tokens for s in segments] == [normal, normal]
    assert segments[0].compression_ratio == pytest.approx(compression_ratio("dbe"))
    assert compression_ratio(Letters().decode(repetitive)) > 2.4


def test_a_silent_window_is_skipped():
    silent = {"tokens": [1], "margin": 0.0, "no_speech": 30.0}               # avg log p ~ -7.3, p(no speech) ~ 1
    sure = {"tokens": [2], "no_speech": 30.0}                                # likely text despite p(no speech)
    model = ScriptedWhisper([silent, sure, [3]])
    segments = models.transcribe(model, _audio(70.0), SPECIALS, language="en", return_timestamps=False,
                                 condition_on_previous_text=False)
    assert not model.tries                                                    # the silent window was tried once
    assert [(s.start, s.tokens) for s in segments] == [(30.0, [2]), (60.0, [3])]
    assert segments[0].no_speech_prob > 0.99
    kept = models.transcribe(ScriptedWhisper([silent] * 6), _audio(5.0), SPECIALS, language="en",
                             return_timestamps=False, condition_on_previous_text=False, no_speech_threshold=None,
                             seed=0)
    assert len(kept) == 1 and kept[0].temperature == 1.0                      # no threshold: every temperature tried


# -- the previous text as prompt ------------------------------------------------------------------
def test_the_prompt_holds_the_previous_tokens_and_resets_after_a_high_temperature():
    first = [ts(0.0), 1, ts(5.0), ts(5.0), 2, ts(12.34), ts(12.34), 3]
    repetitive = [ts(0.0), *[1, 2] * 40, ts(20.0)]
    second = [ts(0.0), 4, ts(29.0)]
    third = [ts(0.0), 5, ts(6.0)]
    model = ScriptedWhisper([first, repetitive, repetitive, repetitive, second, third])
    sot = SPECIALS.prompt_ids("en", timestamps=True)
    initial = [7, 8, 9]
    segments = models.transcribe(model, _audio(70.0), SPECIALS, language="en", tokenizer=Letters(),
                                 initial_prompt="h i j", seed=1)
    taken = first[:6]                                                          # up to the last complete segment
    assert model.prompts[0] == [SOP, *initial, *sot]
    assert all(p == [SOP, *initial, *taken, *sot] for p in model.prompts[1:5])
    assert model.prompts[5] == sot                                             # reset: decoded at 0.6 > 0.5
    assert [s.temperature for s in segments] == [0.0, 0.0, 0.6, 0.0]
    model = ScriptedWhisper([first, second, third])
    models.transcribe(model, _audio(70.0), SPECIALS, language="en", initial_prompt=initial,
                      condition_on_previous_text=False)
    assert model.prompts == [[SOP, *initial, *sot], sot, sot]


def test_the_prompt_keeps_the_last_half_context_tokens():
    model = ScriptedWhisper([[ts(0.0), 1, ts(1.0)]], n_ctx=24)
    initial = list(range(10)) * 2
    models.transcribe(model, _audio(3.0), SPECIALS, language="en", initial_prompt=initial)
    sot = SPECIALS.prompt_ids("en", timestamps=True)
    assert model.prompts == [[SOP, *initial[-11:], *sot]]                      # 24 // 2 - 1 tokens
    with pytest.raises(ValueError, match="start_of_prev"):
        models.transcribe(model, _audio(3.0), WhisperSpecialTokens(10, 11, 15, 14, 18, 19), language="en")
