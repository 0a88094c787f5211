"""Samplers: the order in which a :class:`~lamina.data.DataLoader` visits a dataset.

A sampler does not hold a random generator of its own: at the start of every epoch the
loader calls ``sampler.order(n, generator)`` with the dataset's length ``n`` and the
loader's own NumPy ``Generator``, and batches the indices it returns. The loader's seed
therefore fixes every epoch's order, and its ``state_dict`` (which saves the generator
state from before the order was drawn) resumes in the middle of an epoch exactly.
``sampler.num_indices(n)`` tells the loader how many indices one epoch holds.
"""

from __future__ import annotations

import numbers
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["PoissonSampler", "RandomSampler", "Sampler", "SequentialSampler", "SubsetRandomSampler",
           "WeightedRandomSampler"]


@runtime_checkable
class Sampler(Protocol):
    """Gives one epoch's sample indices for a dataset of ``n`` samples."""

    def num_indices(self, n: int) -> int:
        """How many indices one epoch holds."""
        ...

    def order(self, n: int, generator: np.random.Generator) -> np.ndarray:
        """One epoch's indices (each in ``[0, n)``), drawn with ``generator``."""
        ...


def _positive_int(value: Any, name: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{where}: {name} must be a positive integer; got {value!r}")
    return int(value)


def _check_bool(value: Any, name: str, where: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{where}: {name} must be True or False; got {value!r}")
    return bool(value)


class SequentialSampler:
    """The indices ``0, 1, ..., n - 1`` in order, every epoch."""

    def num_indices(self, n: int) -> int:
        return n

    def order(self, n: int, generator: np.random.Generator) -> np.ndarray:
        return np.arange(n)

    def __repr__(self) -> str:
        return "SequentialSampler()"


class RandomSampler:
    """Random indices, ``num_samples`` of them per epoch (default: the dataset's length).

    Without replacement each run of ``n`` indices is a fresh permutation of ``0 .. n - 1``:
    ``num_samples = n`` visits every sample once, a larger ``num_samples`` chains
    permutations (the last one cut short). With ``replacement=True`` every index is drawn
    uniformly and independently.
    """

    def __init__(self, replacement: bool = False, num_samples: int | None = None) -> None:
        self.replacement = _check_bool(replacement, "replacement", "RandomSampler")
        self.num_samples = None if num_samples is None else _positive_int(num_samples, "num_samples",
                                                                          "RandomSampler")

    def num_indices(self, n: int) -> int:
        return n if self.num_samples is None else self.num_samples

    def order(self, n: int, generator: np.random.Generator) -> np.ndarray:
        count = self.num_indices(n)
        if n == 0:
            if count:
                raise ValueError(f"RandomSampler: cannot draw {count} indices from an empty dataset")
            return np.zeros(0, dtype=np.int64)
        if self.replacement:
            return generator.integers(0, n, size=count)
        runs = [generator.permutation(n) for _ in range(count // n)]
        if count % n:
            runs.append(generator.permutation(n)[:count % n])
        return np.concatenate(runs)

    def __repr__(self) -> str:
        return f"RandomSampler(replacement={self.replacement}, num_samples={self.num_samples})"


class SubsetRandomSampler:
    """The given ``indices`` in a fresh random order every epoch (each once).

    An index may be negative, counting from the end of the dataset; every index must lie in
    ``[-n, n)`` for the dataset of ``n`` samples it is used with.
    """

    def __init__(self, indices: Any) -> None:
        indices = np.asarray(indices)
        if indices.size == 0:
            indices = indices.astype(np.int64)
        if indices.ndim != 1 or not np.issubdtype(indices.dtype, np.integer):
            raise ValueError(f"SubsetRandomSampler: indices must be a 1-d sequence of ints; got an array of "
                             f"shape {indices.shape} and dtype {indices.dtype}")
        self.indices = indices

    def num_indices(self, n: int) -> int:
        return len(self.indices)

    def order(self, n: int, generator: np.random.Generator) -> np.ndarray:
        outside = (self.indices < -n) | (self.indices >= n)
        if outside.any():
            raise ValueError(f"SubsetRandomSampler: index {int(self.indices[outside][0])} is out of range for a "
                             f"dataset of {n} samples (valid: -{n} to {n - 1})")
        positions = np.where(self.indices < 0, self.indices + n, self.indices)
        return positions[generator.permutation(len(positions))]

    def __repr__(self) -> str:
        return f"SubsetRandomSampler({len(self.indices)} indices)"


class WeightedRandomSampler:
    """``num_samples`` indices per epoch, index ``i`` drawn with probability
    ``p_i = w_i / sum_j w_j``.

    ``weights`` holds one non-negative weight per sample of the dataset (not necessarily
    summing to 1; at least one positive). With ``replacement=True`` the draws are
    independent, so the expected count of index ``i`` is ``num_samples * p_i``; with
    ``replacement=False`` each draw picks among the indices not drawn yet, with
    probabilities proportional to their weights, so ``num_samples`` may not exceed the
    number of positive weights.
    """

    def __init__(self, weights: Any, num_samples: int, replacement: bool = True) -> None:
        weights = np.asarray(weights, dtype=np.float64)
        if weights.ndim != 1:
            raise ValueError(f"WeightedRandomSampler: weights must be 1-d, one per sample; got shape {weights.shape}")
        if not np.isfinite(weights).all():
            raise ValueError("WeightedRandomSampler: weights must be finite; got NaN or infinity")
        if (weights < 0).any():
            k = int(np.flatnonzero(weights < 0)[0])
            raise ValueError(f"WeightedRandomSampler: weights must be >= 0; got {float(weights[k])} at index {k}")
        if not weights.sum() > 0:
            raise ValueError(f"WeightedRandomSampler: at least one weight must be positive; got {len(weights)} "
                             f"weights summing to 0")
        self.weights = weights
        self.num_samples = _positive_int(num_samples, "num_samples", "WeightedRandomSampler")
        self.replacement = _check_bool(replacement, "replacement", "WeightedRandomSampler")
        positive = int(np.count_nonzero(weights))
        if not self.replacement and self.num_samples > positive:
            raise ValueError(f"WeightedRandomSampler: without replacement num_samples={self.num_samples} cannot "
                             f"exceed the {positive} positive weights")

    def num_indices(self, n: int) -> int:
        return self.num_samples

    def order(self, n: int, generator: np.random.Generator) -> np.ndarray:
        if len(self.weights) != n:
            raise ValueError(f"WeightedRandomSampler: {len(self.weights)} weights for a dataset of {n} samples; "
                             f"give one weight per sample")
        probabilities = self.weights / self.weights.sum()
        return generator.choice(n, size=self.num_samples, replace=self.replacement, p=probabilities)

    def __repr__(self) -> str:
        return (f"WeightedRandomSampler({len(self.weights)} weights, num_samples={self.num_samples}, "
                f"replacement={self.replacement})")


class PoissonSampler:
    """Poisson sampling, as differentially private SGD assumes: each of ``steps`` batches per
    epoch holds every sample independently with probability ``sample_rate`` q, so a batch's
    size is Binomial(n, q) (mean q n; a batch may be empty) and a sample may appear in several
    batches of an epoch or in none. ``steps`` defaults to round(1 / q), one pass in expectation.

    It gives the loader whole batches (:meth:`batches`); the loader's ``batch_size`` is unused.
    """

    def __init__(self, sample_rate: float, steps: int | None = None) -> None:
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, numbers.Real) or not 0 < sample_rate <= 1:
            raise ValueError(f"PoissonSampler: sample_rate must lie in (0, 1]; got {sample_rate!r}")
        self.sample_rate = float(sample_rate)
        self.steps = max(1, round(1 / self.sample_rate)) if steps is None else _positive_int(steps, "steps",
                                                                                             "PoissonSampler")

    def num_batches(self, n: int) -> int:
        return self.steps

    def num_indices(self, n: int) -> int:
        """The expected number of indices in an epoch, rounded."""
        return round(self.sample_rate * n * self.steps)

    def batches(self, n: int, generator: np.random.Generator) -> list[np.ndarray]:
        """One epoch's batches: for each, the indices i whose uniform draw u_i < q."""
        return [np.flatnonzero(generator.random(n) < self.sample_rate) for _ in range(self.steps)]

    def order(self, n: int, generator: np.random.Generator) -> np.ndarray:
        return np.concatenate(self.batches(n, generator))

    def __repr__(self) -> str:
        return f"PoissonSampler(sample_rate={self.sample_rate}, steps={self.steps})"
