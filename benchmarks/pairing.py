"""How the benchmarks compare two systems timed in the same rounds."""

from __future__ import annotations

import statistics
import time


def paired_ratios(ours: list[float], theirs: list[float]) -> tuple[float, float, float]:
    """(median, lowest, highest) over rounds of ours[i] / theirs[i], each round's pair timed
    back to back: a slow spell of the machine slows both sides of a pair, so the ratio within
    a round is steadier than the ratio of the two medians."""
    ratios = sorted(a / b for a, b in zip(ours, theirs, strict=True))
    return statistics.median(ratios), ratios[0], ratios[-1]


def _elapsed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare_rounds(name: str, ours, theirs, repeats: int) -> float:
    """Run ``ours`` and ``theirs`` once each to warm up, then ``repeats`` rounds of one call
    each, back to back; print the median times and the lamina/PyTorch throughput ratio (their
    time over ours: above 1, lamina is faster) with its range over the rounds. Returns the
    median ratio."""
    ours(), theirs()
    times_ours, times_theirs = [], []
    for _ in range(repeats):
        times_ours.append(_elapsed(ours))
        times_theirs.append(_elapsed(theirs))
    median, low, high = paired_ratios(times_theirs, times_ours)
    print(f"{name:<52} lamina {statistics.median(times_ours) * 1e3:8.2f} ms  "
          f"torch {statistics.median(times_theirs) * 1e3:8.2f} ms  ratio {median:5.2f} ({low:.2f}-{high:.2f})")
    return median
