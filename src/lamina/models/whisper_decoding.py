"""Whisper's special tokens, timestamp decoding and sequential long-form transcription.

Whisper's vocabulary ends in added tokens: <|endoftext|>, <|startoftranscript|>, one token per
language (<|en|>, <|zh|>, ...), <|translate|>, <|transcribe|>, <|startoflm|>, <|startofprev|>,
<|nocaptions|>, <|notimestamps|>, then the timestamps <|0.00|>, <|0.02|>, ..., <|30.00|>: token
``timestamp_begin + i`` marks i * 0.02 s from the start of the 30 s window. A prompt is

    [<|startoftranscript|>, <|language|>, <|task|>]  (+ <|notimestamps|> without timestamps)

and a timestamped transcription reads ``<|t0|> text <|t1|><|t1|> text <|t2|> ... <|endoftext|>``.

Timestamp rules (:class:`WhisperTimestampRules`), applied to each step's scores:

* <|notimestamps|> is never generated;
* timestamps come in pairs: a timestamp after text ends a segment, and after it comes the next
  segment's opening timestamp or <|endoftext|>; after two timestamps in a row comes text;
* timestamps never decrease: the one right after a segment's end may repeat it, any other is
  later than the last;
* the first token is a timestamp, at most ``max_initial_timestamp`` seconds;
* if log sum_{timestamps} p > max_{text} log p, only a timestamp may follow.

:func:`lamina.models.whisper_transcribe.transcribe` decodes audio of any length window by
window (sequential long form).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from lamina.models.whisper_features import HOP_LENGTH, SAMPLE_RATE

__all__ = ["WhisperSegment", "WhisperSpecialTokens", "WhisperTimestampRules", "WhisperWord",
           "decode_with_timestamps", "generate_with_timestamps", "timestamp_segments"]

TIME_PRECISION = 0.02                      # seconds per timestamp token
N_TIMESTAMPS = 1501                        # <|0.00|> .. <|30.00|>
FRAMES_PER_TIMESTAMP = round(TIME_PRECISION * SAMPLE_RATE / HOP_LENGTH)     # 2 log-mel frames
WHISPER_LANGUAGES = ("en", "zh", "de", "es", "ru", "ko", "fr", "ja", "pt", "tr", "pl", "ca", "nl", "ar", "sv",
                     "it", "id", "hi", "fi", "vi", "he", "uk", "el", "ms", "cs", "ro", "da", "hu", "ta", "no",
                     "th", "ur", "hr", "bg", "lt", "la", "mi", "ml", "cy", "sk", "te", "fa", "lv", "bn", "sr",
                     "az", "sl", "kn", "et", "mk", "br", "eu", "is", "hy", "ne", "mn", "bs", "kk", "sq", "sw",
                     "gl", "mr", "pa", "si", "km", "sn", "yo", "so", "af", "oc", "ka", "be", "tg", "sd", "gu",
                     "am", "yi", "lo", "uz", "fo", "ht", "ps", "tk", "nn", "mt", "sa", "lb", "my", "bo", "tl",
                     "mg", "as", "tt", "haw", "ln", "ha", "ba", "jw", "su", "yue")
"""Whisper's language codes in the order of their tokens (<|en|> comes first)."""


class WhisperWord(NamedTuple):
    """A word of a transcription: its text (with its leading space), ``start`` and ``end`` in
    seconds, the mean probability of its ``tokens``."""
    word: str
    start: float
    end: float
    probability: float
    tokens: tuple[int, ...] = ()


class WhisperSegment(NamedTuple):
    """A stretch of transcription: ``start`` and ``end`` in seconds, its text ``tokens``.
    :func:`~lamina.models.whisper_transcribe.transcribe` fills the rest as Whisper's segment
    dicts: the decoded ``text`` (given a tokenizer), and of the window's decoding the
    ``avg_logprob``, ``compression_ratio``, ``no_speech_prob`` and ``temperature``; ``words``
    with word timestamps."""
    start: float
    end: float
    tokens: list[int]
    text: str = ""
    avg_logprob: float | None = None
    compression_ratio: float | None = None
    no_speech_prob: float | None = None
    temperature: float | None = None
    words: tuple[WhisperWord, ...] = ()


@dataclass(frozen=True)
class WhisperSpecialTokens:
    """The ids of Whisper's special tokens. ``languages`` maps a code ('en') to its token id;
    ``timestamp_begin`` is the id of <|0.00|>, followed by ``n_timestamps`` - 1 more;
    ``no_captions`` is <|nocaptions|> (<|nospeech|>), ``start_of_prev`` <|startofprev|>, which
    opens the previous text in a prompt."""
    end_of_text: int
    start_of_transcript: int
    transcribe: int
    translate: int
    no_timestamps: int
    timestamp_begin: int
    no_captions: int | None = None
    languages: Mapping[str, int] = field(default_factory=dict)
    n_timestamps: int = N_TIMESTAMPS
    start_of_prev: int | None = None

    @classmethod
    def from_tokenizer(cls, tokenizer) -> WhisperSpecialTokens:
        """The ids a tokenizer with Whisper's added tokens (``token_to_id``, e.g.
        :class:`lamina.text.HFTokenizer`) gives them; <|nocaptions|> is <|nospeech|> in newer
        vocabularies."""
        def required(token: str) -> int:
            found = tokenizer.token_to_id(token)
            if found is None:
                raise ValueError(f"WhisperSpecialTokens.from_tokenizer: the tokenizer has no {token} token")
            return int(found)

        no_captions = tokenizer.token_to_id("<|nocaptions|>")
        if no_captions is None:
            no_captions = tokenizer.token_to_id("<|nospeech|>")
        languages = {code: int(i) for code in WHISPER_LANGUAGES
                     if (i := tokenizer.token_to_id(f"<|{code}|>")) is not None}
        start_of_prev = tokenizer.token_to_id("<|startofprev|>")
        return cls(required("<|endoftext|>"), required("<|startoftranscript|>"), required("<|transcribe|>"),
                   required("<|translate|>"), required("<|notimestamps|>"), required("<|0.00|>"), no_captions,
                   languages, start_of_prev=None if start_of_prev is None else int(start_of_prev))

    def prompt_ids(self, language: str | None = None, task: str | None = "transcribe",
                   timestamps: bool = False) -> list[int]:
        """[<|startoftranscript|>, <|language|>, <|task|>] (language and task left out when
        None), then <|notimestamps|> unless ``timestamps``."""
        ids = [self.start_of_transcript]
        if language is not None:
            if language not in self.languages:
                raise ValueError(f"WhisperSpecialTokens.prompt_ids: unknown language {language!r}; known: "
                                 f"{sorted(self.languages)}")
            ids.append(self.languages[language])
        if task is not None:
            if task not in ("transcribe", "translate"):
                raise ValueError(f"WhisperSpecialTokens.prompt_ids: task must be 'transcribe' or 'translate', "
                                 f"got {task!r}")
            ids.append(self.transcribe if task == "transcribe" else self.translate)
        if not timestamps:
            ids.append(self.no_timestamps)
        return ids

    def is_timestamp(self, token: int) -> bool:
        return self.timestamp_begin <= token < self.timestamp_begin + self.n_timestamps

    def timestamp_id(self, seconds: float) -> int:
        """The id of the timestamp token nearest ``seconds`` (0 .. 30 s)."""
        index = round(seconds / TIME_PRECISION)
        if not 0 <= index < self.n_timestamps:
            raise ValueError(f"WhisperSpecialTokens.timestamp_id: {seconds} s is outside 0 .. "
                             f"{(self.n_timestamps - 1) * TIME_PRECISION:.2f} s")
        return self.timestamp_begin + index

    def seconds(self, token: int) -> float:
        """The time (s) a timestamp token marks."""
        return (token - self.timestamp_begin) * TIME_PRECISION


class WhisperTimestampRules:
    """Whisper's timestamp rules (see the module docstring) as a logits processor for
    :meth:`Whisper.generate`: ``rules(ids (B, t), scores (B, V))`` -> new scores. The first
    ``prompt_length`` ids of each row are the prompt."""

    def __init__(self, specials: WhisperSpecialTokens, prompt_length: int, max_initial_timestamp: float | None = 1.0):
        self.specials = specials
        self.prompt_length = int(prompt_length)
        self.max_initial_index = None if max_initial_timestamp is None else round(
            max_initial_timestamp / TIME_PRECISION)

    def __call__(self, ids, scores) -> np.ndarray:
        ids, scores = np.asarray(ids), np.array(scores, dtype=np.float64)
        if ids.ndim != 2 or scores.ndim != 2 or len(ids) != len(scores):
            raise ValueError(f"WhisperTimestampRules: expected ids (B, t) and scores (B, V) of the same batch, got "
                             f"{ids.shape} and {scores.shape}")
        begin = self.specials.timestamp_begin
        scores[:, self.specials.no_timestamps] = -np.inf
        for row, tokens in zip(scores, ids[:, self.prompt_length:], strict=True):
            self._pairs_and_order(row, [int(t) for t in tokens])
        if ids.shape[1] == self.prompt_length:
            scores[:, :begin] = -np.inf
            if self.max_initial_index is not None:
                scores[:, begin + self.max_initial_index + 1:] = -np.inf
        for row in scores:
            log_p = row - _log_sum_exp(row)
            if _log_sum_exp(log_p[begin:]) > log_p[:begin].max():
                row[:begin] = -np.inf
        return scores

    def _pairs_and_order(self, row: np.ndarray, tokens: list[int]) -> None:
        begin, is_timestamp = self.specials.timestamp_begin, self.specials.is_timestamp
        last = bool(tokens) and is_timestamp(tokens[-1])
        before_last = len(tokens) < 2 or is_timestamp(tokens[-2])
        segment_ended = last and not before_last
        if last:
            if before_last:
                row[begin:] = -np.inf                          # two timestamps in a row: text next
            else:
                row[:self.specials.end_of_text] = -np.inf     # a segment ended: the next one's start or the end
        stamps = [t for t in tokens if is_timestamp(t)]
        if stamps:
            row[begin:stamps[-1] + (0 if segment_ended else 1)] = -np.inf


def _log_sum_exp(x: np.ndarray) -> float:
    top = x.max()
    return float(top) if not np.isfinite(top) else float(top + np.log(np.exp(x - top).sum()))


def timestamp_segments(tokens: Sequence[int], specials: WhisperSpecialTokens,
                       time_offset: float = 0.0) -> list[WhisperSegment]:
    """The complete segments ``<|a|> text <|b|>`` of a timestamped transcription (the prompt
    and <|endoftext|> may be present; other special tokens are skipped): times in seconds plus
    ``time_offset``. An unclosed segment at the end is left out."""
    segments, start, text = [], None, []
    for token in (int(t) for t in tokens):
        if specials.is_timestamp(token):
            if start is None:
                start, text = specials.seconds(token), []
            else:
                segments.append(WhisperSegment(time_offset + start, time_offset + specials.seconds(token), text))
                start = None
        elif start is not None and token < specials.end_of_text:
            text.append(token)
    return segments


def decode_with_timestamps(tokenizer, tokens: Sequence[int], specials: WhisperSpecialTokens) -> str:
    """The text of ``tokens`` with each timestamp written as <|1.24|> (other special tokens
    dropped), e.g. '<|0.00|> Hello world.<|1.24|>'."""
    parts, text = [], []
    for token in (int(t) for t in tokens):
        if specials.is_timestamp(token) or token >= specials.end_of_text:
            if text:
                parts.append(tokenizer.decode(text))
                text = []
            if specials.is_timestamp(token):
                parts.append(f"<|{specials.seconds(token):.2f}|>")
        else:
            text.append(token)
    if text:
        parts.append(tokenizer.decode(text))
    return "".join(parts)


def generate_with_timestamps(model, input_features, specials: WhisperSpecialTokens, language: str | None = None,
                             task: str | None = "transcribe", max_initial_timestamp: float | None = 1.0,
                             **options) -> np.ndarray:
    """:meth:`Whisper.generate` with a timestamped prompt and :class:`WhisperTimestampRules`;
    ``options`` go to ``generate`` (max_new_tokens, suppress_tokens, beam_width, ...)."""
    prompt = specials.prompt_ids(language, task, timestamps=True)
    rules = WhisperTimestampRules(specials, len(prompt), max_initial_timestamp)
    return model.generate(input_features, decoder_prompt_ids=prompt, logits_processor=rules, **options)
