"""Gradient checkpointing: memory saved and time paid, lamina against PyTorch.

A deep MLP (DEPTH Dense(WIDTH) + ReLU pairs, batch BATCH) takes one training step --
forward, cost, backward -- four ways: lamina and PyTorch, each plainly and through its
``checkpoint_sequential`` with sqrt(layers) segments. Printed:

- the peak resident-set growth of one step, measured the same way for all four in a
  child process (see ``conv_kernels.peak_rss_mb``'s recipe: glibc returns every large
  block on free, so the resident set follows the live arrays);
- the time a checkpointed step takes over a plain one, for each system (the extra forward
  pass: about 1.3x is expected), from paired rounds in the same process;
- lamina's checkpointed throughput over PyTorch's.

Usage: python benchmarks/checkpoint_memory.py [--repeats N]
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import torch
from memory import child_peak_mb, peak_growth_mb
from pairing import paired_ratios

import lamina
from lamina import nn
from lamina.autograd import checkpoint_sequential

DEPTH, WIDTH, BATCH = 24, 256, 2048
SEGMENTS = round(math.sqrt(2 * DEPTH))


def _steps() -> dict:
    rng = np.random.default_rng(0)
    x0 = rng.standard_normal((BATCH, WIDTH)).astype(np.float32)
    lamina.manual_seed(0)
    model = nn.Sequential([layer for _ in range(DEPTH) for layer in (nn.Dense(WIDTH), nn.ReLU())])
    model.build(x0.shape)
    torch_model = torch.nn.Sequential(*[layer for _ in range(DEPTH)
                                        for layer in (torch.nn.Linear(WIDTH, WIDTH), torch.nn.ReLU())])
    with torch.no_grad():
        for dense, linear in zip(model[::2], torch_model[::2]):
            linear.weight.copy_(torch.from_numpy(dense.weight.numpy().T))
            linear.bias.copy_(torch.from_numpy(dense.bias.numpy()))
    xt = torch.from_numpy(x0)

    def ours(segments):
        def step():
            model.zero_grad()
            x = lamina.tensor(x0)
            out = model(x) if segments is None else checkpoint_sequential(model, segments, x)
            (out * out).mean().backward()
        return step

    def theirs(segments):
        def step():
            torch_model.zero_grad(set_to_none=True)
            if segments is None:
                out = torch_model(xt)
            else:
                out = torch.utils.checkpoint.checkpoint_sequential(torch_model, segments, xt, use_reentrant=False)
            (out * out).mean().backward()
        return step

    return {"lamina": ours(None), "lamina checkpointed": ours(SEGMENTS),
            "torch": theirs(None), "torch checkpointed": theirs(SEGMENTS)}


def _child_peak(key: str) -> None:
    print(peak_growth_mb(_steps()[key], warmup=2))


def peak_mb(key: str) -> float | None:
    return child_peak_mb(__file__, ["--peak", key])


def timed(step, settle_s: float = 0.15) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < settle_s:       # let the other system's threads go quiet
        step()
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--peak", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak:
        _child_peak(args.peak)
        return
    torch.set_num_threads(os.cpu_count())
    steps = _steps()
    print(f"MLP of {DEPTH} Dense({WIDTH}) + ReLU, batch {BATCH}, {SEGMENTS} segments; torch threads "
          f"{torch.get_num_threads()}")
    peaks = {key: peak_mb(key) for key in steps}
    for key, mb in peaks.items():
        print(f"  {key:22s} peak +{mb:8.1f} MiB" if mb is not None else f"  {key:22s} peak n/a")
    for step in steps.values():
        step()
    times = {key: [] for key in steps}
    for _ in range(args.repeats):
        for key, step in steps.items():
            times[key].append(timed(step))
    if None not in peaks.values():
        print(f"memory kept, checkpointed/plain: lamina {peaks['lamina checkpointed'] / peaks['lamina']:.2f}, "
              f"torch {peaks['torch checkpointed'] / peaks['torch']:.2f}")
    for system in ("lamina", "torch"):
        median, low, high = paired_ratios(times[f"{system} checkpointed"], times[system])
        print(f"time, checkpointed/plain: {system} {median:.2f}x (rounds {low:.2f}-{high:.2f})")
    median, low, high = paired_ratios(times["torch checkpointed"], times["lamina checkpointed"])
    print(f"ratio lamina/PyTorch throughput, checkpointed: {median:.2f} (rounds {low:.2f}-{high:.2f})")


if __name__ == "__main__":
    main()
