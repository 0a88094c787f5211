"""How the benchmarks compare two systems timed in the same rounds."""

from __future__ import annotations

import statistics


def paired_ratios(ours: list[float], theirs: list[float]) -> tuple[float, float, float]:
    """(median, lowest, highest) over rounds of ours[i] / theirs[i], each round's pair timed
    back to back: a slow spell of the machine slows both sides of a pair, so the ratio within
    a round is steadier than the ratio of the two medians."""
    ratios = sorted(a / b for a, b in zip(ours, theirs, strict=True))
    return statistics.median(ratios), ratios[0], ratios[-1]
