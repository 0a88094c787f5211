"""FCOS (Tian et al. 2019, "FCOS: Fully Convolutional One-Stage Object Detection"), anchor-free,
in torchvision's layout.

Every location of every FPN level (one "anchor" per location: a square of the level's
stride, centred at (j s, i s), as torchvision's AnchorGenerator places it) predicts C class
logits, a centerness logit and the distances (l, t, r, b) from its centre to the box sides,
in units of the stride (ReLU'd). Both towers are 4 x (conv3x3 + GroupNorm(32) + ReLU);
weights N(0, 0.01^2), the class logits' bias -log((1 - 0.01) / 0.01).

Matching (torchvision's): a location is a candidate of a ground-truth box when its centre
lies inside the box, within ``center_sampling_radius`` strides of the box centre (centre
sampling, per axis), and its largest distance to the sides lies in the level's range
(4 s, 8 s) (the first level from 0, the last to infinity); of several boxes it takes the
smallest. Losses, each summed over the batch and divided by max(1, n_fg):

    classification: sigmoid focal loss (alpha 0.25, gamma 2) of every location and class,
    bbox_regression: 1 - GIoU of the decoded and the ground-truth boxes (foreground),
    bbox_ctrness: BCE with logits against sqrt(min(l, r) / max(l, r) min(t, b) / max(t, b)).

Inference scores are sqrt(sigma(class) sigma(centerness)); then as RetinaNet.
``fcos_resnet50_fpn``: 32,269,600 parameters with 91 classes, as torchvision's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from lamina import functional as F
from lamina import nn, vision
from lamina.autograd import Tensor
from lamina.models.blocks import check_input, finish
from lamina.models.detection_base import DetectionModel, level_slices, top_candidates
from lamina.models.fpn import BackboneWithFPN
from lamina.models.retinanet import flatten_level, head_conv, prior_bias
from lamina.nn.layer import input_error, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["FCOS", "FCOSHead", "fcos_resnet50_fpn", "ltrb_decode", "ltrb_encode"]


def ltrb_encode(anchors: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Distances (l, t, r, b) from the anchors' centres to the boxes' sides, divided by the
    anchors' widths and heights (torchvision's BoxLinearCoder, normalize_by_size=True)."""
    cx, cy = (anchors[:, 0] + anchors[:, 2]) / 2, (anchors[:, 1] + anchors[:, 3]) / 2
    w, h = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    return np.stack([(cx - boxes[:, 0]) / w, (cy - boxes[:, 1]) / h, (boxes[:, 2] - cx) / w,
                     (boxes[:, 3] - cy) / h], axis=1)


def ltrb_decode(codes, anchors: np.ndarray):
    """Boxes (x1, y1, x2, y2) from (l, t, r, b) codes in anchor sizes (the inverse of
    :func:`ltrb_encode`); a tensor in gives a tensor, differentiable in the codes."""
    cx, cy = (anchors[:, 0] + anchors[:, 2]) / 2, (anchors[:, 1] + anchors[:, 3]) / 2
    w, h = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    if not isinstance(codes, Tensor):
        return np.stack([cx - codes[:, 0] * w, cy - codes[:, 1] * h, cx + codes[:, 2] * w, cy + codes[:, 3] * h], 1)
    scale = Tensor(np.stack([w, h, w, h], axis=1).astype(codes.dtype))
    centres = Tensor(np.stack([cx, cy, cx, cy], axis=1).astype(codes.dtype))
    signs = Tensor(np.array([-1.0, -1.0, 1.0, 1.0], dtype=codes.dtype))
    return centres + codes * scale * signs


def _gn_tower(in_channels: int, num_convs: int, groups: int) -> nn.Sequential:
    """``num_convs`` x (conv3x3 + GroupNorm + ReLU), flat keys '3i', '3i + 1', '3i + 2'."""
    layers: list = []
    for i in range(num_convs):
        layers += [head_conv(in_channels, name=str(3 * i)), nn.GroupNorm(groups, name=str(3 * i + 1)),
                   nn.ReLU(name=str(3 * i + 2))]
    return nn.Sequential(*layers, name="conv")


class _FCOSTower(Module):
    def __init__(self, in_channels: int, num_convs: int, groups: int, name: str | None = None):
        super().__init__(name=name)
        self.in_channels, self.num_convs, self.groups = int(in_channels), int(num_convs), int(groups)
        self.conv = _gn_tower(in_channels, num_convs, groups)

    def build(self, input_shape=None) -> None:
        for layer in self.children():
            layer.build((None, None, None, self.in_channels))
            layer.built = True
        self.built = True


@register_layer
class FCOSClassificationHead(_FCOSTower):
    """``conv`` tower then ``cls_logits`` (A C outputs, prior bias): (N, sum H W A, C)."""

    default_name = "classification_head"

    def __init__(self, in_channels: int, num_anchors: int, num_classes: int, num_convs: int = 4,
                 prior_probability: float = 0.01, groups: int = 32, name: str | None = "classification_head"):
        super().__init__(in_channels, num_convs, groups, name=name)
        self.num_anchors, self.num_classes = int(num_anchors), int(num_classes)
        self.prior_probability = float(prior_probability)
        self.cls_logits = head_conv(num_anchors * num_classes, prior_bias(prior_probability), name="cls_logits")

    def forward(self, features: list) -> Tensor:
        return F.concat([flatten_level(self.cls_logits(self.conv(x)), self.num_classes) for x in features], axis=1)

    def get_config(self) -> dict:
        return {"in_channels": self.in_channels, "num_anchors": self.num_anchors, "num_classes": self.num_classes,
                "num_convs": self.num_convs, "prior_probability": self.prior_probability, "groups": self.groups,
                "name": self.name}


@register_layer
class FCOSRegressionHead(_FCOSTower):
    """``conv`` tower, then ``bbox_reg`` (A 4 distances, ReLU) and ``bbox_ctrness`` (A logits):
    ((N, sum H W A, 4), (N, sum H W A, 1))."""

    default_name = "regression_head"

    def __init__(self, in_channels: int, num_anchors: int, num_convs: int = 4, groups: int = 32,
                 name: str | None = "regression_head"):
        super().__init__(in_channels, num_convs, groups, name=name)
        self.num_anchors = int(num_anchors)
        self.bbox_reg = head_conv(num_anchors * 4, name="bbox_reg")
        self.bbox_ctrness = head_conv(num_anchors, name="bbox_ctrness")

    def forward(self, features: list) -> tuple[Tensor, Tensor]:
        boxes, centerness = [], []
        for x in features:
            hidden = self.conv(x)
            boxes.append(flatten_level(F.relu(self.bbox_reg(hidden)), 4))
            centerness.append(flatten_level(self.bbox_ctrness(hidden), 1))
        return F.concat(boxes, axis=1), F.concat(centerness, axis=1)

    def get_config(self) -> dict:
        return {"in_channels": self.in_channels, "num_anchors": self.num_anchors, "num_convs": self.num_convs,
                "groups": self.groups, "name": self.name}


@register_layer
class FCOSHead(Module):
    """``classification_head`` and ``regression_head``; ``forward(features)`` gives
    {'cls_logits', 'bbox_regression', 'bbox_ctrness'}. ``groups``: GroupNorm's (32 in
    torchvision; it must divide ``in_channels``)."""

    default_name = "head"

    def __init__(self, in_channels: int, num_anchors: int, num_classes: int, num_convs: int = 4, groups: int = 32,
                 name: str | None = "head"):
        super().__init__(name=name)
        self.in_channels, self.num_anchors, self.num_classes = int(in_channels), int(num_anchors), int(num_classes)
        self.num_convs, self.groups = int(num_convs), int(groups)
        if self.in_channels % self.groups:
            raise ValueError(f"FCOSHead: groups={groups} must divide in_channels={in_channels}")
        self.classification_head = FCOSClassificationHead(in_channels, num_anchors, num_classes, num_convs,
                                                          groups=groups)
        self.regression_head = FCOSRegressionHead(in_channels, num_anchors, num_convs, groups)

    def build(self, input_shape=None) -> None:
        for head in self.children():
            head.build()
            head.built = True
        self.built = True

    def forward(self, features) -> dict[str, Tensor]:
        maps = [as_tensor(f) for f in features]
        for x in maps:
            if x.ndim != 4 or x.shape[-1] != self.in_channels:
                raise input_error(self, x, f"a list of NHWC maps with {self.in_channels} channels")
        boxes, centerness = self.regression_head(maps)
        return {"cls_logits": self.classification_head(maps), "bbox_regression": boxes, "bbox_ctrness": centerness}

    def get_config(self) -> dict:
        return {"in_channels": self.in_channels, "num_anchors": self.num_anchors, "num_classes": self.num_classes,
                "num_convs": self.num_convs, "groups": self.groups, "name": self.name}


def fcos_match(gt_boxes: np.ndarray, anchors: np.ndarray, level_sizes: Sequence[int],
               center_sampling_radius: float = 1.5) -> np.ndarray:
    """Each location's ground truth index or -1 (module docstring: centre sampling, inside the
    box, the level's size range, the smallest box)."""
    if len(gt_boxes) == 0:
        return np.full(len(anchors), -1, dtype=np.int64)
    gt_centres = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    sizes = anchors[:, 2] - anchors[:, 0]
    near = np.abs(centres[:, None, :] - gt_centres[None, :, :]).max(axis=2) < center_sampling_radius * sizes[:, None]
    x, y = centres[:, 0:1], centres[:, 1:2]
    distances = np.stack([x - gt_boxes[None, :, 0], y - gt_boxes[None, :, 1], gt_boxes[None, :, 2] - x,
                          gt_boxes[None, :, 3] - y], axis=2)
    lower, upper = sizes * 4, sizes * 8
    lower[:level_sizes[0]] = 0
    upper[len(anchors) - level_sizes[-1]:] = math.inf
    reach = distances.max(axis=2)
    candidate = near & (distances.min(axis=2) > 0) & (reach > lower[:, None]) & (reach < upper[:, None])
    areas = (gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1])
    preference = candidate * (1e8 - areas[None, :])
    matched = preference.argmax(axis=1).astype(np.int64)
    matched[preference.max(axis=1) < 1e-5] = -1
    return matched


@register_layer
class FCOS(DetectionModel):
    """FCOS (module docstring) on a :class:`~lamina.models.BackboneWithFPN`. ``anchor_sizes``:
    one size per level, the level's stride (8, 16, 32, 64, 128 for P3 .. P7); ``head``: an
    :class:`FCOSHead` (made when None, ``head_convs`` convolutions per tower, GroupNorm with
    ``head_groups`` groups). Training losses 'classification', 'bbox_regression',
    'bbox_ctrness'; see :mod:`lamina.models.detection_base` for the interface."""

    default_name = "fcos"

    def __init__(self, backbone: Module, num_classes: int, anchor_sizes=None, aspect_ratios=None,
                 head: Module | None = None, image_mean: Sequence[float] = (0.485, 0.456, 0.406),
                 image_std: Sequence[float] = (0.229, 0.224, 0.225), center_sampling_radius: float = 1.5,
                 score_thresh: float = 0.2, nms_thresh: float = 0.6, detections_per_img: int = 100,
                 topk_candidates: int = 1000, head_convs: int = 4, head_groups: int = 32, name: str | None = "fcos"):
        anchor_sizes = [[8], [16], [32], [64], [128]] if anchor_sizes is None else anchor_sizes
        aspect_ratios = [[1.0]] * len(anchor_sizes) if aspect_ratios is None else aspect_ratios
        if any(len(s) != 1 for s in anchor_sizes) or any(len(r) != 1 for r in aspect_ratios):
            raise ValueError(f"FCOS: one anchor per location: one size and one ratio per level, got {anchor_sizes!r} "
                             f"and {aspect_ratios!r}")
        if head is None:
            head = FCOSHead(backbone.out_channels, 1, num_classes, head_convs, head_groups)
        super().__init__(backbone, head, num_classes, anchor_sizes, aspect_ratios, image_mean, image_std,
                         score_thresh, nms_thresh, detections_per_img, topk_candidates, name=name)
        self.center_sampling_radius = float(center_sampling_radius)
        self.head_convs, self.head_groups = int(head_convs), int(head_groups)

    def compute_loss(self, targets, head_outputs, anchors, level_sizes) -> dict[str, Tensor]:
        logits, codes = head_outputs["cls_logits"], head_outputs["bbox_regression"]
        centerness = head_outputs["bbox_ctrness"]
        count = len(targets)
        matched = [fcos_match(t["boxes"], anchors, level_sizes, self.center_sampling_radius) for t in targets]
        foreground = np.concatenate([m >= 0 for m in matched])
        gt_boxes = np.concatenate([t["boxes"][np.maximum(m, 0)] if len(t["boxes"]) else np.zeros((len(m), 4))
                                   for t, m in zip(targets, matched)])
        gt_labels = np.concatenate([t["labels"][m[m >= 0]] for t, m in zip(targets, matched)])
        all_anchors = np.tile(anchors, (count, 1))
        fg_rows = np.flatnonzero(foreground)
        normalizer = max(1, len(fg_rows))
        flat_logits = logits.reshape(-1, self.num_classes)
        one_hot = np.zeros(flat_logits.shape, dtype=logits.dtype)
        one_hot[fg_rows, gt_labels] = 1.0
        classification = vision.sigmoid_focal_loss(flat_logits, one_hot, reduction="sum") / normalizer
        if len(fg_rows) == 0:
            zero = codes.sum() * 0.0 + centerness.sum() * 0.0
            return {"classification": classification, "bbox_regression": zero, "bbox_ctrness": zero}
        fg_anchors, fg_boxes = all_anchors[fg_rows], gt_boxes[fg_rows]
        predicted = ltrb_decode(F.take_rows(codes.reshape(-1, 4), fg_rows), fg_anchors)
        regression = vision.generalized_box_iou_loss(predicted, fg_boxes.astype(codes.dtype), reduction="sum")
        distances = ltrb_encode(fg_anchors, fg_boxes)
        left_right, top_bottom = distances[:, [0, 2]], distances[:, [1, 3]]
        wanted = np.sqrt(left_right.min(axis=1) / left_right.max(axis=1)
                         * (top_bottom.min(axis=1) / top_bottom.max(axis=1)))
        ctrness = F.binary_cross_entropy_with_logits(F.take_rows(centerness.reshape(-1), fg_rows),
                                                     wanted.astype(centerness.dtype), reduction="sum")
        return {"classification": classification, "bbox_regression": regression / normalizer,
                "bbox_ctrness": ctrness / normalizer}

    def postprocess_detections(self, head_outputs, anchors, level_sizes, image_size) -> list[dict]:
        def sigmoid(z):
            return 1.0 / (1.0 + np.exp(-z))

        logits = head_outputs["cls_logits"].numpy().astype(np.float64)
        codes = head_outputs["bbox_regression"].numpy().astype(np.float64)
        centerness = head_outputs["bbox_ctrness"].numpy().astype(np.float64)
        detections = []
        for image_logits, image_codes, image_centerness in zip(logits, codes, centerness):
            boxes, scores, labels = [], [], []
            for rows in level_slices(level_sizes):
                level_scores = np.sqrt(sigmoid(image_logits[rows]) * sigmoid(image_centerness[rows]))
                picked, picked_scores = top_candidates(level_scores.reshape(-1), self.score_thresh,
                                                       self.topk_candidates)
                anchor_rows = picked // self.num_classes
                boxes.append(ltrb_decode(image_codes[rows][anchor_rows], anchors[rows][anchor_rows]).reshape(-1, 4))
                scores.append(picked_scores)
                labels.append(picked % self.num_classes)
            detections.append(self._select(boxes, scores, labels, image_size))
        return detections

    def get_config(self) -> dict:
        return {**super().get_config(), "center_sampling_radius": self.center_sampling_radius,
                "head_convs": self.head_convs, "head_groups": self.head_groups}


def fcos_resnet50_fpn(num_classes: int = 91, trainable_backbone_layers: int = 5,
                      input_shape: tuple[int, int, int] = (800, 800, 3), **kwargs) -> FCOS:
    """torchvision's FCOS ResNet-50 FPN (module docstring; unbuilt): ResNet-50 with frozen batch
    norms, FPN on layer2..layer4 with P6, P7 from P5; 32,269,600 parameters with 91 classes."""
    input_shape = check_input(input_shape, "fcos_resnet50_fpn")
    backbone = BackboneWithFPN(50, (2, 3, 4), 256, "p6p7", trainable_backbone_layers)
    return finish(FCOS(backbone, num_classes, **kwargs), input_shape)
