"""Whisper's word-duration heuristics (median and maximum word duration, long words cut at
sentence ends, after pauses and at segment boundaries) and its hallucination-silence rules,
each against a reference written here on plain dicts from Whisper's rules, on hand-made word
timings; then the rules inside ``transcribe`` on a scripted model."""

from __future__ import annotations

import numpy as np
import pytest
from test_whisper_transcribe import ScriptedWhisper, _audio, ts
from whisper_checks import SPECIALS

from lamina import models
from lamina.models import WhisperSegment, WhisperWord
from lamina.models import whisper_alignment as alignment
from lamina.models.whisper_alignment import WordTiming, add_word_timestamps
from lamina.models.whisper_transcribe import is_segment_anomaly, skip_hallucinations, word_anomaly_score

PUNCTUATION = "\"'“¿([{-" + "\"'.。,，!！?？:：”)]}、"


# -- references -----------------------------------------------------------------------------------
def reference_word_timestamps(alignment_words, segments, last_speech, offset):
    """Whisper's add_word_timestamps on dicts: alignment_words [word, tokens, start, end, p]."""
    words_all = [dict(word=w, tokens=list(t), start=s, end=e, probability=p) for w, t, s, e, p in alignment_words]
    durations = [w["end"] - w["start"] for w in words_all if w["end"] - w["start"] != 0]
    median = min(0.7, float(np.median(durations))) if durations else 0.0
    longest = 2 * median
    if durations:
        for i in range(1, len(words_all)):
            w = words_all[i]
            if w["end"] - w["start"] > longest:
                if w["word"] in ".。!！?？":
                    w["end"] = w["start"] + longest
                elif words_all[i - 1]["word"] in ".。!！?？":
                    w["start"] = w["end"] - longest
    alignment.merge_punctuations(timings := [WordTiming(w["word"], w["tokens"], w["start"], w["end"], w["probability"])
                                             for w in words_all])
    out, index = [], 0
    for segment in segments:
        seg = dict(start=segment.start, end=segment.end)
        taken, words = 0, []
        while index < len(timings) and taken < len(segment.tokens):
            t = timings[index]
            if t.word:
                words.append(dict(start=round(offset + t.start, 2), end=round(offset + t.end, 2)))
            taken += len(t.tokens)
            index += 1
        if words:
            first = words[0]
            if first["end"] - last_speech > median * 4 and (
                    first["end"] - first["start"] > longest
                    or (len(words) > 1 and words[1]["end"] - first["start"] > longest * 2)):
                if len(words) > 1 and words[1]["end"] - words[1]["start"] > longest:
                    boundary = max(words[1]["end"] / 2, words[1]["end"] - longest)
                    first["end"] = words[1]["start"] = boundary
                first["start"] = max(0, first["end"] - longest)
            if seg["start"] < first["end"] and seg["start"] - 0.5 > first["start"]:
                first["start"] = max(0, min(first["end"] - median, seg["start"]))
            else:
                seg["start"] = first["start"]
            if seg["end"] > words[-1]["start"] and seg["end"] + 0.5 < words[-1]["end"]:
                words[-1]["end"] = max(words[-1]["start"] + median, seg["end"])
            else:
                seg["end"] = words[-1]["end"]
            last_speech = seg["end"]
        out.append((seg, words))
    return out


def _random_case(rng):
    """Hand-made words: some sentence marks, long words and pauses; segments taking 1-4 words."""
    n = int(rng.integers(3, 12))
    texts = [str(rng.choice([" a", " bb", " ccc", ".", "!", "?", ",", " d"])) for _ in range(n)]
    texts[0] = " x"
    bounds = np.cumsum(np.round(rng.choice([0.0, 0.06, 0.2, 0.4, 1.2, 2.5, 4.0], size=n + 1), 2))
    words = [(text, [i], float(bounds[i]), float(bounds[i + 1]), float(rng.random())) for i, text in enumerate(texts)]
    segments, i, time = [], 0, 0.0
    while i < n:
        k = int(rng.integers(1, 5))
        start = round(time + float(rng.choice([0.0, 0.3, 1.0, 3.0])), 2)
        end = round(start + float(rng.choice([0.1, 1.0, 3.0, 8.0])), 2)
        segments.append(WhisperSegment(start, end, list(range(i, min(i + k, n)))))
        i, time = i + k, end
    return words, segments


@pytest.mark.parametrize("seed", range(40))
def test_word_timestamps_follow_whispers_duration_heuristics(seed, monkeypatch):
    rng = np.random.default_rng(seed)
    words, segments = _random_case(rng)
    offset, last_speech = float(rng.choice([0.0, 12.34])), float(rng.choice([0.0, 5.0]))
    segments = [s._replace(start=s.start + offset, end=s.end + offset) for s in segments]
    monkeypatch.setattr(alignment, "find_alignment",
                        lambda *args, **kwargs: [WordTiming(w, list(t), s, e, p) for w, t, s, e, p in words])
    ours = add_word_timestamps(None, None, segments, SPECIALS, None, "en", "transcribe", 3000, offset,
                               last_speech_timestamp=last_speech)
    expected = reference_word_timestamps(words, segments, last_speech, offset)
    point = None
    for segment, (seg, ref_words) in zip(ours, expected, strict=True):
        assert len(segment.words) == len(ref_words)
        if ref_words:
            assert segment.start == pytest.approx(seg["start"]) and segment.end == pytest.approx(seg["end"])
            got = [(w.start, w.end) for w in segment.words]
            assert np.allclose(got, [(w["start"], w["end"]) for w in ref_words])
            point = segment.end
        elif point is not None:                       # a segment without words: where the previous one ended
            assert segment.start == segment.end == point


def test_a_long_word_after_a_full_stop_is_cut_to_twice_the_median():
    timings = [WordTiming(" a", [0], 0.0, 0.2), WordTiming(".", [1], 0.2, 0.4), WordTiming(" b", [2], 0.4, 3.0),
               WordTiming(" c", [3], 3.0, 3.2)]
    median, longest = alignment.word_duration_limits(timings)
    assert median == pytest.approx(0.2) and longest == pytest.approx(0.4)
    alignment.truncate_at_sentence_ends(timings, longest)
    assert (timings[2].start, timings[2].end) == pytest.approx((2.6, 3.0))
    capped = alignment.word_duration_limits([WordTiming(" a", [0], 0.0, 5.0), WordTiming(" b", [1], 5.0, 5.0)])
    assert capped == pytest.approx((0.7, 1.4))                     # zero durations left out, the median capped


# -- hallucination rules --------------------------------------------------------------------------
def reference_anomaly(words):
    if not words:
        return False
    kept = [w for w in words if w.word not in PUNCTUATION][:8]
    score = 0.0
    for w in kept:
        duration = w.end - w.start
        score += (w.probability < 0.15) + max(0.0, 0.133 - duration) * 15 + max(0.0, duration - 2.0)
    return score >= 3 or score + 0.01 >= len(kept)


def test_word_anomaly_scores_and_segment_anomalies():
    rng = np.random.default_rng(0)
    for _ in range(200):
        words = tuple(WhisperWord(str(rng.choice([" a", ".", " b", ","])), float(s), float(s + d), float(p))
                      for s, d, p in zip(rng.random(int(rng.integers(0, 11))) * 10,
                                         rng.choice([0.0, 0.05, 0.13, 0.5, 2.5, 4.0], 11), rng.random(11)))
        segment = WhisperSegment(0.0, 10.0, [], words=words)
        assert is_segment_anomaly(segment) == reference_anomaly(words)
    assert word_anomaly_score(WhisperWord(" a", 0.0, 0.033, 0.1)) == pytest.approx(1 + 0.1 * 15)
    assert word_anomaly_score(WhisperWord(" a", 0.0, 3.5, 0.9)) == pytest.approx(1.5)
    assert not is_segment_anomaly(None) and not is_segment_anomaly(WhisperSegment(0.0, 1.0, []))


def reference_skip(segments, threshold, seek, previous_seek, size, by_words, last_speech, content_frames):
    offset, window_end = previous_seek / 100, (previous_seek + 3000) / 100
    ends = [w.end for s in segments for w in s.words]
    last_end = ends[-1] if ends else (segments[-1].end if segments else None)
    if by_words and last_end is not None and last_end > offset:
        seek = round(last_end * 100) if window_end - last_end > threshold else previous_seek + size
    worded = [i for i, s in enumerate(segments) if s.words]
    if worded and reference_anomaly(segments[worded[0]].words) and segments[worded[0]].start - offset > threshold:
        return None, previous_seek + round((segments[worded[0]].start - offset) * 100)
    last = last_speech
    for i in worded:
        s = segments[i]
        if reference_anomaly(s.words):
            later = [j for j in worded if j > i]
            next_start = segments[later[0]].words[0].start if later else offset + size / 100
            before = s.start - last > threshold or s.start < threshold or s.start - offset < 2.0
            after = (next_start - s.end > threshold or (bool(later) and reference_anomaly(segments[later[0]].words))
                     or window_end - s.end < 2.0)
            if before and after:
                new_seek = content_frames if content_frames / 100 - s.end < threshold else \
                    round(max(offset + 1, s.start) * 100)
                return i, new_seek
        last = s.end
    return len(segments), seek


@pytest.mark.parametrize("seed", range(150))
def test_hallucination_silences_are_skipped_as_whisper(seed):
    rng = np.random.default_rng(seed)
    previous_seek = int(rng.choice([0, 1500]))
    offset = previous_seek / 100
    segments, time = [], offset + float(rng.choice([0.0, 0.5, 1.5, 3.0, 25.0, 27.5]))
    for _ in range(int(rng.integers(1, 5))):
        words, start = [], time
        for _ in range(int(rng.integers(0, 4))):
            duration = float(rng.choice([0.02, 0.3, 0.6, 2.6]))
            words.append(WhisperWord(" w", round(time, 2), round(time + duration, 2), float(rng.choice([0.05, 0.9]))))
            time += duration
        segments.append(WhisperSegment(round(start, 2), round(time, 2), [1], words=tuple(words)))
        time += float(rng.choice([0.0, 0.4, 2.5, 6.0]))
    size = int(rng.choice([3000, 2000]))
    args = (segments, float(rng.choice([0.5, 2.0])), previous_seek + size, previous_seek, size,
            bool(rng.integers(2)), float(rng.choice([0.0, offset])), int(rng.choice([4500, previous_seek + size])))
    assert skip_hallucinations(*args) == reference_skip(*args)


# -- inside transcribe ----------------------------------------------------------------------------
class Spaced:
    def decode(self, ids):
        return "".join(" " + "abcdefghij"[i] for i in ids)


def test_transcribe_drops_a_hallucination_after_silence(monkeypatch):
    # window 1: a fine word at 0-0.5 s, then a long, unlikely one at 20-26 s, surrounded by silence
    # (after the pause it is cut to 2 * 0.7 s: 24.6-26 s, the segment's start following it)
    script = [[ts(0.0), 1, ts(0.5), ts(20.0), 2, ts(26.0)], [ts(0.0), 3, ts(1.0)]]
    timings = iter([[WordTiming(" b", [1], 0.0, 0.5, 0.9), WordTiming(" c", [2], 20.0, 26.0, 0.01)],
                    [WordTiming(" d", [3], 0.0, 1.0, 0.9)]])
    monkeypatch.setattr(alignment, "find_alignment", lambda *args, **kwargs: next(timings))
    model = ScriptedWhisper(script)
    result = models.transcribe(model, _audio(40.0), SPECIALS, language="en", tokenizer=Spaced(),
                               word_timestamps=True, hallucination_silence_threshold=2.0)
    assert [s.tokens for s in result] == [[1], [3]]
    assert result[1].start == pytest.approx(24.6)                  # the next window starts at the dropped segment
    assert model.prompts[1][1:4] == [ts(0.0), 1, ts(0.5)]           # its tokens left out of the prompt


def test_an_unlikely_segment_near_the_window_end_counts_as_followed_by_silence():
    word = WhisperWord(" w", 27.0, 28.5, 0.05)                   # 1.5 s before the window's end, nothing after
    speech = WhisperWord(" v", 0.0, 0.5, 0.9)
    segments = [WhisperSegment(0.0, 0.5, [1], words=(speech,)), WhisperSegment(27.0, 28.5, [1], words=(word,))]
    args = (segments, 2.0, 2850, 0, 3000, False, 0.0, 6000)
    assert skip_hallucinations(*args) == reference_skip(*args) == (1, 2700)
