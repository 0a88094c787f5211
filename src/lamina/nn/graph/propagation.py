"""Graph convolutions built on repeated propagation, as PyTorch Geometric's.

With P = D^-1/2 (A + I) D^-1/2 the GCN propagation (:func:`~lamina.nn.graph.gcn_norm`):

    GraphConv (Morris et al. 2019):  out_i = W_1 x_i + W_2 aggr_{j -> i} e_ji x_j + b
    APPNP (Gasteiger et al. 2019):   H_0 = x,  H_{k+1} = (1 - alpha) P H_k + alpha H_0,  out = H_K
    SGConv (Wu et al. 2019):         out = (P^K x) W + b
    GCN2Conv (Chen et al. 2020):     out = ((1 - alpha) P x + alpha x_0) ((1 - beta) I + beta W),
                                     beta = log(theta / layer + 1)
    ChebConv (Defferrard et al. 2016):
        L^ = 2 L / lambda_max - I with L = I - D^-1/2 A D^-1/2 (self-loops removed, D the
        weighted out-degrees), T_0 = x, T_1 = L^ x, T_k = 2 L^ T_{k-1} - T_{k-2},
        out = sum_{k < K} T_k W_k + b
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.nn import init as initializers
from lamina.nn.dense import linear
from lamina.nn.graph._inputs import graph_inputs, node_shape
from lamina.nn.graph.gcn import build_node_projection, gcn_norm
from lamina.nn.graph.sage import AGGREGATIONS
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["APPNP", "ChebConv", "GCN2Conv", "GraphConv", "SGConv", "propagate"]


def propagate(x: Tensor, edge_index: np.ndarray, coefficient: Tensor | None, num_nodes: int) -> Tensor:
    """sum over the edges j -> i of coefficient_ji x_j, for every node i."""
    messages = F.take_rows(x, edge_index[0])
    if coefficient is not None:
        messages = messages * F.reshape(coefficient, (-1,) + (1,) * (x.ndim - 1))
    return F.segment_sum(messages, edge_index[1], num_nodes)


def _unit_interval(value, who: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{who}: alpha must be in [0, 1], got {value!r}")
    return float(value)


def _add_bias(layer: Module, out: Tensor) -> Tensor:
    return out + layer.bias if layer.use_bias else out


@register_layer
class GraphConv(Module):
    """out_i = W_root x_i + W_rel aggr_{j -> i} e_ji x_j + b (``aggr`` 'sum', 'mean' or 'max';
    edge weights e_ji with 'sum' and 'mean', default 1)."""

    def __init__(self, out_features: int, aggr: str = "sum", bias: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.out_features = positive_int(out_features, "GraphConv: out_features")
        if aggr not in AGGREGATIONS:
            raise ValueError(f"GraphConv: aggr must be one of {sorted(AGGREGATIONS)}, got {aggr!r}")
        self.aggr, self.use_bias = aggr, bool(bias)

    def build(self, input_shape) -> None:
        n_in = node_shape(self, input_shape)[1]
        dtype = backend.get_default_dtype()
        self.add_parameter("rel_kernel", initializers.xavier_uniform((n_in, self.out_features), dtype=dtype))
        self.add_parameter("root_kernel", initializers.xavier_uniform((n_in, self.out_features), dtype=dtype))
        if self.use_bias:
            self.add_parameter("bias", initializers.zeros((self.out_features,), dtype=dtype))
        self.built = True

    def forward(self, x, edge_index, edge_weight=None) -> Tensor:
        x, edge_index, edge_weight = graph_inputs(self, x, edge_index, edge_weight, self.rel_kernel.shape[0])
        if edge_weight is not None and self.aggr == "max":
            raise ValueError(f"{self._label()}: edge weights need aggr 'sum' or 'mean', not 'max'")
        messages = F.take_rows(x, edge_index[0])
        if edge_weight is not None:
            messages = messages * F.reshape(edge_weight, (-1, 1))
        neighbors = AGGREGATIONS[self.aggr](messages, edge_index[1], x.shape[0])
        return _add_bias(self, linear(neighbors, self.rel_kernel) + linear(x, self.root_kernel))

    def compute_output_shape(self, input_shape):
        return (node_shape(self, input_shape)[0], self.out_features)

    def get_config(self) -> dict:
        return {"out_features": self.out_features, "aggr": self.aggr, "bias": self.use_bias, "name": self.name}


@register_layer
class APPNP(Module):
    """Personalised-PageRank propagation of x (N, F), K steps with teleport ``alpha``; no
    parameters, output (N, F)."""

    def __init__(self, K: int, alpha: float, add_self_loops: bool = True, normalize: bool = True,
                 name: str | None = None):
        super().__init__(name=name)
        self.K = positive_int(K, "APPNP: K")
        self.alpha = _unit_interval(alpha, "APPNP")
        self.add_self_loops, self.normalize = bool(add_self_loops), bool(normalize)
        self.built = True

    def forward(self, x, edge_index, edge_weight=None) -> Tensor:
        x, edge_index, edge_weight = graph_inputs(self, x, edge_index, edge_weight)
        n = x.shape[0]
        edge_index, coefficient = gcn_norm(edge_index, n, edge_weight, x.dtype, self.add_self_loops, self.normalize)
        h = x
        for _ in range(self.K):
            h = (1.0 - self.alpha) * propagate(h, edge_index, coefficient, n) + self.alpha * x
        return h

    def get_config(self) -> dict:
        return {"K": self.K, "alpha": self.alpha, "add_self_loops": self.add_self_loops,
                "normalize": self.normalize, "name": self.name}


@register_layer
class SGConv(Module):
    """Simplified graph convolution: (P^K x) W + b. With ``cached`` the propagated features
    of the first call are kept (as constants) and reused: for one fixed graph and x."""

    def __init__(self, out_features: int, K: int = 1, cached: bool = False, add_self_loops: bool = True,
                 bias: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.out_features = positive_int(out_features, "SGConv: out_features")
        self.K = positive_int(K, "SGConv: K")
        self.cached, self.add_self_loops, self.use_bias = bool(cached), bool(add_self_loops), bool(bias)
        self._cache = None

    def build(self, input_shape) -> None:
        build_node_projection(self, input_shape)

    def forward(self, x, edge_index, edge_weight=None) -> Tensor:
        x, edge_index, edge_weight = graph_inputs(self, x, edge_index, edge_weight, self.weight.shape[0])
        if self.cached and self._cache is not None:
            if self._cache.shape[0] != x.shape[0]:
                raise ValueError(f"{self._label()}: cached features are for {self._cache.shape[0]} nodes, got "
                                 f"{x.shape[0]}; use cached=False for changing graphs")
            h = self._cache
        else:
            n = x.shape[0]
            edge_index, coefficient = gcn_norm(edge_index, n, edge_weight, x.dtype, self.add_self_loops)
            h = x
            for _ in range(self.K):
                h = propagate(h, edge_index, coefficient, n)
            if self.cached:
                self._cache = h = Tensor(h.numpy(), dtype=h.dtype)
        return _add_bias(self, linear(h, self.weight))

    def compute_output_shape(self, input_shape):
        return (node_shape(self, input_shape)[0], self.out_features)

    def get_config(self) -> dict:
        return {"out_features": self.out_features, "K": self.K, "cached": self.cached,
                "add_self_loops": self.add_self_loops, "bias": self.use_bias, "name": self.name}


@register_layer
class GCN2Conv(Module):
    """GCNII: ``conv(x, x_0, edge_index)`` -> ((1 - alpha) P x + alpha x_0)((1 - beta) I + beta W)
    for x and the initial features x_0 of the same shape (N, F); output (N, F)."""

    def __init__(self, alpha: float, theta: float | None = None, layer: int | None = None,
                 add_self_loops: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.alpha = _unit_interval(alpha, "GCN2Conv")
        if (theta is None) != (layer is None):
            raise ValueError(f"GCN2Conv: give theta and layer together (or neither), got theta={theta!r}, "
                             f"layer={layer!r}")
        self.theta, self.layer = theta, layer
        self.beta = 1.0 if theta is None else float(np.log(theta / positive_int(layer, "GCN2Conv: layer") + 1.0))
        self.add_self_loops = bool(add_self_loops)

    def build(self, input_shape) -> None:
        n_in = node_shape(self, input_shape)[1]
        self.add_parameter("weight", initializers.xavier_uniform((n_in, n_in), dtype=backend.get_default_dtype()))
        self.built = True

    def forward(self, x, x_0, edge_index, edge_weight=None) -> Tensor:
        x, edge_index, edge_weight = graph_inputs(self, x, edge_index, edge_weight, self.weight.shape[0])
        x_0 = as_tensor(x_0)
        if tuple(x_0.shape) != tuple(x.shape):
            raise ValueError(f"{self._label()}: x_0 of shape {tuple(x_0.shape)} must match x of shape "
                             f"{tuple(x.shape)}")
        n = x.shape[0]
        edge_index, coefficient = gcn_norm(edge_index, n, edge_weight, x.dtype, self.add_self_loops)
        h = (1.0 - self.alpha) * propagate(x, edge_index, coefficient, n) + self.alpha * x_0
        return (1.0 - self.beta) * h + self.beta * linear(h, self.weight)

    def compute_output_shape(self, input_shape):
        return node_shape(self, input_shape)

    def get_config(self) -> dict:
        return {"alpha": self.alpha, "theta": self.theta, "layer": self.layer,
                "add_self_loops": self.add_self_loops, "name": self.name}


def scaled_laplacian(edge_index: np.ndarray, num_nodes: int, edge_weight: Tensor | None, dtype,
                     lambda_max: float) -> tuple[np.ndarray, Tensor, float]:
    """(edge_index, off-diagonal coefficients, diagonal value) of L^ = 2 L / lambda_max - I:
    -2/lambda_max w_ji / sqrt(d_j d_i) per edge (loops removed, d the weighted out-degree,
    0 where d = 0) and 2/lambda_max - 1 on the diagonal."""
    keep = edge_index[0] != edge_index[1]
    edge_index = edge_index[:, keep]
    if edge_weight is None:
        edge_weight = Tensor(np.ones(edge_index.shape[1], dtype=dtype), dtype=dtype)
    else:
        edge_weight = F.take_rows(edge_weight, np.flatnonzero(keep))
    deg = F.segment_sum(edge_weight, edge_index[0], num_nodes)
    positive = deg.data > 0
    inv_sqrt = F.where(positive, F.where(positive, deg, 1.0) ** -0.5, 0.0)
    norm = F.take_rows(inv_sqrt, edge_index[0]) * edge_weight * F.take_rows(inv_sqrt, edge_index[1])
    return edge_index, norm * (-2.0 / lambda_max), 2.0 / lambda_max - 1.0


@register_layer
class ChebConv(Module):
    """Chebyshev spectral convolution of order ``K`` (K filters W_0 .. W_{K-1}) with the
    symmetric Laplacian scaled by ``lambda_max`` (2 by default, as PyG)."""

    def __init__(self, out_features: int, K: int, lambda_max: float = 2.0, bias: bool = True,
                 name: str | None = None):
        super().__init__(name=name)
        self.out_features = positive_int(out_features, "ChebConv: out_features")
        self.K = positive_int(K, "ChebConv: K")
        if not lambda_max > 0:
            raise ValueError(f"ChebConv: lambda_max must be positive, got {lambda_max!r}")
        self.lambda_max, self.use_bias = float(lambda_max), bool(bias)

    def build(self, input_shape) -> None:
        n_in = node_shape(self, input_shape)[1]
        dtype = backend.get_default_dtype()
        self.add_parameter("weight", initializers.xavier_uniform((self.K, n_in, self.out_features), n_in,
                                                                 self.out_features, dtype=dtype))
        if self.use_bias:
            self.add_parameter("bias", initializers.zeros((self.out_features,), dtype=dtype))
        self.built = True

    def forward(self, x, edge_index, edge_weight=None) -> Tensor:
        x, edge_index, edge_weight = graph_inputs(self, x, edge_index, edge_weight, self.weight.shape[1])
        n = x.shape[0]
        edge_index, coefficient, diagonal = scaled_laplacian(edge_index, n, edge_weight, x.dtype, self.lambda_max)

        def laplacian(h):
            return propagate(h, edge_index, coefficient, n) + diagonal * h

        terms = [x]                                                   # T_0, T_1, ...
        for k in range(1, self.K):
            terms.append(laplacian(x) if k == 1 else 2.0 * laplacian(terms[-1]) - terms[-2])
        out = linear(x, self.weight[0])
        for k in range(1, self.K):
            out = out + linear(terms[k], self.weight[k])
        return _add_bias(self, out)

    def compute_output_shape(self, input_shape):
        return (node_shape(self, input_shape)[0], self.out_features)

    def get_config(self) -> dict:
        return {"out_features": self.out_features, "K": self.K, "lambda_max": self.lambda_max,
                "bias": self.use_bias, "name": self.name}
