"""Dense batches of graphs and differentiable pooling (DiffPool, Ying et al. 2018), as
PyTorch Geometric's ``to_dense_batch``, ``to_dense_adj`` and ``dense_diff_pool``.

For B graphs padded to N nodes, features x (B, N, F), adjacency A (B, N, N) and assignment
logits s (B, N, C), S = softmax(s) over the C clusters (rows of padded nodes zeroed by the mask):

    x' = S^T x                                              (B, C, F)
    A' = S^T A S                                            (B, C, C)
    link loss    = ||A - S S^T||_F / (B N N)                 (Frobenius norm over the whole batch)
    entropy loss = mean over the B N rows of -sum_c S_c log(S_c + 1e-15)
"""

from __future__ import annotations

import numpy as np

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.data.graphs import check_edge_index
from lamina.errors import ShapeError
from lamina.nn.graph.pool import _batch_vector
from lamina.nn.module import as_tensor

__all__ = ["dense_diff_pool", "to_dense_adj", "to_dense_batch"]

ENTROPY_EPSILON = 1e-15


def _node_slots(batch: np.ndarray, max_num_nodes: int | None, who: str) -> tuple[int, int, np.ndarray]:
    """(num_graphs, padded size, each node's position inside its graph) for a sorted batch."""
    if batch.size and np.any(np.diff(batch) < 0):
        raise ValueError(f"{who}: batch must be sorted (the nodes of each graph together, in order)")
    num_graphs = int(batch.max()) + 1 if batch.size else 0
    counts = np.bincount(batch, minlength=num_graphs)
    size = int(counts.max()) if counts.size else 0
    if max_num_nodes is not None:
        if counts.size and counts.max() > max_num_nodes:
            raise ValueError(f"{who}: a graph has {int(counts.max())} nodes, more than max_num_nodes="
                             f"{max_num_nodes}")
        size = int(max_num_nodes)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    return num_graphs, size, np.arange(batch.shape[0]) - starts[batch]


def to_dense_batch(x, batch=None, fill_value: float = 0.0,
                   max_num_nodes: int | None = None) -> tuple[Tensor, np.ndarray]:
    """(out (B, N_max, F), mask (B, N_max)): the nodes of each graph (``batch`` sorted) as
    rows of one padded block, padding ``fill_value``; mask True at real nodes."""
    x = as_tensor(x)
    batch = _batch_vector(x, batch, "to_dense_batch")
    num_graphs, size, slot = _node_slots(batch, max_num_nodes, "to_dense_batch")
    flat = batch * size + slot
    out = F.segment_sum(x, flat, num_graphs * size)
    mask = np.zeros(num_graphs * size, dtype=bool)
    mask[flat] = True
    if fill_value != 0:
        out = out + np.where(mask, 0.0, fill_value).astype(x.dtype)[:, None]
    return F.reshape(out, (num_graphs, size, x.shape[1])), mask.reshape(num_graphs, size)


def to_dense_adj(edge_index, batch=None, edge_attr=None, max_num_nodes: int | None = None) -> Tensor:
    """(B, N_max, N_max) adjacency blocks: entry [b, j, i] sums the weights (1 without
    ``edge_attr``) of the edges j -> i of graph b, j and i numbered inside the graph."""
    edge_index = check_edge_index(edge_index, who="to_dense_adj")
    if batch is None:
        n = int(edge_index.max()) + 1 if edge_index.size else 0
        if max_num_nodes is not None:
            n = max(n, int(max_num_nodes))
        batch = np.zeros(n, dtype=np.int64)
    batch = np.asarray(getattr(batch, "data", batch)).astype(np.int64)
    edge_index = check_edge_index(edge_index, batch.shape[0], "to_dense_adj")
    num_graphs, size, slot = _node_slots(batch, max_num_nodes, "to_dense_adj")
    graph = batch[edge_index[0]]
    crossing = np.flatnonzero(graph != batch[edge_index[1]])
    if crossing.size:
        j, i = edge_index[:, crossing[0]]
        raise ValueError(f"to_dense_adj: edge {j} -> {i} joins graphs {batch[j]} and {batch[i]}; expected the "
                         "edges of each graph to stay inside it")
    flat = (graph * size + slot[edge_index[0]]) * size + slot[edge_index[1]]
    if edge_attr is None:
        weights = Tensor(np.ones(edge_index.shape[1]))
    else:
        weights = as_tensor(edge_attr)
        if weights.shape[0] != edge_index.shape[1]:
            raise ShapeError(f"to_dense_adj: edge_attr of shape {tuple(weights.shape)} needs one row per edge "
                             f"({edge_index.shape[1]})")
    out = F.segment_sum(weights, flat, num_graphs * size * size)
    return F.reshape(out, (num_graphs, size, size) + tuple(weights.shape[1:]))


def dense_diff_pool(x, adj, s, mask=None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(x', A', link loss, entropy loss) of DiffPool (module docstring) for x (B, N, F),
    adj (B, N, N), assignment logits s (B, N, C) and an optional mask (B, N) of real nodes.
    2-D inputs are one graph."""
    x, adj, s = as_tensor(x), as_tensor(adj), as_tensor(s)
    x = F.expand_dims(x, 0) if x.ndim == 2 else x
    adj = F.expand_dims(adj, 0) if adj.ndim == 2 else adj
    s = F.expand_dims(s, 0) if s.ndim == 2 else s
    b, n = x.shape[0], x.shape[1]
    if tuple(adj.shape) != (b, n, n) or s.ndim != 3 or tuple(s.shape[:2]) != (b, n):
        raise ShapeError(f"dense_diff_pool: x {tuple(x.shape)}, adj {tuple(adj.shape)} and s {tuple(s.shape)} "
                         f"do not fit; expected (B, N, F), (B, N, N) and (B, N, C) with B={b}, N={n}")
    s = F.softmax(s, axis=-1)
    if mask is not None:
        mask = np.asarray(getattr(mask, "data", mask)).reshape(b, n, 1).astype(x.dtype)
        x, s = x * mask, s * mask
    s_t = F.transpose(s, (0, 2, 1))
    pooled = F.matmul(s_t, x)
    pooled_adj = F.matmul(F.matmul(s_t, adj), s)
    residual = adj - F.matmul(s, s_t)
    link_loss = F.sqrt(F.sum(residual * residual)) / float(b * n * n)
    entropy_loss = F.mean(F.sum(-s * F.log(s + ENTROPY_EPSILON), axis=-1))
    return pooled, pooled_adj, link_loss, entropy_loss
