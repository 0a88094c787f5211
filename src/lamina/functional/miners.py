"""Miners: which pairs and triplets of a labelled batch a loss should see
(pytorch-metric-learning's ``TripletMarginMiner`` and ``PairMarginMiner``).

A miner reads the embeddings' values only (no gradient flows through it) and returns index
arrays; index the embeddings with them and hand the rows to a loss, e.g.::

    a, p, n = mine_triplets(x, labels, "semihard", margin=0.2)
    loss = F.triplet_margin_loss(x[a], x[p], x[n], margin=0.2)

Two rows are a positive pair when they share a label (never a row with itself) and a
negative pair otherwise. Distances: ``'euclidean'`` ||u - v||_2, ``'squared_euclidean'``,
or ``'cosine'`` 1 - cos(u, v).
"""

from __future__ import annotations

import numbers

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError

__all__ = ["DISTANCES", "TRIPLET_TYPES", "distance_matrix", "mine_pairs", "mine_triplets"]

DISTANCES = ("euclidean", "squared_euclidean", "cosine")
TRIPLET_TYPES = ("all", "hard", "semihard", "easy")


def _labels(labels, n: int, fn: str) -> np.ndarray:
    """``labels`` as a NumPy array of ``n`` integers, one per embedding."""
    y = np.asarray(backend.to_numpy(labels.data if isinstance(labels, Tensor) else labels))
    if y.shape != (n,):
        raise ShapeError(f"{fn}: labels must have shape ({n},), one per embedding, got shape {y.shape}")
    if y.dtype.kind not in "iu":
        raise ValueError(f"{fn}: labels must be integers, got dtype {y.dtype}")
    return y


def _values(embeddings, labels, fn: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(backend.to_numpy(embeddings.data if isinstance(embeddings, Tensor) else embeddings),
                   dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ShapeError(f"{fn}: embeddings must have shape (N, D) with N >= 1, got shape {x.shape}")
    y = _labels(labels, x.shape[0], fn)
    return x, y


def distance_matrix(embeddings, distance: str = "euclidean") -> np.ndarray:
    """The (N, N) matrix of ``distance`` between the rows of ``embeddings`` (float64, no graph)."""
    x = np.asarray(backend.to_numpy(embeddings.data if isinstance(embeddings, Tensor) else embeddings),
                   dtype=np.float64)
    if distance == "cosine":
        norms = np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        u = x / norms
        return 1.0 - u @ u.T
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
    sq = np.maximum(((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=-1), 0.0)
    return sq if distance == "squared_euclidean" else np.sqrt(sq)


def _margin(value, name: str, fn: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise ValueError(f"{fn}: {name} must be a finite number, got {value!r}")
    return float(value)


def mine_triplets(embeddings, labels, type: str = "all", margin: float = 0.2,  # noqa: A002
                  distance: str = "euclidean") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The triplets (a, p, n) of the batch, as three index arrays, whose gap
    g = D_an - D_ap (how much farther the negative is) passes the test of ``type``:

    - ``'all'``: g <= margin (every triplet violating the margin);
    - ``'hard'``: g <= 0 (the negative nearer than the positive);
    - ``'semihard'``: 0 < g <= margin (right order, inside the margin);
    - ``'easy'``: g > margin.

    Sorted by (a, p, n). As pytorch-metric-learning's ``TripletMarginMiner``.
    """
    fn = "mine_triplets"
    if type not in TRIPLET_TYPES:
        raise ValueError(f"{fn}: type must be one of {TRIPLET_TYPES}, got {type!r}")
    if distance not in DISTANCES:
        raise ValueError(f"{fn}: distance must be one of {DISTANCES}, got {distance!r}")
    margin = _margin(margin, "margin", fn)
    if margin < 0:
        raise ValueError(f"{fn}: margin must be >= 0, got {margin!r}")
    x, y = _values(embeddings, labels, fn)
    d = distance_matrix(x, distance)
    found = []
    for a in range(len(y)):                                   # one anchor at a time: memory O(N^2)
        positives = np.flatnonzero((y == y[a]) & (np.arange(len(y)) != a))
        negatives = np.flatnonzero(y != y[a])
        gap = d[a, negatives][None, :] - d[a, positives][:, None]      # (p, n): D_an - D_ap
        keep = {"all": lambda g: g <= margin, "hard": lambda g: g <= 0,
                "semihard": lambda g: (g > 0) & (g <= margin), "easy": lambda g: g > margin}[type](gap)
        p, n = np.nonzero(keep)
        found.append((np.full(len(p), a), positives[p], negatives[n]))
    return tuple(np.concatenate([part[k] for part in found]).astype(np.int64) for k in range(3))


def mine_pairs(embeddings, labels, pos_margin: float = 0.2, neg_margin: float = 0.8,
               distance: str = "euclidean") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The hard pairs of the batch: positive pairs farther apart than ``pos_margin`` and
    negative pairs nearer than ``neg_margin``, as ``(a1, p, a2, n)`` index arrays (ordered
    pairs: (i, j) and (j, i) both appear). As pytorch-metric-learning's ``PairMarginMiner``."""
    fn = "mine_pairs"
    if distance not in DISTANCES:
        raise ValueError(f"{fn}: distance must be one of {DISTANCES}, got {distance!r}")
    pos_margin, neg_margin = _margin(pos_margin, "pos_margin", fn), _margin(neg_margin, "neg_margin", fn)
    x, y = _values(embeddings, labels, fn)
    d = distance_matrix(x, distance)
    same = y[:, None] == y[None, :]
    a1, p = np.nonzero(same & ~np.eye(len(y), dtype=bool) & (d > pos_margin))
    a2, n = np.nonzero(~same & (d < neg_margin))
    return a1, p, a2, n
