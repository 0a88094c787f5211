"""User-item interactions for recommender systems: synthetic data, MovieLens files, splits
and negative sampling.

An :class:`Interactions` holds one row per (user, item) event: integer ids in
[0, n_users) and [0, n_items), a value (a rating, or 1 for implicit feedback) and a
timestamp. The synthetic generators draw users and items from latent factors,

    affinity(u, i) = p_u . q_i,   p_u, q_i ~ N(0, I / sqrt(dim)),

and skew exposure by popularity: item i (in a random order) is met with weight
w_i = (rank_i + 1)^(-popularity), a Zipf law. Each user's items are drawn without
replacement with probability proportional to w_i (explicit ratings) or to
w_i exp(affinity / temperature) (implicit feedback), by the Gumbel top-k trick: the k
largest log-weights plus independent Gumbel noise are a draw without replacement.

Splits: :func:`leave_one_out_split` holds out each user's latest interaction (the NCF
protocol of He et al. 2017), :func:`temporal_split` the latest fraction of all of them.
:func:`sample_negatives` draws, for each user, items the user never interacted with;
:class:`InteractionDataset` pairs each positive with such negatives as (user, item) -> label
samples for the Trainer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lamina.data.dataset import ArrayDataset
from lamina.errors import ShapeError

__all__ = ["InteractionDataset", "Interactions", "implicit_training_data", "leave_one_out_split",
           "load_movielens", "sample_negatives", "synthetic_implicit", "synthetic_ratings", "temporal_split"]

SAMPLERS = ("uniform", "popularity")


@dataclass(frozen=True, eq=False)
class Interactions:
    """Events (user, item, value, timestamp), one per row, for ``n_users`` users and ``n_items``
    items. ``user_ids`` / ``item_ids``: the original id of each index when the ids were
    re-numbered (as :func:`load_movielens` does), else None."""

    users: np.ndarray
    items: np.ndarray
    values: np.ndarray
    timestamps: np.ndarray
    n_users: int
    n_items: int
    user_ids: np.ndarray | None = field(default=None, compare=False)
    item_ids: np.ndarray | None = field(default=None, compare=False)

    def __post_init__(self):
        columns = {"users": np.int64, "items": np.int64, "values": np.float64, "timestamps": np.int64}
        for name, dtype in columns.items():
            object.__setattr__(self, name, np.asarray(getattr(self, name)).astype(dtype, copy=False))
        shapes = {name: getattr(self, name).shape for name in columns}
        if len(set(shapes.values())) != 1 or self.users.ndim != 1:
            raise ShapeError(f"Interactions: users, items, values and timestamps must be 1-D of one length, "
                             f"got shapes {shapes}")
        for ids, count, what in ((self.users, self.n_users, "user"), (self.items, self.n_items, "item")):
            if ids.size and (ids.min() < 0 or ids.max() >= count):
                bad = int(ids.min() if ids.min() < 0 else ids.max())
                raise ValueError(f"Interactions: {what} id {bad} is out of range [0, {count})")

    def __len__(self) -> int:
        return len(self.users)

    def subset(self, rows) -> Interactions:
        """The interactions at ``rows`` (a boolean mask or indices), with the same id ranges."""
        return Interactions(self.users[rows], self.items[rows], self.values[rows], self.timestamps[rows],
                            self.n_users, self.n_items, self.user_ids, self.item_ids)

    def matrix(self):
        """The (n_users, n_items) SciPy CSR matrix of the values (repeated pairs summed)."""
        from scipy.sparse import csr_matrix

        return csr_matrix((self.values, (self.users, self.items)), shape=(self.n_users, self.n_items))

    def items_of(self) -> list[np.ndarray]:
        """For each user, the sorted distinct items it interacted with."""
        keys = np.unique(self.users * self.n_items + self.items)
        users, items = np.divmod(keys, self.n_items)
        return np.split(items, np.searchsorted(users, np.arange(1, self.n_users)))

    def item_counts(self) -> np.ndarray:
        """How many interactions each item has (n_items,)."""
        return np.bincount(self.items, minlength=self.n_items)

    def pair_keys(self) -> np.ndarray:
        """The sorted distinct keys user * n_items + item of the pairs present."""
        return np.unique(self.users * self.n_items + self.items)


def _check_count(value, what: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{what} must be an int >= {low}, got {value!r}")
    return int(value)


def _zipf_log_weights(n_items: int, popularity: float, rng: np.random.Generator) -> np.ndarray:
    """log w_i = -popularity log(rank_i + 1) for a random ranking of the items."""
    ranks = rng.permutation(n_items)
    return -float(popularity) * np.log1p(ranks)


def _draw_without_replacement(log_weights: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k distinct columns per row, drawn with probabilities proportional to exp(log_weights)
    (Gumbel top-k), in the order drawn."""
    keys = log_weights + rng.gumbel(size=log_weights.shape)
    top = np.argpartition(-keys, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(keys, top, 1), axis=1)
    return np.take_along_axis(top, order, 1)


def _factors(n_users: int, n_items: int, dim: int, rng: np.random.Generator):
    scale = dim ** -0.25                 # p . q then has unit variance
    return rng.normal(0, scale, (n_users, dim)), rng.normal(0, scale, (n_items, dim))


def _events(users_items: np.ndarray, values: np.ndarray, n_users: int, n_items: int,
            rng: np.random.Generator) -> Interactions:
    """Rows of (user, its per_user items in drawn order): timestamps increase along each row,
    interleaved at random between users."""
    n, per_user = users_items.shape
    times = np.sort(rng.choice(n * per_user * 10, size=(n, per_user), replace=False), axis=1)
    users = np.repeat(np.arange(n), per_user)
    return Interactions(users, users_items.reshape(-1), values.reshape(-1), times.reshape(-1), n_users, n_items)


def synthetic_ratings(n_users: int = 200, n_items: int = 300, per_user: int = 30, dim: int = 4,
                      noise: float = 0.3, popularity: float = 1.0, mean: float = 3.5, seed: int = 0) -> Interactions:
    """Explicit ratings r_ui = clip(mu + b_u + b_i + p_u . q_i + eps, 1, 5) of ``per_user``
    distinct items per user, drawn by popularity; b_u ~ N(0, 0.4^2), b_i ~ N(0, 0.6^2),
    eps ~ N(0, noise^2), mu = ``mean``. Seeded: the same arguments give the same data."""
    for value, what in ((n_users, "n_users"), (n_items, "n_items"), (per_user, "per_user"), (dim, "dim")):
        _check_count(value, f"synthetic_ratings: {what}")
    if per_user > n_items:
        raise ValueError(f"synthetic_ratings: per_user={per_user} is more than the n_items={n_items} items")
    rng = np.random.default_rng(seed)
    p, q = _factors(n_users, n_items, dim, rng)
    user_bias, item_bias = rng.normal(0, 0.4, n_users), rng.normal(0, 0.6, n_items)
    log_w = np.broadcast_to(_zipf_log_weights(n_items, popularity, rng), (n_users, n_items))
    chosen = _draw_without_replacement(log_w, per_user, rng)
    affinity = np.einsum("ud,ukd->uk", p, q[chosen])
    ratings = mean + user_bias[:, None] + item_bias[chosen] + affinity + rng.normal(0, noise, chosen.shape)
    return _events(chosen, np.clip(ratings, 1.0, 5.0), n_users, n_items, rng)


def synthetic_implicit(n_users: int = 200, n_items: int = 300, per_user: int = 20, dim: int = 8,
                       temperature: float = 0.5, popularity: float = 1.0, seed: int = 0) -> Interactions:
    """Implicit feedback: each user interacts with ``per_user`` distinct items drawn without
    replacement with probability proportional to w_i exp(p_u . q_i / temperature) (value 1
    each); a lower temperature makes taste matter more than popularity. Seeded."""
    for value, what in ((n_users, "n_users"), (n_items, "n_items"), (per_user, "per_user"), (dim, "dim")):
        _check_count(value, f"synthetic_implicit: {what}")
    if per_user > n_items:
        raise ValueError(f"synthetic_implicit: per_user={per_user} is more than the n_items={n_items} items")
    if not temperature > 0:
        raise ValueError(f"synthetic_implicit: temperature must be > 0, got {temperature!r}")
    rng = np.random.default_rng(seed)
    p, q = _factors(n_users, n_items, dim, rng)
    log_w = _zipf_log_weights(n_items, popularity, rng) + p @ q.T / temperature
    chosen = _draw_without_replacement(log_w, per_user, rng)
    return _events(chosen, np.ones(chosen.shape), n_users, n_items, rng)


MOVIELENS_FILES = (("u.data", "\t"), ("ratings.dat", "::"))


def load_movielens(directory: str | os.PathLike) -> Interactions:
    """The ratings of a MovieLens directory: ``u.data`` (100K: user, item, rating, timestamp,
    tab-separated) or ``ratings.dat`` (1M: the same fields separated by '::'). User and item
    ids are re-numbered 0.. in increasing order of the file's ids; ``user_ids`` and
    ``item_ids`` give the original id of each index."""
    folder = Path(directory)
    if not folder.is_dir():
        raise FileNotFoundError(f"load_movielens: {os.fspath(directory)!r} is not a directory")
    found = [(folder / name, separator) for name, separator in MOVIELENS_FILES if (folder / name).is_file()]
    if not found:
        raise FileNotFoundError(f"load_movielens: {os.fspath(directory)!r} holds neither u.data (MovieLens 100K) "
                                "nor ratings.dat (MovieLens 1M)")
    path, separator = found[0]
    rows = []
    with open(path, encoding="latin-1") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            fields = line.strip().split(separator)
            if len(fields) != 4:
                raise ValueError(f"load_movielens: {path}, line {number}: expected 4 fields separated by "
                                 f"{separator!r} (user, item, rating, timestamp), got {len(fields)}")
            try:
                rows.append((int(fields[0]), int(fields[1]), float(fields[2]), int(fields[3])))
            except ValueError as exc:
                raise ValueError(f"load_movielens: {path}, line {number}: {exc}") from exc
    if not rows:
        raise ValueError(f"load_movielens: {path} holds no ratings")
    table = np.array(rows, dtype=np.float64)
    user_ids, users = np.unique(table[:, 0].astype(np.int64), return_inverse=True)
    item_ids, items = np.unique(table[:, 1].astype(np.int64), return_inverse=True)
    return Interactions(users, items, table[:, 2], table[:, 3].astype(np.int64), len(user_ids), len(item_ids),
                        user_ids, item_ids)


def _latest_per_user(data: Interactions) -> np.ndarray:
    """The row of each user's latest interaction (the later row on equal timestamps); -1 for
    users without any."""
    order = np.lexsort((np.arange(len(data)), data.timestamps, data.users))
    last = np.full(data.n_users, -1, dtype=np.int64)
    last[data.users[order]] = order                      # later rows overwrite earlier ones
    return last


def leave_one_out_split(data: Interactions) -> tuple[Interactions, Interactions]:
    """(train, test): test holds each user's latest interaction (largest timestamp, the later
    row on a tie), train all the others. A user with a single interaction keeps it in train
    and has none in test."""
    last = _latest_per_user(data)
    counts = np.bincount(data.users, minlength=data.n_users)
    held = np.zeros(len(data), dtype=bool)
    held[last[(last >= 0) & (counts > 1)]] = True
    return data.subset(~held), data.subset(held)


def temporal_split(data: Interactions, test_fraction: float = 0.2) -> tuple[Interactions, Interactions]:
    """(train, test) by time across all users: the latest ``test_fraction`` of the
    interactions (by timestamp, then row) form test; every training event comes first."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"temporal_split: test_fraction must be in (0, 1), got {test_fraction!r}")
    order = np.lexsort((np.arange(len(data)), data.timestamps))
    n_test = int(round(len(data) * test_fraction))
    if n_test == 0 or n_test == len(data):
        raise ValueError(f"temporal_split: test_fraction={test_fraction} of {len(data)} interactions leaves an "
                         "empty train or test set")
    held = np.zeros(len(data), dtype=bool)
    held[order[len(data) - n_test:]] = True
    return data.subset(~held), data.subset(held)


def _sampling_probabilities(data: Interactions, method: str, power: float) -> np.ndarray | None:
    if method not in SAMPLERS:
        raise ValueError(f"sample_negatives: method must be one of {SAMPLERS}, got {method!r}")
    if method == "uniform":
        return None
    weights = data.item_counts().astype(np.float64) ** power
    if weights.sum() == 0:
        raise ValueError("sample_negatives: popularity sampling needs at least one interaction")
    return weights / weights.sum()


def _excluded_keys(data: Interactions, exclude) -> np.ndarray:
    keys = [data.pair_keys()]
    for other in (exclude if isinstance(exclude, (list, tuple)) else [exclude] if exclude is not None else []):
        if (other.n_users, other.n_items) != (data.n_users, data.n_items):
            raise ValueError(f"sample_negatives: exclude has {other.n_users} users and {other.n_items} items, "
                             f"the data {data.n_users} and {data.n_items}")
        keys.append(other.pair_keys())
    return np.unique(np.concatenate(keys))


def sample_negatives(data: Interactions, users, count: int, method: str = "uniform", distinct: bool = False,
                     exclude=None, power: float = 1.0, seed=None) -> np.ndarray:
    """(len(users), count) items that each user never interacted with in ``data`` (nor in the
    Interactions ``exclude``, one or a list), drawn uniformly or, with
    ``method='popularity'``, with probability proportional to count_i^power (items without
    interactions in ``data`` are then never drawn). ``distinct``: no item twice in a row."""
    count = _check_count(count, "sample_negatives: count")
    users = np.asarray(users)
    if users.ndim != 1 or users.dtype.kind not in "iu":
        raise ShapeError(f"sample_negatives: users must be a 1-D integer array, got {users.dtype} {users.shape}")
    if users.size and (users.min() < 0 or users.max() >= data.n_users):
        raise ValueError(f"sample_negatives: user ids must be in [0, {data.n_users}), got "
                         f"{int(users.min())}..{int(users.max())}")
    rng = np.random.default_rng(seed)
    probabilities = _sampling_probabilities(data, method, power)
    taken = _excluded_keys(data, exclude)
    allowed = np.ones(data.n_items, dtype=bool) if probabilities is None else probabilities > 0
    per_user = np.bincount(taken // data.n_items, minlength=data.n_users)
    reachable = allowed.sum() - (np.bincount(taken // data.n_items, weights=allowed[taken % data.n_items],
                                             minlength=data.n_users)).astype(np.int64)
    need = count if distinct else 1
    short = users[reachable[users] < need] if users.size else users
    if short.size:
        raise ValueError(f"sample_negatives: user {int(short[0])} has only {int(reachable[short[0]])} items to "
                         f"draw from ({int(per_user[short[0]])} excluded), fewer than the {need} needed")
    if distinct:
        return _distinct_negatives(users, count, data.n_items, taken, probabilities, rng)
    draws = rng.choice(data.n_items, size=(len(users), count), p=probabilities)
    while True:
        keys = users[:, None] * data.n_items + draws
        bad = _contains(taken, keys)
        if not bad.any():
            return draws
        draws[bad] = rng.choice(data.n_items, size=int(bad.sum()), p=probabilities)


def _contains(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    at = np.searchsorted(sorted_keys, keys).clip(max=max(len(sorted_keys) - 1, 0))
    return sorted_keys[at] == keys if len(sorted_keys) else np.zeros(keys.shape, dtype=bool)


def _distinct_negatives(users, count, n_items, taken, probabilities, rng) -> np.ndarray:
    out = np.empty((len(users), count), dtype=np.int64)
    bounds = np.searchsorted(taken, np.stack([users * n_items, (users + 1) * n_items]))
    for row, (user, start, stop) in enumerate(zip(users, *bounds)):
        candidates = np.ones(n_items, dtype=bool)
        candidates[taken[start:stop] - user * n_items] = False
        pool = np.flatnonzero(candidates)
        p = None if probabilities is None else probabilities[pool] / probabilities[pool].sum()
        out[row] = rng.choice(pool, size=count, replace=False, p=p)
    return out


def implicit_training_data(data: Interactions, negatives: int = 4, method: str = "uniform",
                           seed=None) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """((users, items), labels): every interaction of ``data`` (label 1) and, for each, ``negatives``
    items its user never interacted with (label 0), as He et al. train NCF."""
    negatives = _check_count(negatives, "implicit_training_data: negatives", low=0)
    users, items = data.users, data.items
    if negatives:
        drawn = sample_negatives(data, data.users, negatives, method=method, seed=seed)
        users = np.concatenate([users, np.repeat(data.users, negatives)])
        items = np.concatenate([items, drawn.reshape(-1)])
    labels = np.zeros(len(users))
    labels[:len(data)] = 1.0
    return (users, items), labels


class InteractionDataset(ArrayDataset):
    """(user, item) -> label samples for the Trainer: each interaction with label 1 and
    ``negatives`` sampled non-interacted items of its user with label 0 (a batch is
    ``((users, items), labels)``). :meth:`resample` draws fresh negatives (once per epoch,
    as in NCF training)."""

    def __init__(self, data: Interactions, negatives: int = 4, method: str = "uniform", seed=None):
        self.data, self.negatives, self.method = data, negatives, method
        self._rng = np.random.default_rng(seed)
        x, y = implicit_training_data(data, negatives, method, seed=self._rng)
        super().__init__(x, y)

    def resample(self) -> None:
        """Replace the negatives with a fresh draw."""
        self.x, self.y = implicit_training_data(self.data, self.negatives, self.method, seed=self._rng)
