"""Block-sparse (BigBird pattern) attention against dense masked attention on a long sequence.

One step is a forward and a backward pass (the sum of the output's squares) through
attention over (B, H, T, E) float32 queries, keys and values. The dense path is
``scaled_dot_product_attention`` with the BigBird block mask expanded to tokens; the sparse
path ``block_sparse_attention`` computes only the kept blocks. Printed: the best time of each
over the rounds, their ratio and the fraction of scores the sparse path computes.

Usage: python benchmarks/block_sparse_attention.py [--length 4096] [--block 64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import lamina
from lamina import functional as F


def _step(fn, q, k, v) -> float:
    tensors = [lamina.tensor(a, requires_grad=True) for a in (q, k, v)]
    start = time.perf_counter()
    out = fn(*tensors)
    (out * out).sum().backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=4096)
    parser.add_argument("--block", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((args.batch, args.heads, args.length, args.dim)).astype(np.float32)
               for _ in range(3))
    block_mask = F.bigbird_mask(args.length, args.block, num_window_blocks=3, num_global_blocks=1,
                                num_random_blocks=2, seed=0)
    token_mask = F.expand_block_mask(block_mask, args.block)
    stats = {}
    systems = {
        "dense masked": lambda a, b, c: F.scaled_dot_product_attention(a, b, c, mask=token_mask),
        "block sparse": lambda a, b, c: F.block_sparse_attention(a, b, c, block_mask, args.block, stats=stats),
    }
    best = dict.fromkeys(systems, float("inf"))
    for _ in range(args.repeats):
        for name, fn in systems.items():
            best[name] = min(best[name], _step(fn, q, k, v))
    fraction = stats["score_entries"] / args.length**2
    print(f"T={args.length} block={args.block} B={args.batch} H={args.heads} E={args.dim}: "
          f"scores computed {fraction:.1%} of dense")
    for name, seconds in best.items():
        print(f"  {name:13s} {seconds * 1000:9.1f} ms")
    print(f"  dense / sparse time: {best['dense masked'] / best['block sparse']:.2f}x")


if __name__ == "__main__":
    main()
