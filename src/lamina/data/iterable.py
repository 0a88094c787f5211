"""Datasets that are streams: :class:`IterableDataset`.

A map-style dataset (``__len__`` and ``__getitem__``) lets the loader choose the samples
of every batch; a stream (records read from a file or a socket, samples generated on the
fly) can only be read in order. The loader batches such a stream as it comes.

With ``num_workers=N`` each of the N worker threads calls ``iter(dataset)`` and batches
what it gets, so without care every sample arrives N times. A dataset shards its stream
with :func:`~lamina.data.get_worker_info`, which inside a worker tells the worker's id
and the number of workers (and gives None in the main thread)::

    class Numbers(IterableDataset):
        def __init__(self, n):
            self.n = n

        def __iter__(self):
            info = get_worker_info()
            first, step = (0, 1) if info is None else (info.id, info.num_workers)
            for i in range(first, self.n, step):
                yield np.float32(i)

The loader takes the workers' batches in turn (worker 0's first batch, worker 1's first,
..., worker 0's second, ...), skipping a worker once its stream ends, so the order is
reproducible but differs from that of a single stream. Each worker's last batch may be
short (or dropped with ``drop_last=True``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["IterableDataset", "is_iterable_dataset"]


class IterableDataset:
    """Base class of a dataset read as a stream: define ``__iter__`` yielding samples.

    Samples have the forms a map-style dataset's have: an array, a tuple ``(x, y)``, a
    dict. A stream of known length may define ``__len__`` (then ``len(loader)`` works).
    The worker threads share the one dataset object: keep the state of a pass in
    ``__iter__``'s local variables, not on ``self``. (Worker processes each read their own
    copy, sharded in the same way.)
    """

    def __iter__(self) -> Iterator[Any]:
        raise NotImplementedError(f"{type(self).__name__} must define __iter__, yielding its samples")


def is_iterable_dataset(dataset: Any) -> bool:
    """Whether the loader reads ``dataset`` as a stream: an :class:`IterableDataset`, or
    any object with ``__iter__`` but no ``__getitem__``."""
    if isinstance(dataset, IterableDataset):
        return True
    return hasattr(dataset, "__iter__") and not hasattr(dataset, "__getitem__")
