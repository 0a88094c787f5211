"""The augmentations of contrastive self-supervised learning (SimCLR's recipe: random resized
crops, colour distortion, grey images) and random erasing, as NHWC layers.

Like :mod:`lamina.nn.augmentation`: in training mode every image gets its own random
parameters on every call, drawn from :func:`lamina.backend.rng` (so
:func:`lamina.manual_seed` makes a run reproducible); in evaluation mode the images pass
unchanged (:class:`RandomResizedCrop` resizes the whole image to its size, which is the
identity when the images already have it). The sampling follows torchvision's transforms,
the parameters per image rather than per batch. Every layer is differentiable with respect
to the images (ColorJitter's hue step passes the gradient straight through).

The module-level functions draw the parameters (``*_boxes``) or apply them to a batch, for
use outside a layer.
"""

from __future__ import annotations

import math

import numpy

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError
from lamina.functional import clip, concat, getitem
from lamina.functional.interpolate import resize_matrix
from lamina.nn.augmentation import _Augmentation
from lamina.nn.layer import input_error, pair, register_layer
from lamina.nn.module import as_tensor

__all__ = ["ColorJitter", "RandomErasing", "RandomGrayscale", "RandomResizedCrop", "adjust_hue", "erasing_boxes",
           "grayscale", "hsv_to_rgb", "resized_crop", "resized_crop_boxes", "rgb_to_hsv"]

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
"""Grey level of an RGB pixel as torchvision computes it on tensors."""


def _range(value, what: str, low: float = -math.inf, high: float = math.inf) -> tuple[float, float]:
    """A (min, max) pair inside [low, high], from a pair or a tuple/list of two numbers."""
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a pair (min, max) of numbers, got {value!r}") from None
    if not (low <= lo <= hi <= high):
        raise ValueError(f"{what} must be (min, max) with {low:g} <= min <= max <= {high:g}, got {value!r}")
    return lo, hi


def _probability(p, what: str) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise ValueError(f"{what} must be a number in [0, 1], got {p!r}")
    return float(p)


# -- random resized crop ---------------------------------------------------------------------


def resized_crop_boxes(n: int, height: int, width: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                       rng: numpy.random.Generator | None = None) -> numpy.ndarray:
    """(n, 4) int boxes (top, left, h, w), torchvision's ``RandomResizedCrop.get_params`` for
    each image: up to 10 tries of an area fraction drawn uniformly from ``scale`` and an aspect
    ratio w/h drawn log-uniformly from ``ratio``, h = round(sqrt(A / r)), w = round(sqrt(A r)),
    kept at the first that fits, at a uniform position; else the centre crop of the whole
    image clamped to ``ratio``."""
    rng = backend.rng() if rng is None else rng
    area = height * width
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    boxes = numpy.zeros((n, 4), dtype=numpy.int64)
    for k in range(n):
        for _ in range(10):
            target = area * rng.uniform(*scale)
            aspect = math.exp(rng.uniform(log_low, log_high))
            w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                boxes[k] = (rng.integers(0, height - h + 1), rng.integers(0, width - w + 1), h, w)
                break
        else:
            in_ratio = width / height
            if in_ratio < ratio[0]:
                w, h = width, round(width / ratio[0])
            elif in_ratio > ratio[1]:
                h, w = height, round(height * ratio[1])
            else:
                h, w = height, width
            boxes[k] = ((height - h) // 2, (width - w) // 2, h, w)
    return boxes


def _placed_resize(n_out: int, n_in: int, start: int, length: int, dtype) -> numpy.ndarray:
    """The (n_out, n_in) bilinear resize of the window [start, start + length) of an axis."""
    a = numpy.zeros((n_out, n_in))
    a[:, start:start + length] = resize_matrix(n_out, length, "bilinear")
    return a.astype(dtype)


class ResizeSamples(Function):
    """y_n = A_h[n] x_n A_w[n]^T for each image n and channel, with its own (H_out, H) and
    (W_out, W) matrices; linear in x, so backward is dJ/dx_n = A_h[n]^T dJ/dy_n A_w[n]."""

    def forward(self, x):
        xp = backend.xp
        n, h, w, c = x.shape
        rows = xp.matmul(self.a_h, x.reshape(n, h, w * c)).reshape(n, -1, w, c)
        return xp.einsum("njw,niwc->nijc", self.a_w, rows)

    def backward(self, dy):
        xp = backend.xp
        n, ho, _, c = dy.shape
        h, w = self.a_h.shape[2], self.a_w.shape[2]
        d_rows = xp.einsum("njw,nijc->niwc", self.a_w, dy).reshape(n, ho, w * c)
        return (xp.matmul(self.a_h.transpose(0, 2, 1), d_rows).reshape(n, h, w, c),)

    backward_graph = Function.linear_backward_graph


def resized_crop(x, boxes, size) -> Tensor:
    """Each image's box (top, left, h, w) resized to ``size`` (h_out, w_out) bilinearly
    (half-pixel centres, no antialiasing: ``F.interpolate(..., mode='bilinear')`` of the
    crop). Per image y = A_h x A_w^T with A_h, A_w the resize matrices placed at the box."""
    x = as_tensor(x)
    if x.ndim != 4:
        raise ShapeError(f"resized_crop: expected images of shape (N, H, W, C), got shape {x.shape}")
    n, h, w, c = x.shape
    (ho, wo), boxes = pair(size, "resized_crop size"), numpy.asarray(boxes, dtype=numpy.int64).reshape(-1, 4)
    if boxes.shape[0] != n:
        raise ShapeError(f"resized_crop: {boxes.shape[0]} boxes for a batch of {n} images (shape {x.shape})")
    top, left, bh, bw = boxes.T
    if n and (top.min() < 0 or left.min() < 0 or bh.min() < 1 or bw.min() < 1
              or (top + bh).max() > h or (left + bw).max() > w):
        raise ValueError(f"resized_crop: every box (top, left, h, w) must lie inside the {h}x{w} images, got "
                         f"{boxes.tolist()}")
    xp = backend.xp
    a_h = xp.asarray(numpy.stack([_placed_resize(ho, h, t, s, x.dtype) for t, s in zip(top, bh)]))
    a_w = xp.asarray(numpy.stack([_placed_resize(wo, w, t, s, x.dtype) for t, s in zip(left, bw)]))
    return ResizeSamples.apply(x, a_h=a_h, a_w=a_w)


@register_layer
class RandomResizedCrop(_Augmentation):
    """A random box of each image, of area fraction in ``scale`` and aspect ratio (w/h) in
    ``ratio``, resized bilinearly to ``size`` (torchvision's sampling; see
    :func:`resized_crop_boxes`). In evaluation the whole image is resized to ``size``."""

    def __init__(self, size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), name: str | None = None):
        super().__init__(name=name)
        self.size = pair(size, "RandomResizedCrop size")
        if min(self.size) < 1:
            raise ValueError(f"RandomResizedCrop: size must be positive, got {size!r}")
        self.scale = _range(scale, "RandomResizedCrop: scale", 0.0, 1.0)
        self.ratio = _range(ratio, "RandomResizedCrop: ratio", 0.0)
        if self.scale[1] == 0.0 or self.ratio[0] == 0.0:
            raise ValueError(f"RandomResizedCrop: scale and ratio must be positive, got {scale!r}, {ratio!r}")

    def augment(self, x, n):
        return resized_crop(x, resized_crop_boxes(n, x.shape[1], x.shape[2], self.scale, self.ratio), self.size)

    def evaluate(self, x):
        n, h, w, _ = x.shape
        if (h, w) == self.size:
            return x
        return resized_crop(x, numpy.tile([0, 0, h, w], (n, 1)), self.size)

    def compute_output_shape(self, input_shape):
        shape = super().compute_output_shape(input_shape)
        return (shape[0], *self.size, shape[3])

    def get_config(self) -> dict:
        return {"size": list(self.size), "scale": list(self.scale), "ratio": list(self.ratio), "name": self.name}

    def extra_repr(self) -> str:
        return f"size={self.size}, scale={self.scale}, ratio={self.ratio}"


# -- colour ------------------------------------------------------------------------------------


def grayscale(x: Tensor) -> Tensor:
    """(N, H, W, 1) grey levels 0.2989 R + 0.587 G + 0.114 B of RGB images (torchvision's);
    single-channel images are returned as they are."""
    if x.shape[-1] == 1:
        return x
    return (x * backend.xp.asarray(GRAY_WEIGHTS, dtype=x.dtype)).sum(axis=-1, keepdims=True)


def rgb_to_hsv(rgb):
    """Hue, saturation and value in [0, 1] of RGB values in [0, 1] on the last axis (an
    array): v = max, s = (max - min) / max, hue the position on the colour hexagon / 6."""
    xp = backend.xp
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    high, low = rgb.max(axis=-1), rgb.min(axis=-1)
    chroma = high - low
    grey = chroma == 0
    s = xp.where(high > 0, chroma / xp.where(high > 0, high, 1), 0)
    safe = xp.where(grey, 1, chroma)
    hue = xp.where(high == r, (g - b) / safe, xp.where(high == g, 2 + (b - r) / safe, 4 + (r - g) / safe))
    hue = xp.where(grey, 0, (hue / 6) % 1.0)
    return xp.stack([hue, s, high], axis=-1).astype(rgb.dtype)


def hsv_to_rgb(hsv):
    """The inverse of :func:`rgb_to_hsv` (an array of h, s, v in [0, 1] on the last axis)."""
    xp = backend.xp
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    sector = xp.floor(h * 6)
    f = h * 6 - sector
    sector = sector.astype(xp.int64) % 6
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    # (r, g, b) for each of the six sectors of the hexagon
    table = xp.stack([xp.stack(c, axis=-1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v),
                                                     (v, p, q))], axis=0)
    return xp.take_along_axis(table, sector[None, ..., None], axis=0)[0].astype(hsv.dtype)


def adjust_hue(x, shifts) -> Tensor:
    """RGB images in [0, 1] with each hue turned by ``shifts[i]`` (in turns, [-0.5, 0.5]).
    Not differentiable in itself: the gradient passes straight through (dy/dx taken as I)."""
    x = as_tensor(x)
    if x.shape[-1] != 3:
        return x
    shifts = backend.xp.asarray(shifts, dtype=x.dtype).reshape(-1, 1, 1)
    hsv = rgb_to_hsv(x.data)
    hsv[..., 0] = (hsv[..., 0] + shifts) % 1.0
    return x + Tensor(hsv_to_rgb(hsv) - x.data, dtype=x.dtype)


def _blend(x: Tensor, other, factors) -> Tensor:
    """clamp(f x + (1 - f) other, 0, 1) per image: torchvision's colour adjustments."""
    f = backend.xp.asarray(factors, dtype=x.dtype).reshape(-1, 1, 1, 1)
    return clip(x * f + other * (1 - f), 0.0, 1.0)


JITTER_STEPS = ("brightness", "contrast", "saturation", "hue")


def _jitter_step(x: Tensor, step: str, factors) -> Tensor:
    if step == "brightness":
        return _blend(x, 0.0, factors)
    if step == "contrast":
        return _blend(x, grayscale(x).mean(axis=(1, 2, 3), keepdims=True), factors)
    if x.shape[-1] == 1:        # saturation and hue leave grey images as they are
        return x
    if step == "saturation":
        return _blend(x, grayscale(x), factors)
    return adjust_hue(x, factors)


def _jitter_range(value, what: str, centre: float, bound: float | None) -> tuple[float, float] | None:
    """torchvision's ColorJitter argument: v gives [centre - v, centre + v] (cut at 0 for the
    factors), a pair is taken as (min, max); None where the step is off."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"ColorJitter: {what} must be >= 0, got {value!r}")
        low = centre - value if bound is not None else max(0.0, centre - value)
        value = (low, centre + value)
    low, high = _range(value, f"ColorJitter: {what}", -bound if bound is not None else 0.0,
                       bound if bound is not None else math.inf)
    return None if low == high == centre else (low, high)


@register_layer
class ColorJitter(_Augmentation):
    """Random brightness, contrast, saturation and hue, in a random order per image
    (torchvision's ColorJitter, with parameters drawn per image). For images in [0, 1]:

    - brightness b: clamp(b x, 0, 1);
    - contrast c: clamp(c x + (1 - c) m, 0, 1), m the image's mean grey level;
    - saturation s: clamp(s x + (1 - s) g, 0, 1), g each pixel's grey level;
    - hue h: the hue turned by h (in turns) through HSV.

    b, c and s are drawn uniformly from [max(0, 1 - v), 1 + v] for an argument v (or from a
    given (min, max)); h from [-v, v] with v <= 0.5. Saturation and hue leave one-channel
    images unchanged. Grey levels are 0.2989 R + 0.587 G + 0.114 B.
    """

    def __init__(self, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0, name: str | None = None):
        super().__init__(name=name)
        self.brightness = _jitter_range(brightness, "brightness", 1.0, None)
        self.contrast = _jitter_range(contrast, "contrast", 1.0, None)
        self.saturation = _jitter_range(saturation, "saturation", 1.0, None)
        self.hue = _jitter_range(hue, "hue", 0.0, 0.5)

    def _ranges(self) -> dict:
        return {step: getattr(self, step) for step in JITTER_STEPS}

    def augment(self, x, n):
        rng = backend.rng()
        factors = {step: (rng.uniform(*bounds, n) if bounds is not None else None)
                   for step, bounds in self._ranges().items()}
        orders = numpy.argsort(rng.random((n, len(JITTER_STEPS))), axis=1)
        return self.apply_jitter(x, factors, orders)

    @staticmethod
    def apply_jitter(x: Tensor, factors: dict, orders) -> Tensor:
        """Apply each image's ``factors[step][i]`` (None: step off) in the order
        ``orders[i]`` (indices into ('brightness', 'contrast', 'saturation', 'hue')).
        Images that share an order are processed together."""
        x = as_tensor(x)
        orders = numpy.asarray(orders).reshape(x.shape[0], -1)
        # only the order of the steps that are on matters: fewer groups
        active = [i for i, step in enumerate(JITTER_STEPS) if factors.get(step) is not None]
        if not active:
            return x
        orders = orders[numpy.isin(orders, active)].reshape(x.shape[0], -1)
        groups, members = numpy.unique(orders, axis=0, return_inverse=True)
        members = members.reshape(-1)
        parts, positions = [], []
        for g, order in enumerate(groups):
            chosen = numpy.flatnonzero(members == g)
            part = getitem(x, chosen) if len(groups) > 1 else x
            for index in order:
                step = JITTER_STEPS[index]
                if factors.get(step) is not None:
                    part = _jitter_step(part, step, numpy.asarray(factors[step])[chosen])
            parts.append(part)
            positions.append(chosen)
        if len(parts) == 1:
            return parts[0]
        inverse = numpy.argsort(numpy.concatenate(positions))
        return getitem(concat(parts, axis=0), inverse)

    def get_config(self) -> dict:
        ranges = {step: list(r) if r is not None else 0.0 for step, r in self._ranges().items()}
        return {**ranges, "name": self.name}

    def extra_repr(self) -> str:
        return ", ".join(f"{step}={r}" for step, r in self._ranges().items() if r is not None)


@register_layer
class RandomGrayscale(_Augmentation):
    """Each RGB image, with probability ``p``, replaced by its grey level in all three
    channels (0.2989 R + 0.587 G + 0.114 B, torchvision's); one-channel images pass."""

    def __init__(self, p: float = 0.1, name: str | None = None):
        super().__init__(name=name)
        self.p = _probability(p, "RandomGrayscale: p")

    def augment(self, x, n):
        chosen = backend.rng().random(n) < self.p
        if x.shape[-1] == 1 or not chosen.any():
            return x
        if x.shape[-1] != 3:
            raise input_error(self, x, "RGB images (3 channels) or grey ones (1 channel)")
        mask = backend.xp.asarray(chosen, dtype=x.dtype).reshape(-1, 1, 1, 1)
        return x + (grayscale(x) - x) * mask

    def get_config(self) -> dict:
        return {"p": self.p, "name": self.name}

    def extra_repr(self) -> str:
        return f"p={self.p}"


# -- random erasing ------------------------------------------------------------------------------


def erasing_boxes(n: int, height: int, width: int, p: float = 0.5, scale=(0.02, 0.33), ratio=(0.3, 3.3),
                  rng: numpy.random.Generator | None = None) -> numpy.ndarray:
    """(n, 4) int boxes (top, left, h, w) to erase, torchvision's ``RandomErasing.get_params``
    per image: with probability ``p``, up to 10 tries of an area fraction uniform in ``scale``
    and an aspect ratio h/w log-uniform in ``ratio``, h = round(sqrt(A r)), w = round(sqrt(A / r)),
    kept at the first strictly smaller than the image, at a uniform position. An image not
    erased has h = w = 0."""
    rng = backend.rng() if rng is None else rng
    area = height * width
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    boxes = numpy.zeros((n, 4), dtype=numpy.int64)
    for k in range(n):
        if not rng.random() < p:
            continue
        for _ in range(10):
            target = area * rng.uniform(*scale)
            aspect = math.exp(rng.uniform(log_low, log_high))
            h, w = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if h < height and w < width:
                boxes[k] = (rng.integers(0, height - h + 1), rng.integers(0, width - w + 1), h, w)
                break
    return boxes


def _box_mask(boxes, height: int, width: int, dtype):
    """(n, H, W, 1): 1 inside each image's box, 0 elsewhere."""
    xp = backend.xp
    top, left, h, w = (xp.asarray(v)[:, None, None, None] for v in numpy.asarray(boxes).T)
    rows, cols = xp.arange(height)[None, :, None, None], xp.arange(width)[None, None, :, None]
    return ((rows >= top) & (rows < top + h) & (cols >= left) & (cols < left + w)).astype(dtype)


@register_layer
class RandomErasing(_Augmentation):
    """Random erasing (Zhong et al. 2020) with torchvision's defaults: with probability ``p``,
    a box of area fraction in ``scale`` and aspect ratio (h/w) in ``ratio`` (see
    :func:`erasing_boxes`) is filled with ``value``: a number, one number per channel, or
    'random' (standard normal values drawn per pixel)."""

    def __init__(self, p: float = 0.5, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0.0, name: str | None = None):
        super().__init__(name=name)
        self.p = _probability(p, "RandomErasing: p")
        self.scale = _range(scale, "RandomErasing: scale", 0.0, 1.0)
        self.ratio = _range(ratio, "RandomErasing: ratio", 0.0)
        if self.ratio[0] == 0.0:
            raise ValueError(f"RandomErasing: ratio must be positive, got {ratio!r}")
        if isinstance(value, str):
            if value != "random":
                raise ValueError(f"RandomErasing: value must be a number, one per channel or 'random', got {value!r}")
            self.value = value
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            self.value = float(value)
        else:
            self.value = [float(v) for v in value]

    def augment(self, x, n):
        _, h, w, c = x.shape
        boxes = erasing_boxes(n, h, w, self.p, self.scale, self.ratio)
        if not boxes[:, 2].any():
            return x
        return self.erase(x, boxes, self._fill(x.shape, x.dtype))

    def _fill(self, shape, dtype):
        if self.value == "random":
            return backend.xp.asarray(backend.rng().standard_normal(shape), dtype=dtype)
        if isinstance(self.value, list) and len(self.value) != shape[-1]:
            raise ShapeError(f"{self._label()}: {len(self.value)} fill values for images of {shape[-1]} channels "
                             f"(input shape {tuple(shape)})")
        return backend.xp.asarray(self.value, dtype=dtype)

    @staticmethod
    def erase(x, boxes, fill) -> Tensor:
        """Each image with its box (top, left, h, w) replaced by ``fill`` (broadcast to the
        images: a number, per channel, or per pixel)."""
        x = as_tensor(x)
        mask = _box_mask(boxes, x.shape[1], x.shape[2], x.dtype)
        return x * (1 - mask) + backend.xp.asarray(fill, dtype=x.dtype) * mask

    def get_config(self) -> dict:
        return {"p": self.p, "scale": list(self.scale), "ratio": list(self.ratio), "value": self.value,
                "name": self.name}

    def extra_repr(self) -> str:
        return f"p={self.p}, scale={self.scale}, ratio={self.ratio}, value={self.value!r}"
