"""The geometric box-aware transforms for object detection, after torchvision's
``transforms.v2``: random flips, resizes (fixed, random, shortest side, scale jitter), zoom out,
SSD's IoU crop, a random crop and a random affine warp. Each moves the boxes, masks and
keypoints with the image; the conventions of a sample are described in
:mod:`lamina.data.detection_transforms`, which re-exports these classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lamina.data.detection_boxes import as_boxes
from lamina.data.detection_ops import (
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
from lamina.data.transforms import _padding_widths, _size_pair
from lamina.errors import ShapeError

__all__ = [
    "RandomAffine", "RandomCrop", "RandomHorizontalFlip", "RandomIoUCrop", "RandomResize", "RandomShortestSize",
    "RandomVerticalFlip", "RandomZoomOut", "Resize", "ScaleJitter",
]


class _Flip:
    operation = staticmethod(horizontal_flip)

    def __init__(self, p: float = 0.5, flip_index: Sequence[int] | None = None,
                 rng: np.random.Generator | None = None) -> None:
        self.p = checked_probability(p, type(self).__name__)
        self.flip_index = None if flip_index is None else [int(k) for k in flip_index]
        self.rng = rng

    def __call__(self, image: np.ndarray, target: Target) -> tuple[np.ndarray, Target]:
        image, target = check_sample(image, target, type(self).__name__)
        if generator_or_default(self.rng).random() < self.p:
            return self.operation(image, target, self.flip_index)
        return image, target

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={self.p}, flip_index={self.flip_index})"


class RandomHorizontalFlip(_Flip):
    """:func:`horizontal_flip` with probability ``p``."""

    operation = staticmethod(horizontal_flip)


class RandomVerticalFlip(_Flip):
    """:func:`vertical_flip` with probability ``p``."""

    operation = staticmethod(vertical_flip)


class Resize:
    """Resize to :func:`resized_size` (``size`` a (height, width) pair, or the shorter side
    with an optional ``max_size`` on the longer, as torchvision's detection resize)."""

    def __init__(self, size: int | Sequence[int] | None, max_size: int | None = None,
                 interpolation: str = "bilinear") -> None:
        resized_size(100, 100, size, max_size)             # checks the arguments
        self.size, self.max_size, self.interpolation = size, max_size, interpolation

    def __call__(self, image: np.ndarray, target: Target) -> tuple[np.ndarray, Target]:
        image, target = check_sample(image, target, "Resize")
        height, width = resized_size(*image.shape[:2], self.size, self.max_size)
        return resize(image, target, height, width, self.interpolation)

    def __repr__(self) -> str:
        return f"Resize(size={self.size}, max_size={self.max_size}, interpolation={self.interpolation!r})"


def _scaled(image: np.ndarray, target: Target, ratio: float, interpolation: str) -> tuple[np.ndarray, Target]:
    """Resize by ``ratio``: (int(H ratio), int(W ratio)) (at least one pixel)."""
    h, w = np.asarray(image).shape[:2]
    return resize(image, target, max(int(h * ratio), 1), max(int(w * ratio), 1), interpolation)


class RandomResize:
    """Shorter side s drawn uniformly from the integers min_size <= s < max_size, then
    :class:`Resize` (torchvision's ``RandomResize``)."""

    def __init__(self, min_size: int, max_size: int, interpolation: str = "bilinear",
                 rng: np.random.Generator | None = None) -> None:
        if not 1 <= min_size < max_size:
            raise ValueError(f"RandomResize: need 1 <= min_size < max_size; got {min_size!r}, {max_size!r}")
        self.min_size, self.max_size, self.interpolation, self.rng = int(min_size), int(max_size), interpolation, rng

    def __call__(self, image: np.ndarray, target: Target) -> tuple[np.ndarray, Target]:
        image, target = check_sample(image, target, "RandomResize")
        size = int(generator_or_default(self.rng).integers(self.min_size, self.max_size))
        return Resize(size, interpolation=self.interpolation)(image, target)

    def __repr__(self) -> str:
        return f"RandomResize(min_size={self.min_size}, max_size={self.max_size})"


class RandomShortestSize:
    """Scale by r = s / min(H, W) with s drawn from ``min_size`` (one or several sizes),
    lowered to ``max_size`` / max(H, W) when that is smaller; the output is (int(H r), int(W r))
    (torchvision's ``RandomShortestSize``)."""

    def __init__(self, min_size: int | Sequence[int], max_size: int | None = None, interpolation: str = "bilinear",
                 rng: np.random.Generator | None = None) -> None:
        sizes = [min_size] if isinstance(min_size, (int, np.integer)) else list(min_size)
        if not sizes or min(sizes) < 1:
            raise ValueError(f"RandomShortestSize: min_size must be positive sizes; got {min_size!r}")
        self.min_size, self.max_size = [int(s) for s in sizes], max_size
        self.interpolation, self.rng = interpolation, rng

    def __call__(self, image: np.ndarray, target: Target) -> tuple[np.ndarray, Target]:
        image, target = check_sample(image, target, "RandomShortestSize")
        h, w = image.shape[:2]
        size = self.min_size[int(generator_or_default(self.rng).integers(len(self.min_size)))]
        ratio = size / min(h, w)
        if self.max_size is not None:
            ratio = min(ratio, self.max_size / max(h, w))
        return _scaled(image, target, ratio, self.interpolation)

    def __repr__(self) -> str:
        return f"RandomShortestSize(min_size={self.min_size}, max_size={self.max_size})"


class ScaleJitter:
    """Large-scale jitter: scale by r = min(target_size[1] / H, target_size[0] / W) s with s
    uniform in ``scale_range``, to (int(H r), int(W r)) (torchvision's ``ScaleJitter``, whose
    formula this keeps, index for index)."""

    def __init__(self, target_size: Sequence[int], scale_range: Sequence[float] = (0.1, 2.0),
                 interpolation: str = "bilinear", rng: np.random.Generator | None = None) -> None:
        self.target_size = (int(target_size[0]), int(target_size[1]))
        self.scale_range = bounds(scale_range, "ScaleJitter", "scale_range")
        if self.scale_range[0] <= 0 or min(self.target_size) < 1:
            raise ValueError(f"ScaleJitter: need a positive target_size and scale_range; got {target_size!r}, "
                             f"{scale_range!r}")
        self.interpolation, self.rng = interpolation, rng

    def __call__(self, image: np.ndarray, target: Target) -> tuple[np.ndarray, Target]:
        image, target = check_sample(image, target, "ScaleJitter")
        h, w = image.shape[:2]
        low, high = self.scale_range
        scale = low + generator_or_default(self.rng).random() * (high - low)
        ratio = min(self.target_size[1] / h, self.target_size[0] / w) * scale
        return _scaled(image, target, ratio, self.interpolation)

    def __repr__(self) -> str:
        return f"ScaleJitter(target_size={self.target_size}, scale_range={self.scale_range})"


class RandomZoomOut:
    """With probability ``p``, place the image on a canvas ``r`` times its size, r uniform in
    ``side_range``, filled with ``fill``: canvas (int(H r), int(W r)), the image at left =
    int((canvas width - W) u), top = int((canvas height - H) v), u, v uniform (torchvision's
    ``RandomZoomOut``)."""

    def __init__(self, fill: float | Sequence[float] = 0, side_range: Sequence[float] = (1.0, 4.0), p: float = 0.5,
                 rng: np.random.Generator | None = None) -> None:
        self.side_range = bounds(side_range, "RandomZoomOut", "side_range")
        if self.side_range[0] < 1:
            raise ValueError(f"RandomZoomOut: side_range must start at 1 or more; got {side_range!r}")
        self.fill, self.p, self.rng = fill, checked_probability(p, "RandomZoomOut"), rng

    def __call__(self, image: np.ndarray, target: Target) -> tuple[np.ndarray, Target]:
        image, target = check_sample(image, target, "RandomZoomOut")
        rng = generator_or_default(self.rng)
        if rng.random() >= self.p:
            return image, target
        h, w = image.shape[:2]
        low, high = self.side_range
        r = low + rng.random() * (high - low)
        canvas_w, canvas_h = int(w * r), int(h * r)
        u, v = rng.random(2)
        left, top = int((canvas_w - w) * u), int((canvas_h - h) * v)
        return pad(image, target, left, top, canvas_w - w - left, canvas_h - h - top, self.fill)

    def __repr__(self) -> str:
        return f"RandomZoomOut(fill={self.fill}, side_range={self.side_range}, p={self.p})"


def _iou_with_window(boxes: np.ndarray, window: tuple[int, int, int, int]) -> np.ndarray:
    """IoU of corner boxes (n, 4) with one window (x1, y1, x2, y2)."""
    x1, y1, x2, y2 = window
    inter_w = np.clip(np.minimum(boxes[:, 2], x2) - np.maximum(boxes[:, 0], x1), 0, None)
    inter_h = np.clip(np.minimum(boxes[:, 3], y2) - np.maximum(boxes[:, 1], y1), 0, None)
    inter = inter_w * inter_h
    union = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) + (x2 - x1) * (y2 - y1) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


class RandomIoUCrop:
    """SSD's crop sampler (torchvision's ``RandomIoUCrop``). Repeatedly draw a minimum IoU from
    ``sampler_options`` (a value >= 1 leaves the sample as it is); for it, up to ``trials``
    windows of size (int(W r1), int(H r2)), r uniform in [min_scale, max_scale], are drawn and
    the first one accepted is cut out. A window is accepted when its aspect ratio w/h lies in
    [min_aspect_ratio, max_aspect_ratio], it is not empty, some box's centre lies strictly inside
    it, and one of those boxes overlaps it with IoU >= the minimum. The boxes whose centre lies
    outside become (0, 0, 0, 0) for :class:`SanitizeBoundingBoxes` to drop; the others are
    clamped to the window.

    torchvision draws options until one succeeds; here, after ``max_rounds`` options without
    success (or with no boxes at all) the sample is left as it is."""

    def __init__(self, min_scale: float = 0.3, max_scale: float = 1.0, min_aspect_ratio: float = 0.5,
                 max_aspect_ratio: float = 2.0, sampler_options: Sequence[float] | None = None, trials: int = 40,
                 max_rounds: int = 1000, rng: np.random.Generator | None = None) -> None:
        self.min_scale, self.max_scale = bounds((min_scale, max_scale), "RandomIoUCrop", "(min_scale, max_scale)")
        self.min_aspect_ratio, self.max_aspect_ratio = bounds((min_aspect_ratio, max_aspect_ratio), "RandomIoUCrop",
                                                              "(min_aspect_ratio, max_aspect_ratio)")
        options = [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0] if sampler_options is None else list(sampler_options)
        if not options or int(trials) < 1 or int(max_rounds) < 1:
            raise ValueError(f"RandomIoUCrop: need sampler options, trials >= 1 and max_rounds >= 1; got "
                             f"{sampler_options!r}, {trials!r}, {max_rounds!r}")
        self.options = [float(v) for v in options]
        self.trials, self.max_rounds, self.rng = int(trials), int(max_rounds), rng

    def window(self, height: int, width: int, boxes: np.ndarray) -> dict | None:
        """The accepted window {'top', 'left', 'height', 'width', 'inside': (n,) bool of the boxes
        whose centre it holds, 'min_iou'}, or None to leave the sample as it is."""
        rng = generator_or_default(self.rng)
        boxes = as_boxes(boxes, "RandomIoUCrop")
        if len(boxes) == 0:
            return None
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        for _ in range(self.max_rounds):
            min_iou = self.options[int(rng.integers(len(self.options)))]
            if min_iou >= 1.0:
                return None
            for _ in range(self.trials):
                r = self.min_scale + (self.max_scale - self.min_scale) * rng.random(2)
                new_w, new_h = int(width * r[0]), int(height * r[1])
                if new_h == 0 or not self.min_aspect_ratio <= new_w / new_h <= self.max_aspect_ratio:
                    continue
                u = rng.random(2)
                left, top = int((width - new_w) * u[0]), int((height - new_h) * u[1])
                right, bottom = left + new_w, top + new_h
                if left == right or top == bottom:
                    continue
                inside = (left < cx) & (cx < right) & (top < cy) & (cy < bottom)
                if not inside.any():
                    continue
                if _iou_with_window(boxes[inside].astype(np.float64), (left, top, right, bottom)).max() < min_iou:
                    continue
                return {"top": top, "left": left, "height": new_h, "width": new_w, "inside": inside,
                        "min_iou": min_iou}
        return None

    def __call__(self, image: np.ndarray, target: Target) -> tuple[np.ndarray, Target]:
        image, target = check_sample(image, target, "RandomIoUCrop")
        window = self.window(*image.shape[:2], target["boxes"])
        if window is None:
            return image, target
        image, target = crop(image, target, window["top"], window["left"], window["height"], window["width"])
        target["boxes"][~window["inside"]] = 0
        return image, target

    def __repr__(self) -> str:
        return (f"RandomIoUCrop(min_scale={self.min_scale}, max_scale={self.max_scale}, min_aspect_ratio="
                f"{self.min_aspect_ratio}, max_aspect_ratio={self.max_aspect_ratio}, sampler_options={self.options}, "
                f"trials={self.trials})")


class RandomCrop:
    """A (height, width) window at a uniform position (top in 0..H' - height, left likewise)
    after padding the image with ``fill`` by ``padding`` (an int, (left/right, top/bottom) or
    (left, top, right, bottom)) and, with ``pad_if_needed``, on both sides by what it lacks."""

    def __init__(self, size: int | Sequence[int], padding: int | Sequence[int] | None = None,
                 pad_if_needed: bool = False, fill: float | Sequence[float] = 0,
                 rng: np.random.Generator | None = None) -> None:
        self.size = _size_pair(size, "RandomCrop")
        self.padding = (0, 0, 0, 0) if padding is None else _padding_widths(padding, "RandomCrop")
        self.pad_if_needed, self.fill, self.rng = bool(pad_if_needed), fill, rng

    def __call__(self, image: np.ndarray, target: Target) -> tuple[np.ndarray, Target]:
        image, target = check_sample(image, target, "RandomCrop")
        left, top, right, bottom = self.padding
        height, width = self.size
        if self.pad_if_needed:
            lack_h = max(height - (image.shape[0] + top + bottom), 0)
            lack_w = max(width - (image.shape[1] + left + right), 0)
            left, top, right, bottom = left + lack_w, top + lack_h, right + lack_w, bottom + lack_h
        if left or top or right or bottom:
            image, target = pad(image, target, left, top, right, bottom, self.fill)
        h, w = image.shape[:2]
        if height > h or width > w:
            raise ShapeError(f"RandomCrop: crop size {self.size} is larger than the (padded) image of size {(h, w)}; "
                             "pass pad_if_needed=True or a larger padding")
        rng = generator_or_default(self.rng)
        top, left = int(rng.integers(0, h - height + 1)), int(rng.integers(0, w - width + 1))
        return crop(image, target, top, left, height, width)

    def __repr__(self) -> str:
        return f"RandomCrop(size={self.size}, padding={self.padding}, pad_if_needed={self.pad_if_needed})"


def _symmetric(value: float | Sequence[float], where: str, name: str) -> tuple[float, float]:
    if isinstance(value, (int, float, np.number)):
        if value < 0:
            raise ValueError(f"{where}: {name} as one number must be >= 0; got {value!r}")
        return -float(value), float(value)
    return bounds(value, where, name)


class RandomAffine:
    """A random :func:`affine` map (torchvision's ``RandomAffine``): angle uniform in
    ``degrees`` (d gives (-d, d); clockwise on screen), translation (round(u a W),
    round(v b H)) with u, v uniform in [-1, 1] for ``translate`` = (a, b), scale uniform in
    ``scale``, shear uniform in ``shear`` (s gives x shear in (-s, s); (lo, hi) x shear; four
    values x then y shear ranges), all about the image centre."""

    def __init__(self, degrees: float | Sequence[float], translate: Sequence[float] | None = None,
                 scale: Sequence[float] | None = None, shear: float | Sequence[float] | None = None,
                 interpolation: str = "nearest", fill: float | Sequence[float] = 0,
                 rng: np.random.Generator | None = None) -> None:
        self.degrees = _symmetric(degrees, "RandomAffine", "degrees")
        if translate is not None and not all(0 <= t <= 1 for t in translate):
            raise ValueError(f"RandomAffine: translate must be fractions in [0, 1]; got {translate!r}")
        self.translate = None if translate is None else (float(translate[0]), float(translate[1]))
        self.scale = None if scale is None else bounds(scale, "RandomAffine", "scale")
        if self.scale is not None and self.scale[0] <= 0:
            raise ValueError(f"RandomAffine: scale must be positive; got {scale!r}")
        if shear is None or isinstance(shear, (int, float, np.number)) or len(shear) == 2:
            self.shear = None if shear is None else [_symmetric(shear, "RandomAffine", "shear")]
        elif len(shear) == 4:
            self.shear = [bounds(shear[:2], "RandomAffine", "shear"), bounds(shear[2:], "RandomAffine", "shear")]
        else:
            raise ValueError(f"RandomAffine: shear must be a number or 2 or 4 numbers; got {shear!r}")
        self.interpolation, self.fill, self.rng = interpolation, fill, rng

    def parameters(self, height: int, width: int) -> dict:
        """One draw: {'angle', 'translate', 'scale', 'shear'} in torchvision's order."""
        rng = generator_or_default(self.rng)
        angle = float(rng.uniform(*self.degrees))
        translate = (0, 0)
        if self.translate is not None:
            max_dx, max_dy = self.translate[0] * width, self.translate[1] * height
            translate = (int(round(rng.uniform(-max_dx, max_dx))), int(round(rng.uniform(-max_dy, max_dy))))
        scale = 1.0 if self.scale is None else float(rng.uniform(*self.scale))
        shear = [0.0, 0.0]
        for k, limits in enumerate(self.shear or []):
            shear[k] = float(rng.uniform(*limits))
        return {"angle": angle, "translate": translate, "scale": scale, "shear": tuple(shear)}

    def __call__(self, image: np.ndarray, target: Target) -> tuple[np.ndarray, Target]:
        image, target = check_sample(image, target, "RandomAffine")
        height, width = image.shape[:2]
        matrix = affine_matrix(height, width, **self.parameters(height, width))
        return affine(image, target, matrix, self.interpolation, self.fill)

    def __repr__(self) -> str:
        return (f"RandomAffine(degrees={self.degrees}, translate={self.translate}, scale={self.scale}, "
                f"shear={self.shear})")
