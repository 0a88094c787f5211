"""``MPerClassSampler``: batches holding ``m`` samples of each of several classes, so that
every embedding of a metric-learning batch has positives (pytorch-metric-learning's sampler).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lamina.data.samplers import _positive_int

__all__ = ["MPerClassSampler"]


class MPerClassSampler:
    """Each epoch: ``length`` indices in consecutive groups of ``m`` of one class.

    With ``batch_size`` (a multiple of m, at most m times the number of classes), every run
    of ``batch_size`` indices takes batch_size / m distinct classes at random and m samples
    of each; without it, each block of m x (number of classes) indices visits every class
    once, in random order. Inside a class the m samples are drawn without replacement, or
    with replacement when the class has fewer than m samples. ``length`` (default: the
    number of labels) is rounded down to whole batches (whole blocks without
    ``batch_size``). Give the :class:`~lamina.data.DataLoader` the same ``batch_size`` so
    that its batches line up with the sampler's.
    """

    def __init__(self, labels: Any, m: int, batch_size: int | None = None, length: int | None = None) -> None:
        where = "MPerClassSampler"
        labels = np.asarray(labels)
        if labels.ndim != 1 or labels.size == 0:
            raise ValueError(f"{where}: labels must be a non-empty 1-d array, one per sample; got shape {labels.shape}")
        self.labels = labels
        self.m = _positive_int(m, "m", where)
        self.classes, inverse = np.unique(labels, return_inverse=True)
        self.members = [np.flatnonzero(inverse == k) for k in range(len(self.classes))]
        block = self.m * len(self.classes)
        if batch_size is not None:
            batch_size = _positive_int(batch_size, "batch_size", where)
            if batch_size % self.m:
                raise ValueError(f"{where}: batch_size={batch_size} must be a multiple of m={self.m}")
            if batch_size > block:
                raise ValueError(f"{where}: batch_size={batch_size} needs {batch_size // self.m} classes of "
                                 f"m={self.m} samples but the labels hold only {len(self.classes)} classes")
            block = batch_size
        self.batch_size = batch_size
        length = len(labels) if length is None else _positive_int(length, "length", where)
        if length < block:
            raise ValueError(f"{where}: length={length} is shorter than one batch of {block} indices")
        self.length = length - length % block
        self._block = block

    def num_indices(self, n: int) -> int:
        return self.length

    def order(self, n: int, generator: np.random.Generator) -> np.ndarray:
        if n != len(self.labels):
            raise ValueError(f"MPerClassSampler: {len(self.labels)} labels for a dataset of {n} samples; "
                             f"give one label per sample")
        per_block = self._block // self.m
        blocks = []
        for _ in range(self.length // self._block):
            chosen = generator.choice(len(self.classes), size=per_block, replace=False)
            blocks.extend(self._draw(self.members[k], generator) for k in chosen)
        return np.concatenate(blocks)

    def _draw(self, members: np.ndarray, generator: np.random.Generator) -> np.ndarray:
        return generator.choice(members, size=self.m, replace=len(members) < self.m)

    def __repr__(self) -> str:
        return (f"MPerClassSampler({len(self.classes)} classes, m={self.m}, batch_size={self.batch_size}, "
                f"length={self.length})")
