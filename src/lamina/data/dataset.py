"""Datasets: the minimal protocol the loader needs, and an in-memory array dataset."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["ArrayDataset", "Dataset"]


@runtime_checkable
class Dataset(Protocol):
    """Anything with a length and integer indexing; ``dataset[i]`` is one sample.

    A sample is either a tuple of arrays (e.g. ``(x, y)``) or a single array; the
    :class:`~lamina.data.DataLoader` stacks samples component-wise into batches.
    """

    def __len__(self) -> int: ...

    def __getitem__(self, index: Any) -> Any: ...


class ArrayDataset:
    """Samples held in arrays whose first axis is the sample axis.

    ``ArrayDataset(x, y)`` yields ``(x[i], y[i])``; ``ArrayDataset(x)`` (unlabelled) yields
    ``x[i]``. ``index`` may be an int, a slice or an integer index array; with an array the
    result is a batch ``(x[idx], y[idx])``. The arrays are not copied.
    """

    def __init__(self, x: Any, y: Any | None = None) -> None:
        self.x = np.asarray(x)
        if self.x.ndim == 0:
            raise ValueError("ArrayDataset: x must have a sample axis; got a 0-d array")
        if y is None:
            self.y: np.ndarray | None = None
        else:
            self.y = np.asarray(y)
            if self.y.ndim == 0:
                raise ValueError("ArrayDataset: y must have a sample axis; got a 0-d array")
            if len(self.x) != len(self.y):
                raise ValueError(
                    f"ArrayDataset: x and y must have the same number of samples; "
                    f"len(x) = {len(self.x)}, len(y) = {len(self.y)}"
                )

    def __len__(self) -> int:
        return len(self.x)

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
            return self.x[index]
        return self.x[index], self.y[index]

    def __repr__(self) -> str:
        y = "None" if self.y is None else f"{self.y.shape} {self.y.dtype}"
        return f"ArrayDataset(x={self.x.shape} {self.x.dtype}, y={y})"
