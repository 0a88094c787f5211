"""SchNet's continuous-filter convolution (Schütt et al. 2017), ``CFConv``, and its pieces.

For node features h (N, F), coordinates x (N, D) and edges j -> i with distance d_ij:

    rbf_k(d)   = exp(-gamma (d - mu_k)^2),  mu_k evenly spaced on [0, cutoff],
                 gamma = 1 / (2 spacing^2)                              (gaussian_rbf)
    f_cut(d)   = (cos(pi d / cutoff) + 1) / 2 for d < cutoff, else 0   (cosine_cutoff)
    ssp(z)     = softplus(z) - log 2                                    (shifted_softplus, ssp(0) = 0)
    W_ij       = Dense(ssp(Dense(rbf(d_ij)))) f_cut(d_ij)               filter-generating network
    h_i'       = Dense_out(sum_{j -> i} (Dense_in h_j) * W_ij)          (Dense_in without bias)

The filters depend on distances only, so h' is invariant under rotations, reflections and
translations of x and equivariant under permutations of the nodes.
"""

from __future__ import annotations

import math

import numpy as np

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.nn.graph._inputs import graph_inputs
from lamina.nn.graph.egnn import built_dense, coordinate_inputs, edge_vectors
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["CFConv", "cosine_cutoff", "edge_lengths", "gaussian_rbf", "shifted_softplus"]

LOG2 = math.log(2.0)


def shifted_softplus(z) -> Tensor:
    """ssp(z) = log(1 + e^z) - log 2, zero at z = 0."""
    return F.softplus(z) - LOG2


def gaussian_rbf(distances, num_rbf: int, cutoff: float) -> Tensor:
    """(E, num_rbf) Gaussian expansion exp(-gamma (d - mu_k)^2) of distances (E,) on centres
    mu_k = linspace(0, cutoff, num_rbf), gamma = 1 / (2 spacing^2)."""
    d = as_tensor(distances)
    centres = np.linspace(0.0, cutoff, num_rbf).astype(d.dtype)
    gamma = 0.5 / (centres[1] - centres[0]) ** 2 if num_rbf > 1 else 1.0 / cutoff ** 2
    offset = F.reshape(d, (-1, 1)) - centres
    return F.exp(-gamma * offset * offset)


def cosine_cutoff(distances, cutoff: float) -> Tensor:
    """(cos(pi d / cutoff) + 1) / 2 inside the cutoff, 0 beyond: goes smoothly to 0 at d = cutoff."""
    d = as_tensor(distances)
    inside = (d.data < cutoff).astype(d.dtype)
    return 0.5 * (F.cos(d * (math.pi / cutoff)) + 1.0) * inside


def edge_lengths(x, edge_index) -> Tensor:
    """(E,) distances ||x_i - x_j|| of the edges j -> i (no self-loops: the root of 0 has no gradient)."""
    diff = edge_vectors(as_tensor(x), np.asarray(edge_index))
    return F.sqrt(F.sum(diff * diff, axis=1))


@register_layer
class CFConv(Module):
    """Continuous-filter convolution (module docstring): ``conv(h, x, edge_index)`` -> (N,
    ``out_features``) for h (N, ``in_features``) and x (N, D); ``num_filters`` filter width,
    ``num_rbf`` Gaussians up to ``cutoff``."""

    def __init__(self, in_features: int, out_features: int, num_filters: int = 64, num_rbf: int = 32,
                 cutoff: float = 5.0, name: str | None = None):
        super().__init__(name=name)
        self.in_features = positive_int(in_features, "CFConv: in_features")
        self.out_features = positive_int(out_features, "CFConv: out_features")
        self.num_filters = positive_int(num_filters, "CFConv: num_filters")
        self.num_rbf = positive_int(num_rbf, "CFConv: num_rbf")
        if not cutoff > 0:
            raise ValueError(f"CFConv: cutoff must be positive, got {cutoff!r}")
        self.cutoff = float(cutoff)
        self.filter_in = built_dense(self.num_rbf, self.num_filters, kernel_init="xavier_uniform")
        self.filter_out = built_dense(self.num_filters, self.num_filters, kernel_init="xavier_uniform")
        self.lin_in = built_dense(self.in_features, self.num_filters, use_bias=False, kernel_init="xavier_uniform")
        self.lin_out = built_dense(self.num_filters, self.out_features, kernel_init="xavier_uniform")
        self.built = True

    def forward(self, h, x, edge_index) -> Tensor:
        h, edge_index, _ = graph_inputs(self, h, edge_index, None, self.in_features)
        x = coordinate_inputs(self, x, h.shape[0], h.dtype)
        d = edge_lengths(x, edge_index)
        expansion = gaussian_rbf(d, self.num_rbf, self.cutoff)
        filters = self.filter_out(shifted_softplus(self.filter_in(expansion)))
        filters = filters * F.reshape(cosine_cutoff(d, self.cutoff), (-1, 1))
        messages = F.take_rows(self.lin_in(h), edge_index[0]) * filters
        return self.lin_out(F.segment_sum(messages, edge_index[1], h.shape[0]))

    def get_config(self) -> dict:
        return {"in_features": self.in_features, "out_features": self.out_features, "num_filters": self.num_filters,
                "num_rbf": self.num_rbf, "cutoff": self.cutoff, "name": self.name}

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, num_filters={self.num_filters}, "
                f"num_rbf={self.num_rbf}, cutoff={self.cutoff}")
