"""``HeteroConv``, as PyTorch Geometric's: one graph convolution per edge type (src_type,
relation, dst_type) of a heterogeneous graph (:class:`lamina.data.HeteroGraph`), the
outputs of the edge types that end in one node type combined by ``aggr``:

    h_t = aggr_{(s, r, t)} conv_(s,r,t)(x_s, x_t, edge_index_(s,r,t))     aggr: sum, mean or max

A convolution here takes one node set, so for an edge type between two node types it runs
on the target nodes followed by the source nodes (ids shifted past the targets; the two
feature widths must agree) and keeps the target rows: every message still flows from a
source node to a target node, and a root term reads the target's own features.
"""

from __future__ import annotations

import numpy as np

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.data.graphs import check_edge_index
from lamina.errors import ShapeError
from lamina.nn.layer import layer_from_config, layer_to_config, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["HeteroConv"]

_REDUCTIONS = ("sum", "mean", "max")


def _key(edge_type) -> str:
    return "__".join(edge_type)


@register_layer
class HeteroConv(Module):
    """``HeteroConv({edge_type: conv, ...}, aggr)``; ``forward(x_dict, edge_index_dict)``
    returns {node_type: features} for every node type some edge type points to."""

    def __init__(self, convs: dict, aggr: str = "sum", name: str | None = None):
        super().__init__(name=name)
        if not isinstance(convs, dict) or not convs:
            raise ValueError("HeteroConv: convs must be a non-empty dict {(src_type, relation, dst_type): conv}")
        for edge_type, conv in convs.items():
            if not (isinstance(edge_type, tuple) and len(edge_type) == 3):
                raise ValueError(f"HeteroConv: keys must be (src_type, relation, dst_type) triples, got {edge_type!r}")
            if not isinstance(conv, Module):
                raise TypeError(f"HeteroConv: the convolution for {edge_type} is a {type(conv).__name__}, "
                                "expected a Module")
        if aggr not in _REDUCTIONS:
            raise ValueError(f"HeteroConv: aggr must be one of {list(_REDUCTIONS)}, got {aggr!r}")
        self.edge_types = list(convs)
        self.aggr = aggr
        for edge_type, conv in convs.items():
            setattr(self, _key(edge_type), conv)
        self.built = True

    def conv(self, edge_type) -> Module:
        return getattr(self, _key(edge_type))

    def forward(self, x_dict: dict, edge_index_dict: dict) -> dict[str, Tensor]:
        unknown = [e for e in edge_index_dict if e not in self.edge_types]
        if unknown:
            raise KeyError(f"{self._label()}: unknown edge type {unknown[0]!r}; convolutions are given for "
                           f"{self.edge_types}")
        per_target: dict[str, list[Tensor]] = {}
        for edge_type, edge_index in edge_index_dict.items():
            src, _, dst = edge_type
            for node_type in (src, dst):
                if node_type not in x_dict:
                    raise KeyError(f"{self._label()}: edge type {edge_type} needs features for node type "
                                   f"{node_type!r}; x_dict holds {sorted(x_dict)}")
            per_target.setdefault(dst, []).append(self._run(edge_type, x_dict[src], x_dict[dst], edge_index))
        return {t: self._combine(outputs) for t, outputs in per_target.items()}

    def _run(self, edge_type, x_src, x_dst, edge_index) -> Tensor:
        x_src, x_dst = as_tensor(x_src), as_tensor(x_dst)
        edge_index = check_edge_index(edge_index, None, self._label())
        if edge_type[0] == edge_type[2]:
            return self.conv(edge_type)(x_dst, edge_index)
        if x_src.ndim != 2 or x_dst.ndim != 2 or x_src.shape[1] != x_dst.shape[1]:
            raise ShapeError(f"{self._label()}: edge type {edge_type} joins node features of shapes "
                             f"{tuple(x_src.shape)} and {tuple(x_dst.shape)}; a convolution between two node "
                             "types needs the same feature width")
        n_dst = x_dst.shape[0]
        joined = F.concat([x_dst, x_src], axis=0)
        shifted = np.stack([edge_index[0] + n_dst, edge_index[1]])
        return self.conv(edge_type)(joined, shifted)[:n_dst]

    def _combine(self, outputs: list[Tensor]) -> Tensor:
        if len(outputs) == 1:
            return outputs[0]
        if self.aggr == "max":              # stack(...).max(dim=0): a tie's gradient goes to one relation
            return F.stack(outputs, axis=0).max(axis=0)
        total = outputs[0]
        for o in outputs[1:]:
            total = total + o
        return total / len(outputs) if self.aggr == "mean" else total

    def get_config(self) -> dict:
        # JSON has no tuple keys: the convolutions as [[src_type, relation, dst_type], conv config] pairs
        convs = [[list(edge_type), layer_to_config(self.conv(edge_type))] for edge_type in self.edge_types]
        return {"convs": convs, "aggr": self.aggr, "name": self.name}

    @classmethod
    def from_config(cls, config: dict) -> HeteroConv:
        config = dict(config)
        config["convs"] = {tuple(edge_type): layer_from_config(conv) for edge_type, conv in config["convs"]}
        return cls(**config)

    def extra_repr(self) -> str:
        return f"{len(self.edge_types)} edge types, aggr={self.aggr!r}"
