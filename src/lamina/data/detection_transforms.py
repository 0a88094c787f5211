"""Box-aware augmentation for object detection, after torchvision's ``transforms.v2``.

A sample is ``(image, target)``: the image (H, W, C), uint8 (0..255) or float (0..1), and a
target dict in the convention of lamina's detectors,

- ``boxes`` (n, 4): corner boxes (x1, y1, x2, y2) in pixels (see :mod:`lamina.data.detection_boxes`);
- ``labels`` (n,), and optionally ``masks`` (n, H, W) and ``keypoints`` (n, k, 3) of
  (x, y, visibility) in pixels; any other entry passes through untouched.

Every transform is a callable ``(image, target) -> (image, target)`` returning new arrays;
:class:`Compose` chains them. Geometric transforms move the boxes, masks and keypoints with
the image: boxes by their corners (a rotation gives the box enclosing the turned corners),
masks by the same resampling as the image with nearest neighbours and 0 outside, keypoints as
points, whose visibility becomes 0 when they leave the image. Transforms that can push a box
out of the image clamp it to the image, which may leave it degenerate (zero width or height);
:class:`SanitizeBoundingBoxes` then drops it with its label, mask and keypoints.

Random transforms draw from ``rng`` (a NumPy Generator) when one is given, else from
:func:`lamina.backend.rng` at call time, so :func:`lamina.manual_seed` repeats them. They
follow torchvision's sampling (the order and ranges of the draws, the integer truncations),
with NumPy's generator in place of torch's. :func:`ssd_augmentation` is torchvision's SSD
training recipe. The deterministic operations the transforms apply (flips, crop, pad,
resize, affine warps) are in :mod:`lamina.data.detection_ops` and re-exported here.

The geometric transforms are in :mod:`lamina.data.detection_geometric` and the photometric one
in :mod:`lamina.data.detection_photometric`; this module holds :class:`Compose`, the box
clean-up transforms and the SSD recipe, and re-exports the others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from lamina.data.detection_boxes import clamp_boxes, valid_boxes
from lamina.data.detection_geometric import (  # noqa: F401  (moved there, importable from here too)
    RandomAffine,
    RandomCrop,
    RandomHorizontalFlip,
    RandomIoUCrop,
    RandomResize,
    RandomShortestSize,
    RandomVerticalFlip,
    RandomZoomOut,
    Resize,
    ScaleJitter,
    _Flip,
    _iou_with_window,
    _scaled,
    _symmetric,
)
from lamina.data.detection_ops import (  # noqa: F401  (the operations, importable from here)
    PER_OBJECT_KEYS,
    Target,
    affine,
    affine_matrix,
    bounds,
    check_sample,
    checked_probability,
    crop,
    generator_or_default,
    horizontal_flip,
    pad,
    resize,
    resized_size,
    vertical_flip,
)
from lamina.data.detection_photometric import RandomPhotometricDistort, _hue_shifted  # noqa: F401  (moved there)
from lamina.errors import ShapeError

__all__ = [
    "ClampBoundingBoxes", "Compose", "RandomAffine", "RandomCrop", "RandomHorizontalFlip", "RandomIoUCrop",
    "RandomPhotometricDistort", "RandomResize", "RandomShortestSize", "RandomVerticalFlip", "RandomZoomOut",
    "Resize", "SanitizeBoundingBoxes", "ScaleJitter", "affine", "affine_matrix", "check_sample", "crop",
    "horizontal_flip", "pad", "resize", "resized_size", "ssd_augmentation", "vertical_flip",
]


# ----------------------------------------------------------------------------- transforms

class Compose:
    """Apply ``transforms`` in order to (image, target)."""

    def __init__(self, transforms: Sequence[Callable[[np.ndarray, Target], tuple[np.ndarray, Target]]]) -> None:
        self.transforms = list(transforms)
        for k, transform in enumerate(self.transforms):
            if not callable(transform):
                raise TypeError(f"Compose: transform {k} is not callable; got {type(transform).__name__}")

    def __call__(self, image: np.ndarray, target: Target) -> tuple[np.ndarray, Target]:
        for transform in self.transforms:
            image, target = transform(image, target)
        return image, target

    def __repr__(self) -> str:
        return "Compose(\n" + "".join(f"    {t!r},\n" for t in self.transforms) + ")"


class ClampBoundingBoxes:
    """Clip the boxes to the image (:func:`lamina.data.detection_boxes.clamp_boxes`)."""

    def __call__(self, image: np.ndarray, target: Target) -> tuple[np.ndarray, Target]:
        image, target = check_sample(image, target, "ClampBoundingBoxes")
        target["boxes"] = clamp_boxes(target["boxes"], *image.shape[:2])
        return image, target

    def __repr__(self) -> str:
        return "ClampBoundingBoxes()"


class SanitizeBoundingBoxes:
    """Drop the boxes that fail :func:`lamina.data.detection_boxes.valid_boxes` (smaller than
    ``min_size`` on a side or ``min_area`` in area, or reaching outside the image) together
    with their entries in 'labels', 'masks', 'keypoints', 'iscrowd', 'area' and ``extra_keys``."""

    def __init__(self, min_size: float = 1.0, min_area: float = 1.0, extra_keys: Sequence[str] = ()) -> None:
        if min_size < 0 or min_area < 0:
            raise ValueError(f"SanitizeBoundingBoxes: min_size and min_area must be >= 0; got {min_size!r}, "
                             f"{min_area!r}")
        self.min_size, self.min_area, self.extra_keys = float(min_size), float(min_area), tuple(extra_keys)

    def __call__(self, image: np.ndarray, target: Target) -> tuple[np.ndarray, Target]:
        image, target = check_sample(image, target, "SanitizeBoundingBoxes")
        keep = valid_boxes(target["boxes"], *image.shape[:2], self.min_size, self.min_area)
        for key in ("boxes", *PER_OBJECT_KEYS, *self.extra_keys):
            if key in target:
                values = np.asarray(target[key])
                if len(values) != len(keep):
                    raise ShapeError(f"SanitizeBoundingBoxes: '{key}' has {len(values)} entries for "
                                     f"{len(keep)} boxes")
                target[key] = values[keep]
        return image, target

    def __repr__(self) -> str:
        return f"SanitizeBoundingBoxes(min_size={self.min_size}, min_area={self.min_area})"


def ssd_augmentation(size: Sequence[int] | None = None, fill: float | Sequence[float] = 0, hflip_prob: float = 0.5,
                     rng: np.random.Generator | None = None) -> Compose:
    """torchvision's SSD training recipe (references/detection/presets.py, 'ssd'): photometric
    distortion, zoom out onto a ``fill`` canvas, SSD's IoU crop, a horizontal flip with
    probability ``hflip_prob``; then, when ``size`` (height, width) is given, a resize to it
    (the fixed input of a model that needs one), and last the removal of degenerate boxes."""
    steps: list = [RandomPhotometricDistort(rng=rng), RandomZoomOut(fill=fill, rng=rng), RandomIoUCrop(rng=rng),
                   RandomHorizontalFlip(hflip_prob, rng=rng)]
    if size is not None:
        steps.append(Resize(tuple(size)))
    steps.append(SanitizeBoundingBoxes())
    return Compose(steps)
