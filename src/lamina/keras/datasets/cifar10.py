"""CIFAR-10 as Keras gives it."""

from __future__ import annotations

import os

from lamina.data.datasets import load_cifar10
from lamina.keras.datasets._format import Split, colour_split

__all__ = ["load_data"]


def load_data(path: str | os.PathLike | None = None, download: bool = True) -> tuple[Split, Split]:
    """``(x_train, y_train), (x_test, y_test)``: uint8 ``(50000, 32, 32, 3)`` / ``(10000, 32, 32, 3)``
    images, uint8 labels ``(N, 1)`` in 0..9; ``path`` is a directory holding the binary batches or
    ``cifar-10-binary.tar.gz`` (see :func:`lamina.data.datasets.load_cifar10`)."""
    train, test = load_cifar10(path, download=download)
    return colour_split(train), colour_split(test)
