"""Graph-level regressors on point sets that respect their symmetries.

``EGNN`` (Satorras et al. 2021): node features embedded to ``hidden`` by a Dense layer, a stack
of :class:`~lamina.nn.EGNNLayer` (features and coordinates updated together), a Dense layer
out, a sum (or mean) over each graph's nodes, and an MLP head: (G, out_features).

``SchNet`` (Schütt et al. 2017), a small form: atom types embedded to ``hidden``, interaction
blocks h <- h + Dense(ssp(CFConv(h, x))), per-atom energies Dense(ssp(Dense(h))) summed per graph:
E (G,). ``energy_and_forces`` also gives the forces -dE/dx by automatic differentiation.

Both outputs are invariant under rotations, reflections and translations of the coordinates
and under permutations of the nodes.
"""

from __future__ import annotations

import numpy as np

from lamina import functional as F
from lamina.autograd import Tensor, grad
from lamina.nn import Embedding, ModuleList
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.graph import CFConv, EGNNLayer, global_add_pool, global_mean_pool
from lamina.nn.graph.cfconv import shifted_softplus
from lamina.nn.graph.egnn import built_dense
from lamina.nn.layer import positive_int
from lamina.nn.module import Module, as_tensor

__all__ = ["EGNN", "SchNet"]

READOUTS = {"sum": global_add_pool, "mean": global_mean_pool}


def _readout_name(readout: str, who: str) -> str:
    if readout not in READOUTS:
        raise ValueError(f"{who}: readout must be one of {sorted(READOUTS)}, got {readout!r}")
    return readout


@register_with_arguments
class EGNN(Module):
    """``model(h, x, edge_index, batch=None, edge_attr=None, num_graphs=None)`` -> (G,
    ``out_features``) for node features h (N, ``in_features``) and coordinates x (N, D); the
    layer options (edge_dim, normalize, tanh, coords_agg, ...) pass on to every EGNNLayer."""

    def __init__(self, in_features: int, hidden: int = 64, out_features: int = 1, num_layers: int = 4,
                 readout: str = "sum", name: str | None = None, **layer_options):
        super().__init__(name=name)
        self.in_features = positive_int(in_features, "EGNN: in_features")
        self.hidden = positive_int(hidden, "EGNN: hidden")
        self.out_features = positive_int(out_features, "EGNN: out_features")
        self.readout = _readout_name(readout, "EGNN")
        count = positive_int(num_layers, "EGNN: num_layers")
        self.embedding_in = built_dense(self.in_features, self.hidden)
        self.layers = ModuleList([EGNNLayer(self.hidden, **layer_options) for _ in range(count)])
        self.embedding_out = built_dense(self.hidden, self.hidden)
        self.head_hidden = built_dense(self.hidden, self.hidden)
        self.head_out = built_dense(self.hidden, self.out_features)
        self.built = True

    def node_embeddings(self, h, x, edge_index, edge_attr=None) -> tuple[Tensor, Tensor]:
        """(N, hidden) node features and (N, D) coordinates after the EGNN layers."""
        h = self.embedding_in(h)
        for layer in self.layers:
            h, x = layer(h, x, edge_index, edge_attr)
        return self.embedding_out(h), x

    def forward(self, h, x, edge_index, batch=None, edge_attr=None, num_graphs: int | None = None) -> Tensor:
        nodes, _ = self.node_embeddings(h, x, edge_index, edge_attr)
        pooled = READOUTS[self.readout](nodes, batch, num_graphs)
        return self.head_out(F.silu(self.head_hidden(pooled)))


@register_with_arguments
class SchNet(Module):
    """``model(types, x, edge_index, batch=None, num_graphs=None)`` -> energies (G,) for integer
    atom types (N,) in [0, ``num_types``) and coordinates x (N, D)."""

    def __init__(self, num_types: int, hidden: int = 64, num_filters: int = 64, num_interactions: int = 3,
                 num_rbf: int = 32, cutoff: float = 5.0, readout: str = "sum", name: str | None = None):
        super().__init__(name=name)
        self.num_types = positive_int(num_types, "SchNet: num_types")
        self.hidden = positive_int(hidden, "SchNet: hidden")
        self.readout = _readout_name(readout, "SchNet")
        count = positive_int(num_interactions, "SchNet: num_interactions")
        self.embedding = Embedding(self.num_types, self.hidden)
        self.embedding.build((None,))
        self.convs = ModuleList([CFConv(self.hidden, self.hidden, num_filters, num_rbf, cutoff) for _ in range(count)])
        self.mixes = ModuleList([built_dense(self.hidden, self.hidden, kernel_init="xavier_uniform")
                                 for _ in range(count)])
        self.atom_hidden = built_dense(self.hidden, max(self.hidden // 2, 1), kernel_init="xavier_uniform")
        self.atom_out = built_dense(max(self.hidden // 2, 1), 1, kernel_init="xavier_uniform")
        self.built = True

    def forward(self, types, x, edge_index, batch=None, num_graphs: int | None = None) -> Tensor:
        types = np.asarray(getattr(types, "data", types))
        if types.dtype.kind not in "iu" or types.ndim != 1:
            raise TypeError(f"SchNet: types must be a 1-D integer array (one species per atom), got dtype "
                            f"{types.dtype} and shape {types.shape}")
        h = self.embedding(types)
        x = as_tensor(x)
        h = h.astype(x.dtype) if h.dtype != x.dtype else h
        for conv, mix in zip(self.convs, self.mixes):
            h = h + mix(shifted_softplus(conv(h, x, edge_index)))
        atom_energies = self.atom_out(shifted_softplus(self.atom_hidden(h)))
        return F.reshape(READOUTS[self.readout](atom_energies, batch, num_graphs), (-1,))

    def energy_and_forces(self, types, x, edge_index, batch=None, num_graphs: int | None = None,
                          create_graph: bool = False) -> tuple[Tensor, Tensor]:
        """Energies (G,) and forces -dE/dx (N, D); ``create_graph`` to train on the forces."""
        x = as_tensor(x)
        if not x.requires_grad:
            x = x.detach()
            x.requires_grad = True
        energies = self.forward(types, x, edge_index, batch, num_graphs)
        (gradient,) = grad(F.sum(energies), [x], retain_graph=create_graph, create_graph=create_graph)
        if not isinstance(gradient, Tensor):
            gradient = Tensor(gradient, dtype=gradient.dtype)
        return energies, -gradient
