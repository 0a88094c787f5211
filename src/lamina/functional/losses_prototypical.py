"""Prototypical networks (Snell, Swersky and Zemel 2017): few-shot classification by distance.

An embedding network f maps every sample to a vector. A class's *prototype* is the mean
embedding of its support samples,

    c_k = (1 / |S_k|) sum_{x in S_k} f(x),

and a query is scored by its negative squared Euclidean distance to each prototype,
logit_k(q) = -||f(q) - c_k||^2; the loss is the cross-entropy of the softmax of these logits
with the query's class. The network is trained episode by episode (N-way K-shot tasks, see
:class:`lamina.data.FewShotTasks`), and a new class needs only its support samples.

Built from differentiable primitives, so gradients of any order flow to both embeddings.
"""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.loss import categorical_cross_entropy

__all__ = ["class_prototypes", "prototypical_logits", "prototypical_loss"]


def _embeddings(x, name: str, fn: str) -> Tensor:
    x = x if isinstance(x, Tensor) else Tensor(x)
    if x.ndim != 2:
        raise ShapeError(f"{fn}: {name} must be embeddings of shape (N, D), got shape {x.shape}")
    return x


def _labels(labels, count: int, name: str, fn: str):
    labels = backend.xp.asarray(labels.data if isinstance(labels, Tensor) else labels)
    if labels.shape != (count,) or (count and labels.dtype.kind not in "iu"):
        raise ShapeError(f"{fn}: {name} must hold one integer class per embedding, shape ({count},); got shape "
                         f"{labels.shape} and dtype {labels.dtype}")
    if count and int(labels.min()) < 0:
        raise ValueError(f"{fn}: {name} must be class indices 0, 1, ...; got {int(labels.min())}")
    return labels


def class_prototypes(embeddings, labels, n_classes: int | None = None) -> Tensor:
    """(n_classes, D): row k the mean of the embeddings (N, D) labelled k. Every class
    0 .. n_classes-1 (default: the largest label + 1) needs at least one embedding."""
    fn = "class_prototypes"
    e = _embeddings(embeddings, "embeddings", fn)
    labels = _labels(labels, e.shape[0], "labels", fn)
    xp = backend.xp
    n = int(labels.max()) + 1 if n_classes is None else int(n_classes)
    if labels.size and int(labels.max()) >= n:
        raise ValueError(f"{fn}: label {int(labels.max())} is out of range for n_classes={n}")
    members = (labels[None, :] == xp.arange(n)[:, None]).astype(e.dtype)      # (n, N)
    counts = members.sum(axis=1)
    empty = xp.flatnonzero(counts == 0).tolist()
    if empty:
        raise ValueError(f"{fn}: classes {empty} have no support embedding; each of the {n} classes needs one")
    return Tensor._wrap(members / counts[:, None]) @ e


def prototypical_logits(embeddings_support, labels_support, embeddings_query, n_classes: int | None = None) -> Tensor:
    """(Q, n_classes) scores -||q - c_k||^2 of each query embedding against each prototype."""
    fn = "prototypical_logits"
    query = _embeddings(embeddings_query, "embeddings_query", fn)
    prototypes = class_prototypes(embeddings_support, labels_support, n_classes)
    if query.shape[1] != prototypes.shape[1]:
        raise ShapeError(f"{fn}: query embeddings have {query.shape[1]} features but the support ones "
                         f"{prototypes.shape[1]}; expected the same")
    difference = query.expand_dims(1) - prototypes.expand_dims(0)            # (Q, n, D)
    return -(difference * difference).sum(axis=-1)


def prototypical_loss(embeddings_support, labels_support, embeddings_query, labels_query,
                      reduction: str = "mean") -> Tensor:
    """Cross-entropy of softmax(-||f(q) - c_k||^2) against the query labels (Snell et al. 2017).

    Support embeddings (S, D) with labels 0 .. n-1 (every class present) define the prototypes;
    query embeddings (Q, D) with labels in the same range are classified. ``reduction`` 'mean',
    'sum' or 'none' (Q losses).
    """
    fn = "prototypical_loss"
    support = _embeddings(embeddings_support, "embeddings_support", fn)
    support_labels = _labels(labels_support, support.shape[0], "labels_support", fn)
    query = _embeddings(embeddings_query, "embeddings_query", fn)
    query_labels = _labels(labels_query, query.shape[0], "labels_query", fn)
    n = int(support_labels.max()) + 1
    if query_labels.size and int(query_labels.max()) >= n:
        raise ValueError(f"{fn}: query label {int(query_labels.max())} has no prototype; the support labels "
                         f"cover classes 0..{n - 1}")
    logits = prototypical_logits(support, support_labels, query, n)
    return categorical_cross_entropy(logits, query_labels, from_logits=True, reduction=reduction)
