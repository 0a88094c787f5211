"""Distribution-shift benchmarks built from small images such as the 8x8 digits.

* :func:`colored_digits`: Colored MNIST (Arjovsky et al. 2019) with digits. The label is
  whether the digit is 5 or more, flipped with probability ``label_noise`` (so the shape
  predicts it at best 1 - label_noise); the digit is drawn in channel 0 or 1, the colour
  agreeing with the label with probability ``colour_agreement``. Training environments take
  a high agreement (0.9, 0.8), which makes colour the easier, spurious feature; a test
  environment with 0.1 flips it. Groups are label x colour: g = 2 label + colour.
* :func:`corrupt_images`: test-time corruptions of images scaled to [0, 1]: additive
  Gaussian noise of standard deviation ``severity`` or contrast reduced to the factor
  ``severity`` around each image's mean, clipped to [0, 1].
"""

from __future__ import annotations

import numpy as np

__all__ = ["colored_digits", "corrupt_images"]


def colored_digits(images, digits, colour_agreement: float, label_noise: float = 0.25,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x, y, colour, group)`` from grey ``images`` (N, h, w, 1) or (N, h, w) with values in
    [0, 1] and their ``digits`` 0..9: x (N, h, w, 2) float32, binary labels y, colours and
    groups 2 y + colour (all int64)."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    digits = np.asarray(digits)
    if images.ndim != 3 or digits.shape != (images.shape[0],):
        raise ValueError(f"colored_digits: expected images (N, h, w[, 1]) and N digit labels, got "
                         f"{images.shape} and {digits.shape}")
    for name, p in (("colour_agreement", colour_agreement), ("label_noise", label_noise)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"colored_digits: {name} must be a probability in [0, 1], got {p!r}")
    rng = np.random.default_rng(seed)
    n = len(digits)
    labels = (digits >= 5).astype(np.int64) ^ (rng.random(n) < label_noise).astype(np.int64)
    colours = labels ^ (rng.random(n) >= colour_agreement).astype(np.int64)
    x = np.zeros(images.shape + (2,), dtype=np.float32)
    x[np.arange(n), ..., colours] = images
    return x, labels, colours, 2 * labels + colours


def corrupt_images(images, kind: str, severity: float, seed: int = 0) -> np.ndarray:
    """``images`` in [0, 1] with a ``kind`` in {"gaussian_noise", "contrast"} corruption."""
    images = np.asarray(images, dtype=np.float32)
    if kind == "gaussian_noise":
        rng = np.random.default_rng(seed)
        out = images + severity * rng.standard_normal(images.shape).astype(np.float32)
    elif kind == "contrast":
        centre = images.mean(axis=tuple(range(1, images.ndim)), keepdims=True)
        out = centre + severity * (images - centre)
    else:
        raise ValueError(f"corrupt_images: kind must be 'gaussian_noise' or 'contrast', got {kind!r}")
    return np.clip(out, 0.0, 1.0).astype(np.float32)
