"""Mini-batches of one large graph, as PyTorch Geometric's loaders give them.

- :class:`NeighborLoader` (GraphSAGE, Hamilton et al. 2017): from each batch of seed nodes,
  sample up to ``num_neighbors[0]`` in-edges of every seed (without replacement), then up to
  ``num_neighbors[1]`` in-edges of every node reached first in that hop, and so on; -1 takes
  every in-edge. The batch is the sampled edges over the reached nodes, relabelled so that
  the seeds come first (``batch_size`` of them), ``n_id`` the original node ids and ``e_id``
  the original edge ids.
- :class:`ClusterLoader` (Cluster-GCN, Chiang et al. 2019): the nodes are split once into
  clusters (:func:`partition_graph`, a BFS-grown partition rather than METIS), and each batch
  is the subgraph induced by a few clusters, keeping the edges between them.
- GraphSAINT (Zeng et al. 2020): :class:`GraphSAINTNodeSampler`,
  :class:`GraphSAINTEdgeSampler` and :class:`GraphSAINTRandomWalkSampler` draw node sets and
  yield their induced subgraphs. Pre-sampling N subgraphs counts C_v (subgraphs holding
  node v) and C_uv (holding edge u -> v); then, with p_v ~ C_v / N,

      loss_norm[v] = 1 / (|V| p_v)       weight of node v's loss (the batch loss
                                          sum_v loss_norm[v] L_v estimates mean_v L_v)
      edge_norm[e] = C_v / C_uv          = 1 / alpha_uv, the weight that makes the
                                          aggregation at v unbiased

  A node or edge never met while pre-sampling is counted once.
"""

from __future__ import annotations

import numbers
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from lamina.data.graphs import Graph, check_edge_index, degree

__all__ = [
    "ClusterLoader", "GraphSAINTEdgeSampler", "GraphSAINTNodeSampler", "GraphSAINTRandomWalkSampler",
    "NeighborLoader", "SubgraphBatch", "induced_subgraph", "partition_graph",
]


@dataclass
class SubgraphBatch(Graph):
    """A sampled piece of a larger graph: the :class:`Graph` fields over the kept nodes, with
    ``n_id`` (original node ids), ``e_id`` (original edge ids); for :class:`NeighborLoader`
    ``batch_size`` (the first ``batch_size`` nodes are the seeds) and ``num_sampled_nodes``
    and ``num_sampled_edges`` (how many nodes each hop added after the seeds, how many edges
    it sampled; nodes and edges are stored hop after hop); for GraphSAINT ``loss_norm`` per
    node and ``edge_norm`` per edge."""

    n_id: np.ndarray | None = None
    e_id: np.ndarray | None = None
    batch_size: int | None = None
    num_sampled_nodes: list[int] | None = None
    num_sampled_edges: list[int] | None = None
    loss_norm: np.ndarray | None = None
    edge_norm: np.ndarray | None = None


def _count(value, name: str, who: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{who}: {name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _check_graph(graph, who: str) -> Graph:
    if not isinstance(graph, Graph):
        raise TypeError(f"{who}: expected a lamina.data.Graph, got {type(graph).__name__}")
    return graph


def _rng(seed) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _node_ids(nodes, num_nodes: int, who: str) -> np.ndarray:
    """``nodes`` (ids or a boolean mask over the nodes; None: all) as checked int64 ids."""
    if nodes is None:
        return np.arange(num_nodes)
    nodes = np.asarray(nodes)
    if nodes.dtype == bool:
        if nodes.shape != (num_nodes,):
            raise ValueError(f"{who}: a boolean input_nodes mask needs shape ({num_nodes},), got {nodes.shape}")
        return np.flatnonzero(nodes)
    if nodes.ndim != 1 or (nodes.size and nodes.dtype.kind not in "iu"):
        raise ValueError(f"{who}: input_nodes must be a 1-D array of node ids or a boolean mask, got shape "
                         f"{nodes.shape} ({nodes.dtype})")
    if nodes.size and (nodes.min() < 0 or nodes.max() >= num_nodes):
        bad = int(nodes.min()) if nodes.min() < 0 else int(nodes.max())
        raise ValueError(f"{who}: input_nodes holds node {bad}, out of range for a graph of {num_nodes} nodes")
    return nodes.astype(np.int64)


def induced_subgraph(graph: Graph, nodes: np.ndarray) -> SubgraphBatch:
    """The subgraph on ``nodes`` (kept in the order given) with every edge of ``graph`` whose
    two ends are among them, relabelled; ``n_id`` = nodes, ``e_id`` the kept edges."""
    nodes = np.asarray(nodes, dtype=np.int64)
    local = np.full(graph.num_nodes, -1, dtype=np.int64)
    local[nodes] = np.arange(nodes.shape[0])
    src, dst = local[graph.edge_index[0]], local[graph.edge_index[1]]
    e_id = np.flatnonzero((src >= 0) & (dst >= 0))
    return _batch(graph, nodes, np.stack([src[e_id], dst[e_id]]), e_id)


def _batch(graph: Graph, nodes: np.ndarray, edge_index: np.ndarray, e_id: np.ndarray, **extra) -> SubgraphBatch:
    y = graph.y
    if y is not None and np.ndim(y) >= 1 and np.shape(y)[0] == graph.num_nodes:
        y = np.asarray(y)[nodes]
    weight = None if graph.edge_weight is None else graph.edge_weight[e_id]
    return SubgraphBatch(x=graph.x[nodes], edge_index=edge_index, edge_weight=weight, y=y, n_id=nodes, e_id=e_id,
                         **extra)


class _InEdges:
    """The edges grouped by target (compressed columns): the in-edges of node i are
    ``order[start[i]:start[i] + count[i]]``."""

    def __init__(self, edge_index: np.ndarray, num_nodes: int):
        self.order = np.argsort(edge_index[1], kind="stable")
        self.count = np.bincount(edge_index[1], minlength=num_nodes)
        self.start = np.cumsum(self.count) - self.count

    def sample(self, nodes: np.ndarray, fanout: int, rng: np.random.Generator) -> np.ndarray:
        """Edge ids: for every node, min(fanout, in-degree) of its in-edges drawn without
        replacement (all of them when fanout is -1), grouped by node in the order given."""
        counts = self.count[nodes]
        total = int(counts.sum())
        group = np.repeat(np.arange(nodes.shape[0]), counts)
        first = np.cumsum(counts) - counts
        positions = np.arange(total) - np.repeat(first, counts) + np.repeat(self.start[nodes], counts)
        edges = self.order[positions]
        if fanout < 0:
            return edges
        shuffled = np.lexsort((rng.random(total), group))         # a random order inside each group
        rank = np.arange(total) - np.repeat(first, counts)
        return edges[shuffled][rank < fanout]


class NeighborLoader:
    """Batches of ``batch_size`` seed nodes (``input_nodes``, all nodes by default) with their
    sampled ``len(num_neighbors)``-hop in-neighbourhoods, as :class:`SubgraphBatch`; a model
    of as many message-passing layers reads its seed outputs from rows ``[:batch_size]``.
    ``num_neighbors[k]`` is the fan-out of hop k (-1: every in-neighbour)."""

    def __init__(self, graph: Graph, num_neighbors: list[int], batch_size: int = 1, input_nodes=None,
                 shuffle: bool = False, seed=None):
        who = "NeighborLoader"
        self.graph = _check_graph(graph, who)
        if not isinstance(num_neighbors, (list, tuple)) or not num_neighbors:
            raise ValueError(f"{who}: num_neighbors must be a non-empty list of fan-outs, one per layer, "
                             f"got {num_neighbors!r}")
        for k, fanout in enumerate(num_neighbors):
            if isinstance(fanout, bool) or not isinstance(fanout, numbers.Integral) or (fanout < 1 and fanout != -1):
                raise ValueError(f"{who}: num_neighbors[{k}] = {fanout!r}; expected a positive integer or -1 (all)")
        self.num_neighbors = [int(f) for f in num_neighbors]
        self.batch_size = _count(batch_size, "batch_size", who)
        self.input_nodes = _node_ids(input_nodes, graph.num_nodes, who)
        self.shuffle = bool(shuffle)
        self.rng = _rng(seed)
        self._in_edges = _InEdges(graph.edge_index, graph.num_nodes)

    @property
    def num_layers(self) -> int:
        return len(self.num_neighbors)

    def check_layers(self, num_layers: int) -> None:
        """Raise unless the loader samples one hop per message-passing layer."""
        if num_layers != self.num_layers:
            raise ValueError(f"NeighborLoader: num_neighbors {self.num_neighbors} has {self.num_layers} fan-outs "
                             f"but the model has {num_layers} message-passing layers; give one fan-out per layer")

    def __len__(self) -> int:
        return -(-self.input_nodes.shape[0] // self.batch_size)

    def __iter__(self) -> Iterator[SubgraphBatch]:
        nodes = self.rng.permutation(self.input_nodes) if self.shuffle else self.input_nodes
        for start in range(0, nodes.shape[0], self.batch_size):
            yield self.sample(nodes[start:start + self.batch_size])

    def sample(self, seeds) -> SubgraphBatch:
        """The sampled subgraph around ``seeds`` (distinct node ids)."""
        seeds = np.asarray(seeds, dtype=np.int64)
        if np.unique(seeds).shape[0] != seeds.shape[0]:
            raise ValueError("NeighborLoader: the seed nodes must be distinct")
        edge_index = self.graph.edge_index
        local = np.full(self.graph.num_nodes, -1, dtype=np.int64)
        local[seeds] = np.arange(seeds.shape[0])
        n_id, frontier, sampled = [seeds], seeds, []
        for fanout in self.num_neighbors:
            edges = self._in_edges.sample(frontier, fanout, self.rng)
            sources = edge_index[0, edges]
            unseen = sources[local[sources] < 0]
            _, first = np.unique(unseen, return_index=True)
            frontier = unseen[np.sort(first)]                       # new nodes, in order of first appearance
            local[frontier] = np.arange(frontier.shape[0]) + sum(part.shape[0] for part in n_id)
            n_id.append(frontier)
            sampled.append(edges)
        e_id = np.concatenate(sampled)
        nodes = np.concatenate(n_id)
        relabelled = np.stack([local[edge_index[0, e_id]], local[edge_index[1, e_id]]])
        return _batch(self.graph, nodes, relabelled, e_id, batch_size=int(seeds.shape[0]),
                      num_sampled_nodes=[part.shape[0] for part in n_id],
                      num_sampled_edges=[part.shape[0] for part in sampled])


def partition_graph(edge_index, num_nodes: int, num_parts: int, seed=None) -> np.ndarray:
    """(num_nodes,) cluster id in [0, num_parts) of every node: clusters grown one at a time by
    breadth-first search over the undirected graph, from a random unassigned node, until
    they hold ceil(num_nodes / num_parts) nodes (a cheap stand-in for METIS: neighbours tend
    to share a cluster). Every node gets exactly one cluster."""
    who = "partition_graph"
    edge_index = check_edge_index(edge_index, num_nodes, who)
    num_parts = _count(num_parts, "num_parts", who)
    if num_parts > num_nodes:
        raise ValueError(f"{who}: num_parts = {num_parts} exceeds the {num_nodes} nodes")
    rng = _rng(seed)
    both = np.concatenate([edge_index, edge_index[::-1]], axis=1)
    order = np.argsort(both[0], kind="stable")
    neighbours, starts = both[1, order], np.concatenate([[0], np.cumsum(np.bincount(both[0], minlength=num_nodes))])
    size = -(-num_nodes // num_parts)
    part = np.full(num_nodes, -1, dtype=np.int64)
    unvisited = list(rng.permutation(num_nodes))
    for cluster in range(num_parts):
        queue, filled = deque(), 0
        while filled < size:
            if not queue:
                while unvisited and part[unvisited[-1]] >= 0:
                    unvisited.pop()
                if not unvisited:
                    break
                queue.append(unvisited.pop())
                part[queue[-1]] = cluster
                filled += 1
                continue
            node = queue.popleft()
            for nb in neighbours[starts[node]:starts[node + 1]]:
                if part[nb] < 0 and filled < size:
                    part[nb] = cluster
                    queue.append(nb)
                    filled += 1
    return part


class ClusterLoader:
    """Cluster-GCN batches: the nodes split into ``num_parts`` clusters by
    :func:`partition_graph` (or the given ``parts`` array), each batch the subgraph induced
    by ``clusters_per_batch`` clusters (shuffled with ``shuffle``), edges between them kept."""

    def __init__(self, graph: Graph, num_parts: int, clusters_per_batch: int = 1, shuffle: bool = False,
                 parts=None, seed=None):
        who = "ClusterLoader"
        self.graph = _check_graph(graph, who)
        self.rng = _rng(seed)
        self.parts = (partition_graph(graph.edge_index, graph.num_nodes, num_parts, self.rng) if parts is None
                      else np.asarray(parts, dtype=np.int64))
        if self.parts.shape != (graph.num_nodes,):
            raise ValueError(f"{who}: parts must give one cluster per node, shape ({graph.num_nodes},), "
                             f"got {self.parts.shape}")
        self.num_parts = _count(num_parts, "num_parts", who)
        if self.parts.size and (self.parts.min() < 0 or self.parts.max() >= self.num_parts):
            raise ValueError(f"{who}: parts holds cluster ids in [{self.parts.min()}, {self.parts.max()}]; "
                             f"expected ids in [0, {self.num_parts})")
        self.clusters_per_batch = _count(clusters_per_batch, "clusters_per_batch", who)
        self.shuffle = bool(shuffle)
        order = np.argsort(self.parts, kind="stable")
        self.cluster_nodes = np.split(order, np.cumsum(np.bincount(self.parts, minlength=self.num_parts))[:-1])

    def __len__(self) -> int:
        return -(-self.num_parts // self.clusters_per_batch)

    def __iter__(self) -> Iterator[SubgraphBatch]:
        clusters = self.rng.permutation(self.num_parts) if self.shuffle else np.arange(self.num_parts)
        for start in range(0, self.num_parts, self.clusters_per_batch):
            chosen = clusters[start:start + self.clusters_per_batch]
            yield induced_subgraph(self.graph, np.concatenate([self.cluster_nodes[c] for c in chosen]))


class _GraphSAINTSampler:
    """``num_steps`` induced subgraphs per epoch, each carrying the normalisation
    coefficients estimated from ``sample_coverage`` pre-sampled subgraphs (none: all 1)."""

    who = "GraphSAINTSampler"

    def __init__(self, graph: Graph, budget: int, num_steps: int = 1, sample_coverage: int = 0, seed=None):
        self.graph = _check_graph(graph, self.who)
        self.budget = _count(budget, "budget", self.who)
        self.num_steps = _count(num_steps, "num_steps", self.who)
        self.rng = _rng(seed)
        self.loss_norm = np.ones(graph.num_nodes)
        self.edge_norm = np.ones(graph.num_edges)
        if _count(sample_coverage, "sample_coverage", self.who, low=0):
            self.loss_norm, self.edge_norm = self.coefficients(sample_coverage)

    def sample_nodes(self) -> np.ndarray:
        raise NotImplementedError

    def coefficients(self, num_samples: int) -> tuple[np.ndarray, np.ndarray]:
        """(loss_norm per node, edge_norm per edge) from ``num_samples`` pre-sampled subgraphs."""
        node_count = np.zeros(self.graph.num_nodes)
        edge_count = np.zeros(self.graph.num_edges)
        for _ in range(num_samples):
            sub = induced_subgraph(self.graph, self.sample_nodes())
            node_count[sub.n_id] += 1
            edge_count[sub.e_id] += 1
        node_count, edge_count = np.maximum(node_count, 1), np.maximum(edge_count, 1)
        loss_norm = num_samples / (node_count * self.graph.num_nodes)
        edge_norm = node_count[self.graph.edge_index[1]] / edge_count
        return loss_norm, edge_norm

    def __len__(self) -> int:
        return self.num_steps

    def __iter__(self) -> Iterator[SubgraphBatch]:
        for _ in range(self.num_steps):
            sub = induced_subgraph(self.graph, self.sample_nodes())
            sub.loss_norm, sub.edge_norm = self.loss_norm[sub.n_id], self.edge_norm[sub.e_id]
            yield sub


class GraphSAINTNodeSampler(_GraphSAINTSampler):
    """Node sets of ``budget`` draws with replacement, node v drawn with probability
    proportional to ||A[:, v]||^2 (its out-degree for an unweighted graph; nodes without
    out-edges never drawn), duplicates merged."""

    who = "GraphSAINTNodeSampler"

    @property
    def node_probabilities(self) -> np.ndarray:
        g = self.graph
        weight = None if g.edge_weight is None else np.asarray(g.edge_weight, dtype=np.float64) ** 2
        mass = degree(g.edge_index[0], g.num_nodes, weight)
        return mass / mass.sum()

    def sample_nodes(self) -> np.ndarray:
        return np.unique(self.rng.choice(self.graph.num_nodes, self.budget, p=self.node_probabilities))


class GraphSAINTEdgeSampler(_GraphSAINTSampler):
    """Node sets of the ends of ``budget`` edges drawn with replacement, edge u -> v with
    probability proportional to 1 / deg(u) + 1 / deg(v) (in-degrees)."""

    who = "GraphSAINTEdgeSampler"

    @property
    def edge_probabilities(self) -> np.ndarray:
        g = self.graph
        deg = np.maximum(degree(g.edge_index[1], g.num_nodes), 1)
        mass = 1.0 / deg[g.edge_index[0]] + 1.0 / deg[g.edge_index[1]]
        return mass / mass.sum()

    def sample_nodes(self) -> np.ndarray:
        edges = self.rng.choice(self.graph.num_edges, self.budget, p=self.edge_probabilities)
        return np.unique(self.graph.edge_index[:, edges])


class GraphSAINTRandomWalkSampler(_GraphSAINTSampler):
    """Node sets visited by ``budget`` random walks of ``walk_length`` steps along out-edges,
    from roots drawn uniformly (a walk stays put at a node without out-edges)."""

    who = "GraphSAINTRandomWalkSampler"

    def __init__(self, graph: Graph, budget: int, walk_length: int, num_steps: int = 1, sample_coverage: int = 0,
                 seed=None):
        self.walk_length = _count(walk_length, "walk_length", self.who, low=0)
        g = _check_graph(graph, self.who)
        self._order = np.argsort(g.edge_index[0], kind="stable")
        self._count = np.bincount(g.edge_index[0], minlength=g.num_nodes)
        self._start = np.cumsum(self._count) - self._count
        super().__init__(graph, budget, num_steps, sample_coverage, seed)

    def sample_nodes(self) -> np.ndarray:
        current = self.rng.integers(0, self.graph.num_nodes, self.budget)
        visited = [current]
        for _ in range(self.walk_length if self.graph.num_edges else 0):
            count = self._count[current]
            pick = self._start[current] + np.floor(self.rng.random(current.shape[0]) * np.maximum(count, 1))
            step = self.graph.edge_index[1, self._order[np.minimum(pick.astype(np.int64), self.graph.num_edges - 1)]]
            current = np.where(count > 0, step, current)
            visited.append(current)
        return np.unique(np.concatenate(visited))
