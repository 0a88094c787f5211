"""Hierarchical pooling by node selection, as PyTorch Geometric's ``TopKPooling`` (Gao & Ji,
2019) and ``SAGPooling`` (Lee et al., 2019).

Each node gets a score y; every graph of the batch keeps its ceil(ratio * n_g) best nodes
(or, with ``min_score``, the nodes scoring above min(min_score, max_g y - 1e-7)):

    TopKPooling:  y = x . w / ||w||
    SAGPooling:   y = GraphConv(x, edge_index), one output feature
    gate:         tanh(y) (softmax over the graph's nodes with ``min_score``)
    x'            = multiplier * x[perm] * gate[perm]

The kept nodes are ordered by graph, then by decreasing score; the edges between two kept
nodes survive, renumbered. The gate carries the gradient to the scoring parameters.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.nn import init as initializers
from lamina.nn.graph._inputs import graph_inputs, node_shape
from lamina.nn.graph.pool import _batch_vector
from lamina.nn.graph.propagation import GraphConv
from lamina.nn.layer import register_layer
from lamina.nn.module import Module

__all__ = ["SAGPooling", "TopKPooling", "filter_adjacency", "topk_nodes"]

MIN_SCORE_TOLERANCE = 1e-7


def _check_ratio(ratio, min_score, who: str):
    if min_score is not None:
        return None if ratio is None else _check_ratio(ratio, None, who)
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 < ratio <= 1.0:
        raise ValueError(f"{who}: ratio must be in (0, 1], got {ratio!r}")
    return float(ratio)


def topk_nodes(score: np.ndarray, ratio: float | None, batch: np.ndarray, min_score: float | None = None,
               num_graphs: int | None = None) -> np.ndarray:
    """Indices of the kept nodes: per graph its ceil(ratio * n_g) highest scores, or those
    above min(min_score, graph maximum - 1e-7); by graph, then by decreasing score."""
    num_graphs = int(batch.max()) + 1 if num_graphs is None and batch.size else (num_graphs or 0)
    order = np.lexsort((-score, batch))                    # by graph, then best first
    if min_score is not None:
        peak = np.full(num_graphs, -np.inf)
        np.maximum.at(peak, batch, score)
        threshold = np.minimum(peak[batch] - MIN_SCORE_TOLERANCE, min_score)
        return order[(score > threshold)[order]]
    counts = np.bincount(batch, minlength=num_graphs)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    keep = np.ceil(ratio * counts - 1e-9).astype(np.int64)
    rank = np.arange(order.shape[0]) - starts[batch[order]]
    return order[rank < keep[batch[order]]]


def filter_adjacency(edge_index: np.ndarray, perm: np.ndarray, num_nodes: int,
                     edge_attr=None) -> tuple[np.ndarray, object]:
    """The edges whose two ends are in ``perm``, renumbered to positions in perm (and their
    attributes: rows of an array or tensor)."""
    position = np.full(num_nodes, -1, dtype=np.int64)
    position[perm] = np.arange(perm.shape[0])
    renamed = position[edge_index]
    keep = (renamed >= 0).all(axis=0)
    if edge_attr is not None:
        edge_attr = F.take_rows(edge_attr, np.flatnonzero(keep)) if isinstance(edge_attr, Tensor) \
            else np.asarray(edge_attr)[keep]
    return renamed[:, keep], edge_attr


class _SelectionPool(Module):
    """The selection and gating shared by TopKPooling and SAGPooling."""

    def _setup(self, ratio, min_score, multiplier, who: str) -> None:
        self.ratio = _check_ratio(ratio, min_score, who)
        self.min_score = None if min_score is None else float(min_score)
        self.multiplier = float(multiplier)

    def _select(self, x: Tensor, raw_score: Tensor, edge_index, edge_attr, batch):
        n = x.shape[0]
        if self.min_score is None:
            gate = F.tanh(raw_score)
        else:
            gate = F.segment_softmax(raw_score, batch, int(batch.max()) + 1 if n else 0)
        perm = topk_nodes(gate.numpy(), self.ratio, batch, self.min_score)
        kept_gate = F.take_rows(gate, perm)
        x = F.take_rows(x, perm) * F.reshape(kept_gate, (-1, 1))
        if self.multiplier != 1.0:
            x = x * self.multiplier
        edge_index, edge_attr = filter_adjacency(edge_index, perm, n, edge_attr)
        return x, edge_index, edge_attr, batch[perm], perm, kept_gate

    def get_config(self) -> dict:
        return {"ratio": self.ratio, "min_score": self.min_score, "multiplier": self.multiplier, "name": self.name}


@register_layer
class TopKPooling(_SelectionPool):
    """``pool(x, edge_index, edge_attr=None, batch=None)`` -> (x', edge_index', edge_attr',
    batch', perm, score') with score y = x . w / ||w|| (module docstring)."""

    def __init__(self, ratio: float = 0.5, min_score: float | None = None, multiplier: float = 1.0,
                 name: str | None = None):
        super().__init__(name=name)
        self._setup(ratio, min_score, multiplier, "TopKPooling")

    def build(self, input_shape) -> None:
        n_in = node_shape(self, input_shape)[1]
        self.add_parameter("weight", initializers.xavier_uniform((n_in,), 1, n_in, dtype=backend.get_default_dtype()))
        self.built = True

    def forward(self, x, edge_index, edge_attr=None, batch=None):
        x, edge_index, _ = graph_inputs(self, x, edge_index, None, self.weight.shape[0])
        batch = _batch_vector(x, batch, self._label())
        score = F.sum(x * self.weight, axis=1) / F.sqrt(F.sum(self.weight * self.weight))
        return self._select(x, score, edge_index, edge_attr, batch)


@register_layer
class SAGPooling(_SelectionPool):
    """Self-attention graph pooling: the score of each node is a one-feature GraphConv of x
    over the graph; returns (x', edge_index', edge_attr', batch', perm, score')."""

    def __init__(self, ratio: float = 0.5, min_score: float | None = None, multiplier: float = 1.0,
                 name: str | None = None):
        super().__init__(name=name)
        self._setup(ratio, min_score, multiplier, "SAGPooling")
        self.gnn = GraphConv(1)

    def forward(self, x, edge_index, edge_attr=None, batch=None):
        x, edge_index, _ = graph_inputs(self, x, edge_index, None)
        batch = _batch_vector(x, batch, self._label())
        score = F.reshape(self.gnn(x, edge_index), (-1,))
        return self._select(x, score, edge_index, edge_attr, batch)
