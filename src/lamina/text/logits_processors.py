"""Logits processors: the per-step rewrites of a language model's next-token scores that
Hugging Face's ``generate`` applies, as composable classes.

Each processor is called as ``processor(input_ids, scores) -> scores``: ``input_ids`` (B, t)
the tokens so far (the prompt included), ``scores`` (B, V) the next-token scores of each row;
it returns new scores and leaves its inputs as they are. A removed token gets the score
``-inf`` (probability 0). :class:`LogitsProcessorList` applies several in turn, and
:func:`lamina.text.generate_ids` builds one from its options in Hugging Face's order (the
penalties and bans, then, when sampling, temperature, top-k, top-p, min-p and typical-p).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

__all__ = [
    "LogitsProcessor", "LogitsProcessorList", "MinNewTokensLogitsProcessor", "MinPLogitsWarper",
    "NoBadWordsLogitsProcessor", "NoRepeatNGramLogitsProcessor", "RepetitionPenaltyLogitsProcessor",
    "TemperatureLogitsWarper", "TopKLogitsWarper", "TopPLogitsWarper", "TypicalLogitsWarper",
]


def _softmax(scores: np.ndarray) -> np.ndarray:
    z = scores - scores.max(axis=-1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=-1, keepdims=True)


def _check_inputs(who: str, input_ids, scores) -> tuple[np.ndarray, np.ndarray]:
    input_ids, scores = np.asarray(input_ids), np.asarray(scores)
    if input_ids.ndim != 2 or scores.ndim != 2 or input_ids.shape[0] != scores.shape[0]:
        raise ValueError(f"{who}: expected input_ids (B, t) and scores (B, V) of the same batch, got "
                         f"{input_ids.shape} and {scores.shape}")
    return input_ids, scores


def _min_tokens(value, who: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{who}: min_tokens_to_keep must be a positive int, got {value!r}")
    return value


class LogitsProcessor:
    """A rewrite of next-token scores: ``processor(input_ids (B, t), scores (B, V))`` returns
    the new (B, V) scores. Subclasses define :meth:`process`."""

    def __call__(self, input_ids, scores) -> np.ndarray:
        input_ids, scores = _check_inputs(type(self).__name__, input_ids, scores)
        return self.process(input_ids, scores.copy())

    def process(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """The new scores; ``scores`` is a copy the method may change in place."""
        raise NotImplementedError

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({options})"


class LogitsProcessorList(list):
    """Processors applied in order: ``processors(input_ids, scores)``."""

    def __init__(self, processors: Iterable = ()):
        processors = list(processors)
        for p in processors:
            if not callable(p):
                raise TypeError(f"LogitsProcessorList: every processor must be callable "
                                f"(input_ids, scores) -> scores, got {type(p).__name__}")
        super().__init__(processors)

    def __call__(self, input_ids, scores) -> np.ndarray:
        scores = np.asarray(scores)
        for processor in self:
            scores = np.asarray(processor(input_ids, scores))
        return scores


class TemperatureLogitsWarper(LogitsProcessor):
    """scores / temperature: < 1 sharpens the distribution, > 1 flattens it."""

    def __init__(self, temperature: float):
        if not float(temperature) > 0:
            raise ValueError(f"TemperatureLogitsWarper: temperature must be > 0, got {temperature!r}")
        self.temperature = float(temperature)

    def process(self, input_ids, scores):
        return scores / self.temperature


class TopKLogitsWarper(LogitsProcessor):
    """Keep the ``top_k`` highest scores of each row (ties with the k-th kept too), the
    others -inf; at least ``min_tokens_to_keep``."""

    def __init__(self, top_k: int, min_tokens_to_keep: int = 1):
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"TopKLogitsWarper: top_k must be a positive int, got {top_k!r}")
        self.top_k = top_k
        self.min_tokens_to_keep = _min_tokens(min_tokens_to_keep, "TopKLogitsWarper")

    def process(self, input_ids, scores):
        k = min(max(self.top_k, self.min_tokens_to_keep), scores.shape[-1])
        kth = np.sort(scores, axis=-1)[:, -k][:, None]
        scores[scores < kth] = -np.inf
        return scores


class TopPLogitsWarper(LogitsProcessor):
    """Nucleus sampling (Holtzman et al. 2020): keep the fewest likeliest tokens whose
    probabilities sum to at least ``top_p``. With the tokens sorted by ascending probability,
    a token goes when the cumulative probability up to it is <= 1 - top_p; the
    ``min_tokens_to_keep`` likeliest always stay."""

    def __init__(self, top_p: float, min_tokens_to_keep: int = 1):
        if not 0 <= float(top_p) <= 1:
            raise ValueError(f"TopPLogitsWarper: top_p must lie in [0, 1], got {top_p!r}")
        self.top_p = float(top_p)
        self.min_tokens_to_keep = _min_tokens(min_tokens_to_keep, "TopPLogitsWarper")

    def process(self, input_ids, scores):
        order = np.argsort(scores, axis=-1, kind="stable")
        ascending = np.take_along_axis(scores, order, axis=-1)
        cumulative = np.cumsum(_softmax(ascending), axis=-1)
        remove = cumulative <= 1 - self.top_p
        remove[:, -self.min_tokens_to_keep:] = False
        np.put_along_axis(scores, order, np.where(remove, -np.inf, ascending), axis=-1)
        return scores


class MinPLogitsWarper(LogitsProcessor):
    """Min-p sampling (Nguyen et al. 2024): remove the tokens whose probability is below
    ``min_p`` times the row's largest probability; the ``min_tokens_to_keep`` likeliest
    always stay."""

    def __init__(self, min_p: float, min_tokens_to_keep: int = 1):
        if not 0 <= float(min_p) <= 1:
            raise ValueError(f"MinPLogitsWarper: min_p must lie in [0, 1], got {min_p!r}")
        self.min_p = float(min_p)
        self.min_tokens_to_keep = _min_tokens(min_tokens_to_keep, "MinPLogitsWarper")

    def process(self, input_ids, scores):
        p = _softmax(scores)
        remove = p < self.min_p * p.max(axis=-1, keepdims=True)
        likeliest = np.argsort(-scores, axis=-1, kind="stable")[:, :self.min_tokens_to_keep]
        np.put_along_axis(remove, likeliest, False, axis=-1)
        scores[remove] = -np.inf
        return scores


class TypicalLogitsWarper(LogitsProcessor):
    """Locally typical sampling (Meister et al. 2022): with H = -sum p log p the row's
    entropy, sort the tokens by |-log p - H| (most typical first) and keep the fewest whose
    probabilities reach ``mass`` (the first token whose cumulative probability is >= mass
    included, and any as typical as it); the ``min_tokens_to_keep`` most typical always stay."""

    def __init__(self, mass: float = 0.9, min_tokens_to_keep: int = 1):
        if not 0 < float(mass) < 1:
            raise ValueError(f"TypicalLogitsWarper: mass (typical_p) must lie in (0, 1), got {mass!r}")
        self.mass = float(mass)
        self.min_tokens_to_keep = _min_tokens(min_tokens_to_keep, "TypicalLogitsWarper")

    def process(self, input_ids, scores):
        z = scores - scores.max(axis=-1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
        p = np.exp(log_p)
        entropy = -np.nansum(p * log_p, axis=-1, keepdims=True)
        distance = np.abs(-log_p - entropy)
        order = np.argsort(distance, axis=-1, kind="stable")
        cumulative = np.cumsum(np.take_along_axis(p, order, axis=-1), axis=-1)
        last = np.minimum((cumulative < self.mass).sum(axis=-1), scores.shape[-1] - 1)
        sorted_distance = np.take_along_axis(distance, order, axis=-1)
        sorted_remove = sorted_distance > np.take_along_axis(sorted_distance, last[:, None], axis=-1)
        sorted_remove[:, :self.min_tokens_to_keep] = False
        remove = np.zeros_like(scores, dtype=bool)
        np.put_along_axis(remove, order, sorted_remove, axis=-1)
        scores[remove] = -np.inf
        return scores


class RepetitionPenaltyLogitsProcessor(LogitsProcessor):
    """The CTRL penalty (Keskar et al. 2019) as Hugging Face applies it: the score s of every
    token already in the row (prompt included) becomes s / penalty if s > 0, else
    s * penalty; ``penalty`` > 1 discourages repeats, < 1 encourages them."""

    def __init__(self, penalty: float):
        if not float(penalty) > 0:
            raise ValueError(f"RepetitionPenaltyLogitsProcessor: penalty must be > 0, got {penalty!r}")
        self.penalty = float(penalty)

    def process(self, input_ids, scores):
        rows = np.arange(len(scores))[:, None]
        seen = scores[rows, input_ids]
        scores[rows, input_ids] = np.where(seen > 0, seen / self.penalty, seen * self.penalty)
        return scores


class NoRepeatNGramLogitsProcessor(LogitsProcessor):
    """Ban every token that would repeat an n-gram of the row (``ngram_size`` = n): the tokens
    that followed an earlier occurrence of the row's last n - 1 tokens."""

    def __init__(self, ngram_size: int):
        if isinstance(ngram_size, bool) or not isinstance(ngram_size, int) or ngram_size < 1:
            raise ValueError(f"NoRepeatNGramLogitsProcessor: ngram_size must be a positive int, got {ngram_size!r}")
        self.ngram_size = ngram_size

    def process(self, input_ids, scores):
        n, length = self.ngram_size, input_ids.shape[1]
        if length + 1 < n:
            return scores
        for row, ids in enumerate(input_ids.tolist()):
            tail = ids[length - n + 1:] if n > 1 else []
            banned = {ids[i + n - 1] for i in range(length - n + 1) if ids[i:i + n - 1] == tail}
            scores[row, sorted(banned)] = -np.inf
        return scores


class NoBadWordsLogitsProcessor(LogitsProcessor):
    """Ban sequences of tokens: for each of ``bad_words_ids`` (lists of ids), its last token
    is removed whenever the row ends with the ones before it (a one-token entry: always).
    Entries that are just the end-of-sequence token ``eos_token_id`` (int or list) are
    dropped, so a row can always end."""

    def __init__(self, bad_words_ids: Sequence[Sequence[int]], eos_token_id: int | Sequence[int] | None = None):
        words = [list(word) for word in bad_words_ids]
        if not words or any(not word or not all(isinstance(i, int | np.integer) and i >= 0 for i in word)
                            for word in words):
            raise ValueError(f"NoBadWordsLogitsProcessor: bad_words_ids must be a non-empty list of non-empty lists "
                             f"of token ids, got {bad_words_ids!r}")
        eos = [] if eos_token_id is None else np.atleast_1d(eos_token_id).tolist()
        self.bad_words_ids = [[int(i) for i in word] for word in words if not (len(word) == 1 and word[0] in eos)]

    def process(self, input_ids, scores):
        for row, ids in enumerate(input_ids.tolist()):
            for word in self.bad_words_ids:
                prefix = word[:-1]
                if not prefix or (len(prefix) <= len(ids) and ids[len(ids) - len(prefix):] == prefix):
                    scores[row, word[-1]] = -np.inf
        return scores


class MinNewTokensLogitsProcessor(LogitsProcessor):
    """Forbid ending (the ``eos_token_id`` scores -inf) before ``min_new_tokens`` tokens
    follow the prompt of ``prompt_length`` tokens."""

    def __init__(self, prompt_length: int, min_new_tokens: int, eos_token_id: int | Sequence[int]):
        if isinstance(min_new_tokens, bool) or not isinstance(min_new_tokens, int) or min_new_tokens < 0:
            raise ValueError(f"MinNewTokensLogitsProcessor: min_new_tokens must be an int >= 0, "
                             f"got {min_new_tokens!r}")
        self.prompt_length = int(prompt_length)
        self.min_new_tokens = min_new_tokens
        self.eos_token_id = np.atleast_1d(eos_token_id).astype(np.int64).tolist()

    def process(self, input_ids, scores):
        if input_ids.shape[1] - self.prompt_length < self.min_new_tokens:
            scores[:, self.eos_token_id] = -np.inf
        return scores
