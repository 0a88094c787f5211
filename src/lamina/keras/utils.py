"""Keras's utilities: ``to_categorical``."""

from __future__ import annotations

import numpy as np

__all__ = ["to_categorical"]


def to_categorical(x, num_classes: int | None = None) -> np.ndarray:
    """One-hot rows (float32) of integer class labels: label k becomes a row with 1 at k.
    ``num_classes`` defaults to the largest label + 1; a trailing axis of size 1 is dropped."""
    labels = np.asarray(x)
    if labels.dtype.kind not in "iu" and not (labels.dtype.kind == "f" and np.all(labels == np.round(labels))):
        raise ValueError(f"to_categorical: expected integer class labels, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    if labels.ndim > 1 and labels.shape[-1] == 1:
        labels = labels[..., 0]
    if labels.size and labels.min() < 0:
        raise ValueError(f"to_categorical: labels must be >= 0, found {labels.min()}")
    classes = int(labels.max()) + 1 if num_classes is None and labels.size else int(num_classes or 0)
    if labels.size and labels.max() >= classes:
        raise ValueError(f"to_categorical: label {labels.max()} does not fit num_classes={classes}")
    return np.eye(classes, dtype=np.float32)[labels]
