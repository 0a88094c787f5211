"""Heterogeneous graphs, as PyTorch Geometric's ``HeteroData``: several node types, each with
its features ``x_dict[node_type]`` (N_t, F_t), and edge types ``(src_type, relation,
dst_type)``, each with an ``edge_index`` (2, E) of source ids (in src_type) over target
ids (in dst_type).

:meth:`HeteroGraph.to_homogeneous` lays all node types end to end (in ``node_types``
order) and gives every edge its relation number, the input of R-GCN
(:class:`lamina.nn.graph.RGCNConv`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lamina.data.graphs import check_edge_index
from lamina.errors import ShapeError

__all__ = ["EdgeType", "HeteroGraph", "HomogeneousView"]

EdgeType = tuple[str, str, str]


@dataclass
class HomogeneousView:
    """A heterogeneous graph as one graph: ``x`` (all nodes stacked, or None when the types'
    feature widths differ), ``edge_index`` with shifted ids, ``edge_type`` (E,) relation
    numbers (indices into ``edge_types``), ``node_type`` (N,) indices into ``node_types``,
    and ``offsets[t]`` the first id of node type t."""

    x: np.ndarray | None
    edge_index: np.ndarray
    edge_type: np.ndarray
    node_type: np.ndarray
    offsets: dict[str, int]
    node_types: list[str]
    edge_types: list[EdgeType]


@dataclass
class HeteroGraph:
    """Node features per node type and an edge index per edge type (src_type, relation,
    dst_type); ``y_dict`` optional labels per node type."""

    x_dict: dict[str, np.ndarray]
    edge_index_dict: dict[EdgeType, np.ndarray]
    y_dict: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.x_dict = {t: np.asarray(x) for t, x in self.x_dict.items()}
        for node_type, x in self.x_dict.items():
            if x.ndim != 2:
                raise ShapeError(f"HeteroGraph: x_dict[{node_type!r}] must have shape (num_nodes, features), "
                                 f"got {x.shape}")
        checked = {}
        for edge_type, edge_index in self.edge_index_dict.items():
            triple = isinstance(edge_type, tuple) and len(edge_type) == 3
            if not (triple and all(isinstance(s, str) for s in edge_type)):
                raise ValueError(f"HeteroGraph: edge types must be (src_type, relation, dst_type) string triples, "
                                 f"got {edge_type!r}")
            src, _, dst = edge_type
            for node_type in (src, dst):
                if node_type not in self.x_dict:
                    raise KeyError(f"HeteroGraph: edge type {edge_type} names node type {node_type!r}, which has no "
                                   f"features; x_dict holds {sorted(self.x_dict)}")
            index = check_edge_index(edge_index, None, f"HeteroGraph {edge_type}")
            if index.size and (index.min() < 0 or index[0].max() >= self.num_nodes(src)
                               or index[1].max() >= self.num_nodes(dst)):
                raise ValueError(f"HeteroGraph: edge type {edge_type} has node ids outside [0, "
                                 f"{self.num_nodes(src)}) x [0, {self.num_nodes(dst)}) (sources x targets)")
            checked[edge_type] = index
        self.edge_index_dict = checked

    @property
    def node_types(self) -> list[str]:
        return list(self.x_dict)

    @property
    def edge_types(self) -> list[EdgeType]:
        return list(self.edge_index_dict)

    def metadata(self) -> tuple[list[str], list[EdgeType]]:
        return self.node_types, self.edge_types

    def num_nodes(self, node_type: str) -> int:
        if node_type not in self.x_dict:
            raise KeyError(f"HeteroGraph: unknown node type {node_type!r}; the node types are {self.node_types}")
        return self.x_dict[node_type].shape[0]

    def edge_index(self, edge_type: EdgeType) -> np.ndarray:
        if edge_type not in self.edge_index_dict:
            raise KeyError(f"HeteroGraph: unknown edge type {edge_type!r}; the edge types are {self.edge_types}")
        return self.edge_index_dict[edge_type]

    def to_homogeneous(self) -> HomogeneousView:
        sizes = [self.num_nodes(t) for t in self.node_types]
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        offsets = dict(zip(self.node_types, (int(s) for s in starts)))
        parts = [self.edge_index_dict[e] + np.array([[offsets[e[0]]], [offsets[e[2]]]]) for e in self.edge_types]
        edge_index = np.concatenate(parts, axis=1) if parts else np.zeros((2, 0), dtype=np.int64)
        edge_type = np.repeat(np.arange(len(parts)), [p.shape[1] for p in parts])
        widths = {x.shape[1] for x in self.x_dict.values()}
        x = np.concatenate(list(self.x_dict.values())) if len(widths) == 1 else None
        return HomogeneousView(x=x, edge_index=edge_index, edge_type=edge_type,
                               node_type=np.repeat(np.arange(len(sizes)), sizes), offsets=offsets,
                               node_types=self.node_types, edge_types=self.edge_types)
