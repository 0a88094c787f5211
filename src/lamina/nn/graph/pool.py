"""Whole-graph readouts: every graph of a batch reduced to one row.

For node features x (N, F) and ``batch`` (N,) naming each node's graph (0 .. G-1):

    global_add_pool:   y[g] = sum of x[v] over the nodes v of graph g
    global_mean_pool:  y[g] = that sum / the number of nodes of g
    global_max_pool:   y[g] = elementwise max of x[v] over the nodes of g

(G, F) out; ``batch`` None treats all nodes as one graph; ``num_graphs`` (default
max(batch) + 1) gives trailing empty graphs a row of zeros.
"""

from __future__ import annotations

import numpy as np

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn.layer import register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["GlobalAddPool", "GlobalMaxPool", "GlobalMeanPool", "global_add_pool", "global_max_pool",
           "global_mean_pool"]


def _batch_vector(x: Tensor, batch, who: str) -> np.ndarray:
    if x.ndim != 2:
        raise ShapeError(f"{who}: x must have shape (num_nodes, features), got shape {tuple(x.shape)}")
    if batch is None:
        return np.zeros(x.shape[0], dtype=np.int64)
    batch = np.asarray(getattr(batch, "data", batch))
    if batch.dtype.kind not in "iu":
        raise TypeError(f"{who}: batch must hold integers, got dtype {batch.dtype}")
    if batch.shape != (x.shape[0],):
        raise ShapeError(f"{who}: batch of shape {batch.shape} must have one entry per node of x of shape "
                         f"{tuple(x.shape)}")
    return batch


def _pool(reduce, who: str, x, batch, num_graphs):
    x = as_tensor(x)
    return reduce(x, _batch_vector(x, batch, who), num_graphs)


def global_add_pool(x, batch=None, num_graphs: int | None = None) -> Tensor:
    """(G, F) sums of the node features of each graph."""
    return _pool(F.segment_sum, "global_add_pool", x, batch, num_graphs)


def global_mean_pool(x, batch=None, num_graphs: int | None = None) -> Tensor:
    """(G, F) means of the node features of each graph."""
    return _pool(F.segment_mean, "global_mean_pool", x, batch, num_graphs)


def global_max_pool(x, batch=None, num_graphs: int | None = None) -> Tensor:
    """(G, F) elementwise maxima of the node features of each graph."""
    return _pool(F.segment_max, "global_max_pool", x, batch, num_graphs)


class _GlobalPool(Module):
    pool = None

    def forward(self, x, batch=None, num_graphs: int | None = None) -> Tensor:
        return type(self).pool(x, batch, num_graphs)

    def get_config(self) -> dict:
        return {"name": self.name}


@register_layer
class GlobalAddPool(_GlobalPool):
    """Layer form of :func:`global_add_pool`: ``pool(x, batch)``."""

    pool = staticmethod(global_add_pool)


@register_layer
class GlobalMeanPool(_GlobalPool):
    """Layer form of :func:`global_mean_pool`: ``pool(x, batch)``."""

    pool = staticmethod(global_mean_pool)


@register_layer
class GlobalMaxPool(_GlobalPool):
    """Layer form of :func:`global_max_pool`: ``pool(x, batch)``."""

    pool = staticmethod(global_max_pool)
