"""The photometric transform for object detection: torchvision's ``RandomPhotometricDistort``
(SSD's colour augmentation: brightness, contrast, saturation, hue and a channel permutation),
which leaves the boxes untouched, and the HSV hue turn it uses. Re-exported by
:mod:`lamina.data.detection_transforms`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lamina.data.detection_ops import Target, bounds, check_sample, checked_probability, generator_or_default
from lamina.data.image_ops import adjust_brightness, adjust_contrast, adjust_saturation

__all__ = ["RandomPhotometricDistort"]


def _hue_shifted(image: np.ndarray, shift: float) -> np.ndarray:
    """An RGB image with its hue turned by ``shift`` turns (through HSV; other images as they are)."""
    from lamina.nn.augmentation_more import hsv_to_rgb, rgb_to_hsv

    if image.shape[2] != 3:
        return image
    values = image.astype(np.float64) / 255 if image.dtype == np.uint8 else image.astype(np.float64)
    hsv = np.asarray(rgb_to_hsv(values))
    hsv[..., 0] = (hsv[..., 0] + shift) % 1.0
    rgb = np.asarray(hsv_to_rgb(hsv))
    if image.dtype == np.uint8:
        return np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8)
    return rgb.astype(image.dtype)


class RandomPhotometricDistort:
    """torchvision's ``RandomPhotometricDistort`` (SSD's colour augmentation), boxes untouched:
    each of brightness, contrast, saturation and hue is applied with probability ``p`` with a
    factor uniform in its range (hue: a shift in turns); contrast comes before or after
    saturation and hue with probability 1/2; then, with probability ``p``, the channels are
    permuted at random. Brightness, contrast and saturation are :mod:`lamina.data.image_ops`'s
    blends, the hue turn goes through HSV."""

    def __init__(self, brightness: Sequence[float] = (0.875, 1.125), contrast: Sequence[float] = (0.5, 1.5),
                 saturation: Sequence[float] = (0.5, 1.5), hue: Sequence[float] = (-0.05, 0.05), p: float = 0.5,
                 rng: np.random.Generator | None = None) -> None:
        where = "RandomPhotometricDistort"
        self.brightness, self.contrast = bounds(brightness, where, "brightness"), bounds(contrast, where, "contrast")
        self.saturation, self.hue = bounds(saturation, where, "saturation"), bounds(hue, where, "hue")
        if min(self.brightness[0], self.contrast[0], self.saturation[0]) < 0 or not -0.5 <= self.hue[0] <= \
                self.hue[1] <= 0.5:
            raise ValueError(f"{where}: factors must be >= 0 and the hue range within [-0.5, 0.5]")
        self.p, self.rng = checked_probability(p, where), rng

    def parameters(self, channels: int) -> dict:
        """One draw: a factor or None for each step, 'contrast_before', 'permutation' or None."""
        rng = generator_or_default(self.rng)
        drawn: dict[str, Any] = {}
        for name in ("brightness", "contrast", "saturation", "hue"):
            drawn[name] = float(rng.uniform(*getattr(self, name))) if rng.random() < self.p else None
        drawn["contrast_before"] = bool(rng.random() < 0.5)
        drawn["permutation"] = rng.permutation(channels) if rng.random() < self.p else None
        return drawn

    @staticmethod
    def apply(image: np.ndarray, drawn: dict) -> np.ndarray:
        """The image distorted as ``drawn`` (see :meth:`parameters`) says."""
        if drawn["brightness"] is not None:
            image = adjust_brightness(image, drawn["brightness"])
        if drawn["contrast"] is not None and drawn["contrast_before"]:
            image = adjust_contrast(image, drawn["contrast"])
        if drawn["saturation"] is not None:
            image = adjust_saturation(image, drawn["saturation"])
        if drawn["hue"] is not None:
            image = _hue_shifted(image, drawn["hue"])
        if drawn["contrast"] is not None and not drawn["contrast_before"]:
            image = adjust_contrast(image, drawn["contrast"])
        if drawn["permutation"] is not None:
            image = image[..., drawn["permutation"]]
        return image

    def __call__(self, image: np.ndarray, target: Target) -> tuple[np.ndarray, Target]:
        image, target = check_sample(image, target, "RandomPhotometricDistort")
        return self.apply(image, self.parameters(image.shape[2])), target

    def __repr__(self) -> str:
        return (f"RandomPhotometricDistort(brightness={self.brightness}, contrast={self.contrast}, "
                f"saturation={self.saturation}, hue={self.hue}, p={self.p})")
