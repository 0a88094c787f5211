"""Forward + backward time of a modulated deformable convolution: lamina's fused op against torch.

torchvision (whose C++ kernel is the usual reference) is not a dependency, so the PyTorch side is
a vectorised rewrite of the same computation in torch ops: the four corner pixels of every tap
gathered by flat index, weighted bilinearly (zeros outside), times the mask, and one einsum with
the weights; autograd gives its backward. The same arrays go to lamina's
``deform_conv2d`` (fused, hand-written backward) and, as a second line, to the same computation
written with lamina's primitive ops (the op's ``composite``, what second derivatives run on), so
the fused kernel's gain over a composite is measured too. Every line prints a throughput ratio
(above 1: the first is faster), the median over rounds timed back to back, with its range.

    python benchmarks/deform_conv_vs_torch.py [--repeats 9] [--batch 8] [--size 32] [--channels 32]
        [--offset-groups 1] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch
from threadpoolctl import threadpool_limits

import lamina
from lamina import parallel
from lamina.functional.deform_conv import _composite, deform_conv2d

sys.path.insert(0, os.path.dirname(__file__))
from pairing import compare_rounds  # noqa: E402


def torch_deform_conv2d(x, offset, mask, weight, bias, padding: int, groups: int):
    """NHWC, stride 1, 3x3 (the benchmarked case): bilinear corners gathered by flat index."""
    n, h, w, c = x.shape
    k, fh, fw, _ = weight.shape
    _, ho, wo, _ = offset.shape
    taps, cg = fh * fw, c // groups
    rows = (torch.arange(ho)[:, None, None] - padding + torch.arange(fh).repeat_interleave(fw)[None, None, :])
    cols = (torch.arange(wo)[None, :, None] - padding + torch.arange(fw).repeat(fh)[None, None, :])
    pairs = offset.reshape(n, ho, wo, groups, taps, 2)
    r = rows[None, :, :, None, :] + pairs[..., 0]                  # (n, ho, wo, G, taps)
    q = cols[None, :, :, None, :] + pairs[..., 1]
    r_low, q_low = torch.floor(r).detach(), torch.floor(q).detach()
    a, b = r - r_low, q - q_low
    flat = x.reshape(n, h * w, groups, cg).transpose(1, 2)          # (n, G, h w, cg)
    sample = 0
    for row, w_r in ((r_low, 1 - a), (r_low + 1, a)):
        for col, w_q in ((q_low, 1 - b), (q_low + 1, b)):
            inside = ((row >= 0) & (row < h) & (col >= 0) & (col < w)).to(x.dtype)
            index = (row.clamp(0, h - 1) * w + col.clamp(0, w - 1)).long()  # (n, ho, wo, G, taps)
            index = index.permute(0, 3, 1, 2, 4).reshape(n, groups, -1, 1).expand(-1, -1, -1, cg)
            corner = torch.gather(flat, 2, index).reshape(n, groups, ho, wo, taps, cg).permute(0, 2, 3, 1, 4, 5)
            sample = sample + (w_r * w_q * inside)[..., None] * corner
    sample = sample * mask.reshape(n, ho, wo, groups, taps, 1)
    patches = sample.permute(0, 1, 2, 4, 3, 5).reshape(n * ho * wo, taps * c)
    return (patches @ weight.reshape(k, taps * c).T + bias).reshape(n, ho, wo, k)


def _case(batch: int, size: int, channels: int, groups: int, rng):
    taps = 9 * groups
    x = rng.standard_normal((batch, size, size, channels)).astype(np.float32)
    offset = rng.uniform(-2, 2, (batch, size, size, 2 * taps)).astype(np.float32)
    mask = rng.uniform(0, 1, (batch, size, size, taps)).astype(np.float32)
    weight = (rng.standard_normal((channels, 3, 3, channels)) / np.sqrt(9 * channels)).astype(np.float32)
    bias = np.zeros(channels, dtype=np.float32)
    arrays = (x, offset, mask, weight, bias)

    def fused():
        x_, o, m, w, b = (lamina.tensor(a, requires_grad=True) for a in arrays)
        deform_conv2d(x_, o, w, b, padding=1, mask=m, offset_groups=groups).sum().backward()

    def composite():
        x_, o, m, w, b = (lamina.tensor(a, requires_grad=True) for a in arrays)
        _composite(x_, o, w, m, b, (1, 1), (1, 1), (1, 1), groups).sum().backward()

    def theirs():
        x_, o, m, w, b = (torch.tensor(a, requires_grad=True) for a in arrays)
        torch_deform_conv2d(x_, o, m, w, b, 1, groups).sum().backward()

    name = f"3x3 {channels}->{channels}, {size}x{size}, batch {batch}, G={groups}"
    return name, fused, composite, theirs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--offset-groups", type=int, default=1)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    parallel.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    print(f"threads: torch {torch.get_num_threads()}, lamina {parallel.get_num_threads()}; rounds {args.repeats}, "
          "median of the rounds' ratios\n")
    name, fused, composite, theirs = _case(args.batch, args.size, args.channels, args.offset_groups,
                                           np.random.default_rng(0))
    compare_rounds(f"deform_conv2d vs torch rewrite, {name}", fused, theirs, args.repeats)
    compare_rounds(f"composite (lamina ops) vs torch rewrite, {name}", composite, theirs, args.repeats)


if __name__ == "__main__":
    main()
