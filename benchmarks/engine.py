"""Per-op overhead of the engine: a chain of 1,000 small element-wise ops, forward and backward.

Runs lamina and PyTorch on the same work in the same process, interleaved, and prints the
microseconds per op for each and their ratio (lamina / PyTorch; lower is better for lamina).
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

import lamina

CHAIN = 1000
SIZE = 16
REPEATS = 15


def chain(make_leaf, x0: np.ndarray) -> float:
    """Seconds for CHAIN element-wise ops on a leaf made by ``make_leaf``, forward and backward."""
    x = make_leaf(x0)
    start = time.perf_counter()
    y = x
    for _ in range(CHAIN // 2):
        y = y * 1.0001
        y = y + 0.001
    y.sum().backward()
    return time.perf_counter() - start


def lamina_leaf(x0: np.ndarray):
    return lamina.tensor(x0, requires_grad=True)


def torch_leaf(x0: np.ndarray):
    return torch.tensor(x0, requires_grad=True)


def main() -> None:
    torch.set_num_threads(1)
    x0 = np.random.default_rng(0).standard_normal(SIZE).astype(np.float32)
    for _ in range(3):
        chain(lamina_leaf, x0), chain(torch_leaf, x0)
    ours, theirs = [], []
    for _ in range(REPEATS):
        ours.append(chain(lamina_leaf, x0))
        theirs.append(chain(torch_leaf, x0))
    per_op_ours = statistics.median(ours) / (CHAIN + 1) * 1e6
    per_op_theirs = statistics.median(theirs) / (CHAIN + 1) * 1e6
    print(f"chain of {CHAIN} element-wise ops on {SIZE} floats, forward + backward, median of {REPEATS}")
    print(f"lamina   {per_op_ours:7.2f} us/op")
    print(f"pytorch  {per_op_theirs:7.2f} us/op")
    print(f"ratio lamina/pytorch time per op: {per_op_ours / per_op_theirs:.2f}x")


if __name__ == "__main__":
    main()
