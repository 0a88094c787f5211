"""Training pairs for single-image super-resolution: a high-resolution image and its
low-resolution version made by a known degradation (the usual "bicubic x r" benchmark setting)."""

from __future__ import annotations

import numpy

from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.interpolate import interpolate

__all__ = ["DEGRADATIONS", "sr_pairs"]

DEGRADATIONS = ("bicubic", "bilinear", "area", "nearest")
"""How :func:`sr_pairs` shrinks an image: an interpolation mode of :func:`lamina.functional.interpolate`
('area' is the mean of each r x r block)."""


def sr_pairs(images, scale: int, degradation: str = "bicubic",
             clip: tuple[float, float] | None = None) -> tuple[numpy.ndarray, numpy.ndarray]:
    """(LR, HR) pairs from ``images`` (N, H, W, C), or (N, H, W) grey images (a channel axis is added).

    HR: each image cropped (bottom and right) to H' = H - H mod r, W' = W - W mod r, r = ``scale``.
    LR: HR resized to (H' / r, W' / r) by ``degradation`` (PyTorch's ``interpolate`` conventions,
    no antialiasing), clipped to ``clip`` if given (bicubic overshoots). Arrays of the images' float
    dtype (float32 for integer images)."""
    if not (isinstance(scale, int) and scale >= 1):
        raise ValueError(f"sr_pairs: scale must be a positive integer, got {scale!r}")
    if degradation not in DEGRADATIONS:
        raise ValueError(f"sr_pairs: degradation must be one of {DEGRADATIONS}, got {degradation!r}")
    hr = numpy.asarray(images.data if isinstance(images, Tensor) else images)
    if hr.ndim == 3:
        hr = hr[..., None]
    if hr.ndim != 4:
        raise ShapeError(f"sr_pairs: expected images of shape (N, H, W, C) or (N, H, W), got shape {hr.shape}")
    h, w = hr.shape[1] - hr.shape[1] % scale, hr.shape[2] - hr.shape[2] % scale
    if h == 0 or w == 0:
        raise ShapeError(f"sr_pairs: images of {hr.shape[1]}x{hr.shape[2]} are smaller than the scale {scale}")
    dtype = hr.dtype if hr.dtype.kind == "f" else numpy.float32
    hr = numpy.ascontiguousarray(hr[:, :h, :w], dtype=dtype)
    lr = interpolate(Tensor(hr, dtype=dtype), size=(h // scale, w // scale), mode=degradation).numpy()
    if clip is not None:
        lr = numpy.clip(lr, clip[0], clip[1])
    return lr, hr
