"""Beam search: the likeliest continuations of a sequence under a model of the next token.

At each step every live hypothesis (a list of ids with its log-probability
log P(y^<1..t>) = sum_t log P(y^<t> | y^<1..t-1>)) is extended by every token; the
``beam_width`` best extensions live on, and one that ends with the end-of-sequence token
is set aside as finished. Finished hypotheses are ranked by their log-probability over
their length to the power ``length_penalty`` (0: the plain log-probability, which favours
short outputs; 1: the mean log-probability per token). The search stops once
``beam_width`` hypotheses have finished, when none is left alive, or after ``max_length``
steps (the live ones then count as finished). A beam of width 1 is greedy decoding.

The model is reached through ``step(last_ids, state) -> (log_probs, state)``: the log
probabilities (B, V) of the next token for each of the B live hypotheses, given their last
tokens and whatever ``state`` the caller keeps (recurrent states, the tokens so far);
``select(state, rows)`` keeps and reorders the rows of a state for the surviving hypotheses.
A language model is searched by :func:`beam_search_ids` (and :func:`beam_search_text`),
which reads each token once where the model can cache: ``select`` then reorders the
model's key/value caches or carried states (:func:`lamina.text.reorder_caches`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lamina.autograd import no_grad, tensor
from lamina.text.generate import (
    _decodes_incrementally,
    _default_context,
    caching_keys_values,
    carrying_states,
    reorder_caches,
)
from lamina.text.vocabulary import Vocabulary

__all__ = ["Hypothesis", "beam_search", "beam_search_ids", "beam_search_text"]


@dataclass(order=True)
class Hypothesis:
    """A decoded sequence: ``ids`` (the end token included when it ended), its
    log-probability ``log_prob`` and the ``score`` beams are ranked by."""

    score: float
    log_prob: float = field(compare=False)
    ids: list[int] = field(compare=False)


def _ranked(ids: list[int], log_prob: float, length_penalty: float) -> Hypothesis:
    return Hypothesis(log_prob / max(len(ids), 1) ** length_penalty, log_prob, ids)


def beam_search(step: Callable[[np.ndarray, Any], tuple[np.ndarray, Any]], state: Any,
                first_id: int, eos_id: int | None, beam_width: int = 4, max_length: int = 50,
                length_penalty: float = 0.0, select: Callable[[Any, np.ndarray], Any] | None = None,
                num_return: int = 1) -> list[Hypothesis]:
    """The ``num_return`` best hypotheses (best first) that follow ``first_id`` (the last
    token read, e.g. the start token); ``state`` is for one hypothesis (one row). See the
    module docstring for ``step`` and ``select`` (default: ``state[rows]``)."""
    if isinstance(beam_width, bool) or not isinstance(beam_width, int) or beam_width < 1:
        raise ValueError(f"beam_search: beam_width must be a positive int, got {beam_width!r}")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise ValueError(f"beam_search: max_length must be a positive int, got {max_length!r}")
    if not 1 <= num_return <= beam_width:
        raise ValueError(f"beam_search: num_return must lie in [1, beam_width={beam_width}], got {num_return!r}")
    select = select or (lambda s, rows: s[rows])
    live_ids: list[list[int]] = [[]]
    live_scores = np.zeros(1)
    last = np.asarray([first_id], dtype=np.int64)
    finished: list[Hypothesis] = []
    for _ in range(max_length):
        log_probs, state = step(last, state)
        log_probs = np.asarray(log_probs, dtype=np.float64)
        if log_probs.ndim != 2 or log_probs.shape[0] != len(live_ids):
            raise ValueError(f"beam_search: step must return log-probabilities of shape ({len(live_ids)}, V) "
                             f"for the {len(live_ids)} live hypotheses, got {log_probs.shape}")
        vocab_size = log_probs.shape[1]
        totals = (live_scores[:, None] + log_probs).ravel()
        order = np.argsort(-totals, kind="stable")[: 2 * beam_width]
        rows, new_ids, new_scores = [], [], []
        for flat in order:
            if not np.isfinite(totals[flat]):
                break
            row, token = divmod(int(flat), vocab_size)
            ids = live_ids[row] + [token]
            if token == eos_id:
                finished.append(_ranked(ids, float(totals[flat]), length_penalty))
            else:
                rows.append(row)
                new_ids.append(ids)
                new_scores.append(totals[flat])
            if len(rows) == beam_width:
                break
        if not rows or len(finished) >= beam_width:
            live_ids = []
            break
        rows_array = np.asarray(rows)
        state = select(state, rows_array)
        live_ids, live_scores = new_ids, np.asarray(new_scores)
        last = np.asarray([ids[-1] for ids in new_ids], dtype=np.int64)
    finished += [_ranked(ids, float(s), length_penalty) for ids, s in zip(live_ids, live_scores)]
    return sorted(finished, reverse=True)[:num_return]


def _log_softmax(scores: np.ndarray) -> np.ndarray:
    z = scores.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


class _ModelReader:
    """The ``step`` and ``select`` of :func:`beam_search` over a language model. The state is
    the ids (B, t) of the live hypotheses before their last tokens. Read incrementally, the
    first step reads the prompt (one row), each later one the B last tokens, the caches or
    carried states holding ``read`` tokens of every hypothesis and following the survivors
    through ``select``; otherwise the model reruns on the whole texts (or their last
    ``context`` tokens)."""

    def __init__(self, model, context: int | None, incremental: bool, caches: contextlib.ExitStack,
                 vocab_size: int | None):
        self.model = model
        self.vocab_size = vocab_size
        self.context = context
        self.incremental = incremental
        self.caches = caches
        self.read = 0

    def step(self, last: np.ndarray, texts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        texts = np.concatenate([texts, last[:, None]], axis=1)
        if self.incremental and self.context is not None and texts.shape[1] > self.context:
            self.caches.close()             # the positions shift from now on: rerun
            self.incremental = False
        if self.incremental:
            window = texts[:, self.read:]
        else:
            window = texts if self.context is None else texts[:, -self.context:]
        scores = self.model(tensor(window)).numpy()
        size = scores.shape[-1] if self.vocab_size is None else self.vocab_size
        if scores.shape != (*window.shape, size):
            raise ValueError(f"beam_search_ids: the model must map ids {window.shape} to scores ({window.shape[0]}, "
                             f"{window.shape[1]}, {self.vocab_size or 'vocabulary size'}), got {scores.shape}")
        self.read = texts.shape[1]
        return _log_softmax(scores[:, -1]), texts

    def select(self, texts: np.ndarray, rows: np.ndarray) -> np.ndarray:
        unchanged = rows.tolist() == list(range(len(texts)))
        if self.incremental and not unchanged:       # greedy decoding keeps its one row throughout
            reorder_caches(self.model, rows)
        return texts[rows]


def beam_search_ids(model, ids: list[int], eos_id: int | None, beam_width: int = 4, max_length: int = 50,
                    length_penalty: float = 0.0, context: int | None = None, rerun: bool = False,
                    num_return: int = 1, vocab_size: int | None = None) -> list[Hypothesis]:
    """The ``num_return`` best continuations (best first, see :func:`beam_search`) of the
    token ids ``ids`` under a language model (ids (B, t) to scores (B, t, V)), the live
    hypotheses run as one batch.

    A model that reads one token at a time with a rerun's scores (a ``streamable`` recurrent
    one, through its carried states, with no ``context``; a causal Transformer, through its
    key/value cache, while the text fits in ``context``) reads ``ids`` once and then the last
    token of every live hypothesis per step, its caches following the surviving hypotheses'
    parents (:func:`lamina.text.reorder_caches`): linear time in the length. Any other
    model, or any with ``rerun=True``, reruns on every hypothesis (or its last ``context``
    tokens; default: the smallest ``max_len`` of the model's position layers, if any) at
    each step. Both find the same hypotheses. ``vocab_size``, when given, is checked against
    the model's scores."""
    if not ids:
        raise ValueError("beam_search_ids: ids must hold at least one token to continue")
    if context is None:
        context = _default_context(model)
    carry = not rerun and context is None and bool(getattr(model, "streamable", False))
    cache = not rerun and not carry and _decodes_incrementally(model)
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        with no_grad(), carrying_states(model, carry=carry), contextlib.ExitStack() as caches:
            if cache:
                caches.enter_context(caching_keys_values(model))
            reader = _ModelReader(model, context, carry or cache, caches, vocab_size)
            before_last = np.asarray([ids[:-1]], dtype=np.int64)
            return beam_search(reader.step, before_last, ids[-1], eos_id, beam_width, max_length, length_penalty,
                               select=reader.select, num_return=num_return)
    finally:
        model.train(was_training)


def beam_search_text(model, vocab: Vocabulary, prompt: str = "", beam_width: int = 4, max_length: int = 50,
                     length_penalty: float = 0.0, context: int | None = None, rerun: bool = False) -> str:
    """The likeliest continuation of ``prompt`` under a language model (ids (B, t) to
    scores (B, t, V)) found by beam search: the counterpart of
    :func:`lamina.text.sample_text` that searches instead of drawing. The model reads the
    prompt once and one token per live hypothesis per step where it can, else reruns on
    every live hypothesis at each step (see :func:`beam_search_ids` for ``context`` and
    ``rerun``)."""
    ids = list(vocab.encode(prompt, add_bos=vocab.bos_id is not None))
    if not ids:
        raise ValueError("beam_search_text: an empty prompt needs a vocabulary with a bos token to start from")
    best = beam_search_ids(model, ids, vocab.eos_id, beam_width, max_length, length_penalty, context, rerun,
                           vocab_size=len(vocab))[0]
    continuation = [i for i in best.ids if i != vocab.eos_id]
    return vocab.decode(ids + continuation)
