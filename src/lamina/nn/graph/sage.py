"""GraphSAGE (Hamilton, Ying & Leskovec, 2017), ``SAGEConv``, with PyTorch Geometric's
conventions: for node i with in-neighbours N(i) (the sources of the edges j -> i)

    h_i = W_n aggr_{j in N(i)} x_j + b + W_r x_i,     aggr: mean, max or sum

the root term W_r x_i only with ``root_weight``; a node without neighbours aggregates the
zero vector. ``normalize`` divides every h_i by its Euclidean norm.
"""

from __future__ import annotations

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.nn import init as initializers
from lamina.nn.dense import linear
from lamina.nn.graph._inputs import graph_inputs, node_shape
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module

__all__ = ["SAGEConv", "aggregate"]

AGGREGATIONS = {"sum": F.segment_sum, "mean": F.segment_mean, "max": F.segment_max}


def aggregate(x: Tensor, edge_index, num_nodes: int, aggr: str = "sum") -> Tensor:
    """(num_nodes, ...) aggregation over each node's in-neighbours of their rows of x:
    the sum, mean or max of x[j] over the edges j -> i (0 for a node with no in-edge)."""
    return AGGREGATIONS[aggr](F.take_rows(x, edge_index[0]), edge_index[1], num_nodes)


@register_layer
class SAGEConv(Module):
    """GraphSAGE: h_i = W_n aggr_{j -> i} x_j + b + W_r x_i on node features x (N, F) and
    ``edge_index`` (2, E); output (N, out_features). ``aggr`` is 'mean', 'max' or 'sum'."""

    def __init__(self, out_features: int, aggr: str = "mean", root_weight: bool = True, normalize: bool = False,
                 bias: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.out_features = positive_int(out_features, "SAGEConv: out_features")
        if aggr not in AGGREGATIONS:
            raise ValueError(f"SAGEConv: aggr must be one of {sorted(AGGREGATIONS)}, got {aggr!r}")
        self.aggr = aggr
        self.root_weight = bool(root_weight)
        self.normalize = bool(normalize)
        self.use_bias = bool(bias)

    def build(self, input_shape) -> None:
        n_in = node_shape(self, input_shape)[1]
        dtype = backend.get_default_dtype()
        shape = (n_in, self.out_features)
        self.add_parameter("neighbor_kernel", initializers.xavier_uniform(shape, dtype=dtype))
        if self.root_weight:
            self.add_parameter("root_kernel", initializers.xavier_uniform(shape, dtype=dtype))
        if self.use_bias:
            self.add_parameter("bias", initializers.zeros((self.out_features,), dtype=dtype))
        self.built = True

    def forward(self, x, edge_index) -> Tensor:
        x, edge_index, _ = graph_inputs(self, x, edge_index, None, self.neighbor_kernel.shape[0])
        neighbors = aggregate(x, edge_index, x.shape[0], self.aggr)
        out = linear(neighbors, self.neighbor_kernel, self.bias if self.use_bias else None)
        if self.root_weight:
            out = out + linear(x, self.root_kernel)
        return F.normalize(out, p=2, axis=-1) if self.normalize else out

    def compute_output_shape(self, input_shape):
        return (node_shape(self, input_shape)[0], self.out_features)

    def get_config(self) -> dict:
        return {"out_features": self.out_features, "aggr": self.aggr, "root_weight": self.root_weight,
                "normalize": self.normalize, "bias": self.use_bias, "name": self.name}

    def extra_repr(self) -> str:
        n_in = self.neighbor_kernel.shape[0] if self.built else "?"
        flags = [f"{k}={v}" for k, v, default in (("root_weight", self.root_weight, True),
                                                   ("normalize", self.normalize, False),
                                                   ("bias", self.use_bias, True)) if v != default]
        return ", ".join([f"{n_in} -> {self.out_features}", f"aggr={self.aggr!r}", *flags])
