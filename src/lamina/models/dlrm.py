"""DLRM, the deep learning recommendation model (Naumov et al. 2019), for click-through
prediction from dense and categorical (sparse) features.

    x    = bottom MLP(dense features)                       (B, d), ReLU layers
    e_f  = EmbeddingBag_f(ids of sparse feature f)          (B, d), one table per feature
    T    = [x ; e_1 ; ... ; e_F]                            (B, n, d), n = F + 1
    Z    = T T^T                                            (B, n, n), all pairwise dots
    z    = [x ; Z_ij for i > j]                             (B, d + n (n - 1) / 2)
    y    = top MLP(z)                                       a click logit per sample

The pairs (i, j), i > j, are taken row by row (i = 1, j = 0; i = 2, j = 0, 1; ...), the
order of the reference implementation; Z's diagonal (self-interactions) is left out.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn import Dense, EmbeddingBag, ModuleList, Sequential
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["DLRM", "dot_interaction"]


def dot_interaction(dense, embeddings) -> Tensor:
    """[x ; Z_ij for i > j] of the dense vector x (B, d) and the embeddings e_f (B, d) (see the
    module docstring): shape (B, d + n (n - 1) / 2), n = len(embeddings) + 1."""
    vectors = [as_tensor(dense)] + [as_tensor(e) for e in embeddings]
    shapes = {tuple(v.shape) for v in vectors}
    if len(shapes) != 1 or vectors[0].ndim != 2:
        raise ShapeError(f"dot_interaction: the dense vector and the embeddings must all have one shape (B, d), "
                         f"got {[tuple(v.shape) for v in vectors]}")
    n = len(vectors)
    stacked = F.stack(vectors, axis=1)                                     # (B, n, d)
    products = F.reshape(F.matmul(stacked, F.swapaxes(stacked, 1, 2)), (-1, n * n))
    rows, cols = np.tril_indices(n, -1)
    pairs = products[:, backend.xp.asarray(rows * n + cols)]
    return F.concat([vectors[0], pairs], axis=-1)


def _mlp(input_dim: int, widths, last_activation, who: str) -> Sequential:
    layers, width = [], input_dim
    for k, units in enumerate(widths):
        positive_int(units, f"{who}: layer width")
        last = k == len(widths) - 1
        layers.append(Dense(units, activation=last_activation if last else "relu"))
        layers[-1].build((None, width))
        width = units
    mlp = Sequential(*layers)
    mlp.built = True
    return mlp


@register_layer
class DLRM(Module):
    """(dense (B, num_dense), sparse) -> click logits (B,).

    ``table_sizes``: the number of categories of each sparse feature (one EmbeddingBag of
    ``dim`` columns each, reducing a bag by ``mode``); ``bottom``: the hidden widths of the
    bottom MLP (it ends with a ReLU layer of ``dim`` units); ``top``: the hidden widths of the
    top MLP (it ends with one linear unit). ``sparse`` is a (B, F) integer array (one id per
    feature), or a list of F items, each a (B, N) array (bags of N ids) or an
    ``(ids, offsets)`` pair (PyTorch's bag layout)."""

    def __init__(self, num_dense: int, table_sizes, dim: int = 16, bottom=(32,), top=(32,), mode: str = "sum",
                 name: str | None = None):
        super().__init__(name=name)
        positive_int(num_dense, "DLRM: num_dense")
        positive_int(dim, "DLRM: dim")
        self.table_sizes = tuple(table_sizes)
        if not self.table_sizes:
            raise ValueError("DLRM: table_sizes must list at least one sparse feature")
        for size in self.table_sizes:
            positive_int(size, "DLRM: table size")
        self.num_dense, self.dim, self.bottom, self.top, self.mode = num_dense, dim, tuple(bottom), tuple(top), mode
        self.bottom_mlp = _mlp(num_dense, (*self.bottom, dim), "relu", "DLRM")
        self.tables = ModuleList([EmbeddingBag(size, dim, mode=mode) for size in self.table_sizes])
        for table in self.tables:
            table.build(None)
        n = len(self.table_sizes) + 1
        self.top_mlp = _mlp(dim + n * (n - 1) // 2, (*self.top, 1), None, "DLRM")
        self.built = True

    def _bags(self, sparse, batch: int) -> list[Tensor]:
        who = self._label()
        if not isinstance(sparse, (list, tuple)):
            ids = backend.xp.asarray(sparse.data if isinstance(sparse, Tensor) else sparse)
            if ids.ndim != 2 or ids.shape[1] != len(self.tables):
                raise ShapeError(f"{who}: sparse ids as one array must have shape (batch, {len(self.tables)}), "
                                 f"one id per feature, got {tuple(ids.shape)}")
            sparse = [ids[:, f:f + 1] for f in range(ids.shape[1])]
        if len(sparse) != len(self.tables):
            raise ShapeError(f"{who}: expected {len(self.tables)} sparse features, got {len(sparse)}")
        bags = []
        for f, (feature, table) in enumerate(zip(sparse, self.tables)):
            ids, offsets = feature if isinstance(feature, tuple) else (feature, None)
            ids = backend.xp.asarray(ids.data if isinstance(ids, Tensor) else ids)
            if ids.dtype.kind in "iu" and ids.size and (ids.min() < 0 or ids.max() >= table.num_embeddings):
                bad = int(ids.min() if ids.min() < 0 else ids.max())
                raise ValueError(f"{who}: sparse feature {f} has id {bad}, out of range [0, {table.num_embeddings})")
            bag = table(ids, offsets)
            if bag.shape[0] != batch:
                raise ShapeError(f"{who}: sparse feature {f} gives {bag.shape[0]} bags for a batch of {batch} "
                                 "dense rows")
            bags.append(bag)
        return bags

    def forward(self, dense, sparse) -> Tensor:
        dense = as_tensor(dense)
        if dense.ndim != 2 or dense.shape[1] != self.num_dense:
            raise ShapeError(f"{self._label()}: dense features must have shape (batch, {self.num_dense}), got "
                             f"{tuple(dense.shape)}")
        x = self.bottom_mlp(dense)
        z = dot_interaction(x, self._bags(sparse, dense.shape[0]))
        return F.reshape(self.top_mlp(z), (-1,))

    def get_config(self) -> dict:
        return {"num_dense": self.num_dense, "table_sizes": list(self.table_sizes), "dim": self.dim,
                "bottom": list(self.bottom), "top": list(self.top), "mode": self.mode, "name": self.name}
