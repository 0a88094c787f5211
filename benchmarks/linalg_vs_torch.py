"""Forward + backward time of lamina.linalg against torch.linalg on a batch of small matrices.

Each case runs the same computation on the same float32 arrays (a batch of 64 matrices
32x32) in lamina and in PyTorch (threads = core count), the two timed back to back in every
round, and prints the lamina/PyTorch throughput ratio (above 1: lamina is faster) as the
median of the rounds' ratios with its range. Cases: inv, slogdet, cholesky followed by a
triangular solve, eigh (eigenvalues and eigenvectors both used) and the reduced SVD.

    python benchmarks/linalg_vs_torch.py [--repeats 9] [--only inv,eigh] [--batch 64] [--n 32] [--threads 1]
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch

import lamina
from lamina import linalg

sys.path.insert(0, os.path.dirname(__file__))
from pairing import case_parser, run_cases  # noqa: E402


def _inputs(rng, batch: int, n: int, kind: str) -> np.ndarray:
    b = rng.standard_normal((batch, n, n)).astype(np.float32)
    if kind == "spd":
        return b @ b.transpose(0, 2, 1) / n + np.eye(n, dtype=np.float32)
    return b / np.sqrt(n) + 2 * np.eye(n, dtype=np.float32)


def _case(title: str, kind: str, ours_fn, theirs_fn):
    def make(rng, batch: int, n: int):
        a = _inputs(rng, batch, n, kind)
        rhs = rng.standard_normal((batch, n, 4)).astype(np.float32)

        def ours():
            x = lamina.tensor(a, requires_grad=True)
            lamina.functional.sum(ours_fn(x, lamina.tensor(rhs))).backward()

        def theirs():
            x = torch.tensor(a, requires_grad=True)
            theirs_fn(x, torch.tensor(rhs)).sum().backward()

        return f"{title}, {batch} x ({n}, {n})", ours, theirs
    return make


def _eigh_ours(a, _):
    w, v = linalg.eigh(a)
    return w.sum() + (v * v * v).sum()


def _eigh_theirs(a, _):
    w, v = torch.linalg.eigh(a)
    return w.sum() + (v * v * v).sum()


def _svd_ours(a, _):
    u, s, vh = linalg.svd(a)
    return s.sum() + (u * u * u).sum() + (vh * vh * vh).sum()


def _svd_theirs(a, _):
    u, s, vh = torch.linalg.svd(a, full_matrices=False)
    return s.sum() + (u * u * u).sum() + (vh * vh * vh).sum()


CASES = {
    "inv": _case("inv", "general", lambda a, _: linalg.inv(a), lambda a, _: torch.linalg.inv(a)),
    "slogdet": _case("slogdet (log|det|)", "general", lambda a, _: linalg.slogdet(a)[1],
                     lambda a, _: torch.linalg.slogdet(a)[1]),
    "cholesky": _case("cholesky + solve_triangular (k=4)", "spd",
                      lambda a, b: linalg.solve_triangular(linalg.cholesky(a), b, upper=False),
                      lambda a, b: torch.linalg.solve_triangular(torch.linalg.cholesky(a), b, upper=False)),
    "eigh": _case("eigh (values and vectors)", "spd", _eigh_ours, _eigh_theirs),
    "svd": _case("svd (reduced; U, S, Vh)", "general", _svd_ours, _svd_theirs),
}


def main() -> None:
    parser = case_parser(__doc__, CASES)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--n", type=int, default=32)
    args = parser.parse_args()
    run_cases(CASES, args, args.batch, args.n)


if __name__ == "__main__":
    main()
