"""Mamba-2's chunked SSD against the same recurrence run step by step and against Mamba's
selective scan, on the same sizes, float32, in this process.

Sizes: batch N, length T, H heads of P channels (D = H P channels for the selective scan),
state size S, one group of B and C. The SSD decay is one scalar per head (A (H,)); the
selective scan's is one per channel and state entry (A (D, S)), so the scans differ in what
they compute and have the same inputs otherwise. A step is a forward pass, or a forward and a
backward pass of the output's sum of squares; printed: the best time over ``--repeats`` and
the ratios to the chunked SSD.

Usage: python benchmarks/ssd_vs_scan.py [--lengths 256 1024] [--chunk 64] [--repeats 3]
       [--batch 2] [--heads 8] [--headdim 16] [--state 16]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import lamina
import lamina.functional as F


def _inputs(n: int, t: int, h: int, p: int, s: int, seed: int = 0):
    rng = np.random.default_rng(seed)

    def param(*shape, scale=1.0):
        return lamina.tensor((rng.normal(size=shape) * scale).astype(np.float32), requires_grad=True)

    x, dt = param(n, t, h, p), lamina.tensor(rng.uniform(0.01, 0.1, (n, t, h)).astype(np.float32), requires_grad=True)
    A = lamina.tensor(-rng.uniform(0.5, 2.0, h).astype(np.float32), requires_grad=True)
    B, C = param(n, t, 1, s), param(n, t, 1, s)
    return x, dt, A, B, C


def _systems(n: int, t: int, h: int, p: int, s: int, chunk: int) -> dict:
    x, dt, A, B, C = _inputs(n, t, h, p, s)
    d = h * p

    def leaf(array):
        return lamina.tensor(np.ascontiguousarray(array), requires_grad=True)

    u, delta = leaf(x.numpy().reshape(n, t, d)), leaf(np.repeat(dt.numpy(), p, axis=-1))
    A_full, B2, C2 = leaf(np.repeat(A.numpy(), p)[:, None].repeat(s, axis=1)), leaf(B.numpy()[:, :, 0]), leaf(
        C.numpy()[:, :, 0])
    return {"ssd chunked": lambda: F.ssd(x, dt, A, B, C, chunk),
            "ssd sequential": lambda: F.ssd_reference(x, dt, A, B, C),
            "mamba selective scan": lambda: F.selective_scan(u, delta, A_full, B2, C2)}


def _best(run, backward: bool, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        y = run()
        if backward:
            F.sum(y * y).backward()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--headdim", type=int, default=16)
    parser.add_argument("--state", type=int, default=16)
    args = parser.parse_args()
    n, h, p, s = args.batch, args.heads, args.headdim, args.state
    print(f"N={n} H={h} P={p} (D={h * p}) S={s} chunk={args.chunk}, float32, best of {args.repeats}")
    for t in args.lengths:
        systems = _systems(n, t, h, p, s, args.chunk)
        for backward in (False, True):
            times = {name: _best(run, backward, args.repeats) for name, run in systems.items()}
            base = times["ssd chunked"]
            label = "forward+backward" if backward else "forward"
            cells = ", ".join(f"{name} {1e3 * seconds:.1f} ms ({seconds / base:.2f}x)"
                              for name, seconds in times.items())
            print(f"T={t} {label}: {cells}")


if __name__ == "__main__":
    main()
