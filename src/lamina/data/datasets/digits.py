"""scikit-learn's embedded 8x8 handwritten digits, optionally enlarged for LeNet-5."""

from __future__ import annotations

import numpy as np

__all__ = ["load_digits"]

_SCALE = 3
_PAD = 4


def load_digits(size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits of ``sklearn.datasets.load_digits`` as ``(x, y)``.

    ``x`` is uint8 NHWC with values 0-255 (the original 0-16 grey levels times 255/16,
    rounded); ``y`` int64 labels 0..9. Splitting is left to the caller (e.g.
    :func:`lamina.data.train_val_test_split`). The data ships inside scikit-learn: no
    download.

    - ``size=8``: the raw images, ``(1797, 8, 8, 1)``.
    - ``size=32``: ``(1797, 32, 32, 1)`` for LeNet-5. Each 8x8 image is enlarged 3x by
      pixel replication (nearest neighbour: every pixel becomes a 3x3 block, no new
      grey levels are invented) to 24x24, then zero-padded by 4 on every side to
      32x32. This gives the digit a 24x24 extent inside a blank border, like MNIST's
      20x20 digits centred in 28x28 (padded to 32x32 for LeNet-5), so LeNet's 5x5
      convolutions and pooling see strokes several pixels wide; zero-padding the 8x8
      alone would leave a tiny digit that two poolings reduce to about 2x2.
    """
    if size not in (8, 32):
        raise ValueError(f"load_digits: size must be 8 (raw) or 32 (3x upsampled, padded); got {size!r}")
    from sklearn.datasets import load_digits as sklearn_load_digits

    bunch = sklearn_load_digits()
    images = np.rint(np.asarray(bunch.images, dtype=np.float64) * (255.0 / 16.0))
    x = np.clip(images, 0, 255).astype(np.uint8)
    if size == 32:
        x = x.repeat(_SCALE, axis=1).repeat(_SCALE, axis=2)
        x = np.pad(x, ((0, 0), (_PAD, _PAD), (_PAD, _PAD)))
    return np.ascontiguousarray(x[..., None]), np.asarray(bunch.target, dtype=np.int64)
