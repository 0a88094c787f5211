"""MNIST handwritten digits as Keras gives them."""

from __future__ import annotations

import os

from lamina.data.datasets import load_mnist
from lamina.keras.datasets._format import Split, greyscale_split

__all__ = ["load_data"]


def load_data(path: str | os.PathLike | None = None, download: bool = True) -> tuple[Split, Split]:
    """``(x_train, y_train), (x_test, y_test)``: uint8 ``(60000, 28, 28)`` / ``(10000, 28, 28)``
    images, uint8 labels 0..9; ``path`` is a directory holding the IDX files (see
    :func:`lamina.data.datasets.load_mnist`)."""
    train, test = load_mnist(path, download=download)
    return greyscale_split(train), greyscale_split(test)
