"""Two-tower retrieval (Yi et al. 2019, "Sampling-bias-corrected neural modeling for large
corpus item recommendations"): a user tower and an item tower map ids to vectors u, v of
one size, scored by their dot product s(u, i) = u . v, so that retrieving the best items
of a user is a nearest-neighbour search over precomputed item vectors.

Training uses the other items of the batch as negatives (in-batch sampled softmax). With a
batch of B pairs (u_k, i_k), temperature tau and log q_j the log probability that item i_j
is sampled into a batch, the logits are corrected for the sampling bias (logQ correction):

    s_c(k, j) = u_k . v_j / tau - log q_j,
    J = -(1/B) sum_k log( exp s_c(k, k) / sum_j exp s_c(k, j) ).

Popular items turn up as negatives more often than a full softmax would weigh them; the
correction removes that bias. q_j is proportional to item j's frequency in the training
stream (:func:`item_log_frequencies`; a constant factor such as the batch size cancels).
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn import Dense, Embedding, Sequential
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module, as_tensor

from .id_inputs import checked_ids, checked_pairs

__all__ = ["TwoTower", "in_batch_softmax_loss", "item_log_frequencies"]


def _tower(count: int, embed_dim: int, hidden, dim: int) -> Sequential:
    """Embedding, then ReLU layers of widths ``hidden`` and a linear layer to ``dim`` (none
    of them when ``hidden`` is empty and embed_dim == dim)."""
    layers = [Embedding(count, embed_dim, embeddings_init={"name": "normal", "std": 0.1})]
    layers[0].build(None)
    width = embed_dim
    for units in hidden:
        positive_int(units, "TwoTower: hidden width")
        layers.append(Dense(units, activation="relu"))
        layers[-1].build((None, width))
        width = units
    if hidden or embed_dim != dim:
        layers.append(Dense(dim, kernel_init="xavier_uniform"))
        layers[-1].build((None, width))
    tower = Sequential(*layers)
    tower.built = True
    return tower


@register_layer
class TwoTower(Module):
    """(users (B,), items (B,)) -> scores u . v (B,), u from ``user_tower``, v from ``item_tower``.

    Each tower is an Embedding of size ``embed_dim`` (``dim`` when None), then ReLU layers of
    widths ``hidden`` and a linear layer to ``dim`` (none with no hidden layers and
    embed_dim == dim: the tower is the table of vectors itself)."""

    reads_ids = True

    def __init__(self, n_users: int, n_items: int, dim: int = 32, hidden=(), embed_dim: int | None = None,
                 name: str | None = None):
        super().__init__(name=name)
        embed_dim = dim if embed_dim is None else embed_dim
        for value, what in ((n_users, "n_users"), (n_items, "n_items"), (dim, "dim"), (embed_dim, "embed_dim")):
            positive_int(value, f"TwoTower: {what}")
        self.n_users, self.n_items, self.dim, self.embed_dim = n_users, n_items, dim, embed_dim
        self.hidden = tuple(hidden)
        self.user_tower = _tower(n_users, embed_dim, self.hidden, dim)
        self.item_tower = _tower(n_items, embed_dim, self.hidden, dim)
        self.built = True

    def user_vectors(self, users) -> Tensor:
        return self.user_tower(checked_ids(users, self.n_users, "user", self._label()))

    def item_vectors(self, items) -> Tensor:
        return self.item_tower(checked_ids(items, self.n_items, "item", self._label()))

    def forward(self, users, items) -> Tensor:
        users, items = checked_pairs(users, items, self.n_users, self.n_items, self._label())
        return F.sum(self.user_tower(users) * self.item_tower(items), axis=-1)

    def in_batch_loss(self, users, items, log_q=None, temperature: float = 1.0) -> Tensor:
        """The in-batch sampled softmax loss of the batch of positive pairs (users, items)."""
        users, items = checked_pairs(users, items, self.n_users, self.n_items, self._label())
        return in_batch_softmax_loss(self.user_tower(users), self.item_tower(items), log_q, temperature)

    def score_all(self, users) -> np.ndarray:
        """u . v of every item for each user: (len(users), n_items), NumPy."""
        from lamina.autograd import no_grad

        with no_grad():
            u = backend.to_numpy(self.user_vectors(users).data)
            v = backend.to_numpy(self.item_tower(np.arange(self.n_items)).data)
        return u @ v.T

    def get_config(self) -> dict:
        return {"n_users": self.n_users, "n_items": self.n_items, "dim": self.dim, "hidden": list(self.hidden),
                "embed_dim": self.embed_dim, "name": self.name}


def in_batch_softmax_loss(user_vectors, item_vectors, log_q=None, temperature: float = 1.0) -> Tensor:
    """J = -(1/B) sum_k log softmax_j(u_k . v_j / tau - log q_j)[k] for vectors (B, d) of B
    positive pairs (row k of each); ``log_q`` (B,): log sampling probabilities of the batch's
    items (None: no correction)."""
    users, items = as_tensor(user_vectors), as_tensor(item_vectors)
    if users.ndim != 2 or users.shape != items.shape:
        raise ShapeError(f"in_batch_softmax_loss: expected user and item vectors of one shape (B, d), got "
                         f"{tuple(users.shape)} and {tuple(items.shape)}")
    if not temperature > 0:
        raise ValueError(f"in_batch_softmax_loss: temperature must be > 0, got {temperature!r}")
    logits = F.matmul(users, F.transpose(items)) * (1.0 / temperature)
    if log_q is not None:
        correction = as_tensor(log_q)
        if tuple(correction.shape) != (users.shape[0],):
            raise ShapeError(f"in_batch_softmax_loss: log_q must hold one value per item of the batch, shape "
                             f"({users.shape[0]},), got {tuple(correction.shape)}")
        logits = logits - F.reshape(correction, (1, -1))
    labels = backend.xp.arange(users.shape[0])
    return F.categorical_cross_entropy(logits, labels, from_logits=True)


def item_log_frequencies(items, n_items: int, smoothing: float = 1.0) -> np.ndarray:
    """log q_i = log((count_i + smoothing) / sum_j (count_j + smoothing)) of the items in a
    training stream, (n_items,): index it with a batch's items for ``log_q``."""
    items = checked_ids(items, n_items, "item", "item_log_frequencies")
    counts = np.bincount(backend.to_numpy(items), minlength=n_items) + float(smoothing)
    if not counts.min() > 0:
        raise ValueError(f"item_log_frequencies: smoothing must be > 0 when an item is never seen, got {smoothing!r}")
    return np.log(counts / counts.sum())
