"""N-gram counting shared by the generation metrics."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence

__all__ = ["clipped_matches", "ngram_counts"]


def ngram_counts(tokens: Sequence[Hashable], n: int) -> Counter:
    """How often each n-gram (a tuple of n tokens, or a substring for a string) occurs."""
    if isinstance(tokens, str):
        return Counter(tokens[i:i + n] for i in range(len(tokens) - n + 1))
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def clipped_matches(candidate: Counter, reference: Counter) -> int:
    """sum over the candidate's n-grams g of min(count_candidate(g), count_reference(g))."""
    return sum(min(count, reference[gram]) for gram, count in candidate.items() if gram in reference)
