"""SSD (Liu et al. 2016, "SSD: Single Shot MultiBox Detector") in torchvision's layout.

A backbone gives maps of decreasing size; on each map k a 3x3 convolution predicts, for every
location and each of its A_k default boxes, C class logits (class 0 the background) and 4 box
offsets (``SSDHead``; SSDlite replaces the convolutions by depthwise-separable ones).

Default boxes (``DefaultBoxGenerator``): map k of F_k locations has the scale s_k (linearly
spaced from ``min_ratio`` to ``max_ratio``, then 1, unless ``scales`` are given) and the
boxes, relative to the image, centred at ((j + 0.5) / f_k, (i + 0.5) / f_k) with f_k =
image / step_k (or the map's size without ``steps``):

    (s_k, s_k), (s'_k, s'_k) with s'_k = sqrt(s_k s_{k+1}),
    (s_k sqrt(r), s_k / sqrt(r)) and (s_k / sqrt(r), s_k sqrt(r)) for each ratio r of map k,

widths and heights clipped to [0, 1] with ``clip``, then scaled to pixels.

Training (torchvision's losses): a default box matches the ground truth it overlaps most when
IoU >= ``iou_thresh`` (0.5), and each ground truth also takes its best default box whatever
their IoU. With n the number of matched boxes in the batch,

    L_box = sum over matched boxes of smooth-L1(t - t*) / max(1, n)   (BoxCoder (10, 10, 5, 5)),
    L_cls = sum over matched and mined boxes of -log softmax(z)_y / max(1, n),

where each image mines, among its unmatched boxes (target class 0), the 3 n_image with the
highest cross-entropy (hard negative mining, ``positive_fraction`` 0.25). Inference: softmax;
per class (background left out) the scores above ``score_thresh``, the best
``topk_candidates``; decoded boxes clipped to the image; per-class NMS at ``nms_thresh``; the
best ``detections_per_img``. Images are normalized as in every lamina detector
(:mod:`lamina.models.detection_base`); they are not resized (torchvision resizes to 300 x 300
or 320 x 320 first): pass images of the size a model is meant for.

``ssd300_vgg16``: VGG-16's convolutions (the third pool in ceil mode) up to conv4_3, whose map
is L2-normalized per location and scaled by a learned per-channel weight (20 at the start);
conv5 and the dilated fc6 (3x3, dilation 6, 1024) / fc7 (1x1, 1024) after a 3x3/1 pool; four
extra blocks (1x1 conv then a 3x3 conv, stride 2 or valid). 35,641,826 parameters with 91
classes, as torchvision's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from lamina import functional as F
from lamina import nn, vision
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.blocks import Block, check_input, finish, nhwc
from lamina.models.detection_base import UNMATCHED, DetectorBase, match_by_iou
from lamina.models.vgg import VGG_CONFIGS
from lamina.nn import init
from lamina.nn.layer import input_error, layer_to_config, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = [
    "DefaultBoxGenerator", "SSD", "SSDClassificationHead", "SSDFeatureExtractorVGG", "SSDHead",
    "SSDRegressionHead", "SSDScoringHead", "hard_negative_mask", "ssd300_vgg16", "ssd_match",
]

SSD_BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)


class DefaultBoxGenerator:
    """torchvision's default boxes of SSD (module docstring): ``aspect_ratios`` one list per
    map (2 + 2 len(ratios) boxes per location), scales from ``min_ratio`` to ``max_ratio`` or
    the ``scales`` given (one per map plus one), optional ``steps`` (pixels per location)."""

    def __init__(self, aspect_ratios: Sequence[Sequence[float]], min_ratio: float = 0.15, max_ratio: float = 0.9,
                 scales: Sequence[float] | None = None, steps: Sequence[float] | None = None, clip: bool = True):
        self.aspect_ratios = [[float(r) for r in level] for level in aspect_ratios]
        levels = len(self.aspect_ratios)
        if levels == 0 or any(r <= 0 for level in self.aspect_ratios for r in level):
            raise ValueError(f"DefaultBoxGenerator: aspect_ratios must be one list of positive ratios per map, got "
                             f"{aspect_ratios!r}")
        if steps is not None and len(steps) != levels:
            raise ValueError(f"DefaultBoxGenerator: need one step per map ({levels}), got {steps!r}")
        if scales is None:
            if levels > 1:
                scales = [min_ratio + (max_ratio - min_ratio) * k / (levels - 1.0) for k in range(levels)] + [1.0]
            else:
                scales = [min_ratio, max_ratio]
        if len(scales) != levels + 1:
            raise ValueError(f"DefaultBoxGenerator: need {levels + 1} scales (one per map and one more), got "
                             f"{scales!r}")
        self.min_ratio, self.max_ratio = float(min_ratio), float(max_ratio)
        self.scales = [float(s) for s in scales]
        self.steps = None if steps is None else [float(s) for s in steps]
        self.clip = bool(clip)

    def num_anchors_per_location(self) -> list[int]:
        return [2 + 2 * len(ratios) for ratios in self.aspect_ratios]

    def wh_pairs(self, level: int) -> np.ndarray:
        """(A_k, 2) relative widths and heights of map ``level``'s default boxes."""
        s_k = self.scales[level]
        s_prime = math.sqrt(s_k * self.scales[level + 1])
        pairs = [[s_k, s_k], [s_prime, s_prime]]
        for ratio in self.aspect_ratios[level]:
            root = math.sqrt(ratio)
            pairs += [[s_k * root, s_k / root], [s_k / root, s_k * root]]
        pairs = np.asarray(pairs, dtype=np.float64)
        return np.clip(pairs, 0.0, 1.0) if self.clip else pairs

    def default_boxes(self, image_size: tuple[int, int], grid_sizes: Sequence[tuple[int, int]]) -> np.ndarray:
        """(sum_k H_k W_k A_k, 4) corner boxes in pixels, location-major on each map, for an
        image of ``image_size`` (height, width) and maps of ``grid_sizes``."""
        if len(grid_sizes) != len(self.aspect_ratios):
            raise ShapeError(f"DefaultBoxGenerator: got {len(grid_sizes)} feature maps for {len(self.aspect_ratios)} "
                             "lists of aspect ratios")
        height, width = image_size
        boxes = []
        for k, (rows, cols) in enumerate(grid_sizes):
            f_y, f_x = (height / self.steps[k], width / self.steps[k]) if self.steps else (rows, cols)
            cy, cx = np.meshgrid((np.arange(rows) + 0.5) / f_y, (np.arange(cols) + 0.5) / f_x, indexing="ij")
            pairs = self.wh_pairs(k)
            centres = np.repeat(np.stack([cx.reshape(-1), cy.reshape(-1)], axis=1), len(pairs), axis=0)
            sizes = np.tile(pairs, (rows * cols, 1))
            boxes.append(np.concatenate([centres - 0.5 * sizes, centres + 0.5 * sizes], axis=1))
        scale = np.array([width, height, width, height], dtype=np.float64)
        return np.concatenate(boxes) * scale

    def get_config(self) -> dict:
        return {"aspect_ratios": self.aspect_ratios, "min_ratio": self.min_ratio, "max_ratio": self.max_ratio,
                "scales": self.scales, "steps": self.steps, "clip": self.clip}

    def __repr__(self) -> str:
        return f"DefaultBoxGenerator(aspect_ratios={self.aspect_ratios}, scales={self.scales}, steps={self.steps})"


# -- heads ----------------------------------------------------------------------------------------------
def _level_channels(in_channels, levels: int, what: str) -> list[int]:
    channels = [int(in_channels)] * levels if isinstance(in_channels, int) else [int(c) for c in in_channels]
    if len(channels) != levels:
        raise ValueError(f"{what}: need one channel count per map ({levels}), got {in_channels!r}")
    return channels


class SSDScoringHead(Module):
    """One module per map (``module_list``) giving A_k ``num_columns`` values per location;
    ``forward(features)`` concatenates them as (N, sum_k H_k W_k A_k, num_columns)."""

    def __init__(self, in_channels: Sequence[int], num_anchors: Sequence[int], num_columns: int,
                 name: str | None = None):
        super().__init__(name=name)
        self.num_columns = int(num_columns)
        self.in_channels, self.num_anchors = [int(c) for c in in_channels], [int(a) for a in num_anchors]
        if len(self.in_channels) != len(self.num_anchors):
            raise ValueError(f"{type(self).__name__}: in_channels {self.in_channels} and num_anchors "
                             f"{self.num_anchors} need one entry per map")
        self.module_list = nn.ModuleList([self.level_module(c, a * self.num_columns)
                                          for c, a in zip(self.in_channels, self.num_anchors)])

    def level_module(self, in_channels: int, outputs: int) -> Module:
        raise NotImplementedError

    def build(self, input_shape=None) -> None:
        for module, channels in zip(self.module_list, self.in_channels):
            module.build((None, None, None, channels))
            module.built = True
        self.built = True

    def forward(self, features) -> Tensor:
        maps = [as_tensor(f) for f in features]
        if len(maps) != len(self.in_channels):
            raise ShapeError(f"{self._label()}: got {len(maps)} feature maps, expected {len(self.in_channels)}")
        outputs = []
        for x, module, channels in zip(maps, self.module_list, self.in_channels):
            if x.ndim != 4 or x.shape[-1] != channels:
                raise input_error(self, x, f"NHWC maps with channels {self.in_channels}")
            out = module(x)
            # sizes spelled out: -1 is ambiguous for an empty batch (a summary traces one)
            outputs.append(out.reshape(out.shape[0], math.prod(out.shape[1:]) // self.num_columns, self.num_columns))
        return F.concat(outputs, axis=1)


def _xavier_conv(filters: int, kernel_size: int, padding: int = 0, **options) -> nn.Conv2D:
    return nn.Conv2D(filters, kernel_size, padding=padding, kernel_init="xavier_uniform", **options)


@register_layer
class SSDClassificationHead(SSDScoringHead):
    """Per map a 3x3 conv to A_k C logits (Xavier-uniform weights, zero biases)."""

    default_name = "classification_head"

    def __init__(self, in_channels: Sequence[int], num_anchors: Sequence[int], num_classes: int,
                 name: str | None = "classification_head"):
        super().__init__(in_channels, num_anchors, num_classes, name=name)
        self.num_classes = self.num_columns

    def level_module(self, in_channels: int, outputs: int) -> Module:
        return _xavier_conv(outputs, 3, padding=1)

    def get_config(self) -> dict:
        return {"in_channels": self.in_channels, "num_anchors": self.num_anchors, "num_classes": self.num_classes,
                "name": self.name}


@register_layer
class SSDRegressionHead(SSDScoringHead):
    """Per map a 3x3 conv to A_k 4 box offsets (Xavier-uniform weights, zero biases)."""

    default_name = "regression_head"

    def __init__(self, in_channels: Sequence[int], num_anchors: Sequence[int], name: str | None = "regression_head"):
        super().__init__(in_channels, num_anchors, 4, name=name)

    def level_module(self, in_channels: int, outputs: int) -> Module:
        return _xavier_conv(outputs, 3, padding=1)

    def get_config(self) -> dict:
        return {"in_channels": self.in_channels, "num_anchors": self.num_anchors, "name": self.name}


@register_layer
class SSDHead(Module):
    """``classification_head`` and ``regression_head``; ``forward(features)`` gives
    {'bbox_regression': (N, sum H W A, 4), 'cls_logits': (N, sum H W A, C)}."""

    default_name = "head"
    heads = (SSDClassificationHead, SSDRegressionHead)

    def __init__(self, in_channels: Sequence[int], num_anchors: Sequence[int], num_classes: int,
                 name: str | None = "head"):
        super().__init__(name=name)
        self.in_channels, self.num_anchors = [int(c) for c in in_channels], [int(a) for a in num_anchors]
        self.num_classes = int(num_classes)
        classification, regression = self.heads
        self.classification_head = classification(self.in_channels, self.num_anchors, self.num_classes)
        self.regression_head = regression(self.in_channels, self.num_anchors)

    def build(self, input_shape=None) -> None:
        for head in self.children():
            head.build()
            head.built = True
        self.built = True

    def forward(self, features) -> dict[str, Tensor]:
        features = list(features)
        return {"bbox_regression": self.regression_head(features), "cls_logits": self.classification_head(features)}

    def get_config(self) -> dict:
        return {"in_channels": self.in_channels, "num_anchors": self.num_anchors, "num_classes": self.num_classes,
                "name": self.name}


# -- training -------------------------------------------------------------------------------------------
def ssd_match(iou: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """torchvision's SSDMatcher on an IoU matrix (ground truths G, default boxes A): each box
    takes the ground truth it overlaps most when IoU >= ``threshold``, else UNMATCHED (-1);
    then each ground truth takes its own best box. Returns (A,) int64."""
    matches = match_by_iou(iou, threshold, threshold, allow_low_quality_matches=False)
    if iou.shape[0]:
        matches[iou.argmax(axis=1)] = np.arange(iou.shape[0])
    return matches


def hard_negative_mask(losses: np.ndarray, foreground: np.ndarray, ratio: float = 3.0) -> np.ndarray:
    """Per image (rows), the boxes whose rank by decreasing loss, matched boxes last, is below
    ``ratio`` times the image's number of matched boxes (torchvision's hard negative mining;
    when there are too few unmatched boxes the matched ones fill up the count)."""
    ranked = np.where(foreground, -np.inf, losses)
    order = np.argsort(-ranked, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(losses.shape[1])[None, :].repeat(len(losses), 0), axis=1)
    return rank < ratio * foreground.sum(axis=1, keepdims=True)


# -- the detector -------------------------------------------------------------------------------------
@register_layer
class SSD(DetectorBase):
    """SSD (module docstring) on a ``backbone`` whose call gives a dict of NHWC maps, one per
    list of ``anchor_generator`` (a :class:`DefaultBoxGenerator`) ratios; ``head`` an
    :class:`SSDHead` made from ``backbone.out_channels`` when None. Class 0 is the background:
    target labels lie in [1, num_classes). ``forward``: see :mod:`lamina.models.detection_base`;
    the training losses are 'bbox_regression' and 'classification'."""

    default_name = "ssd"
    first_label = 1

    def __init__(self, backbone: Module, anchor_generator: DefaultBoxGenerator | dict, num_classes: int,
                 image_mean: Sequence[float] = (0.485, 0.456, 0.406),
                 image_std: Sequence[float] = (0.229, 0.224, 0.225),
                 head: Module | None = None, score_thresh: float = 0.01, nms_thresh: float = 0.45,
                 detections_per_img: int = 200, iou_thresh: float = 0.5, topk_candidates: int = 400,
                 positive_fraction: float = 0.25, name: str | None = "ssd"):
        super().__init__(num_classes, image_mean, image_std, name=name)
        if isinstance(anchor_generator, dict):
            anchor_generator = DefaultBoxGenerator(**anchor_generator)
        if not 0 < positive_fraction < 1 or not 0 <= iou_thresh <= 1:
            raise ValueError(f"SSD: need positive_fraction in (0, 1) and iou_thresh in [0, 1], got "
                             f"{positive_fraction!r} and {iou_thresh!r}")
        self.anchor_generator = anchor_generator
        levels = len(anchor_generator.aspect_ratios)
        if head is None:
            if getattr(backbone, "out_channels", None) is None:
                raise ValueError("SSD: give a head, or a backbone with out_channels (its maps' channel counts)")
            channels = _level_channels(backbone.out_channels, levels, "SSD")
            head = SSDHead(channels, anchor_generator.num_anchors_per_location(), num_classes)
        if getattr(head, "num_anchors", None) not in (None, anchor_generator.num_anchors_per_location()):
            raise ValueError(f"SSD: the head has {head.num_anchors} boxes per location but the anchor generator "
                             f"{anchor_generator.num_anchors_per_location()}")
        self.backbone, self.head = backbone, head
        self.score_thresh, self.nms_thresh = float(score_thresh), float(nms_thresh)
        self.detections_per_img, self.topk_candidates = int(detections_per_img), int(topk_candidates)
        self.iou_thresh, self.positive_fraction = float(iou_thresh), float(positive_fraction)
        self.neg_to_pos_ratio = (1.0 - self.positive_fraction) / self.positive_fraction
        self.box_coder = vision.BoxCoder(SSD_BOX_WEIGHTS)

    def build(self, input_shape) -> None:
        self._build_parts(input_shape, self.head)

    def forward(self, images, targets=None):
        x, checked = self._checked_inputs(images, targets)
        features = list(self.backbone(self.normalize(x)).values())
        head_outputs = self.head(features)
        anchors = self.anchor_generator.default_boxes(tuple(x.shape[1:3]), [tuple(f.shape[1:3]) for f in features])
        if head_outputs["cls_logits"].shape[1] != len(anchors):
            raise ShapeError(f"{self._label()}: the head gives {head_outputs['cls_logits'].shape[1]} boxes' outputs "
                             f"but the default box generator {len(anchors)}")
        if self.training:
            return self.compute_loss(checked, head_outputs, anchors)
        return self.postprocess_detections(head_outputs, anchors, tuple(x.shape[1:3]))

    def match(self, gt_boxes: np.ndarray, anchors: np.ndarray) -> np.ndarray:
        """Each default box's ground truth index or UNMATCHED (-1) (see :func:`ssd_match`)."""
        if len(gt_boxes) == 0:
            return np.full(len(anchors), UNMATCHED, dtype=np.int64)
        return ssd_match(vision.box_iou(gt_boxes, anchors), self.iou_thresh)

    def compute_loss(self, targets, head_outputs, anchors: np.ndarray) -> dict[str, Tensor]:
        """torchvision's SSD losses (module docstring) for checked ``targets`` and the head's
        outputs on ``anchors`` (A, 4)."""
        logits, codes = head_outputs["cls_logits"], head_outputs["bbox_regression"]
        count, num_classes = logits.shape[0], logits.shape[-1]
        class_targets = np.zeros((count, len(anchors)), dtype=np.int64)
        box_losses = []
        for i, target in enumerate(targets):
            matched = self.match(target["boxes"], anchors)
            foreground = np.flatnonzero(matched >= 0)
            class_targets[i, foreground] = target["labels"][matched[foreground]]
            if len(foreground) == 0:
                box_losses.append(codes[i].sum() * 0.0)  # nothing to fit; kept in the graph
                continue
            wanted = self.box_coder.encode(target["boxes"][matched[foreground]], anchors[foreground])
            box_losses.append(F.smooth_l1_loss(F.take_rows(codes[i], foreground), wanted.astype(codes.dtype),
                                               reduction="sum"))
        log_probs = F.log_softmax(logits, axis=-1)
        losses = -np.take_along_axis(log_probs.numpy(), class_targets[..., None], axis=-1)[..., 0]
        foreground = class_targets > 0
        weight = (foreground + hard_negative_mask(losses, foreground, self.neg_to_pos_ratio)).reshape(-1)
        chosen = np.flatnonzero(weight)
        picked = F.take_rows(log_probs.reshape(-1), chosen * num_classes + class_targets.reshape(-1)[chosen])
        matched_count = max(1, int(foreground.sum()))
        classification = -(picked * weight[chosen].astype(logits.dtype)).sum() / matched_count
        return {"bbox_regression": F.stack(box_losses).sum() / matched_count, "classification": classification}

    def postprocess_detections(self, head_outputs, anchors: np.ndarray, image_size) -> list[dict]:
        """Per image the detections {'boxes', 'scores', 'labels'} (module docstring)."""
        logits = head_outputs["cls_logits"].numpy().astype(np.float64)
        codes = head_outputs["bbox_regression"].numpy().astype(np.float64)
        probabilities = np.exp(logits - logits.max(axis=-1, keepdims=True))
        probabilities /= probabilities.sum(axis=-1, keepdims=True)
        detections = []
        for image_scores, image_codes in zip(probabilities, codes):
            boxes = vision.clip_boxes_to_image(self.box_coder.decode_single(image_codes, anchors), image_size)
            kept_boxes, kept_scores, kept_labels = [], [], []
            for label in range(1, self.num_classes):
                rows = np.flatnonzero(image_scores[:, label] > self.score_thresh)
                rows = rows[np.argsort(-image_scores[rows, label], kind="stable")[:self.topk_candidates]]
                kept_boxes.append(boxes[rows])
                kept_scores.append(image_scores[rows, label])
                kept_labels.append(np.full(len(rows), label, dtype=np.int64))
            boxes_all, scores_all = np.concatenate(kept_boxes), np.concatenate(kept_scores)
            labels_all = np.concatenate(kept_labels)
            keep = vision.non_max_suppression(boxes_all, scores_all, self.nms_thresh, classes=labels_all,
                                              max_outputs=self.detections_per_img)
            detections.append({"boxes": boxes_all[keep].astype(np.float32),
                               "scores": scores_all[keep].astype(np.float32), "labels": labels_all[keep]})
        return detections

    def get_config(self) -> dict:
        return {"backbone": layer_to_config(self.backbone), "anchor_generator": self.anchor_generator.get_config(),
                "num_classes": self.num_classes, "image_mean": self.image_mean, "image_std": self.image_std,
                "head": layer_to_config(self.head), "score_thresh": self.score_thresh, "nms_thresh": self.nms_thresh,
                "detections_per_img": self.detections_per_img, "iou_thresh": self.iou_thresh,
                "topk_candidates": self.topk_candidates, "positive_fraction": self.positive_fraction,
                "name": self.name}

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, boxes per location={self.anchor_generator.num_anchors_per_location()}"


# -- SSD300 with VGG-16 -------------------------------------------------------------------------------
@register_layer
class SSDFeatureExtractorVGG(Block):
    """torchvision's SSD300 backbone from VGG-16 (module docstring): ``features`` (VGG's
    layers 0..22, up to conv4_3 + ReLU, the third pool in ceil mode), ``scale_weight`` (the
    L2Norm scale, 20 per channel at the start), ``extra.0`` (pool4, conv5_x, then ``7``: a
    3x3/1 pool, fc6 3x3 dilation 6 and fc7 1x1) and ``extra.1`` .. ``extra.4``. The call gives
    {'0': scaled conv4_3, '1': fc7, '2' .. '5': the extra blocks}. ``width_divisor`` divides
    every channel count (1 for torchvision's network; more for small experiments).
    ``trainable_layers`` (0 to 5) leaves that many of VGG's last stages in ``features``
    trainable and freezes the earlier ones (torchvision's ``trainable_backbone_layers``)."""

    default_name = "backbone"
    stage_starts = (0, 4, 9, 16, 23)   # VGG-16's layer index where each stage begins

    def __init__(self, width_divisor: int = 1, trainable_layers: int = 5, name: str | None = "backbone"):
        super().__init__(name=name)
        if isinstance(width_divisor, bool) or not isinstance(width_divisor, int) or width_divisor < 1:
            raise ValueError(f"SSDFeatureExtractorVGG: width_divisor must be a positive int, got {width_divisor!r}")
        if not 0 <= int(trainable_layers) <= 5:
            raise ValueError(f"SSDFeatureExtractorVGG: trainable_layers must lie in 0..5, got {trainable_layers!r}")
        self.width_divisor, self.trainable_layers = width_divisor, int(trainable_layers)

        def width(channels: int) -> int:
            return max(1, channels // width_divisor)

        layers: list[Module] = []
        pools = 0
        for v in VGG_CONFIGS[16]:
            if v == "M":
                pools += 1
                layers.append(nn.MaxPool2D(2, stride=2, ceil_mode=pools == 3))
            else:
                layers += [nn.Conv2D(width(v), 3, padding=1), nn.ReLU()]
        for i, layer in enumerate(layers):
            layer.name = str(i)
        self.features = nn.Sequential(*layers[:23], name="features")
        fc = nn.Sequential(nn.MaxPool2D(3, stride=1, padding=1, name="0"),
                           _xavier_conv(width(1024), 3, padding=6, dilation=6, name="1"), nn.ReLU(name="2"),
                           _xavier_conv(width(1024), 1, name="3"), nn.ReLU(name="4"), name="7")
        for i, layer in enumerate(layers[23:30]):
            layer.name = str(i)
        blocks = [nn.Sequential(*layers[23:30], fc)]
        for filters, squeezed, stride_two in ((512, 256, True), (256, 128, True), (256, 128, False),
                                              (256, 128, False)):
            last = (_xavier_conv(width(filters), 3, padding=1, stride=2, name="2") if stride_two
                    else _xavier_conv(width(filters), 3, name="2"))
            blocks.append(nn.Sequential(_xavier_conv(width(squeezed), 1, name="0"), nn.ReLU(name="1"), last,
                                        nn.ReLU(name="3")))
        self.extra = nn.ModuleList(blocks)
        self.out_channels = [width(c) for c in (512, 1024, 512, 256, 256, 256)]

    def trace(self, shape, step):
        shape = step(self.features, nhwc(self, shape))
        shapes = [shape]
        for block in self.extra:
            shape = step(block, shape)
            shapes.append(shape)
        return shapes

    def build(self, input_shape) -> None:
        super().build(input_shape)
        self.add_parameter("scale_weight", init.constant(20.0)((self.out_channels[0],)))
        frozen_before = self.stage_starts[len(self.stage_starts) - self.trainable_layers] if self.trainable_layers \
            else len(self.features)
        for layer_name, layer in self.features.named_children():
            if int(layer_name) < frozen_before:
                layer.freeze()

    def forward(self, x) -> dict[str, Tensor]:
        x = self.features(as_tensor(x))
        outputs = [F.normalize(x, axis=-1) * self.scale_weight]
        for block in self.extra:
            x = block(x)
            outputs.append(x)
        return {str(i): out for i, out in enumerate(outputs)}

    def get_config(self) -> dict:
        return {"width_divisor": self.width_divisor, "trainable_layers": self.trainable_layers, "name": self.name}


def ssd300_vgg16(num_classes: int = 91, input_shape: tuple[int, int, int] = (300, 300, 3), width_divisor: int = 1,
                 trainable_backbone_layers: int = 5, **kwargs) -> SSD:
    """torchvision's SSD300 VGG16 (module docstring; unbuilt, ``model.input_shape`` = (None,
    *input_shape)): 35,641,826 parameters with 91 classes. Default boxes: ratios [2], [2, 3] x 3,
    [2], [2]; scales 0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05; steps 8, 16, 32, 64, 100, 300.
    Images are normalized with torchvision's mean (0.48235, 0.45882, 0.40784) and std 1/255.
    ``width_divisor`` divides every backbone channel count (small experiments);
    ``trainable_backbone_layers`` see :class:`SSDFeatureExtractorVGG` (5, all, since no
    pretrained VGG is loaded); ``kwargs`` go to :class:`SSD` (thresholds, image_mean /
    image_std, ...)."""
    input_shape = check_input(input_shape, "ssd300_vgg16")
    anchors = DefaultBoxGenerator([[2], [2, 3], [2, 3], [2, 3], [2], [2]],
                                  scales=[0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05], steps=[8, 16, 32, 64, 100, 300])
    options = {"image_mean": (0.48235, 0.45882, 0.40784), "image_std": (1.0 / 255.0,) * 3, **kwargs}
    backbone = SSDFeatureExtractorVGG(width_divisor, trainable_backbone_layers)
    return finish(SSD(backbone, anchors, num_classes, **options), input_shape)
