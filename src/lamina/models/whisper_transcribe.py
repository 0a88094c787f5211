"""Whisper's long-form transcription (openai-whisper's ``transcribe``): sequential 30 s windows
with temperature fallback, silence skipping, the previous text as a prompt and word timestamps.

Each window is decoded by :func:`decode_window` at a temperature T: greedy (T = 0), Whisper's
beam search (T = 0 and ``beam_width`` > 1, ``patience``) or ``best_of`` samples from
softmax(scores / T); of the candidates the best is the one of highest sum log p / penalty,
penalty = length when ``length_penalty`` is None, else ((5 + length) / 6) ** length_penalty
(:func:`likelihood_scores`). Of the decoded tokens y_1 .. y_n (the end token y_{n+1} not counted):

    avg_logprob       = (sum_{i=1}^{n+1} log p(y_i | y_<i)) / (n + 1)
                        p the softmax at T = 1 of the scores after the suppression and the
                        timestamp rules; the end token's log-probability is in the sum (the
                        + 1), none when the decoding stopped at the length limit
    compression_ratio = len(b) / len(zlib.compress(b))      b the UTF-8 bytes of the stripped
                        text (with a tokenizer; without, the text token ids, each in
                        floor(log2(vocab) / 8) + 1 little-endian bytes, as Hugging Face)
    no_speech_prob    = softmax(logits at the <|startoftranscript|> position)[<|nocaptions|>]
                        (the decoder's raw scores, read in the prompt's pass)

:func:`decode_with_fallback` redoes the window at the next temperature of ``temperature``
(default 0, 0.2, ..., 1) while compression_ratio > ``compression_ratio_threshold`` (too
repetitive) or avg_logprob < ``logprob_threshold``, unless no_speech_prob >
``no_speech_threshold`` and avg_logprob < ``logprob_threshold`` (silence); the last try is kept
when all fail. :func:`transcribe` then skips a window as silent when no_speech_prob >
``no_speech_threshold`` and avg_logprob < ``logprob_threshold``.

With ``condition_on_previous_text`` the prompt of a window is

    [<|startofprev|>, last n_ctx / 2 - 1 previous tokens, <|startoftranscript|>, ...]

(the tokens, timestamps included, of the kept segments since the last reset, after the
``initial_prompt``); it is reset (emptied) after a window decoded at a temperature above
``prompt_reset_on_temperature``, and after every window without ``condition_on_previous_text``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import numpy as np

from lamina.autograd import no_grad
from lamina.models.whisper_alignment import (
    APPEND_PUNCTUATIONS,
    PREPEND_PUNCTUATIONS,
    add_word_timestamps,
)
from lamina.models.whisper_decoding import (
    FRAMES_PER_TIMESTAMP,
    TIME_PRECISION,
    WhisperSegment,
    WhisperSpecialTokens,
    WhisperTimestampRules,
    WhisperWord,
    timestamp_segments,
)
from lamina.models.whisper_features import CHUNK_SECONDS, HOP_LENGTH, N_FRAMES, SAMPLE_RATE, whisper_log_mel_spectrogram
from lamina.models.whisper_window import (
    DEFAULT_TEMPERATURES,
    WindowDecoding,
    compression_ratio,
    decode_window,
    decode_with_fallback,
    is_silent,
    likelihood_scores,
    token_compression_ratio,
)

__all__ = ["DEFAULT_TEMPERATURES", "WhisperTranscription", "WindowDecoding", "compression_ratio", "decode_window",
           "decode_with_fallback", "is_segment_anomaly", "likelihood_scores", "seek_clips", "skip_hallucinations",
           "token_compression_ratio", "transcribe", "word_anomaly_score"]

class WhisperTranscription(list):
    """:func:`transcribe`'s result: the list of :class:`WhisperSegment` (as before), with
    Whisper's ``text`` (the segments' texts joined) and ``language``."""

    def __init__(self, segments: Sequence[WhisperSegment] = (), language: str | None = None):
        super().__init__(segments)
        self.language = language

    @property
    def segments(self) -> list[WhisperSegment]:
        return list(self)

    @property
    def text(self) -> str:
        return "".join(segment.text for segment in self)

    def as_dict(self) -> dict:
        """Whisper's result dict: text, segments (dicts, their words dicts too), language."""
        segments = [{**s._asdict(), "id": i, "words": [w._asdict() for w in s.words]} for i, s in enumerate(self)]
        return {"text": self.text, "segments": segments, "language": self.language}


def _closed_until(tokens: list[int], specials: WhisperSpecialTokens) -> int:
    """The number of leading tokens that the last complete ``<|a|> text <|b|>`` segment ends."""
    opened, closed = False, 0
    for i, token in enumerate(tokens):
        if specials.is_timestamp(token):
            closed = i + 1 if opened else closed
            opened = not opened
    return closed


def _timestamped_window(tokens: list[int], specials: WhisperSpecialTokens, offset: float,
                        window_frames: int) -> tuple[list[WhisperSegment], list[int], int, bool]:
    """A window's segments, the tokens they took (the next prompt's), the frames to advance by,
    and whether it ended with a lone timestamp."""
    duration = window_frames * HOP_LENGTH / SAMPLE_RATE
    found = [s._replace(start=min(s.start, offset + duration), end=min(s.end, offset + duration))
             for s in timestamp_segments(tokens, specials, offset)]    # times past the audio: its end
    lone_ending = len(tokens) >= 2 and specials.is_timestamp(tokens[-1]) and not specials.is_timestamp(tokens[-2])
    if not found:
        # no complete pair: the whole window is one segment, ended by its last timestamp if any
        stamps = [t for t in tokens if specials.is_timestamp(t)]
        end = duration
        if stamps and stamps[-1] != specials.timestamp_begin:
            end = min(specials.seconds(stamps[-1]), duration)
        text = [t for t in tokens if t < specials.end_of_text]
        return [WhisperSegment(offset, offset + end, text)], tokens, window_frames, lone_ending
    if lone_ending:
        return found, tokens, window_frames, True
    advance = round((found[-1].end - offset) / TIME_PRECISION) * FRAMES_PER_TIMESTAMP
    return found, tokens[:_closed_until(tokens, specials)], advance if advance > 0 else window_frames, False


def _window_segments(result: WindowDecoding, specials: WhisperSpecialTokens, offset: float, window_frames: int,
                     timestamps: bool, tokenizer) -> tuple[list[WhisperSegment], list[int], int, bool]:
    """A decoded window's segments (with the decoding's measures), the tokens they took, the
    frames to advance by and whether word timestamps may move that (not after a lone timestamp)."""
    if timestamps:
        found, taken, advance, lone_ending = _timestamped_window(result.tokens, specials, offset, window_frames)
    else:
        text = [t for t in result.tokens if t < specials.end_of_text]
        found = [WhisperSegment(offset, offset + window_frames * HOP_LENGTH / SAMPLE_RATE, text)]
        taken, advance, lone_ending = result.tokens, window_frames, True
    found = [s._replace(text=tokenizer.decode(s.tokens) if tokenizer is not None else "",
                        avg_logprob=result.avg_logprob, compression_ratio=result.compression_ratio,
                        no_speech_prob=result.no_speech_prob, temperature=result.temperature) for s in found]
    return found, taken, advance, not lone_ending


FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH                     # 100 log-mel frames
HALLUCINATION_PUNCTUATION = PREPEND_PUNCTUATIONS + APPEND_PUNCTUATIONS


def seek_clips(clip_timestamps: str | Sequence[float] | None, content_frames: int) -> list[tuple[int, int]]:
    """Whisper's ``clip_timestamps``: 'start,end,start,end,...' seconds (or a sequence of them)
    -> (start, end) frame pairs, each time round(t * 100); none gives [(0, content_frames)],
    an odd count ends the last clip at ``content_frames``."""
    if isinstance(clip_timestamps, str):
        clip_timestamps = [float(t) for t in clip_timestamps.split(",")] if clip_timestamps.strip() else []
    points = [round(float(t) * FRAMES_PER_SECOND) for t in (clip_timestamps or [])]
    if not points:
        points.append(0)
    if len(points) % 2:
        points.append(content_frames)
    return list(zip(points[::2], points[1::2], strict=True))


def word_anomaly_score(word: WhisperWord) -> float:
    """Whisper's score of an unlikely word (duration = end - start):
    [probability < 0.15] + 15 (0.133 - duration) [duration < 0.133] + (duration - 2) [duration > 2]."""
    duration = word.end - word.start
    score = 1.0 if word.probability < 0.15 else 0.0
    if duration < 0.133:
        score += (0.133 - duration) * 15
    if duration > 2.0:
        score += duration - 2.0
    return score


def is_segment_anomaly(segment: WhisperSegment | None) -> bool:
    """Whisper's test of a likely hallucinated segment: of its first 8 words that are not
    punctuation (a word contained in Whisper's punctuation string), the sum of
    :func:`word_anomaly_score` is >= 3 or >= (their number - 0.01). False without words."""
    if segment is None or not segment.words:
        return False
    words = [w for w in segment.words if w.word not in HALLUCINATION_PUNCTUATION][:8]
    score = sum(word_anomaly_score(w) for w in words)
    return score >= 3 or score + 0.01 >= len(words)


def _next_with_words(segments: Sequence[WhisperSegment]) -> WhisperSegment | None:
    return next((s for s in segments if s.words), None)


def _last_end(segments: Sequence[WhisperSegment]) -> float | None:
    """Whisper's ``get_end``: the last word's end, else the last segment's end (None: no segments)."""
    ends = [w.end for s in segments for w in s.words]
    return ends[-1] if ends else segments[-1].end if segments else None


def skip_hallucinations(segments: Sequence[WhisperSegment], threshold: float, seek: int, previous_seek: int,
                        window_frames: int, seek_by_words: bool, last_speech_timestamp: float,
                        content_frames: int) -> tuple[int | None, int]:
    """Whisper's ``hallucination_silence_threshold`` for a window that starts at frame
    ``previous_seek`` (time_offset), holds ``window_frames`` of audio and has word-timed
    ``segments``; ``seek`` is where the next window would start. Returns (how many segments are
    kept, None to drop the whole window; the next seek):

    * unless the window ended with a lone timestamp, the next window starts at the last word's
      end if more than ``threshold`` s of the 30 s window remain after it, else after the window;
    * the window is dropped, the next one starting at its first worded segment, when that segment
      is an anomaly (:func:`is_segment_anomaly`) more than ``threshold`` s after time_offset;
    * the segments are cut before the first anomalous one with silence before (its start more
      than ``threshold`` after the previous speech, before ``threshold`` s, or less than 2 s into
      the window) and after (the next worded segment's first word more than ``threshold`` after
      its end, or that segment anomalous, or less than 2 s left of the 30 s window); the next
      window then starts at max(time_offset + 1, its start), or at the end of the audio if less
      than ``threshold`` s of it remain after that segment."""
    time_offset = previous_seek * HOP_LENGTH / SAMPLE_RATE
    window_end_time = (previous_seek + N_FRAMES) * HOP_LENGTH / SAMPLE_RATE
    segment_duration = window_frames * HOP_LENGTH / SAMPLE_RATE
    content_duration = content_frames * HOP_LENGTH / SAMPLE_RATE
    if seek_by_words:
        last_word_end = _last_end(segments)
        if last_word_end is not None and last_word_end > time_offset:
            if window_end_time - last_word_end > threshold:
                seek = round(last_word_end * FRAMES_PER_SECOND)
            else:
                seek = previous_seek + window_frames
    first = _next_with_words(segments)
    if first is not None and is_segment_anomaly(first):
        gap = first.start - time_offset
        if gap > threshold:
            return None, previous_seek + round(gap * FRAMES_PER_SECOND)
    last_end = last_speech_timestamp
    for index, segment in enumerate(segments):
        if not segment.words:
            continue
        if is_segment_anomaly(segment):
            following = _next_with_words(segments[index + 1:])
            next_start = following.words[0].start if following is not None else time_offset + segment_duration
            silence_before = (segment.start - last_end > threshold or segment.start < threshold
                              or segment.start - time_offset < 2.0)
            silence_after = (next_start - segment.end > threshold or is_segment_anomaly(following)
                             or window_end_time - segment.end < 2.0)
            if silence_before and silence_after:
                seek = round(max(time_offset + 1, segment.start) * FRAMES_PER_SECOND)
                if content_duration - segment.end < threshold:
                    seek = content_frames
                return index, seek
        last_end = segment.end
    return len(segments), seek


def _tokens_of_first(taken: list[int], segments: int, specials: WhisperSpecialTokens) -> list[int]:
    """The prompt tokens of a window's first ``segments`` complete ``<|a|> text <|b|>`` segments."""
    if segments == 0:
        return []
    opened, closed = False, 0
    for i, token in enumerate(taken):
        if specials.is_timestamp(token):
            closed += opened
            opened = not opened
            if closed == segments:
                return taken[:i + 1]
    return taken


def _initial_prompt(initial_prompt, tokenizer) -> list[int]:
    if initial_prompt is None:
        return []
    if isinstance(initial_prompt, str):
        if tokenizer is None:
            raise ValueError("transcribe: a text initial_prompt needs a tokenizer (or give token ids)")
        return [int(t) for t in tokenizer.encode(" " + initial_prompt.strip())]
    return [int(t) for t in initial_prompt]


def transcribe(model, audio, specials: WhisperSpecialTokens, language: str | None = None,
               task: str | None = "transcribe", return_timestamps: bool = True, max_new_tokens: int | None = None,
               max_initial_timestamp: float | None = 1.0, *, tokenizer=None,
               temperature: float | Sequence[float] = DEFAULT_TEMPERATURES,
               compression_ratio_threshold: float | None = 2.4, logprob_threshold: float | None = -1.0,
               no_speech_threshold: float | None = 0.6, condition_on_previous_text: bool = True,
               initial_prompt: str | Sequence[int] | None = None, prompt_reset_on_temperature: float = 0.5,
               best_of: int = 1, beam_width: int = 1, length_penalty: float | None = None,
               patience: float | None = None,
               suppress_tokens: Sequence[int] | None = None, begin_suppress_tokens: Sequence[int] | None = None,
               word_timestamps: bool = False, alignment_heads: Sequence[tuple[int, int]] | None = None,
               prepend_punctuations: str = PREPEND_PUNCTUATIONS, append_punctuations: str = APPEND_PUNCTUATIONS,
               seed: int | None = None, clip_timestamps: str | Sequence[float] | None = None,
               hallucination_silence_threshold: float | None = None) -> WhisperTranscription:
    """Transcribe 16 kHz ``audio`` (samples,) of any length with ``model`` (a :class:`Whisper`,
    whose ``config['num_mel_bins']`` sets the features), 30 s at a time, as openai-whisper's
    ``transcribe`` (see the module docstring for the fallback, silence and prompt rules).

    With ``return_timestamps``, sequential long form: a window starts at frame ``seek``; its
    complete segments are kept; if it ended with a lone timestamp ``seek`` moves past the whole
    window, otherwise to its last complete timestamp (the unfinished rest is decoded again in the
    next window; with word timestamps, to the end of its last word). Without, the windows are
    consecutive and each gives one segment. ``max_new_tokens`` defaults to half the decoder's
    positions (224 for the published models) less the prompt. ``tokenizer`` (``decode``, and
    ``encode`` for a text ``initial_prompt``) gives the texts and Whisper's compression ratio;
    it is needed for ``word_timestamps`` (see :func:`lamina.models.whisper_alignment.add_word_timestamps`,
    ``alignment_heads`` (layer, head) pairs, default all heads of the later half of the decoder).
    ``seed`` seeds the sampling at temperatures above 0. ``beam_width``, ``patience`` and
    ``length_penalty`` are Whisper's beam_size, patience and length_penalty (see
    :func:`decode_window`). ``clip_timestamps`` ('start,end,...' seconds or a sequence, see
    :func:`seek_clips`) limits the decoding to those ranges: a window starts no earlier than its
    clip's start and holds no audio past its end. ``hallucination_silence_threshold`` (s, with
    ``word_timestamps``) skips silence around likely hallucinations (:func:`skip_hallucinations`):
    a dropped window or segments leave no text and no prompt tokens. Returns a
    :class:`WhisperTranscription`."""
    who = "transcribe"
    samples = np.asarray(audio.numpy() if hasattr(audio, "numpy") else audio)
    if samples.ndim != 1:
        raise ValueError(f"{who}: expected mono audio (samples,), got shape {samples.shape}")
    temperatures = (temperature,) if isinstance(temperature, int | float) else tuple(temperature)
    previous = _initial_prompt(initial_prompt, tokenizer)
    if (condition_on_previous_text or previous) and specials.start_of_prev is None:
        raise ValueError(f"{who}: condition_on_previous_text and initial_prompt need the <|startofprev|> id "
                         f"(WhisperSpecialTokens.start_of_prev)")
    if word_timestamps and tokenizer is None:
        raise ValueError(f"{who}: word_timestamps needs a tokenizer (to split the tokens into words)")
    n_mels, n_ctx = model.config["num_mel_bins"], model.config["max_target_positions"]
    mel = whisper_log_mel_spectrogram(samples, n_mels, padding=CHUNK_SECONDS * SAMPLE_RATE).numpy()
    content_frames = mel.shape[-1] - N_FRAMES
    sot_prompt = specials.prompt_ids(language, task, timestamps=return_timestamps)
    steps = n_ctx // 2 - len(sot_prompt) if max_new_tokens is None else int(max_new_tokens)
    rng = np.random.default_rng(seed)
    decode_options = {"best_of": best_of, "beam_width": beam_width, "length_penalty": length_penalty,
                      "patience": patience,
                      "suppress_tokens": suppress_tokens, "begin_suppress_tokens": begin_suppress_tokens}
    segments, reset_since = WhisperTranscription(language=language), 0
    clips = seek_clips(clip_timestamps, content_frames)
    clip_index, seek, last_speech_timestamp = 0, clips[0][0], 0.0
    mode = model.training
    model.eval()
    try:
        with no_grad():
            while clip_index < len(clips):
                clip_start, clip_end = clips[clip_index]
                seek = max(seek, clip_start)
                if seek >= clip_end:
                    clip_index += 1
                    seek = clips[clip_index][0] if clip_index < len(clips) else seek
                    continue
                offset = seek * HOP_LENGTH / SAMPLE_RATE
                window_frames = min(N_FRAMES, content_frames - seek, clip_end - seek)
                window = np.zeros((1, n_mels, N_FRAMES), dtype=mel.dtype)
                window[0, :, :window_frames] = mel[:, seek:seek + window_frames]
                context = previous[reset_since:][-(n_ctx // 2 - 1):]
                prompt = ([specials.start_of_prev, *context] if context else []) + sot_prompt
                rules = None if not return_timestamps else \
                    WhisperTimestampRules(specials, len(prompt), max_initial_timestamp)
                encoded = model.encode(window)
                decode_at = partial(decode_window, model, window, prompt, specials, encoded=encoded, rng=rng,
                                    max_new_tokens=min(steps, n_ctx - len(prompt)), logits_processor=rules,
                                    tokenizer=tokenizer, **decode_options)
                result = decode_with_fallback(lambda t, decode_at=decode_at: decode_at(temperature=t), temperatures,
                                              compression_ratio_threshold, logprob_threshold, no_speech_threshold)
                if is_silent(result, no_speech_threshold, logprob_threshold):
                    seek += window_frames
                    continue
                found, taken, advance, seek_by_words = _window_segments(result, specials, offset, window_frames,
                                                                       return_timestamps, tokenizer)
                previous_seek, seek = seek, seek + advance
                if word_timestamps:
                    found = add_word_timestamps(model, window, found, specials, tokenizer, language, task,
                                                window_frames, offset, alignment_heads, prepend_punctuations,
                                                append_punctuations, encoded=encoded,
                                                last_speech_timestamp=last_speech_timestamp)
                    last_end = _last_end(found)
                    if seek_by_words and last_end is not None and last_end > offset:
                        seek = round(last_end * FRAMES_PER_SECOND)
                    if hallucination_silence_threshold is not None:
                        kept, seek = skip_hallucinations(found, hallucination_silence_threshold, seek, previous_seek,
                                                         window_frames, seek_by_words, last_speech_timestamp,
                                                         content_frames)
                        if kept is None:
                            continue
                        if kept < len(found):
                            found, taken = found[:kept], _tokens_of_first(taken, kept, specials)
                    last_end = _last_end(found)
                    last_speech_timestamp = last_speech_timestamp if last_end is None else last_end
                segments.extend(found)
                previous.extend(taken)
                if not condition_on_previous_text or result.temperature > prompt_reset_on_temperature:
                    reset_since = len(previous)
    finally:
        model.train(mode)
    return segments
