"""Forward + backward time of multi-scale deformable attention: lamina's fused op against torch.

The compiled kernel of the Deformable DETR code is not a dependency, so the PyTorch side is the
reference's own pure-PyTorch path (``ms_deform_attn_core_pytorch``): each level's value map
sampled by ``grid_sample`` (bilinear, zeros, align_corners=False) at 2 loc - 1, weighted and
summed; autograd gives its backward. The same arrays go to lamina's ``ms_deform_attn`` (one
sparse product forward, hand-written backward). Each line prints the throughput ratio (above 1:
lamina is faster), the median over rounds timed back to back, with its range. The default
sizes are an encoder layer of Deformable DETR on four levels of a small image (d = 256, 8 heads,
4 points per level).

    python benchmarks/ms_deform_attn_vs_torch.py [--repeats 9] [--batch 2] [--size 32] [--heads 8]
        [--head-dim 32] [--points 4] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch
import torch.nn.functional as TF
from threadpoolctl import threadpool_limits

import lamina
from lamina import parallel
from lamina.functional.ms_deform_attn import ms_deform_attn

sys.path.insert(0, os.path.dirname(__file__))
from pairing import compare_rounds  # noqa: E402


def torch_ms_deform_attn(value, shapes, locations, weights):
    """The reference's pure-PyTorch multi-scale deformable attention."""
    n, _, m, d = value.shape
    _, lq, _, levels, points, _ = locations.shape
    per_level = value.split([h * w for h, w in shapes], dim=1)
    grids = 2 * locations - 1
    samples = []
    for level, (h, w) in enumerate(shapes):
        maps = per_level[level].flatten(2).transpose(1, 2).reshape(n * m, d, h, w)
        grid = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        samples.append(TF.grid_sample(maps, grid, mode="bilinear", padding_mode="zeros", align_corners=False))
    a = weights.transpose(1, 2).reshape(n * m, 1, lq, levels * points)
    out = (torch.stack(samples, dim=-2).flatten(-2) * a).sum(-1).view(n, m * d, lq)
    return out.transpose(1, 2)


def _case(batch: int, size: int, heads: int, head_dim: int, points: int, queries: int | None, rng):
    shapes = [(size // 2 ** k, size // 2 ** k) for k in range(4)]
    s = sum(h * w for h, w in shapes)
    lq = s if queries is None else queries
    value = rng.standard_normal((batch, s, heads, head_dim)).astype(np.float32)
    locations = rng.uniform(-0.05, 1.05, (batch, lq, heads, len(shapes), points, 2)).astype(np.float32)
    weights = rng.dirichlet(np.ones(len(shapes) * points), (batch, lq, heads)).astype(np.float32)
    arrays = (value, locations, weights.reshape(batch, lq, heads, len(shapes), points))
    starts = [0] + list(np.cumsum([h * w for h, w in shapes])[:-1])

    def ours():
        v, loc, a = (lamina.tensor(x, requires_grad=True) for x in arrays)
        ms_deform_attn(v, shapes, starts, loc, a).sum().backward()

    def theirs():
        v, loc, a = (torch.tensor(x, requires_grad=True) for x in arrays)
        torch_ms_deform_attn(v, shapes, loc, a).sum().backward()

    def ours_forward():
        with lamina.no_grad():
            ms_deform_attn(*arrays[:1], shapes, starts, *arrays[1:])

    def theirs_forward():
        with torch.no_grad():
            torch_ms_deform_attn(*(torch.tensor(x) for x in arrays[:1]), shapes,
                                 *(torch.tensor(x) for x in arrays[1:]))

    name = f"{lq} queries, S={s}, batch {batch}, M={heads}, D={head_dim}, P={points}"
    return name, ours, theirs, ours_forward, theirs_forward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--size", type=int, default=32, help="side of the largest level (4 levels, halving)")
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--points", type=int, default=4)
    parser.add_argument("--queries", type=int, default=None, help="default: one per pixel (the encoder)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    parallel.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    print(f"threads: torch {torch.get_num_threads()}, lamina {parallel.get_num_threads()}; rounds {args.repeats}, "
          "median of the rounds' ratios\n")
    name, ours, theirs, ours_forward, theirs_forward = _case(args.batch, args.size, args.heads, args.head_dim,
                                                             args.points, args.queries, np.random.default_rng(0))
    print(name)
    compare_rounds("ms_deform_attn forward + backward", ours, theirs, args.repeats)
    compare_rounds("ms_deform_attn forward", ours_forward, theirs_forward, args.repeats)


if __name__ == "__main__":
    main()
