"""Graph attention (Velickovic et al., 2018), ``GATConv``, as PyTorch Geometric's GATConv.

Per head k (H heads of C features), with h = x W split into heads h^k (N, C):

    e_ji    = LeakyReLU(a_src^k . h^k_j + a_dst^k . h^k_i)        for every edge j -> i
    alpha_ji = exp(e_ji) / sum over the edges l -> i of exp(e_li)  (softmax over i's in-edges)
    out^k_i = sum over the edges j -> i of alpha_ji h^k_j

then the heads are concatenated (N, H C) or averaged (N, C), and the bias added. With
``add_self_loops`` every node first gets exactly one loop i -> i (existing loops are
replaced), so it attends to itself too. ``dropout`` drops attention coefficients in training.

The graph can also come as a sparse (N, N) adjacency matrix A (a
:class:`~lamina.sparse.SparseTensor`, A[i, j] stored for the edge j -> i; its values are not
used, and a position stored twice is one edge). Per head the scores are then one sampled
product, e = [s_dst, 1] [1; s_src] read at A's positions (``sparse.sampled_addmm``), the
coefficients a row-wise ``sparse.softmax`` and the messages one sparse product.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.data.graphs import add_self_loops, remove_self_loops
from lamina.nn import init as initializers
from lamina.nn.dense import linear
from lamina.nn.dropout import DropoutFunction
from lamina.nn.graph._inputs import adjacency_inputs, graph_inputs, node_shape
from lamina.nn.layer import dropout_rate, positive_int, register_layer
from lamina.nn.module import Module
from lamina.sparse import SparseTensor, mm, sampled_addmm, softmax, sparse_coo_tensor

__all__ = ["GATConv"]


@register_layer
class GATConv(Module):
    """Multi-head graph attention on node features x (N, F) and ``edge_index`` (2, E):
    output (N, heads * out_features) with ``concat``, else (N, out_features) (heads averaged).
    ``forward(x, edge_index, return_attention=True)`` also gives the (E', heads) coefficients
    and the edge index they belong to (self-loops included)."""

    def __init__(self, out_features: int, heads: int = 1, concat: bool = True, negative_slope: float = 0.2,
                 dropout: float = 0.0, add_self_loops: bool = True, bias: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.out_features = positive_int(out_features, "GATConv: out_features")
        self.heads = positive_int(heads, "GATConv: heads")
        self.concat = bool(concat)
        self.negative_slope = float(negative_slope)
        self.dropout = dropout_rate(dropout, "GATConv")
        self.add_self_loops = bool(add_self_loops)
        self.use_bias = bool(bias)

    def build(self, input_shape) -> None:
        n_in = node_shape(self, input_shape)[1]
        dtype = backend.get_default_dtype()
        h, c = self.heads, self.out_features
        self.add_parameter("weight", initializers.xavier_uniform((n_in, h * c), dtype=dtype))
        self.add_parameter("att_src", initializers.xavier_uniform((h, c), 1, c, dtype=dtype))
        self.add_parameter("att_dst", initializers.xavier_uniform((h, c), 1, c, dtype=dtype))
        if self.use_bias:
            self.add_parameter("bias", initializers.zeros((h * c if self.concat else c,), dtype=dtype))
        self.built = True

    def forward(self, x, edge_index, return_attention: bool = False):
        if isinstance(edge_index, SparseTensor):
            return self._forward_adjacency(x, edge_index, return_attention)
        x, edge_index, _ = graph_inputs(self, x, edge_index, None, self.weight.shape[0])
        n, h, c = x.shape[0], self.heads, self.out_features
        if self.add_self_loops:
            edge_index, _ = add_self_loops(remove_self_loops(edge_index)[0], n)
        source, target = edge_index
        features = F.reshape(linear(x, self.weight), (n, h, c))
        score_src = F.sum(features * self.att_src, axis=-1)           # (N, H): a_src . h_j
        score_dst = F.sum(features * self.att_dst, axis=-1)
        scores = F.leaky_relu(F.take_rows(score_src, source) + F.take_rows(score_dst, target), self.negative_slope)
        alpha = F.segment_softmax(scores, target, n)                   # (E, H)
        if self.training and self.dropout > 0:
            alpha = DropoutFunction.apply(alpha, rate=self.dropout)
        messages = F.take_rows(features, source) * F.reshape(alpha, (-1, h, 1))
        out = F.segment_sum(messages, target, n)                       # (N, H, C)
        out = F.reshape(out, (n, h * c)) if self.concat else F.mean(out, axis=1)
        if self.use_bias:
            out = out + self.bias
        return (out, (edge_index, alpha)) if return_attention else out

    def _forward_adjacency(self, x, adjacency: SparseTensor, return_attention: bool):
        """The same layer on a sparse adjacency matrix, with sparse products per head."""
        x, adjacency = adjacency_inputs(self, x, adjacency, None, self.weight.shape[0], weighted=False)
        n, h, c = x.shape[0], self.heads, self.out_features
        target, source = adjacency.detach().coalesce().indices
        edge_index = np.stack([source, target])
        if self.add_self_loops:
            edge_index, _ = add_self_loops(remove_self_loops(edge_index)[0], n)
        positions = sparse_coo_tensor(edge_index[::-1], np.zeros(edge_index.shape[1]), (n, n), x.dtype).coalesce()
        features = F.reshape(linear(x, self.weight), (n, h, c))
        score_src = F.sum(features * self.att_src, axis=-1)           # (N, H): a_src . h_j
        score_dst = F.sum(features * self.att_dst, axis=-1)
        ones = np.ones((n, 1), dtype=x.dtype)
        outs, alphas = [], []
        for k in range(h):
            left = F.concat([score_dst[:, k:k + 1], ones], axis=1)    # (N, 2): [s_dst_i, 1]
            right = F.concat([ones.T, F.transpose(score_src[:, k:k + 1])], axis=0)   # (2, N): [1; s_src_j]
            scores = sampled_addmm(positions, left, right, beta=0.0)   # s_dst_i + s_src_j at each edge j -> i
            alpha = softmax(scores.with_values(F.leaky_relu(scores.values, self.negative_slope)), 1)
            if self.training and self.dropout > 0:
                alpha = alpha.with_values(DropoutFunction.apply(alpha.values, rate=self.dropout))
            outs.append(mm(alpha, features[:, k, :]))
            alphas.append(alpha.values)
        out = F.stack(outs, axis=1)                                     # (N, H, C)
        out = F.reshape(out, (n, h * c)) if self.concat else F.mean(out, axis=1)
        if self.use_bias:
            out = out + self.bias
        if not return_attention:
            return out
        target, source = positions.indices
        return out, (np.stack([source, target]), F.stack(alphas, axis=1))

    def compute_output_shape(self, input_shape):
        width = self.heads * self.out_features if self.concat else self.out_features
        return (node_shape(self, input_shape)[0], width)

    def get_config(self) -> dict:
        return {"out_features": self.out_features, "heads": self.heads, "concat": self.concat,
                "negative_slope": self.negative_slope, "dropout": self.dropout,
                "add_self_loops": self.add_self_loops, "bias": self.use_bias, "name": self.name}

    def extra_repr(self) -> str:
        n_in = self.weight.shape[0] if self.built else "?"
        parts = [f"{n_in} -> {self.out_features}", f"heads={self.heads}"]
        if not self.concat:
            parts.append("concat=False")
        if self.dropout:
            parts.append(f"dropout={self.dropout}")
        return ", ".join(parts)


