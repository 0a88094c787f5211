"""Whisper's long-form transcription (openai-whisper's ``transcribe``): sequential 30 s windows
with temperature fallback, silence skipping, the previous text as a prompt and word timestamps.

Each window is decoded by :func:`decode_window` at a temperature T: greedy (T = 0), beam search
(T = 0 and ``beam_width`` > 1) or ``best_of`` samples from softmax(scores / T), the best of them
by sum log p / length. Of the decoded tokens y_1 .. y_n (the end token y_{n+1} not counted):

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

import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from lamina.autograd import Tensor, no_grad
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
    timestamp_segments,
)
from lamina.models.whisper_features import CHUNK_SECONDS, HOP_LENGTH, N_FRAMES, SAMPLE_RATE, whisper_log_mel_spectrogram

__all__ = ["DEFAULT_TEMPERATURES", "WhisperTranscription", "WindowDecoding", "compression_ratio", "decode_window",
           "decode_with_fallback", "token_compression_ratio", "transcribe"]

DEFAULT_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def compression_ratio(text: str) -> float:
    """Whisper's repetition measure: len(b) / len(zlib.compress(b)), b the UTF-8 bytes of ``text``."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def token_compression_ratio(tokens: Sequence[int], vocab_size: int) -> float:
    """The compression ratio of token ids, each written in floor(log2(vocab_size) / 8) + 1
    little-endian bytes (Hugging Face's measure when no text is at hand)."""
    width = int(math.log2(vocab_size) / 8) + 1
    data = b"".join(int(t).to_bytes(width, "little") for t in tokens)
    return len(data) / len(zlib.compress(data)) if data else 0.0


@dataclass(frozen=True)
class WindowDecoding:
    """One window's decoding: the ``tokens`` after the prompt (the end token left out), their
    ``sum_logprob`` (with the end token's), ``no_speech_prob`` (None without a <|nocaptions|>
    token), the ``temperature``, ``compression_ratio`` and ``text`` ('' without a tokenizer)."""
    tokens: list[int]
    sum_logprob: float
    no_speech_prob: float | None
    temperature: float
    compression_ratio: float
    text: str = ""
    ended: bool = True

    @property
    def avg_logprob(self) -> float:
        """sum_logprob / (len(tokens) + 1), as Whisper."""
        return self.sum_logprob / (len(self.tokens) + 1)


def _array(x) -> np.ndarray:
    return x.numpy() if isinstance(x, Tensor) else np.asarray(x)


def _log_softmax(scores: np.ndarray) -> np.ndarray:
    top = scores.max(axis=-1, keepdims=True)
    shifted = scores - np.where(np.isfinite(top), top, 0.0)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _mask(tokens: Sequence[int] | None, vocab_size: int) -> np.ndarray:
    mask = np.zeros(vocab_size, dtype=bool)
    if tokens is not None:
        mask[np.asarray(list(tokens), dtype=np.int64)] = True
    return mask


class _Filter:
    """The scores -> log-probabilities of one step: suppression (``begin`` at the first new
    token), then the logits processor, then log-softmax."""

    def __init__(self, vocab_size: int, prompt_length: int, suppress, begin_suppress, processor: Callable | None):
        self.suppress = _mask(suppress, vocab_size)
        self.begin = self.suppress | _mask(begin_suppress, vocab_size)
        self.prompt_length, self.processor = prompt_length, processor

    def __call__(self, ids: np.ndarray, logits: np.ndarray) -> np.ndarray:
        scores = logits.astype(np.float64)
        scores[:, self.begin if ids.shape[1] == self.prompt_length else self.suppress] = -np.inf
        if self.processor is not None:
            scores = np.asarray(self.processor(ids, scores), dtype=np.float64)
        return _log_softmax(scores)


def _no_speech_prob(logits: np.ndarray, prompt: Sequence[int], specials: WhisperSpecialTokens) -> float | None:
    if specials.no_captions is None or specials.start_of_transcript not in prompt:
        return None
    sot_index = len(prompt) - 1 - list(prompt)[::-1].index(specials.start_of_transcript)
    return float(np.exp(_log_softmax(logits[0, sot_index].astype(np.float64))[specials.no_captions]))


def _sample(model, encoded, prompt: np.ndarray, steps: int, temperature: float, n: int, filters: _Filter,
            end: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``n`` rows decoded together on the cache: (ids, sum log p, ended, the prompt's logits)."""
    memory = encoded if n == 1 else Tensor(np.repeat(_array(encoded), n, axis=0))
    ids = np.repeat(prompt[None, :], n, axis=0)
    caches = [{} for _ in range(model.config["decoder_layers"])]
    logits = _array(model.decode(ids, memory, caches, 0))
    prompt_logits = logits
    total, done = np.zeros(n), np.zeros(n, dtype=bool)
    for step in range(steps):
        log_p = filters(ids, logits[:, -1])
        if temperature == 0:
            token = log_p.argmax(axis=-1)
        else:
            p = np.exp((log_p - log_p.max(axis=-1, keepdims=True)) / temperature)
            cumulative = np.cumsum(p, axis=-1)
            cumulative /= cumulative[:, -1:]
            token = (cumulative > rng.random(n)[:, None]).argmax(axis=-1)
        token = np.where(done, end, token)
        total += np.where(done, 0.0, log_p[np.arange(n), token])
        ids = np.concatenate([ids, token[:, None]], axis=1)
        done |= token == end
        if done.all() or step == steps - 1:
            break
        logits = _array(model.decode(ids[:, -1:], memory, caches, ids.shape[1] - 1))
    return ids, total, done, prompt_logits


def _score(model, encoded, prompt: list[int], tokens: list[int], ended: bool, filters: _Filter,
           end: int) -> tuple[float, np.ndarray]:
    """The summed log-probability of ``tokens`` (+ the end token when ``ended``) read in one pass,
    and the pass's logits."""
    full = np.asarray([prompt + tokens + ([end] if ended else [])], dtype=np.int64)
    logits = _array(model.decode(full[:, :-1], encoded))
    total = 0.0
    for k in range(len(prompt), full.shape[1]):
        total += float(filters(full[:, :k], logits[:, k - 1])[0, full[0, k]])
    return total, logits


def _until_end(row: Sequence[int], end: int) -> tuple[list[int], bool]:
    tokens = []
    for token in (int(t) for t in row):
        if token == end:
            return tokens, True
        tokens.append(token)
    return tokens, False


def decode_window(model, features, prompt: Sequence[int], specials: WhisperSpecialTokens, *, max_new_tokens: int,
                  temperature: float = 0.0, best_of: int = 1, beam_width: int = 1, length_penalty: float = 0.0,
                  suppress_tokens: Sequence[int] | None = None, begin_suppress_tokens: Sequence[int] | None = None,
                  logits_processor: Callable | None = None, tokenizer=None, rng: np.random.Generator | None = None,
                  encoded=None) -> WindowDecoding:
    """Decode one window's ``features`` (1, num_mel_bins, frames) after ``prompt`` (see the module
    docstring). ``model`` has ``encode(features)``, ``decode(ids, encoded, caches=None, offset=0)``
    -> logits (B, t, vocab), ``generate`` (beam search) and ``config['decoder_layers']``;
    ``encoded`` skips the encoder when given."""
    who = "decode_window"
    if temperature < 0:
        raise ValueError(f"{who}: temperature must be >= 0, got {temperature}")
    if best_of < 1 or beam_width < 1:
        raise ValueError(f"{who}: best_of and beam_width must be >= 1, got {best_of} and {beam_width}")
    rng = np.random.default_rng() if rng is None else rng
    prompt_ids = [int(t) for t in prompt]
    encoded = model.encode(features) if encoded is None else encoded
    end = specials.end_of_text
    vocab_size = model.config["vocab_size"]
    filters = _Filter(vocab_size, len(prompt_ids), suppress_tokens, begin_suppress_tokens, logits_processor)
    if temperature == 0 and beam_width > 1:
        row = model.generate(features, max_new_tokens=max_new_tokens, decoder_prompt_ids=prompt_ids,
                             beam_width=beam_width, suppress_tokens=suppress_tokens,
                             begin_suppress_tokens=begin_suppress_tokens, length_penalty=length_penalty,
                             logits_processor=logits_processor)[0]
        tokens, ended = _until_end(row[len(prompt_ids):], end)
        total, logits = _score(model, encoded, prompt_ids, tokens, ended, filters, end)
    else:
        n = best_of if temperature > 0 else 1
        ids, totals, done, logits = _sample(model, encoded, np.asarray(prompt_ids, dtype=np.int64), max_new_tokens,
                                            temperature, n, filters, end, rng)
        rows = [_until_end(row[len(prompt_ids):], end) for row in ids]
        best = int(np.argmax([totals[i] / max(len(rows[i][0]), 1) for i in range(n)]))
        (tokens, ended), total = rows[best], float(totals[best])
    text_tokens = [t for t in tokens if t < end]
    if tokenizer is not None:
        text = tokenizer.decode(text_tokens).strip()
        ratio = compression_ratio(text)
    else:
        text, ratio = "", token_compression_ratio(text_tokens, vocab_size)
    return WindowDecoding(tokens, total, _no_speech_prob(logits, prompt_ids, specials), float(temperature), ratio,
                          text, ended)


def _silent(result: WindowDecoding, no_speech_threshold: float | None, logprob_threshold: float | None) -> bool:
    return (no_speech_threshold is not None and result.no_speech_prob is not None
            and result.no_speech_prob > no_speech_threshold
            and logprob_threshold is not None and result.avg_logprob < logprob_threshold)


def decode_with_fallback(decode_at: Callable[[float], WindowDecoding], temperatures: Sequence[float],
                         compression_ratio_threshold: float | None = 2.4, logprob_threshold: float | None = -1.0,
                         no_speech_threshold: float | None = 0.6) -> WindowDecoding:
    """``decode_at(t)`` for t in ``temperatures`` until a result passes (see the module
    docstring); the last result when none does."""
    if not len(temperatures):
        raise ValueError("decode_with_fallback: temperatures is empty")
    for t in temperatures:
        result = decode_at(float(t))
        ratio = result.compression_ratio
        too_repetitive = compression_ratio_threshold is not None and ratio > compression_ratio_threshold
        unlikely = logprob_threshold is not None and result.avg_logprob < logprob_threshold
        if not (too_repetitive or unlikely) or _silent(result, no_speech_threshold, logprob_threshold):
            break
    return result


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
               best_of: int = 1, beam_width: int = 1, length_penalty: float = 0.0,
               suppress_tokens: Sequence[int] | None = None, begin_suppress_tokens: Sequence[int] | None = None,
               word_timestamps: bool = False, alignment_heads: Sequence[tuple[int, int]] | None = None,
               prepend_punctuations: str = PREPEND_PUNCTUATIONS, append_punctuations: str = APPEND_PUNCTUATIONS,
               seed: int | None = None) -> WhisperTranscription:
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
    ``seed`` seeds the sampling at temperatures above 0. Returns a :class:`WhisperTranscription`."""
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
                      "suppress_tokens": suppress_tokens, "begin_suppress_tokens": begin_suppress_tokens}
    segments, reset_since, seek = WhisperTranscription(language=language), 0, 0
    mode = model.training
    model.eval()
    try:
        with no_grad():
            while seek < content_frames:
                offset = seek * HOP_LENGTH / SAMPLE_RATE
                window_frames = min(N_FRAMES, content_frames - seek)
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
                if _silent(result, no_speech_threshold, logprob_threshold):
                    seek += window_frames
                    continue
                found, taken, advance, seek_by_words = _window_segments(result, specials, offset, window_frames,
                                                                       return_timestamps, tokenizer)
                if word_timestamps:
                    found = add_word_timestamps(model, window, found, specials, tokenizer, language, task,
                                                window_frames, offset, alignment_heads, prepend_punctuations,
                                                append_punctuations, encoded=encoded)
                    ends = [w.end for s in found for w in s.words]
                    if seek_by_words and ends and ends[-1] > offset:
                        advance = round(ends[-1] * SAMPLE_RATE / HOP_LENGTH) - seek
                segments.extend(found)
                previous.extend(taken)
                if not condition_on_previous_text or result.temperature > prompt_reset_on_temperature:
                    reset_since = len(previous)
                seek += advance
    finally:
        model.train(mode)
    return segments
