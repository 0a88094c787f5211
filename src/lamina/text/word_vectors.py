"""Queries and evaluations on a table of word vectors (one row per vocabulary id), such as
Word2Vec's (:class:`lamina.models.SkipGram`) or GloVe's (:class:`lamina.models.GloVe`).

Everything is measured by the cosine cos(u, v) = u . v / (|u| |v|):

* :func:`most_similar`: the words whose vectors make the smallest angle with a word's.
* :func:`analogy`: "a is to b as c is to ?" (Mikolov et al. 2013). With x ranging over the
  vocabulary less a, b and c,

      3CosAdd:  argmax_x cos(x, b) - cos(x, a) + cos(x, c)
      3CosMul:  argmax_x cos'(x, b) cos'(x, c) / (cos'(x, a) + eps),  cos' = (1 + cos) / 2

  3CosMul (Levy and Goldberg, "Linguistic Regularities in Sparse and Explicit Word
  Representations", 2014; eps = 0.001) keeps one large similarity from outweighing the two
  others. :func:`analogy_accuracy` scores a list of questions (a, b, c, d) at once.
* :func:`word_similarity_spearman`: Spearman's rank correlation between the cosines of word
  pairs and human similarity judgements (WordSim-353, SimLex-999, ... style triples).

The special tokens of the vocabulary (padding, unknown, ...) are never offered as answers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

from lamina.errors import ShapeError
from lamina.text.vocabulary import Vocabulary

__all__ = ["ANALOGY_METHODS", "WordSimilarityResult", "analogy", "analogy_accuracy", "most_similar",
           "word_similarity_spearman"]

ANALOGY_METHODS = ("3cosadd", "3cosmul")
_MUL_EPS = 1e-3


class WordSimilarityResult(NamedTuple):
    """Spearman's rho over the ``found`` pairs whose two words are in the vocabulary, of ``total``."""

    spearman: float
    found: int
    total: int


def most_similar(embeddings, vocab: Vocabulary, word: str, k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` words whose vectors have the highest cosine similarity
    e_v . e_w / (|e_v| |e_w|) with ``word``'s, best first, as (word, cosine) pairs.
    ``embeddings``: (W, A), row v the vector of the vocabulary's id v. The word itself and
    the vocabulary's special tokens (padding, unknown, ...) are left out."""
    unit = _unit_rows(embeddings, vocab, "most_similar")
    _check_positive(k, "k", "most_similar")
    query = _word_id(vocab, word, "most_similar")
    return _best(unit @ unit[query], vocab, {query}, k)


def analogy(embeddings, vocab: Vocabulary, a: str, b: str, c: str, k: int = 1,
            method: str = "3cosadd") -> list[tuple[str, float]]:
    """"a is to b as c is to ?": the ``k`` best words x by ``method`` (module notes), as
    (word, score) pairs, best first; a, b, c and the special tokens are left out (else the
    answer would mostly be b or c). The 3CosAdd score is the cosine of x with the direction
    of b - a + c (each vector scaled to unit length first), which ranks as the sum of
    cosines; the 3CosMul score is the ratio of the notes."""
    unit = _unit_rows(embeddings, vocab, "analogy")
    _check_positive(k, "k", "analogy")
    _check_method(method, "analogy")
    ia, ib, ic = (_word_id(vocab, w, "analogy") for w in (a, b, c))
    scores = _analogy_scores(unit, np.array([ia]), np.array([ib]), np.array([ic]), method)[0]
    return _best(scores, vocab, {ia, ib, ic}, k)


def analogy_accuracy(embeddings, vocab: Vocabulary, questions: Iterable[tuple[str, str, str, str]],
                     method: str = "3cosadd") -> tuple[float, int]:
    """The fraction of the questions (a, b, c, d), "a is to b as c is to d", that
    :func:`analogy` answers with d, and how many questions were asked: those whose four
    words are all in the vocabulary (the others are skipped, as in the usual benchmarks)."""
    unit = _unit_rows(embeddings, vocab, "analogy_accuracy")
    _check_method(method, "analogy_accuracy")
    rows = []
    for question in questions:
        if len(question) != 4:
            raise ValueError(f"analogy_accuracy: each question must be 4 words (a, b, c, d), got {question!r}")
        if all(w in vocab for w in question):
            rows.append([vocab[w] for w in question])
    if not rows:
        return float("nan"), 0
    ids = np.asarray(rows, dtype=np.int64)
    scores = _analogy_scores(unit, ids[:, 0], ids[:, 1], ids[:, 2], method)
    queries = np.arange(len(ids))
    for column in range(3):
        scores[queries, ids[:, column]] = -np.inf
    scores[:, _special_ids(vocab)] = -np.inf
    return float(np.mean(scores.argmax(axis=1) == ids[:, 3])), len(ids)


def word_similarity_spearman(embeddings, vocab: Vocabulary,
                             triples: Iterable[tuple[str, str, float]]) -> WordSimilarityResult:
    """Spearman's rank correlation between cos(e_w1, e_w2) and the human ``score`` of each
    (w1, w2, score) triple, over the triples whose two words are in the vocabulary: the
    Pearson correlation of the ranks, tied values sharing their average rank."""
    unit = _unit_rows(embeddings, vocab, "word_similarity_spearman")
    cosines, scores, total = [], [], 0
    for triple in triples:
        if len(triple) != 3:
            raise ValueError(f"word_similarity_spearman: each item must be (w1, w2, score), got {triple!r}")
        w1, w2, score = triple
        total += 1
        if w1 in vocab and w2 in vocab:
            cosines.append(float(unit[vocab[w1]] @ unit[vocab[w2]]))
            scores.append(float(score))
    if len(cosines) < 2:
        raise ValueError(f"word_similarity_spearman: {len(cosines)} of the {total} pairs have both words in the "
                         f"vocabulary; a rank correlation needs at least 2")
    rx, ry = _ranks(np.asarray(cosines)), _ranks(np.asarray(scores))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = np.sqrt((rx @ rx) * (ry @ ry))
    rho = float(rx @ ry / denominator) if denominator > 0 else float("nan")
    return WordSimilarityResult(rho, len(cosines), total)


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``values``, each group of ties given the mean of its ranks."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.concatenate([[True], ordered[1:] != ordered[:-1]])
    group = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    last = np.concatenate([first[1:], [len(values)]]) - 1
    ranks = np.empty(len(values))
    ranks[order] = (first + last)[group] / 2.0 + 1.0
    return ranks


def _analogy_scores(unit: np.ndarray, ia: np.ndarray, ib: np.ndarray, ic: np.ndarray, method: str) -> np.ndarray:
    """(Q, W) scores of every word for Q questions given by id arrays."""
    if method == "3cosadd":
        target = unit[ib] - unit[ia] + unit[ic]
        target /= np.maximum(np.linalg.norm(target, axis=1, keepdims=True), np.finfo(np.float64).tiny)
        return target @ unit.T
    cos_a, cos_b, cos_c = ((1.0 + unit[i] @ unit.T) / 2.0 for i in (ia, ib, ic))
    return cos_b * cos_c / (cos_a + _MUL_EPS)


def _special_ids(vocab: Vocabulary) -> list[int]:
    return [vocab[s] for s in vocab.specials.values() if s is not None]


def _best(scores: np.ndarray, vocab: Vocabulary, exclude: set[int], k: int) -> list[tuple[str, float]]:
    scores = scores.astype(np.float64)
    scores[list(exclude | set(_special_ids(vocab)))] = -np.inf
    order = np.argsort(-scores, kind="stable")[:k]
    tokens = vocab.tokens
    return [(tokens[i], float(scores[i])) for i in order if np.isfinite(scores[i])]


def _unit_rows(embeddings, vocab: Vocabulary, who: str) -> np.ndarray:
    table = np.asarray(embeddings, dtype=np.float64)
    if table.ndim != 2 or table.shape[0] != len(vocab):
        raise ShapeError(f"{who}: embeddings must have shape (W, A) = ({len(vocab)}, A), one row per word of "
                         f"the vocabulary, got shape {table.shape}")
    norms = np.linalg.norm(table, axis=1, keepdims=True)
    return table / np.maximum(norms, np.finfo(np.float64).tiny)


def _word_id(vocab: Vocabulary, word: str, who: str) -> int:
    if word not in vocab:
        raise KeyError(f"{who}: {word!r} is not in the vocabulary of {len(vocab)} words")
    return vocab[word]


def _check_method(method: str, who: str) -> None:
    if method not in ANALOGY_METHODS:
        raise ValueError(f"{who}: method must be one of {ANALOGY_METHODS}, got {method!r}")


def _check_positive(value, what: str, who: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{who}: {what} must be an int >= 1, got {value!r}")
