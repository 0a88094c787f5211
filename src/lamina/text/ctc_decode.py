"""Decoding the frame-wise outputs of a CTC model (Graves et al. 2006) into label sequences.

A path pi (one symbol per frame, ``blank`` among them) reads as the labels B(pi): runs of the
same symbol merged, then blanks dropped, so B(a a - b - b) = a b b. The most probable labels
l* = argmax_l sum_{pi: B(pi) = l} prod_t y_t(pi_t) have no exact fast algorithm;

* greedy decoding takes the most probable path, B(argmax_k y_t(k) for each t);
* prefix beam search (Hannun et al. 2014, "First-Pass Large Vocabulary Continuous Speech
  Recognition using Bi-Directional Recurrent DNNs") keeps the ``beam_width`` best label
  prefixes, each with the probability of its paths so far split by how they end:

      p_b(l)  paths ending in a blank,   p_nb(l)  paths ending in l's last label.

  At frame t a blank keeps every prefix, p_b'(l) += (p_b(l) + p_nb(l)) y_t(-); repeating the
  last label c keeps it too, p_nb'(l) += p_nb(l) y_t(c), and extends it only after a blank,
  p_nb'(l c) += p_b(l) y_t(c); any other label c extends it, p_nb'(l c) += (p_b(l) + p_nb(l)) y_t(c).
  With a beam as wide as the number of prefixes this sums every path of every prefix: exact.

An optional character-level language model scores each extension: a prefix ranks by

    log(p_b + p_nb) + sum over its labels of (lm_weight log P_lm(c | prefix) + label_bonus).

:func:`ctc_ids_to_text` writes decoded ids as text in Hugging Face's ``Wav2Vec2CTCTokenizer``
convention (``|`` the word delimiter).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["CTCHypothesis", "ctc_collapse", "ctc_greedy_decode", "ctc_ids_to_text", "ctc_prefix_beam_search"]

_NEG_INF = -np.inf


def _as_array(scores, who: str, ndims: tuple[int, ...]) -> np.ndarray:
    array = scores.numpy() if hasattr(scores, "numpy") else np.asarray(scores)
    if array.ndim not in ndims or array.shape[-1] < 2 or array.dtype.kind not in "fiu":
        expected = " or ".join({2: "(frames, classes)", 3: "(batch, frames, classes)"}[n] for n in ndims)
        raise ValueError(f"{who}: expected scores {expected} with at least 2 classes, got shape {array.shape} and "
                         f"dtype {array.dtype}")
    return array


def _check_blank(blank: int, classes: int, who: str) -> int:
    if isinstance(blank, bool) or not isinstance(blank, (int, np.integer)) or not 0 <= blank < classes:
        raise ValueError(f"{who}: blank must be an int in [0, {classes}), got {blank!r}")
    return int(blank)


def ctc_collapse(path: Sequence[int], blank: int = 0) -> list[int]:
    """B(path): runs of the same symbol merged, then the blanks dropped."""
    labels, previous = [], None
    for symbol in (int(s) for s in path):
        if symbol != previous and symbol != blank:
            labels.append(symbol)
        previous = symbol
    return labels


def ctc_greedy_decode(scores, blank: int = 0, lengths: Sequence[int] | None = None):
    """The labels of the most probable path: B(argmax_k scores[t, k]). ``scores`` are
    probabilities, log-probabilities or logits (the argmax is the same): (frames, classes)
    gives one list of ids, (batch, frames, classes) a list of them, row n read over its first
    ``lengths[n]`` frames when ``lengths`` is given."""
    who = "ctc_greedy_decode"
    array = _as_array(scores, who, (2, 3))
    blank = _check_blank(blank, array.shape[-1], who)
    if array.ndim == 2:
        return ctc_collapse(array.argmax(axis=-1), blank)
    frames = [array.shape[1]] * array.shape[0] if lengths is None else [int(n) for n in lengths]
    if len(frames) != array.shape[0] or any(not 0 <= n <= array.shape[1] for n in frames):
        raise ValueError(f"{who}: lengths must give one frame count in [0, {array.shape[1]}] per row of the "
                         f"{array.shape[0]} rows, got {lengths!r}")
    best = array.argmax(axis=-1)
    return [ctc_collapse(best[n, :frames[n]], blank) for n in range(array.shape[0])]


@dataclass(frozen=True)
class CTCHypothesis:
    """A decoded label sequence: ``ids``, ``log_prob`` = log p(ids | x) summed over the paths the
    beam kept, and ``score``, the ranking score (``log_prob`` plus the language-model terms)."""

    ids: tuple[int, ...]
    log_prob: float
    score: float


def _log_softmax(array: np.ndarray) -> np.ndarray:
    shifted = array - array.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


_BLANK_END, _LABEL_END = 0, 1       # the slots of p_b and p_nb


def _accumulate(table: dict, prefix: tuple[int, ...], slot: int, log_value: float) -> None:
    """table[prefix][slot] += exp(log_value), in log space."""
    entry = table.setdefault(prefix, [_NEG_INF, _NEG_INF])
    entry[slot] = np.logaddexp(entry[slot], log_value)


def ctc_prefix_beam_search(log_probs, beam_width: int = 8, blank: int = 0,
                           lm: Callable[[tuple[int, ...], int], float] | None = None, lm_weight: float = 0.5,
                           label_bonus: float = 0.0, top_k: int | None = None) -> list[CTCHypothesis]:
    """Prefix beam search (module docstring) over ``log_probs`` (frames, classes) of one
    utterance (logits work too: each row is log-softmax-normalised first). Returns up to
    ``beam_width`` :class:`CTCHypothesis`, best first.

    ``lm(prefix, c)``: the log-probability of label ``c`` after the labels ``prefix`` (a
    tuple), weighted by ``lm_weight``; ``label_bonus`` is added per label (it offsets the
    LM's pull towards short outputs). ``top_k``: only the k most probable symbols of each
    frame extend the prefixes (faster for large vocabularies; None: all)."""
    who = "ctc_prefix_beam_search"
    y = _log_softmax(_as_array(log_probs, who, (2,)).astype(np.float64))
    classes = y.shape[1]
    blank = _check_blank(blank, classes, who)
    if isinstance(beam_width, bool) or not isinstance(beam_width, (int, np.integer)) or beam_width < 1:
        raise ValueError(f"{who}: beam_width must be a positive int, got {beam_width!r}")
    if top_k is not None and not 1 <= top_k:
        raise ValueError(f"{who}: top_k must be None or a positive int, got {top_k!r}")
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, _NEG_INF)}
    extra: dict[tuple[int, ...], float] = {(): 0.0}       # the LM terms of each prefix

    for frame in y:
        candidates = range(classes) if top_k is None else np.argsort(frame)[::-1][:top_k]
        labels = [int(c) for c in candidates if c != blank]
        following: dict[tuple[int, ...], list[float]] = {}
        for prefix, (p_blank, p_label) in beams.items():
            total = np.logaddexp(p_blank, p_label)
            _accumulate(following, prefix, _BLANK_END, total + frame[blank])
            last = prefix[-1] if prefix else None
            for c in labels:
                extended = prefix + (c,)
                if c == last:
                    _accumulate(following, prefix, _LABEL_END, p_label + frame[c])
                    _accumulate(following, extended, _LABEL_END, p_blank + frame[c])
                else:
                    _accumulate(following, extended, _LABEL_END, total + frame[c])
                if extended not in extra:
                    lm_term = lm_weight * float(lm(prefix, c)) if lm is not None else 0.0
                    extra[extended] = extra[prefix] + lm_term + label_bonus

        possible = [item for item in following.items() if np.logaddexp(*item[1]) > _NEG_INF]
        ranked = sorted(possible, key=lambda item: -(np.logaddexp(*item[1]) + extra[item[0]]))
        beams = {prefix: (p_blank, p_label) for prefix, (p_blank, p_label) in ranked[:beam_width]}

    hypotheses = [CTCHypothesis(prefix, float(np.logaddexp(*ends)), float(np.logaddexp(*ends) + extra[prefix]))
                  for prefix, ends in beams.items()]
    return sorted(hypotheses, key=lambda h: -h.score)


def _tokens_by_id(vocabulary) -> dict[int, str]:
    if isinstance(vocabulary, Mapping):
        return {int(i): str(token) for token, i in vocabulary.items()}
    return dict(enumerate(str(token) for token in vocabulary))


def ctc_ids_to_text(ids: Sequence[int], vocabulary, word_delimiter: str = "|",
                    skip_tokens: Sequence[str] = ("<pad>", "<s>", "</s>")) -> str | list[str]:
    """Decoded label ids as text: each id's token (``vocabulary`` a list indexed by id, or
    Hugging Face's ``vocab.json`` mapping token -> id), ``skip_tokens`` left out, the word
    delimiter written as a space, the ends stripped. Nested lists (a batch) give a list."""
    if len(ids) and not np.isscalar(ids[0]) and not isinstance(ids[0], (int, np.integer)):
        return [ctc_ids_to_text(row, vocabulary, word_delimiter, skip_tokens) for row in ids]
    tokens = _tokens_by_id(vocabulary)
    missing = sorted({int(i) for i in ids} - set(tokens))
    if missing:
        raise ValueError(f"ctc_ids_to_text: ids {missing} are not in the vocabulary of {len(tokens)} tokens")
    skipped = set(skip_tokens)
    text = "".join(" " if tokens[int(i)] == word_delimiter else tokens[int(i)] for i in ids
                   if tokens[int(i)] not in skipped)
    return text.strip()
