"""Graphormer-lite (after Ying et al. 2021): a pre-norm transformer over the nodes of each
graph whose attention scores get a learned bias per head for the shortest-path distance
between the two nodes, plus centrality encodings added to the node features.

    CentralityEncoding:  x_i + z_in[min(deg_in(i), D)] + z_out[min(deg_out(i), D)]
    GraphormerLayer:     h   = x + MHA(LN(x), bias)          bias_h[i, j] = b[phi(i, j), h]
                         out = h + W_2 relu(W_1 LN(h) + b_1) + b_2

phi(i, j) is the hop count from i to j clipped at ``max_distance``, or ``max_distance + 1``
when j cannot be reached from i; nodes of different graphs of a batch never attend to each
other. MHA is :func:`~lamina.nn.graph.gps.graph_attention`. No edge encodings, no virtual
node, no dropout.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.data.graph_encodings import shortest_path_distances
from lamina.data.graphs import degree
from lamina.nn import init as initializers
from lamina.nn.dense import Dense
from lamina.nn.graph._inputs import graph_inputs, node_shape
from lamina.nn.graph.gps import _build_attention, _graph_batch_inputs, _same_graph_bias, graph_attention
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module
from lamina.nn.sample_norm import LayerNorm
from lamina.nn.sequential import Sequential

__all__ = ["CentralityEncoding", "GraphormerLayer"]


@register_layer
class CentralityEncoding(Module):
    """``forward(x, edge_index)``: x (N, C) plus learned embeddings of each node's in- and
    out-degree (degrees above ``max_degree`` share the last embedding)."""

    def __init__(self, max_degree: int, name: str | None = None):
        super().__init__(name=name)
        self.max_degree = positive_int(max_degree, "CentralityEncoding: max_degree")

    def build(self, input_shape) -> None:
        c = node_shape(self, input_shape)[1]
        dtype = backend.get_default_dtype()
        for direction in ("in", "out"):
            self.add_parameter(f"{direction}_degree", initializers.normal(0.02)((self.max_degree + 1, c), dtype=dtype))
        self.built = True

    def forward(self, x, edge_index) -> Tensor:
        x, edge_index, _ = graph_inputs(self, x, edge_index, None, self.in_degree.shape[1])
        n = x.shape[0]
        d_in = np.minimum(degree(edge_index[1], n, dtype=np.int64), self.max_degree)
        d_out = np.minimum(degree(edge_index[0], n, dtype=np.int64), self.max_degree)
        return x + F.take_rows(self.in_degree, d_in) + F.take_rows(self.out_degree, d_out)

    def get_config(self) -> dict:
        return {"max_degree": self.max_degree, "name": self.name}


@register_layer
class GraphormerLayer(Module):
    """``forward(x, edge_index, batch=None)`` on x (N, channels), ``batch`` (N,) the graph of
    each node (one graph when None); output (N, channels)."""

    def __init__(self, channels: int, heads: int = 1, max_distance: int = 5, ffn_ratio: int = 2,
                 name: str | None = None):
        super().__init__(name=name)
        self.channels = positive_int(channels, "GraphormerLayer: channels")
        self.heads = positive_int(heads, "GraphormerLayer: heads")
        if self.channels % self.heads:
            raise ValueError(f"GraphormerLayer: heads = {heads} must divide channels = {channels}")
        self.max_distance = positive_int(max_distance, "GraphormerLayer: max_distance")
        self.norm_attention, self.norm_ffn = LayerNorm(), LayerNorm()
        self.ffn_ratio = positive_int(ffn_ratio, "GraphormerLayer: ffn_ratio")
        self.ffn = Sequential(Dense(ffn_ratio * self.channels, activation="relu"), Dense(self.channels))

    def build(self, input_shape) -> None:
        _build_attention(self, input_shape)
        self.add_parameter("spatial_bias", initializers.zeros((self.max_distance + 2, self.heads),
                                                              dtype=backend.get_default_dtype()))
        self.built = True

    def distance_index(self, edge_index: np.ndarray, batch: np.ndarray) -> np.ndarray:
        """(N, N) rows of ``spatial_bias``: phi(i, j) as the module docstring defines it."""
        distance = shortest_path_distances(edge_index, batch.shape[0])
        return np.where(distance < 0, self.max_distance + 1, np.minimum(distance, self.max_distance))

    def forward(self, x, edge_index, batch=None) -> Tensor:
        x, edge_index, batch = _graph_batch_inputs(self, x, edge_index, batch)
        n = x.shape[0]
        spatial = F.reshape(F.take_rows(self.spatial_bias, self.distance_index(edge_index, batch).reshape(-1)),
                            (n, n, self.heads))
        bias = F.transpose(spatial, 2, 0, 1) + _same_graph_bias(batch, x.dtype)
        h = x + graph_attention(self, self.norm_attention(x), self.heads, bias)
        return h + self.ffn(self.norm_ffn(h))

    def compute_output_shape(self, input_shape):
        return node_shape(self, input_shape)

    def get_config(self) -> dict:
        return {"channels": self.channels, "heads": self.heads, "max_distance": self.max_distance,
                "ffn_ratio": self.ffn_ratio, "name": self.name}

    def extra_repr(self) -> str:
        return f"channels={self.channels}, heads={self.heads}, max_distance={self.max_distance}"
