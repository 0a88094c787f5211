"""Forward + backward time of GCNConv and GATConv: lamina against the same computation in
PyTorch ops (no PyTorch Geometric), on a random graph of 10,000 nodes, 50,000 edges and 64
features, float32.

The torch side gathers rows with indexing and reduces with ``index_add_`` (GCN also as a
sparse COO matrix product, ``torch.sparse.mm``); GAT's softmax over incoming edges uses
``scatter_reduce('amax')``. The two are timed back to back in every round and the
lamina/PyTorch throughput ratio (above 1: lamina is faster) is printed as the median of the
rounds' ratios with its range.

    python benchmarks/graph_vs_torch.py [--repeats 7] [--nodes 10000] [--edges 50000]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

import lamina
from lamina import nn

sys.path.insert(0, os.path.dirname(__file__))
from pairing import compare_rounds  # noqa: E402


def _graph(rng, n, e, width):
    x = rng.standard_normal((n, width)).astype(np.float32)
    edges = rng.integers(0, n, (2, e))
    return x, edges[:, edges[0] != edges[1]]


def _sum(values, index, n):
    return torch.zeros((n,) + values.shape[1:], dtype=values.dtype).index_add_(0, index, values)


def gcn_case(x, edges, out, sparse):
    n = x.shape[0]
    layer = nn.GCNConv(out)
    layer(x, edges)
    weight_init, bias_init = layer.weight.numpy(), layer.bias.numpy()
    loops = np.arange(n)
    src, dst = (torch.from_numpy(np.concatenate([edges[k], loops])) for k in (0, 1))

    def ours():
        layer.zero_grad()
        layer(lamina.tensor(x, requires_grad=True), edges).sum().backward()

    def theirs():
        xt = torch.tensor(x, requires_grad=True)
        w, b = torch.tensor(weight_init, requires_grad=True), torch.tensor(bias_init, requires_grad=True)
        deg = torch.bincount(dst, minlength=n).to(torch.float32)
        inv_sqrt = deg.pow(-0.5)
        norm = inv_sqrt[src] * inv_sqrt[dst]
        h = xt @ w
        if sparse:
            a = torch.sparse_coo_tensor(torch.stack([dst, src]), norm, (n, n), check_invariants=False).coalesce()
            y = torch.sparse.mm(a, h) + b
        else:
            y = _sum(h[src] * norm[:, None], dst, n) + b
        y.sum().backward()

    kind = "sparse.mm" if sparse else "index_add_"
    return f"GCNConv 64->{out}, fwd+bwd (torch {kind})", ours, theirs


def gat_case(x, edges, out, heads):
    n = x.shape[0]
    layer = nn.GATConv(out, heads=heads)
    layer(x, edges)
    weight_init, a_src, a_dst = layer.weight.numpy(), layer.att_src.numpy(), layer.att_dst.numpy()
    loops = np.arange(n)
    src, dst = (torch.from_numpy(np.concatenate([edges[k], loops])) for k in (0, 1))

    def ours():
        layer.zero_grad()
        layer(lamina.tensor(x, requires_grad=True), edges).sum().backward()

    def theirs():
        xt = torch.tensor(x, requires_grad=True)
        w = torch.tensor(weight_init, requires_grad=True)
        att_src, att_dst = torch.tensor(a_src, requires_grad=True), torch.tensor(a_dst, requires_grad=True)
        h = (xt @ w).reshape(n, heads, out)
        scores = torch.nn.functional.leaky_relu((h * att_src).sum(-1)[src] + (h * att_dst).sum(-1)[dst], 0.2)
        peak = torch.full((n, heads), -torch.inf).scatter_reduce(0, dst[:, None].expand(scores.shape), scores,
                                                                  "amax", include_self=True)
        e = torch.exp(scores - peak.detach()[dst])
        alpha = e / _sum(e, dst, n)[dst]
        y = _sum(h[src] * alpha[:, :, None], dst, n).reshape(n, heads * out)
        y.sum().backward()

    return f"GATConv 64->{heads}x{out}, fwd+bwd", ours, theirs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--edges", type=int, default=50_000)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    lamina.manual_seed(0)
    x, edges = _graph(np.random.default_rng(0), args.nodes, args.edges, 64)
    print(f"graph: {args.nodes} nodes, {edges.shape[1]} edges, 64 features; threads: torch "
          f"{torch.get_num_threads()}; rounds {args.repeats}, median of the rounds' ratios\n")
    for case in (gcn_case(x, edges, 64, sparse=False), gcn_case(x, edges, 64, sparse=True),
                 gat_case(x, edges, 8, heads=8)):
        compare_rounds(*case, args.repeats)


if __name__ == "__main__":
    main()
