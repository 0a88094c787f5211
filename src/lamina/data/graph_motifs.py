"""Synthetic graphs with planted motifs, the benchmarks of GNN explanation methods (Ying et al.
2019, GNNExplainer; Luo et al. 2020, PGExplainer). The answer is known: a node's (or a
graph's) label is decided by the motif it sits in, so a good explanation picks the motif's
edges. Each graph comes with ``edge_mask``, True on the edges inside a motif.

* :func:`ba_shapes` (node classification): a Barabasi-Albert base graph, ``num_motifs``
  five-node "houses" each joined to a random base node by one edge, and random extra edges.
  Labels: 0 base node, 1 the house's top corners (joined to the roof), 2 its bottom corners,
  3 its roof. Features: constant ones, so only the structure tells the classes apart.
* :func:`ba_2motifs` (graph classification): small Barabasi-Albert graphs, each with a house
  (label 0) or a five-node cycle (label 1) attached by one edge.

A Barabasi-Albert graph of n nodes grows from a star of m + 1 nodes; each new node joins m
distinct existing nodes chosen with probability proportional to their degree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lamina.data.graphs import Graph, to_undirected

__all__ = ["HOUSE", "MotifGraph", "ba_2motifs", "ba_shapes", "barabasi_albert"]

# the house: square 0-1-2-3 with roof 4 on the top corners 0 and 1; node labels 1, 1, 2, 2, 3
HOUSE = (np.array([[0, 1, 2, 3, 4, 4], [1, 2, 3, 0, 0, 1]]), np.array([1, 1, 2, 2, 3]))
CYCLE = (np.array([[0, 1, 2, 3, 4], [1, 2, 3, 4, 0]]), np.zeros(5, dtype=np.int64))


@dataclass
class MotifGraph(Graph):
    """A :class:`~lamina.data.Graph` (undirected: both directions of each edge) with the ground
    truth of its explanation: ``edge_mask`` (E,) True on motif edges, ``motif`` (N,) the motif
    each node belongs to (-1 for base nodes)."""

    edge_mask: np.ndarray | None = None
    motif: np.ndarray | None = None

    def explanation_edges(self, node: int | None = None) -> np.ndarray:
        """(E,) True on the motif edges: all of them, or with ``node`` those of the node's own
        motif (none for a base node)."""
        if node is None:
            return self.edge_mask.copy()
        if not 0 <= node < self.num_nodes:
            raise IndexError(f"MotifGraph.explanation_edges: node {node} is out of range for {self.num_nodes} nodes")
        own = self.motif[node]
        return self.edge_mask & (own >= 0) & (self.motif[self.edge_index[0]] == own)


def _positive_int(value, who: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{who} must be an int >= {minimum}, got {value!r}")
    return int(value)


def barabasi_albert(num_nodes: int, m: int, rng: np.random.Generator) -> np.ndarray:
    """The undirected edges (2, E), one column per pair (low, high), of a Barabasi-Albert graph."""
    num_nodes = _positive_int(num_nodes, "barabasi_albert: num_nodes", 2)
    m = _positive_int(m, "barabasi_albert: m")
    if m >= num_nodes:
        raise ValueError(f"barabasi_albert: m={m} must be below num_nodes={num_nodes}")
    pairs = [(0, j) for j in range(1, m + 1)]
    ends = [v for pair in pairs for v in pair]                    # each node once per incident edge
    for new in range(m + 1, num_nodes):
        targets: set[int] = set()
        while len(targets) < m:
            targets.add(ends[int(rng.integers(len(ends)))])
        for t in sorted(targets):
            pairs.append((t, new))
            ends.extend((t, new))
    return np.array(pairs, dtype=np.int64).T


def _assemble(base: np.ndarray, num_base: int, motifs: list[tuple[np.ndarray, np.ndarray]],
              anchors: np.ndarray, features: int, extra: np.ndarray | None = None) -> MotifGraph:
    """Base edges, then each motif shifted after the nodes before it and joined by one edge from
    its node 0 to its anchor; node labels 0 on the base and the motif's labels on its nodes."""
    pieces, motif_pairs, labels, motif_of = [base], [], [np.zeros(num_base, dtype=np.int64)], [np.full(num_base, -1)]
    start = num_base
    for k, ((edges, roles), anchor) in enumerate(zip(motifs, anchors)):
        size = roles.shape[0]
        pieces += [edges + start, np.array([[anchor], [start]])]
        motif_pairs.append(edges + start)
        labels.append(roles)
        motif_of.append(np.full(size, k))
        start += size
    if extra is not None:
        pieces.append(extra)
    edge_index, _ = to_undirected(np.concatenate(pieces, axis=1), start)
    inside = np.concatenate(motif_pairs, axis=1)
    keys = set(zip(inside[0].tolist(), inside[1].tolist())) | set(zip(inside[1].tolist(), inside[0].tolist()))
    edge_mask = np.array([(int(a), int(b)) in keys for a, b in edge_index.T], dtype=bool)
    return MotifGraph(np.ones((start, features), dtype=np.float32), edge_index, y=np.concatenate(labels),
                      edge_mask=edge_mask, motif=np.concatenate(motif_of).astype(np.int64))


def ba_shapes(num_base: int = 300, num_motifs: int = 80, seed: int = 0, m: int = 5, random_edges: float = 0.1,
              features: int = 10) -> MotifGraph:
    """BA-Shapes: a Barabasi-Albert graph of ``num_base`` nodes (``m`` edges per new node),
    ``num_motifs`` houses each joined to a random base node, and round(``random_edges`` N)
    random extra edges between distinct nodes anywhere (N = num_base + 5 num_motifs).
    Node features are ones (N, ``features``); ``y`` (N,) the labels 0-3."""
    num_base = _positive_int(num_base, "ba_shapes: num_base", 2)
    num_motifs = _positive_int(num_motifs, "ba_shapes: num_motifs", 0)
    if not 0.0 <= random_edges:
        raise ValueError(f"ba_shapes: random_edges must be >= 0, got {random_edges!r}")
    rng = np.random.default_rng(seed)
    base = barabasi_albert(num_base, m, rng)
    anchors = rng.integers(0, num_base, size=num_motifs)
    n = num_base + 5 * num_motifs
    extra = rng.integers(0, n, size=(2, int(round(random_edges * n))))
    extra = extra[:, extra[0] != extra[1]]
    return _assemble(base, num_base, [HOUSE] * num_motifs, anchors, _positive_int(features, "ba_shapes: features"),
                     extra)


def ba_2motifs(num_graphs: int = 200, num_base: int = 20, seed: int = 0, m: int = 1,
               features: int = 10) -> list[MotifGraph]:
    """BA-2Motifs: ``num_graphs`` graphs, each a Barabasi-Albert graph of ``num_base`` nodes
    with one motif joined to a random base node: a house (graph label 0) for even indices, a
    five-node cycle (label 1) for odd ones. ``y`` is the graph label; features are ones."""
    num_graphs = _positive_int(num_graphs, "ba_2motifs: num_graphs")
    num_base = _positive_int(num_base, "ba_2motifs: num_base", 2)
    features = _positive_int(features, "ba_2motifs: features")
    rng = np.random.default_rng(seed)
    graphs = []
    for k in range(num_graphs):
        base = barabasi_albert(num_base, m, rng)
        motif = HOUSE if k % 2 == 0 else CYCLE
        g = _assemble(base, num_base, [motif], rng.integers(0, num_base, size=1), features)
        g.y = k % 2
        graphs.append(g)
    return graphs
