"""The graph isomorphism network layer of Xu et al. (2019), ``GINConv``:

    h_i = MLP((1 + eps) x_i + sum_{j -> i} w_ji x_j)

with optional edge weights w_ji (1 without), which multiply the messages (an explainer's
edge mask, say).

eps a constant, or a trained parameter with ``train_eps``. With an injective MLP the sum
keeps the multiset of neighbour features apart, making GIN as discriminative as the
Weisfeiler-Lehman test.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.nn.graph._inputs import graph_inputs
from lamina.nn.graph.propagation import propagate
from lamina.nn.graph.sage import aggregate
from lamina.nn.layer import layer_from_config, layer_to_config, register_layer
from lamina.nn.module import Module

__all__ = ["GINConv"]


@register_layer
class GINConv(Module):
    """h = mlp((1 + eps) x + sum of in-neighbour features) on x (N, F) and ``edge_index``
    (2, E), each neighbour's features times its edge's weight when ``edge_weight`` (E,) is
    given; ``mlp`` is any module on (N, F) rows (e.g. Sequential of Dense layers)."""

    def __init__(self, mlp: Module, eps: float = 0.0, train_eps: bool = False, name: str | None = None):
        super().__init__(name=name)
        if not isinstance(mlp, Module):
            raise TypeError(f"GINConv: mlp must be a Module, got {type(mlp).__name__}")
        self.mlp = mlp
        self.initial_eps = float(eps)
        self.train_eps = bool(train_eps)

    def build(self, input_shape) -> None:
        if self.train_eps:
            self.add_parameter("eps", np.full((1,), self.initial_eps, dtype=backend.get_default_dtype()))
        self.built = True

    def forward(self, x, edge_index, edge_weight=None) -> Tensor:
        x, edge_index, edge_weight = graph_inputs(self, x, edge_index, edge_weight)
        eps = self.eps if self.train_eps else self.initial_eps
        if edge_weight is None:
            return self.mlp((1 + eps) * x + aggregate(x, edge_index, x.shape[0], "sum"))
        return self.mlp((1 + eps) * x + propagate(x, edge_index, edge_weight, x.shape[0]))

    def get_config(self) -> dict:
        return {"mlp": layer_to_config(self.mlp), "eps": self.initial_eps, "train_eps": self.train_eps,
                "name": self.name}

    @classmethod
    def from_config(cls, config: dict) -> GINConv:
        config = dict(config)
        config["mlp"] = layer_from_config(config["mlp"])
        return cls(**config)

    def extra_repr(self) -> str:
        return f"eps={self.initial_eps}" + (", train_eps=True" if self.train_eps else "")
