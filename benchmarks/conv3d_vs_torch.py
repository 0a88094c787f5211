"""Forward + backward time of a 3-D convolution: lamina's Conv3D against PyTorch's Conv3d.

The same 3x3x3 'same' convolution, 16 -> 16 channels on 16^3 volumes, batch 8, runs on the
same arrays in lamina (NDHWC) and in PyTorch (NCDHW, threads = core count), the two timed
back to back in every round, with a backward of the sum to the input, the weights and the
bias. Prints the lamina/PyTorch throughput ratio (above 1: lamina is faster) as the median of
the rounds' ratios with its range.

    python benchmarks/conv3d_vs_torch.py [--repeats 9] [--batch 8] [--size 16] [--channels 16]
        [--algorithm auto|planes|im2col] [--threads N]

``--algorithm`` forces lamina's way of computing (default: the one conv3d chooses by shape),
to compare the two in the same conditions; ``--threads`` sets torch's and lamina's threads
(default: the core count).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

import numpy as np
import torch
from threadpoolctl import threadpool_limits

import lamina
from lamina import parallel
from lamina.functional.conv3d import conv3d

sys.path.insert(0, os.path.dirname(__file__))
from pairing import compare_rounds  # noqa: E402


def _case(batch: int, size: int, channels: int, rng):
    x = rng.standard_normal((batch, size, size, size, channels)).astype(np.float32)
    w = (rng.standard_normal((channels, 3, 3, 3, channels)) / np.sqrt(27 * channels)).astype(np.float32)
    b = np.zeros(channels, dtype=np.float32)
    x_t = np.ascontiguousarray(x.transpose(0, 4, 1, 2, 3))
    w_t = np.ascontiguousarray(w.transpose(0, 4, 1, 2, 3))

    def ours():
        xs = [lamina.tensor(a, requires_grad=True) for a in (x, w, b)]
        conv3d(*xs, padding="same").sum().backward()

    def theirs():
        xs = [torch.tensor(a, requires_grad=True) for a in (x_t, w_t, b)]
        torch.nn.functional.conv3d(*xs, padding=1).sum().backward()

    return f"Conv3D 3x3x3 {channels}->{channels}, {size}^3, batch {batch}", ours, theirs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--algorithm", choices=("auto", "planes", "im2col"), default="auto")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    if args.algorithm != "auto":
        module = importlib.import_module("lamina.functional.conv3d")    # the package re-exports the function
        module.algorithm = lambda *shapes: args.algorithm
    torch.set_num_threads(args.threads)
    parallel.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    print(f"threads: torch {torch.get_num_threads()}, lamina {parallel.get_num_threads()}; algorithm "
          f"{args.algorithm}; rounds {args.repeats}, median of the rounds' ratios\n")
    compare_rounds(*_case(args.batch, args.size, args.channels, np.random.default_rng(0)), args.repeats)


if __name__ == "__main__":
    main()
