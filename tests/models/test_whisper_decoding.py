"""Whisper's special tokens, timestamp rules (against a token-by-token reference written from
the rules), segments, and a tiny Whisper transcribing end to end (long form on scripted models:
test_whisper_transcribe.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lamina import models
from lamina.models import WhisperSegment, WhisperSpecialTokens, WhisperTimestampRules, timestamp_segments
from lamina.models.whisper import N_FRAMES, SAMPLE_RATE
from lamina.text import HFTokenizer

# text 0..9, then the specials, then the timestamps <|0.00|> .. <|30.00|>
SPECIALS = WhisperSpecialTokens(end_of_text=10, start_of_transcript=11, transcribe=15, translate=14,
                                no_timestamps=17, timestamp_begin=18, no_captions=16, languages={"en": 12, "de": 13})
BEGIN = SPECIALS.timestamp_begin
VOCAB = BEGIN + SPECIALS.n_timestamps


def ts(seconds: float) -> int:
    return SPECIALS.timestamp_id(seconds)


# -- special tokens -------------------------------------------------------------------------------
def test_prompt_ids_follow_whisper():
    assert SPECIALS.prompt_ids("en") == [11, 12, 15, 17]
    assert SPECIALS.prompt_ids("de", "translate", timestamps=True) == [11, 13, 14]
    assert SPECIALS.prompt_ids(None, None) == [11, 17]
    assert ts(0.0) == BEGIN and ts(1.24) == BEGIN + 62 and ts(30.0) == VOCAB - 1
    assert SPECIALS.seconds(BEGIN + 62) == pytest.approx(1.24)
    assert SPECIALS.is_timestamp(VOCAB - 1) and not SPECIALS.is_timestamp(BEGIN - 1)
    with pytest.raises(ValueError, match="unknown language 'xx'"):
        SPECIALS.prompt_ids("xx")
    with pytest.raises(ValueError, match="30.00 s"):
        ts(30.5)


def test_special_tokens_are_read_from_a_tokenizer():
    added = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|de|>", "<|translate|>", "<|transcribe|>",
             "<|startoflm|>", "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>", "<|0.00|>", "<|0.02|>"]
    vocab = {"a": 0, "b": 1, **{token: 2 + i for i, token in enumerate(added)}}
    text = {"version": "1.0", "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "a"},
            "pre_tokenizer": {"type": "WhitespaceSplit"},
            "added_tokens": [{"id": vocab[t], "content": t, "special": True, "single_word": False, "lstrip": False,
                              "rstrip": False, "normalized": False} for t in added]}
    specials = WhisperSpecialTokens.from_tokenizer(HFTokenizer.from_str(json.dumps(text)))
    assert (specials.end_of_text, specials.start_of_transcript, specials.translate, specials.transcribe) == (2, 3, 6, 7)
    assert (specials.no_captions, specials.no_timestamps, specials.timestamp_begin) == (10, 11, 12)
    assert specials.languages == {"en": 4, "de": 5} and specials.start_of_prev == 9
    assert specials.prompt_ids("de") == [3, 5, 7, 11]


# -- timestamp rules ------------------------------------------------------------------------------
def _allowed(sampled: list[int], candidate: int, max_initial: int | None) -> bool:
    """Whether Whisper's rules let ``candidate`` follow the ``sampled`` tokens (prompt removed)."""
    stamp = SPECIALS.is_timestamp
    if candidate == SPECIALS.no_timestamps:
        return False
    if not sampled:
        return stamp(candidate) and (max_initial is None or candidate - BEGIN <= max_initial)
    last_is_stamp = stamp(sampled[-1])
    segment_ended = last_is_stamp and len(sampled) >= 2 and not stamp(sampled[-2])
    if last_is_stamp and not segment_ended and stamp(candidate):
        return False                                    # two timestamps in a row: text next
    if segment_ended and not (stamp(candidate) or candidate >= SPECIALS.end_of_text):
        return False                                    # text then a timestamp: next segment or the end
    previous = [t for t in sampled if stamp(t)]
    if stamp(candidate) and previous:
        return candidate >= previous[-1] if segment_ended else candidate > previous[-1]
    return True


def _reference(prompt: list[int], sampled: list[int], logits: np.ndarray, max_initial: int | None) -> np.ndarray:
    out = np.array([z if _allowed(sampled, v, max_initial) else -np.inf for v, z in enumerate(logits)])
    p = np.exp(out - out.max())
    p /= p.sum()
    if p[BEGIN:].sum() > p[:BEGIN].max():
        out[:BEGIN] = -np.inf
    return out


HISTORIES = [[], [ts(0.0)], [ts(0.0), 3, 4], [ts(0.0), 3, ts(1.0)], [ts(0.0), 3, ts(1.0), ts(1.0)],
             [ts(0.0), 3, ts(1.0), ts(1.0), 5], [ts(0.5), 3, ts(1.0), ts(1.0), 5, 6, ts(2.0)],
             [ts(0.5), 3, ts(1.0), ts(4.0)]]


@pytest.mark.parametrize("history", HISTORIES)
@pytest.mark.parametrize("max_initial", [1.0, None])
def test_each_timestamp_rule_equals_the_reference(history, max_initial):
    prompt = SPECIALS.prompt_ids("en", timestamps=True)
    rng = np.random.default_rng(len(history))
    logits = rng.standard_normal((3, VOCAB)) * 2.0
    logits[1, :BEGIN] += 6.0                           # text favoured: the forcing rule stays off
    logits[2, BEGIN:] += 3.0                           # timestamps favoured: the forcing rule acts
    ids = np.array([prompt + history] * 3)
    ours = WhisperTimestampRules(SPECIALS, len(prompt), max_initial)(ids, logits)
    index = None if max_initial is None else round(max_initial / 0.02)
    for row in range(3):
        expected = _reference(prompt, history, logits[row], index)
        assert np.array_equal(np.isinf(ours[row]), np.isinf(expected)), (history, row)
        assert np.array_equal(ours[row][np.isfinite(ours[row])], expected[np.isfinite(expected)])


def test_a_timestamp_is_forced_when_their_summed_probability_beats_the_best_text_token():
    prompt = SPECIALS.prompt_ids("en", timestamps=True)
    ids = np.array([prompt + [ts(0.0), 3]] * 2)
    logits = np.zeros((2, VOCAB))
    logits[:, 4] = 5.0                                  # the best single token is text
    logits[0, BEGIN:] = np.log(2 * np.exp(5.0) / SPECIALS.n_timestamps)   # together twice as likely
    logits[1, BEGIN:] = np.log(0.5 * np.exp(5.0) / SPECIALS.n_timestamps)
    out = WhisperTimestampRules(SPECIALS, len(prompt))(ids, logits)
    assert np.isinf(out[0, :BEGIN]).all() and np.isfinite(out[0, BEGIN + 1:]).all()
    assert out[1, 4] == 5.0


# -- segments -------------------------------------------------------------------------------------
def test_segments_from_a_timestamped_sequence():
    prompt = SPECIALS.prompt_ids("en", timestamps=True)
    tokens = prompt + [ts(0.0), 1, 2, ts(1.5), ts(1.5), 3, ts(2.4), ts(2.4), 4, SPECIALS.end_of_text]
    assert timestamp_segments(tokens, SPECIALS) == [WhisperSegment(0.0, 1.5, [1, 2]), WhisperSegment(1.5, 2.4, [3])]
    shifted = timestamp_segments([ts(0.5), 7, ts(3.0)], SPECIALS, time_offset=10.0)
    assert shifted[0].tokens == [7] and shifted[0].start == pytest.approx(10.5) and shifted[0].end == 13.0

    class Letters:
        def decode(self, ids):
            return "".join("abcdefghij"[i] for i in ids)

    text = models.decode_with_timestamps(Letters(), tokens, SPECIALS)
    assert text == "<|0.00|>bc<|1.50|><|1.50|>d<|2.40|><|2.40|>e"


def _audio(seconds: float) -> np.ndarray:
    return np.random.default_rng(3).standard_normal(int(seconds * SAMPLE_RATE)).astype(np.float32) * 0.1


# -- a tiny Whisper end to end --------------------------------------------------------------------
def _tiny():
    return models.whisper("test", vocab_size=VOCAB, max_source_positions=N_FRAMES // 2, max_target_positions=48,
                          pad_token_id=10, bos_token_id=10, eos_token_id=10, decoder_start_token_id=11)


def test_a_tiny_whisper_obeys_the_rules_and_transcribes():
    model = _tiny()
    model.build()
    features = models.whisper_log_mel_spectrogram(models.pad_or_trim(_audio(2.0)), 8).numpy()[None]
    prompt = SPECIALS.prompt_ids("en", timestamps=True)
    ids = models.generate_with_timestamps(model, features, SPECIALS, language="en", max_new_tokens=12,
                                          suppress_tokens=[11, 12, 13, 14, 15, 16])[0]
    sampled = [int(t) for t in ids[len(prompt):]]
    for i, token in enumerate(sampled):
        if token == SPECIALS.end_of_text:
            break
        assert _allowed(sampled[:i], token, 50), (sampled, i)
    segments = models.transcribe(model, _audio(2.0), SPECIALS, language="en", return_timestamps=False,
                                 suppress_tokens=[11, 12, 13, 14, 15, 16, 17], condition_on_previous_text=False)
    assert len(segments) == 1 and segments[0][:2] == (0.0, 2.0)
    assert all(0 <= t < SPECIALS.end_of_text or SPECIALS.is_timestamp(t) for t in segments[0].tokens)
    timed = models.transcribe(model, _audio(5.0), SPECIALS, language="en", suppress_tokens=[11, 12, 13, 14, 15, 16],
                              condition_on_previous_text=False)
    assert timed and all(0.0 <= s.start <= s.end for s in timed)
    assert all(a.end <= b.start for a, b in zip(timed, timed[1:]))
    assert all(0 <= t < SPECIALS.end_of_text for s in timed for t in s.tokens)
