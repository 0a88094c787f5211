"""ROUGE (Lin 2004) as Google's rouge-score package computes it.

Tokens: the text lowercased, every run of characters other than a-z and 0-9 replaced by
a space, split on spaces (an optional stemmer applies to tokens longer than 3 characters).
For a prediction against a reference, with P = overlap / |prediction|, R = overlap /
|reference| and F = 2 P R / (P + R) (each 0 where undefined):

* ``rougeN``: the overlap is the clipped count of shared n-grams;
* ``rougeL``: the overlap is the length of the longest common subsequence (LCS);
* ``rougeLsum``: summary-level LCS, texts split into sentences at newlines. For each
  reference sentence the union of its LCS with every prediction sentence (the
  reference positions one LCS each, found by rouge-score's backtracking) gives tokens that
  count once each, as long as both sides still have that token unused.

:func:`rouge_corpus` averages P, R and F over pairs, or bootstraps the mean
(rouge-score's ``BootstrapAggregator``: low, mid, high at the 2.5th, 50th and 97.5th
percentiles of the resampled means).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from lamina.text.metrics.ngrams import clipped_matches, ngram_counts

__all__ = ["RougeScore", "rouge_corpus", "rouge_scores", "rouge_tokenize"]

_NOT_ALPHANUMERIC = re.compile(r"[^a-z0-9]+")
_ROUGE_N = re.compile(r"^rouge([1-9])$")


@dataclass(frozen=True)
class RougeScore:
    """Precision, recall and F-measure of one ROUGE type."""

    precision: float
    recall: float
    fmeasure: float


def _score(overlap: int, predicted: int, reference: int) -> RougeScore:
    precision = overlap / max(predicted, 1)
    recall = overlap / max(reference, 1)
    f = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return RougeScore(precision, recall, f)


def rouge_tokenize(text: str, stemmer: Callable[[str], str] | None = None) -> list[str]:
    """rouge-score's default tokenizer (see the module notes)."""
    tokens = _NOT_ALPHANUMERIC.sub(" ", text.lower()).split()
    if stemmer is not None:
        tokens = [stemmer(t) if len(t) > 3 else t for t in tokens]
    return tokens


def _lcs_table(reference: Sequence[str], prediction: Sequence[str]) -> list[list[int]]:
    """table[i][j] = LCS length of reference[:i] and prediction[:j]."""
    table = [[0] * (len(prediction) + 1) for _ in range(len(reference) + 1)]
    for i, r in enumerate(reference, start=1):
        for j, p in enumerate(prediction, start=1):
            table[i][j] = table[i - 1][j - 1] + 1 if r == p else max(table[i - 1][j], table[i][j - 1])
    return table


def lcs_positions(reference: Sequence[str], prediction: Sequence[str]) -> list[int]:
    """The reference positions of one LCS, backtracking from the end: a match steps
    diagonally, else the step goes left (along the prediction) when that keeps a strictly
    longer LCS, up otherwise."""
    table = _lcs_table(reference, prediction)
    i, j, positions = len(reference), len(prediction), []
    while i > 0 and j > 0:
        if reference[i - 1] == prediction[j - 1]:
            positions.append(i - 1)
            i, j = i - 1, j - 1
        elif table[i][j - 1] > table[i - 1][j]:
            j -= 1
        else:
            i -= 1
    return positions[::-1]


def _rouge_lsum(reference_sentences: list[list[str]], prediction_sentences: list[list[str]]) -> RougeScore:
    m = sum(map(len, reference_sentences))
    n = sum(map(len, prediction_sentences))
    if not m or not n:
        return RougeScore(0.0, 0.0, 0.0)
    left_reference = Counter(t for s in reference_sentences for t in s)
    left_prediction = Counter(t for s in prediction_sentences for t in s)
    hits = 0
    for sentence in reference_sentences:
        union = sorted(set().union(*(lcs_positions(sentence, p) for p in prediction_sentences)))
        for token in (sentence[i] for i in union):
            if left_prediction[token] > 0 and left_reference[token] > 0:
                hits += 1
                left_prediction[token] -= 1
                left_reference[token] -= 1
    return _score(hits, n, m)


def _check_types(caller: str, types: Sequence[str]) -> None:
    if isinstance(types, str):
        raise TypeError(f"{caller}: types must be a sequence of names such as ('rouge1', 'rougeL'), got {types!r}")
    for kind in types:
        if kind not in ("rougeL", "rougeLsum") and not _ROUGE_N.match(kind):
            raise ValueError(f"{caller}: unknown ROUGE type {kind!r}; expected 'rouge1'..'rouge9', 'rougeL' or "
                             "'rougeLsum'")


def rouge_scores(prediction: str, reference: str, types: Sequence[str] = ("rouge1", "rouge2", "rougeL", "rougeLsum"),
                 use_stemmer: bool = False, stemmer: Callable[[str], str] | None = None) -> dict[str, RougeScore]:
    """rouge-score's ``RougeScorer(types).score(reference, prediction)``: a
    :class:`RougeScore` per type. No stemmer ships with lamina: ``use_stemmer=True`` needs
    ``stemmer``, a function of one token (e.g. NLTK's ``PorterStemmer().stem``)."""
    _check_types("rouge_scores", types)
    if use_stemmer and stemmer is None:
        raise ValueError("rouge_scores: use_stemmer=True needs a stemmer function (lamina has no Porter stemmer; "
                         "pass e.g. stemmer=nltk.stem.PorterStemmer().stem)")
    if not use_stemmer:
        stemmer = None
    prediction_tokens = rouge_tokenize(prediction, stemmer)
    reference_tokens = rouge_tokenize(reference, stemmer)
    scores = {}
    for kind in types:
        if kind == "rougeL":
            overlap = _lcs_table(reference_tokens, prediction_tokens)[-1][-1]
            scores[kind] = _score(overlap, len(prediction_tokens), len(reference_tokens))
        elif kind == "rougeLsum":
            def sentences(text: str) -> list[list[str]]:
                return [rouge_tokenize(s, stemmer) for s in text.split("\n") if s]
            scores[kind] = _rouge_lsum(sentences(reference), sentences(prediction))
        else:
            n = int(kind[5:])
            predicted, wanted = ngram_counts(prediction_tokens, n), ngram_counts(reference_tokens, n)
            scores[kind] = _score(clipped_matches(predicted, wanted), sum(predicted.values()), sum(wanted.values()))
    return scores


def rouge_corpus(predictions: Sequence[str], references: Sequence[str],
                 types: Sequence[str] = ("rouge1", "rouge2", "rougeL", "rougeLsum"), use_stemmer: bool = False,
                 stemmer: Callable[[str], str] | None = None, bootstrap: int = 0, seed: int = 0) -> dict:
    """Scores averaged over prediction/reference pairs: ``{type: RougeScore}`` of the means;
    with ``bootstrap`` = B > 0 resamples, ``{type: {'low', 'mid', 'high'}}`` of RougeScores at
    the 2.5th, 50th and 97.5th percentiles of the B resampled means."""
    if isinstance(predictions, str) or isinstance(references, str):
        raise TypeError("rouge_corpus: predictions and references must be lists of strings (use rouge_scores "
                        "for one pair)")
    if len(predictions) != len(references):
        raise ValueError(f"rouge_corpus: {len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("rouge_corpus: no prediction/reference pairs to score")
    _check_types("rouge_corpus", types)
    per_pair = [rouge_scores(p, r, types, use_stemmer, stemmer) for p, r in zip(predictions, references)]
    result = {}
    for kind in types:
        values = np.asarray([[s[kind].precision, s[kind].recall, s[kind].fmeasure] for s in per_pair])
        if not bootstrap:
            result[kind] = RougeScore(*(float(v) for v in values.mean(axis=0)))
            continue
        rng = np.random.default_rng(seed)
        means = values[rng.integers(0, len(values), size=(bootstrap, len(values)))].mean(axis=1)
        low, mid, high = np.percentile(means, [2.5, 50.0, 97.5], axis=0)
        result[kind] = {name: RougeScore(*(float(v) for v in row)) for name, row in
                        (("low", low), ("mid", mid), ("high", high))}
    return result
