"""Causal linear attention at long lengths: lamina's chunked linear attention against lamina's
softmax attention (dense and blockwise) and against the same chunked linear attention written
in PyTorch, all in this process, at T = 2048..8192.

One step is a forward and a backward pass (the sum of the output's squares) through causal
attention over (B, H, T, d) float32 queries, keys and values. Linear attention uses the
elu + 1 feature map and chunks of ``--chunk`` steps (prefix sums of phi(k)^T v across chunks,
masked products within). Printed for each T:

- the best time of one step over the rounds (each round runs every system once, back to back);
- peak memory of one step: the growth of the peak resident set in a child process (the recipe
  of ``memory.child_peak_mb``), and tracemalloc's peak for lamina;
- the ratios: lamina linear / torch linear time, softmax / linear time and memory.

Usage: python benchmarks/linear_attention_speed.py [--lengths 2048 4096 8192] [--repeats N]
       [--chunk 64] [--dense-max 4096] [--threads N]
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch
from attention_memory import best_times
from memory import child_peak_mb, peak_growth_mb, tracemalloc_mb
from threadpoolctl import threadpool_limits

import lamina
import lamina.functional as F

BATCH, HEADS, FEATURES = 1, 4, 64
SYSTEMS = ("lamina linear", "torch linear", "lamina softmax blockwise", "lamina softmax dense")


def torch_causal_linear_attention(q, k, v, chunk: int, eps: float = 1e-6):
    """The same chunked causal linear attention as lamina's, in PyTorch."""
    fq, fk = torch.nn.functional.elu(q) + 1, torch.nn.functional.elu(k) + 1
    state = q.new_zeros((*q.shape[:-2], q.shape[-1], v.shape[-1]))
    key_sum = q.new_zeros((*q.shape[:-2], q.shape[-1], 1))
    outputs = []
    for start in range(0, q.shape[-2], chunk):
        qc, kc, vc = fq[..., start:start + chunk, :], fk[..., start:start + chunk, :], v[..., start:start + chunk, :]
        scores = torch.tril(qc @ kc.transpose(-1, -2))
        numerator = scores @ vc + qc @ state
        denominator = scores.sum(-1, keepdim=True) + qc @ key_sum
        outputs.append(numerator / (denominator + eps))
        state = state + kc.transpose(-1, -2) @ vc
        key_sum = key_sum + kc.sum(-2, keepdim=True).transpose(-1, -2)
    return torch.cat(outputs, dim=-2)


def _steps(length: int, chunk: int) -> dict:
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((BATCH, HEADS, length, FEATURES)).astype(np.float32) for _ in range(3)]
    ours = [lamina.tensor(a, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]

    def lamina_step(attend):
        def step():
            for t in ours:
                t.grad = None
            out = attend(*ours)
            (out * out).sum().backward()
        return step

    def torch_step():
        for t in theirs:
            t.grad = None
        out = torch_causal_linear_attention(*theirs, chunk)
        (out * out).sum().backward()

    return {
        "lamina linear": lamina_step(lambda q, k, v: F.linear_attention(q, k, v, causal=True, chunk_size=chunk)),
        "torch linear": torch_step,
        "lamina softmax blockwise": lamina_step(
            lambda q, k, v: F.scaled_dot_product_attention(q, k, v, causal=True, block_size="auto")),
        "lamina softmax dense": lamina_step(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, causal=True)),
    }


def _mb(value: float | None) -> str:
    return "     n/a" if value is None else f"{value:8.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[2048, 4096, 8192])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--dense-max", type=int, default=4096, help="longest T for dense softmax attention")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="threads of torch and of NumPy's BLAS (default: the core count)")
    parser.add_argument("--peak", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    if args.peak:
        print(peak_growth_mb(_steps(int(args.peak[0]), args.chunk)[args.peak[1]]))
        return
    print(f"causal attention forward + backward, (B, H, T, d) = ({BATCH}, {HEADS}, T, {FEATURES}) float32, "
          f"linear attention elu+1 in chunks of {args.chunk}; torch threads {torch.get_num_threads()}")
    print(f"{'T':>6} {'system':26s} {'time s':>8} {'peak RSS MiB':>12} {'tracemalloc MiB':>15}")
    for length in args.lengths:
        steps = _steps(length, args.chunk)
        systems = [s for s in SYSTEMS if s != "lamina softmax dense" or length <= args.dense_max]
        steps = {s: steps[s] for s in systems}
        rss = {s: child_peak_mb(__file__, ["--peak", str(length), s, "--chunk", str(args.chunk)], timeout=900)
               for s in systems}
        traced = {s: tracemalloc_mb(steps[s]) for s in systems if s.startswith("lamina")}
        times = best_times(steps, args.repeats)
        for s in systems:
            print(f"{length:6d} {s:26s} {times[s]:8.3f} {_mb(rss[s]):>12} {_mb(traced.get(s)):>15}")
        linear = times["lamina linear"]
        ratios = [f"lamina/torch linear time {linear / times['torch linear']:.2f}"]
        for s in systems[2:]:
            memory = f", memory {traced[s] / traced['lamina linear']:.1f}x" if traced.get("lamina linear") else ""
            ratios.append(f"{s.removeprefix('lamina ')}/linear time {times[s] / linear:.2f}{memory}")
        print(f"{length:6d} " + "; ".join(ratios))


if __name__ == "__main__":
    main()
