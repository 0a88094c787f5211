"""Datasets: the minimal protocol the loader needs, and an in-memory array dataset.

A model of several inputs takes its samples as several arrays of the same length, one per
input, given as a tuple or list of arrays (as Keras's ``fit([x_image, x_meta], y)``);
:func:`is_multi_input`, :func:`num_samples` and :func:`take` treat one array and such a
group alike.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["ArrayDataset", "Dataset", "is_multi_input", "num_samples", "take"]


@runtime_checkable
class Dataset(Protocol):
    """Anything with a length and integer indexing; ``dataset[i]`` is one sample.

    A sample is either a tuple of arrays (e.g. ``(x, y)``) or a single array; the
    :class:`~lamina.data.DataLoader` stacks samples component-wise into batches. A
    component may itself be a tuple of arrays, the inputs of a model of several inputs
    (``((x1, x2), y)``); each of them is stacked on its own.
    """

    def __len__(self) -> int: ...

    def __getitem__(self, index: Any) -> Any: ...


def is_multi_input(x: Any) -> bool:
    """Whether ``x`` holds several inputs: a non-empty tuple or list whose items all have a
    ``shape`` (NumPy arrays and scalars, tensors), at least one of them with an axis. (One
    sample of several inputs may hold a scalar, as ``(image_i, rows[i])``.)

    A list of numbers, of lists or of NumPy scalars is one array. A list of per-sample NumPy
    arrays counts as several inputs: stack it (``np.stack``) to pass it as one.
    """
    if not isinstance(x, (tuple, list)) or not x or not all(hasattr(item, "shape") for item in x):
        return False
    return any(len(item.shape) >= 1 for item in x)


def num_samples(x: Any, where: str = "num_samples") -> int:
    """The number of samples in ``x``: the length of its first axis, or of every input of a
    group of several (which must agree; ``where`` names the caller in the error)."""
    if not is_multi_input(x):
        return len(x)
    flat = [k for k, item in enumerate(x) if len(item.shape) == 0]
    if flat:
        raise ValueError(f"{where}: every input must have a sample axis; input {flat[0]} of {len(x)} is 0-d")
    lengths = [len(item) for item in x]
    if len(set(lengths)) > 1:
        shapes = [tuple(item.shape) for item in x]
        raise ValueError(f"{where}: the {len(x)} inputs must have the same number of samples; got lengths "
                         f"{lengths} (shapes {shapes})")
    return lengths[0]


def take(x: Any, index: Any) -> Any:
    """``x[index]``, or a tuple of ``item[index]`` for each input of a group of several."""
    if is_multi_input(x):
        return tuple(item[index] for item in x)
    return x[index]


class ArrayDataset:
    """Samples held in arrays whose first axis is the sample axis.

    ``ArrayDataset(x, y)`` yields ``(x[i], y[i])``; ``ArrayDataset(x)`` (unlabelled) yields
    ``x[i]``; ``ArrayDataset(x, y, w)`` adds each sample's weight, yielding ``(x[i], y[i], w[i])``
    (one number per sample, as ``Trainer.fit`` takes them). For a model of several inputs
    ``x`` is a tuple or list of arrays of the same length (``ArrayDataset((x1, x2), y)``, see
    :func:`is_multi_input`); ``self.x`` is then a tuple of arrays and a sample or batch
    carries a tuple ``(x1[i], x2[i])`` in place of ``x[i]``. ``index`` may be an int, a slice
    or an integer index array; with an array the result is a batch ``(x[idx], y[idx])``. The
    arrays are not copied.
    """

    def __init__(self, x: Any, y: Any | None = None, w: Any | None = None) -> None:
        if is_multi_input(x):
            self.x: np.ndarray | tuple[np.ndarray, ...] = tuple(np.asarray(item) for item in x)
        else:
            self.x = np.asarray(x)
            if self.x.ndim == 0:
                raise ValueError("ArrayDataset: x must have a sample axis; got a 0-d array")
        n = num_samples(self.x, "ArrayDataset")
        if y is None:
            self.y: np.ndarray | None = None
        else:
            self.y = np.asarray(y)
            if self.y.ndim == 0:
                raise ValueError("ArrayDataset: y must have a sample axis; got a 0-d array")
            if n != len(self.y):
                raise ValueError(
                    f"ArrayDataset: x and y must have the same number of samples; "
                    f"len(x) = {n}, len(y) = {len(self.y)}"
                )
        self.w: np.ndarray | None = None
        if w is not None:
            if y is None:
                raise ValueError("ArrayDataset: sample weights w need labels y; got w without y")
            self.w = np.asarray(w)
            if self.w.shape != (n,):
                raise ValueError(f"ArrayDataset: w must hold one weight per sample, shape ({n},); "
                                 f"got shape {self.w.shape}")

    @property
    def num_inputs(self) -> int:
        """How many input arrays each sample has (1 unless ``x`` is a group of several)."""
        return len(self.x) if isinstance(self.x, tuple) else 1

    def __len__(self) -> int:
        return num_samples(self.x)

    def __getitem__(self, index: Any) -> Any:
        if not isinstance(index, (int, np.integer, slice)):
            index = np.asarray(index)
            if index.size == 0:
                index = index.astype(np.intp)
            elif index.dtype != bool and not np.issubdtype(index.dtype, np.integer):
                raise TypeError(
                    f"ArrayDataset: index must be an int, a slice, an integer array or a boolean "
                    f"mask; got an array of dtype {index.dtype}"
                )
        if self.y is None:
            return take(self.x, index)
        if self.w is not None:
            return take(self.x, index), self.y[index], self.w[index]
        return take(self.x, index), self.y[index]

    def __repr__(self) -> str:
        y = "None" if self.y is None else f"{self.y.shape} {self.y.dtype}"
        if isinstance(self.x, tuple):
            x = "(" + ", ".join(f"{item.shape} {item.dtype}" for item in self.x) + ")"
        else:
            x = f"{self.x.shape} {self.x.dtype}"
        w = "" if self.w is None else f", w={self.w.shape} {self.w.dtype}"
        return f"ArrayDataset(x={x}, y={y}{w})"
