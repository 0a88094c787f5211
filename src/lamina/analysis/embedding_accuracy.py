"""How well embeddings separate classes (pytorch-metric-learning's ``AccuracyCalculator``;
Musgrave et al. 2020, "A Metric Learning Reality Check").

For each query, R is the number of reference embeddings sharing its label (the query itself
left out when the queries are the references). With the references sorted by distance to
the query (:class:`~lamina.analysis.retrieval.FeatureIndex`) and rel_i = 1 when the i-th
shares the query's label:

- precision@1: rel_1;
- R-precision: (1/R) sum_(i <= R) rel_i;
- MAP@R: (1/R) sum_(i <= R) P@i rel_i, P@i the precision of the first i (a mean average
  precision that, unlike R-precision, rewards putting the relevant ones first);

each averaged over the queries with R >= 1. NMI and AMI compare the labels with k-means
clusters of the query embeddings (k = the number of classes; scikit-learn's scores of
:func:`kmeans` clusters).
"""

from __future__ import annotations

import numpy as np

from lamina.analysis.retrieval import FeatureIndex, _matrix, _relevance
from lamina.errors import ShapeError

__all__ = ["METRICS", "cluster_scores", "embedding_accuracy", "kmeans", "mean_average_precision_at_r", "r_precision"]

METRICS = ("precision_at_1", "r_precision", "mean_average_precision_at_r", "nmi", "ami")


def _ranked(query_labels, retrieved_labels, num_relevant, where: str) -> tuple[np.ndarray, np.ndarray]:
    """The relevance (Q, k) of each query's ranking and its R (Q,), the queries with R = 0 dropped."""
    relevant = _relevance(query_labels, retrieved_labels, where)
    r = np.broadcast_to(np.asarray(num_relevant), relevant.shape[:1])
    if r.dtype.kind not in "iu" or (r < 0).any():
        raise ValueError(f"{where}: num_relevant must be integers >= 0, got {np.asarray(num_relevant)!r}")
    if r.max(initial=0) > relevant.shape[1]:
        raise ShapeError(f"{where}: a query has R = {int(r.max())} relevant items but only {relevant.shape[1]} "
                         f"were retrieved; retrieve at least max R")
    keep = r > 0
    if not keep.any():
        raise ValueError(f"{where}: no query has a relevant item (every R is 0)")
    return relevant[keep], r[keep]


def r_precision(query_labels, retrieved_labels, num_relevant) -> float:
    """R-precision: the fraction of each query's first R retrieved items that share its label,
    averaged over the queries with R >= 1. ``retrieved_labels`` (Q, k) sorted nearest first,
    k >= max R; ``num_relevant`` R per query (or one for all)."""
    relevant, r = _ranked(query_labels, retrieved_labels, num_relevant, "r_precision")
    within = np.arange(relevant.shape[1])[None, :] < r[:, None]
    return float(np.mean((relevant & within).sum(axis=1) / r))


def mean_average_precision_at_r(query_labels, retrieved_labels, num_relevant) -> float:
    """MAP@R: the mean over the queries with R >= 1 of (1/R) sum_(i <= R) P@i rel_i, the sum
    over each query's first R retrieved items (arguments as :func:`r_precision`)."""
    relevant, r = _ranked(query_labels, retrieved_labels, num_relevant, "mean_average_precision_at_r")
    within = np.arange(relevant.shape[1])[None, :] < r[:, None]
    hits = relevant & within
    precision = np.cumsum(hits, axis=1) / np.arange(1, relevant.shape[1] + 1)
    return float(np.mean((precision * hits).sum(axis=1) / r))


def kmeans(x, k: int, n_init: int = 10, max_iter: int = 100, seed: int = 0) -> np.ndarray:
    """Cluster indices (N,) of the rows of ``x`` by Lloyd's k-means, seeded by k-means++
    (Arthur and Vassilvitskii 2007); the best of ``n_init`` runs by the sum of squared
    distances to the centres."""
    x = np.asarray(x, dtype=np.float64)
    rng = np.random.default_rng(seed)
    best, best_inertia = None, np.inf
    for _ in range(n_init):
        centres = x[[rng.integers(len(x))]]
        for _ in range(1, k):
            nearest = ((x[:, None, :] - centres[None]) ** 2).sum(-1).min(axis=1)
            total = nearest.sum()
            pick = rng.choice(len(x), p=nearest / total) if total > 0 else rng.integers(len(x))
            centres = np.vstack([centres, x[pick]])
        assignment = None
        for _ in range(max_iter):
            distances = ((x[:, None, :] - centres[None]) ** 2).sum(-1)
            new_assignment = distances.argmin(axis=1)
            if assignment is not None and (new_assignment == assignment).all():
                break
            assignment = new_assignment
            for j in range(k):                       # an emptied cluster keeps its centre
                members = x[assignment == j]
                if len(members):
                    centres[j] = members.mean(axis=0)
        inertia = ((x - centres[assignment]) ** 2).sum()
        if inertia < best_inertia:
            best, best_inertia = assignment, inertia
    return best


def cluster_scores(embeddings, labels, n_clusters: int | None = None, seed: int = 0) -> tuple[float, float]:
    """(NMI, AMI) of :func:`kmeans` clusters of ``embeddings`` (N, D) against ``labels``; k
    defaults to the number of distinct labels. scikit-learn's arithmetic-mean NMI and AMI."""
    from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

    x = _matrix(embeddings, "cluster_scores")
    y = np.asarray(labels)
    if y.shape != (len(x),):
        raise ShapeError(f"cluster_scores: labels must have shape ({len(x)},), one per embedding, got {y.shape}")
    k = len(np.unique(y)) if n_clusters is None else int(n_clusters)
    if not 1 <= k <= len(x):
        raise ValueError(f"cluster_scores: n_clusters must be in [1, {len(x)}], got {k}")
    clusters = kmeans(x, k, seed=seed)
    return float(normalized_mutual_info_score(y, clusters)), float(adjusted_mutual_info_score(y, clusters))


def embedding_accuracy(query, query_labels, reference=None, reference_labels=None, metric: str = "euclidean",
                       include: tuple[str, ...] = METRICS, seed: int = 0) -> dict[str, float]:
    """The scores of ``include`` (see :data:`METRICS`) for ``query`` embeddings (Q, D) with
    ``query_labels``, retrieved among ``reference`` (M, D) with ``reference_labels``; without
    a reference the queries are searched among themselves, each leaving itself out.
    ``metric``: 'euclidean' or 'cosine' (:class:`FeatureIndex`); the clusters (NMI, AMI) are
    of the query embeddings."""
    unknown = [name for name in include if name not in METRICS]
    if unknown:
        raise ValueError(f"embedding_accuracy: unknown metrics {unknown}; choose from {METRICS}")
    q = _matrix(query, "embedding_accuracy")
    q_labels = np.asarray(query_labels)
    if q_labels.shape != (len(q),):
        raise ShapeError(f"embedding_accuracy: query_labels must have shape ({len(q)},), got {q_labels.shape}")
    same_set = reference is None
    if same_set != (reference_labels is None):
        raise ValueError("embedding_accuracy: give reference and reference_labels together, or neither")
    ref = q if same_set else _matrix(reference, "embedding_accuracy")
    ref_labels = q_labels if same_set else np.asarray(reference_labels)
    if ref_labels.shape != (len(ref),):
        raise ShapeError(f"embedding_accuracy: reference_labels must have shape ({len(ref)},), got {ref_labels.shape}")
    scores: dict[str, float] = {}
    ranking = [name for name in include if name in METRICS[:3]]
    if ranking:
        values, counts = np.unique(ref_labels, return_counts=True)
        found = np.searchsorted(values, q_labels).clip(0, len(values) - 1)
        r = np.where(values[found] == q_labels, counts[found], 0) - int(same_set)
        k = int(min(max(r.max(), 1), len(ref) - int(same_set)))
        indices, _ = FeatureIndex(ref).query(q, k=k, metric=metric, exclude_self=same_set)
        retrieved = ref_labels[indices]
        every = {"precision_at_1": lambda: float(np.mean((retrieved[:, 0] == q_labels)[r > 0])),
                 "r_precision": lambda: r_precision(q_labels, retrieved, r),
                 "mean_average_precision_at_r": lambda: mean_average_precision_at_r(q_labels, retrieved, r)}
        scores.update((name, every[name]()) for name in ranking)
    if "nmi" in include or "ami" in include:
        nmi, ami = cluster_scores(q, q_labels, seed=seed)
        scores.update((name, value) for name, value in (("nmi", nmi), ("ami", ami)) if name in include)
    return scores
