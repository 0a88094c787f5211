"""Splitting one dataset across simulated clients for federated learning.

Each function returns a list of index arrays, one per client, that together hold every
sample index exactly once:

- :func:`iid_partition`: a seeded permutation cut into near-equal parts.
- :func:`dirichlet_partition`: label skew (Hsu, Qi and Brown 2019). For every class c,
  proportions ``p_c ~ Dirichlet(alpha * 1_clients)`` share its samples among the clients;
  small ``alpha`` gives each client few classes, large ``alpha`` approaches IID.
- :func:`shard_partition`: McMahan et al. (2017)'s pathological non-IID split; samples sorted
  by label, cut into ``clients * shards_per_client`` shards, each client gets
  ``shards_per_client`` of them at random.
- :func:`quantity_skew_partition`: IID labels but client sizes from ``Dirichlet(alpha)``
  proportions (quantity skew of Li et al. 2022, NIID-Bench).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from lamina.data.split import _apportion

__all__ = ["dirichlet_partition", "iid_partition", "quantity_skew_partition", "shard_partition"]

_MAX_ATTEMPTS = 100


def _count(value: Any, name: str, who: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{who}: {name} must be an integer >= {low}; got {value!r}")
    return int(value)


def _concentration(alpha: Any, who: str) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not math.isfinite(alpha) or alpha <= 0:
        raise ValueError(f"{who}: alpha must be a finite number > 0; got {alpha!r}")
    return float(alpha)


def _labels(labels: Any, who: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"{who}: labels must be a non-empty 1-d array of class labels; got shape {labels.shape}")
    return labels


def _check_enough(n: int, clients: int, min_size: int, who: str) -> None:
    if clients * min_size > n:
        raise ValueError(f"{who}: {clients} clients with at least {min_size} samples each need "
                         f"{clients * min_size} samples; got {n}")


def iid_partition(n: int, clients: int, seed: int | None = 0) -> list[np.ndarray]:
    """Indices ``0..n-1`` shuffled by a generator seeded with ``seed`` and cut into ``clients``
    parts whose sizes differ by at most one."""
    who = "iid_partition"
    n = _count(n, "n", who)
    clients = _count(clients, "clients", who)
    _check_enough(n, clients, 1, who)
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, clients)]


def dirichlet_partition(labels: Any, clients: int, alpha: float, seed: int | None = 0,
                        min_size: int = 10) -> list[np.ndarray]:
    """Label-skewed split: the samples of each class c go to the clients in proportions
    ``p_c ~ Dirichlet(alpha, ..., alpha)`` (cut points ``floor(cumsum(p_c) * n_c)``).

    The draw is repeated (up to 100 times) until every client holds at least ``min_size``
    samples, as Flower's ``DirichletPartitioner`` does (its ``min_partition_size``, default 10).
    Unlike Flower this has no ``self_balancing`` option, returns each client's indices
    sorted, and draws with NumPy's ``default_rng(seed)``, so the same seed does not give
    Flower's partition."""
    who = "dirichlet_partition"
    labels = _labels(labels, who)
    clients = _count(clients, "clients", who)
    alpha = _concentration(alpha, who)
    min_size = _count(min_size, "min_size", who, low=0)
    _check_enough(len(labels), clients, max(min_size, 1), who)
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    for _ in range(_MAX_ATTEMPTS):
        parts: list[list[np.ndarray]] = [[] for _ in range(clients)]
        for members in by_class:
            members = rng.permutation(members)
            cuts = (np.cumsum(rng.dirichlet(np.full(clients, alpha)))[:-1] * len(members)).astype(np.int64)
            for client, piece in enumerate(np.split(members, cuts)):
                parts[client].append(piece)
        result = [np.sort(np.concatenate(pieces)) for pieces in parts]
        if min(len(part) for part in result) >= max(min_size, 1):
            return result
    raise ValueError(f"{who}: no draw in {_MAX_ATTEMPTS} gave every one of {clients} clients at least "
                     f"{max(min_size, 1)} samples (alpha={alpha}, {len(labels)} samples); raise alpha, "
                     "lower min_size or use fewer clients")


def shard_partition(labels: Any, clients: int, shards_per_client: int = 2, seed: int | None = 0) -> list[np.ndarray]:
    """McMahan et al.'s pathological non-IID split: ``clients * shards_per_client`` shards of
    samples sorted by label, ``shards_per_client`` random shards per client.

    Unlike the original (which cuts the sorted list into equal shards, so a shard may span
    two labels), every shard here holds a single label: the shards are shared among the
    classes in proportion to their sizes (at least one each, largest remainders), and each
    class is cut into its shards of near-equal size. So a client sees at most
    ``shards_per_client`` labels. Needs at least as many shards as classes."""
    who = "shard_partition"
    labels = _labels(labels, who)
    clients = _count(clients, "clients", who)
    shards_per_client = _count(shards_per_client, "shards_per_client", who)
    shards = clients * shards_per_client
    classes, sizes = np.unique(labels, return_counts=True)
    if shards < len(classes):
        raise ValueError(f"{who}: {clients} clients x {shards_per_client} shards = {shards} shards cannot hold "
                         f"{len(classes)} classes with one label per shard; use more clients or shards")
    if shards > len(labels):
        raise ValueError(f"{who}: {shards} shards need at least {shards} samples; got {len(labels)}")
    per_class = 1 + _apportion(shards - len(classes), sizes.astype(np.float64), sizes - 1)
    rng = np.random.default_rng(seed)
    pieces = []
    for c, count in zip(classes, per_class, strict=True):
        pieces.extend(np.array_split(rng.permutation(np.flatnonzero(labels == c)), int(count)))
    order = rng.permutation(shards)
    return [np.sort(np.concatenate([pieces[s] for s in order[k::clients]])) for k in range(clients)]


def quantity_skew_partition(n: int, clients: int, alpha: float, seed: int | None = 0,
                            min_size: int = 1) -> list[np.ndarray]:
    """Random (IID-labelled) parts of sizes ``floor(q * n)`` for ``q ~ Dirichlet(alpha, ...)``
    (the last part takes the rounding remainder), redrawn until each has ``min_size``."""
    who = "quantity_skew_partition"
    n = _count(n, "n", who)
    clients = _count(clients, "clients", who)
    alpha = _concentration(alpha, who)
    min_size = _count(min_size, "min_size", who)
    _check_enough(n, clients, min_size, who)
    rng = np.random.default_rng(seed)
    for _ in range(_MAX_ATTEMPTS):
        cuts = (np.cumsum(rng.dirichlet(np.full(clients, alpha)))[:-1] * n).astype(np.int64)
        if np.diff(np.concatenate([[0], cuts, [n]])).min() >= min_size:
            return [np.sort(part) for part in np.split(rng.permutation(n), cuts)]
    raise ValueError(f"{who}: no draw in {_MAX_ATTEMPTS} gave every one of {clients} clients at least "
                     f"{min_size} samples (alpha={alpha}, n={n}); raise alpha or lower min_size")
