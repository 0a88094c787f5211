"""Datasets built from other datasets: a subset, a concatenation, and random splits.

``Subset(dataset, indices)`` is the dataset seen through a list of its indices,
``ConcatDataset([a, b])`` the samples of ``a`` followed by those of ``b``, and
``random_split(dataset, lengths)`` cuts a dataset into disjoint random subsets. Neither
copies any sample.

Indexing follows Python's sequences (and PyTorch's ``Subset``/``ConcatDataset``): an index
``i`` in ``[-n, n)`` is accepted, a negative one counting from the end.

The :class:`~lamina.data.DataLoader` fetches a whole batch of an
:class:`~lamina.data.ArrayDataset` with one fancy index. A dataset keeps that fast path
when ``dataset[index_array]`` returns the whole batch, as an ``ArrayDataset`` does, and it
says so with two attributes: ``fetches_batches`` (true) and ``labelled`` (whether a batch
is ``(xb, yb)`` rather than ``xb`` alone). :class:`Subset` and :class:`ConcatDataset` set
them when every dataset under them fetches whole batches; otherwise the loader indexes
them sample by sample.
"""

from __future__ import annotations

import bisect
import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from lamina import backend
from lamina.data.dataset import ArrayDataset, Dataset

__all__ = ["ConcatDataset", "Subset", "fetches_whole_batches", "is_labelled", "random_split"]

# The shape of one sample: a leaf "dtype[shape]" per array, tuples where the sample nests.
Structure = str | tuple["Structure", ...]


def fetches_whole_batches(dataset: Any) -> bool:
    """Whether ``dataset[index_array]`` returns a whole batch in one call: an
    :class:`ArrayDataset`, or a dataset whose ``fetches_batches`` attribute is true."""
    return isinstance(dataset, ArrayDataset) or getattr(dataset, "fetches_batches", False) is True


def is_labelled(dataset: Any) -> bool:
    """Whether the batches of a dataset that fetches whole batches are ``(xb, yb)`` pairs
    (rather than inputs ``xb`` alone)."""
    if isinstance(dataset, ArrayDataset):
        return dataset.y is not None
    return bool(getattr(dataset, "labelled", False))


def _check_dataset(dataset: Any, where: str) -> None:
    if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
        raise TypeError(f"{where} must define __len__ and __getitem__; got {type(dataset).__name__}")


def _positions(index: Any, length: int, where: str, error: type[Exception] = IndexError) -> int | np.ndarray:
    """``index`` (an int, a slice, an integer array or a boolean mask) as positions in
    ``[0, length)``: an int for an int, a 1-d ``intp`` array otherwise. A negative index
    counts from the end; one outside ``[-length, length)`` raises ``error``."""
    if isinstance(index, (bool, np.bool_)):
        raise TypeError(f"{where}: index must be an int, a slice, an integer array or a boolean mask; got {index!r}")
    if isinstance(index, (int, np.integer)):
        i = int(index)
        if not -length <= i < length:
            raise error(f"{where}: index {i} is out of range for {length} samples (valid: -{length} to {length - 1})")
        return i + length if i < 0 else i
    if isinstance(index, slice):
        return np.arange(length)[index]
    positions = np.asarray(index)
    if positions.size == 0:
        return np.zeros(0, dtype=np.intp)
    if positions.dtype == bool:
        if positions.shape != (length,):
            raise error(f"{where}: a boolean mask must have shape ({length},); got {positions.shape}")
        return np.flatnonzero(positions)
    if not np.issubdtype(positions.dtype, np.integer):
        raise TypeError(f"{where}: index must be an int, a slice, an integer array or a boolean mask; "
                        f"got an array of dtype {positions.dtype}")
    if positions.ndim == 0:
        return _positions(int(positions), length, where, error)
    if positions.ndim != 1:
        raise error(f"{where}: an index array must be 1-d; got shape {positions.shape}")
    outside = (positions < -length) | (positions >= length)
    if outside.any():
        raise error(f"{where}: index {int(positions[outside][0])} is out of range for {length} samples "
                    f"(valid: -{length} to {length - 1})")
    return np.where(positions < 0, positions + length, positions).astype(np.intp)


class Subset:
    """The samples of ``dataset`` at ``indices``, in that order: ``subset[i]`` is
    ``dataset[indices[i]]``.

    ``indices`` is a sequence of ints in ``[-len(dataset), len(dataset))`` (a negative one
    counts from the end); it may repeat an index. ``subset[index_array]`` (or a slice or a
    boolean mask) returns the whole batch when ``dataset`` fetches whole batches (an
    :class:`ArrayDataset`, another Subset of one, ...), and a list of samples otherwise.
    """

    def __init__(self, dataset: Dataset, indices: Sequence[int] | np.ndarray) -> None:
        _check_dataset(dataset, "Subset: dataset")
        if isinstance(indices, (int, np.integer, slice)) or np.ndim(indices) != 1:
            raise ValueError(f"Subset: indices must be a 1-d sequence of ints; got {indices!r}")
        self.dataset = dataset
        self.indices = np.asarray(_positions(indices, len(dataset), "Subset", error=ValueError))

    @property
    def fetches_batches(self) -> bool:
        """Whether ``self[index_array]`` returns a whole batch (see the module docstring)."""
        return fetches_whole_batches(self.dataset)

    @property
    def labelled(self) -> bool | None:
        """Whether a batch is ``(xb, yb)``; None when the dataset does not fetch whole batches."""
        return is_labelled(self.dataset) if self.fetches_batches else None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: Any) -> Any:
        positions = _positions(index, len(self), "Subset")
        if isinstance(positions, int):
            return self.dataset[int(self.indices[positions])]
        chosen = self.indices[positions]
        if self.fetches_batches:
            return self.dataset[chosen]
        return [self.dataset[int(i)] for i in chosen]

    def __repr__(self) -> str:
        return f"Subset({self.dataset!r}, {len(self)} indices)"


class ConcatDataset:
    """The samples of several datasets one after the other.

    With ``cumulative_sizes`` the running totals of the datasets' lengths, index ``i``
    falls in the first dataset ``k`` with ``i < cumulative_sizes[k]`` and is its sample
    ``i - cumulative_sizes[k - 1]``. Every (non-empty) dataset must yield samples of the
    same structure: the same nesting of tuples, and arrays of the same per-sample shape and
    dtype at each place. ``self[index_array]`` returns the whole batch when every dataset
    fetches whole batches (e.g. all are :class:`ArrayDataset`), and a list of samples
    otherwise.
    """

    def __init__(self, datasets: Iterable[Dataset]) -> None:
        self.datasets = list(datasets)
        if not self.datasets:
            raise ValueError("ConcatDataset: datasets must not be empty")
        for k, dataset in enumerate(self.datasets):
            _check_dataset(dataset, f"ConcatDataset: dataset {k}")
        self.cumulative_sizes = [int(total) for total in np.cumsum([len(d) for d in self.datasets])]
        self._starts = np.array([0] + self.cumulative_sizes[:-1])
        self._check_same_structure()

    def _check_same_structure(self) -> None:
        reference: tuple[int, Structure] | None = None
        for k, dataset in enumerate(self.datasets):
            structure = _sample_structure(dataset)
            if structure is None:
                continue
            if reference is None:
                reference = (k, structure)
            elif structure != reference[1]:
                raise ValueError(
                    f"ConcatDataset: every dataset must yield samples of the same structure; dataset "
                    f"{reference[0]} gives {_describe(reference[1])} but dataset {k} gives {_describe(structure)}"
                )
        if self.fetches_batches:
            labelled = [is_labelled(d) for d in self.datasets]
            if len(set(labelled)) > 1:
                raise ValueError(f"ConcatDataset: the datasets must be all labelled or all unlabelled; "
                                 f"labelled per dataset: {labelled}")

    @property
    def fetches_batches(self) -> bool:
        """Whether ``self[index_array]`` returns a whole batch (see the module docstring)."""
        return all(fetches_whole_batches(d) for d in self.datasets)

    @property
    def labelled(self) -> bool | None:
        """Whether a batch is ``(xb, yb)``; None when the datasets do not fetch whole batches."""
        return is_labelled(self.datasets[0]) if self.fetches_batches else None

    def __len__(self) -> int:
        return self.cumulative_sizes[-1]

    def __getitem__(self, index: Any) -> Any:
        positions = _positions(index, len(self), "ConcatDataset")
        if isinstance(positions, int):
            k = bisect.bisect_right(self.cumulative_sizes, positions)
            return self.datasets[k][positions - int(self._starts[k])]
        which = np.searchsorted(self.cumulative_sizes, positions, side="right")
        local = positions - self._starts[which]
        if not self.fetches_batches:
            return [self.datasets[k][int(i)] for k, i in zip(which.tolist(), local.tolist(), strict=True)]
        present = np.unique(which)
        if len(present) <= 1:
            k = int(present[0]) if len(present) else 0
            return self.datasets[k][local]
        # Fetch one batch per dataset, then put the samples back in the order asked for.
        grouped = np.argsort(which, kind="stable")
        parts = [self.datasets[k][local[grouped][which[grouped] == k]] for k in present.tolist()]
        restore = np.empty_like(grouped)
        restore[grouped] = np.arange(len(grouped))
        return _join(parts, restore)

    def __repr__(self) -> str:
        return f"ConcatDataset({len(self.datasets)} datasets, {len(self)} samples)"


def _join(parts: list[Any], order: np.ndarray) -> Any:
    """Concatenate batches of the same structure along the sample axis, then take ``order``."""
    if isinstance(parts[0], tuple):
        return tuple(_join([part[k] for part in parts], order) for k in range(len(parts[0])))
    return np.concatenate(parts)[order]


def _leaf(shape: tuple[int, ...], dtype: np.dtype) -> str:
    return f"{np.dtype(dtype)}[{', '.join(str(d) for d in shape)}]"


def _structure(sample: Any) -> Structure:
    if isinstance(sample, (tuple, list)):
        return tuple(_structure(item) for item in sample)
    value = np.asarray(sample)
    return _leaf(value.shape, value.dtype)


def _sample_structure(dataset: Any) -> Structure | None:
    """The structure of the samples of ``dataset``; None when it is empty and cannot tell."""
    if isinstance(dataset, ArrayDataset):
        if isinstance(dataset.x, tuple):
            x: Structure = tuple(_leaf(a.shape[1:], a.dtype) for a in dataset.x)
        else:
            x = _leaf(dataset.x.shape[1:], dataset.x.dtype)
        if dataset.y is None:
            return x
        if dataset.w is not None:
            return x, _leaf(dataset.y.shape[1:], dataset.y.dtype), _leaf((), dataset.w.dtype)
        return x, _leaf(dataset.y.shape[1:], dataset.y.dtype)
    if isinstance(dataset, Subset):
        return _sample_structure(dataset.dataset)
    if isinstance(dataset, ConcatDataset):
        return next((s for s in map(_sample_structure, dataset.datasets) if s is not None), None)
    if len(dataset) == 0:
        return None
    return _structure(dataset[0])


def _describe(structure: Structure) -> str:
    if isinstance(structure, tuple):
        return "(" + ", ".join(_describe(s) for s in structure) + ")"
    return structure


def _split_lengths(n: int, lengths: Sequence[float]) -> list[int]:
    """Counts from ``lengths``: ints are counts summing to ``n``; fractions summing to 1 give
    ``floor(n * f)`` each, and the samples left over go one each to the parts in turn."""
    lengths = list(lengths)
    if not lengths:
        raise ValueError("random_split: lengths must not be empty")
    for k, value in enumerate(lengths):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"random_split: lengths must be ints or fractions; got {value!r} at position {k}")
    if all(isinstance(value, numbers.Integral) for value in lengths):
        counts = [int(value) for value in lengths]
        if any(c < 0 for c in counts):
            raise ValueError(f"random_split: lengths must be >= 0; got {counts}")
        if sum(counts) != n:
            raise ValueError(f"random_split: lengths {counts} sum to {sum(counts)}, but the dataset has {n} samples")
        return counts
    for k, fraction in enumerate(lengths):
        if not 0 <= fraction <= 1:
            raise ValueError(f"random_split: fraction {fraction!r} at position {k} is not between 0 and 1")
    if not math.isclose(sum(lengths), 1):
        raise ValueError(f"random_split: fractions {lengths} sum to {sum(lengths)}, not 1")
    counts = [math.floor(n * fraction) for fraction in lengths]
    for k in range(max(0, n - sum(counts))):
        counts[k % len(counts)] += 1
    return counts


def random_split(dataset: Dataset, lengths: Sequence[float], seed: int | None = None) -> list[Subset]:
    """Split ``dataset`` into disjoint random subsets (:class:`Subset`) of the given ``lengths``.

    ``lengths`` are either ints summing to ``len(dataset)``, or fractions (floats) summing
    to 1: with n samples, part k gets ``floor(n * f_k)`` samples and the remaining
    ``n - sum_k floor(n * f_k)`` go one each to parts 0, 1, 2, ... in turn (as PyTorch
    does). The samples are dealt from one random permutation, drawn from a generator
    seeded with ``seed``, or from :func:`lamina.backend.rng` without one (so
    :func:`lamina.manual_seed` makes the split reproducible).
    """
    _check_dataset(dataset, "random_split: dataset")
    n = len(dataset)
    counts = _split_lengths(n, lengths)
    generator = backend.rng() if seed is None else np.random.default_rng(seed)
    order = generator.permutation(n)
    ends = np.cumsum(counts)
    return [Subset(dataset, order[end - count:end]) for count, end in zip(counts, ends, strict=True)]
