"""Continuous-time dynamic graphs as a stream of timestamped events (PyTorch Geometric's
``TemporalData`` and ``LastNeighborLoader`` in spirit).

An event i is an interaction src_i -> dst_i at time t_i carrying a message vector msg_i.
:class:`TemporalEvents` keeps the events sorted by time, splits them chronologically and
draws negative destinations; :class:`LastNeighborSampler` gives, for a node n and a query time
t, its k most recent interactions strictly before t (either endpoint counts as a neighbour).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lamina.errors import ShapeError

__all__ = ["LastNeighborSampler", "TemporalEvents"]


@dataclass(frozen=True)
class TemporalEvents:
    """Events (src, dst, t, msg): integer node ids (E,), times (E,) and messages (E, D),
    stored sorted by time (ties keep their input order)."""

    src: np.ndarray
    dst: np.ndarray
    t: np.ndarray
    msg: np.ndarray

    def __post_init__(self) -> None:
        src, dst = np.asarray(self.src, dtype=np.int64), np.asarray(self.dst, dtype=np.int64)
        t, msg = np.asarray(self.t, dtype=np.float64), np.asarray(self.msg)
        if msg.ndim == 1:
            msg = msg[:, None]
        if not (src.ndim == dst.ndim == t.ndim == 1 and len(src) == len(dst) == len(t) == len(msg)):
            raise ShapeError(f"TemporalEvents: src {src.shape}, dst {dst.shape}, t {t.shape} and msg {msg.shape} "
                             "must describe the same number of events (1-D ids and times, 2-D messages)")
        order = np.argsort(t, kind="stable")
        for name, value in (("src", src), ("dst", dst), ("t", t), ("msg", msg)):
            object.__setattr__(self, name, value[order])

    def __len__(self) -> int:
        return len(self.t)

    @property
    def num_nodes(self) -> int:
        return int(max(self.src.max(initial=-1), self.dst.max(initial=-1)) + 1)

    def __getitem__(self, index) -> TemporalEvents:
        return TemporalEvents(self.src[index], self.dst[index], self.t[index], self.msg[index])

    def split(self, val_ratio: float = 0.15, test_ratio: float = 0.15) -> tuple[TemporalEvents, ...]:
        """Chronological (train, val, test): the last ``test_ratio`` of the events is the test
        set, the ``val_ratio`` before it the validation set."""
        if val_ratio < 0 or test_ratio < 0 or val_ratio + test_ratio >= 1:
            raise ValueError(f"TemporalEvents.split: val_ratio={val_ratio} and test_ratio={test_ratio} must be "
                             "non-negative with a sum below 1")
        n = len(self)
        val_start = int(round(n * (1 - val_ratio - test_ratio)))
        test_start = int(round(n * (1 - test_ratio)))
        return self[:val_start], self[val_start:test_start], self[test_start:]

    def batches(self, batch_size: int):
        """Consecutive chronological batches."""
        for start in range(0, len(self), batch_size):
            yield self[start:start + batch_size]

    def negative_destinations(self, rng: np.random.Generator, candidates: np.ndarray | None = None) -> np.ndarray:
        """One random destination per event, drawn uniformly from ``candidates`` (default:
        every node seen as a destination)."""
        pool = np.unique(self.dst) if candidates is None else np.asarray(candidates, dtype=np.int64)
        return pool[rng.integers(0, len(pool), size=len(self))]


class LastNeighborSampler:
    """The k most recent interactions of each node strictly before a query time.

    ``sample(nodes, times)`` returns (neighbours, event times, event ids, mask), each (B, k);
    slots are filled most recent first and ``mask`` is False where a node has fewer than k
    earlier interactions (those slots hold 0)."""

    def __init__(self, events: TemporalEvents, k: int):
        if k < 1:
            raise ValueError(f"LastNeighborSampler: k must be positive, got {k}")
        self.events, self.k = events, int(k)
        ids = np.arange(len(events))
        owner = np.concatenate([events.src, events.dst])
        other = np.concatenate([events.dst, events.src])
        event_id = np.concatenate([ids, ids])
        once = np.concatenate([np.ones(len(ids), dtype=bool), events.src != events.dst])   # a self-loop counts once
        owner, other, event_id = owner[once], other[once], event_id[once]
        order = np.lexsort((event_id, owner))          # by node, then chronologically
        self._owner, self._other, self._event = owner[order], other[order], event_id[order]
        self._time = events.t[self._event]
        n = max(events.num_nodes, 1)
        self._start = np.searchsorted(self._owner, np.arange(n + 1))

    def sample(self, nodes, times) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        nodes, times = np.asarray(nodes, dtype=np.int64), np.asarray(times, dtype=np.float64)
        if nodes.shape != times.shape or nodes.ndim != 1:
            raise ShapeError(f"LastNeighborSampler.sample: nodes {nodes.shape} and times {times.shape} must be "
                             "equal-length 1-D arrays")
        b, k = len(nodes), self.k
        neighbors, event_times = np.zeros((b, k), dtype=np.int64), np.zeros((b, k))
        event_ids, mask = np.zeros((b, k), dtype=np.int64), np.zeros((b, k), dtype=bool)
        last = len(self._start) - 1
        for row, (node, time) in enumerate(zip(nodes, times)):
            if node >= last:
                continue
            lo, hi = self._start[node], self._start[node + 1]
            end = lo + np.searchsorted(self._time[lo:hi], time, side="left")   # strictly before `time`
            picked = np.arange(end - 1, max(end - k, lo) - 1, -1)
            count = len(picked)
            neighbors[row, :count], event_times[row, :count] = self._other[picked], self._time[picked]
            event_ids[row, :count], mask[row, :count] = self._event[picked], True
        return neighbors, event_times, event_ids, mask
