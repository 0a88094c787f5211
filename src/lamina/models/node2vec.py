"""node2vec (Grover & Leskovec, 2016), as PyTorch Geometric's ``Node2Vec``: node embeddings
trained by skip-gram with negative sampling on second-order biased random walks.

A walk that came from t to v moves to a neighbour x of v with probability proportional to

    1/p  if x = t            (return)
    1    if x neighbours t   (stay near t)
    1/q  otherwise           (move outward)

drawn by rejection: propose a uniform neighbour, accept it with probability
weight / max(1/p, 1, 1/q). The first step is uniform; a node without out-edges stays put.
Walks of ``walk_length`` steps (walk_length + 1 nodes) are cut into windows of
``context_size`` nodes; each window's first node is the centre, the others its contexts.
Negative windows put random nodes after the centre. With embeddings z:

    loss = -mean_pos log(sigma(z_c . z_o) + 1e-15) - mean_neg log(1 - sigma(z_c . z_o) + 1e-15)
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.data.graphs import check_edge_index
from lamina.nn.layer import positive_int
from lamina.nn.module import Module

__all__ = ["Node2Vec", "biased_random_walk"]

LOG_EPSILON = 1e-15


class _Adjacency:
    """The out-neighbours of every node in CSR form, and a sorted list of the edge keys
    j * N + i for membership tests."""

    def __init__(self, edge_index: np.ndarray, num_nodes: int):
        order = np.lexsort((edge_index[1], edge_index[0]))
        self.columns = edge_index[1][order]
        self.degrees = np.bincount(edge_index[0], minlength=num_nodes)
        self.row_start = np.concatenate([[0], np.cumsum(self.degrees)[:-1]]).astype(np.int64)
        self.keys = np.unique(edge_index[0] * num_nodes + edge_index[1])
        self.num_nodes = num_nodes

    def random_neighbours(self, nodes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        offsets = np.floor(rng.random(nodes.shape[0]) * self.degrees[nodes]).astype(np.int64)
        return self.columns[self.row_start[nodes] + offsets]

    def linked(self, sources: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Whether each pair sources[k] -> targets[k] is an edge."""
        keys = sources * self.num_nodes + targets
        if not self.keys.size:
            return np.zeros(keys.shape, dtype=bool)
        at = np.minimum(np.searchsorted(self.keys, keys), self.keys.shape[0] - 1)
        return self.keys[at] == keys


def biased_random_walk(adjacency: _Adjacency, start, walk_length: int, p: float, q: float,
                       rng: np.random.Generator) -> np.ndarray:
    """(B, walk_length + 1) node2vec walks from the nodes ``start`` (module docstring)."""
    start = np.asarray(start, dtype=np.int64)
    walks = np.empty((start.shape[0], walk_length + 1), dtype=np.int64)
    walks[:, 0] = start
    weights = np.array([1.0 / p, 1.0, 1.0 / q])
    ceiling = weights.max()
    for step in range(1, walk_length + 1):
        current = walks[:, step - 1]
        following = current.copy()
        moving = np.flatnonzero(adjacency.degrees[current] > 0)
        if step == 1 or (p == 1.0 and q == 1.0):
            following[moving] = adjacency.random_neighbours(current[moving], rng)
        else:
            pending = moving
            while pending.size:
                proposal = adjacency.random_neighbours(current[pending], rng)
                previous = walks[pending, step - 2]
                kind = np.where(proposal == previous, 0, np.where(adjacency.linked(previous, proposal), 1, 2))
                accepted = rng.random(pending.shape[0]) * ceiling < weights[kind]
                following[pending[accepted]] = proposal[accepted]
                pending = pending[~accepted]
        walks[:, step] = following
    return walks


def _windows(walks: np.ndarray, context_size: int) -> np.ndarray:
    """Every run of ``context_size`` consecutive nodes of every walk, stacked window by window."""
    count = walks.shape[1] - context_size + 1
    return np.concatenate([walks[:, j:j + context_size] for j in range(count)], axis=0)


class _WalkLoader:
    """Batches of (positive windows, negative windows) for the nodes in (shuffled) order."""

    def __init__(self, model: Node2Vec, batch_size: int, shuffle: bool, rng: np.random.Generator):
        self.model, self.batch_size, self.shuffle, self.rng = model, batch_size, shuffle, rng

    def __len__(self) -> int:
        return -(-self.model.num_nodes // self.batch_size)

    def __iter__(self):
        nodes = np.arange(self.model.num_nodes)
        if self.shuffle:
            nodes = self.rng.permutation(nodes)
        for begin in range(0, nodes.shape[0], self.batch_size):
            yield self.model.sample(nodes[begin:begin + self.batch_size], self.rng)


class Node2Vec(Module):
    """node2vec embeddings (num_nodes, ``embedding_dim``) of the graph ``edge_index``;
    ``loader(batch_size)`` gives (pos_rw, neg_rw) batches and ``loss(pos_rw, neg_rw)`` the
    skip-gram loss; calling the model returns the embeddings (of the nodes ``batch``)."""

    def __init__(self, edge_index, embedding_dim: int, walk_length: int, context_size: int,
                 walks_per_node: int = 1, p: float = 1.0, q: float = 1.0, num_negative_samples: int = 1,
                 num_nodes: int | None = None, seed=None, name: str | None = None):
        super().__init__(name=name)
        edge_index = check_edge_index(edge_index, num_nodes, "Node2Vec")
        self.num_nodes = int(edge_index.max()) + 1 if num_nodes is None else int(num_nodes)
        self.embedding_dim = positive_int(embedding_dim, "Node2Vec: embedding_dim")
        self.walk_length = positive_int(walk_length, "Node2Vec: walk_length")
        self.context_size = positive_int(context_size, "Node2Vec: context_size")
        if self.context_size < 2 or self.context_size > self.walk_length + 1:
            raise ValueError(f"Node2Vec: context_size must be in [2, walk_length + 1] = [2, {self.walk_length + 1}], "
                             f"got {context_size!r}")
        self.walks_per_node = positive_int(walks_per_node, "Node2Vec: walks_per_node")
        self.num_negative_samples = positive_int(num_negative_samples, "Node2Vec: num_negative_samples")
        for label, value in (("p", p), ("q", q)):
            if not value > 0:
                raise ValueError(f"Node2Vec: {label} must be positive, got {value!r}")
        self.p, self.q = float(p), float(q)
        self.adjacency = _Adjacency(edge_index, self.num_nodes)
        self.rng = np.random.default_rng(seed)
        dtype = backend.get_default_dtype()
        self.add_parameter("embedding", self.rng.standard_normal((self.num_nodes, self.embedding_dim)).astype(dtype))
        self.built = True

    def forward(self, batch=None) -> Tensor:
        return self.embedding if batch is None else F.take_rows(self.embedding, np.asarray(batch, dtype=np.int64))

    def random_walks(self, start, rng: np.random.Generator | None = None) -> np.ndarray:
        """(B, walk_length + 1) biased walks from the nodes ``start``."""
        return biased_random_walk(self.adjacency, start, self.walk_length, self.p, self.q,
                                  self.rng if rng is None else rng)

    def pos_sample(self, batch, rng: np.random.Generator | None = None) -> np.ndarray:
        """Windows of ``walks_per_node`` walks from every node of ``batch``."""
        start = np.tile(np.asarray(batch, dtype=np.int64), self.walks_per_node)
        return _windows(self.random_walks(start, rng), self.context_size)

    def neg_sample(self, batch, rng: np.random.Generator | None = None) -> np.ndarray:
        """Windows of walks_per_node * num_negative_samples random node sequences after every node of ``batch``."""
        rng = self.rng if rng is None else rng
        start = np.tile(np.asarray(batch, dtype=np.int64), self.walks_per_node * self.num_negative_samples)
        noise = rng.integers(0, self.num_nodes, size=(start.shape[0], self.walk_length))
        return _windows(np.concatenate([start[:, None], noise], axis=1), self.context_size)

    def sample(self, batch, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.pos_sample(batch, rng), self.neg_sample(batch, rng)

    def loader(self, batch_size: int = 128, shuffle: bool = True, seed=None) -> _WalkLoader:
        """An iterable of (pos_rw, neg_rw) over all nodes in batches of ``batch_size``, new walks each pass."""
        rng = self.rng if seed is None else np.random.default_rng(seed)
        return _WalkLoader(self, positive_int(batch_size, "Node2Vec.loader: batch_size"), bool(shuffle), rng)

    def _window_scores(self, windows) -> Tensor:
        windows = np.asarray(windows, dtype=np.int64)
        if windows.ndim != 2 or windows.shape[1] < 2:
            raise ValueError(f"{self._label()}: walks of shape {windows.shape}; expected (windows, context_size >= 2)")
        centre = F.reshape(F.take_rows(self.embedding, windows[:, 0]), (windows.shape[0], 1, self.embedding_dim))
        context = F.reshape(F.take_rows(self.embedding, windows[:, 1:].reshape(-1)),
                            (windows.shape[0], windows.shape[1] - 1, self.embedding_dim))
        return F.reshape(F.sum(centre * context, axis=-1), (-1,))

    def loss(self, pos_rw, neg_rw) -> Tensor:
        """Skip-gram loss with negative sampling (module docstring)."""
        positive = F.sigmoid(self._window_scores(pos_rw))
        negative = F.sigmoid(self._window_scores(neg_rw))
        return -F.mean(F.log(positive + LOG_EPSILON)) - F.mean(F.log(1.0 - negative + LOG_EPSILON))
