"""What this machine gives a NumPy framework, next to what it gives PyTorch.

Three facts that bound lamina's speed here, measured in one process:

- GEMM throughput (GFLOP/s) of NumPy's BLAS on one thread and on all of its threads, and
  of PyTorch, on the shapes lamina's layers multiply;
- how much faster the cores run independent single-threaded GEMMs together than one alone
  (lamina splits convolutions into such chunks; 2.0 would be two full cores);
- element-wise transcendental speed (ns per float32 value) of NumPy and PyTorch.

    python benchmarks/machine.py
"""

from __future__ import annotations

import functools
import os
import statistics
import threading
import time

import numpy as np
import torch

from lamina import parallel

SHAPES = {
    "MLP layer 1 (128x784 @ 784x512)": (128, 784, 512),
    "3x3 conv 32->32 as one im2col chunk (2048x288 @ 288x32)": (2048, 288, 32),
    "3x3 conv 32->32 'rows' chunk (2176x96 @ 96x96)": (2176, 96, 96),
    "3x3 conv 64->64 'rows' chunk (1152x192 @ 192x192)": (1152, 192, 192),
}


def seconds(fn, repeats: int = 7, calls: int = 20) -> float:
    """Median seconds per call of ``fn`` over ``repeats`` timed runs of ``calls`` calls."""
    for _ in range(3):
        fn()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        runs.append((time.perf_counter() - start) / calls)
    return statistics.median(runs)


def gflops(matmul, a, b, out) -> float:
    """GFLOP/s of ``matmul(a, b, out=out)``."""
    return 2 * a.shape[0] * a.shape[1] * b.shape[1] / seconds(lambda: matmul(a, b, out=out)) / 1e9


def gemm_table(rng) -> None:
    print("GEMM, GFLOP/s: NumPy one thread | NumPy all threads | PyTorch")
    for title, (m, k, n) in SHAPES.items():
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        out = np.empty((m, n), np.float32)
        with parallel.one_blas_thread():
            one = gflops(np.matmul, a, b, out)
        full = gflops(np.matmul, a, b, out)
        theirs = gflops(torch.matmul, torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(out))
        print(f"  {title:58s} {one:6.0f} | {full:6.0f} | {theirs:6.0f}")


def thread_scaling(rng, threads: int) -> None:
    """Each thread multiplies its own cache-sized matrices with single-threaded BLAS."""
    m, k, n = SHAPES["3x3 conv 32->32 'rows' chunk (2176x96 @ 96x96)"]
    calls = 200
    jobs = []
    for _ in range(threads):
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        jobs.append((a, b, np.empty((m, n), np.float32)))

    def work(job):
        a, b, out = job
        for _ in range(calls):
            np.matmul(a, b, out=out)

    with parallel.one_blas_thread():
        work(jobs[0])
        start = time.perf_counter()
        work(jobs[0])
        alone = time.perf_counter() - start
        pool = [threading.Thread(target=work, args=(job,)) for job in jobs]
        start = time.perf_counter()
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        together = time.perf_counter() - start
    print(f"{threads} independent single-threaded GEMMs at once: {threads * alone / together:.2f}x "
          f"the throughput of one alone ({threads}.00 would be {threads} full cores)")


def transcendentals(rng) -> None:
    x = rng.standard_normal(1 << 20, dtype=np.float32)
    out = np.empty_like(x)
    tx, tout = torch.from_numpy(x), torch.from_numpy(out)
    print("element-wise, ns per float32 value: NumPy (one thread) | PyTorch (all threads)")
    for name in ("tanh", "exp"):
        ours = seconds(functools.partial(getattr(np, name), x, out=out)) / x.size * 1e9
        theirs = seconds(functools.partial(getattr(torch, name), tx, out=tout)) / x.size * 1e9
        print(f"  {name:5s} {ours:5.2f} | {theirs:5.2f}")


def main() -> None:
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    print(f"{threads} cores; NumPy {np.__version__}, PyTorch {torch.__version__}\n")
    gemm_table(rng)
    print()
    if threads > 1:
        thread_scaling(rng, threads)
        print()
    transcendentals(rng)


if __name__ == "__main__":
    main()
