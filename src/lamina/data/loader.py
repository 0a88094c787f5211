"""Mini-batch iteration over a dataset, reshuffled every epoch, resumable bit-exactly,
made in the training thread or in background worker threads or processes.

The worker pools are in :mod:`lamina.data.loader_workers` and the resumable state in
:mod:`lamina.data.loader_state` (base classes of :class:`DataLoader`).
"""

from __future__ import annotations

import copy
import itertools
import math
import multiprocessing
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from lamina import backend
from lamina.data.collate import default_collate
from lamina.data.dataset import Dataset
from lamina.data.iterable import is_iterable_dataset
from lamina.data.loader_state import _ResumableState
from lamina.data.loader_workers import _WorkerBatches
from lamina.data.processes import ProcessPool
from lamina.data.samplers import Sampler
from lamina.data.subsets import fetches_whole_batches, is_labelled
from lamina.data.workers import WorkerPool

__all__ = ["DataLoader"]

WORKER_MODES = ("thread", "process")


class DataLoader(_WorkerBatches, _ResumableState):
    """Iterate over ``dataset`` in mini-batches of NumPy arrays.

    Each ``for xb, yb in loader`` is one epoch: every sample appears exactly once (or
    all but the incomplete last batch with ``drop_last=True``). With ``shuffle=True`` a
    fresh permutation is drawn at the start of every epoch from the loader's own NumPy
    ``Generator``: seeded from ``seed`` when given, otherwise from one draw of
    :func:`lamina.backend.rng` at construction, so :func:`lamina.manual_seed` makes the
    order reproducible. A dataset of ``(x, y)`` samples yields ``(xb, yb)``; an unlabelled
    :class:`ArrayDataset` (or any dataset whose samples are single arrays) yields ``xb``.
    For a model of several inputs (``ArrayDataset((x1, x2), y)``, or samples
    ``((x1, x2), y)``) ``xb`` is a tuple of batches, one per input.

    ``transform(xb) -> xb`` is applied to each batch of inputs (not to the labels): the
    first component of a tuple batch, otherwise the whole batch (an array, or a dict); with
    several inputs it receives and returns the tuple.
    ``batch_transform(xb, yb) -> (xb, yb)`` is applied to each labelled batch after it, for
    augmentations that need the labels (e.g. :class:`~lamina.data.MixUp`,
    :class:`~lamina.data.CutMix`); an unlabelled dataset cannot take one.

    Randomness of a batch: each batch is fetched and transformed inside
    :func:`lamina.backend.random_scope` keyed by (epoch, batch index) and seeded from the
    loader's seed, so a dataset or transform that draws from :func:`lamina.backend.rng`
    (e.g. the augmentation layers of :mod:`lamina.nn`), and the mixers, give each batch the
    same draws whether it is made in the training thread or in any worker, in any order.
    (Code drawing from NumPy's legacy global ``np.random`` is not covered.)

    A ``sampler`` (see :mod:`lamina.data.samplers`) chooses each epoch's indices in place of
    the shuffle, drawing them from the loader's generator; an epoch then has as many
    samples as the sampler gives (``len(loader)`` follows it). It cannot be combined with
    ``shuffle=True``; ``shuffle`` left at None means True without a sampler, False with one.

    For an :class:`ArrayDataset` a batch is fetched with one fancy-index per array, and so
    for any dataset whose ``dataset[index_array]`` returns the whole batch and says so (a
    :class:`~lamina.data.Subset` or :class:`~lamina.data.ConcatDataset` of array datasets,
    see :mod:`lamina.data.subsets`); any other :class:`Dataset`, and any dataset when a
    ``collate_fn`` is given, is indexed sample by sample and ``collate_fn(samples)`` makes
    the batch (default :func:`~lamina.data.default_collate`: stacking, tuples and dicts
    component by component).

    An :class:`~lamina.data.IterableDataset` (``__iter__`` without ``__getitem__``) is read as
    a stream and batched as it comes: no shuffle and no sampler; ``len(loader)`` needs the
    dataset to define ``__len__``.

    ``num_workers=N > 0`` makes the batches in N background threads, up to
    ``prefetch_factor`` batches ahead per worker; they arrive in the same order and with
    the same values as with ``num_workers=0`` (for an iterable dataset, see
    :mod:`lamina.data.iterable`). An exception in a worker is raised again in the training
    thread, naming the worker and the batch. Leaving the loop early (``break``, an
    exception, or dropping the iterator) stops the threads; ``persistent_workers=True``
    keeps them from one epoch to the next instead (they stop when the loader is garbage
    collected). ``worker_init_fn(worker_id)`` runs first in each worker thread, and
    :func:`~lamina.data.get_worker_info` tells a dataset which worker it runs in. Threads
    pay off when the work is NumPy array work, which releases the GIL. A transform may also
    run lamina layers or ops: grad mode is per thread, so one under ``no_grad`` in a worker
    leaves the training thread recording. ``timeout`` (seconds, 0 for none) bounds the wait
    for any one batch; past it a ``TimeoutError`` names the worker and the batch.

    ``worker_mode="process"`` makes the batches in N worker processes instead, with the same
    guarantees: same batches in the same order, ``prefetch_factor``, ``persistent_workers``,
    ``worker_init_fn`` and ``get_worker_info()`` run in the process (whose ``dataset`` is the
    process's own copy), errors re-raised with the worker's traceback in the message, and a
    process that dies (killed for memory, ``os._exit``, a crash in C code) reported at once
    with the batch it was making. Choose processes when a sample or transform spends its
    time in Python code, which holds the GIL: decoding and augmenting images in Python
    loops, tokenizing text, parsing records. Threads then take turns and gain nothing;
    processes run at once on cores left free by the training process (1.8x faster with 2
    processes on 2 cores in ``benchmarks/loader_processes.py``). Stay with threads for NumPy work, for cheap
    batches (a process costs a start-up, and each batch is copied back through a pipe),
    and when the dataset cannot be copied. ``multiprocessing_context`` picks how processes
    start (None: multiprocessing's default). ``"fork"`` (POSIX systems) copies the loader
    as it is, lambdas and all, in milliseconds; ``"spawn"`` and ``"forkserver"`` start a
    fresh interpreter that imports lamina (seconds) and pickle the dataset, transforms,
    ``collate_fn`` and ``worker_init_fn``, so those must be defined at module level. Every
    batch must pickle (NumPy arrays, lamina Tensors and Modules do). Each process works on
    a copy made when it starts: changes to the dataset or transforms made in the training
    process afterwards are not seen (persistent processes are restarted by
    :meth:`load_state_dict`).

    :meth:`state_dict` captures the epoch counter and generator state, and the position
    inside an epoch that is in progress, and the state of a ``batch_transform`` that has a
    ``state_dict`` method; :meth:`load_state_dict` on a fresh loader over the same data
    (and a batch transform of the same kind) continues with exactly the batches the
    original would have produced. With workers the position is that of the batches
    handed out; batches made ahead are made again after a restore. An epoch is in progress
    while its iterator is alive; an epoch left early (``break``, an exception, the iterator
    dropped) is abandoned: the next ``iter(loader)`` starts a whole new epoch (a fresh
    permutation; the epoch counter still counts only the epochs iterated to the end), and
    a state taken then resumes there too.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int = 32,
        shuffle: bool | None = None,
        drop_last: bool = False,
        seed: int | None = None,
        transform: Callable[[np.ndarray], np.ndarray] | None = None,
        batch_transform: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
        sampler: Sampler | None = None,
        collate_fn: Callable[[list], Any] | None = None,
        num_workers: int = 0,
        prefetch_factor: int = 2,
        persistent_workers: bool = False,
        worker_init_fn: Callable[[int], Any] | None = None,
        worker_mode: str = "thread",
        multiprocessing_context: str | multiprocessing.context.BaseContext | None = None,
        timeout: float = 0,
    ) -> None:
        self._iterable = is_iterable_dataset(dataset)
        if not self._iterable and not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise TypeError(f"DataLoader: dataset must define __len__ and __getitem__ (or __iter__, as an "
                            f"IterableDataset); got {type(dataset).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be a positive integer; got {batch_size!r}")
        for name, function in (("transform", transform), ("collate_fn", collate_fn),
                               ("worker_init_fn", worker_init_fn)):
            if function is not None and not callable(function):
                raise TypeError(f"DataLoader: {name} must be callable; got {type(function).__name__}")
        for name, value, least in (("num_workers", num_workers, 0), ("prefetch_factor", prefetch_factor, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
                raise ValueError(f"DataLoader: {name} must be an integer >= {least}; got {value!r}")
        if worker_mode not in WORKER_MODES:
            raise ValueError(f"DataLoader: worker_mode must be one of {WORKER_MODES}; got {worker_mode!r}")
        if multiprocessing_context is not None:
            if worker_mode != "process":
                raise ValueError(f"DataLoader: multiprocessing_context={multiprocessing_context!r} needs "
                                 f"worker_mode='process'; got worker_mode={worker_mode!r}")
            if not isinstance(multiprocessing_context, multiprocessing.context.BaseContext) \
                    and multiprocessing_context not in multiprocessing.get_all_start_methods():
                raise ValueError(f"DataLoader: multiprocessing_context must be None, a multiprocessing context or "
                                 f"one of {multiprocessing.get_all_start_methods()} on this platform; got "
                                 f"{multiprocessing_context!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float, np.integer, np.floating)) \
                or not timeout >= 0:
            raise ValueError(f"DataLoader: timeout must be a number of seconds >= 0 (0: wait as long as it takes); "
                             f"got {timeout!r}")
        if batch_transform is not None:
            if not callable(batch_transform):
                raise TypeError(
                    f"DataLoader: batch_transform must be callable; got {type(batch_transform).__name__}"
                )
            if collate_fn is None and fetches_whole_batches(dataset) and not is_labelled(dataset):
                raise ValueError(
                    f"DataLoader: batch_transform needs labelled (x, y) batches; got an unlabelled {dataset!r}"
                )
        if self._iterable:
            if shuffle:
                raise ValueError(f"DataLoader: shuffle=True needs a dataset with __getitem__ to draw samples from; "
                                 f"{type(dataset).__name__} is an iterable dataset (a stream), read in its own "
                                 "order: shuffle it in its __iter__, or leave shuffle out")
            if sampler is not None:
                raise ValueError(f"DataLoader: a sampler needs a dataset with __getitem__; "
                                 f"{type(dataset).__name__} is an iterable dataset (a stream)")
        if sampler is not None:
            if not isinstance(sampler, Sampler):
                raise TypeError(f"DataLoader: sampler must have num_indices(n) and order(n, generator) methods; "
                                f"got {type(sampler).__name__}")
            if shuffle:
                raise ValueError(f"DataLoader: sampler and shuffle=True are mutually exclusive (the sampler "
                                 f"{sampler!r} sets the order); leave shuffle out or pass shuffle=False")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.sampler = sampler
        self.shuffle = sampler is None and not self._iterable if shuffle is None else bool(shuffle)
        self.drop_last = bool(drop_last)
        self.seed = seed
        self.transform = transform
        self.batch_transform = batch_transform
        self.collate_fn = collate_fn
        self.num_workers = int(num_workers)
        self.prefetch_factor = int(prefetch_factor)
        self.persistent_workers = bool(persistent_workers)
        self.worker_init_fn = worker_init_fn
        self.worker_mode = worker_mode
        self.multiprocessing_context = multiprocessing_context
        self.timeout = float(timeout)
        if seed is None:
            seed = int(backend.rng().integers(0, 2**63 - 1))
        self._generator = np.random.default_rng(seed)
        # Seeds the per-batch random scopes (with the epoch and batch index as key).
        self._batch_seed = int(seed)
        self._epoch = 0
        # While an epoch is being iterated: the generator state before its permutation was
        # drawn and the number of batches already handed out. None between epochs.
        self._in_progress: dict[str, Any] | None = None
        # Set by load_state_dict when the saved state was taken in the middle of an epoch.
        self._resume: dict[str, Any] | None = None
        self._pool: WorkerPool | ProcessPool | None = None
        self._pool_lock = threading.Lock()

    @property
    def epoch(self) -> int:
        """The number of epochs iterated to the end so far."""
        return self._epoch

    def __len__(self) -> int:
        """Number of batches per epoch."""
        if self._iterable:
            if not hasattr(self.dataset, "__len__"):
                raise TypeError(f"DataLoader: len() of a loader over an iterable dataset needs the dataset to "
                                f"define __len__; {type(self.dataset).__name__} does not")
            n = len(self.dataset)
        elif hasattr(self.sampler, "batches"):         # a sampler that forms whole batches (PoissonSampler)
            return self.sampler.num_batches(len(self.dataset))
        else:
            n = len(self.dataset) if self.sampler is None else self.sampler.num_indices(len(self.dataset))
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        start = 0
        if self._resume is not None:
            self._generator.bit_generator.state = copy.deepcopy(self._resume["pre_state"])
            start = self._resume["position"]
            self._resume = None
        pre_state = copy.deepcopy(self._generator.bit_generator.state)
        epoch = self._epoch
        if self._iterable:
            batches = itertools.islice(self._stream(epoch), start, None)
        else:
            n = len(self.dataset)
            if hasattr(self.sampler, "batches"):       # a list of index arrays, one per batch
                order = self.sampler.batches(n, self._generator)
            elif self.sampler is not None:
                order = self.sampler.order(n, self._generator)
            else:
                order = self._generator.permutation(n) if self.shuffle else np.arange(n)
            batches = self._indexed(order, start, epoch)
        progress = {"pre_state": pre_state, "position": start}
        self._in_progress = progress
        finished = False
        try:
            for batch in batches:
                progress["position"] += 1
                yield batch
            finished = True
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()
            if not finished and self._in_progress is progress:
                # Abandoned (break, an exception, the iterator dropped): the next epoch is whole,
                # drawn from the generator as it is now, and state_dict says so.
                self._in_progress = None
        if self._in_progress is progress:
            self._in_progress = None
        self._epoch += 1

    # -- making a batch ----------------------------------------------------------------
    def _batch_indices(self, order: np.ndarray | list, b: int) -> np.ndarray:
        if isinstance(order, list):
            return order[b]
        return order[b * self.batch_size:(b + 1) * self.batch_size]

    def _make_batch(self, index: np.ndarray, epoch: int, b: int) -> Any:
        with backend.random_scope(self._batch_seed, (epoch, b)):
            return self._fetch(index)

    def _fetch(self, index: np.ndarray) -> Any:
        ds = self.dataset
        if self.collate_fn is None and fetches_whole_batches(ds):
            batch = ds[index]
            xb, yb, *weights = batch if is_labelled(ds) else (batch, None)
            if self.transform is not None:
                xb = self.transform(xb)
            if weights:                              # (x, y, w): sample weights ride along
                return self._finish_weighted(xb, yb, *weights)
            return xb if yb is None else self._labelled_batch(xb, yb)
        return self._finish([ds[int(i)] for i in index])

    def _finish(self, samples: list) -> Any:
        """Collate the samples into a batch, then transform its inputs and apply the batch transform."""
        batch = (self.collate_fn or default_collate)(samples)
        if isinstance(batch, tuple):
            if self.transform is not None:
                batch = (self.transform(batch[0]), *batch[1:])
            if self.batch_transform is None:
                return batch
            if len(batch) != 2:
                raise ValueError(f"DataLoader: batch_transform needs (x, y) samples; the dataset's samples "
                                 f"have {len(batch)} components")
            return self._labelled_batch(*batch)
        if self.batch_transform is not None:
            kind = "single arrays (unlabelled)" if isinstance(batch, np.ndarray) else f"{type(batch).__name__}s"
            raise ValueError(f"DataLoader: batch_transform needs (x, y) samples; the dataset's samples are {kind}")
        return self.transform(batch) if self.transform is not None else batch

    def _finish_weighted(self, xb: Any, yb: np.ndarray, wb: np.ndarray) -> tuple:
        if self.batch_transform is not None:
            raise ValueError("DataLoader: batch_transform needs (x, y) samples; the dataset's samples are "
                             "(x, y, w) triples with sample weights")
        return xb, yb, wb

    def _labelled_batch(self, xb: np.ndarray, yb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.batch_transform is None:
            return xb, yb
        result = self.batch_transform(xb, yb)
        if not (isinstance(result, tuple) and len(result) == 2):
            raise TypeError(f"DataLoader: batch_transform must return a pair (xb, yb); "
                            f"got {type(result).__name__}")
        return result

    def _stream_batches(self, epoch: int, worker: int) -> Iterator[Any]:
        """One stream's batches: ``iter(dataset)`` read ``batch_size`` samples at a time,
        batch k made in the random scope keyed (epoch, worker, k)."""
        samples_iter = None
        for k in itertools.count():
            with backend.random_scope(self._batch_seed, (epoch, worker, k)):
                if samples_iter is None:
                    samples_iter = iter(self.dataset)
                samples = list(itertools.islice(samples_iter, self.batch_size))
                if not samples or (self.drop_last and len(samples) < self.batch_size):
                    return
                batch = self._finish(samples)
            yield batch

    def __repr__(self) -> str:
        workers = f", num_workers={self.num_workers}" if self.num_workers else ""
        if self.num_workers and self.worker_mode != "thread":
            workers += f", worker_mode={self.worker_mode!r}"
        return (f"DataLoader({self.dataset!r}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
                f"drop_last={self.drop_last}, seed={self.seed}, sampler={self.sampler!r}{workers})")
