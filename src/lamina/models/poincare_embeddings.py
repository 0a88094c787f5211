r"""Poincaré embeddings of hierarchies (Nickel and Kiela, "Poincaré Embeddings for Learning
Hierarchical Representations", 2017).

The nodes of a graph (here the transitive closure of a tree: every node related to each
of its ancestors) get points of a ball; for each related pair (u, v) and negatives v'
drawn among the nodes not related to u, the loss is the softmax cross-entropy

    L(u, v) = -log( exp(-d(u, v)) / sum_{w in {v} + negatives} exp(-d(u, w)) )

with d the hyperbolic distance, minimised by Riemannian SGD, the first ``burn_in`` epochs
at a tenth of the learning rate (so that the points find their angles before moving out).
With ``geometry='euclidean'`` the same procedure trains Euclidean points (d the Euclidean
distance, plain SGD), the baseline of the paper.

:func:`reconstruction_metrics` measures how well distances recover the graph: for every
related pair (u, v), the rank of d(u, v) among the distances from u to the nodes not
related to u (mean rank, 1 is perfect), and the mean average precision of each node's
ranking of all others.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.manifolds import PoincareBall
from lamina.nn.embedding import embedding
from lamina.nn.manifold_parameter import ManifoldParameter
from lamina.nn.parameter import Parameter

__all__ = ["PoincareEmbeddingResult", "balanced_tree", "reconstruction_metrics", "train_poincare_embeddings",
           "transitive_closure"]

GEOMETRIES = ("poincare", "euclidean")
#: Added to the logit of a sampled negative that is in fact related to u (it drops out).
_MASKED = -1e4


def balanced_tree(branching: int, depth: int) -> numpy.ndarray:
    """The (child, parent) edges of a tree whose root 0 has ``branching`` children, each of
    them as many, down to ``depth`` levels; nodes numbered level by level."""
    if branching < 1 or depth < 1:
        raise ValueError(f"balanced_tree: branching and depth must be >= 1, got {branching}, {depth}")
    edges, level, next_id = [], [0], 1
    for _ in range(depth):
        new_level = []
        for parent in level:
            for _ in range(branching):
                edges.append((next_id, parent))
                new_level.append(next_id)
                next_id += 1
        level = new_level
    return numpy.asarray(edges, dtype=numpy.int64)


def transitive_closure(edges) -> numpy.ndarray:
    """All (descendant, ancestor) pairs of a forest given by its (child, parent) edges."""
    edges = numpy.asarray(edges, dtype=numpy.int64)
    if edges.ndim != 2 or edges.shape[1] != 2:
        raise ValueError(f"transitive_closure: expected (child, parent) pairs of shape (E, 2), got {edges.shape}")
    parent = {}
    for child, up in edges.tolist():
        if child in parent and parent[child] != up:
            raise ValueError(f"transitive_closure: node {child} has two parents ({parent[child]} and {up})")
        parent[child] = up
    pairs = []
    for node in parent:
        seen, up = {node}, parent[node]
        while True:
            if up in seen:
                raise ValueError(f"transitive_closure: the edges contain a cycle through node {up}")
            seen.add(up)
            pairs.append((node, up))
            if up not in parent:
                break
            up = parent[up]
    return numpy.asarray(sorted(pairs), dtype=numpy.int64)


def _adjacency(pairs: numpy.ndarray, num_nodes: int) -> numpy.ndarray:
    """The symmetric relation as a boolean matrix (the diagonal set: a node is not its own negative)."""
    related = numpy.eye(num_nodes, dtype=bool)
    related[pairs[:, 0], pairs[:, 1]] = True
    related[pairs[:, 1], pairs[:, 0]] = True
    return related


@dataclass
class PoincareEmbeddingResult:
    """The trained points (num_nodes, dim), their geometry, and the mean loss of each epoch."""

    embeddings: numpy.ndarray
    geometry: str
    ball: PoincareBall | None
    losses: list[float] = field(default_factory=list)

    def distances(self) -> numpy.ndarray:
        """The (num_nodes, num_nodes) matrix of distances between the points."""
        return pairwise_distances(self.embeddings, self.ball)


def pairwise_distances(points, ball: PoincareBall | None = None) -> numpy.ndarray:
    """All distances between the rows of ``points``: hyperbolic in ``ball``, or Euclidean."""
    points = numpy.asarray(points, dtype=numpy.float64)
    if ball is None:
        return numpy.sqrt(((points[:, None, :] - points[None, :, :]) ** 2).sum(-1))
    return ball.dist(points[:, None, :], points[None, :, :]).numpy()


def _pair_distances(table: Tensor, left, right, ball: PoincareBall | None) -> Tensor:
    u, w = embedding(left, table), embedding(right, table)
    if ball is not None:
        return ball.dist(u, w)
    diff = u - w
    return F.sqrt(F.clip(F.sum(diff * diff, axis=-1), low=1e-30))


def train_poincare_embeddings(pairs, num_nodes: int | None = None, dim: int = 2, negatives: int = 10,
                              epochs: int = 100, lr: float = 3.0, burn_in: int = 10, batch_size: int | None = 32,
                              geometry: str = "poincare", c: float = 1.0, init_scale: float = 1e-3,
                              seed: int = 0) -> PoincareEmbeddingResult:
    """Embed the nodes of the relation ``pairs`` ((E, 2) integer pairs, e.g. the
    :func:`transitive_closure` of a tree; taken as symmetric) in ``dim`` dimensions.

    Each epoch visits the pairs in both directions in shuffled mini-batches of ``batch_size``
    (None: all at once) and, for each, ``negatives`` nodes drawn uniformly (those related to
    u are masked out of the softmax). Riemannian SGD with learning rate ``lr`` (``lr / 10``
    for the first ``burn_in`` epochs) on the mean loss of a batch. ``geometry``: 'poincare'
    (the ball of curvature -c) or 'euclidean'. Returns a :class:`PoincareEmbeddingResult`.
    """
    if geometry not in GEOMETRIES:
        raise ValueError(f"train_poincare_embeddings: geometry must be one of {GEOMETRIES}, got {geometry!r}")
    pairs = numpy.asarray(pairs, dtype=numpy.int64)
    if pairs.ndim != 2 or pairs.shape[1] != 2 or not len(pairs):
        raise ValueError(f"train_poincare_embeddings: expected integer pairs of shape (E, 2), got {pairs.shape}")
    num_nodes = int(pairs.max()) + 1 if num_nodes is None else num_nodes
    if pairs.min() < 0 or pairs.max() >= num_nodes:
        raise ValueError(f"train_poincare_embeddings: node ids must lie in [0, {num_nodes}), got "
                         f"[{pairs.min()}, {pairs.max()}]")
    if negatives < 1:
        raise ValueError(f"train_poincare_embeddings: negatives must be >= 1, got {negatives}")
    from lamina.optim.riemannian import RiemannianSGD  # optim shares models' rank

    rng = numpy.random.default_rng(seed)
    dtype = numpy.float64
    start = rng.uniform(-init_scale, init_scale, size=(num_nodes, dim)).astype(dtype)
    ball = PoincareBall(c) if geometry == "poincare" else None
    table = ManifoldParameter(start, ball, dtype=dtype) if ball is not None else Parameter(start, dtype=dtype)
    optimizer = RiemannianSGD([table], lr=lr)
    related = _adjacency(pairs, num_nodes)
    directed = numpy.concatenate([pairs, pairs[:, ::-1]])
    batch_size = len(directed) if batch_size is None else batch_size
    losses = []
    for epoch in range(epochs):
        optimizer.lr = lr / 10.0 if epoch < burn_in else lr
        order = rng.permutation(len(directed))
        total = 0.0
        for begin in range(0, len(order), batch_size):
            batch = directed[order[begin:begin + batch_size]]
            u, v = batch[:, 0], batch[:, 1]
            sampled = rng.integers(0, num_nodes, size=(len(batch), negatives))
            candidates = numpy.concatenate([v[:, None], sampled], axis=1)              # (B, 1 + negatives)
            mask = numpy.zeros(candidates.shape, dtype=dtype)
            mask[:, 1:][related[u[:, None], sampled]] = _MASKED
            left = numpy.broadcast_to(u[:, None], candidates.shape)
            logits = -_pair_distances(table, left, candidates, ball) + Tensor._wrap(mask)
            loss = -F.mean(F.log_softmax(logits, axis=-1)[:, 0])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.data) * len(batch)
        losses.append(total / len(directed))
    points = backend.to_numpy(table.data).copy()
    return PoincareEmbeddingResult(points, geometry, ball, losses)


def reconstruction_metrics(distances, pairs) -> tuple[float, float]:
    """(mean rank, mean average precision) of the relation ``pairs`` (symmetric) under the
    (N, N) ``distances``: see the module docstring."""
    distances = numpy.asarray(distances, dtype=numpy.float64)
    pairs = numpy.asarray(pairs, dtype=numpy.int64)
    num_nodes = distances.shape[0]
    if distances.shape != (num_nodes, num_nodes):
        raise ValueError(f"reconstruction_metrics: expected a square distance matrix, got {distances.shape}")
    related = _adjacency(pairs, num_nodes)
    ranks, precisions = [], []
    for u in range(num_nodes):
        neighbours = numpy.flatnonzero(related[u] & (numpy.arange(num_nodes) != u))
        if not len(neighbours):
            continue
        others = numpy.flatnonzero(~related[u])
        d_neighbours, d_others = distances[u, neighbours], distances[u, others]
        ranks.extend(1 + (d_others[None, :] < d_neighbours[:, None]).sum(axis=1))
        candidates = numpy.flatnonzero(numpy.arange(num_nodes) != u)
        order = candidates[numpy.argsort(distances[u, candidates], kind="stable")]
        hits = related[u, order]
        precision_at = numpy.cumsum(hits) / numpy.arange(1, len(order) + 1)
        precisions.append(float(precision_at[hits].mean()))
    return float(numpy.mean(ranks)), float(numpy.mean(precisions))
