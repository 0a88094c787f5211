"""Word-level timestamps for Whisper from its cross-attention (openai-whisper's ``find_alignment``).

The decoder reads [<|startoftranscript|>, <|language|>, <|task|>, <|notimestamps|>, text, <|endoftext|>]
once. For each chosen alignment head (layer, head) (default: every head of the later half of
the decoder layers, as Whisper when a model names none), its cross-attention scores over the
window's first ``num_frames / 2`` encoder positions (20 ms each) are

    W = softmax over positions of the scores
    W = (W - mean) / std          mean and (biased) std over the tokens, per head and position
    W = median filter of width 7 along the positions (reflect padding)

then averaged over the heads; the rows from <|notimestamps|> to the last text token (the
attention while each text token is predicted, and the end) form the matrix M. Dynamic time
warping (:func:`dtw`) finds the monotone path through -M of least total cost; the time of a
token is the position where the path first enters its row, times 0.02 s. A word (tokens
grouped by :func:`split_to_word_tokens`) runs from its first token's time to the next word's;
its probability is the mean probability of its tokens (softmax over the text tokens).
:func:`merge_punctuations` joins leading punctuation to the next word and trailing punctuation
to the previous one, as Whisper. :func:`add_word_timestamps` then applies Whisper's word
duration heuristics (over-long words cut at sentence ends, after pauses and at segment
boundaries; see :func:`fit_segment_to_words`).
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from lamina.autograd import Tensor
from lamina.models.whisper_decoding import TIME_PRECISION, WhisperSegment, WhisperSpecialTokens, WhisperWord

__all__ = ["APPEND_PUNCTUATIONS", "PREPEND_PUNCTUATIONS", "SENTENCE_END_MARKS", "WordTiming", "add_word_timestamps",
           "default_alignment_heads", "dtw", "find_alignment", "fit_segment_to_words", "median_filter",
           "merge_punctuations", "split_to_word_tokens", "truncate_at_sentence_ends", "word_duration_limits"]

PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"
MEDIAN_FILTER_WIDTH = 7
SPACELESS_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "my", "yue"})
"""Languages whose words are not split on spaces: each whole character is a word."""


@dataclass
class WordTiming:
    """A word while it is being aligned (mutable, for :func:`merge_punctuations`)."""
    word: str
    tokens: list[int] = field(default_factory=list)
    start: float = 0.0
    end: float = 0.0
    probability: float = 0.0


def median_filter(x: np.ndarray, width: int = MEDIAN_FILTER_WIDTH) -> np.ndarray:
    """The running median of odd ``width`` along the last axis, the ends padded by reflection
    (x[2], x[1], x[0], x[1], ...); ``x`` unchanged when the axis has at most width // 2 entries."""
    if width < 1 or width % 2 == 0:
        raise ValueError(f"median_filter: width must be a positive odd number, got {width}")
    x = np.asarray(x)
    pad = width // 2
    if x.shape[-1] <= pad:
        return x
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode="reflect")
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, width, axis=-1), axis=-1)


def dtw(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The monotone path (steps (1, 1), (1, 0), (0, 1)) from (0, 0) to (N - 1, M - 1) through
    ``cost`` (N, M) of least total cost: (row indices, column indices), one entry per cell
    visited. Ties go to the (0, 1) step, then the (1, 0) one, as Whisper. The table is filled
    one anti-diagonal at a time."""
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2 or not cost.size:
        raise ValueError(f"dtw: expected a non-empty matrix (N, M), got shape {cost.shape}")
    n, m = cost.shape
    total = np.full((n + 1, m + 1), np.inf)
    total[0, 0] = 0.0
    trace = np.zeros((n + 1, m + 1), dtype=np.int8)
    for diagonal in range(2, n + m + 1):
        i = np.arange(max(1, diagonal - m), min(n, diagonal - 1) + 1)
        j = diagonal - i
        both, down, right = total[i - 1, j - 1], total[i - 1, j], total[i, j - 1]
        step = np.where((both < down) & (both < right), 0, np.where((down < both) & (down < right), 1, 2))
        total[i, j] = cost[i - 1, j - 1] + np.choose(step, [both, down, right])
        trace[i, j] = step
    rows, columns = [], []
    i, j = n, m
    while i > 0 and j > 0:
        rows.append(i - 1)
        columns.append(j - 1)
        step = trace[i, j]
        i, j = (i - 1, j - 1) if step == 0 else (i - 1, j) if step == 1 else (i, j - 1)
    return np.asarray(rows[::-1]), np.asarray(columns[::-1])


def default_alignment_heads(num_layers: int, num_heads: int) -> list[tuple[int, int]]:
    """Every (layer, head) of the later half of the decoder layers."""
    return [(layer, head) for layer in range(num_layers // 2, num_layers) for head in range(num_heads)]


def _split_on_unicode(tokenizer, tokens: list[int]) -> tuple[list[str], list[list[int]]]:
    """Tokens grouped so that each group decodes to whole characters."""
    full = tokenizer.decode(tokens)
    words, groups, current, offset = [], [], [], 0
    for token in tokens:
        current.append(token)
        decoded = tokenizer.decode(current)
        broken = decoded.find("\ufffd")
        if broken < 0 or (offset + broken < len(full) and full[offset + broken] == "\ufffd"):
            words.append(decoded)
            groups.append(current)
            current, offset = [], offset + len(decoded)
    return words, groups


def split_to_word_tokens(tokenizer, tokens: Sequence[int], language: str | None = None,
                         end_of_text: int | None = None) -> tuple[list[str], list[list[int]]]:
    """Whisper's words of text ``tokens``: groups of whole characters; for space-delimited
    languages, a group starts a new word when it begins with a space, is punctuation, or is a
    special token (id >= ``end_of_text``), otherwise it joins the previous word."""
    pieces, groups = _split_on_unicode(tokenizer, [int(t) for t in tokens])
    if language in SPACELESS_LANGUAGES:
        return pieces, groups
    words: list[str] = []
    word_tokens: list[list[int]] = []
    for piece, group in zip(pieces, groups, strict=True):
        special = end_of_text is not None and group[0] >= end_of_text
        if special or piece.startswith(" ") or piece.strip() in string.punctuation or not words:
            words.append(piece)
            word_tokens.append(list(group))
        else:
            words[-1] += piece
            word_tokens[-1].extend(group)
    return words, word_tokens


def merge_punctuations(words: list[WordTiming], prepended: str = PREPEND_PUNCTUATIONS,
                       appended: str = APPEND_PUNCTUATIONS) -> None:
    """In place: a word ' x' with x in ``prepended`` joins the word after it (walking back from
    the end), a word in ``appended`` joins the word before it unless that ends with a space;
    an emptied word keeps its place with word '' and no tokens."""
    following = len(words) - 1
    for i in range(len(words) - 2, -1, -1):
        previous, after = words[i], words[following]
        if previous.word.startswith(" ") and previous.word.strip() in prepended:
            after.word, after.tokens = previous.word + after.word, previous.tokens + after.tokens
            previous.word, previous.tokens = "", []
        else:
            following = i
    kept = 0
    for j in range(1, len(words)):
        previous, after = words[kept], words[j]
        if not previous.word.endswith(" ") and after.word in appended:
            previous.word, previous.tokens = previous.word + after.word, previous.tokens + after.tokens
            after.word, after.tokens = "", []
        else:
            kept = j


def _softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def find_alignment(model, features, specials: WhisperSpecialTokens, text_tokens: Sequence[int], num_frames: int,
                   tokenizer, language: str | None = None, task: str | None = "transcribe",
                   alignment_heads: Sequence[tuple[int, int]] | None = None,
                   median_filter_width: int = MEDIAN_FILTER_WIDTH, encoded=None) -> list[WordTiming]:
    """The words of ``text_tokens`` with their times (s from the window's start) and
    probabilities (see the module docstring); ``num_frames`` the window's log-mel frames of
    audio. ``model.decode`` must take ``cross_attention_scores`` (see :meth:`Whisper.decode`)."""
    text = [int(t) for t in text_tokens]
    if not text:
        return []
    prompt = specials.prompt_ids(language, task, timestamps=False)
    start = len(prompt) - 1                                  # the <|notimestamps|> position
    tokens = np.asarray([prompt + text + [specials.end_of_text]], dtype=np.int64)
    encoded = model.encode(features) if encoded is None else encoded
    scores: list = []
    logits = model.decode(tokens, encoded, cross_attention_scores=scores)
    logits = logits.numpy() if isinstance(logits, Tensor) else np.asarray(logits)
    probs = _softmax(logits[0, start:start + len(text), :specials.end_of_text].astype(np.float64))
    token_probs = probs[np.arange(len(text)), text]
    layers, heads = len(scores), scores[0].shape[1]
    chosen = default_alignment_heads(layers, heads) if alignment_heads is None else list(alignment_heads)
    for layer, head in chosen:
        if not (0 <= layer < layers and 0 <= head < heads):
            raise ValueError(f"find_alignment: alignment head ({layer}, {head}) is outside the decoder's {layers} "
                             f"layers of {heads} heads")
    positions = max(num_frames // 2, 1)
    weights = np.stack([scores[layer][0, head, :, :positions] for layer, head in chosen]).astype(np.float64)
    weights = _softmax(weights)
    spread = weights.std(axis=-2, keepdims=True)
    weights = (weights - weights.mean(axis=-2, keepdims=True)) / np.where(spread > 0, spread, 1.0)
    matrix = median_filter(weights, median_filter_width).mean(axis=0)[start:-1]
    text_indices, time_indices = dtw(-matrix)
    jumps = np.diff(text_indices, prepend=-1).astype(bool)
    jump_times = time_indices[jumps] * TIME_PRECISION
    words, word_tokens = split_to_word_tokens(tokenizer, text, language, specials.end_of_text)
    bounds = np.concatenate([[0], np.cumsum([len(group) for group in word_tokens])])
    return [WordTiming(word, group, float(jump_times[a]), float(jump_times[b]), float(token_probs[a:b].mean()))
            for word, group, a, b in zip(words, word_tokens, bounds[:-1], bounds[1:], strict=True)]


SENTENCE_END_MARKS = ".。!！?？"
MAX_MEDIAN_WORD_DURATION = 0.7


def word_duration_limits(timings: Sequence[WordTiming]) -> tuple[float, float]:
    """Whisper's ``median_duration`` = min(0.7, median of the non-zero word durations end - start)
    (0 when there are none) and ``max_duration`` = 2 * median_duration."""
    durations = np.asarray([t.end - t.start for t in timings], dtype=np.float64)
    durations = durations[durations.nonzero()]
    median_duration = min(MAX_MEDIAN_WORD_DURATION, float(np.median(durations)) if len(durations) else 0.0)
    return median_duration, 2 * median_duration


def truncate_at_sentence_ends(timings: list[WordTiming], max_duration: float) -> None:
    """In place, before punctuation is merged (Whisper's hack at sentence boundaries): for
    i >= 1, a word longer than ``max_duration`` that is itself a mark of ``SENTENCE_END_MARKS``
    keeps its start (end = start + max_duration); one that follows such a mark keeps its end
    (start = end - max_duration). Nothing changes when no word has a non-zero duration."""
    if not any(t.end - t.start for t in timings):
        return
    for previous, timing in zip(timings, timings[1:]):
        if timing.end - timing.start > max_duration:
            if timing.word in SENTENCE_END_MARKS:
                timing.end = timing.start + max_duration
            elif previous.word in SENTENCE_END_MARKS:
                timing.start = timing.end - max_duration


def fit_segment_to_words(segment: WhisperSegment, words: list[WhisperWord], last_speech_timestamp: float,
                         median_duration: float, max_duration: float) -> tuple[WhisperSegment, list[WhisperWord]]:
    """Whisper's boundary rules for a segment with ``words`` (times in seconds of the audio):

    * after a pause (words[0].end - last_speech_timestamp > 4 median_duration) a first word longer
      than max_duration, or first two words longer than 2 max_duration together, are cut: if the
      second is longer than max_duration, both meet at max(words[1].end / 2, words[1].end -
      max_duration); then words[0].start = max(0, words[0].end - max_duration);
    * if segment.start < words[0].end and segment.start - 0.5 > words[0].start (first word too
      long), words[0].start = max(0, min(words[0].end - median_duration, segment.start)), else
      the segment starts at words[0].start;
    * if segment.end > words[-1].start and segment.end + 0.5 < words[-1].end (last word too long),
      words[-1].end = max(words[-1].start + median_duration, segment.end), else the segment ends
      at words[-1].end."""
    times = [[w.start, w.end] for w in words]
    first, last = times[0], times[-1]
    after_pause = first[1] - last_speech_timestamp > median_duration * 4
    if after_pause and (first[1] - first[0] > max_duration
                        or (len(times) > 1 and times[1][1] - first[0] > max_duration * 2)):
        if len(times) > 1 and times[1][1] - times[1][0] > max_duration:
            boundary = max(times[1][1] / 2, times[1][1] - max_duration)
            first[1] = times[1][0] = boundary
        first[0] = max(0.0, first[1] - max_duration)
    start, end = segment.start, segment.end
    if start < first[1] and start - 0.5 > first[0]:
        first[0] = max(0.0, min(first[1] - median_duration, start))
    else:
        start = first[0]
    if end > last[0] and end + 0.5 < last[1]:
        last[1] = max(last[0] + median_duration, end)
    else:
        end = last[1]
    words = [w._replace(start=a, end=b) for w, (a, b) in zip(words, times, strict=True)]
    return segment._replace(start=start, end=end), words


def add_word_timestamps(model, features, segments: Sequence[WhisperSegment], specials: WhisperSpecialTokens,
                        tokenizer, language: str | None, task: str | None, num_frames: int, time_offset: float,
                        alignment_heads: Sequence[tuple[int, int]] | None = None,
                        prepend_punctuations: str = PREPEND_PUNCTUATIONS,
                        append_punctuations: str = APPEND_PUNCTUATIONS, encoded=None,
                        last_speech_timestamp: float = 0.0) -> list[WhisperSegment]:
    """The ``segments`` of one window (``features`` (1, num_mel_bins, frames), ``num_frames`` of
    audio, starting ``time_offset`` s into the audio) with their ``words``, as Whisper's
    ``add_word_timestamps``: the window's text is aligned at once (:func:`find_alignment`), long
    words cut at sentence ends (:func:`word_duration_limits`, :func:`truncate_at_sentence_ends`),
    punctuation merged, the words (times rounded to 0.01 s) handed out to the segments in order,
    and each segment with words fitted to them (:func:`fit_segment_to_words`; the speech before
    the first segment ends at ``last_speech_timestamp``, before a later one at the previous
    segment's end). A segment left without words (its text merged into a neighbour's word)
    becomes the point where the previous segment ends."""
    text = [t for segment in segments for t in segment.tokens]
    timings = find_alignment(model, features, specials, text, num_frames, tokenizer, language, task,
                             alignment_heads, encoded=encoded)
    median_duration, max_duration = word_duration_limits(timings)
    truncate_at_sentence_ends(timings, max_duration)
    merge_punctuations(timings, prepend_punctuations, append_punctuations)
    per_segment, index = [], 0
    for segment in segments:
        taken, words = 0, []
        while index < len(timings) and taken < len(segment.tokens):
            timing = timings[index]
            if timing.word:
                words.append(WhisperWord(timing.word, round(time_offset + timing.start, 2),
                                         round(time_offset + timing.end, 2), timing.probability,
                                         tuple(timing.tokens)))
            taken += len(timing.tokens)
            index += 1
        per_segment.append(words)
    if not any(per_segment):
        return list(segments)
    out = []
    for segment, words in zip(segments, per_segment, strict=True):
        if words:
            segment, words = fit_segment_to_words(segment, words, last_speech_timestamp, median_duration,
                                                  max_duration)
            out.append(segment._replace(words=tuple(words)))
            last_speech_timestamp = segment.end
        else:                                  # its text went to a neighbour's word: a point between them
            out.append(segment)
    first_timed = next(s.start for s in out if s.words)
    return [s if s.words else s._replace(start=e, end=e)
            for s, e in zip(out, _previous_ends(out, first_timed), strict=True)]


def _previous_ends(segments: list[WhisperSegment], first: float) -> list[float]:
    """For each segment, the end of the last segment with words before it (``first`` if none)."""
    ends, anchor = [], first
    for segment in segments:
        ends.append(anchor)
        if segment.words:
            anchor = segment.end
    return ends
