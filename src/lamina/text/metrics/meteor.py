"""METEOR with exact word matches only, as NLTK's ``meteor_score`` without its stemmer
and WordNet synonym stages.

The hypothesis and reference (token lists, or strings split on whitespace; lowercased)
are aligned greedily: from the last hypothesis word backwards, each takes the last still
free identical reference word. With m matches, P = m / |hypothesis|, R = m / |reference|,
ch the number of chunks (runs of matches adjacent on both sides),

    F_mean = P R / (alpha P + (1 - alpha) R),   penalty = gamma (ch / m)^beta,
    METEOR = F_mean (1 - penalty),

alpha = 0.9, beta = 3, gamma = 0.5; 0 without a match. Several references: the best.

Left out: stem and synonym (WordNet) matches and paraphrase tables, and METEOR 1.5's
alignment search that minimizes chunks, its per-language parameters and its
function-word weighting; scores therefore equal NLTK's only where those stages find
nothing, and are below the official Java METEOR's in general.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["meteor_exact"]


def _tokens(text: str | Sequence[str]) -> list[str]:
    words = text.split() if isinstance(text, str) else list(text)
    return [w.lower() for w in words]


def exact_alignment(hypothesis: list[str], reference: list[str]) -> list[tuple[int, int]]:
    """(hypothesis index, reference index) pairs of the greedy exact alignment, by hypothesis index."""
    free = list(range(len(reference)))
    pairs = []
    for i in range(len(hypothesis) - 1, -1, -1):
        for slot in range(len(free) - 1, -1, -1):
            if hypothesis[i] == reference[free[slot]]:
                pairs.append((i, free.pop(slot)))
                break
    return sorted(pairs)


def _chunks(pairs: list[tuple[int, int]]) -> int:
    return 1 + sum(1 for (a, b), (c, d) in zip(pairs, pairs[1:]) if not (c == a + 1 and d == b + 1))


def _single(hypothesis: list[str], reference: list[str], alpha: float, beta: float, gamma: float) -> float:
    pairs = exact_alignment(hypothesis, reference)
    if not pairs:
        return 0.0
    precision, recall = len(pairs) / len(hypothesis), len(pairs) / len(reference)
    f_mean = precision * recall / (alpha * precision + (1 - alpha) * recall)
    return f_mean * (1 - gamma * (_chunks(pairs) / len(pairs)) ** beta)


def meteor_exact(references: Sequence[str | Sequence[str]], hypothesis: str | Sequence[str], alpha: float = 0.9,
                 beta: float = 3.0, gamma: float = 0.5) -> float:
    """METEOR of ``hypothesis`` against its best reference, exact matches only (see the
    module notes for what is left out)."""
    if isinstance(references, str):
        references = [references]
    if not references:
        raise ValueError("meteor_exact: references must hold at least one reference, got none")
    hypothesis_tokens = _tokens(hypothesis)
    return max(_single(hypothesis_tokens, _tokens(ref), alpha, beta, gamma) for ref in references)
