"""The graph convolution of Kipf & Welling (2017), ``GCNConv``.

With A[i, j] the weight of the edge j -> i (1 without edge weights), I added for the nodes
that have no self-loop, and D the diagonal of the row sums of A + I (weighted in-degrees):

    H = D^-1/2 (A + I) D^-1/2 X W + b

computed edge by edge, without forming the (N, N) matrix: node i receives
norm_ji (X W)[j] from every edge j -> i, norm_ji = w_ji / sqrt(d_j d_i) (0 for d = 0).
Gradients flow to X, W, b and to the edge weights (through norm and the degrees).

The graph can also come as a sparse (N, N) adjacency matrix A (a
:class:`~lamina.sparse.SparseTensor`, A[i, j] the weight of the edge j -> i): the same
normalisation is applied to its values and the propagation is one sparse product.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.data.graphs import missing_self_loops
from lamina.nn import init as initializers
from lamina.nn.dense import linear
from lamina.nn.graph._inputs import adjacency_inputs, graph_inputs, node_shape
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module
from lamina.sparse import SparseTensor, mm, sparse_coo_tensor

__all__ = ["GCNConv", "gcn_norm"]


def gcn_norm(edge_index: np.ndarray, num_nodes: int, edge_weight: Tensor | None, dtype,
             add_self_loops: bool = True, normalize: bool = True) -> tuple[np.ndarray, Tensor | None]:
    """(edge_index, coefficients) of the GCN propagation: the edges with the missing
    self-loops added (weight 1), and per edge w_ji / sqrt(d_j d_i) with d the weighted
    in-degree (0 where d = 0); the coefficients are the raw weights (None: all 1) without
    ``normalize``."""
    if add_self_loops:
        loops = missing_self_loops(edge_index, num_nodes)
        edge_index = np.concatenate([edge_index, np.stack([loops, loops])], axis=1)
        if edge_weight is not None:
            edge_weight = F.concat([edge_weight, Tensor(np.ones(loops.shape[0], dtype=dtype), dtype=dtype)])
    if not normalize:
        return edge_index, edge_weight
    if edge_weight is None:
        edge_weight = Tensor(np.ones(edge_index.shape[1], dtype=dtype), dtype=dtype)
    source, target = edge_index
    deg = F.segment_sum(edge_weight, target, num_nodes)
    positive = deg.data > 0
    inv_sqrt = F.where(positive, F.where(positive, deg, 1.0) ** -0.5, 0.0)
    return edge_index, F.take_rows(inv_sqrt, source) * edge_weight * F.take_rows(inv_sqrt, target)


def build_node_projection(layer: Module, input_shape) -> None:
    """Give ``layer`` its projection of the node features: ``weight`` (F, out_features),
    Glorot-initialised, and a zero ``bias`` (out_features,) when ``layer.use_bias``."""
    n_in = node_shape(layer, input_shape)[1]
    dtype = backend.get_default_dtype()
    layer.add_parameter("weight", initializers.xavier_uniform((n_in, layer.out_features), dtype=dtype))
    if layer.use_bias:
        layer.add_parameter("bias", initializers.zeros((layer.out_features,), dtype=dtype))
    layer.built = True


@register_layer
class GCNConv(Module):
    """Graph convolution: H = D^-1/2 (A + I) D^-1/2 X W + b for node features X (N, F),
    ``edge_index`` (2, E) and optional ``edge_weight`` (E,); output (N, out_features).

    ``add_self_loops`` adds the loop i -> i (weight 1) to every node that has none;
    ``normalize=False`` uses the weights as they are (H = A X W + b). W (F, out_features)
    is Glorot-initialised, b zero.
    """

    def __init__(self, out_features: int, add_self_loops: bool = True, normalize: bool = True, bias: bool = True,
                 name: str | None = None):
        super().__init__(name=name)
        self.out_features = positive_int(out_features, "GCNConv: out_features")
        self.add_self_loops = bool(add_self_loops)
        self.normalize = bool(normalize)
        self.use_bias = bool(bias)

    def build(self, input_shape) -> None:
        build_node_projection(self, input_shape)

    def forward(self, x, edge_index, edge_weight=None) -> Tensor:
        """H for node features x and the graph as ``edge_index`` (2, E) with optional
        ``edge_weight``, or as a sparse adjacency matrix A (N, N) in place of edge_index."""
        if isinstance(edge_index, SparseTensor):
            return self._forward_adjacency(x, edge_index, edge_weight)
        x, edge_index, edge_weight = graph_inputs(self, x, edge_index, edge_weight, self.weight.shape[0])
        n = x.shape[0]
        edge_index, coefficient = gcn_norm(edge_index, n, edge_weight, x.dtype, self.add_self_loops, self.normalize)
        source, target = edge_index
        messages = F.take_rows(linear(x, self.weight), source)
        if coefficient is not None:
            messages = messages * F.reshape(coefficient, (-1, 1))
        out = F.segment_sum(messages, target, n)
        return out + self.bias if self.use_bias else out

    def _forward_adjacency(self, x, adjacency: SparseTensor, edge_weight) -> Tensor:
        """H = norm(A) (X W) + b as one sparse product, the edge weights being A's values."""
        x, adjacency = adjacency_inputs(self, x, adjacency, edge_weight, self.weight.shape[0])
        n = x.shape[0]
        target, source = adjacency.indices
        edge_index, coefficient = gcn_norm(np.stack([source, target]), n, adjacency.values, x.dtype,
                                           self.add_self_loops, self.normalize)
        propagation = sparse_coo_tensor(edge_index[::-1], coefficient, (n, n))
        out = mm(propagation, linear(x, self.weight))
        return out + self.bias if self.use_bias else out

    def compute_output_shape(self, input_shape):
        return (node_shape(self, input_shape)[0], self.out_features)

    def get_config(self) -> dict:
        return {"out_features": self.out_features, "add_self_loops": self.add_self_loops,
                "normalize": self.normalize, "bias": self.use_bias, "name": self.name}

    def extra_repr(self) -> str:
        n_in = self.weight.shape[0] if self.built else "?"
        flags = [f"{k}=False" for k, v in (("add_self_loops", self.add_self_loops), ("normalize", self.normalize),
                                            ("bias", self.use_bias)) if not v]
        return ", ".join([f"{n_in} -> {self.out_features}", *flags])
