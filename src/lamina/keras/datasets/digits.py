"""scikit-learn's 8x8 handwritten digits, split into training and test sets at a fixed seed."""

from __future__ import annotations

import numpy as np

from lamina.data.datasets import load_digits
from lamina.keras.datasets._format import Split, greyscale_split

__all__ = ["load_data"]


def load_data(test_split: float = 0.2, seed: int = 113) -> tuple[Split, Split]:
    """``(x_train, y_train), (x_test, y_test)`` from the 1797 digits: uint8 ``(N, 8, 8)`` images
    (grey levels 0-16 scaled to 0-255), uint8 labels 0..9.

    The samples are shuffled by a permutation drawn from ``numpy.random.default_rng(seed)``;
    the last round(1797 ``test_split``) of them form the test set, so a given seed always
    gives the same split. The data ships inside scikit-learn: nothing is downloaded.
    """
    if not 0.0 < test_split < 1.0:
        raise ValueError(f"digits.load_data: test_split must be in (0, 1), got {test_split!r}")
    images, labels = greyscale_split(load_digits(size=8))
    order = np.random.default_rng(seed).permutation(len(images))
    n_test = round(len(images) * test_split)
    if n_test == 0 or n_test == len(images):
        raise ValueError(f"digits.load_data: test_split={test_split!r} leaves an empty training or test "
                         f"set of the {len(images)} samples")
    train, test = order[:-n_test], order[-n_test:]
    return (images[train], labels[train]), (images[test], labels[test])
