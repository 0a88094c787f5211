"""k-means++ seeding and Lloyd's iterations, the starting point of the mixture and HMM fits."""

from __future__ import annotations

import numpy


def kmeans_plus_plus(x: numpy.ndarray, k: int, rng: numpy.random.Generator) -> numpy.ndarray:
    """k-means++ seeds (Arthur & Vassilvitskii 2007): the first centre is a random row, each
    next one a row drawn with probability proportional to its squared distance to the nearest
    centre chosen so far. Returns (k, D)."""
    centres = [x[rng.integers(len(x))]]
    nearest = ((x - centres[0]) ** 2).sum(axis=1)
    for _ in range(1, k):
        total = nearest.sum()
        index = rng.choice(len(x), p=nearest / total) if total > 0 else rng.integers(len(x))
        centres.append(x[index])
        nearest = numpy.minimum(nearest, ((x - x[index]) ** 2).sum(axis=1))
    return numpy.array(centres, dtype=numpy.float64)


def kmeans_labels(x: numpy.ndarray, k: int, rng: numpy.random.Generator, max_iter: int = 100) -> numpy.ndarray:
    """Cluster labels (n,) of Lloyd's algorithm started from k-means++ seeds; a cluster that
    empties keeps its centre."""
    centres = kmeans_plus_plus(x, k, rng)
    labels = None
    for _ in range(max_iter):
        distances = ((x[:, None, :] - centres[None]) ** 2).sum(axis=2)
        new_labels = distances.argmin(axis=1)
        if labels is not None and (new_labels == labels).all():
            break
        labels = new_labels
        for j in range(k):
            members = x[labels == j]
            if len(members):
                centres[j] = members.mean(axis=0)
    return labels
