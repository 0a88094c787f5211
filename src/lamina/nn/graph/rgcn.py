"""Relational graph convolution, R-GCN (Schlichtkrull et al. 2018), as PyTorch Geometric's
``RGCNConv``: for node i, with N_r(i) the sources of the edges j -> i of relation r,

    h_i = W_root x_i + b + sum_r mean_{j in N_r(i)} W_r x_j

(a relation without edges into i adds nothing). To share parameters across many relations
the W_r are either combinations of ``num_bases`` bases, W_r = sum_b a_rb V_b, or
block-diagonal with ``num_blocks`` blocks, W_r = diag(Q_r1, ..., Q_rB).
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.nn import init as initializers
from lamina.nn.dense import linear
from lamina.nn.graph._inputs import graph_inputs, node_shape
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module

__all__ = ["RGCNConv"]


def _optional_count(value, name: str) -> int | None:
    if value is None:
        return None
    return positive_int(value, f"RGCNConv: {name}")


@register_layer
class RGCNConv(Module):
    """``conv(x, edge_index, edge_type)``: x (N, F), edge_index (2, E), edge_type (E,) integers
    in [0, num_relations); output (N, out_features). At most one of ``num_bases`` and
    ``num_blocks`` (which must divide both F and out_features)."""

    def __init__(self, out_features: int, num_relations: int, num_bases: int | None = None,
                 num_blocks: int | None = None, root_weight: bool = True, bias: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.out_features = positive_int(out_features, "RGCNConv: out_features")
        self.num_relations = positive_int(num_relations, "RGCNConv: num_relations")
        self.num_bases = _optional_count(num_bases, "num_bases")
        self.num_blocks = _optional_count(num_blocks, "num_blocks")
        if self.num_bases is not None and self.num_blocks is not None:
            raise ValueError(f"RGCNConv: give num_bases or num_blocks, not both (got {num_bases} and {num_blocks})")
        self.root_weight, self.use_bias = bool(root_weight), bool(bias)

    def build(self, input_shape) -> None:
        n_in, n_out, r = node_shape(self, input_shape)[1], self.out_features, self.num_relations
        dtype = backend.get_default_dtype()
        if self.num_bases is not None:
            self.add_parameter("basis", initializers.xavier_uniform((self.num_bases, n_in, n_out), n_in, n_out,
                                                                    dtype=dtype))
            self.add_parameter("comp", initializers.xavier_uniform((r, self.num_bases), dtype=dtype))
        elif self.num_blocks is not None:
            b = self.num_blocks
            if n_in % b or n_out % b:
                raise ValueError(f"{self._label()}: num_blocks = {b} must divide the input features ({n_in}) and "
                                 f"out_features ({n_out})")
            self.add_parameter("weight", initializers.xavier_uniform((r, b, n_in // b, n_out // b), n_in // b,
                                                                     n_out // b, dtype=dtype))
        else:
            self.add_parameter("weight", initializers.xavier_uniform((r, n_in, n_out), n_in, n_out, dtype=dtype))
        if self.root_weight:
            self.add_parameter("root", initializers.xavier_uniform((n_in, n_out), dtype=dtype))
        if self.use_bias:
            self.add_parameter("bias", initializers.zeros((n_out,), dtype=dtype))
        self.built = True

    def _edge_types(self, edge_type, num_edges: int) -> np.ndarray:
        types = np.asarray(getattr(edge_type, "data", edge_type))
        if types.shape != (num_edges,) or (types.size and types.dtype.kind not in "iu"):
            raise ValueError(f"{self._label()}: edge_type must be ({num_edges},) integers, one per edge; got shape "
                             f"{types.shape} ({types.dtype})")
        if types.size and (types.min() < 0 or types.max() >= self.num_relations):
            bad = int(types.min()) if types.min() < 0 else int(types.max())
            raise ValueError(f"{self._label()}: edge_type holds relation {bad}; expected values in "
                             f"[0, {self.num_relations})")
        return types.astype(np.int64)

    def forward(self, x, edge_index, edge_type) -> Tensor:
        features = self.basis.shape[1] if self.num_bases is not None else (
            self.weight.shape[1] * self.weight.shape[2] if self.num_blocks is not None else self.weight.shape[1])
        x, edge_index, _ = graph_inputs(self, x, edge_index, None, features)
        types = self._edge_types(edge_type, edge_index.shape[1])
        n = x.shape[0]
        weights = F.einsum("rb,bio->rio", self.comp, self.basis) if self.num_bases is not None else self.weight
        out = linear(x, self.root) if self.root_weight else None
        for r in range(self.num_relations):
            edges = edge_index[:, types == r]
            if not edges.shape[1]:
                continue
            mean = F.segment_mean(F.take_rows(x, edges[0]), edges[1], n)
            if self.num_blocks is None:
                term = linear(mean, weights[r])
            else:
                blocks = F.reshape(mean, (n, self.num_blocks, -1))
                term = F.reshape(F.einsum("nbi,bio->nbo", blocks, weights[r]), (n, self.out_features))
            out = term if out is None else out + term
        if out is None:
            out = Tensor(np.zeros((n, self.out_features), dtype=x.dtype), dtype=x.dtype)
        return out + self.bias if self.use_bias else out

    def compute_output_shape(self, input_shape):
        return (node_shape(self, input_shape)[0], self.out_features)

    def get_config(self) -> dict:
        return {"out_features": self.out_features, "num_relations": self.num_relations, "num_bases": self.num_bases,
                "num_blocks": self.num_blocks, "root_weight": self.root_weight, "bias": self.use_bias,
                "name": self.name}
