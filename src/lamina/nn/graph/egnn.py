"""The E(n)-equivariant graph layer of Satorras, Hoogeboom & Welling (2021), ``EGNNLayer``,
on node features h (N, hidden), coordinates x (N, D) and an ``edge_index`` (2, E) of edges
j -> i (row 0 the sources j, row 1 the targets i):

    m_ij = phi_e([h_i, h_j, ||x_i - x_j||^2, a_ij])
    x_i' = x_i + C agg_{j -> i} (x_i - x_j) phi_x(m_ij)          agg: sum or mean, C = coords_weight
    h_i' = h_i + phi_h([h_i, sum_{j -> i} m_ij])

phi_e and phi_h are two-layer SiLU MLPs (phi_h linear at the end), phi_x is Dense -> SiLU ->
Dense(1) started near zero (optionally squashed by tanh). Only distances enter phi_e, so h' is
invariant and x' equivariant under rotations, reflections and translations of x and under
permutations of the nodes. ``normalize`` divides x_i - x_j by its length (plus 1e-8, the
length held constant as in the reference code).
"""

from __future__ import annotations

import numpy as np

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn import init as initializers
from lamina.nn.dense import Dense
from lamina.nn.graph._inputs import graph_inputs
from lamina.nn.layer import input_error, positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["EGNNLayer", "built_dense", "edge_vectors"]

COORDS_AGGREGATIONS = {"sum": F.segment_sum, "mean": F.segment_mean}
NORM_EPSILON = 1e-8


def built_dense(n_in: int, units: int, use_bias: bool = True, kernel_init="xavier_uniform") -> Dense:
    """A Dense layer of ``units`` built for ``n_in`` input features."""
    layer = Dense(units, use_bias=use_bias, kernel_init=kernel_init)
    layer.build((None, n_in))
    return layer


def edge_vectors(x: Tensor, edge_index: np.ndarray) -> Tensor:
    """(E, D) differences x_i - x_j, target minus source, for the edges j -> i."""
    return F.take_rows(x, edge_index[1]) - F.take_rows(x, edge_index[0])


def coordinate_inputs(layer: Module, x, num_nodes: int, dtype) -> Tensor:
    """Coordinates x checked for ``layer``: a float (num_nodes, D) tensor of the features' dtype."""
    x = as_tensor(x)
    if x.ndim != 2 or x.shape[0] != num_nodes:
        raise input_error(layer, x, f"coordinates of shape ({num_nodes}, dims), one row per node")
    if x.dtype != dtype:
        raise TypeError(f"{layer._label()}: coordinates have dtype {x.dtype} but the node features have "
                        f"{dtype}; expected the same dtype")
    return x


@register_layer
class EGNNLayer(Module):
    """One E(n)-equivariant message-passing step (module docstring): ``layer(h, x, edge_index,
    edge_attr=None)`` -> (h', x') for h (N, ``hidden``), x (N, D) and edge_attr (E, ``edge_dim``)."""

    def __init__(self, hidden: int, edge_dim: int = 0, update_coords: bool = True, normalize: bool = False,
                 tanh: bool = False, coords_agg: str = "mean", coords_weight: float = 1.0, name: str | None = None):
        super().__init__(name=name)
        self.hidden = positive_int(hidden, "EGNNLayer: hidden")
        if isinstance(edge_dim, bool) or not isinstance(edge_dim, int) or edge_dim < 0:
            raise ValueError(f"EGNNLayer: edge_dim must be an int >= 0, got {edge_dim!r}")
        if coords_agg not in COORDS_AGGREGATIONS:
            raise ValueError(f"EGNNLayer: coords_agg must be one of {sorted(COORDS_AGGREGATIONS)}, got {coords_agg!r}")
        self.edge_dim, self.coords_agg = edge_dim, coords_agg
        self.update_coords, self.normalize, self.tanh = bool(update_coords), bool(normalize), bool(tanh)
        self.coords_weight = float(coords_weight)
        h = self.hidden
        self.edge_in = built_dense(2 * h + 1 + edge_dim, h)
        self.edge_out = built_dense(h, h)
        self.node_in = built_dense(2 * h, h)
        self.node_out = built_dense(h, h)
        if self.update_coords:
            self.coord_in = built_dense(h, h)
            self.coord_out = built_dense(h, 1, use_bias=False, kernel_init=initializers.uniform(1e-3))
        self.built = True

    def forward(self, h, x, edge_index, edge_attr=None) -> tuple[Tensor, Tensor]:
        h, edge_index, _ = graph_inputs(self, h, edge_index, None, self.hidden)
        n = h.shape[0]
        x = coordinate_inputs(self, x, n, h.dtype)
        source, target = edge_index
        diff = edge_vectors(x, edge_index)
        radial = F.sum(diff * diff, axis=1, keepdims=True)
        parts = [F.take_rows(h, target), F.take_rows(h, source), radial]
        if self.edge_dim:
            parts.append(self._edge_attributes(edge_attr, edge_index.shape[1], h.dtype))
        elif edge_attr is not None:
            raise ValueError(f"{self._label()}: got edge_attr but the layer was built with edge_dim=0")
        messages = F.silu(self.edge_out(F.silu(self.edge_in(F.concat(parts, axis=1)))))
        if self.update_coords:
            x = x + self.coords_weight * self._coordinate_shift(diff, radial, messages, target, n)
        summed = F.segment_sum(messages, target, n)
        h = h + self.node_out(F.silu(self.node_in(F.concat([h, summed], axis=1))))
        return h, x

    def _coordinate_shift(self, diff: Tensor, radial: Tensor, messages: Tensor, target, n: int) -> Tensor:
        if self.normalize:
            diff = diff / (F.sqrt(radial.detach()) + NORM_EPSILON)
        scale = self.coord_out(F.silu(self.coord_in(messages)))
        if self.tanh:
            scale = F.tanh(scale)
        return COORDS_AGGREGATIONS[self.coords_agg](diff * scale, target, n)

    def _edge_attributes(self, edge_attr, num_edges: int, dtype) -> Tensor:
        if edge_attr is None:
            raise ValueError(f"{self._label()}: the layer was built with edge_dim={self.edge_dim}; "
                             f"expected edge_attr of shape ({num_edges}, {self.edge_dim})")
        edge_attr = as_tensor(edge_attr)
        if tuple(edge_attr.shape) != (num_edges, self.edge_dim):
            raise ShapeError(f"{self._label()}: edge_attr of shape {tuple(edge_attr.shape)} does not match "
                             f"edge_index with {num_edges} edges; expected shape ({num_edges}, {self.edge_dim})")
        if edge_attr.dtype != dtype:
            raise TypeError(f"{self._label()}: edge_attr has dtype {edge_attr.dtype} but the node features "
                            f"have {dtype}; expected the same dtype")
        return edge_attr

    def get_config(self) -> dict:
        return {"hidden": self.hidden, "edge_dim": self.edge_dim, "update_coords": self.update_coords,
                "normalize": self.normalize, "tanh": self.tanh, "coords_agg": self.coords_agg,
                "coords_weight": self.coords_weight, "name": self.name}

    def extra_repr(self) -> str:
        return (f"hidden={self.hidden}, edge_dim={self.edge_dim}, update_coords={self.update_coords}, "
                f"normalize={self.normalize}, tanh={self.tanh}, coords_agg={self.coords_agg!r}")
