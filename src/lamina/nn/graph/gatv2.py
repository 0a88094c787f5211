"""Dynamic graph attention (Brody, Alon & Yahav, 2022), ``GATv2Conv``, as PyTorch Geometric's.

Per head k (H heads of C features), with left and right projections x_l = x W_l + b_l and
x_r = x W_r + b_r split into heads (parameters ``weight_l``, ``bias_l``, ``weight_r``,
``bias_r``; with ``share_weights`` the right projection is the left one, W_r = W_l, b_r = b_l):

    e_ji     = a^k . LeakyReLU(x_l[j]^k + x_r[i]^k)               for every edge j -> i
    alpha_ji = softmax of e_ji over the in-edges of i
    out^k_i  = sum over the edges j -> i of alpha_ji x_l[j]^k

The nonlinearity sits between the sum and the attention vector, so the ranking of the
neighbours can depend on the receiving node (GATConv's cannot). Heads are concatenated
(N, H C) or averaged (N, C), then the output ``bias`` is added; ``bias=False`` drops all
three biases (b_l, b_r and the output one). ``add_self_loops`` gives every node
exactly one loop i -> i; ``dropout`` drops attention coefficients (edges) in training.
"""

from __future__ import annotations

from lamina import backend
from lamina import functional as F
from lamina.data.graphs import add_self_loops, remove_self_loops
from lamina.nn import init as initializers
from lamina.nn.dense import linear
from lamina.nn.dropout import DropoutFunction
from lamina.nn.graph._inputs import graph_inputs, node_shape
from lamina.nn.layer import dropout_rate, positive_int, register_layer
from lamina.nn.module import Module

__all__ = ["GATv2Conv"]


@register_layer
class GATv2Conv(Module):
    """GATv2 attention on node features x (N, F) and ``edge_index`` (2, E): output
    (N, heads * out_features) with ``concat``, else (N, out_features).
    ``forward(x, edge_index, return_attention=True)`` also gives (edge_index, alpha (E', H))."""

    def __init__(self, out_features: int, heads: int = 1, concat: bool = True, negative_slope: float = 0.2,
                 dropout: float = 0.0, add_self_loops: bool = True, bias: bool = True, share_weights: bool = False,
                 name: str | None = None):
        super().__init__(name=name)
        self.out_features = positive_int(out_features, "GATv2Conv: out_features")
        self.heads = positive_int(heads, "GATv2Conv: heads")
        self.concat = bool(concat)
        self.negative_slope = float(negative_slope)
        self.dropout = dropout_rate(dropout, "GATv2Conv")
        self.add_self_loops = bool(add_self_loops)
        self.use_bias = bool(bias)
        self.share_weights = bool(share_weights)

    def build(self, input_shape) -> None:
        n_in = node_shape(self, input_shape)[1]
        dtype = backend.get_default_dtype()
        h, c = self.heads, self.out_features
        sides = ("l",) if self.share_weights else ("l", "r")
        for side in sides:
            self.add_parameter(f"weight_{side}", initializers.xavier_uniform((n_in, h * c), dtype=dtype))
            if self.use_bias:
                self.add_parameter(f"bias_{side}", initializers.zeros((h * c,), dtype=dtype))
        self.add_parameter("att", initializers.xavier_uniform((h, c), 1, c, dtype=dtype))
        if self.use_bias:
            self.add_parameter("bias", initializers.zeros((h * c if self.concat else c,), dtype=dtype))
        self.built = True

    def forward(self, x, edge_index, return_attention: bool = False):
        x, edge_index, _ = graph_inputs(self, x, edge_index, None, self.weight_l.shape[0])
        n, h, c = x.shape[0], self.heads, self.out_features
        if self.add_self_loops:
            edge_index, _ = add_self_loops(remove_self_loops(edge_index)[0], n)
        source, target = edge_index
        left = self._project(x, "l")
        right = left if self.share_weights else self._project(x, "r")
        hidden = F.leaky_relu(F.take_rows(left, source) + F.take_rows(right, target), self.negative_slope)
        alpha = F.segment_softmax(F.sum(hidden * self.att, axis=-1), target, n)     # (E, H)
        if self.training and self.dropout > 0:
            alpha = DropoutFunction.apply(alpha, rate=self.dropout)
        out = F.segment_sum(F.take_rows(left, source) * F.reshape(alpha, (-1, h, 1)), target, n)
        out = F.reshape(out, (n, h * c)) if self.concat else F.mean(out, axis=1)
        if self.use_bias:
            out = out + self.bias
        return (out, (edge_index, alpha)) if return_attention else out

    def _project(self, x, side: str):
        """x W_side (+ b_side) split into heads: (N, H, C)."""
        bias = getattr(self, f"bias_{side}") if self.use_bias else None
        projected = linear(x, getattr(self, f"weight_{side}"), bias)
        return F.reshape(projected, (x.shape[0], self.heads, self.out_features))

    def compute_output_shape(self, input_shape):
        width = self.heads * self.out_features if self.concat else self.out_features
        return (node_shape(self, input_shape)[0], width)

    def get_config(self) -> dict:
        return {"out_features": self.out_features, "heads": self.heads, "concat": self.concat,
                "negative_slope": self.negative_slope, "dropout": self.dropout, "add_self_loops": self.add_self_loops,
                "bias": self.use_bias, "share_weights": self.share_weights, "name": self.name}

    def extra_repr(self) -> str:
        n_in = self.weight_l.shape[0] if self.built else "?"
        return f"{n_in} -> {self.out_features}, heads={self.heads}"
