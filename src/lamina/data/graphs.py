"""Graphs as arrays, in PyTorch Geometric's layout, and the NumPy helpers around them.

A graph of N nodes is

    x:           (N, F) node features
    edge_index:  (2, E) integers, one column (j, i) per directed edge j -> i: row 0 holds the
                 sources j, row 1 the targets i (messages flow from source to target)
    edge_weight: (E,) optional weights, one per edge

and several graphs batch into one disconnected graph: their node arrays are stacked, the
edge indices of each graph shifted by the number of nodes before it, and ``batch[v]`` says
which graph node v belongs to (:func:`collate_graphs`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lamina.errors import ShapeError

__all__ = [
    "Graph", "GraphBatch", "add_remaining_self_loops", "add_self_loops", "check_edge_index", "collate_graphs",
    "degree", "normalized_adjacency", "remove_self_loops", "to_undirected",
]


def check_edge_index(edge_index, num_nodes: int | None = None, who: str = "edge_index") -> np.ndarray:
    """``edge_index`` as an int64 (2, E) array, checked: integer dtype, two rows, and (when
    ``num_nodes`` is given) every value in [0, num_nodes). ``who`` names the caller in errors."""
    array = np.asarray(getattr(edge_index, "data", edge_index))
    if array.dtype.kind not in "iu":
        raise TypeError(f"{who}: edge_index must hold integers, got dtype {array.dtype}")
    if array.ndim != 2 or array.shape[0] != 2:
        raise ShapeError(f"{who}: edge_index must have shape (2, num_edges) (sources, then targets), "
                         f"got shape {array.shape}")
    if num_nodes is not None and array.size:
        low, high = int(array.min()), int(array.max())
        if low < 0 or high >= num_nodes:
            bad = low if low < 0 else high
            raise ValueError(f"{who}: edge_index holds node {bad}, out of range for {num_nodes} nodes; "
                             f"expected values in [0, {num_nodes})")
    return array.astype(np.int64, copy=False)


def _check_weight(edge_weight, num_edges: int, who: str) -> np.ndarray | None:
    if edge_weight is None:
        return None
    weight = np.asarray(edge_weight)
    if weight.shape != (num_edges,):
        raise ShapeError(f"{who}: edge_weight of shape {weight.shape} must have one entry per edge, "
                         f"shape ({num_edges},)")
    return weight


@dataclass
class Graph:
    """One graph: node features ``x`` (N, F), ``edge_index`` (2, E), optional ``edge_weight``
    (E,) and target ``y`` (a graph label, or one label per node)."""

    x: np.ndarray
    edge_index: np.ndarray
    edge_weight: np.ndarray | None = None
    y: Any = None

    def __post_init__(self) -> None:
        self.x = np.asarray(self.x)
        if self.x.ndim != 2:
            raise ShapeError(f"Graph: x must have shape (num_nodes, num_features), got shape {self.x.shape}")
        self.edge_index = check_edge_index(self.edge_index, self.x.shape[0], "Graph")
        self.edge_weight = _check_weight(self.edge_weight, self.edge_index.shape[1], "Graph")

    @property
    def num_nodes(self) -> int:
        return self.x.shape[0]

    @property
    def num_edges(self) -> int:
        return self.edge_index.shape[1]


@dataclass
class GraphBatch:
    """Several graphs as one disconnected graph: ``batch`` (N,) gives each node's graph and
    ``ptr`` (num_graphs + 1,) where each graph's nodes start; ``y`` stacks the targets."""

    x: np.ndarray
    edge_index: np.ndarray
    batch: np.ndarray
    ptr: np.ndarray
    edge_weight: np.ndarray | None = None
    y: Any = None

    @property
    def num_graphs(self) -> int:
        return self.ptr.shape[0] - 1

    @property
    def num_nodes(self) -> int:
        return self.x.shape[0]


def collate_graphs(graphs: list[Graph]) -> GraphBatch:
    """Batch ``graphs`` into one :class:`GraphBatch` (usable as a DataLoader ``collate_fn``):
    node features and targets stacked, each graph's edges shifted by the nodes before it.
    Edge weights are kept when every graph has them (all or none may)."""
    if not isinstance(graphs, (list, tuple)) or not graphs:
        raise ValueError(f"collate_graphs: expected a non-empty list of Graph objects, got {graphs!r:.80}")
    for k, g in enumerate(graphs):
        if not isinstance(g, Graph):
            raise TypeError(f"collate_graphs: item {k} is a {type(g).__name__}, expected a Graph")
    widths = {g.x.shape[1] for g in graphs}
    if len(widths) != 1:
        raise ShapeError(f"collate_graphs: the graphs have different feature widths {sorted(widths)}; "
                         "expected one")
    weighted = [g.edge_weight is not None for g in graphs]
    if any(weighted) and not all(weighted):
        raise ValueError(f"collate_graphs: graph {weighted.index(False)} has no edge_weight but graph "
                         f"{weighted.index(True)} has; give every graph edge weights or none")
    sizes = np.array([g.num_nodes for g in graphs], dtype=np.int64)
    ptr = np.concatenate([[0], np.cumsum(sizes)])
    edge_index = np.concatenate([g.edge_index + start for g, start in zip(graphs, ptr[:-1])], axis=1)
    edge_weight = np.concatenate([g.edge_weight for g in graphs]) if all(weighted) else None
    ys = [g.y for g in graphs]
    y = None if all(v is None for v in ys) else _stack_targets(ys)
    return GraphBatch(x=np.concatenate([g.x for g in graphs]), edge_index=edge_index,
                      batch=np.repeat(np.arange(len(graphs)), sizes), ptr=ptr, edge_weight=edge_weight, y=y)


def _stack_targets(ys: list) -> np.ndarray:
    """Graph labels (scalars) stack into (G,); node labels (arrays per graph) join end to end."""
    arrays = [np.asarray(v) for v in ys]
    if any(a.ndim == 0 for a in arrays):
        return np.stack(arrays)
    return np.concatenate(arrays)


def remove_self_loops(edge_index, edge_weight=None) -> tuple[np.ndarray, np.ndarray | None]:
    """The edges j -> i with j != i (and their weights)."""
    edge_index = check_edge_index(edge_index, who="remove_self_loops")
    edge_weight = _check_weight(edge_weight, edge_index.shape[1], "remove_self_loops")
    keep = edge_index[0] != edge_index[1]
    return edge_index[:, keep], (None if edge_weight is None else edge_weight[keep])


def add_self_loops(edge_index, num_nodes: int, edge_weight=None,
                   fill_value: float = 1.0) -> tuple[np.ndarray, np.ndarray | None]:
    """The edges followed by one loop i -> i for every node (weight ``fill_value``), whether
    or not the node has one already."""
    edge_index = check_edge_index(edge_index, num_nodes, "add_self_loops")
    edge_weight = _check_weight(edge_weight, edge_index.shape[1], "add_self_loops")
    loops = np.arange(num_nodes, dtype=np.int64)
    out = np.concatenate([edge_index, np.stack([loops, loops])], axis=1)
    if edge_weight is None:
        return out, None
    return out, np.concatenate([edge_weight, np.full(num_nodes, fill_value, dtype=edge_weight.dtype)])


def add_remaining_self_loops(edge_index, num_nodes: int, edge_weight=None,
                             fill_value: float = 1.0) -> tuple[np.ndarray, np.ndarray | None]:
    """The edges followed by a loop i -> i (weight ``fill_value``) for each node that has none."""
    edge_index = check_edge_index(edge_index, num_nodes, "add_remaining_self_loops")
    edge_weight = _check_weight(edge_weight, edge_index.shape[1], "add_remaining_self_loops")
    missing = missing_self_loops(edge_index, num_nodes)
    out = np.concatenate([edge_index, np.stack([missing, missing])], axis=1)
    if edge_weight is None:
        return out, None
    return out, np.concatenate([edge_weight, np.full(missing.shape[0], fill_value, dtype=edge_weight.dtype)])


def missing_self_loops(edge_index: np.ndarray, num_nodes: int) -> np.ndarray:
    """The nodes with no edge i -> i, in increasing order."""
    has_loop = np.zeros(num_nodes, dtype=bool)
    has_loop[edge_index[0][edge_index[0] == edge_index[1]]] = True
    return np.flatnonzero(~has_loop).astype(np.int64)


def to_undirected(edge_index, num_nodes: int | None = None, edge_weight=None) -> tuple[np.ndarray, np.ndarray | None]:
    """Every edge j -> i together with i -> j, each pair once, sorted by (source, target);
    the weights of edges that coincide are added up (as PyG's ``to_undirected`` with 'add')."""
    edge_index = check_edge_index(edge_index, num_nodes, "to_undirected")
    edge_weight = _check_weight(edge_weight, edge_index.shape[1], "to_undirected")
    n = int(edge_index.max()) + 1 if num_nodes is None and edge_index.size else (num_nodes or 0)
    both = np.concatenate([edge_index, edge_index[::-1]], axis=1)
    keys, inverse = np.unique(both[0] * n + both[1], return_inverse=True)
    out = np.stack([keys // n, keys % n]).astype(np.int64) if n else np.zeros((2, 0), dtype=np.int64)
    if edge_weight is None:
        return out, None
    weights = np.zeros(keys.shape[0], dtype=edge_weight.dtype)
    np.add.at(weights, inverse.reshape(-1), np.concatenate([edge_weight, edge_weight]))
    return out, weights


def degree(index, num_nodes: int | None = None, edge_weight=None, dtype=np.float64) -> np.ndarray:
    """How many entries of ``index`` name each node (the weighted count with ``edge_weight``):
    ``degree(edge_index[1], N)`` is the in-degree, ``degree(edge_index[0], N)`` the out-degree."""
    index = np.asarray(index)
    if index.ndim != 1 or index.dtype.kind not in "iu":
        raise ShapeError(f"degree: index must be a 1-D integer array, got shape {index.shape} ({index.dtype})")
    n = (int(index.max()) + 1 if index.size else 0) if num_nodes is None else num_nodes
    weights = None if edge_weight is None else _check_weight(edge_weight, index.shape[0], "degree")
    return np.bincount(index, weights=weights, minlength=n).astype(dtype)


def normalized_adjacency(edge_index, num_nodes: int, edge_weight=None, add_loops: bool = True,
                         dtype=np.float64) -> np.ndarray:
    """The dense (N, N) matrix D^-1/2 A D^-1/2 of Kipf & Welling, A[i, j] the (summed) weight
    of the edges j -> i, with the identity added first when ``add_loops`` (only for nodes
    without a loop, as GCNConv does) and D the diagonal of A's row sums (in-degrees); a node
    of degree 0 gets 0. For small graphs and checks: GCNConv never forms it."""
    edge_index = check_edge_index(edge_index, num_nodes, "normalized_adjacency")
    edge_weight = _check_weight(edge_weight, edge_index.shape[1], "normalized_adjacency")
    if add_loops:
        edge_index, edge_weight = add_remaining_self_loops(
            edge_index, num_nodes, np.ones(edge_index.shape[1]) if edge_weight is None else edge_weight)
    weights = np.ones(edge_index.shape[1]) if edge_weight is None else edge_weight
    a = np.zeros((num_nodes, num_nodes), dtype=dtype)
    np.add.at(a, (edge_index[1], edge_index[0]), weights)
    deg = a.sum(axis=1)
    inv_sqrt = np.where(deg > 0, 1.0 / np.sqrt(np.where(deg > 0, deg, 1.0)), 0.0)
    return inv_sqrt[:, None] * a * inv_sqrt[None, :]
