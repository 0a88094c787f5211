"""Rehearsal: a small memory of past samples is mixed into the new tasks' mini-batches
(experience replay, e.g. Chaudhry et al. 2019, "On tiny episodic memories").

The memory is a reservoir sample (Vitter 1985): the first ``capacity`` items are kept; the
n-th item seen after that replaces a random slot with probability capacity / n. Every item
seen so far is then in the memory with the same probability capacity / n, whatever the
order of the stream, without knowing its length in advance.
"""

from __future__ import annotations

import numpy as np

from lamina.errors import ShapeError
from lamina.train.continual.strategy import ContinualStrategy

__all__ = ["ExperienceReplay", "ReplayBuffer"]


class ReplayBuffer:
    """A reservoir sample of at most ``capacity`` items; an item is one row of each of the
    arrays given to :meth:`add` (e.g. an input, its label and its task)."""

    def __init__(self, capacity: int, seed: int = 0):
        if isinstance(capacity, bool) or not isinstance(capacity, (int, np.integer)) or capacity < 1:
            raise ValueError(f"ReplayBuffer: capacity must be a positive integer, got {capacity!r}")
        self.capacity = int(capacity)
        self.rng = np.random.default_rng(seed)
        self.seen = 0
        self.storage: list[np.ndarray] | None = None
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(self, *arrays) -> None:
        """Offer each row of ``arrays`` (equal lengths) to the reservoir, in order."""
        arrays = [np.asarray(a) for a in arrays]
        if not arrays or any(len(a) != len(arrays[0]) for a in arrays):
            raise ShapeError(f"ReplayBuffer.add: expected one or more arrays of equal length, got lengths "
                             f"{[len(a) for a in arrays]}")
        if self.storage is None:
            self.storage = [np.empty((self.capacity,) + a.shape[1:], dtype=a.dtype) for a in arrays]
        elif len(arrays) != len(self.storage) or any(
                a.shape[1:] != s.shape[1:] for a, s in zip(arrays, self.storage)):
            raise ShapeError(f"ReplayBuffer.add: items of shapes {[s.shape[1:] for s in self.storage]} are stored; "
                             f"got {[a.shape[1:] for a in arrays]}")
        for i in range(len(arrays[0])):
            self.seen += 1
            if self.size < self.capacity:
                slot = self.size
                self.size += 1
            else:
                slot = int(self.rng.integers(self.seen))
                if slot >= self.capacity:
                    continue
            for store, a in zip(self.storage, arrays):
                store[slot] = a[i]

    def sample(self, n: int) -> tuple[np.ndarray, ...]:
        """``n`` stored items drawn without replacement (all of them if fewer are stored)."""
        if self.size == 0:
            raise ValueError("ReplayBuffer.sample: the buffer is empty")
        chosen = self.rng.choice(self.size, min(int(n), self.size), replace=False)
        return tuple(store[chosen] for store in self.storage)

    def contents(self) -> tuple[np.ndarray, ...]:
        """Every stored item, in slot order."""
        return tuple(store[:self.size] for store in self.storage) if self.storage is not None else ()


class ExperienceReplay(ContinualStrategy):
    """Each mini-batch is joined by ``replay_size`` items from a :class:`ReplayBuffer` of
    ``capacity`` (the samples of earlier mini-batches, earlier tasks included); the new
    samples are then offered to the buffer."""

    def __init__(self, capacity: int = 200, replay_size: int = 32, seed: int = 0):
        if isinstance(replay_size, bool) or not isinstance(replay_size, int) or replay_size < 1:
            raise ValueError(f"ExperienceReplay: replay_size must be a positive integer, got {replay_size!r}")
        self.buffer = ReplayBuffer(capacity, seed)
        self.replay_size = replay_size

    def mix(self, x, y, ids):
        x, y, ids = np.asarray(x), np.asarray(y), np.asarray(ids)
        if len(self.buffer) == 0:
            self.buffer.add(x, y, ids)
            return x, y, ids
        old_x, old_y, old_ids = self.buffer.sample(self.replay_size)
        self.buffer.add(x, y, ids)
        return (np.concatenate([x, old_x.astype(x.dtype, copy=False)]), np.concatenate([y, old_y]),
                np.concatenate([ids, old_ids]))
