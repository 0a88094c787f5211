"""The image operations of the automatic augmentation policies (:mod:`lamina.data.auto_augment`),
on one NumPy image (h, w, c): uint8 in [0, 255] or float in [0, 1], returned in the same dtype.

They behave as torchvision applies them to Pillow images (``Image.transform``, ``ImageOps``,
``ImageEnhance``), computed here with NumPy:

- geometry (``shear_x``, ``shear_y``, ``translate_x``, ``translate_y``, ``rotate``) by inverse
  mapping: output pixel (i, j), whose centre is (X, Y) = (j + 1/2, i + 1/2), reads the input at
  (u, v) = A (X, Y, 1) for a 2 x 3 matrix A, 'nearest' taking pixel (floor(v), floor(u)) and
  'bilinear' blending the four pixels around (u - 1/2, v - 1/2) (clamped at the border);
  points with u outside [0, w) or v outside [0, h) get ``fill`` (0 by default). A uint8 result
  is truncated towards zero as Pillow does;
- colour (``adjust_brightness``, ``adjust_saturation``, ``adjust_contrast``,
  ``adjust_sharpness``) as a blend ``y = d + factor (x - d)`` with a degenerate image d, clipped
  to the value range; uint8 in float32 arithmetic and truncated, as Pillow's ``Image.blend``;
- tone (``posterize``, ``solarize``, ``autocontrast``, ``equalize``, ``invert``) by value
  mapping.

Grey levels follow ITU-R BT.601 as Pillow converts RGB to 'L': ``(19595 R + 38470 G + 7471 B
+ 2^15) >> 16`` for uint8, ``0.299 R + 0.587 G + 0.114 B`` for float. A grey image (h, w, 1) is
its own grey level.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from lamina.errors import ShapeError

__all__ = [
    "IMAGE_OPS", "INTERPOLATIONS", "adjust_brightness", "adjust_contrast", "adjust_saturation", "adjust_sharpness",
    "affine_warp", "autocontrast", "check_image", "check_interpolation", "equalize", "grey_level", "invert",
    "posterize", "rotate", "shear_x", "shear_y", "solarize", "translate_x", "translate_y",
]

INTERPOLATIONS = ("nearest", "bilinear")

Fill = float | Sequence[float] | None


def check_image(x: np.ndarray, where: str) -> np.ndarray:
    """``x`` as an array of shape (h, w, c) with dtype uint8 or float, else a clear error."""
    x = np.asarray(x)
    if x.ndim != 3:
        raise ShapeError(f"{where}: expected one image of shape (height, width, channels); got shape {x.shape}")
    if x.dtype != np.uint8 and x.dtype.kind != "f":
        raise TypeError(f"{where}: expected a uint8 image (0..255) or a float image (0..1); got dtype {x.dtype}")
    return x


def _top(x: np.ndarray) -> float:
    """The largest value of the image's range: 255 for uint8, 1 for float."""
    return 255.0 if x.dtype == np.uint8 else 1.0


def _fill_values(fill: Fill, channels: int, where: str) -> np.ndarray:
    values = np.zeros(1) if fill is None else np.atleast_1d(np.asarray(fill, dtype=np.float64))
    if values.ndim != 1 or len(values) not in (1, channels):
        raise ShapeError(f"{where}: fill must be one number or one per channel ({channels}); got {fill!r}")
    return np.broadcast_to(values, (channels,))


def check_interpolation(interpolation: str, where: str) -> str:
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"{where}: interpolation must be one of {INTERPOLATIONS}; got {interpolation!r}")
    return interpolation


def affine_warp(x: np.ndarray, matrix: Sequence[float], interpolation: str = "nearest",
                fill: Fill = None) -> np.ndarray:
    """``x`` resampled through the inverse map ``matrix`` = (a, b, c, d, e, f): output pixel
    (i, j) reads the input at u = a X + b Y + c, v = d X + e Y + f with X = j + 1/2,
    Y = i + 1/2 (Pillow's ``Image.transform(size, AFFINE, matrix)``), see the module notes."""
    x = check_image(x, "affine_warp")
    check_interpolation(interpolation, "affine_warp")
    a, b, c, d, e, f = (float(value) for value in matrix)
    h, w, channels = x.shape
    if (a, b, d, e) == (1.0, 0.0, 0.0, 1.0) and c.is_integer() and f.is_integer():
        return _shift(x, int(c), int(f), _fill_values(fill, channels, "affine_warp"))
    cols, rows = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    u = a * cols + b * rows + c
    v = d * cols + e * rows + f
    inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    if interpolation == "nearest":
        out = x[np.clip(np.floor(v).astype(np.intp), 0, h - 1), np.clip(np.floor(u).astype(np.intp), 0, w - 1)]
        out = out.astype(np.float64)
    else:
        u, v = u - 0.5, v - 0.5
        left, top = np.floor(u), np.floor(v)
        du, dv = (u - left)[..., None], (v - top)[..., None]
        left, top = left.astype(np.intp), top.astype(np.intp)
        x0, x1 = np.clip(left, 0, w - 1), np.clip(left + 1, 0, w - 1)
        y0, y1 = np.clip(top, 0, h - 1), np.clip(top + 1, 0, h - 1)
        source = x.astype(np.float64)
        upper = source[y0, x0] + (source[y0, x1] - source[y0, x0]) * du
        lower = source[y1, x0] + (source[y1, x1] - source[y1, x0]) * du
        out = upper + (lower - upper) * dv
    out[~inside] = _fill_values(fill, channels, "affine_warp")
    if x.dtype == np.uint8:
        return np.clip(np.trunc(out), 0, 255).astype(np.uint8)
    return out.astype(x.dtype)


def _shift(x: np.ndarray, dx: int, dy: int, fill: np.ndarray) -> np.ndarray:
    """The whole-pixel case of :func:`affine_warp`: ``y[i, j] = x[i + dy, j + dx]``, ``fill``
    where that falls outside (both interpolations sample pixel centres exactly)."""
    h, w = x.shape[:2]
    fill = np.clip(np.trunc(fill), 0, 255) if x.dtype == np.uint8 else fill
    out = np.empty_like(x)
    out[...] = fill.astype(x.dtype)
    top, bottom = max(0, -dy), min(h, h - dy)
    left, right = max(0, -dx), min(w, w - dx)
    if top < bottom and left < right:
        out[top:bottom, left:right] = x[top + dy:bottom + dy, left + dx:right + dx]
    return out


def shear_x(x: np.ndarray, magnitude: float, interpolation: str = "nearest", fill: Fill = None) -> np.ndarray:
    """Horizontal shear about the top-left corner: ``y(X, Y) = x(X + m Y, Y)`` (torchvision's
    ``affine`` with shear angle ``atan(m)`` and centre (0, 0))."""
    return affine_warp(x, (1.0, magnitude, 0.0, 0.0, 1.0, 0.0), interpolation, fill)


def shear_y(x: np.ndarray, magnitude: float, interpolation: str = "nearest", fill: Fill = None) -> np.ndarray:
    """Vertical shear about the top-left corner: ``y(X, Y) = x(X, Y + m X)``."""
    return affine_warp(x, (1.0, 0.0, 0.0, magnitude, 1.0, 0.0), interpolation, fill)


def translate_x(x: np.ndarray, pixels: float, interpolation: str = "nearest", fill: Fill = None) -> np.ndarray:
    """The image moved right by ``int(pixels)`` (truncated towards zero; left if negative):
    ``y(X, Y) = x(X - t, Y)``."""
    return affine_warp(x, (1.0, 0.0, -float(int(pixels)), 0.0, 1.0, 0.0), interpolation, fill)


def translate_y(x: np.ndarray, pixels: float, interpolation: str = "nearest", fill: Fill = None) -> np.ndarray:
    """The image moved down by ``int(pixels)`` (up if negative): ``y(X, Y) = x(X, Y - t)``."""
    return affine_warp(x, (1.0, 0.0, 0.0, 0.0, 1.0, -float(int(pixels))), interpolation, fill)


def rotate(x: np.ndarray, degrees: float, interpolation: str = "nearest", fill: Fill = None) -> np.ndarray:
    """The image turned counterclockwise by ``degrees`` about its centre (w/2, h/2), keeping
    its size: ``y(P) = x(C + R(P - C))`` with R = [[cos t, -sin t], [sin t, cos t]] in image
    coordinates (y down). cos and sin are rounded to 15 decimals, as Pillow's ``rotate``, so
    quarter turns land on pixel centres."""
    x = check_image(x, "rotate")
    theta = math.radians(degrees)
    cos, sin = round(math.cos(theta), 15), round(math.sin(theta), 15)
    cx, cy = x.shape[1] / 2, x.shape[0] / 2
    matrix = (cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy)
    return affine_warp(x, matrix, interpolation, fill)


def grey_level(x: np.ndarray, where: str = "grey_level") -> np.ndarray:
    """The grey level (h, w, 1) of an RGB or grey image (see the module notes); ``where``
    names the caller in errors."""
    x = check_image(x, where)
    if x.shape[2] == 1:
        return x.copy()
    if x.shape[2] != 3:
        raise ShapeError(f"{where}: expected an RGB (3 channels) or grey (1 channel) image; got shape {x.shape}")
    if x.dtype == np.uint8:
        r, g, b = (x[..., k].astype(np.int32) for k in range(3))
        return ((19595 * r + 38470 * g + 7471 * b + (1 << 15)) >> 16).astype(np.uint8)[..., None]
    weights = np.asarray([0.299, 0.587, 0.114], dtype=x.dtype)
    return (x @ weights)[..., None]


def _blend(degenerate: np.ndarray, x: np.ndarray, factor: float) -> np.ndarray:
    """``degenerate + factor (x - degenerate)`` clipped to the range; uint8 as Pillow's blend."""
    if x.dtype == np.uint8:
        d = np.asarray(degenerate, dtype=np.float32)
        out = d + np.float32(factor) * (x.astype(np.float32) - d)
        return np.clip(out, 0, 255).astype(np.uint8)
    d = np.asarray(degenerate, dtype=x.dtype)
    return np.clip(d + x.dtype.type(factor) * (x - d), 0, 1).astype(x.dtype, copy=False)


def adjust_brightness(x: np.ndarray, factor: float) -> np.ndarray:
    """``factor * x``, clipped: 0 gives black, 1 the image."""
    x = check_image(x, "adjust_brightness")
    return _blend(np.zeros((), dtype=x.dtype), x, factor)


def adjust_saturation(x: np.ndarray, factor: float) -> np.ndarray:
    """Blend with the grey level: 0 gives the grey image, 1 the image, 2 doubles the colour."""
    x = check_image(x, "adjust_saturation")
    return _blend(grey_level(x, "adjust_saturation"), x, factor)


def adjust_contrast(x: np.ndarray, factor: float) -> np.ndarray:
    """Blend with the mean grey level m: 0 gives a flat image of m, 1 the image. For uint8 m
    is rounded to an integer, as Pillow's ``ImageEnhance.Contrast``."""
    x = check_image(x, "adjust_contrast")
    mean = float(np.mean(grey_level(x, "adjust_contrast"), dtype=np.float64))
    if x.dtype == np.uint8:
        mean = float(int(mean + 0.5))
    return _blend(np.asarray(mean, dtype=np.float32 if x.dtype == np.uint8 else x.dtype), x, factor)


_SMOOTH = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], dtype=np.float64) / 13.0


def _smooth(x: np.ndarray) -> np.ndarray:
    """Pillow's SMOOTH filter ([[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13) on the inner pixels,
    rounded for uint8; the one-pixel border is kept as it is."""
    out = x.copy()
    h, w = x.shape[:2]
    if h < 3 or w < 3:
        return out
    kernel = _SMOOTH.astype(np.float32 if x.dtype == np.uint8 else x.dtype)
    source = x.astype(kernel.dtype)
    total = np.zeros((h - 2, w - 2, x.shape[2]), dtype=kernel.dtype)
    for di in range(3):
        for dj in range(3):
            total += source[di:di + h - 2, dj:dj + w - 2] * kernel[di, dj]
    if x.dtype == np.uint8:
        total = np.clip(np.floor(total + np.float32(0.5)), 0, 255)
    out[1:-1, 1:-1] = total.astype(x.dtype)
    return out


def adjust_sharpness(x: np.ndarray, factor: float) -> np.ndarray:
    """Blend with a smoothed copy (see :func:`_smooth`): 0 blurs, 1 is the image, 2 sharpens."""
    x = check_image(x, "adjust_sharpness")
    return _blend(_smooth(x), x, factor)


def posterize(x: np.ndarray, bits: int) -> np.ndarray:
    """Keep the ``bits`` high bits of each value (0 <= bits <= 8): uint8 ``x & mask``; float
    ``floor(x 2^bits) / 2^bits`` (clamped to 2^bits - 1 levels), as torchvision."""
    x = check_image(x, "posterize")
    bits = int(bits)
    if not 0 <= bits <= 8:
        raise ValueError(f"posterize: bits must lie in 0..8; got {bits}")
    if x.dtype == np.uint8:
        return x & np.uint8((0xFF << (8 - bits)) & 0xFF)
    levels = 1 << bits
    return (np.clip(np.floor(x * levels), 0, levels - 1) / levels).astype(x.dtype)


def solarize(x: np.ndarray, threshold: float) -> np.ndarray:
    """Invert the values at or above ``threshold`` (in the image's own units)."""
    x = check_image(x, "solarize")
    return np.where(x >= threshold, invert(x), x)


def invert(x: np.ndarray) -> np.ndarray:
    """``255 - x`` for uint8, ``1 - x`` for float."""
    x = check_image(x, "invert")
    return (255 - x) if x.dtype == np.uint8 else (1 - x).astype(x.dtype)


def autocontrast(x: np.ndarray) -> np.ndarray:
    """Stretch each channel so that its lowest value becomes 0 and its highest the top of the
    range (a flat channel is left alone); uint8 through Pillow's table ``int(i s - lo s)``,
    s = 255 / (hi - lo)."""
    x = check_image(x, "autocontrast")
    low = x.min(axis=(0, 1)).astype(np.float64)
    high = x.max(axis=(0, 1)).astype(np.float64)
    flat = high <= low
    scale = _top(x) / np.where(flat, 1.0, high - low)
    scale[flat], low[flat] = 1.0, 0.0
    if x.dtype == np.uint8:
        levels = np.arange(256, dtype=np.float64)[:, None]
        table = np.clip(np.trunc(levels * scale - low * scale), 0, 255).astype(np.uint8)
        return table[x, np.arange(x.shape[2])]
    return np.clip((x - low) * scale, 0, 1).astype(x.dtype)


def _equalize_table(histogram: np.ndarray) -> np.ndarray:
    """Pillow's equalisation table for one channel's 256-bin histogram: with
    step = (n - count of the highest value present) // 255, level i maps to
    (step // 2 + number of values below i) // step; identity when step is 0."""
    present = histogram[histogram > 0]
    identity = np.arange(256)
    if len(present) <= 1:
        return identity
    step = (int(histogram.sum()) - int(present[-1])) // 255
    if step == 0:
        return identity
    below = np.concatenate([[0], np.cumsum(histogram)[:-1]])
    return np.minimum((step // 2 + below) // step, 255)


def equalize(x: np.ndarray) -> np.ndarray:
    """Histogram equalisation of each channel with Pillow's tables (``ImageOps.equalize``). A
    float image is quantised to 256 levels (``round(255 x)``), equalised and scaled back."""
    x = check_image(x, "equalize")
    levels = x if x.dtype == np.uint8 else np.round(np.clip(x, 0, 1) * 255).astype(np.uint8)
    out = np.empty_like(levels)
    for k in range(x.shape[2]):
        table = _equalize_table(np.bincount(levels[..., k].ravel(), minlength=256)).astype(np.uint8)
        out[..., k] = table[levels[..., k]]
    return out if x.dtype == np.uint8 else (out / x.dtype.type(255)).astype(x.dtype)


IMAGE_OPS = {
    "Identity": lambda x, m, interpolation, fill: x,
    "ShearX": lambda x, m, interpolation, fill: shear_x(x, m, interpolation, fill),
    "ShearY": lambda x, m, interpolation, fill: shear_y(x, m, interpolation, fill),
    "TranslateX": lambda x, m, interpolation, fill: translate_x(x, m, interpolation, fill),
    "TranslateY": lambda x, m, interpolation, fill: translate_y(x, m, interpolation, fill),
    "Rotate": lambda x, m, interpolation, fill: rotate(x, m, interpolation, fill),
    "Brightness": lambda x, m, interpolation, fill: adjust_brightness(x, 1.0 + m),
    "Color": lambda x, m, interpolation, fill: adjust_saturation(x, 1.0 + m),
    "Contrast": lambda x, m, interpolation, fill: adjust_contrast(x, 1.0 + m),
    "Sharpness": lambda x, m, interpolation, fill: adjust_sharpness(x, 1.0 + m),
    "Posterize": lambda x, m, interpolation, fill: posterize(x, int(m)),
    "Solarize": lambda x, m, interpolation, fill: solarize(x, _top(x) * m),
    "AutoContrast": lambda x, m, interpolation, fill: autocontrast(x),
    "Equalize": lambda x, m, interpolation, fill: equalize(x),
    "Invert": lambda x, m, interpolation, fill: invert(x),
}
"""Each policy operation by name, ``op(x, magnitude, interpolation, fill)``, with torchvision's
meaning of the magnitude: shear factor, pixels, degrees, ``factor - 1`` for the colour
operations, bits, and the solarize threshold as a fraction of the range."""
