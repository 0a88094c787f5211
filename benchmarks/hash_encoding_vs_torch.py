"""Forward + backward time of lamina's hash-grid encoding against the same encoding written with
torch tensor ops (vectorised corner indices, spatial hash by int64 XOR, row gathers; torch autograd
for the backward).

Both compute, in float32, the encoding of ``--points`` random 3-D points (16 levels, 2 features per
level, 2^19-row tables, base resolution 16, b = 1.5 by default) and the gradients with respect to
the table and the points for a random upstream gradient. The two are timed back to back in each
round; the printed ratio is torch time / lamina time (above 1: lamina is faster), the median over
the rounds. Nothing is asserted.

    python benchmarks/hash_encoding_vs_torch.py [--points 16384] [--dim 3] [--repeats 3]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from pairing import compare_rounds

import lamina
from lamina import nn
from lamina.nn.hash_encoding import HASH_PRIMES


def torch_hash_grid(x, table, levels):
    """The encoding by torch ops: x (n, d) in [0, 1], table (rows, F) -> (n, L F)."""
    d = x.shape[1]
    bits = (torch.arange(2 ** d)[:, None] >> torch.arange(d)[None, :]) & 1       # (2^d, d)
    outputs, offset = [], 0
    for resolution, size, hashed in levels:
        position = x * resolution
        cell = torch.clamp(torch.floor(position.detach()), max=resolution - 1)
        frac = position - cell
        corners = cell.long()[:, None, :] + bits[None]                              # (n, 2^d, d)
        if hashed:
            rows = torch.zeros(corners.shape[:2], dtype=torch.int64)
            for i in range(d):
                rows = rows ^ ((corners[..., i] * HASH_PRIMES[i]) & 0xFFFFFFFF)
            rows = rows % size
        else:
            strides = (resolution + 1) ** torch.arange(d)
            rows = (corners * strides).sum(-1)
        weights = torch.where(bits[None] == 1, frac[:, None, :], 1 - frac[:, None, :]).prod(-1)   # (n, 2^d)
        gathered = table.index_select(0, (rows + offset).reshape(-1)).reshape(*rows.shape, -1)
        outputs.append((weights[..., None] * gathered).sum(1))
        offset += size
    return torch.cat(outputs, dim=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=16384)
    parser.add_argument("--dim", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    lamina.manual_seed(0)
    encoding = nn.HashGridEncoding(args.dim, num_levels=16, features_per_level=2, log2_hashmap_size=19,
                                   base_resolution=16, per_level_scale=1.5)
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 1, (args.points, args.dim)).astype(np.float32)
    up = rng.standard_normal((args.points, encoding.out_features)).astype(np.float32)
    table_t = torch.tensor(encoding.table.numpy(), requires_grad=True)
    points_t, up_t = torch.tensor(points, requires_grad=True), torch.tensor(up)

    def ours():
        x = lamina.tensor(points, requires_grad=True)
        encoding.table.grad = None
        (encoding(x) * lamina.tensor(up)).sum().backward()
        return encoding.table.grad, x.grad

    def theirs():
        table_t.grad = points_t.grad = None
        (torch_hash_grid(points_t, table_t, encoding.levels) * up_t).sum().backward()
        return table_t.grad, points_t.grad

    got, expected = ours(), theirs()
    for a, b in zip(got, expected):
        np.testing.assert_allclose(np.asarray(a), b.numpy(), rtol=1e-3, atol=1e-3)
    compare_rounds(f"{args.points} points, {args.dim}-D, 16 levels, 2^19 rows, forward + backward",
                   ours, theirs, args.repeats)


if __name__ == "__main__":
    main()
