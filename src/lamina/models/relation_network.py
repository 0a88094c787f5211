"""Relation networks (Sung, Yang, Zhang, Xiang, Torr and Hospedales 2018, "Learning to compare"):
few-shot classification by a learned comparison.

An embedding module f_phi maps every sample to a feature map (or vector), channels last. For
K-shot the features of a class's K support samples are summed into one class feature, and
each query's feature is paired with each class's by concatenation along the channels
(:func:`relation_pairs`); the relation module g_phi maps a pair to one relation score,

    r_{k,j} = sigmoid(g_phi(C(sum_{i: y_i = k} f_phi(x_i), f_phi(x_j)))),   in [0, 1],

for class k and query j (the sigmoid is the paper's last layer: ``relation_module`` gives
the value before it, one per pair). The objective is the paper's mean squared error against
the one-hot match, sum_{k,j} (r_{k,j} - 1[y_j == k])^2, here averaged over the pairs, or,
with ``objective='cross_entropy'``, the cross-entropy of the softmax over classes of the
values before the sigmoid.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.matching_network import episode_labels, episode_sample_inputs
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.module import Module, as_tensor

__all__ = ["RELATION_OBJECTIVES", "RelationNetwork", "class_feature_sums", "relation_pairs"]

RELATION_OBJECTIVES = ("mse", "cross_entropy")


def class_feature_sums(features, labels) -> Tensor:
    """(n, ...): row k the sum of the features (N, ...) of the samples labelled k (classes
    0 .. n-1, each present)."""
    features = as_tensor(features)
    labels = episode_labels(labels, features.shape[0], "class_feature_sums")
    n = int(labels.max()) + 1
    members = (labels[None, :] == np.arange(n)[:, None]).astype(features.dtype)
    flat = F.reshape(features, (features.shape[0], -1))
    return F.reshape(Tensor._wrap(backend.xp.asarray(members)) @ flat, (n, *features.shape[1:]))


def relation_pairs(class_features, query_features) -> Tensor:
    """(Q n, ..., 2C): pair q n + k is the concatenation [class k's features, query q's] along
    the last (channel) axis, for class features (n, ..., C) and query features (Q, ..., C)."""
    class_features, query_features = as_tensor(class_features), as_tensor(query_features)
    if class_features.shape[1:] != query_features.shape[1:] or class_features.ndim < 2:
        raise ShapeError(f"relation_pairs: class features {class_features.shape} and query features "
                         f"{query_features.shape} must be (n, ..., C) and (Q, ..., C) with the same trailing shape")
    n, q, rest = class_features.shape[0], query_features.shape[0], class_features.shape[1:]
    classes = F.broadcast_to(class_features.expand_dims(0), (q, n, *rest))
    queries = F.broadcast_to(query_features.expand_dims(1), (q, n, *rest))
    pairs = F.concat([classes, queries], axis=-1)
    return F.reshape(pairs, (q * n, *rest[:-1], 2 * rest[-1]))


@register_with_arguments(modules=("embedding", "relation_module"))
class RelationNetwork(Module):
    """Relation network (module notes): ``model(support_x, support_y, query_x)`` gives the
    relation scores (Q, n) in [0, 1] of each query sample with each of the episode's n
    classes (support labels 0 .. n-1); :meth:`relation_logits` the values before the
    sigmoid. ``embedding`` maps samples to features (batch, ..., C); ``relation_module`` maps
    pairs (pairs, ..., 2C) to one value per pair ((pairs, 1) or (pairs,)). ``objective``:
    'mse' (the paper) or 'cross_entropy', used by :meth:`loss`."""

    default_name = "relation_network"

    def __init__(self, embedding, relation_module, objective: str = "mse", name: str | None = None):
        super().__init__(name=name)
        for what, module in (("embedding", embedding), ("relation_module", relation_module)):
            if not isinstance(module, Module):
                raise TypeError(f"RelationNetwork: {what} must be a Module, got {type(module).__name__}")
        if objective not in RELATION_OBJECTIVES:
            raise ValueError(f"RelationNetwork: objective must be one of {RELATION_OBJECTIVES}, got {objective!r}")
        self.embedding = embedding
        self.relation_module = relation_module
        self.objective = objective

    def relation_logits(self, support_x, support_y, query_x) -> Tensor:
        """g_phi of every (class, query) pair, (Q, n), before the sigmoid."""
        support_x, query_x = as_tensor(support_x), as_tensor(query_x)
        labels = episode_labels(support_y, support_x.shape[0], self._label())
        if support_x.shape[1:] != query_x.shape[1:]:
            raise ShapeError(f"{self._label()}: support samples {support_x.shape} and query samples "
                             f"{query_x.shape} must have the same shape after the batch axis")
        count = support_x.shape[0]
        features = self.embedding(F.concat([support_x, query_x], axis=0))
        classes = class_feature_sums(features[:count], labels)
        queries = features[count:]
        values = self.relation_module(relation_pairs(classes, queries))
        q, n = queries.shape[0], classes.shape[0]
        if values.size != q * n or (values.ndim == 2 and values.shape[1] != 1) or values.ndim > 2:
            raise ShapeError(f"{self._label()}: the relation module must give one value per pair, shape ({q * n}, 1) "
                             f"or ({q * n},) for {q} queries x {n} classes; got shape {values.shape}")
        return F.reshape(values, (q, n))

    def build_sample_inputs(self, shapes: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A one-sample episode of the saved shapes (:func:`~lamina.models.matching_network.episode_sample_inputs`)."""
        return episode_sample_inputs(shapes, self._label())

    def forward(self, support_x, support_y, query_x) -> Tensor:
        return F.sigmoid(self.relation_logits(support_x, support_y, query_x))

    def loss(self, support_x, support_y, query_x, query_y, reduction: str = "mean") -> Tensor:
        """The ``objective`` on the episode's queries: mean (r - one-hot)^2 over classes and
        queries ('mse'; reduction 'none' gives one value per query, the mean over classes),
        or the cross-entropy of the logits."""
        logits = self.relation_logits(support_x, support_y, query_x)
        q, n = logits.shape
        query_y = np.asarray(backend.to_numpy(query_y.data if isinstance(query_y, Tensor) else query_y))
        if query_y.shape != (q,) or query_y.dtype.kind not in "iu":
            raise ShapeError(f"{self._label()}.loss: query labels must be one integer class per query sample, "
                             f"shape ({q},); got shape {query_y.shape} and dtype {query_y.dtype}")
        if query_y.size and (query_y.min() < 0 or query_y.max() >= n):
            raise ValueError(f"{self._label()}.loss: query labels must be in 0 .. {n - 1} (the support set's "
                             f"classes); got {sorted(set(query_y.tolist()))}")
        query_y = query_y.astype(np.int64)
        if self.objective == "cross_entropy":
            return F.categorical_cross_entropy(logits, query_y, from_logits=True, reduction=reduction)
        targets = (query_y[:, None] == np.arange(n)[None, :]).astype(logits.dtype)
        per_query = F.mean((F.sigmoid(logits) - targets) ** 2, axis=1)
        if reduction == "none":
            return per_query
        if reduction not in ("mean", "sum"):
            raise ValueError(f"{self._label()}.loss: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        return F.mean(per_query) if reduction == "mean" else F.sum(per_query)

    def extra_repr(self) -> str:
        return f"objective={self.objective!r}"
