"""A language model's output head and loss, ``linear_cross_entropy``: memory and time of one
forward + backward, lamina against PyTorch, each on its reference path (the whole (N, C)
logits) and chunked (CHUNK rows at a time; PyTorch's ``LinearCrossEntropyOptions``).

Printed for each system: the peak resident-set growth of one step in a child process (see
``memory.py``), and the median time over paired rounds; then lamina's throughput over
PyTorch's on each path (above 1, lamina is faster).

Usage: python benchmarks/linear_cross_entropy.py [--rows 1024] [--features 256] [--classes 16384] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch
from memory import child_peak_mb, peak_growth_mb
from pairing import paired_ratios

import lamina
import lamina.nn.functional as F

CHUNK = 128
SYSTEMS = ("lamina reference", "lamina chunked", "torch reference", "torch chunked")


def _steps(rows: int, features: int, classes: int) -> dict:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, features)).astype(np.float32)
    w = (rng.standard_normal((classes, features)) / np.sqrt(features)).astype(np.float32)
    y = rng.integers(0, classes, rows)
    ours = [lamina.tensor(x, requires_grad=True), lamina.tensor(w, requires_grad=True)]
    theirs = [torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)]
    target = torch.tensor(y)
    options = torch.nn.LinearCrossEntropyOptions(batch_chunk_size=CHUNK)

    def lamina_step(chunk):
        def step():
            for t in ours:
                t.grad = None
            F.linear_cross_entropy(*ours, y, chunk_size=chunk).backward()
        return step

    def torch_step(chunked):
        def step():
            for t in theirs:
                t.grad = None
            torch.nn.functional.linear_cross_entropy(*theirs, target, options=options if chunked else None).backward()
        return step

    return dict(zip(SYSTEMS, (lamina_step(None), lamina_step(CHUNK), torch_step(False), torch_step(True))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--features", type=int, default=256)
    parser.add_argument("--classes", type=int, default=16384)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--peak", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = (args.rows, args.features, args.classes)
    if args.peak:
        print(peak_growth_mb(_steps(*sizes)[args.peak]))
        return
    torch.set_num_threads(os.cpu_count())
    size_args = ["--rows", str(args.rows), "--features", str(args.features), "--classes", str(args.classes)]
    print(f"linear_cross_entropy forward + backward: N={args.rows} rows, D={args.features}, C={args.classes} classes, "
          f"float32 (the logits {args.rows * args.classes * 4 / 2**20:.0f} MiB), chunks of {CHUNK} rows; "
          f"torch threads {torch.get_num_threads()}")
    steps = _steps(*sizes)
    times = {name: [] for name in steps}
    for step in steps.values():
        step()
    for _ in range(args.repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    for name in SYSTEMS:
        peak = child_peak_mb(__file__, ["--peak", name, *size_args])
        shown = "     n/a" if peak is None else f"{peak:8.1f}"
        print(f"  {name:18s} peak +{shown} MiB   {statistics.median(times[name]) * 1e3:9.1f} ms")
    for path in ("reference", "chunked"):
        ratio, low, high = paired_ratios(times[f"torch {path}"], times[f"lamina {path}"])
        print(f"  ratio lamina/PyTorch throughput, {path}: {ratio:.2f} (rounds {low:.2f}-{high:.2f})")


if __name__ == "__main__":
    main()
