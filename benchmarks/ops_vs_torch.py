"""Forward + backward time of tensor ops and losses beyond the layers: lamina against PyTorch.

Each case runs the same computation on the same arrays in lamina and in PyTorch (threads =
core count), the two timed back to back in every round, and prints the lamina/PyTorch
throughput ratio (above 1: lamina is faster) as the median of the rounds' ratios with its
range. Cases: CTC loss, einsum (a bilinear form and a batched contraction), gather, topk,
cdist, logsumexp, cumsum, and the triplet margin loss.

    python benchmarks/ops_vs_torch.py [--repeats 9] [--only ctc,einsum]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

import lamina
from lamina import functional as F

sys.path.insert(0, os.path.dirname(__file__))
from pairing import compare_rounds  # noqa: E402


def _ctc(rng):
    n, t, c, s = 16, 60, 28, 12
    scores = rng.standard_normal((n, t, c)).astype(np.float32)
    targets = rng.integers(1, c, (n, s))
    lengths_in, lengths_out = np.full(n, t), rng.integers(s // 2, s + 1, n)

    def ours():
        z = lamina.tensor(scores, requires_grad=True)
        F.ctc_loss(F.log_softmax(z, axis=-1), targets, lengths_in, lengths_out).backward()

    def theirs():
        z = torch.tensor(scores, requires_grad=True)
        log_probs = torch.log_softmax(z, dim=-1).transpose(0, 1)
        torch.nn.functional.ctc_loss(log_probs, torch.tensor(targets), torch.tensor(lengths_in),
                                     torch.tensor(lengths_out)).backward()

    return f"CTC loss, N={n} T={t} C={c} S<={s}", ours, theirs


def _binary(name, fn_ours, fn_theirs, *shapes, integer=None):
    def make(rng):
        arrays = [rng.standard_normal(shape).astype(np.float32) for shape in shapes]
        extra = integer(rng) if integer else ()

        def ours():
            ts = [lamina.tensor(a, requires_grad=True) for a in arrays]
            fn_ours(*ts, *extra).sum().backward()

        def theirs():
            ts = [torch.tensor(a, requires_grad=True) for a in arrays]
            fn_theirs(*ts, *[torch.tensor(e) for e in extra]).sum().backward()

        return name, ours, theirs
    return make


CASES = {
    "ctc": _ctc,
    "einsum": _binary("einsum 'bi,ij,bj->b', b=256 i=j=256",
                      lambda x, w, y: F.einsum("bi,ij,bj->b", x, w, y),
                      lambda x, w, y: torch.einsum("bi,ij,bj->b", x, w, y), (256, 256), (256, 256), (256, 256)),
    "einsum_batched": _binary("einsum 'bhqd,bhkd->bhqk', 8x4x64x32",
                              lambda q, k: F.einsum("bhqd,bhkd->bhqk", q, k),
                              lambda q, k: torch.einsum("bhqd,bhkd->bhqk", q, k), (8, 4, 64, 32), (8, 4, 64, 32)),
    "gather": _binary("gather axis 1, (512, 1000) -> (512, 64)",
                      lambda x, i: F.gather(x, 1, i), lambda x, i: torch.gather(x, 1, i), (512, 1000),
                      integer=lambda rng: (rng.integers(0, 1000, (512, 64)),)),
    "topk": _binary("topk k=10 of (512, 1000)", lambda x: F.topk(x, 10)[0], lambda x: torch.topk(x, 10)[0],
                    (512, 1000)),
    "cdist": _binary("cdist (512, 64) x (512, 64)", F.cdist, torch.cdist, (512, 64), (512, 64)),
    "logsumexp": _binary("logsumexp axis -1 of (1024, 1000)", lambda x: F.logsumexp(x, axis=-1),
                         lambda x: torch.logsumexp(x, dim=-1), (1024, 1000)),
    "cumsum": _binary("cumsum axis 1 of (1024, 1000)", lambda x: F.cumsum(x, axis=1),
                      lambda x: torch.cumsum(x, dim=1), (1024, 1000)),
    "triplet": _binary("triplet margin loss, (1024, 128)", F.triplet_margin_loss,
                       torch.nn.functional.triplet_margin_loss, (1024, 128), (1024, 128), (1024, 128)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--only", default=None, help=f"comma-separated cases among {', '.join(CASES)}")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    names = args.only.split(",") if args.only else list(CASES)
    print(f"threads: torch {torch.get_num_threads()}; rounds {args.repeats}, median of the rounds' ratios\n")
    for key in names:
        compare_rounds(*CASES[key](np.random.default_rng(0)), args.repeats)


if __name__ == "__main__":
    main()
