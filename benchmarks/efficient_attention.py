"""Linformer, Nystromformer and Reformer LSH attention against dense softmax attention at long
sequences, all in lamina, in this process.

One step is a forward and a backward pass (the sum of the output's squares) through attention
over (B, H, T, d) float32 queries, keys and values (LSH attention: the queries double as keys).
Settings per method: Linformer k = ``--proj`` rows (E = F); Nystromformer ``--landmarks``
landmarks, 6 pseudo-inverse iterations; LSH ``--buckets`` buckets, ``--hashes`` rounds, chunks
of ``--chunk``. Printed for each T: the best time of one step over the rounds, NumPy's peak
allocation in one step (tracemalloc), and the ratios dense / method of both.

Usage: python benchmarks/efficient_attention.py [--lengths 2048 4096] [--repeats N] [--proj 128]
       [--landmarks 64] [--buckets 32] [--hashes 2] [--chunk 64] [--threads N]
"""

from __future__ import annotations

import argparse

import numpy as np
from attention_memory import best_times
from memory import tracemalloc_mb
from threadpoolctl import threadpool_limits

import lamina
import lamina.functional as F

BATCH, HEADS, FEATURES = 1, 4, 64


def _steps(length: int, args) -> dict:
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((BATCH, HEADS, length, FEATURES)).astype(np.float32) for _ in range(3)]
    q, k, v = (lamina.tensor(a, requires_grad=True) for a in arrays)
    projection = lamina.tensor(rng.standard_normal((args.proj, length)).astype(np.float32) / np.sqrt(args.proj),
                               requires_grad=True)
    rotations = rng.standard_normal((FEATURES, args.hashes, args.buckets // 2))
    methods = {
        "dense": lambda: F.scaled_dot_product_attention(q, k, v),
        "linformer": lambda: F.linformer_attention(q, k, v, projection),
        "nystrom": lambda: F.nystrom_attention(q, k, v, args.landmarks),
        "lsh": lambda: F.lsh_attention(q, v, rotations, args.chunk),
    }

    def step_of(attend):
        def step():
            for t in (q, k, v, projection):
                t.grad = None
            out = attend()
            (out * out).sum().backward()
        return step

    return {name: step_of(attend) for name, attend in methods.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[2048, 4096])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--proj", type=int, default=128)
    parser.add_argument("--landmarks", type=int, default=64)
    parser.add_argument("--buckets", type=int, default=32)
    parser.add_argument("--hashes", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    print(f"B={BATCH} H={HEADS} d={FEATURES} float32, forward + backward; k={args.proj}, "
          f"landmarks={args.landmarks}, LSH {args.buckets} buckets x {args.hashes} rounds, chunk {args.chunk}")
    with threadpool_limits(args.threads):
        for length in args.lengths:
            steps = _steps(length, args)
            times = best_times(steps, args.repeats)
            memory = {name: tracemalloc_mb(step) for name, step in steps.items()}
            print(f"T={length}")
            for name in steps:
                print(f"  {name:10s} {times[name] * 1e3:9.1f} ms {memory[name]:9.1f} MB   dense/this: time "
                      f"{times['dense'] / times[name]:5.2f}x, memory {memory['dense'] / memory[name]:5.2f}x")


if __name__ == "__main__":
    main()
