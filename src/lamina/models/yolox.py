"""YOLOX (Ge et al. 2021, "YOLOX: Exceeding YOLO Series in 2021"): an anchor-free YOLO with a
decoupled head and SimOTA label assignment.

Architecture (every convolution is conv + BatchNorm (eps 1e-3) + SiLU; w = ``width``,
d = ``depth``):

* CSP-Darknet backbone: a 3x3 stem (w channels, stride ``stem_stride``: 2 in place of YOLOX's
  Focus, 1 for small images), then four stages, each a stride-2 3x3 conv and a CSP block (two
  1x1 halves, n bottlenecks 1x1 -> 3x3 with a residual on the first, concatenated, then 1x1),
  of widths 2w, 4w, 8w, 16w and d, 3d, 3d, d bottlenecks; the last three are C3, C4, C5.
* PAFPN neck: top-down (1x1 reduce, 2x nearest upsampling, concatenation with the level
  below, CSP without residuals) then bottom-up (stride-2 3x3, concatenation, CSP), giving
  P3, P4, P5 of 4w, 8w, 16w channels.
* Decoupled head, per level: a 1x1 stem (4w), a class branch (2 x 3x3, then 1x1 to C
  logits) and a regression branch (2 x 3x3, then 1x1 to (tx, ty, tw, th) and 1x1 to the
  objectness logit); the class and objectness biases start at -log((1 - 0.01) / 0.01).

Outputs per location (i, j) of a level of stride s, anchor-free: centre ((tx + j) s,
(ty + i) s), size (exp(tw) s, exp(th) s).

SimOTA (:func:`simota_assign`, as the published code): an anchor of centre
c = ((j + 1/2) s, (i + 1/2) s) is a candidate when c lies inside a ground-truth box or within
``center_radius`` (2.5) strides of its centre (per axis), for any box. The cost of a pair
(box g, candidate a) is

    BCE(sqrt(sigma(cls_a) sigma(obj_a)), onehot(label_g)) summed over classes
    + 3 (-log(IoU(g, a) + 1e-8)) + 1e5 [a not both inside g and near its centre];

box g takes its dynamic k = max(1, int(sum of its 10 highest IoUs)) cheapest candidates, and
an anchor taken by several boxes keeps the cheapest. Losses, over n_fg positives of the batch
(at least 1):

    iou: ``reg_weight`` (5) sum over positives of 1 - IoU^2 (decoded and ground-truth box),
    obj: sum over every anchor of BCE(obj logit, [positive]),
    cls: sum over positives and classes of BCE(cls logit, onehot(label) IoU(prediction, box)),

each divided by n_fg. Decoding: score = sigma(obj) max_c sigma(cls_c), above
``score_thresh``, boxes clipped to the image, class-aware NMS, the ``detections_per_img``
best. The L1 loss of the last epochs and the SPP block of C5 are left out.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

from lamina import functional as F
from lamina import nn, vision
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.detection_base import DetectorBase
from lamina.nn import init
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.module import Module, as_tensor

__all__ = ["YOLOX", "simota_assign", "yolox_decode", "yolox_iou_loss", "yolox_nano", "yolox_tiny"]

PRIOR_BIAS = -math.log((1 - 0.01) / 0.01)
"""The class and objectness logits' initial bias: sigma = 0.01."""


def _conv(filters: int, kernel: int, stride: int = 1, name: str | None = None,
          momentum: float = 0.97) -> nn.Sequential:
    return nn.Sequential(nn.Conv2D(filters, kernel, stride=stride, padding=kernel // 2, use_bias=False, name="0"),
                         nn.BatchNorm(momentum=momentum, eps=1e-3, name="1"), nn.SiLU(name="2"), name=name)


class _CSPBlock(Module):
    """Two 1x1 halves of ``filters`` / 2, ``count`` bottlenecks on the first, concatenated, 1x1."""

    def __init__(self, filters: int, count: int, shortcut: bool = True, momentum: float = 0.97,
                 name: str | None = None):
        super().__init__(name=name)
        conv = functools.partial(_conv, momentum=momentum)
        hidden = max(1, filters // 2)
        self.shortcut = shortcut
        self.conv1, self.conv2 = conv(hidden, 1, name="conv1"), conv(hidden, 1, name="conv2")
        self.bottlenecks = [(conv(hidden, 1, name=f"m{i}_0"), conv(hidden, 3, name=f"m{i}_1")) for i in range(count)]
        for i, (first, second) in enumerate(self.bottlenecks):
            setattr(self, f"m{i}_0", first)
            setattr(self, f"m{i}_1", second)
        self.conv3 = conv(filters, 1, name="conv3")

    def forward(self, x: Tensor) -> Tensor:
        main = self.conv1(x)
        for first, second in self.bottlenecks:
            out = second(first(main))
            main = main + out if self.shortcut else out
        return self.conv3(F.concat([main, self.conv2(x)], axis=-1))


class _Backbone(Module):
    def __init__(self, width: int, depth: int, stem_stride: int, momentum: float = 0.97,
                 name: str | None = "backbone"):
        super().__init__(name=name)
        conv = functools.partial(_conv, momentum=momentum)
        self.stem = conv(width, 3, stem_stride, name="stem")
        self.stages = []
        for i, (scale, repeats) in enumerate(((2, depth), (4, 3 * depth), (8, 3 * depth), (16, depth))):
            stage = nn.Sequential(conv(width * scale, 3, 2, name="0"),
                                  _CSPBlock(width * scale, repeats, momentum=momentum, name="1"), name=f"dark{i + 2}")
            setattr(self, f"dark{i + 2}", stage)
            self.stages.append(stage)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs[1:]


class _PAFPN(Module):
    def __init__(self, width: int, depth: int, momentum: float = 0.97, name: str | None = "neck"):
        super().__init__(name=name)
        conv = functools.partial(_conv, momentum=momentum)
        self.lateral5 = conv(8 * width, 1, name="lateral5")
        self.top_down4 = _CSPBlock(8 * width, depth, shortcut=False, momentum=momentum, name="top_down4")
        self.lateral4 = conv(4 * width, 1, name="lateral4")
        self.top_down3 = _CSPBlock(4 * width, depth, shortcut=False, momentum=momentum, name="top_down3")
        self.down3 = conv(4 * width, 3, 2, name="down3")
        self.bottom_up4 = _CSPBlock(8 * width, depth, shortcut=False, momentum=momentum, name="bottom_up4")
        self.down4 = conv(8 * width, 3, 2, name="down4")
        self.bottom_up5 = _CSPBlock(16 * width, depth, shortcut=False, momentum=momentum, name="bottom_up5")

    def forward(self, features: list[Tensor]) -> list[Tensor]:
        c3, c4, c5 = features
        reduced5 = self.lateral5(c5)
        merged4 = self.top_down4(F.concat([F.upsample2d(reduced5, 2), c4], axis=-1))
        reduced4 = self.lateral4(merged4)
        p3 = self.top_down3(F.concat([F.upsample2d(reduced4, 2), c3], axis=-1))
        p4 = self.bottom_up4(F.concat([self.down3(p3), reduced4], axis=-1))
        p5 = self.bottom_up5(F.concat([self.down4(p4), reduced5], axis=-1))
        return [p3, p4, p5]


class _HeadLevel(Module):
    def __init__(self, hidden: int, num_classes: int, momentum: float = 0.97, name: str | None = None):
        super().__init__(name=name)
        conv = functools.partial(_conv, momentum=momentum)
        self.stem = conv(hidden, 1, name="stem")
        self.cls_convs = nn.Sequential(conv(hidden, 3, name="0"), conv(hidden, 3, name="1"), name="cls_convs")
        self.reg_convs = nn.Sequential(conv(hidden, 3, name="0"), conv(hidden, 3, name="1"), name="reg_convs")
        self.cls_pred = nn.Conv2D(num_classes, 1, bias_init=init.constant(PRIOR_BIAS), name="cls_pred")
        self.reg_pred = nn.Conv2D(4, 1, name="reg_pred")
        self.obj_pred = nn.Conv2D(1, 1, bias_init=init.constant(PRIOR_BIAS), name="obj_pred")

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        regression = self.reg_convs(x)
        out = F.concat([self.reg_pred(regression), self.obj_pred(regression), self.cls_pred(self.cls_convs(x))],
                       axis=-1)
        return out.reshape(out.shape[0], -1, out.shape[-1])


def _level_grid(height: int, width: int, stride: float) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return np.stack([cols.reshape(-1), rows.reshape(-1)], axis=1).astype(np.float64), np.full(height * width, stride)


def decode_boxes(raw, grid: np.ndarray, strides: np.ndarray):
    """Corner boxes (x1, y1, x2, y2) of raw (tx, ty, tw, th) (module docstring); a tensor in
    gives a tensor, differentiable in ``raw``."""
    s = strides[:, None]
    if not isinstance(raw, Tensor):
        centre, size = (raw[:, :2] + grid) * s, np.exp(raw[:, 2:4]) * s
        return np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    scale = Tensor(s, dtype=raw.dtype)
    centre = (raw[:, 0:2] + Tensor(grid, dtype=raw.dtype)) * scale
    half = F.exp(raw[:, 2:4]) * scale * 0.5
    return F.concat([centre - half, centre + half], axis=1)


def _pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt, rb = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a, area_b = np.prod(a[:, 2:] - a[:, :2], axis=1), np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def simota_assign(gt_boxes: np.ndarray, gt_labels: np.ndarray, pred_boxes: np.ndarray, cls_logits: np.ndarray,
                  obj_logits: np.ndarray, grid: np.ndarray, strides: np.ndarray, center_radius: float = 2.5,
                  candidate_topk: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """SimOTA (module docstring) for one image: ``gt_boxes`` (G, 4) corners and ``gt_labels``
    (G,); per anchor the decoded ``pred_boxes`` (A, 4), ``cls_logits`` (A, C), ``obj_logits``
    (A,), the cell ``grid`` (A, 2) (column, row) and ``strides`` (A,). Returns each anchor's
    ground-truth index or -1 (A,) and each anchor's IoU with its box (0 for the others)."""
    count = len(pred_boxes)
    matched, matched_iou = np.full(count, -1, dtype=np.int64), np.zeros(count)
    if len(gt_boxes) == 0:
        return matched, matched_iou
    centres = (grid + 0.5) * strides[:, None]
    x, y = centres[:, None, 0], centres[:, None, 1]
    inside = (x > gt_boxes[None, :, 0]) & (y > gt_boxes[None, :, 1]) & (x < gt_boxes[None, :, 2]) \
        & (y < gt_boxes[None, :, 3])
    gt_centres = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2
    reach = center_radius * strides[:, None, None]
    near = (np.abs(centres[:, None, :] - gt_centres[None, :, :]) < reach).all(axis=2)
    candidates = np.flatnonzero((inside | near).any(axis=1))
    if len(candidates) == 0:
        return matched, matched_iou
    ious = _pairwise_iou(gt_boxes, pred_boxes[candidates])                       # (G, n)
    probability = np.sqrt(_sigmoid(cls_logits[candidates]) * _sigmoid(obj_logits[candidates])[:, None])
    probability = np.clip(probability, 1e-12, 1 - 1e-12)
    one_hot = np.eye(cls_logits.shape[1])[gt_labels]                              # (G, C)
    cls_cost = -(one_hot[:, None, :] * np.log(probability[None]) +
                 (1 - one_hot[:, None, :]) * np.log(1 - probability[None])).sum(axis=2)
    both = (inside & near)[candidates].T
    cost = cls_cost + 3.0 * -np.log(ious + 1e-8) + 1e5 * ~both
    top = np.sort(ious, axis=1)[:, ::-1][:, :min(candidate_topk, len(candidates))]
    dynamic_k = np.maximum(top.sum(axis=1).astype(np.int64), 1)
    chosen = np.zeros_like(cost, dtype=bool)
    for g, k in enumerate(dynamic_k):
        chosen[g, np.argsort(cost[g], kind="stable")[:k]] = True
    taken = chosen.any(axis=0)
    shared = chosen.sum(axis=0) > 1
    owner = np.where(shared, cost.argmin(axis=0), chosen.argmax(axis=0))
    rows = candidates[taken]
    matched[rows] = owner[taken]
    matched_iou[rows] = ious[owner[taken], np.flatnonzero(taken)]
    return matched, matched_iou


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def yolox_iou_loss(predicted, target) -> Tensor:
    """YOLOX's IoU loss of (n, 4) corner boxes, summed: sum 1 - IoU^2 (``target`` a constant)."""
    target = np.asarray(target)
    lt = F.maximum(predicted[:, 0:2], Tensor(target[:, 0:2], dtype=predicted.dtype))
    rb = F.minimum(predicted[:, 2:4], Tensor(target[:, 2:4], dtype=predicted.dtype))
    span = F.clip(rb - lt, 0.0, None)
    inter = span[:, 0] * span[:, 1]
    area_p = (predicted[:, 2] - predicted[:, 0]) * (predicted[:, 3] - predicted[:, 1])
    area_t = Tensor((target[:, 2] - target[:, 0]) * (target[:, 3] - target[:, 1]), dtype=predicted.dtype)
    iou = inter / (area_p + area_t - inter + 1e-16)
    return (1.0 - iou * iou).sum()


def yolox_decode(outputs: np.ndarray, grid: np.ndarray, strides: np.ndarray, image_size: tuple[int, int],
                 score_thresh: float = 0.01, nms_thresh: float = 0.65,
                 detections_per_img: int = 100) -> list[dict[str, np.ndarray]]:
    """Detections from raw head ``outputs`` (N, A, 5 + C) (module docstring): per image a dict of
    'boxes' (x1, y1, x2, y2 in input pixels), 'scores' and 'labels', best first."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if outputs.ndim != 3 or outputs.shape[1] != len(grid) or outputs.shape[2] < 6:
        raise ShapeError(f"yolox_decode: expected outputs (N, {len(grid)}, 5 + C), got {outputs.shape}")
    detections = []
    for image in outputs:
        class_prob = _sigmoid(image[:, 5:])
        labels = class_prob.argmax(axis=1)
        scores = _sigmoid(image[:, 4]) * class_prob[np.arange(len(image)), labels]
        keep = np.flatnonzero(scores > score_thresh)
        boxes = vision.clip_boxes_to_image(decode_boxes(image[keep], grid[keep], strides[keep]), image_size)
        order = vision.batched_nms(boxes, scores[keep], labels[keep], nms_thresh)[:detections_per_img]
        detections.append({"boxes": boxes[order].astype(np.float32), "scores": scores[keep][order].astype(np.float32),
                           "labels": labels[keep][order].astype(np.int64)})
    return detections


@register_with_arguments
class YOLOX(DetectorBase):
    """YOLOX (module docstring) for ``num_classes`` classes on images of ``in_channels``:
    ``width`` the stem's channels, ``depth`` the bottlenecks of the shortest CSP blocks,
    ``bn_momentum`` the batch norms' (0.97, PyTorch's 0.03 as in YOLOX; 0.9 suits short runs),
    ``stem_stride`` 2 (strides 8, 16, 32) or 1 (strides 4, 8, 16, for small images). Image
    sides must be multiples of 16 ``stem_stride``. Training (with targets) returns the losses
    {'iou', 'obj', 'cls'}; evaluation returns per image {'boxes', 'scores', 'labels'} as the
    other detectors do."""

    default_name = "yolox"

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 16, depth: int = 1, stem_stride: int = 2,
                 image_mean: Sequence[float] | None = None, image_std: Sequence[float] | None = None,
                 center_radius: float = 2.5, reg_weight: float = 5.0, score_thresh: float = 0.01,
                 nms_thresh: float = 0.65, detections_per_img: int = 100, bn_momentum: float = 0.97,
                 name: str | None = "yolox"):
        super().__init__(num_classes, image_mean or (0.0,) * in_channels, image_std or (1.0,) * in_channels,
                         name=name)
        if min(int(width), int(depth)) < 1 or stem_stride not in (1, 2):
            raise ValueError(f"YOLOX: width and depth must be positive and stem_stride 1 or 2, got width={width!r}, "
                             f"depth={depth!r}, stem_stride={stem_stride!r}")
        self.stem_stride = int(stem_stride)
        self.center_radius, self.reg_weight = float(center_radius), float(reg_weight)
        self.score_thresh, self.nms_thresh, self.detections_per_img = float(score_thresh), float(nms_thresh), \
            int(detections_per_img)
        self.backbone = _Backbone(int(width), int(depth), self.stem_stride, bn_momentum)
        self.neck = _PAFPN(int(width), int(depth), bn_momentum)
        self.head3, self.head4, self.head5 = (_HeadLevel(4 * int(width), num_classes, bn_momentum, name=f"head{i}")
                                              for i in (3, 4, 5))

    def level_strides(self) -> tuple[int, int, int]:
        return tuple(self.stem_stride * s for s in (4, 8, 16))

    def head_outputs(self, images) -> tuple[Tensor, np.ndarray, np.ndarray]:
        """The raw outputs (N, A, 5 + C) of every location of P3, P4, P5 in turn, with their
        cells (A, 2) (column, row) and strides (A,)."""
        x = images
        multiple = 16 * self.stem_stride
        if x.shape[1] % multiple or x.shape[2] % multiple:
            raise ShapeError(f"{self._label()}: image sides must be multiples of {multiple}, got "
                             f"{tuple(x.shape[1:3])}")
        levels = self.neck(self.backbone(self.normalize(x)))
        outputs, grids, strides = [], [], []
        for head, level, stride in zip((self.head3, self.head4, self.head5), levels, self.level_strides()):
            outputs.append(head(level))
            grid, level_strides = _level_grid(level.shape[1], level.shape[2], stride)
            grids.append(grid)
            strides.append(level_strides)
        return F.concat(outputs, axis=1), np.concatenate(grids), np.concatenate(strides)

    def forward(self, images, targets=None):
        x, checked = self._checked_inputs(images, targets)
        outputs, grid, strides = self.head_outputs(x)
        if self.training:
            return self.compute_loss(checked, outputs, grid, strides)
        return yolox_decode(outputs.numpy(), grid, strides, tuple(x.shape[1:3]), self.score_thresh,
                            self.nms_thresh, self.detections_per_img)

    def assign(self, targets: list[dict], outputs: np.ndarray, grid: np.ndarray, strides: np.ndarray) -> dict:
        """SimOTA on every image of raw ``outputs`` (N, A, 5 + C), an array (no gradient flows
        through the assignment): 'rows' of the positives in the (N A) flattened outputs, their
        ground-truth 'boxes' and IoU-aware class targets 'classes' (one-hot times the IoU)."""
        anchors = outputs.shape[1]
        raw = np.asarray(outputs, dtype=np.float64)
        matched_rows, gt_boxes, cls_targets = [], [], []
        for i, target in enumerate(targets):
            matched, iou = simota_assign(target["boxes"], target["labels"], decode_boxes(raw[i], grid, strides),
                                         raw[i, :, 5:], raw[i, :, 4], grid, strides, self.center_radius)
            rows = np.flatnonzero(matched >= 0)
            matched_rows.append(rows + i * anchors)
            gt_boxes.append(target["boxes"][matched[rows]])
            cls_targets.append(np.eye(self.num_classes)[target["labels"][matched[rows]]] * iou[rows, None])
        return {"rows": np.concatenate(matched_rows), "boxes": np.concatenate(gt_boxes).reshape(-1, 4),
                "classes": np.concatenate(cls_targets).reshape(-1, self.num_classes)}

    def compute_loss(self, targets: list[dict], outputs, grid: np.ndarray, strides: np.ndarray,
                     assignment: dict | None = None) -> dict[str, Tensor]:
        """The losses (module docstring) of raw ``outputs`` (N, A, 5 + C) for checked ``targets``,
        assigned by :meth:`assign` unless an ``assignment`` is given."""
        outputs = as_tensor(outputs)
        count, anchors, _ = outputs.shape
        if assignment is None:
            assignment = self.assign(targets, outputs.numpy(), grid, strides)
        rows = assignment["rows"]
        normalizer = max(1, len(rows))
        flat = outputs.reshape(-1, outputs.shape[-1])
        objectness = np.zeros(count * anchors, dtype=outputs.dtype)
        objectness[rows] = 1.0
        obj = F.binary_cross_entropy_with_logits(flat[:, 4], objectness, reduction="sum") / normalizer
        if len(rows) == 0:
            zero = flat[:, :4].sum() * 0.0 + flat[:, 5:].sum() * 0.0
            return {"iou": zero, "obj": obj, "cls": zero}
        positives = F.take_rows(flat, rows)
        predicted = decode_boxes(positives[:, :4], np.tile(grid, (count, 1))[rows], np.tile(strides, count)[rows])
        iou = yolox_iou_loss(predicted, assignment["boxes"]) * (self.reg_weight / normalizer)
        cls = F.binary_cross_entropy_with_logits(positives[:, 5:], assignment["classes"].astype(outputs.dtype),
                                                 reduction="sum") / normalizer
        return {"iou": iou, "obj": obj, "cls": cls}

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, strides={self.level_strides()}"


def yolox_nano(num_classes: int, in_channels: int = 3, **options) -> YOLOX:
    """A nano-like :class:`YOLOX` (width 16, depth 1; YOLOX-Nano's multipliers 0.25 and 0.33
    of the 64-channel, 3-block base). Untrained and unbuilt."""
    return YOLOX(num_classes, in_channels, width=16, depth=1, **options)


def yolox_tiny(num_classes: int, in_channels: int = 3, **options) -> YOLOX:
    """A tiny-like :class:`YOLOX` (width 24, depth 1; YOLOX-Tiny's multipliers 0.375 and 0.33).
    Untrained and unbuilt."""
    return YOLOX(num_classes, in_channels, width=24, depth=1, **options)
