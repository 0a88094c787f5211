"""``DistributedSampler``: each rank's share of a dataset, for a DataLoader per rank.

The rules are PyTorch's. With n samples and R ranks, every rank gets m = ceil(n / R) indices;
the epoch's order is padded to R m by repeating its start (so some samples are seen twice),
or, with ``drop_last=True``, m = floor(n / R) and the tail is cut. Rank r takes every R-th
index from position r: ``order[r::R]``. Without shuffling the order is 0 .. n - 1 and the
shares equal PyTorch's exactly. With shuffling the order is a permutation drawn from a NumPy
generator seeded by ``seed + epoch`` (PyTorch draws with its own generator, so the orders
differ): the same on every rank, so the shares are disjoint and cover the dataset, and new at
each :meth:`set_epoch`.

It is a :class:`lamina.data.Sampler`: a :class:`~lamina.data.DataLoader` takes it as
``sampler=`` (the loader's own generator is not used). The :class:`~lamina.train.Trainer`
calls ``set_epoch`` at the start of every epoch; in a loop of your own, call it yourself.

With ``group=`` (a :func:`~lamina.distributed.new_group` subgroup, such as the ``dp_group`` of a
:class:`~lamina.distributed.DeviceMesh`) R and r are the group's world size and this process's
rank in it: the data is shared among the group's members only (the tensor-parallel ranks of one
data-parallel replica, which are in different data-parallel groups, then read the same share).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator
from typing import Any

import numpy as np

from lamina.distributed.group import GroupMember, get_rank, get_world_size

__all__ = ["DistributedSampler"]


class DistributedSampler:
    """Rank ``rank``'s share of ``dataset`` among ``num_replicas`` ranks (defaults: this
    process's rank in ``group`` and its world size, the default process group when ``group`` is
    None); see the module's text."""

    def __init__(self, dataset: Any, num_replicas: int | None = None, rank: int | None = None, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False, group: Any = None) -> None:
        if group is GroupMember.NON_GROUP_MEMBER and (num_replicas is None or rank is None):
            raise ValueError("DistributedSampler: this process is not a member of group (got "
                             "GroupMember.NON_GROUP_MEMBER from new_group); pass the group this rank belongs to")
        num_replicas = get_world_size(group) if num_replicas is None else num_replicas
        rank = get_rank(group) if rank is None else rank
        if isinstance(num_replicas, bool) or not isinstance(num_replicas, numbers.Integral) or num_replicas < 1:
            raise ValueError(f"DistributedSampler: num_replicas must be a positive integer; got {num_replicas!r}")
        if isinstance(rank, bool) or not isinstance(rank, numbers.Integral) or not 0 <= rank < num_replicas:
            raise ValueError(f"DistributedSampler: rank must be in [0, num_replicas) = [0, {num_replicas}); "
                             f"got {rank!r}")
        self.dataset = dataset
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.shuffle, self.seed, self.drop_last = bool(shuffle), int(seed), bool(drop_last)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order is drawn (with ``shuffle``): call it before each epoch."""
        self.epoch = int(epoch)

    def num_indices(self, n: int) -> int:
        """This rank's share of a dataset of ``n`` samples: m = ceil(n / R), or floor with ``drop_last``."""
        return n // self.num_replicas if self.drop_last else math.ceil(n / self.num_replicas)

    def order(self, n: int, generator: np.random.Generator | None = None) -> np.ndarray:
        """This rank's indices into a dataset of ``n`` samples, for the current epoch."""
        order = np.random.default_rng(self.seed + self.epoch).permutation(n) if self.shuffle else np.arange(n)
        total = self.num_indices(n) * self.num_replicas
        if total > n:
            order = np.resize(order, total)       # repeats the order from its start
        return order[self.rank:total:self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self.order(len(self.dataset)).tolist())

    def __len__(self) -> int:
        return self.num_indices(len(self.dataset))

    def __repr__(self) -> str:
        return (f"DistributedSampler(num_replicas={self.num_replicas}, rank={self.rank}, shuffle={self.shuffle}, "
                f"seed={self.seed}, drop_last={self.drop_last})")
