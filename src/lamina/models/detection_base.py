"""What the detectors (one-stage: :class:`~lamina.models.RetinaNet`, :class:`~lamina.models.FCOS`;
two-stage: :class:`~lamina.models.FasterRCNN`) share, in the interface of torchvision's
detection models:

* ``model(images)`` in evaluation mode: one dict per image {'boxes': (k, 4) corners (x1, y1,
  x2, y2) in pixels, 'scores': (k,), 'labels': (k,) int64}, NumPy arrays;
* ``model(images, targets)`` in training mode: a dict of scalar loss tensors, whose sum is
  what to back-propagate; ``targets`` holds per image {'boxes': (n, 4), 'labels': (n,)}.

``images`` is an NHWC batch (N, H, W, C) of values in [0, 1], normalized inside as
(x - image_mean) / image_std per channel (torchvision's GeneralizedRCNNTransform, without
its resizing: boxes are in the input's pixels).

The anchors, box coding, IoU and non-maximum suppression come from :mod:`lamina.vision`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lamina import backend, vision
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn.layer import describe, layer_from_config, layer_to_config
from lamina.nn.module import Module, as_tensor

__all__ = ["BalancedPositiveNegativeSampler", "DetectionModel", "DetectorBase", "IGNORED", "UNMATCHED", "match_by_iou"]

UNMATCHED, IGNORED = -1, -2
"""Matcher codes: an anchor below the background threshold, and one between the thresholds."""


def match_by_iou(iou: np.ndarray, high: float, low: float, allow_low_quality_matches: bool = True) -> np.ndarray:
    """torchvision's Matcher on an IoU matrix (ground truths G, anchors A): each anchor takes
    the ground truth it overlaps most; below ``low`` it is UNMATCHED (-1), in [low, high)
    IGNORED (-2). With ``allow_low_quality_matches`` every anchor that reaches a ground truth's
    highest IoU keeps its best ground truth even below ``high``. Returns (A,) int64."""
    if iou.shape[0] == 0:
        return np.full(iou.shape[1], UNMATCHED, dtype=np.int64)
    best = iou.max(axis=0)
    matches = iou.argmax(axis=0).astype(np.int64)
    all_matches = matches.copy()
    matches[best < low] = UNMATCHED
    matches[(best >= low) & (best < high)] = IGNORED
    if allow_low_quality_matches:
        highest_per_truth = iou.max(axis=1, keepdims=True)
        anchors = np.nonzero(iou == highest_per_truth)[1]
        matches[anchors] = all_matches[anchors]
    return matches


class BalancedPositiveNegativeSampler:
    """torchvision's sampler of the anchors or proposals that a two-stage detector trains on.

    Per image, from labels (>= 1 positive, 0 negative, -1 ignored) it draws at random at most
    p = int(batch_size_per_image positive_fraction) positives, then negatives to fill
    batch_size_per_image (as many as there are when fewer). The draws come from lamina's
    generator (:func:`lamina.backend.rng`), so :func:`lamina.manual_seed` makes them repeat."""

    def __init__(self, batch_size_per_image: int, positive_fraction: float):
        if int(batch_size_per_image) < 1 or not 0 <= positive_fraction <= 1:
            raise ValueError(f"BalancedPositiveNegativeSampler: need batch_size_per_image >= 1 and positive_fraction "
                             f"in [0, 1], got {batch_size_per_image!r} and {positive_fraction!r}")
        self.batch_size_per_image, self.positive_fraction = int(batch_size_per_image), float(positive_fraction)

    def __call__(self, labels: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per image, boolean masks of the sampled positives and of the sampled negatives."""
        positives, negatives = [], []
        rng = backend.rng()
        for image_labels in labels:
            image_labels = np.asarray(image_labels)
            positive, negative = np.flatnonzero(image_labels >= 1), np.flatnonzero(image_labels == 0)
            num_pos = min(len(positive), int(self.batch_size_per_image * self.positive_fraction))
            num_neg = min(len(negative), self.batch_size_per_image - num_pos)
            for pool, count, masks in ((positive, num_pos, positives), (negative, num_neg, negatives)):
                mask = np.zeros(len(image_labels), dtype=bool)
                mask[pool[rng.permutation(len(pool))[:count]]] = True
                masks.append(mask)
        return positives, negatives


def top_candidates(scores: np.ndarray, threshold: float, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The indices and values of the (at most ``k``) highest ``scores`` above ``threshold``, by
    decreasing score."""
    above = np.flatnonzero(scores > threshold)
    order = np.argsort(-scores[above], kind="stable")[:k]
    return above[order], scores[above[order]]


def _check_channels(values, channels: int, what: str, fn: str) -> tuple[float, ...]:
    values = tuple(float(v) for v in values)
    if len(values) != channels:
        raise ValueError(f"{fn}: {what} needs one value per image channel ({channels}), got {values!r}")
    return values


class DetectorBase(Module):
    """What every detector shares: the number of classes, the image normalization and the
    checks of the images and targets (module docstring). Target labels must lie in
    [``first_label``, num_classes): 0 for the one-stage detectors, 1 for the two-stage ones,
    whose class 0 is the background."""

    module_options: tuple[str, ...] = ("backbone", "head")     # sub-modules stored as configs

    first_label = 0

    def __init__(self, num_classes: int, image_mean: Sequence[float], image_std: Sequence[float],
                 name: str | None = None):
        super().__init__(name=name)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes <= self.first_label:
            wanted = "a positive int" if self.first_label == 0 else "an int above 1 (class 0 is the background)"
            raise ValueError(f"{type(self).__name__}: num_classes must be {wanted}, got {num_classes!r}")
        if len(image_mean) != len(image_std) or min(float(s) for s in image_std) <= 0:
            raise ValueError(f"{type(self).__name__}: image_mean and image_std need one value per channel "
                             f"(std > 0), got {image_mean!r} and {image_std!r}")
        self.num_classes = num_classes
        self.image_mean = [float(m) for m in image_mean]
        self.image_std = [float(s) for s in image_std]

    def _image_shape(self, input_shape) -> tuple:
        shape = tuple(input_shape[0] if input_shape and isinstance(input_shape[0], (list, tuple)) else input_shape)
        if len(shape) != 4 or shape[-1] != len(self.image_mean):
            raise ShapeError(f"{self._label()}: expected an NHWC image shape (batch, height, width, "
                             f"{len(self.image_mean)}), got {shape}")
        return shape

    # -- checks --------------------------------------------------------------------------
    def _images(self, images) -> Tensor:
        x = as_tensor(images)
        channels = len(self.image_mean)
        if x.ndim != 4 or x.shape[-1] != channels:
            hint = ""
            if x.ndim == 4 and x.shape[1] == channels:
                hint = "; it looks like NCHW: transpose it with images.transpose(0, 2, 3, 1)"
            elif x.ndim == 3:
                hint = " (add a batch axis: images[None])"
            raise ShapeError(f"{self._label()}: got images of {describe(x)}; expected an NHWC batch (batch, "
                             f"height, width, {channels}){hint}")
        if np.dtype(x.dtype).kind != "f":
            raise TypeError(f"{self._label()}: images must be floating point values in [0, 1], got dtype {x.dtype}")
        return x

    def _targets(self, targets, count: int) -> list[dict[str, np.ndarray]]:
        if targets is None:
            raise ValueError(f"{self._label()}: targets are required in training mode (a list of {count} dicts "
                             "with 'boxes' (n, 4) and 'labels' (n,)); call model.eval() to detect")
        if len(targets) != count:
            raise ValueError(f"{self._label()}: got {len(targets)} targets for {count} images")
        checked = []
        for i, target in enumerate(targets):
            if not isinstance(target, dict) or "boxes" not in target or "labels" not in target:
                raise ValueError(f"{self._label()}: target {i} must be a dict with 'boxes' and 'labels'")
            boxes = np.asarray(backend.to_numpy(getattr(target["boxes"], "data", target["boxes"])), dtype=np.float64)
            boxes = boxes.reshape(0, 4) if boxes.size == 0 else boxes
            labels = np.asarray(backend.to_numpy(getattr(target["labels"], "data", target["labels"]))).reshape(-1)
            if boxes.ndim != 2 or boxes.shape[1] != 4 or len(labels) != len(boxes):
                raise ShapeError(f"{self._label()}: target {i} needs boxes (n, 4) and labels (n,), got shapes "
                                 f"{boxes.shape} and {labels.shape}")
            first = self.first_label
            out_of_range = len(labels) and (labels.min() < first or labels.max() >= self.num_classes)
            if len(labels) and (labels.dtype.kind not in "iu" or out_of_range):
                background = " (0 is the background)" if first else ""
                raise ValueError(f"{self._label()}: target {i} has labels {labels.tolist()}; expected integers "
                                 f"in [{first}, {self.num_classes}){background}")
            degenerate = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
            if degenerate.any():
                raise ValueError(f"{self._label()}: target {i} has degenerate boxes (x2 <= x1 or y2 <= y1): "
                                 f"{boxes[degenerate].tolist()}")
            checked.append({"boxes": boxes, "labels": labels.astype(np.int64)})
        return checked

    def normalize(self, images: Tensor) -> Tensor:
        """(x - image_mean) / image_std per channel."""
        mean = np.asarray(self.image_mean, dtype=images.dtype)
        scale = np.asarray([1.0 / s for s in self.image_std], dtype=images.dtype)
        return (images - Tensor(backend.xp.asarray(mean))) * Tensor(backend.xp.asarray(scale))

    @classmethod
    def from_config(cls, config: dict) -> DetectorBase:
        """The detector of ``get_config()``: its ``module_options`` sub-modules rebuilt from
        their configs, the other entries passed as they are."""
        config = dict(config)
        parts = {key: layer_from_config(config.pop(key)) for key in cls.module_options}
        return cls(**parts, **config)

    def _build_parts(self, input_shape, *parts: Module) -> None:
        """Build the backbone on the images' shape, then ``parts`` (heads that size themselves
        on their first features)."""
        shape = self._image_shape(input_shape)
        self.backbone.build(shape)
        self.backbone.built = True
        for part in parts:
            part.build(None)
            part.built = True
        self.build_input_shape = shape
        self.built = True

    def _checked_inputs(self, images, targets) -> tuple[Tensor, list | None]:
        """The images as a checked (N, H, W, C) tensor and, in training, the checked targets."""
        if isinstance(self.build_input_shape, list):  # built on a call with targets: keep the images' shape
            self.build_input_shape = tuple(self.build_input_shape[0])
        x = self._images(images)
        return x, self._targets(targets, x.shape[0]) if self.training else None


class DetectionModel(DetectorBase):
    """The common part of the one-stage detectors (module docstring): input checks,
    normalization, anchors, and the train / evaluation switch. A subclass gives
    ``compute_loss(targets, head_outputs, anchors, level_sizes)`` and
    ``postprocess_detections(head_outputs, anchors, level_sizes, image_size)``."""

    def __init__(self, backbone: Module, head: Module, num_classes: int, anchor_sizes, aspect_ratios,
                 image_mean: Sequence[float], image_std: Sequence[float], score_thresh: float, nms_thresh: float,
                 detections_per_img: int, topk_candidates: int, name: str | None = None):
        super().__init__(num_classes, image_mean, image_std, name=name)
        self.backbone, self.head = backbone, head
        self.anchor_sizes = [[float(s) for s in level] for level in anchor_sizes]
        self.aspect_ratios = [[float(r) for r in level] for level in aspect_ratios]
        self.anchor_generator = vision.AnchorGenerator(tuple(tuple(s) for s in self.anchor_sizes),
                                                          tuple(tuple(r) for r in self.aspect_ratios))
        self.score_thresh, self.nms_thresh = float(score_thresh), float(nms_thresh)
        self.detections_per_img, self.topk_candidates = int(detections_per_img), int(topk_candidates)

    # -- building ------------------------------------------------------------------------
    def build(self, input_shape) -> None:
        self._build_parts(input_shape, self.head)

    # -- running -------------------------------------------------------------------------
    def forward(self, images, targets=None):
        x, checked = self._checked_inputs(images, targets)
        features = self.extract_features(self.normalize(x))
        head_outputs = self.head(features)
        anchors = self.anchor_generator.grid_anchors(tuple(x.shape[1:3]), [tuple(f.shape[1:3]) for f in features])
        level_sizes = [len(a) for a in anchors]
        anchors = np.concatenate(anchors).astype(np.float64)
        if self.training:
            return self.compute_loss(checked, head_outputs, anchors, level_sizes)
        return self.postprocess_detections(head_outputs, anchors, level_sizes, tuple(x.shape[1:3]))

    def extract_features(self, images: Tensor) -> list[Tensor]:
        """The maps the head runs on, finest first: the backbone's dict of maps as a list."""
        return list(self.backbone(images).values())

    def compute_loss(self, targets, head_outputs, anchors, level_sizes) -> dict[str, Tensor]:
        raise NotImplementedError

    def postprocess_detections(self, head_outputs, anchors, level_sizes, image_size) -> list[dict]:
        raise NotImplementedError

    def _select(self, boxes: list, scores: list, labels: list, image_size) -> dict[str, np.ndarray]:
        """Clip the candidates of every level to the image, then per-class NMS and the best
        ``detections_per_img``."""
        boxes = vision.clip_boxes_to_image(np.concatenate(boxes), image_size)
        scores, labels = np.concatenate(scores), np.concatenate(labels)
        keep = vision.batched_nms(boxes, scores, labels, self.nms_thresh)[:self.detections_per_img]
        return {"boxes": boxes[keep].astype(np.float32), "scores": scores[keep].astype(np.float32),
                "labels": labels[keep].astype(np.int64)}

    # -- configuration -----------------------------------------------------------------------
    def get_config(self) -> dict:
        return {"backbone": layer_to_config(self.backbone), "head": layer_to_config(self.head),
                "num_classes": self.num_classes, "anchor_sizes": self.anchor_sizes,
                "aspect_ratios": self.aspect_ratios, "image_mean": self.image_mean, "image_std": self.image_std,
                "score_thresh": self.score_thresh, "nms_thresh": self.nms_thresh,
                "detections_per_img": self.detections_per_img, "topk_candidates": self.topk_candidates,
                "name": self.name}

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, levels={len(self.anchor_sizes)}"


def level_slices(level_sizes: Sequence[int]) -> list[slice]:
    """The rows of each level in the concatenated anchors (or head outputs)."""
    ends = np.cumsum([0, *level_sizes])
    return [slice(int(a), int(b)) for a, b in zip(ends[:-1], ends[1:])]
