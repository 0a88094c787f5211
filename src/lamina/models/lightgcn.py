"""Graph collaborative filtering: LightGCN (He et al. 2020) and NGCF (Wang et al. 2019).

Users and items are the N = n_users + n_items nodes of the bipartite interaction graph, with
adjacency A (A[u, n_users + i] = A[n_users + i, u] = 1 when user u interacted with item i) and
degrees D. Both models smooth the embeddings E^(0) (N, d) over the symmetrically normalised

    L = D^-1/2 A D^-1/2        (no self-loops, no weights: L[u, i] = 1 / sqrt(|N_u| |N_i|))

LightGCN keeps only the neighbourhood aggregation, E^(k+1) = L E^(k), with no transform and no
nonlinearity, and represents a node by the mean of its layers,

    e = (E^(0) + E^(1) + ... + E^(K)) / (K + 1),

NGCF (the baseline LightGCN simplifies) transforms each layer and adds an interaction term,

    E^(k+1) = LeakyReLU((L + I) E^(k) W1 + (L E^(k) * E^(k)) W2 + b)     (* element-wise)

and represents a node by the concatenation [E^(0), ..., E^(K)]. The score of (u, i) is
e_u . e_i. Both are trained with BPR (:func:`bpr_loss`) on (user, positive, negative) triples
plus lambda (|e_u^(0)|^2 + |e_i^(0)|^2 + |e_j^(0)|^2) / (2 B) on the batch's layer-0 embeddings
(:meth:`GraphRecommender.bpr_loss`, :func:`fit_bpr`). ``LightGCN(num_layers=0)`` is matrix
factorisation trained with BPR. :func:`full_ranking_metrics` ranks the whole catalogue for each
user with the user's training items left out.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.nn import ModuleList
from lamina.nn import init as initializers
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.dense import linear
from lamina.nn.layer import positive_int
from lamina.nn.module import Module
from lamina.sparse import SparseTensor, mm, sparse_coo_tensor

from .id_inputs import checked_ids, checked_pairs

__all__ = ["LightGCN", "NGCF", "NGCFLayer", "bpr_loss", "fit_bpr", "full_ranking_metrics", "lightgcn_propagate",
           "ngcf_propagate", "normalized_adjacency"]


def _unique_pairs(users, items, n_users: int, n_items: int, who: str) -> tuple[np.ndarray, np.ndarray]:
    users, items = checked_pairs(np.asarray(users), np.asarray(items), n_users, n_items, who)
    codes = np.unique(backend.to_numpy(users).astype(np.int64) * n_items + backend.to_numpy(items))
    return codes // n_items, codes % n_items


def normalized_adjacency(users, items, n_users: int, n_items: int, dtype=None) -> SparseTensor:
    """L = D^-1/2 A D^-1/2 (N, N), N = n_users + n_items, of the bipartite graph of the
    interactions (users[e], items[e]); repeated pairs count once, item i is node n_users + i."""
    positive_int(n_users, "normalized_adjacency: n_users")
    positive_int(n_items, "normalized_adjacency: n_items")
    users, items = _unique_pairs(users, items, n_users, n_items, "normalized_adjacency")
    user_degree = np.bincount(users, minlength=n_users)
    item_degree = np.bincount(items, minlength=n_items)
    weight = 1.0 / np.sqrt(user_degree[users] * item_degree[items])
    rows = np.concatenate([users, n_users + items])
    cols = np.concatenate([n_users + items, users])
    dtype = dtype or backend.get_default_dtype()
    values = backend.xp.asarray(np.concatenate([weight, weight]), dtype=dtype)
    n = n_users + n_items
    return sparse_coo_tensor(np.stack([rows, cols]), values, (n, n), dtype=dtype)


def _check_graph(graph, nodes: int, who: str) -> SparseTensor:
    if not isinstance(graph, SparseTensor):
        raise TypeError(f"{who}: graph must be the SparseTensor of normalized_adjacency, got {type(graph).__name__}")
    if tuple(graph.shape) != (nodes, nodes):
        raise ShapeError(f"{who}: graph of shape {tuple(graph.shape)} does not fit n_users + n_items = {nodes} "
                         f"nodes; expected ({nodes}, {nodes})")
    return graph


def lightgcn_propagate(embeddings, graph: SparseTensor, num_layers: int) -> Tensor:
    """(E^(0) + L E^(0) + ... + L^K E^(0)) / (K + 1) for E^(0) (N, d) and L (N, N)."""
    layer = embeddings if isinstance(embeddings, Tensor) else Tensor(embeddings, dtype=graph.dtype)
    total = layer
    for _ in range(num_layers):
        layer = mm(graph, layer)
        total = total + layer
    return total / float(num_layers + 1)


def ngcf_propagate(embeddings, graph: SparseTensor, w1, w2, bias, negative_slope: float = 0.2) -> Tensor:
    """One NGCF layer: LeakyReLU((L + I) E W1 + (L E * E) W2 + b), E (N, d_in), W (d_in, d_out)."""
    embeddings = embeddings if isinstance(embeddings, Tensor) else Tensor(embeddings, dtype=graph.dtype)
    neighbours = mm(graph, embeddings)
    z = linear(neighbours + embeddings, w1, bias) + linear(neighbours * embeddings, w2)
    return F.leaky_relu(z, negative_slope)


def bpr_loss(positive_scores, negative_scores) -> Tensor:
    """Bayesian personalised ranking (Rendle et al. 2009): mean over the batch of
    -log sigma(s_ui - s_uj) = softplus(s_uj - s_ui)."""
    positive_scores = positive_scores if isinstance(positive_scores, Tensor) else Tensor(positive_scores)
    if tuple(positive_scores.shape) != tuple(getattr(negative_scores, "shape", np.shape(negative_scores))):
        raise ShapeError(f"bpr_loss: positive scores {tuple(positive_scores.shape)} and negative scores "
                         f"{tuple(np.shape(negative_scores))} must have one shape")
    return -F.mean(F.log_sigmoid(positive_scores - negative_scores))


class GraphRecommender(Module):
    """The common part of LightGCN and NGCF: layer-0 tables, scoring, the BPR objective."""

    reads_ids = True

    def _init_tables(self, n_users: int, n_items: int, dim: int, init_std: float) -> None:
        who = type(self).__name__
        for value, what in ((n_users, "n_users"), (n_items, "n_items"), (dim, "dim")):
            positive_int(value, f"{who}: {what}")
        self.n_users, self.n_items, self.dim = n_users, n_items, dim
        draw = initializers.normal(std=float(init_std))
        dtype = backend.get_default_dtype()
        self.add_parameter("user_embedding", draw((n_users, dim), dtype=dtype))
        self.add_parameter("item_embedding", draw((n_items, dim), dtype=dtype))

    def propagate(self, graph: SparseTensor) -> Tensor:
        """The final embeddings (n_users + n_items, d_out) of every node."""
        raise NotImplementedError

    def layer0(self) -> Tensor:
        return F.concat([self.user_embedding, self.item_embedding], axis=0)

    def _final(self, graph) -> Tensor:
        return self.propagate(_check_graph(graph, self.n_users + self.n_items, self._label()))

    def forward(self, users, items, graph) -> Tensor:
        """Scores e_u . e_i (B,) of the pairs (users[b], items[b]) on ``graph``."""
        users, items = checked_pairs(users, items, self.n_users, self.n_items, self._label())
        final = self._final(graph)
        return F.sum(F.take_rows(final, users) * F.take_rows(final, items + self.n_users), axis=-1)

    def bpr_loss(self, users, positives, negatives, graph, l2: float = 1e-4) -> Tensor:
        """BPR on the triples (u, i, j) plus l2 (|e_u^(0)|^2 + |e_i^(0)|^2 + |e_j^(0)|^2) / (2 B)."""
        users, positives = checked_pairs(users, positives, self.n_users, self.n_items, self._label())
        negatives = checked_ids(negatives, self.n_items, "negative item", self._label())
        if negatives.shape != users.shape:
            raise ShapeError(f"{self._label()}.bpr_loss: {users.shape[0]} users but {negatives.shape[0]} negatives")
        final = self._final(graph)
        u, i, j = (F.take_rows(final, ids) for ids in (users, positives + self.n_users, negatives + self.n_users))
        loss = bpr_loss(F.sum(u * i, axis=-1), F.sum(u * j, axis=-1))
        if l2:
            rows = (F.take_rows(self.user_embedding, users), F.take_rows(self.item_embedding, positives),
                    F.take_rows(self.item_embedding, negatives))
            penalty = sum(F.sum(r * r) for r in rows) / (2.0 * users.shape[0])
            loss = loss + float(l2) * penalty
        return loss

    def score_all(self, graph, users=None) -> np.ndarray:
        """Scores of every item for each user (all users by default): (U, n_items), NumPy."""
        with no_grad():
            final = backend.to_numpy(self._final(graph).data)
        user_rows = final[: self.n_users]
        if users is not None:
            user_rows = user_rows[backend.to_numpy(checked_ids(users, self.n_users, "user", self._label()))]
        return user_rows @ final[self.n_users:].T


@register_with_arguments
class LightGCN(GraphRecommender):
    """LightGCN (module docstring): (users (B,), items (B,), graph) -> scores (B,).

    ``graph``: :func:`normalized_adjacency` of the training interactions. ``num_layers`` K >= 0
    (0: plain matrix factorisation). Embeddings start from N(0, ``init_std``^2)."""

    def __init__(self, n_users: int, n_items: int, dim: int = 64, num_layers: int = 3, init_std: float = 0.1,
                 name: str | None = None):
        super().__init__(name=name)
        if isinstance(num_layers, bool) or not isinstance(num_layers, (int, np.integer)) or num_layers < 0:
            raise ValueError(f"LightGCN: num_layers must be an int >= 0, got {num_layers!r}")
        self.num_layers = int(num_layers)
        self._init_tables(n_users, n_items, dim, init_std)
        self.built = True

    def propagate(self, graph: SparseTensor) -> Tensor:
        return lightgcn_propagate(self.layer0(), graph, self.num_layers)

    def extra_repr(self) -> str:
        return f"{self.n_users}, {self.n_items}, dim={self.dim}, num_layers={self.num_layers}"


@register_with_arguments
class NGCFLayer(Module):
    """(E (N, in_dim), L) -> LeakyReLU((L + I) E W1 + (L E * E) W2 + b) (N, out_dim).
    W1, W2 Glorot-uniform, b zero."""

    def __init__(self, in_dim: int, out_dim: int, negative_slope: float = 0.2, name: str | None = None):
        super().__init__(name=name)
        self.in_dim = positive_int(in_dim, "NGCFLayer: in_dim")
        self.out_dim = positive_int(out_dim, "NGCFLayer: out_dim")
        self.negative_slope = float(negative_slope)
        dtype = backend.get_default_dtype()
        self.add_parameter("w1", initializers.xavier_uniform((in_dim, out_dim), dtype=dtype))
        self.add_parameter("w2", initializers.xavier_uniform((in_dim, out_dim), dtype=dtype))
        self.add_parameter("bias", initializers.zeros((out_dim,), dtype=dtype))
        self.built = True

    def forward(self, embeddings, graph) -> Tensor:
        shape = tuple(getattr(embeddings, "shape", ()))
        if len(shape) != 2 or shape[1] != self.in_dim:
            raise ShapeError(f"{self._label()}: expected embeddings (N, {self.in_dim}), got shape {shape}")
        _check_graph(graph, shape[0], self._label())
        return ngcf_propagate(embeddings, graph, self.w1, self.w2, self.bias, self.negative_slope)

    def extra_repr(self) -> str:
        return f"{self.in_dim} -> {self.out_dim}, negative_slope={self.negative_slope}"


@register_with_arguments
class NGCF(GraphRecommender):
    """NGCF (module docstring): (users (B,), items (B,), graph) -> scores (B,), a node being
    the concatenation of its layers 0..K (width dim + sum(layer_sizes))."""

    def __init__(self, n_users: int, n_items: int, dim: int = 64, layer_sizes=(64, 64, 64),
                 negative_slope: float = 0.2, init_std: float = 0.1, name: str | None = None):
        super().__init__(name=name)
        self._init_tables(n_users, n_items, dim, init_std)
        widths = [dim, *(positive_int(w, "NGCF: layer size") for w in layer_sizes)]
        self.layers = ModuleList([NGCFLayer(a, b, negative_slope) for a, b in zip(widths[:-1], widths[1:])])
        self.built = True

    def propagate(self, graph: SparseTensor) -> Tensor:
        layer = self.layer0()
        outputs = [layer]
        for block in self.layers:
            layer = block(layer, graph)
            outputs.append(layer)
        return F.concat(outputs, axis=-1)

    def extra_repr(self) -> str:
        return f"{self.n_users}, {self.n_items}, dim={self.dim}, layers={len(self.layers)}"


def _negatives(users: np.ndarray, known: np.ndarray, n_items: int, rng) -> np.ndarray:
    """One item per user drawn uniformly among the items the user has not interacted with
    (``known``: the sorted codes user * n_items + item of the interactions)."""
    negatives = rng.integers(0, n_items, users.shape[0])
    for _ in range(100):
        clash = np.isin(users * n_items + negatives, known)
        if not clash.any():
            break
        negatives[clash] = rng.integers(0, n_items, int(clash.sum()))
    return negatives


def fit_bpr(model: GraphRecommender, users, items, steps: int = 200, batch_size: int = 256, lr: float = 0.01,
            l2: float = 1e-4, seed=None) -> list[float]:
    """Train ``model`` with Adam on BPR (:meth:`GraphRecommender.bpr_loss`) over the training
    interactions (users[e], items[e]): each step draws ``batch_size`` interactions and one
    unseen item per user. Returns the loss of every step."""
    from lamina.optim import Adam  # the optimisers do not sit below lamina.models

    positive_int(steps, "fit_bpr: steps")
    positive_int(batch_size, "fit_bpr: batch_size")
    users, items = _unique_pairs(users, items, model.n_users, model.n_items, "fit_bpr")
    if users.size == 0:
        raise ValueError("fit_bpr: no training interactions")
    graph = normalized_adjacency(users, items, model.n_users, model.n_items, dtype=model.user_embedding.dtype)
    known = users * model.n_items + items
    rng = np.random.default_rng(seed)
    optimizer = Adam(model.parameters(), lr=lr)
    losses = []
    model.train()
    for _ in range(steps):
        batch = rng.integers(0, users.size, batch_size)
        negatives = _negatives(users[batch], known, model.n_items, rng)
        optimizer.zero_grad()
        loss = model.bpr_loss(users[batch], items[batch], negatives, graph, l2)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.item()))
    model.eval()
    return losses


def _pair_mask(pairs, shape: tuple[int, int], what: str) -> np.ndarray:
    users, items = (np.asarray(a, dtype=np.int64).reshape(-1) for a in pairs)
    if users.shape != items.shape:
        raise ShapeError(f"full_ranking_metrics: {what} users and items must pair up, got {users.shape[0]} users "
                         f"and {items.shape[0]} items")
    if users.size and (users.min() < 0 or users.max() >= shape[0] or items.min() < 0 or items.max() >= shape[1]):
        raise ValueError(f"full_ranking_metrics: a {what} pair lies outside the scores' shape {shape}")
    mask = np.zeros(shape, dtype=bool)
    mask[users, items] = True
    return mask


def full_ranking_metrics(scores, train, test, k: int = 20) -> dict[str, float]:
    """Recall@k and NDCG@k of ranking every item for each user, the user's training items left
    out: ``scores`` (n_users, n_items) (e.g. :meth:`GraphRecommender.score_all`), ``train`` and
    ``test`` (users, items) pairs of arrays. Averaged over the users with a test item
    (:func:`lamina.train.recall_at_k`, :func:`lamina.train.ndcg_at_k`)."""
    from lamina.train.ranking_metrics import ndcg_at_k, recall_at_k  # lamina.train sits above the models

    scores = np.asarray(backend.to_numpy(getattr(scores, "data", scores)))
    if scores.ndim != 2:
        raise ShapeError(f"full_ranking_metrics: scores must be (n_users, n_items), got shape {scores.shape}")
    exclude = _pair_mask(train, scores.shape, "train")
    relevant = _pair_mask(test, scores.shape, "test")
    return {"recall": recall_at_k(scores, relevant, k, exclude=exclude),
            "ndcg": ndcg_at_k(scores, relevant, k, exclude=exclude)}
