"""How the benchmarks compare two systems timed in the same rounds."""

from __future__ import annotations

import argparse
import os
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


def case_parser(doc: str, cases: dict) -> argparse.ArgumentParser:
    """The options every table of cases shares: --repeats, --only, --threads (sizes are the
    caller's to add)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--only", default=None, help=f"comma-separated cases among {', '.join(cases)}")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="threads of torch and of the BLAS/LAPACK calls NumPy makes (default: the core count)")
    return parser


def run_cases(cases: dict, args: argparse.Namespace, *sizes) -> None:
    """Set torch's and BLAS's threads to ``args.threads``, then compare each chosen case, built
    as ``cases[key](rng, *sizes)`` -> (name, ours, theirs)."""
    import numpy as np
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    names = args.only.split(",") if args.only else list(cases)
    print(f"threads: torch {torch.get_num_threads()}; rounds {args.repeats}, median of the rounds' ratios\n")
    for key in names:
        compare_rounds(*cases[key](np.random.default_rng(0), *sizes), args.repeats)
