"""The graph transformer layer of Shi et al. (2021), ``TransformerConv``, as PyTorch
Geometric's. Per head k (H heads of C features), for every edge j -> i:

    alpha_ji = softmax over the in-edges of i of (W_q x_i + b_q) . (W_k x_j + b_k) / sqrt(C)
    m_i      = sum over the edges j -> i of alpha_ji (W_v x_j + b_v)

heads concatenated (N, H C) or averaged (N, C). With ``root_weight`` a skip r_i = W_s x_i + b_s
is added, or with ``beta`` gated: g_i = sigmoid(w_b . [m_i, r_i, m_i - r_i]),
out_i = g_i r_i + (1 - g_i) m_i. No self-loops are added; a node without in-edges gets m_i = 0.
"""

from __future__ import annotations

import math

from lamina import backend
from lamina import functional as F
from lamina.nn import init as initializers
from lamina.nn.dense import linear
from lamina.nn.dropout import DropoutFunction
from lamina.nn.graph._inputs import graph_inputs, node_shape
from lamina.nn.layer import dropout_rate, positive_int, register_layer
from lamina.nn.module import Module

__all__ = ["TransformerConv"]


@register_layer
class TransformerConv(Module):
    """Multi-head dot-product attention over each node's in-edges (module docstring) on x
    (N, F) and ``edge_index`` (2, E); output (N, heads * out_features) with ``concat``."""

    def __init__(self, out_features: int, heads: int = 1, concat: bool = True, beta: bool = False,
                 dropout: float = 0.0, root_weight: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.out_features = positive_int(out_features, "TransformerConv: out_features")
        self.heads = positive_int(heads, "TransformerConv: heads")
        self.concat = bool(concat)
        self.beta = bool(beta) and bool(root_weight)
        self.dropout = dropout_rate(dropout, "TransformerConv")
        self.root_weight = bool(root_weight)

    def build(self, input_shape) -> None:
        n_in = node_shape(self, input_shape)[1]
        dtype = backend.get_default_dtype()
        width = self.heads * self.out_features
        for part in ("query", "key", "value"):
            self.add_parameter(f"{part}_kernel", initializers.xavier_uniform((n_in, width), dtype=dtype))
            self.add_parameter(f"{part}_bias", initializers.zeros((width,), dtype=dtype))
        out_width = width if self.concat else self.out_features
        if self.root_weight:
            self.add_parameter("skip_kernel", initializers.xavier_uniform((n_in, out_width), dtype=dtype))
            self.add_parameter("skip_bias", initializers.zeros((out_width,), dtype=dtype))
        if self.beta:
            self.add_parameter("beta_kernel", initializers.xavier_uniform((3 * out_width, 1), dtype=dtype))
        self.built = True

    def forward(self, x, edge_index, return_attention: bool = False):
        x, edge_index, _ = graph_inputs(self, x, edge_index, None, self.query_kernel.shape[0])
        n, h, c = x.shape[0], self.heads, self.out_features
        source, target = edge_index
        query, key, value = (F.reshape(linear(x, getattr(self, f"{p}_kernel"), getattr(self, f"{p}_bias")), (n, h, c))
                             for p in ("query", "key", "value"))
        scores = F.sum(F.take_rows(query, target) * F.take_rows(key, source), axis=-1) / math.sqrt(c)
        alpha = F.segment_softmax(scores, target, n)                     # (E, H)
        if self.training and self.dropout > 0:
            alpha = DropoutFunction.apply(alpha, rate=self.dropout)
        out = F.segment_sum(F.take_rows(value, source) * F.reshape(alpha, (-1, h, 1)), target, n)
        out = F.reshape(out, (n, h * c)) if self.concat else F.mean(out, axis=1)
        if self.root_weight:
            root = linear(x, self.skip_kernel, self.skip_bias)
            if self.beta:
                gate = F.sigmoid(linear(F.concat([out, root, out - root], axis=1), self.beta_kernel))
                out = gate * root + (1.0 - gate) * out
            else:
                out = out + root
        return (out, (edge_index, alpha)) if return_attention else out

    def compute_output_shape(self, input_shape):
        width = self.heads * self.out_features if self.concat else self.out_features
        return (node_shape(self, input_shape)[0], width)

    def get_config(self) -> dict:
        return {"out_features": self.out_features, "heads": self.heads, "concat": self.concat, "beta": self.beta,
                "dropout": self.dropout, "root_weight": self.root_weight, "name": self.name}

    def extra_repr(self) -> str:
        n_in = self.query_kernel.shape[0] if self.built else "?"
        return f"{n_in} -> {self.out_features}, heads={self.heads}, beta={self.beta}"
