"""CenterNet (Zhou et al. 2019, "Objects as Points"): anchor-free detection of every object as
the peak of a class heatmap at its centre.

A backbone maps the (N, H, W, c) images to one feature map of stride s (4 by default); the head
gives, per output pixel, C class logits (the heatmap, sigmoid; bias -2.19 so that sigma = 0.1),
the box size (w, h) and the sub-pixel offset of the centre, both in output pixels.

Targets (CenterNet's ``ctdet``): a box of size (w, h) in output pixels and centre p = box
centre / s is a Gaussian exp(-((x - px)^2 + (y - py)^2) / (2 sigma^2)) in its class' channel
around the pixel floor(p), of radius r = int(:func:`gaussian_radius`) and sigma = (2 r + 1) / 6;
overlapping Gaussians of one class take the element-wise maximum. The size target is (w, h)
and the offset target p - floor(p), both at floor(p) only. Losses, for n objects in the batch:

    heatmap: penalty-reduced focal loss  -1/n sum { (1 - p)^alpha log p            where Y = 1
                                                  { (1 - Y)^beta p^alpha log(1 - p)  otherwise
             (alpha = 2, beta = 4, p = sigma(logit), Y the Gaussian target),
    size:    ``size_weight`` (0.1) times the mean |predicted - target| (w, h) at the centres,
    offset:  ``offset_weight`` (1) times the mean |predicted - target| offset at the centres.

Decoding, without non-maximum suppression: a pixel is a peak where its class score equals the
3x3 maximum around it; the ``detections_per_img`` highest peaks over all classes and positions
above ``score_thresh`` become boxes s (x + dx -+ w / 2, y + dy -+ h / 2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from lamina import functional as F
from lamina import nn, vision
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.detection_base import DetectorBase, top_candidates
from lamina.nn import init
from lamina.nn.layer import input_error, layer_to_config, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["CenterNet", "CenterNetHead", "centernet_decode", "centernet_focal_loss", "centernet_small",
           "centernet_targets", "draw_gaussian", "gaussian_radius"]

HEATMAP_BIAS = -2.19
"""The heatmap logits' initial bias: sigma(-2.19) = 0.1."""


def gaussian_radius(height: float, width: float, min_overlap: float = 0.7) -> float:
    """CornerNet's radius: the smallest of the three corner shifts r that keep a box of
    (height, width) at IoU >= ``min_overlap`` with the true one, each the larger root of a
    quadratic a r^2 - b r + c = 0 (both corners inside, both outside, one of each), taken as
    (b + sqrt(b^2 - 4 a c)) / 2 as in the published CornerNet and CenterNet code:

        a = 1,     b = h + w,         c = w h (1 - m) / (1 + m)
        a = 4,     b = 2 (h + w),     c = (1 - m) w h
        a = 4 m,   b = -2 m (h + w),  c = (m - 1) w h
    """
    h, w, m = float(height), float(width), float(min_overlap)
    roots = []
    for a, b, c in ((1.0, h + w, w * h * (1 - m) / (1 + m)), (4.0, 2 * (h + w), (1 - m) * w * h),
                    (4 * m, -2 * m * (h + w), (m - 1) * w * h)):
        roots.append((b + math.sqrt(b * b - 4 * a * c)) / 2)
    return min(roots)


def gaussian_kernel(radius: int) -> np.ndarray:
    """(2 r + 1, 2 r + 1) values exp(-(x^2 + y^2) / (2 sigma^2)), sigma = (2 r + 1) / 6, those
    below float64's eps times the largest set to 0."""
    sigma = (2 * radius + 1) / 6
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * sigma * sigma))
    kernel[kernel < np.finfo(np.float64).eps * kernel.max()] = 0.0
    return kernel


def draw_gaussian(heatmap: np.ndarray, centre: tuple[int, int], radius: int) -> np.ndarray:
    """Splat :func:`gaussian_kernel` (``radius``) on the (h, w) ``heatmap`` at the integer
    ``centre`` (x, y), in place, by element-wise maximum; the kernel is cut at the borders."""
    kernel = gaussian_kernel(radius)
    height, width = heatmap.shape
    x, y = int(centre[0]), int(centre[1])
    left, right = min(x, radius), min(width - x, radius + 1)
    top, bottom = min(y, radius), min(height - y, radius + 1)
    window = heatmap[y - top:y + bottom, x - left:x + right]
    np.maximum(window, kernel[radius - top:radius + bottom, radius - left:radius + right], out=window)
    return heatmap


def centernet_targets(boxes: np.ndarray, labels: np.ndarray, num_classes: int, output_size: tuple[int, int],
                      stride: int, min_overlap: float = 0.7) -> dict[str, np.ndarray]:
    """One image's targets (module docstring) on an output map of ``output_size`` (h, w):
    'heatmap' (h, w, C), and per box 'indices' (flat y w + x of its centre pixel), 'sizes'
    (w, h) and 'offsets' (dx, dy) in output pixels. Boxes (x1, y1, x2, y2) are in input
    pixels, clipped to the image first; boxes left empty are skipped."""
    height, width = int(output_size[0]), int(output_size[1])
    heatmap = np.zeros((num_classes, height, width), dtype=np.float64)
    scaled = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) / stride
    scaled[:, 0::2] = scaled[:, 0::2].clip(0, width)
    scaled[:, 1::2] = scaled[:, 1::2].clip(0, height)
    indices, sizes, offsets = [], [], []
    for (x1, y1, x2, y2), label in zip(scaled, np.asarray(labels).reshape(-1)):
        w, h = x2 - x1, y2 - y1
        if w <= 0 or h <= 0:
            continue
        centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
        pixel = np.minimum(np.floor(centre).astype(np.int64), [width - 1, height - 1])
        radius = max(0, int(gaussian_radius(math.ceil(h), math.ceil(w), min_overlap)))
        draw_gaussian(heatmap[int(label)], pixel, radius)
        indices.append(pixel[1] * width + pixel[0])
        sizes.append((w, h))
        offsets.append(centre - pixel)
    return {"heatmap": heatmap.transpose(1, 2, 0), "indices": np.asarray(indices, dtype=np.int64),
            "sizes": np.asarray(sizes, dtype=np.float64).reshape(-1, 2),
            "offsets": np.asarray(offsets, dtype=np.float64).reshape(-1, 2)}


def centernet_focal_loss(logits, target, num_objects: int | None = None, alpha: float = 2.0,
                         beta: float = 4.0) -> Tensor:
    """The penalty-reduced pixel-wise focal loss (module docstring) of heatmap ``logits`` against
    the Gaussian ``target`` (same shape, 1 at the centres), summed and divided by
    max(1, ``num_objects``) (by default the number of target values equal to 1). Computed with
    log sigma(z) and log sigma(-z) for stability."""
    logits = as_tensor(logits)
    target = np.asarray(getattr(target, "data", target), dtype=logits.dtype)
    if target.shape != logits.shape:
        raise ShapeError(f"centernet_focal_loss: logits {logits.shape} and target {target.shape} must have one shape")
    positive = (target == 1).astype(logits.dtype)
    if num_objects is None:
        num_objects = int(positive.sum())
    probability = F.sigmoid(logits)
    positive_terms = (1.0 - probability) ** alpha * F.log_sigmoid(logits) * positive
    negative_weight = (1.0 - target) ** beta * (1.0 - positive)
    negative_terms = probability ** alpha * F.log_sigmoid(-logits) * negative_weight
    return -(positive_terms + negative_terms).sum() / max(1, int(num_objects))


def _peaks(heatmap: np.ndarray, kernel: int = 3) -> np.ndarray:
    """``heatmap`` (N, h, w, C) where a value equals the ``kernel`` x ``kernel`` maximum around
    it (the map padded with -inf), 0 elsewhere."""
    pad = kernel // 2
    padded = np.pad(heatmap, ((0, 0), (pad, pad), (pad, pad), (0, 0)), constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (kernel, kernel), axis=(1, 2))
    return np.where(heatmap == windows.max(axis=(-2, -1)), heatmap, 0.0)


def centernet_decode(heatmap: np.ndarray, sizes: np.ndarray, offsets: np.ndarray, stride: float, k: int = 100,
                     score_thresh: float = 0.1) -> list[dict[str, np.ndarray]]:
    """Detections from the head's maps (module docstring): ``heatmap`` (N, h, w, C) scores
    (after the sigmoid), ``sizes`` and ``offsets`` (N, h, w, 2); negative sizes count as 0.
    Per image a dict of 'boxes' (x1, y1, x2, y2 in input pixels), 'scores' and 'labels', at
    most ``k``, best first (ties in (y, x, class) order)."""
    heatmap, sizes, offsets = (np.asarray(a, dtype=np.float64) for a in (heatmap, sizes, offsets))
    if heatmap.ndim != 4 or sizes.shape != heatmap.shape[:3] + (2,) or offsets.shape != sizes.shape:
        raise ShapeError(f"centernet_decode: expected heatmap (N, h, w, C) and sizes, offsets (N, h, w, 2), got "
                         f"{heatmap.shape}, {sizes.shape} and {offsets.shape}")
    count, _, width, classes = heatmap.shape
    peaks = _peaks(heatmap).reshape(count, -1)
    detections = []
    for image in range(count):
        chosen, scores = top_candidates(peaks[image], score_thresh, k)
        position, labels = chosen // classes, chosen % classes
        y, x = position // width, position % width
        size = np.maximum(sizes[image].reshape(-1, 2)[position], 0.0)
        centre = np.stack([x, y], axis=1) + offsets[image].reshape(-1, 2)[position]
        boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1) * stride
        detections.append({"boxes": boxes.astype(np.float32), "scores": scores.astype(np.float32),
                           "labels": labels.astype(np.int64)})
    return detections


@register_layer
class CenterNetHead(Module):
    """Three branches on one (N, h, w, ``in_channels``) map, each conv3x3 (``head_channels``,
    ReLU) then conv1x1: 'heatmap' (C logits, bias -2.19), 'size' (w, h) and 'offset' (dx, dy)."""

    default_name = "head"

    def __init__(self, in_channels: int, num_classes: int, head_channels: int = 64, name: str | None = "head"):
        super().__init__(name=name)
        self.in_channels, self.num_classes, self.head_channels = int(in_channels), int(num_classes), int(head_channels)
        if min(self.in_channels, self.num_classes, self.head_channels) < 1:
            raise ValueError(f"CenterNetHead: in_channels, num_classes and head_channels must be positive, got "
                             f"{in_channels!r}, {num_classes!r} and {head_channels!r}")
        self.heatmap = self._branch(num_classes, init.constant(HEATMAP_BIAS), "heatmap")
        self.size = self._branch(2, "zeros", "size")
        self.offset = self._branch(2, "zeros", "offset")

    def _branch(self, outputs: int, bias_init, name: str) -> nn.Sequential:
        return nn.Sequential(nn.Conv2D(self.head_channels, 3, padding=1, activation="relu", name="0"),
                             nn.Conv2D(outputs, 1, bias_init=bias_init, name="1"), name=name)

    def build(self, input_shape=None) -> None:
        for branch in self.children():
            branch.build((None, None, None, self.in_channels))
            branch.built = True
        self.built = True

    def forward(self, features) -> dict[str, Tensor]:
        x = as_tensor(features)
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise input_error(self, x, f"an NHWC map with {self.in_channels} channels")
        return {"heatmap": self.heatmap(x), "size": self.size(x), "offset": self.offset(x)}

    def get_config(self) -> dict:
        return {"in_channels": self.in_channels, "num_classes": self.num_classes,
                "head_channels": self.head_channels, "name": self.name}


@register_layer
class CenterNet(DetectorBase):
    """CenterNet (module docstring) on a ``backbone`` giving one map of stride ``stride`` (a
    dict of maps: its first), (H // stride, W // stride). ``head``: a :class:`CenterNetHead`
    (made when None on ``in_channels`` channels, by default ``backbone.out_channels``).
    Training (with targets: dicts of 'boxes' (n, 4) in pixels and 'labels' in [0, C)) returns
    the losses {'heatmap', 'size', 'offset'}; evaluation returns per image {'boxes', 'scores',
    'labels'} as the other detectors do, boxes clipped to the image."""

    default_name = "centernet"

    def __init__(self, backbone: Module, num_classes: int, stride: int = 4, head: Module | None = None,
                 in_channels: int | None = None, head_channels: int = 64, image_mean: Sequence[float] = (0.5,),
                 image_std: Sequence[float] = (0.5,), min_overlap: float = 0.7, size_weight: float = 0.1,
                 offset_weight: float = 1.0, score_thresh: float = 0.1, detections_per_img: int = 100,
                 name: str | None = "centernet"):
        super().__init__(num_classes, image_mean, image_std, name=name)
        if head is None:
            channels = in_channels if in_channels is not None else getattr(backbone, "out_channels", None)
            if channels is None:
                raise ValueError("CenterNet: give in_channels (the backbone's output channels) or a head")
            head = CenterNetHead(channels, num_classes, head_channels)
        self.backbone, self.head = backbone, head
        self.stride = int(stride)
        self.min_overlap, self.size_weight, self.offset_weight = float(min_overlap), float(size_weight), \
            float(offset_weight)
        self.score_thresh, self.detections_per_img = float(score_thresh), int(detections_per_img)

    def build(self, input_shape) -> None:
        self._build_parts(input_shape, self.head)

    def forward(self, images, targets=None):
        x, checked = self._checked_inputs(images, targets)
        features = self.backbone(self.normalize(x))
        if isinstance(features, dict):
            features = next(iter(features.values()))
        wanted = (x.shape[1] // self.stride, x.shape[2] // self.stride)
        if tuple(features.shape[1:3]) != wanted:
            raise ShapeError(f"{self._label()}: the backbone maps images {tuple(x.shape[1:3])} to features "
                             f"{tuple(features.shape[1:3])}; stride={self.stride} expects {wanted}")
        outputs = self.head(features)
        if self.training:
            return self.compute_loss(checked, outputs)
        scores = 1.0 / (1.0 + np.exp(-outputs["heatmap"].numpy().astype(np.float64)))
        detections = centernet_decode(scores, outputs["size"].numpy(), outputs["offset"].numpy(), self.stride,
                                      self.detections_per_img, self.score_thresh)
        for found in detections:
            found["boxes"] = vision.clip_boxes_to_image(found["boxes"], tuple(x.shape[1:3])).astype(np.float32)
        return detections

    def compute_loss(self, targets: list[dict], outputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """The losses (module docstring) of the head's ``outputs`` for checked ``targets``."""
        logits = outputs["heatmap"]
        count, height, width, _ = logits.shape
        encoded = [centernet_targets(t["boxes"], t["labels"], self.num_classes, (height, width), self.stride,
                                     self.min_overlap) for t in targets]
        heatmap = np.stack([e["heatmap"] for e in encoded]).astype(logits.dtype)
        rows = np.concatenate([e["indices"] + i * height * width for i, e in enumerate(encoded)])
        num_objects = len(rows)
        losses = {"heatmap": centernet_focal_loss(logits, heatmap, num_objects)}
        for key, weight in (("size", self.size_weight), ("offset", self.offset_weight)):
            predicted = outputs[key]
            if num_objects == 0:
                losses[key] = predicted.sum() * 0.0
                continue
            wanted = np.concatenate([e[key + "s"] for e in encoded]).astype(predicted.dtype)
            chosen = F.take_rows(predicted.reshape(-1, 2), rows)
            losses[key] = F.abs(chosen - Tensor(wanted)).mean() * weight
        return losses

    def get_config(self) -> dict:
        return {"backbone": layer_to_config(self.backbone), "head": layer_to_config(self.head),
                "num_classes": self.num_classes, "stride": self.stride, "image_mean": self.image_mean,
                "image_std": self.image_std, "min_overlap": self.min_overlap, "size_weight": self.size_weight,
                "offset_weight": self.offset_weight, "score_thresh": self.score_thresh,
                "detections_per_img": self.detections_per_img, "name": self.name}

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, stride={self.stride}"


def centernet_small(num_classes: int, in_channels: int = 3, width: int = 16, stride: int = 4,
                    head_channels: int = 32, **options) -> CenterNet:
    """A small :class:`CenterNet`: conv3x3 (``width``, ReLU), log2(``stride``) stride-2 conv3x3
    (doubling the width once, ReLU), conv3x3 (ReLU), then the head; ``options`` go to
    :class:`CenterNet`. Untrained and unbuilt."""
    if stride < 1 or stride & (stride - 1):
        raise ValueError(f"centernet_small: stride must be a power of two, got {stride!r}")
    layers = [nn.Conv2D(width, 3, padding=1, activation="relu")]
    for step in range(stride.bit_length() - 1):
        layers.append(nn.Conv2D(width * 2 if step else width, 3, stride=2, padding=1, activation="relu"))
    channels = width * 2 if stride > 1 else width
    layers.append(nn.Conv2D(channels, 3, padding=1, activation="relu"))
    options.setdefault("image_mean", (0.5,) * in_channels)
    options.setdefault("image_std", (0.5,) * in_channels)
    return CenterNet(nn.Sequential(*layers, name="backbone"), num_classes, stride, in_channels=channels,
                     head_channels=head_channels, **options)
