"""chrF and chrF++ (Popović 2015, 2017) as sacrebleu's ``CHRF`` computes them.

Character n-grams (n = 1 .. ``char_order``) are taken from each text with all whitespace
removed; chrF++ (``word_order`` = 2) adds word n-grams (n = 1 .. ``word_order``) of the
text split on whitespace, a punctuation mark at the end of a word (else at its start)
split off. For each order the statistics are the hypothesis's n-gram count (0 when the
reference has none of that order), the reference's count and the clipped matches; a
sentence with several references keeps the statistics of the one with the best sentence
score. Over a corpus the statistics are summed, then with P_n, R_n the precision and
recall of each order that both sides have n-grams of, averaged over those orders,

    chrF_beta = 100 (1 + beta^2) P R / (beta^2 P + R)     (0 when P + R = 0).
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass

from lamina.text.metrics.bleu import _reference_streams
from lamina.text.metrics.ngrams import clipped_matches, ngram_counts

__all__ = ["CHRFScore", "chrf", "sentence_chrf"]

_PUNCTUATION = frozenset(string.punctuation)


@dataclass
class CHRFScore:
    """A chrF result: ``score`` in percent and the settings it was computed with."""

    score: float
    char_order: int
    word_order: int
    beta: float

    @property
    def name(self) -> str:
        return f"chrF{self.beta:g}" + "+" * self.word_order

    def __str__(self) -> str:
        return f"{self.name} = {self.score:.2f}"


def chrf_words(text: str) -> list[str]:
    """The words of chrF++: whitespace-split, a punctuation mark at the end of a word of two
    or more characters split off, else one at its start (``'(hi)'`` -> ``'(hi'``, ``')'``)."""
    words = []
    for word in text.split():
        if len(word) > 1 and word[-1] in _PUNCTUATION:
            words += [word[:-1], word[-1]]
        elif len(word) > 1 and word[0] in _PUNCTUATION:
            words += [word[0], word[1:]]
        else:
            words.append(word)
    return words


def _ngrams(text: str, char_order: int, word_order: int, whitespace: bool) -> list:
    chars = text if whitespace else "".join(text.split())
    grams = [ngram_counts(chars, n) for n in range(1, char_order + 1)]
    if word_order:
        words = chrf_words(text)
        grams += [ngram_counts(words, n) for n in range(1, word_order + 1)]
    return grams


def _statistics(hypothesis_grams: list, reference_grams: list) -> list[int]:
    """[hypothesis count, reference count, matches] per order, flattened."""
    stats = []
    for h, r in zip(hypothesis_grams, reference_grams):
        stats += [sum(h.values()) if r else 0, sum(r.values()), clipped_matches(h, r)]
    return stats


def chrf_from_statistics(stats: Sequence[float], beta: float = 2.0) -> float:
    """The chrF score of summed statistics (see the module notes)."""
    factor = beta ** 2
    precision = recall = 0.0
    orders = 0
    for i in range(0, len(stats), 3):
        n_hyp, n_ref, n_match = stats[i:i + 3]
        if n_hyp > 0 and n_ref > 0:
            precision += n_match / n_hyp
            recall += n_match / n_ref
            orders += 1
    if orders == 0 or precision + recall == 0:
        return 0.0
    precision, recall = precision / orders, recall / orders
    return 100 * (1 + factor) * precision * recall / (factor * precision + recall)


def chrf(hypotheses: Sequence[str], references: Sequence[Sequence[str | None]], char_order: int = 6,
         word_order: int = 0, beta: float = 2.0, lowercase: bool = False, whitespace: bool = False) -> CHRFScore:
    """sacrebleu's ``corpus_chrf``: ``references`` as reference streams
    (``references[k][i]`` the k-th reference of hypothesis i); ``word_order=2`` is chrF++;
    ``whitespace=True`` keeps spaces inside the character n-grams."""
    for what, value, low in (("char_order", char_order, 1), ("word_order", word_order, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"chrf: {what} must be an int >= {low}, got {value!r}")
    if not beta > 0:
        raise ValueError(f"chrf: beta must be positive, got {beta!r}")
    per_sentence = _reference_streams("chrf", hypotheses, references)

    def grams(text: str) -> list:
        return _ngrams(text.lower() if lowercase else text, char_order, word_order, whitespace)

    totals = [0] * (3 * (char_order + word_order))
    for hypothesis, refs in zip(hypotheses, per_sentence):
        hypothesis_grams = grams(hypothesis)
        best, best_score = None, -1.0
        for ref in refs:
            stats = _statistics(hypothesis_grams, grams(ref))
            score = chrf_from_statistics(stats, beta)
            if score > best_score:
                best, best_score = stats, score
        totals = [a + b for a, b in zip(totals, best)]
    return CHRFScore(chrf_from_statistics(totals, beta), char_order, word_order, beta)


def sentence_chrf(hypothesis: str, references: Sequence[str], char_order: int = 6, word_order: int = 0,
                  beta: float = 2.0, lowercase: bool = False, whitespace: bool = False) -> CHRFScore:
    """chrF of one hypothesis against its references (a list of strings)."""
    if isinstance(references, str):
        references = [references]
    if not references:
        raise ValueError("sentence_chrf: references must hold at least one reference string, got none")
    return chrf([hypothesis], [[ref] for ref in references], char_order, word_order, beta, lowercase, whitespace)
