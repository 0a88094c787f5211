"""Convolution and pooling kernels, forward + backward: lamina against PyTorch.

For each shape, lamina (NHWC, im2col) and PyTorch in both its layouts (NCHW and
channels_last) run the same step -- forward, then backward of a fixed upstream gradient
to the input, the weights and the bias -- in the same process, interleaved: REPEATS
rounds in which each system runs untimed for SETTLE_S seconds and then TIMED timed steps
(see ``run_case``); the medians are compared. The ratio is lamina's throughput over
PyTorch's better layout (higher is better for lamina; 1.0 = as fast as PyTorch). The 5x5
shapes also run lamina's FFT path.

Peak memory of one step: the growth of the peak resident set (VmHWM, reset through
/proc/self/clear_refs), measured the same way for every system in a child process (see
``peak_rss_mb``), and for lamina also tracemalloc's peak (NumPy reports its allocations to
tracemalloc; PyTorch does not).

Usage: python benchmarks/conv_kernels.py [REPEATS]
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import numpy as np
import torch
from memory import child_peak_mb, peak_growth_mb, tracemalloc_mb

import lamina
import lamina.functional as F

REPEATS = 7
TIMED = 3
WARMUP = 2
SETTLE_S = 0.15


def _conv_case(n, h, c, k, f, padding):
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((n, h, h, c)).astype(np.float32)
    w0 = (rng.standard_normal((k, f, f, c)) * np.sqrt(2.0 / (f * f * c))).astype(np.float32)
    b0 = rng.standard_normal(k).astype(np.float32) * 0.1
    p = (f - 1) // 2 if padding == "same" else 0
    ho = h + 2 * p - f + 1
    dy0 = rng.standard_normal((n, ho, ho, k)).astype(np.float32)

    x = lamina.tensor(x0, requires_grad=True)
    w = lamina.tensor(w0, requires_grad=True)
    b = lamina.tensor(b0, requires_grad=True)

    def lamina_step(algorithm="im2col"):
        x.grad = w.grad = b.grad = None
        y = F.conv2d(x, w, b, padding=padding, algorithm=algorithm)
        y.backward(dy0)

    def torch_step(channels_last: bool):
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        xt = torch.from_numpy(x0).permute(0, 3, 1, 2).contiguous(memory_format=fmt).requires_grad_()
        wt = torch.from_numpy(w0).permute(0, 3, 1, 2).contiguous(memory_format=fmt).requires_grad_()
        bt = torch.from_numpy(b0).clone().requires_grad_()
        dyt = torch.from_numpy(dy0).permute(0, 3, 1, 2).contiguous(memory_format=fmt)

        def step():
            xt.grad = wt.grad = bt.grad = None
            y = torch.nn.functional.conv2d(xt, wt, bt, padding=p)
            y.backward(dyt)

        return step

    runners = {"lamina": lamina_step, "torch NCHW": torch_step(False), "torch channels_last": torch_step(True)}
    if f == 5:
        runners["lamina fft"] = lambda: lamina_step("fft")
    return runners


def _pool_case(n, h, c, f):
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((n, h, h, c)).astype(np.float32)
    dy0 = rng.standard_normal((n, h // f, h // f, c)).astype(np.float32)
    x = lamina.tensor(x0, requires_grad=True)

    def lamina_step():
        x.grad = None
        y = F.max_pool2d(x, f)
        y.backward(dy0)

    def torch_step(channels_last: bool):
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        xt = torch.from_numpy(x0).permute(0, 3, 1, 2).contiguous(memory_format=fmt).requires_grad_()
        dyt = torch.from_numpy(dy0).permute(0, 3, 1, 2).contiguous(memory_format=fmt)

        def step():
            xt.grad = None
            y = torch.nn.functional.max_pool2d(xt, f)
            y.backward(dyt)

        return step

    return {"lamina": lamina_step, "torch NCHW": torch_step(False), "torch channels_last": torch_step(True)}


CASES = {
    "Conv2D 3x3 32->32, 32x32, batch 64": lambda: _conv_case(64, 32, 32, 32, 3, "same"),
    "Conv2D 3x3 64->64, 16x16, batch 64": lambda: _conv_case(64, 16, 64, 64, 3, "same"),
    "Conv2D 5x5 1->6, 32x32, batch 128": lambda: _conv_case(128, 32, 1, 6, 5, "valid"),
    "Conv2D 5x5 6->16, 14x14, batch 128": lambda: _conv_case(128, 14, 6, 16, 5, "valid"),
    "MaxPool 2x2 on (64, 32, 32, 32)": lambda: _pool_case(64, 32, 32, 2),
}


def _child_peak(case: str, key: str) -> None:
    """In a fresh process: growth of the peak resident set over one step (after warm-up)."""
    torch.set_num_threads(os.cpu_count())
    print(peak_growth_mb(CASES[case]()[key], WARMUP))


def peak_rss_mb(case: str, key: str) -> float | None:
    """Peak resident-set growth of one step, measured the same way for every system
    (:func:`memory.child_peak_mb`)."""
    return child_peak_mb(__file__, ["--peak", case, key])


def run_case(name: str, runners: dict, repeats: int) -> dict:
    for _ in range(WARMUP):
        for step in runners.values():
            step()
    times = {key: [] for key in runners}
    for _ in range(repeats):
        for key, step in runners.items():
            # Untimed steps of the same system for SETTLE_S first: OpenBLAS's and OpenMP's
            # worker threads keep spinning for up to ~0.1 s after a call, which on 2 cores
            # halves the speed of whichever system runs next. (Sleeping instead lets the
            # virtual CPUs idle, and the next steps run slow while they wake up.)
            start = time.perf_counter()
            while time.perf_counter() - start < SETTLE_S:
                step()
            for _ in range(TIMED):
                start = time.perf_counter()
                step()
                times[key].append(time.perf_counter() - start)
    med = {key: statistics.median(v) * 1e3 for key, v in times.items()}
    best_torch = min(("torch NCHW", "torch channels_last"), key=lambda k: med[k])
    print(f"\n{name}  (forward + backward, median of {repeats} x {TIMED} interleaved runs)")
    for key, ms in med.items():
        extra = ""
        if key.startswith("lamina"):
            extra = f"   ratio lamina/PyTorch throughput = {med[best_torch] / ms:.2f}  (vs {best_torch})"
        print(f"  {key:22s} {ms:8.2f} ms  (min {min(times[key]) * 1e3:7.2f}){extra}")
    print("  peak memory of one step:")
    for key, step in runners.items():
        rss = peak_rss_mb(name, key)
        text = f"resident set +{rss:6.1f} MiB" if rss is not None else "resident set n/a"
        if key.startswith("lamina"):
            text += f"   (tracemalloc: {tracemalloc_mb(step):.1f} MiB)"
        print(f"    {key:22s} {text}")
    return {"median_ms": med, "best_torch": best_torch}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--peak":
        _child_peak(sys.argv[2], sys.argv[3])
        return
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else REPEATS
    torch.set_num_threads(os.cpu_count())
    print(f"NumPy {np.__version__}, PyTorch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"{os.cpu_count()} cores")
    summary = {}
    for name, make in CASES.items():
        result = run_case(name, make(), repeats)
        med = result["median_ms"]
        summary[name] = {key: med[result["best_torch"]] / ms for key, ms in med.items() if key.startswith("lamina")}
    print("\nlamina/PyTorch throughput ratios (PyTorch's better layout):")
    for name, ratios in summary.items():
        print(f"  {name:38s} " + "  ".join(f"{k} {v:.2f}" for k, v in ratios.items()))


if __name__ == "__main__":
    main()
