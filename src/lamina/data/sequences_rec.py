"""Item sequences for sequential (next-item) recommendation.

Each user's interactions, read in time order, form a sequence of item ids
s_u = (i_1, ..., i_n) (:func:`user_sequences`). The leave-one-out protocol of GRU4Rec,
SASRec and BERT4Rec (:func:`leave_one_out_sequences`) holds out the last item i_n for
testing (the model reads i_1 .. i_(n-1)) and the second last i_(n-1) for validation (it
reads i_1 .. i_(n-2)); training sees i_1 .. i_(n-2).

Models read fixed-length rows: :func:`pad_sequences` keeps the latest ``max_len`` items of
each sequence and pads on the left with 0, so in those rows item i is written as i + 1 and
0 means "no item". :func:`next_item_examples` pairs each training row with its targets, the
item that follows at every position (0 where there is none):

    inputs  = (i_1, ..., i_(n-1)),   targets = (i_2, ..., i_n)     (both shifted by +1, padded)

:func:`sample_unseen_items` draws negatives a user never interacted with, uniformly or in
proportion to item popularity; :func:`synthetic_markov_sequences` makes data with a
sequential structure to learn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lamina.data.interactions import Interactions
from lamina.errors import ShapeError

__all__ = ["SequenceSplit", "leave_one_out_sequences", "next_item_examples", "pad_sequences",
           "sample_unseen_items", "synthetic_markov_sequences", "user_sequences"]

NEGATIVE_SAMPLERS = ("uniform", "popularity")


def _positive(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{what} must be an int >= 1, got {value!r}")
    return int(value)


def user_sequences(interactions: Interactions) -> list[np.ndarray]:
    """For each user (index u), its items in chronological order (by timestamp, then by row
    on equal timestamps); an empty array for a user without interactions."""
    order = np.lexsort((np.arange(len(interactions)), interactions.timestamps, interactions.users))
    users, items = interactions.users[order], interactions.items[order]
    return np.split(items, np.searchsorted(users, np.arange(1, interactions.n_users)))


@dataclass(frozen=True)
class SequenceSplit:
    """The leave-one-out split of sequences. ``train``: each user's sequence but its last two
    items. ``users``: the users evaluated (at least 3 items); for each of them
    ``valid_inputs`` / ``valid_targets`` (the sequence up to the second last item, then that
    item) and ``test_inputs`` / ``test_targets`` (up to the last item, then the last item).
    Users with fewer than 3 items keep their whole sequence in ``train`` and are not evaluated."""

    train: list
    users: np.ndarray
    valid_inputs: list
    valid_targets: np.ndarray
    test_inputs: list
    test_targets: np.ndarray


def leave_one_out_sequences(sequences) -> SequenceSplit:
    """Split each user's chronological sequence: the last item for testing, the second last
    for validation, the rest for training (see :class:`SequenceSplit`)."""
    sequences = [np.asarray(s, dtype=np.int64).reshape(-1) for s in sequences]
    users = np.array([u for u, s in enumerate(sequences) if len(s) >= 3], dtype=np.int64)
    train = [s[:-2] if len(s) >= 3 else s for s in sequences]
    return SequenceSplit(train, users,
                         [sequences[u][:-2] for u in users], np.array([sequences[u][-2] for u in users], np.int64),
                         [sequences[u][:-1] for u in users], np.array([sequences[u][-1] for u in users], np.int64))


def pad_sequences(sequences, max_len: int, shift: int = 1) -> np.ndarray:
    """(len(sequences), max_len) int64 rows: the latest ``max_len`` items of each sequence plus
    ``shift`` (so that 0 is free for padding), right-aligned after left padding with 0."""
    max_len = _positive(max_len, "pad_sequences: max_len")
    rows = np.zeros((len(sequences), max_len), dtype=np.int64)
    for row, sequence in enumerate(sequences):
        kept = np.asarray(sequence, dtype=np.int64).reshape(-1)[-max_len:]
        if kept.size and kept.min() < 0:
            raise ValueError(f"pad_sequences: sequence {row} holds the negative item id {int(kept.min())}")
        rows[row, max_len - kept.size:] = kept + shift
    return rows


def next_item_examples(sequences, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets), both (n, max_len) in padded ids (item + 1, 0 = padding), for the
    sequences with at least 2 items: each row reads a sequence but its last item, and its
    targets are the same sequence moved one step on (the next item at every position)."""
    kept = [np.asarray(s, dtype=np.int64) for s in sequences if len(s) >= 2]
    return pad_sequences([s[:-1] for s in kept], max_len), pad_sequences([s[1:] for s in kept], max_len)


def _item_weights(n_items: int, method: str, item_counts, power: float) -> np.ndarray:
    if method not in NEGATIVE_SAMPLERS:
        raise ValueError(f"sample_unseen_items: method must be one of {NEGATIVE_SAMPLERS}, got {method!r}")
    if method == "uniform":
        return np.ones(n_items)
    if item_counts is None:
        raise ValueError("sample_unseen_items: method='popularity' needs item_counts (n_items,)")
    counts = np.asarray(item_counts, dtype=np.float64)
    if counts.shape != (n_items,) or counts.min() < 0:
        raise ShapeError(f"sample_unseen_items: item_counts must be ({n_items},) counts >= 0, got shape {counts.shape}")
    return counts ** power


def sample_unseen_items(histories, n_items: int, count: int, method: str = "uniform", item_counts=None,
                        power: float = 1.0, distinct: bool = False, seed=None) -> np.ndarray:
    """(len(histories), count) item ids (0-based), each row drawn from the items outside that
    row's history (with replacement, or without when ``distinct``): uniformly, or with
    probability proportional to count_i^power (``method='popularity'``, ``item_counts``
    (n_items,); items never counted are then never drawn)."""
    n_items, count = _positive(n_items, "sample_unseen_items: n_items"), _positive(count, "sample_unseen_items: count")
    weights = _item_weights(n_items, method, item_counts, power)
    rng = np.random.default_rng(seed)
    drawn = np.empty((len(histories), count), dtype=np.int64)
    for row, history in enumerate(histories):
        allowed = weights.copy()
        allowed[np.asarray(history, dtype=np.int64)] = 0.0
        total, available = allowed.sum(), int(np.count_nonzero(allowed))
        if not total > 0 or (distinct and available < count):
            raise ValueError(f"sample_unseen_items: row {row} has {available} items left to draw outside its history "
                             f"of {len(history)} items, fewer than count={count} distinct ones needed "
                             f"(n_items={n_items}, method={method!r})" if distinct else
                             f"sample_unseen_items: row {row} has no item left to draw outside its history of "
                             f"{len(history)} items (n_items={n_items}, method={method!r})")
        drawn[row] = rng.choice(n_items, size=count, replace=not distinct, p=allowed / total)
    return drawn


def synthetic_markov_sequences(n_users: int = 200, n_clusters: int = 6, items_per_cluster: int = 16,
                               length: int = 16, stay: float = 0.1, follow: float = 0.8, popularity: float = 1.0,
                               seed: int = 0) -> Interactions:
    """Sequences driven by a hidden Markov chain over item clusters: cluster c holds the items
    c * items_per_cluster .. (c + 1) * items_per_cluster - 1, and from cluster c the next
    item's cluster is c again with probability ``stay``, c + 1 (mod n_clusters) with
    probability ``follow`` and a uniformly drawn cluster otherwise. Within the cluster the item
    is drawn, among those the user has not met yet, with Zipf weights (rank + 1)^-popularity,
    so no user repeats an item. Each user has ``length`` events with increasing timestamps.
    The next item's cluster is thus predictable from the last item, which a popularity ranking
    ignores. Seeded: the same arguments give the same data."""
    for value, what in ((n_users, "n_users"), (n_clusters, "n_clusters"), (items_per_cluster, "items_per_cluster"),
                        (length, "length")):
        _positive(value, f"synthetic_markov_sequences: {what}")
    if not (0 <= stay and 0 <= follow and stay + follow <= 1):
        raise ValueError(f"synthetic_markov_sequences: stay and follow must be probabilities with stay + follow <= 1, "
                         f"got stay={stay!r}, follow={follow!r}")
    if length > items_per_cluster:
        raise ValueError(f"synthetic_markov_sequences: length={length} could exhaust a cluster of "
                         f"items_per_cluster={items_per_cluster} items; use length <= items_per_cluster")
    rng = np.random.default_rng(seed)
    n_items = n_clusters * items_per_cluster
    weights = (np.arange(items_per_cluster) + 1.0) ** -float(popularity)
    items = np.empty((n_users, length), dtype=np.int64)
    for user in range(n_users):
        seen = np.zeros(n_items, dtype=bool)
        cluster = rng.integers(n_clusters)
        for step in range(length):
            if step:
                move = rng.random()
                cluster = cluster if move < stay else (cluster + 1) % n_clusters if move < stay + follow \
                    else rng.integers(n_clusters)
            members = np.arange(cluster * items_per_cluster, (cluster + 1) * items_per_cluster)
            p = np.where(seen[members], 0.0, weights)
            items[user, step] = rng.choice(members, p=p / p.sum())
            seen[items[user, step]] = True
    times = np.sort(rng.choice(n_users * length * 10, size=(n_users, length), replace=False), axis=1)
    users = np.repeat(np.arange(n_users), length)
    return Interactions(users, items.reshape(-1), np.ones(users.size), times.reshape(-1), n_users, n_items)
