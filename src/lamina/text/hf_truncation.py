"""Truncation of encodings as the ``tokenizers`` library does it, overflowing windows included.

The budget is ``max_length`` less the special tokens the post-processor will add. With a pair of
texts of n1 and n2 tokens (total n1 + n2 > budget) the strategies keep:

* ``LongestFirst``: with s = min(n1, n2) and l = max(n1, n2), the shorter whole and the longer cut to
  budget - s when s <= budget / 2; otherwise both cut, the shorter to floor(budget / 2) and the longer
  to ceil(budget / 2) (equal lengths: the first gets the floor). A single text is cut to the budget.
* ``OnlyFirst`` / ``OnlySecond``: that text loses n1 + n2 - budget tokens; an error when that would
  leave it empty, or when ``OnlySecond`` has no second text.

A text cut from ``n`` to ``k`` tokens keeps the window ``[0, k)`` (``[n - k, n)`` when truncating from
the left) and puts the rest into overflowing windows of ``k`` tokens, each starting ``k - stride``
tokens after the one before (before, from the left), so that consecutive windows share ``stride``
tokens, until a window reaches the end of the text.
"""

from __future__ import annotations

from lamina.text.hf_processors import Encoding

__all__ = ["STRATEGIES", "truncate_pair", "truncated_lengths", "window_ranges"]

STRATEGIES = ("LongestFirst", "OnlyFirst", "OnlySecond")


def window_ranges(n_tokens: int, length: int, stride: int = 0, from_left: bool = False) -> list[tuple[int, int]]:
    """The token ranges ``[start, end)`` a text of ``n_tokens`` tokens truncated to ``length`` is cut
    into: the kept window first, then the overflowing ones (see the module docstring)."""
    if length >= n_tokens:
        return [(0, n_tokens)]
    if length == 0:
        return [(0, 0), (0, n_tokens)]
    if not 0 <= stride < length:
        raise ValueError(f"truncation: stride={stride} must be at least 0 and less than the {length} tokens a "
                         "truncated text keeps (max_length less the special tokens and the other text)")
    step = length - stride
    ranges = []
    if from_left:
        for end in range(n_tokens, 0, -step):
            ranges.append((max(end - length, 0), end))
            if end <= length:
                break
    else:
        for start in range(0, n_tokens, step):
            ranges.append((start, min(start + length, n_tokens)))
            if start + length >= n_tokens:
                break
    return ranges


def truncated_lengths(n_first: int, n_second: int | None, budget: int,
                      strategy: str = "LongestFirst") -> tuple[int, int | None]:
    """The numbers of tokens the first and the second text (None: no second) keep within ``budget``."""
    if strategy not in STRATEGIES:
        raise ValueError(f"truncation: strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if budget == 0:
        return 0, None if n_second is None else 0
    total = n_first + (n_second or 0)
    if total <= budget:
        return n_first, n_second
    if strategy == "LongestFirst":
        if n_second is None:
            return budget, None
        shorter, longer = sorted((n_first, n_second))
        if shorter <= budget - shorter:
            shorter, longer = shorter, budget - shorter
        else:
            shorter, longer = budget // 2, budget - budget // 2
        return (longer, shorter) if n_first > n_second else (shorter, longer)
    if strategy == "OnlySecond" and n_second is None:
        raise ValueError("truncation: strategy 'only_second' needs a second text (a pair) to truncate")
    excess = total - budget
    target = n_first if strategy == "OnlyFirst" else n_second
    if target <= excess:
        which = "first" if strategy == "OnlyFirst" else "second"
        raise ValueError(f"truncation: the {which} text has {target} tokens but {excess} must go to fit "
                         f"max_length (less the special tokens); use another strategy or a larger max_length")
    if strategy == "OnlyFirst":
        return n_first - excess, n_second
    return n_first, n_second - excess


def _windowed(encoding: Encoding, length: int, stride: int, from_left: bool) -> Encoding:
    """``encoding`` truncated to ``length`` tokens, the rest in its ``overflowing`` windows."""
    ranges = window_ranges(len(encoding), length, stride, from_left)
    if len(ranges) == 1:
        return encoding
    kept = encoding.sliced(*ranges[0])
    kept.overflowing = [encoding.sliced(start, end) for start, end in ranges[1:]]
    return kept


def truncate_pair(first: Encoding, second: Encoding | None, budget: int, strategy: str = "LongestFirst",
                  stride: int = 0, from_left: bool = False) -> tuple[Encoding, Encoding | None]:
    """``first`` and ``second`` truncated to fit ``budget`` tokens together (module docstring), each
    with its overflowing windows."""
    n_first, n_second = truncated_lengths(len(first), None if second is None else len(second), budget, strategy)
    first = _windowed(first, n_first, stride, from_left)
    if second is not None:
        second = _windowed(second, n_second, stride, from_left)
    return first, second
