"""Attention's memory and time: lamina's dense and blockwise scaled dot-product attention
against PyTorch's ``scaled_dot_product_attention``, at sequence lengths T = 1k..4k.

One step is a forward and a backward pass (the sum of the output's squares) through
attention over (B, H, T, E) float32 queries, keys and values, with or without the causal
rule. Printed for each T:

- peak memory of one step: the growth of the peak resident set (VmHWM, reset through
  /proc/self/clear_refs) in a child process, measured the same way for every system (the
  recipe of ``conv_kernels.peak_rss_mb``: glibc serves large blocks by mmap, so the
  resident set follows the live arrays), and for lamina tracemalloc's peak too (NumPy
  reports its allocations to tracemalloc; PyTorch does not);
- the best time of one step over the rounds (each round runs every system once, back to
  back, so that a busy spell of a shared machine slows all of them alike);
- the ratios: dense / blockwise memory, and blockwise / dense and blockwise / PyTorch time.

Usage: python benchmarks/attention_memory.py [--lengths 1024 2048 4096] [--repeats N] [--causal]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from memory import child_peak_mb, peak_growth_mb, tracemalloc_mb

import lamina
import lamina.functional as F

BATCH, HEADS, FEATURES = 1, 4, 64
SYSTEMS = ("lamina dense", "lamina blockwise", "torch sdpa")


def _steps(length: int, causal: bool) -> dict:
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((BATCH, HEADS, length, FEATURES)).astype(np.float32) for _ in range(3)]
    ours = [lamina.tensor(a, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]

    def lamina_step(block_size):
        def step():
            for t in ours:
                t.grad = None
            out = F.scaled_dot_product_attention(*ours, causal=causal, block_size=block_size)
            (out * out).sum().backward()
        return step

    def torch_step():
        for t in theirs:
            t.grad = None
        out = torch.nn.functional.scaled_dot_product_attention(*theirs, is_causal=causal)
        (out * out).sum().backward()

    return {"lamina dense": lamina_step(None), "lamina blockwise": lamina_step("auto"), "torch sdpa": torch_step}


def _child_peak(length: int, causal: bool, system: str) -> None:
    """In a fresh process: the growth of the peak resident set over one step, after one warm-up."""
    print(peak_growth_mb(_steps(length, causal)[system]))


def peak_rss_mb(length: int, causal: bool, system: str) -> float | None:
    return child_peak_mb(__file__, ["--peak", str(length), system] + (["--causal"] if causal else []), timeout=900)


def best_times(steps: dict, repeats: int) -> dict:
    """The shortest time of each step over ``repeats`` rounds, after one untimed round."""
    times = {name: [] for name in steps}
    for round_ in range(repeats + 1):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            if round_:
                times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


def _mb(value: float | None) -> str:
    return "     n/a" if value is None else f"{value:8.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--causal", action="store_true")
    parser.add_argument("--peak", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak:
        _child_peak(int(args.peak[0]), args.causal, args.peak[1])
        return
    torch.set_num_threads(os.cpu_count())
    print(f"attention forward + backward, (B, H, T, E) = ({BATCH}, {HEADS}, T, {FEATURES}) float32, "
          f"causal={args.causal}, blockwise block_size='auto'; torch threads {torch.get_num_threads()}")
    print(f"{'T':>6} {'system':18s} {'peak RSS MiB':>12} {'tracemalloc MiB':>15} {'time s':>8}")
    for length in args.lengths:
        steps = _steps(length, args.causal)
        rss = {system: peak_rss_mb(length, args.causal, system) for system in SYSTEMS}
        traced = {system: tracemalloc_mb(steps[system]) for system in SYSTEMS if system.startswith("lamina")}
        times = best_times(steps, args.repeats)
        for system in SYSTEMS:
            shown = _mb(traced[system]) if system in traced else "     n/a"
            print(f"{length:6d} {system:18s} {_mb(rss[system]):>12} {shown:>15} {times[system]:8.3f}")
        dense, blockwise = rss["lamina dense"], rss["lamina blockwise"]
        by_rss = f"{dense / blockwise:.1f}x" if dense and blockwise else "n/a"
        print(f"{length:6d} memory dense/blockwise: RSS {by_rss}, tracemalloc "
              f"{traced['lamina dense'] / traced['lamina blockwise']:.1f}x; time blockwise/dense "
              f"{times['lamina blockwise'] / times['lamina dense']:.2f}, blockwise/torch "
              f"{times['lamina blockwise'] / times['torch sdpa']:.2f}")


if __name__ == "__main__":
    main()
