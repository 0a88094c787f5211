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
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import torch

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


def _rss_kib() -> tuple[int, int]:
    values = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("VmHWM", "VmRSS")):
                key, value = line.split(":")
                values[key] = int(value.split()[0])
    return values["VmRSS"], values["VmHWM"]


def _child_peak(length: int, causal: bool, system: str) -> None:
    """In a fresh process: the growth of the peak resident set over one step, after one warm-up."""
    step = _steps(length, causal)[system]
    step()
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")                                   # VmHWM starts again from the current RSS
    before, _ = _rss_kib()
    step()
    print((_rss_kib()[1] - before) / 1024)


def peak_rss_mb(length: int, causal: bool, system: str) -> float | None:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0", LAMINA_MALLOC_TUNING="0")
    command = [sys.executable, __file__, "--peak", str(length), system] + (["--causal"] if causal else [])
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, check=True)
        return float(done.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError, OSError):
        return None


def tracemalloc_mb(step) -> float:
    """Peak of NumPy's allocations during one step (after one untraced step)."""
    step()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    step()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return (peak - base) / 2**20


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
