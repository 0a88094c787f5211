"""One 30 s window of Whisper's long-form transcription, decoded as openai-whisper's
``decode_with_fallback`` does (used by :func:`lamina.models.whisper_transcribe.transcribe`).

Each window is decoded by :func:`decode_window` at a temperature T: greedy (T = 0), Whisper's
beam search (T = 0 and ``beam_width`` > 1, ``patience``) or ``best_of`` samples from
softmax(scores / T); of the candidates the best is the one of highest sum log p / penalty,
penalty = length when ``length_penalty`` is None, else ((5 + length) / 6) ** length_penalty
(:func:`likelihood_scores`). The window's avg_logprob, compression_ratio and no_speech_prob,
and the rule of :func:`decode_with_fallback`, are given in :mod:`lamina.models.whisper_transcribe`.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.models.whisper_decoding import (
    WhisperSpecialTokens,
)

__all__ = ["DEFAULT_TEMPERATURES", "WindowDecoding", "compression_ratio", "decode_window", "decode_with_fallback",
           "is_silent", "likelihood_scores", "token_compression_ratio"]

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


def likelihood_scores(sum_logprobs: Sequence[float], lengths: Sequence[int],
                      length_penalty: float | None = None) -> list[float]:
    """Whisper's ``MaximumLikelihoodRanker``: sum_logprob / penalty per candidate, penalty =
    length (its text tokens, the end token not counted) when ``length_penalty`` is None, else
    ((5 + length) / 6) ** length_penalty (Google NMT's length penalty). The best candidate has
    the highest score (the first of equals). A length of 0 counts as 1."""
    scores = []
    for logprob, length in zip(sum_logprobs, lengths, strict=True):
        penalty = max(length, 1) if length_penalty is None else ((5 + length) / 6) ** length_penalty
        scores.append(float(logprob) / penalty)
    return scores


def _reorder(caches: list[dict], rows: np.ndarray) -> None:
    for cache in caches:
        for key, value in cache.items():
            cache[key] = tuple(F.index_select(part, 0, rows) for part in value)


def _beam_search(model, encoded, prompt: list[int], steps: int, beam_size: int, patience: float | None,
                 filters: _Filter, end: int) -> tuple[list[tuple[list[int], float, bool]], np.ndarray]:
    """Whisper's ``BeamSearchDecoder``: ``beam_size`` rows (all the prompt at first); at each
    step every row proposes its beam_size + 1 likeliest next tokens (sum log p so far + log p),
    the candidates are taken best first (equal sequences once), those ending in the end token
    set aside as finished, until ``beam_size`` live rows are found. Of the finished, the best
    are kept until there are max_candidates = round(beam_size * patience) (patience default
    1); the search stops then or after ``steps`` steps. If fewer than beam_size finished, the
    best live rows join them. Returns the candidates (tokens without the end token, sum log p,
    ended) and the prompt pass's logits."""
    max_candidates = round(beam_size * (1.0 if patience is None else patience))
    memory = Tensor(np.repeat(_array(encoded), beam_size, axis=0))
    ids = np.repeat(np.asarray([prompt], dtype=np.int64), beam_size, axis=0)
    caches = [{} for _ in range(model.config["decoder_layers"])]
    logits = _array(model.decode(ids, memory, caches, 0))
    prompt_logits = logits[:1]
    sums = np.zeros(beam_size)
    finished: dict[tuple[int, ...], float] = {}
    for step in range(steps):
        log_p = filters(ids, logits[:, -1])
        scores: dict[tuple[int, ...], float] = {}
        sources: dict[tuple[int, ...], int] = {}
        for row in range(beam_size):
            prefix = tuple(int(t) for t in ids[row, len(prompt):])
            for token in np.argsort(-log_p[row], kind="stable")[:beam_size + 1]:
                sequence = prefix + (int(token),)
                scores[sequence] = float(sums[row] + log_p[row, token])
                sources[sequence] = row
        live, newly_finished = [], {}
        for sequence in sorted(scores, key=scores.get, reverse=True):
            if sequence[-1] == end:
                newly_finished[sequence] = scores[sequence]
            else:
                live.append(sequence)
                if len(live) == beam_size:
                    break
        for sequence in sorted(newly_finished, key=newly_finished.get, reverse=True):
            if len(finished) >= max_candidates:
                break
            finished[sequence] = newly_finished[sequence]
        rows = np.asarray([sources[sequence] for sequence in live])
        ids = np.asarray([prompt + list(sequence) for sequence in live], dtype=np.int64)
        sums = np.asarray([scores[sequence] for sequence in live])
        if len(finished) >= max_candidates or step == steps - 1:
            break
        _reorder(caches, rows)
        logits = _array(model.decode(ids[:, -1:], memory, caches, ids.shape[1] - 1))
    candidates = [(list(sequence[:-1]), total, True) for sequence, total in finished.items()]
    if len(candidates) < beam_size:
        for row in np.argsort(sums, kind="stable")[::-1]:
            candidates.append(([int(t) for t in ids[row, len(prompt):]], float(sums[row]), False))
            if len(candidates) >= beam_size:
                break
    return candidates, prompt_logits


def _until_end(row: Sequence[int], end: int) -> tuple[list[int], bool]:
    tokens = []
    for token in (int(t) for t in row):
        if token == end:
            return tokens, True
        tokens.append(token)
    return tokens, False


def decode_window(model, features, prompt: Sequence[int], specials: WhisperSpecialTokens, *, max_new_tokens: int,
                  temperature: float = 0.0, best_of: int = 1, beam_width: int = 1,
                  length_penalty: float | None = None, patience: float | None = None,
                  suppress_tokens: Sequence[int] | None = None, begin_suppress_tokens: Sequence[int] | None = None,
                  logits_processor: Callable | None = None, tokenizer=None, rng: np.random.Generator | None = None,
                  encoded=None) -> WindowDecoding:
    """Decode one window's ``features`` (1, num_mel_bins, frames) after ``prompt`` (see the module
    docstring). ``model`` has ``encode(features)``, ``decode(ids, encoded, caches=None, offset=0)``
    -> logits (B, t, vocab) and ``config['decoder_layers']``; ``encoded`` skips the encoder when
    given. At temperature 0 with ``beam_width`` > 1, Whisper's beam search (:func:`_beam_search`,
    ``patience``); the candidates of the beam or of the ``best_of`` samples are ranked by
    :func:`likelihood_scores` with ``length_penalty``."""
    who = "decode_window"
    if temperature < 0:
        raise ValueError(f"{who}: temperature must be >= 0, got {temperature}")
    if best_of < 1 or beam_width < 1:
        raise ValueError(f"{who}: best_of and beam_width must be >= 1, got {best_of} and {beam_width}")
    if patience is not None and not patience > 0:
        raise ValueError(f"{who}: patience must be > 0, got {patience}")
    rng = np.random.default_rng() if rng is None else rng
    prompt_ids = [int(t) for t in prompt]
    encoded = model.encode(features) if encoded is None else encoded
    end = specials.end_of_text
    vocab_size = model.config["vocab_size"]
    filters = _Filter(vocab_size, len(prompt_ids), suppress_tokens, begin_suppress_tokens, logits_processor)
    if temperature == 0 and beam_width > 1:
        candidates, logits = _beam_search(model, encoded, prompt_ids, max_new_tokens, beam_width, patience,
                                          filters, end)
    else:
        n = best_of if temperature > 0 else 1
        ids, totals, done, logits = _sample(model, encoded, np.asarray(prompt_ids, dtype=np.int64), max_new_tokens,
                                            temperature, n, filters, end, rng)
        rows = [_until_end(row[len(prompt_ids):], end) for row in ids]
        candidates = [(row, float(total), ended) for (row, ended), total in zip(rows, totals, strict=True)]
    scores = likelihood_scores([c[1] for c in candidates], [len(c[0]) for c in candidates], length_penalty)
    tokens, total, ended = candidates[int(np.argmax(scores))]
    text_tokens = [t for t in tokens if t < end]
    if tokenizer is not None:
        text = tokenizer.decode(text_tokens).strip()
        ratio = compression_ratio(text)
    else:
        text, ratio = "", token_compression_ratio(text_tokens, vocab_size)
    return WindowDecoding(tokens, total, _no_speech_prob(logits, prompt_ids, specials), float(temperature), ratio,
                          text, ended)


def is_silent(result: WindowDecoding, no_speech_threshold: float | None, logprob_threshold: float | None) -> bool:
    """No speech: no_speech_prob above its threshold and avg_logprob below its threshold."""
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
        if not (too_repetitive or unlikely) or is_silent(result, no_speech_threshold, logprob_threshold):
            break
    return result
