"""Per-sample image transforms on NumPy HWC arrays (uint8 or float), composable with
:class:`Compose`, for datasets such as :class:`~lamina.data.ImageFolder`.

They follow torchvision's transforms of the same names. Random ones draw from
:func:`lamina.backend.rng`, so inside the :class:`~lamina.data.DataLoader`'s per-batch random
scopes they give the same images whichever worker thread makes the batch. (The augmentation
layers of :mod:`lamina.nn` do the same work on whole batches inside a model.) The automatic
augmentation policies (AutoAugment, RandAugment, TrivialAugmentWide, AugMix) live in
:mod:`lamina.data.auto_augment` and are re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from lamina import backend
from lamina.data.auto_augment import AugMix, AutoAugment, RandAugment, TrivialAugmentWide
from lamina.errors import ShapeError

__all__ = ["CenterCrop", "Compose", "Lambda", "Normalize", "RandomCrop", "RandomHorizontalFlip",
           "RandomResizedCrop", "RandomVerticalFlip", "Resize", "ToFloat",
           "AugMix", "AutoAugment", "RandAugment", "TrivialAugmentWide"]

INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")
PADDING_MODES = ("constant", "edge", "reflect", "symmetric")


def _check_image(x: Any, where: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 3:
        raise ShapeError(f"{where}: expected one image of shape (height, width, channels); got shape {x.shape}")
    return x


def _size_pair(size: int | Sequence[int], where: str) -> tuple[int, int]:
    """(height, width) from an int (a square) or a pair."""
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        pair = (int(size), int(size))
    elif isinstance(size, Sequence) and len(size) == 2:
        pair = (int(size[0]), int(size[1]))
    else:
        raise ValueError(f"{where}: size must be an int or a (height, width) pair; got {size!r}")
    if min(pair) < 1:
        raise ValueError(f"{where}: size must be positive; got {size!r}")
    return pair


def _check_interpolation(name: str, where: str) -> str:
    if name not in INTERPOLATIONS:
        raise ValueError(f"{where}: interpolation must be one of {INTERPOLATIONS}; got {name!r}")
    return name


def resize_image(x: np.ndarray, height: int, width: int, interpolation: str = "bilinear") -> np.ndarray:
    """``x`` (h, w, c) resized to (height, width, c) with Pillow's ``Image.resize``, channel by
    channel: uint8 channels as 8-bit images (identical to resizing the RGB image), any other
    dtype as 32-bit float images, returned in the input's dtype."""
    from PIL import Image

    x = _check_image(x, "resize_image")
    resample = getattr(Image.Resampling, _check_interpolation(interpolation, "resize_image").upper())
    if x.shape[:2] == (height, width):
        return x.copy()
    plane_dtype = np.uint8 if x.dtype == np.uint8 else np.float32
    planes = [np.asarray(Image.fromarray(np.ascontiguousarray(x[..., k], dtype=plane_dtype))
                         .resize((width, height), resample))
              for k in range(x.shape[2])]
    return np.stack(planes, axis=-1).astype(x.dtype, copy=False)


def _crop(x: np.ndarray, top: int, left: int, height: int, width: int) -> np.ndarray:
    return x[top:top + height, left:left + width]


class Compose:
    """Apply ``transforms`` in order: ``Compose([f, g])(x) = g(f(x))``."""

    def __init__(self, transforms: Sequence[Callable[[Any], Any]]) -> None:
        self.transforms = list(transforms)
        for k, transform in enumerate(self.transforms):
            if not callable(transform):
                raise TypeError(f"Compose: transform {k} is not callable; got {type(transform).__name__}")

    def __call__(self, x: Any) -> Any:
        for transform in self.transforms:
            x = transform(x)
        return x

    def __repr__(self) -> str:
        return "Compose(\n" + "".join(f"    {t!r},\n" for t in self.transforms) + ")"


class Lambda:
    """Apply a user function ``function(x)`` as a transform."""

    def __init__(self, function: Callable[[Any], Any]) -> None:
        if not callable(function):
            raise TypeError(f"Lambda: function must be callable; got {type(function).__name__}")
        self.function = function

    def __call__(self, x: Any) -> Any:
        return self.function(x)

    def __repr__(self) -> str:
        return f"Lambda({getattr(self.function, '__name__', type(self.function).__name__)})"


class Resize:
    """Resize an image with Pillow (see :func:`resize_image`).

    ``size`` a pair: to exactly (height, width). ``size`` an int: the shorter side becomes
    ``size`` and the longer one ``int(size * long / short)``, keeping the aspect ratio (as
    torchvision's ``Resize``).
    """

    def __init__(self, size: int | Sequence[int], interpolation: str = "bilinear") -> None:
        if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
            if size < 1:
                raise ValueError(f"Resize: size must be positive; got {size!r}")
            self.size: int | tuple[int, int] = int(size)
        else:
            self.size = _size_pair(size, "Resize")
        self.interpolation = _check_interpolation(interpolation, "Resize")

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) an image of this size is resized to."""
        if isinstance(self.size, tuple):
            return self.size
        if height <= width:
            return self.size, int(self.size * width / height)
        return int(self.size * height / width), self.size

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = _check_image(x, "Resize")
        return resize_image(x, *self.output_size(*x.shape[:2]), interpolation=self.interpolation)

    def __repr__(self) -> str:
        return f"Resize(size={self.size}, interpolation={self.interpolation!r})"


class CenterCrop:
    """The central (height, width) window, at top ``round((h - height) / 2)`` and left
    ``round((w - width) / 2)``; an image smaller than the window is first padded with zeros
    on both sides."""

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = _size_pair(size, "CenterCrop")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = _check_image(x, "CenterCrop")
        height, width = self.size
        h, w = x.shape[:2]
        if height > h or width > w:
            dh, dw = max(height - h, 0), max(width - w, 0)
            x = np.pad(x, ((dh // 2, (dh + 1) // 2), (dw // 2, (dw + 1) // 2), (0, 0)))
            h, w = x.shape[:2]
        return _crop(x, int(round((h - height) / 2)), int(round((w - width) / 2)), height, width)

    def __repr__(self) -> str:
        return f"CenterCrop(size={self.size})"


def _padding_widths(padding: int | Sequence[int], where: str) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) from an int, a (left/right, top/bottom) pair or four values."""
    values = [padding] if isinstance(padding, (int, np.integer)) else list(padding)
    if len(values) not in (1, 2, 4) or any(int(v) != v or v < 0 for v in values):
        raise ValueError(f"{where}: padding must be an int >= 0 or a sequence of 2 or 4 of them; got {padding!r}")
    values = [int(v) for v in values]
    if len(values) == 1:
        return (values[0],) * 4
    if len(values) == 2:
        return values[0], values[1], values[0], values[1]
    return tuple(values)


class RandomCrop:
    """A (height, width) window at a uniformly drawn position, after padding the image by
    ``padding`` (an int, (left/right, top/bottom) or (left, top, right, bottom)) with
    ``padding_mode`` ('constant' with ``fill``, 'edge', 'reflect', 'symmetric'). With
    ``pad_if_needed`` an image smaller than the window is padded on both sides to fit it."""

    def __init__(self, size: int | Sequence[int], padding: int | Sequence[int] | None = None,
                 pad_if_needed: bool = False, fill: float = 0, padding_mode: str = "constant") -> None:
        self.size = _size_pair(size, "RandomCrop")
        self.padding = None if padding is None else _padding_widths(padding, "RandomCrop")
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"RandomCrop: padding_mode must be one of {PADDING_MODES}; got {padding_mode!r}")
        self.pad_if_needed = bool(pad_if_needed)
        self.fill = fill
        self.padding_mode = padding_mode

    def _pad(self, x: np.ndarray, left: int, top: int, right: int, bottom: int) -> np.ndarray:
        widths = ((top, bottom), (left, right), (0, 0))
        if self.padding_mode == "constant":
            return np.pad(x, widths, mode="constant", constant_values=self.fill)
        return np.pad(x, widths, mode=self.padding_mode)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = _check_image(x, "RandomCrop")
        if self.padding is not None:
            x = self._pad(x, *self.padding)
        height, width = self.size
        if self.pad_if_needed:
            dh, dw = max(height - x.shape[0], 0), max(width - x.shape[1], 0)
            x = self._pad(x, dw, dh, dw, dh)
        h, w = x.shape[:2]
        if height > h or width > w:
            raise ShapeError(f"RandomCrop: crop size {self.size} is larger than the (padded) image of size "
                             f"{(h, w)}; pass pad_if_needed=True or a larger padding")
        rng = backend.rng()
        top, left = int(rng.integers(0, h - height + 1)), int(rng.integers(0, w - width + 1))
        return _crop(x, top, left, height, width)

    def __repr__(self) -> str:
        return (f"RandomCrop(size={self.size}, padding={self.padding}, pad_if_needed={self.pad_if_needed}, "
                f"fill={self.fill}, padding_mode={self.padding_mode!r})")


class _RandomFlip:
    axis = 1

    def __init__(self, p: float = 0.5) -> None:
        if not 0 <= p <= 1:
            raise ValueError(f"{type(self).__name__}: p must lie in [0, 1]; got {p!r}")
        self.p = float(p)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = _check_image(x, type(self).__name__)
        return np.flip(x, axis=self.axis) if backend.rng().random() < self.p else x

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p})"


class RandomHorizontalFlip(_RandomFlip):
    """Mirror the image left-right (``x[:, ::-1]``) with probability ``p``."""

    axis = 1


class RandomVerticalFlip(_RandomFlip):
    """Mirror the image upside down (``x[::-1]``) with probability ``p``."""

    axis = 0


class RandomResizedCrop:
    """A random box resized to ``size`` (torchvision's ``RandomResizedCrop``): the box covers
    an area fraction drawn uniformly from ``scale``, with an aspect ratio w/h drawn
    log-uniformly from ``ratio``, at a uniform position (up to 10 tries, else the centre
    crop clamped to ``ratio``); it is cut out, then resized with Pillow."""

    def __init__(self, size: int | Sequence[int], scale: Sequence[float] = (0.08, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3), interpolation: str = "bilinear") -> None:
        self.size = _size_pair(size, "RandomResizedCrop")
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"RandomResizedCrop: scale must be (low, high) with 0 < low <= high; got {scale!r}")
        if not 0 < self.ratio[0] <= self.ratio[1] or not all(map(math.isfinite, self.ratio)):
            raise ValueError(f"RandomResizedCrop: ratio must be (low, high) with 0 < low <= high; got {ratio!r}")
        self.interpolation = _check_interpolation(interpolation, "RandomResizedCrop")

    def box(self, height: int, width: int) -> tuple[int, int, int, int]:
        """A random (top, left, box height, box width) in an image of (height, width)."""
        from lamina.nn.augmentation_more import resized_crop_boxes

        top, left, h, w = resized_crop_boxes(1, height, width, self.scale, self.ratio, rng=backend.rng())[0]
        return int(top), int(left), int(h), int(w)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = _check_image(x, "RandomResizedCrop")
        return resize_image(_crop(x, *self.box(*x.shape[:2])), *self.size, interpolation=self.interpolation)

    def __repr__(self) -> str:
        return (f"RandomResizedCrop(size={self.size}, scale={self.scale}, ratio=({self.ratio[0]:.4g}, "
                f"{self.ratio[1]:.4g}), interpolation={self.interpolation!r})")


class ToFloat:
    """An integer image scaled to [0, 1] as ``x / max`` of its dtype (uint8: ``x / 255``), in
    ``dtype`` (float32 by default); a float image is only cast to ``dtype``."""

    def __init__(self, dtype: Any = np.float32) -> None:
        self.dtype = np.dtype(dtype)
        if self.dtype.kind != "f":
            raise ValueError(f"ToFloat: dtype must be a float type; got {self.dtype}")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = _check_image(x, "ToFloat")
        if np.issubdtype(x.dtype, np.integer):
            return x.astype(self.dtype) / self.dtype.type(np.iinfo(x.dtype).max)
        if x.dtype == bool:
            return x.astype(self.dtype)
        return x.astype(self.dtype, copy=False)

    def __repr__(self) -> str:
        return f"ToFloat(dtype={self.dtype.name})"


class Normalize:
    """Standardise each channel: ``y[..., k] = (x[..., k] - mean[k]) / std[k]`` (a float
    image; apply :class:`ToFloat` to a uint8 one first). ``mean`` and ``std`` are one number
    per channel, or one number for all."""

    def __init__(self, mean: float | Sequence[float], std: float | Sequence[float]) -> None:
        self.mean = np.atleast_1d(np.asarray(mean, dtype=np.float64))
        self.std = np.atleast_1d(np.asarray(std, dtype=np.float64))
        if self.mean.ndim != 1 or self.std.ndim != 1:
            raise ValueError(f"Normalize: mean and std must be numbers or sequences of numbers; "
                             f"got shapes {self.mean.shape} and {self.std.shape}")
        if np.any(self.std == 0):
            raise ValueError(f"Normalize: std must not be 0; got {self.std.tolist()}")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = _check_image(x, "Normalize")
        if x.dtype.kind != "f":
            raise TypeError(f"Normalize: expected a float image; got dtype {x.dtype} (apply ToFloat first)")
        channels = x.shape[2]
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, channels):
                raise ShapeError(f"Normalize: {name} has {len(values)} values but the image of shape {x.shape} "
                                 f"has {channels} channels")
        return ((x - self.mean.astype(x.dtype)) / self.std.astype(x.dtype)).astype(x.dtype, copy=False)

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.tolist()}, std={self.std.tolist()})"
