"""lamina's dataset arrays in Keras's layout."""

from __future__ import annotations

import numpy as np

Split = tuple[np.ndarray, np.ndarray]


def greyscale_split(split: Split) -> Split:
    """(N, H, W, 1) uint8 images and int labels -> Keras's (N, H, W) images and uint8 (N,) labels."""
    images, labels = split
    return np.ascontiguousarray(images[..., 0]), np.asarray(labels, dtype=np.uint8)


def colour_split(split: Split) -> Split:
    """(N, H, W, 3) images and int labels -> Keras's images and uint8 (N, 1) labels."""
    images, labels = split
    return images, np.asarray(labels, dtype=np.uint8).reshape(-1, 1)
