"""Mini-batch iteration over a dataset, reshuffled every epoch, resumable bit-exactly."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from lamina import backend
from lamina.data.dataset import Dataset, is_multi_input
from lamina.data.samplers import Sampler
from lamina.data.subsets import fetches_whole_batches, is_labelled

__all__ = ["DataLoader"]


class DataLoader:
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

    ``transform(xb) -> xb`` is applied to each batch of inputs (not to the labels); with
    several inputs it receives and returns the tuple.
    ``batch_transform(xb, yb) -> (xb, yb)`` is applied to each labelled batch after it, for
    augmentations that need the labels (e.g. :class:`~lamina.data.MixUp`,
    :class:`~lamina.data.CutMix`); an unlabelled dataset cannot take one.

    A ``sampler`` (see :mod:`lamina.data.samplers`) chooses each epoch's indices in place of
    the shuffle, drawing them from the loader's generator; an epoch then has as many
    samples as the sampler gives (``len(loader)`` follows it). It cannot be combined with
    ``shuffle=True``; ``shuffle`` left at None means True without a sampler, False with one.

    For an :class:`ArrayDataset` a batch is fetched with one fancy-index per array, and so
    for any dataset whose ``dataset[index_array]`` returns the whole batch and says so (a
    :class:`~lamina.data.Subset` or :class:`~lamina.data.ConcatDataset` of array datasets,
    see :mod:`lamina.data.subsets`); any other :class:`Dataset` is indexed sample by sample
    and the samples are stacked.

    :meth:`state_dict` captures the epoch counter and generator state, and the position
    inside an epoch that is in progress, and the state of a ``batch_transform`` that has a
    ``state_dict`` method; :meth:`load_state_dict` on a fresh loader over the same data
    (and a batch transform of the same kind) continues with exactly the batches the
    original would have produced.
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
    ) -> None:
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise TypeError(
                f"DataLoader: dataset must define __len__ and __getitem__; got {type(dataset).__name__}"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be a positive integer; got {batch_size!r}")
        if transform is not None and not callable(transform):
            raise TypeError(f"DataLoader: transform must be callable; got {type(transform).__name__}")
        if batch_transform is not None:
            if not callable(batch_transform):
                raise TypeError(
                    f"DataLoader: batch_transform must be callable; got {type(batch_transform).__name__}"
                )
            if fetches_whole_batches(dataset) and not is_labelled(dataset):
                raise ValueError(
                    f"DataLoader: batch_transform needs labelled (x, y) batches; got an unlabelled {dataset!r}"
                )
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
        self.shuffle = sampler is None if shuffle is None else bool(shuffle)
        self.drop_last = bool(drop_last)
        self.seed = seed
        self.transform = transform
        self.batch_transform = batch_transform
        if seed is None:
            seed = int(backend.rng().integers(0, 2**63 - 1))
        self._generator = np.random.default_rng(seed)
        self._epoch = 0
        # While an epoch is being iterated: the generator state before its permutation was
        # drawn and the number of batches already handed out. None between epochs.
        self._in_progress: dict[str, Any] | None = None
        # Set by load_state_dict when the saved state was taken in the middle of an epoch.
        self._resume: dict[str, Any] | None = None

    @property
    def epoch(self) -> int:
        """The number of epochs iterated to the end so far."""
        return self._epoch

    def __len__(self) -> int:
        """Number of batches per epoch."""
        n = len(self.dataset) if self.sampler is None else self.sampler.num_indices(len(self.dataset))
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        n = len(self.dataset)
        start = 0
        if self._resume is not None:
            self._generator.bit_generator.state = copy.deepcopy(self._resume["pre_state"])
            start = self._resume["position"]
            self._resume = None
        pre_state = copy.deepcopy(self._generator.bit_generator.state)
        if self.sampler is not None:
            order = self.sampler.order(n, self._generator)
        else:
            order = self._generator.permutation(n) if self.shuffle else np.arange(n)
        progress = {"pre_state": pre_state, "position": start}
        self._in_progress = progress
        for b in range(start, len(self)):
            index = order[b * self.batch_size:(b + 1) * self.batch_size]
            batch = self._fetch(index)
            progress["position"] = b + 1
            yield batch
        if self._in_progress is progress:
            self._in_progress = None
        self._epoch += 1

    def _fetch(self, index: np.ndarray) -> Any:
        ds = self.dataset
        if fetches_whole_batches(ds):
            batch = ds[index]
            xb, yb = batch if is_labelled(ds) else (batch, None)
            if self.transform is not None:
                xb = self.transform(xb)
            return xb if yb is None else self._labelled_batch(xb, yb)
        samples = [ds[int(i)] for i in index]
        if isinstance(samples[0], tuple):
            columns = [_stack([s[k] for s in samples]) for k in range(len(samples[0]))]
            if self.transform is not None:
                columns[0] = self.transform(columns[0])
            if self.batch_transform is not None:
                if len(columns) != 2:
                    raise ValueError(f"DataLoader: batch_transform needs (x, y) samples; the dataset's samples "
                                     f"have {len(columns)} components")
                return self._labelled_batch(*columns)
            return tuple(columns)
        if self.batch_transform is not None:
            raise ValueError("DataLoader: batch_transform needs (x, y) samples; the dataset's samples are "
                             "single arrays (unlabelled)")
        xb = np.stack([np.asarray(s) for s in samples])
        return self.transform(xb) if self.transform is not None else xb

    def _labelled_batch(self, xb: np.ndarray, yb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.batch_transform is None:
            return xb, yb
        result = self.batch_transform(xb, yb)
        if not (isinstance(result, tuple) and len(result) == 2):
            raise TypeError(f"DataLoader: batch_transform must return a pair (xb, yb); "
                            f"got {type(result).__name__}")
        return result

    def state_dict(self) -> dict[str, Any]:
        """The loader's resumable state: epoch counter, generator state, in-epoch position.

        Taken between epochs, it resumes at the start of the next epoch. Taken while an
        epoch is being iterated (e.g. after handing out batch ``k``), a loader restored
        from it redraws the same permutation and continues with batch ``k + 1``.
        """
        state: dict[str, Any] = {
            "epoch": self._epoch,
            "num_samples": len(self.dataset),
            "batch_size": self.batch_size,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
            "sampler": repr(self.sampler),
        }
        pending = self._in_progress if self._in_progress is not None else self._resume
        if pending is not None and pending["position"] < len(self):
            state["generator"] = copy.deepcopy(pending["pre_state"])
            state["position"] = pending["position"]
        else:
            if pending is not None:
                # Every batch of the epoch has been handed out; the loop just has not asked
                # for the next one yet. Count the epoch as finished.
                state["epoch"] = self._epoch + 1
            state["generator"] = copy.deepcopy(self._generator.bit_generator.state)
            state["position"] = 0
        if hasattr(self.batch_transform, "state_dict"):
            # Taken now, after the batches already handed out were mixed: a restored loader
            # mixes the following batches with the same draws.
            state["batch_transform"] = self.batch_transform.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict` (of a loader over the same data).

        A saved ``batch_transform`` state is loaded into this loader's batch transform; a
        state without one leaves the batch transform as it is.
        """
        missing = {"epoch", "generator", "position"} - set(state)
        if missing:
            raise KeyError(f"DataLoader.load_state_dict: state lacks {sorted(missing)}")
        for key, mine in (("num_samples", len(self.dataset)), ("batch_size", self.batch_size),
                          ("shuffle", self.shuffle), ("drop_last", self.drop_last),
                          ("sampler", repr(self.sampler))):
            if key in state and state[key] != mine:
                raise ValueError(
                    f"DataLoader.load_state_dict: saved {key}={state[key]!r} but this loader has "
                    f"{key}={mine!r}"
                )
        generator_state = copy.deepcopy(state["generator"])
        if generator_state.get("bit_generator") != type(self._generator.bit_generator).__name__:
            raise ValueError(
                f"DataLoader.load_state_dict: saved generator is {generator_state.get('bit_generator')!r}, "
                f"expected {type(self._generator.bit_generator).__name__!r}"
            )
        if "batch_transform" in state:
            if not hasattr(self.batch_transform, "load_state_dict"):
                raise ValueError(
                    "DataLoader.load_state_dict: the state holds a batch_transform's state but this loader has "
                    f"batch_transform={self.batch_transform!r}, which has no load_state_dict"
                )
            self.batch_transform.load_state_dict(state["batch_transform"])
        self._epoch = int(state["epoch"])
        self._in_progress = None
        position = int(state["position"])
        if position > 0:
            self._resume = {"pre_state": generator_state, "position": position}
        else:
            self._resume = None
            self._generator.bit_generator.state = generator_state

    def __repr__(self) -> str:
        return (f"DataLoader({self.dataset!r}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
                f"drop_last={self.drop_last}, seed={self.seed}, sampler={self.sampler!r})")


def _stack(values: list) -> Any:
    """One component of a batch from the samples' values: an array, or a tuple of arrays
    when each value is a group of several inputs."""
    if is_multi_input(values[0]):
        return tuple(np.stack([np.asarray(v[k]) for v in values]) for k in range(len(values[0])))
    return np.stack([np.asarray(v) for v in values])
