"""Learning-to-rank data: the LETOR / SVMlight text format, a synthetic ranking task, and lists
padded to one length for the listwise losses.

A LETOR file (MSLR-WEB10K, Yahoo! LTR, Istella, LightGBM's rank examples) holds one item
(document) per line::

    <label> qid:<query> <feature>:<value> <feature>:<value> ... # <comment>

labels are graded relevance (0-4), feature numbers start at 1, features left out are 0, and the
lines of a query are contiguous. :class:`LetorData` keeps the rows flat; :class:`ListwiseDataset`
groups them by query and :func:`collate_lists` pads a batch of queries to its longest list with
the label -1 and a mask, the inputs of ``lamina.functional``'s ranking losses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lamina.errors import ShapeError
from lamina.io.atomic import atomic_write

__all__ = ["LetorData", "ListwiseDataset", "collate_lists", "read_letor", "synthetic_ltr",
           "synthetic_relevance", "write_letor"]

PADDING_LABEL = -1


@dataclass
class LetorData:
    """Flat ranking data: ``features`` (n, d), ``labels`` (n,) graded relevance, ``qids`` (n,)
    query ids (ints, or strings when a file's are not all integers), ``comments`` per row ('' for none)."""

    features: np.ndarray
    labels: np.ndarray
    qids: np.ndarray
    comments: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.features = np.asarray(self.features)
        self.labels = np.asarray(self.labels)
        self.qids = np.asarray(self.qids)
        if self.features.ndim != 2:
            raise ShapeError(f"LetorData: features must be (rows, features), got shape {self.features.shape}")
        rows = len(self.features)
        if self.labels.shape != (rows,) or self.qids.shape != (rows,):
            raise ShapeError(f"LetorData: labels and qids must be ({rows},) like the feature rows; got labels "
                             f"{self.labels.shape} and qids {self.qids.shape}")
        if not self.comments:
            self.comments = [""] * rows
        if len(self.comments) != rows:
            raise ShapeError(f"LetorData: {len(self.comments)} comments for {rows} rows")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_queries(self) -> int:
        return len(np.unique(self.qids))


# -- the text format ---------------------------------------------------------------------------
def _parse_line(line: str, number: int, where: str):
    body, _, comment = line.partition("#")
    fields = body.split()
    if len(fields) < 2 or not fields[1].startswith("qid:"):
        raise ValueError(f"read_letor: {where} line {number}: expected '<label> qid:<id> <n>:<value> ...', got "
                         f"{line.strip()[:80]!r}")
    try:
        label = float(fields[0])
        pairs = [item.split(":", 1) for item in fields[2:]]
        features = {int(index): float(value) for index, value in pairs}
    except ValueError as error:
        raise ValueError(f"read_letor: {where} line {number}: {error} in {line.strip()[:80]!r}") from None
    if features and min(features) < 1:
        raise ValueError(f"read_letor: {where} line {number}: feature numbers start at 1, got {min(features)}")
    return label, fields[1][4:], features, comment.strip()


def read_letor(source, num_features: int | None = None, dtype=np.float32) -> LetorData:
    """Read a LETOR / SVMlight ranking file (a path, or an iterable of lines): one row per
    non-blank line, features dense (n, num_features) with the missing ones 0 (``num_features``:
    the largest feature number when None), integer labels as int64, qids as int64 when all are
    integers, comments after '#'."""
    if isinstance(source, (str, os.PathLike)):
        where = str(source)
        lines = Path(source).read_text().splitlines()
    else:
        where, lines = "input", list(source)
    rows = [_parse_line(line, n + 1, where) for n, line in enumerate(lines) if line.strip()
            and not line.lstrip().startswith("#")]
    largest = max((max(f) for _, _, f, _ in rows if f), default=0)
    width = largest if num_features is None else int(num_features)
    if width < largest:
        raise ValueError(f"read_letor: {where} has feature number {largest} > num_features={num_features}")
    features = np.zeros((len(rows), width), dtype=dtype)
    for row, (_, _, values, _) in enumerate(rows):
        if values:
            features[row, np.fromiter(values, int) - 1] = np.fromiter(values.values(), float)
    labels = np.array([label for label, _, _, _ in rows], dtype=np.float64)
    if np.all(labels == np.round(labels)):
        labels = labels.astype(np.int64)
    qids = [qid for _, qid, _, _ in rows]
    try:
        qids = np.array([int(q) for q in qids], dtype=np.int64)
    except ValueError:
        qids = np.array(qids)
    return LetorData(features, labels, qids, [comment for _, _, _, comment in rows])


def _number(value) -> str:
    value = float(value) if not isinstance(value, (int, np.integer)) else int(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


def write_letor(path, data: LetorData, skip_zeros: bool = False) -> Path:
    """Write ``data`` in the LETOR format, atomically (the file is whole or untouched);
    values round-trip exactly. ``skip_zeros`` leaves the 0 features out (SVMlight's sparse form)."""
    lines = []
    for row in range(len(data)):
        kept = [(i, v) for i, v in enumerate(data.features[row], start=1) if not (skip_zeros and v == 0)]
        text = " ".join([_number(data.labels[row]), f"qid:{data.qids[row]}"]
                        + [f"{i}:{_number(v)}" for i, v in kept])
        comment = data.comments[row]
        if "\n" in comment:
            raise ValueError(f"write_letor: the comment of row {row} holds a newline")
        lines.append(f"{text} # {comment}" if comment else text)
    path = Path(path)
    with atomic_write(path) as handle:
        handle.write(("\n".join(lines) + "\n").encode())
    return path


# -- a synthetic task --------------------------------------------------------------------------
def synthetic_relevance(features: np.ndarray) -> np.ndarray:
    """The hidden utility of :func:`synthetic_ltr`'s items, a nonlinear function of their first
    five features: sin(2 x0) + x1 x2 + 0.5 x3^2 - |x4| (the other features are noise)."""
    x = np.asarray(features, dtype=np.float64)
    return np.sin(2 * x[:, 0]) + x[:, 1] * x[:, 2] + 0.5 * x[:, 3] ** 2 - np.abs(x[:, 4])


def synthetic_ltr(num_queries: int = 100, list_size: int | tuple[int, int] = (10, 30), num_features: int = 10,
                  noise: float = 0.1, seed=None, dtype=np.float32) -> LetorData:
    """A ranking task with a known answer: each query has ``list_size`` items (an int, or a
    (low, high) range drawn per query) of standard normal features; an item's relevance 0-4 is
    :func:`synthetic_relevance` plus Gaussian ``noise`` plus a per-query offset (some queries
    have more good items), cut at fixed levels so that about 45%, 25%, 15%, 10% and 5% of the
    items get labels 0, 1, 2, 3 and 4."""
    if num_features < 5:
        raise ValueError(f"synthetic_ltr: num_features must be >= 5 (the relevance uses five), got {num_features}")
    if num_queries < 1:
        raise ValueError(f"synthetic_ltr: num_queries must be >= 1, got {num_queries}")
    rng = np.random.default_rng(seed)
    low, high = (list_size, list_size) if isinstance(list_size, (int, np.integer)) else list_size
    if not 1 <= low <= high:
        raise ValueError(f"synthetic_ltr: list_size must be >= 1 or a range (low, high) with 1 <= low <= high, "
                         f"got {list_size!r}")
    sizes = rng.integers(low, high + 1, num_queries)
    qids = np.repeat(np.arange(1, num_queries + 1), sizes)
    features = rng.standard_normal((len(qids), num_features))
    offsets = rng.normal(0.0, 0.3, num_queries)[qids - 1]
    utility = synthetic_relevance(features) + offsets + noise * rng.standard_normal(len(qids))
    # the levels: quantiles 0.45, 0.7, 0.85, 0.95 of the utility over the feature distribution
    levels = np.array([-0.52, 0.42, 1.18, 2.28])
    labels = np.searchsorted(levels, utility).astype(np.int64)
    return LetorData(features.astype(dtype), labels, qids)


# -- lists -------------------------------------------------------------------------------------
class ListwiseDataset:
    """One sample per query: (features (n_q, d), labels (n_q,)), queries in the order they first
    appear; from a :class:`LetorData` or from features, labels and qids."""

    def __init__(self, data, labels=None, qids=None) -> None:
        if not isinstance(data, LetorData):
            data = LetorData(data, labels, qids)
        self.data = data
        _, first, inverse = np.unique(data.qids, return_index=True, return_inverse=True)
        order = np.argsort(first)                            # queries by first appearance
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        self.query_ids = data.qids[np.sort(first)]
        self._rows = np.split(np.argsort(rank[inverse], kind="stable"),
                              np.cumsum(np.bincount(rank[inverse]))[:-1])

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index):
        rows = self._rows[index]
        return self.data.features[rows], self.data.labels[rows]


def collate_lists(samples, pad_label: float = PADDING_LABEL, max_length: int | None = None):
    """Pad a batch of (features (n_i, d), labels (n_i,)) lists to one length L (the longest, or
    ``max_length``, which cuts longer lists): features (B, L, d) padded with 0, labels (B, L)
    float with ``pad_label`` and mask (B, L), True for real items. Use it as a DataLoader's
    ``collate_fn``."""
    samples = list(samples)
    if not samples:
        raise ValueError("collate_lists: no samples")
    widths = {np.shape(f)[1] if np.ndim(f) == 2 else None for f, _ in samples}
    if len(widths) != 1 or None in widths:
        raise ShapeError(f"collate_lists: every list's features must be (items, d) with one d; got shapes "
                         f"{[np.shape(f) for f, _ in samples]}")
    length = max(len(y) for _, y in samples)
    if max_length is not None:
        if max_length < 1:
            raise ValueError(f"collate_lists: max_length must be >= 1, got {max_length}")
        length = min(length, max_length)
    first = np.asarray(samples[0][0])
    features = np.zeros((len(samples), length, first.shape[1]), dtype=first.dtype)
    labels = np.full((len(samples), length), float(pad_label))
    mask = np.zeros((len(samples), length), dtype=bool)
    for row, (x, y) in enumerate(samples):
        if len(x) != len(y):
            raise ShapeError(f"collate_lists: list {row} has {len(x)} feature rows but {len(y)} labels")
        n = min(len(y), length)
        features[row, :n] = x[:n]
        labels[row, :n] = y[:n]
        mask[row, :n] = True
    return features, labels, mask
