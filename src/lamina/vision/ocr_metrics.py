"""The metrics that text-recognition papers and toolkits report, on predicted and reference strings.

With D(a, b) the Levenshtein distance (the fewest single-item insertions, deletions and
substitutions that turn a into b), over a corpus of pairs (p_i, r_i), i = 1..N:

* character error rate, summed over the corpus (not averaged per line):
  CER = sum_i D(p_i, r_i) / sum_i |r_i|;
* word (sequence) accuracy: the fraction of lines read exactly, (1/N) sum_i [p_i = r_i];
* normalized edit distance (ICDAR 2019, robust reading challenges):
  NED = (1/N) sum_i D(p_i, r_i) / max(|p_i|, |r_i|), a pair of empty strings counting 0;
  the challenges rank by 1 - NED.

Strings compare character by character; any sequences of hashable items (lists of word
tokens, label ids) work for :func:`edit_distance` and the metrics alike.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

__all__ = ["character_error_rate", "edit_distance", "normalized_edit_distance", "recognition_metrics",
           "word_accuracy"]


def edit_distance(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Levenshtein distance between two sequences, by the dynamic programme over prefixes

        d(i, j) = min(d(i-1, j) + 1, d(i, j-1) + 1, d(i-1, j-1) + [a_i != b_j]),

    d(i, 0) = i, d(0, j) = j, kept one row at a time."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, item in enumerate(a, start=1):
        current = [i]
        for j, other in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (item != other)))
        previous = current
    return previous[-1]


def _pairs(predictions: Sequence, references: Sequence, who: str) -> list[tuple]:
    if isinstance(predictions, str) or isinstance(references, str):
        raise TypeError(f"{who}: expected sequences of predictions and references (e.g. lists of strings), got "
                        f"{type(predictions).__name__} and {type(references).__name__}; wrap a single pair in lists")
    predictions, references = list(predictions), list(references)
    if len(predictions) != len(references) or not references:
        raise ValueError(f"{who}: expected as many predictions as references, at least one, got "
                         f"{len(predictions)} and {len(references)}")
    return list(zip(predictions, references))


def character_error_rate(predictions: Sequence, references: Sequence) -> float:
    """CER = sum_i D(p_i, r_i) / sum_i |r_i| over the corpus (module docstring); it exceeds 1
    when the predictions hold more wrong characters than the references hold characters."""
    pairs = _pairs(predictions, references, "character_error_rate")
    characters = sum(len(r) for _, r in pairs)
    if characters == 0:
        raise ValueError("character_error_rate: the references hold no characters, so the rate is undefined")
    return sum(edit_distance(p, r) for p, r in pairs) / characters


def word_accuracy(predictions: Sequence, references: Sequence, ignore_case: bool = False) -> float:
    """The fraction of predictions equal to their reference (``ignore_case``: compared lower-cased,
    as the case-insensitive benchmarks do)."""
    pairs = _pairs(predictions, references, "word_accuracy")
    if ignore_case:
        pairs = [(p.lower(), r.lower()) for p, r in pairs]
    return sum(p == r for p, r in pairs) / len(pairs)


def normalized_edit_distance(predictions: Sequence, references: Sequence) -> float:
    """NED = (1/N) sum_i D(p_i, r_i) / max(|p_i|, |r_i|), in [0, 1] (ICDAR 2019 reports 1 - NED)."""
    pairs = _pairs(predictions, references, "normalized_edit_distance")
    return sum(edit_distance(p, r) / max(len(p), len(r)) for p, r in pairs if len(p) or len(r)) / len(pairs)


def recognition_metrics(predictions: Sequence, references: Sequence) -> dict[str, float]:
    """All of them at once: ``cer``, ``word_accuracy``, ``ned`` and ``one_minus_ned``."""
    ned = normalized_edit_distance(predictions, references)
    return {"cer": character_error_rate(predictions, references),
            "word_accuracy": word_accuracy(predictions, references), "ned": ned, "one_minus_ned": 1.0 - ned}
