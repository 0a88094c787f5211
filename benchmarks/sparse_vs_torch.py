"""Forward + backward time of lamina.sparse against torch.sparse in the same process.

A random (rows x rows) sparse matrix with ``nnz`` distinct entries (coalesced, float32, its
values requiring grad) meets a dense (rows x width) matrix that requires grad; each case is
built, run forward, and back-propagated with a random upstream gradient:

- mm:            S @ X (COO), gradients to S's values and to X
- mm-csr:        the same product with S in CSR layout
- mm-x:          S @ X (COO) with constant values: the gradient to X only (torch's gradient to
                 the values of a sparse operand is the costly part of its backward)
- sampled_addmm: S + (A B) at the positions of S (CSR), A (rows x width), B (width x rows)
- softmax:       the softmax of S's rows over its stored entries

The two sides are timed back to back in every round; the lamina/PyTorch throughput ratio
(above 1: lamina is faster) is printed as the median of the rounds' ratios with its range.

    python benchmarks/sparse_vs_torch.py [--repeats 9] [--only mm,softmax] [--rows 10000] [--nnz 50000]
                                         [--width 64]
"""

from __future__ import annotations

import os
import sys
import warnings

import numpy as np
import torch

import lamina
from lamina import sparse

sys.path.insert(0, os.path.dirname(__file__))
from pairing import case_parser, run_cases  # noqa: E402

warnings.filterwarnings("ignore", "Sparse (invariant checks|CSR tensor support)")


def _pattern(rng, rows: int, nnz: int) -> np.ndarray:
    """(2, nnz) distinct positions sorted row-major (coalesced)."""
    flat = np.unique(rng.choice(rows * rows, size=nnz, replace=False))
    return np.stack(np.unravel_index(flat, (rows, rows))).astype(np.int64)


def _upstream_backward(out, upstream):
    (out * lamina.tensor(upstream)).sum().backward()


def _torch_upstream_backward(out, upstream):
    (out * torch.from_numpy(upstream)).sum().backward()


def _inputs(rng, rows, nnz, width):
    indices = _pattern(rng, rows, nnz)
    values = rng.standard_normal(indices.shape[1]).astype(np.float32)
    dense = rng.standard_normal((rows, width)).astype(np.float32)
    return indices, values, dense


def mm_case(layout: str, values_grad: bool = True):
    def make(rng, rows: int, nnz: int, width: int):
        indices, values, dense = _inputs(rng, rows, nnz, width)
        upstream = rng.standard_normal((rows, width)).astype(np.float32)
        torch_indices = torch.from_numpy(indices)

        def ours():
            v, x = lamina.tensor(values, requires_grad=values_grad), lamina.tensor(dense, requires_grad=True)
            s = sparse.sparse_coo_tensor(indices, v, (rows, rows))
            _upstream_backward(sparse.mm(s if layout == "coo" else s.to_sparse_csr(), x), upstream)

        def theirs():
            v, x = torch.tensor(values, requires_grad=values_grad), torch.tensor(dense, requires_grad=True)
            s = torch.sparse_coo_tensor(torch_indices, v, (rows, rows), is_coalesced=True)
            _torch_upstream_backward(torch.sparse.mm(s if layout == "coo" else s.to_sparse_csr(), x), upstream)

        which = layout if values_grad else f"{layout} X-only"
        return f"mm {which}, {rows}^2 nnz {nnz} @ {rows} x {width}", ours, theirs
    return make


def sampled_addmm_case(rng, rows: int, nnz: int, width: int):
    indices, values, dense = _inputs(rng, rows, nnz, width)
    right = rng.standard_normal((width, rows)).astype(np.float32)
    upstream = rng.standard_normal(indices.shape[1]).astype(np.float32)
    csr = torch.sparse_coo_tensor(torch.from_numpy(indices), torch.from_numpy(values), (rows, rows),
                                  is_coalesced=True).to_sparse_csr()
    crow, col = csr.crow_indices(), csr.col_indices()

    def ours():
        v, a, b = (lamina.tensor(arr, requires_grad=True) for arr in (values, dense, right))
        s = sparse.sparse_csr_tensor(crow.numpy(), col.numpy(), v, (rows, rows))
        _upstream_backward(sparse.sampled_addmm(s, a, b).values, upstream)

    def theirs():
        v, a, b = (torch.tensor(arr, requires_grad=True) for arr in (values, dense, right))
        s = torch.sparse_csr_tensor(crow, col, v, (rows, rows))
        _torch_upstream_backward(torch.sparse.sampled_addmm(s, a, b).values(), upstream)

    return f"sampled_addmm csr, {rows}^2 nnz {nnz}, k {width}", ours, theirs


def softmax_case(rng, rows: int, nnz: int, width: int):
    indices, values, _ = _inputs(rng, rows, nnz, width)
    upstream = rng.standard_normal(indices.shape[1]).astype(np.float32)
    torch_indices = torch.from_numpy(indices)

    def ours():
        v = lamina.tensor(values, requires_grad=True)
        _upstream_backward(sparse.softmax(sparse.sparse_coo_tensor(indices, v, (rows, rows)), 1).values, upstream)

    def theirs():
        v = torch.tensor(values, requires_grad=True)
        s = torch.sparse_coo_tensor(torch_indices, v, (rows, rows), is_coalesced=True)
        _torch_upstream_backward(torch.sparse.softmax(s, 1).values(), upstream)

    return f"softmax rows, {rows}^2 nnz {nnz}", ours, theirs


CASES = {"mm": mm_case("coo"), "mm-csr": mm_case("csr"), "mm-x": mm_case("coo", values_grad=False),
         "sampled_addmm": sampled_addmm_case,
         "softmax": softmax_case}


def main() -> None:
    parser = case_parser(__doc__, CASES)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--nnz", type=int, default=50_000)
    parser.add_argument("--width", type=int, default=64)
    args = parser.parse_args()
    run_cases(CASES, args, args.rows, args.nnz, args.width)


if __name__ == "__main__":
    main()
