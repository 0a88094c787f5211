"""Learned whole-graph readouts, as PyTorch Geometric's ``AttentionalAggregation`` (Li et al.
2016's gated pooling) and ``Set2Set`` (Vinyals et al. 2016).

For node features x (N, F) and ``batch`` (N,) naming each node's graph:

    AttentionalAggregation:  a_v = softmax over the nodes of v's graph of gate_nn(x_v),
                             y_g = sum over the nodes v of g of a_v nn(x_v)        (nn: identity if None)
    Set2Set, T steps from q*_0 = 0 (G, 2F) and a zero LSTM state:
                             q_t = LSTM(q*_{t-1}, state),  e_v = x_v . q_t[g(v)],
                             a_v = softmax of e over g's nodes,  r_g = sum a_v x_v,
                             q*_t = [q_t, r_g]                                   -> (G, 2F)

The LSTM is PyTorch's (gates i, f, g, o; one bias standing for b_ih + b_hh).
"""

from __future__ import annotations

import math

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn import init as initializers
from lamina.nn.graph.pool import _batch_vector
from lamina.nn.layer import layer_from_config, layer_to_config, positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["AttentionalAggregation", "Set2Set"]


def _graph_count(batch: np.ndarray, num_graphs: int | None) -> int:
    return (int(batch.max()) + 1 if batch.size else 0) if num_graphs is None else int(num_graphs)


@register_layer
class AttentionalAggregation(Module):
    """``pool(x, batch=None, num_graphs=None)`` -> (G, F') with attention weights softmax(gate_nn(x))
    per graph; ``gate_nn`` maps (N, F) to (N, 1), ``nn`` (optional) transforms x first."""

    def __init__(self, gate_nn: Module, nn: Module | None = None, name: str | None = None):
        super().__init__(name=name)
        self.gate_nn, self.nn = gate_nn, nn

    def forward(self, x, batch=None, num_graphs: int | None = None) -> Tensor:
        x = as_tensor(x)
        batch = _batch_vector(x, batch, self._label())
        num_graphs = _graph_count(batch, num_graphs)
        gate = self.gate_nn(x)
        if gate.ndim != 2 or tuple(gate.shape) != (x.shape[0], 1):
            raise ShapeError(f"{self._label()}: gate_nn gave shape {tuple(gate.shape)}; expected ({x.shape[0]}, 1), "
                             "one score per node")
        values = self.nn(x) if self.nn is not None else x
        weights = F.segment_softmax(gate, batch, num_graphs)
        return F.segment_sum(values * weights, batch, num_graphs)

    def get_config(self) -> dict:
        return {"gate_nn": layer_to_config(self.gate_nn),
                "nn": None if self.nn is None else layer_to_config(self.nn), "name": self.name}

    @classmethod
    def from_config(cls, config: dict) -> AttentionalAggregation:
        config = dict(config)
        config["gate_nn"] = layer_from_config(config["gate_nn"])
        if config.get("nn") is not None:
            config["nn"] = layer_from_config(config["nn"])
        return cls(**config)


@register_layer
class Set2Set(Module):
    """Set2Set readout with ``processing_steps`` LSTM steps: (N, F) -> (G, 2F)."""

    def __init__(self, in_features: int, processing_steps: int, name: str | None = None):
        super().__init__(name=name)
        self.in_features = positive_int(in_features, "Set2Set: in_features")
        self.processing_steps = positive_int(processing_steps, "Set2Set: processing_steps")
        f, dtype = self.in_features, backend.get_default_dtype()
        limit = 1.0 / math.sqrt(f)
        self.add_parameter("input_kernel", initializers.uniform(limit)((2 * f, 4 * f), dtype=dtype))
        self.add_parameter("recurrent_kernel", initializers.uniform(limit)((f, 4 * f), dtype=dtype))
        self.add_parameter("bias", initializers.zeros((4 * f,), dtype=dtype))
        self.built = True

    def _lstm(self, inputs: Tensor, hidden: Tensor, cell: Tensor) -> tuple[Tensor, Tensor]:
        f = self.in_features
        z = F.matmul(inputs, self.input_kernel) + F.matmul(hidden, self.recurrent_kernel) + self.bias
        i, forget, g, o = (z[:, k * f:(k + 1) * f] for k in range(4))
        cell = F.sigmoid(forget) * cell + F.sigmoid(i) * F.tanh(g)
        return F.sigmoid(o) * F.tanh(cell), cell

    def forward(self, x, batch=None, num_graphs: int | None = None) -> Tensor:
        x = as_tensor(x)
        batch = _batch_vector(x, batch, self._label())
        if x.shape[1] != self.in_features:
            raise ShapeError(f"{self._label()}: node features of shape {tuple(x.shape)}; expected "
                             f"{self.in_features} features")
        num_graphs = _graph_count(batch, num_graphs)
        f = self.in_features
        hidden = cell = Tensor(np.zeros((num_graphs, f), dtype=x.dtype), dtype=x.dtype)
        q_star = Tensor(np.zeros((num_graphs, 2 * f), dtype=x.dtype), dtype=x.dtype)
        for _ in range(self.processing_steps):
            hidden, cell = self._lstm(q_star, hidden, cell)
            scores = F.sum(x * F.take_rows(hidden, batch), axis=1, keepdims=True)
            weights = F.segment_softmax(scores, batch, num_graphs)
            readout = F.segment_sum(weights * x, batch, num_graphs)
            q_star = F.concat([hidden, readout], axis=1)
        return q_star

    def get_config(self) -> dict:
        return {"in_features": self.in_features, "processing_steps": self.processing_steps, "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.in_features}, processing_steps={self.processing_steps}"
