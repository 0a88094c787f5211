"""Link prediction data, as PyTorch Geometric's ``negative_sampling`` and
``train_test_split_edges``: pairs of nodes that are not edges, and a split of an undirected
graph's edges into training, validation and test sets.

A pair (j, i) is a directed edge j -> i; an undirected edge {i, j} is stored both ways and
counted once. Random draws come from ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lamina.data.graphs import check_edge_index

__all__ = ["LinkSplit", "negative_sampling", "train_test_split_edges"]

ENUMERATE_LIMIT = 1 << 21        # up to this many candidate pairs, list them all instead of rejecting


def _pair_keys(edge_index: np.ndarray, num_nodes: int) -> np.ndarray:
    return np.unique(edge_index[0] * num_nodes + edge_index[1])


def _draw_non_edges(taken: np.ndarray, num_nodes: int, count: int, rng: np.random.Generator,
                    allow_self_loops: bool, upper_only: bool, who: str) -> np.ndarray:
    """``count`` distinct keys j * N + i of pairs not among the distinct ``taken`` keys, drawn
    uniformly among the allowed ones (no loops unless allowed; j < i with ``upper_only``)."""
    n = num_nodes
    if upper_only:
        available = n * (n - 1) // 2 - np.count_nonzero(taken // n < taken % n)
    else:
        loops = 0 if allow_self_loops else n - np.count_nonzero(taken // n == taken % n)
        available = n * n - taken.shape[0] - loops
    if count > available:
        raise ValueError(f"{who}: asked for {count} negative pairs but the graph of {n} nodes has only "
                         f"{available} pairs that are not edges")

    def allowed(keys):
        ok = ~np.isin(keys, taken, assume_unique=False)
        if upper_only:
            ok &= keys // n < keys % n
        elif not allow_self_loops:
            ok &= keys // n != keys % n
        return ok

    if n * n <= ENUMERATE_LIMIT:
        candidates = np.arange(n * n, dtype=np.int64)
        candidates = candidates[allowed(candidates)]
        return rng.choice(candidates, size=count, replace=False)
    chosen = np.zeros(0, dtype=np.int64)
    while chosen.shape[0] < count:
        keys = rng.integers(0, n * n, size=2 * (count - chosen.shape[0]) + 16)
        keys = keys[allowed(keys)]
        merged = np.concatenate([chosen, keys])
        _, first = np.unique(merged, return_index=True)
        chosen = merged[np.sort(first)]
    return chosen[:count]


def negative_sampling(edge_index, num_nodes: int, num_neg_samples: int | None = None, seed=None,
                      allow_self_loops: bool = False) -> np.ndarray:
    """(2, num_neg_samples) distinct pairs j -> i that are not edges of ``edge_index`` (and
    not loops i -> i unless ``allow_self_loops``), uniformly drawn; as many as there are
    edges by default. Raises ValueError when the graph has fewer non-edges than asked for."""
    edge_index = check_edge_index(edge_index, num_nodes, "negative_sampling")
    count = edge_index.shape[1] if num_neg_samples is None else int(num_neg_samples)
    if count < 0:
        raise ValueError(f"negative_sampling: num_neg_samples must be >= 0, got {num_neg_samples!r}")
    rng = np.random.default_rng(seed)
    keys = _draw_non_edges(_pair_keys(edge_index, num_nodes), num_nodes, count, rng, allow_self_loops, False,
                           "negative_sampling")
    return np.stack([keys // num_nodes, keys % num_nodes]).astype(np.int64)


@dataclass
class LinkSplit:
    """The edges of an undirected graph split for link prediction: ``train_pos_edge_index``
    holds the training edges both ways (for message passing), the others one column (j, i),
    j < i, per edge or non-edge."""

    train_pos_edge_index: np.ndarray
    val_pos_edge_index: np.ndarray
    val_neg_edge_index: np.ndarray
    test_pos_edge_index: np.ndarray
    test_neg_edge_index: np.ndarray


def train_test_split_edges(edge_index, num_nodes: int, val_ratio: float = 0.05, test_ratio: float = 0.1,
                           seed=None) -> LinkSplit:
    """Split the undirected edges {j, i} (loops dropped, each pair once whether stored one or
    both ways) at random: floor(val_ratio M) for validation, floor(test_ratio M) for testing,
    the rest for training; and as many non-edges (pairs not linked in the whole graph) for
    validation and testing."""
    edge_index = check_edge_index(edge_index, num_nodes, "train_test_split_edges")
    for name, ratio in (("val_ratio", val_ratio), ("test_ratio", test_ratio)):
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"train_test_split_edges: {name} must be in [0, 1), got {ratio!r}")
    if val_ratio + test_ratio >= 1.0:
        raise ValueError(f"train_test_split_edges: val_ratio + test_ratio = {val_ratio + test_ratio} leaves no "
                         "training edges; expected a sum below 1")
    n = num_nodes
    low, high = np.minimum(edge_index[0], edge_index[1]), np.maximum(edge_index[0], edge_index[1])
    pairs = np.unique(low[low < high] * n + high[low < high])
    rng = np.random.default_rng(seed)
    pairs = rng.permutation(pairs)
    n_val, n_test = int(np.floor(val_ratio * pairs.shape[0])), int(np.floor(test_ratio * pairs.shape[0]))

    def as_index(keys):
        return np.stack([keys // n, keys % n]).astype(np.int64)

    val, test, train = pairs[:n_val], pairs[n_val:n_val + n_test], pairs[n_val + n_test:]
    negatives = as_index(_draw_non_edges(pairs, n, n_val + n_test, rng,
                                         False, True, "train_test_split_edges"))
    train_index = as_index(train)
    return LinkSplit(train_pos_edge_index=np.concatenate([train_index, train_index[::-1]], axis=1),
                     val_pos_edge_index=as_index(val), val_neg_edge_index=negatives[:, :n_val],
                     test_pos_edge_index=as_index(test), test_neg_edge_index=negatives[:, n_val:])
