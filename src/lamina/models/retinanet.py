"""RetinaNet (Lin et al. 2017, "Focal Loss for Dense Object Detection") in torchvision's layout.

An FPN backbone gives maps P3 .. P7; on every level the same two heads run:

* classification: 4 x (conv3x3 + ReLU), then a conv3x3 to A C logits (A anchors per
  location, C classes, one sigmoid each); weights N(0, 0.01^2), biases 0 but the logits' bias
  b = -log((1 - pi) / pi), so every anchor starts with probability pi = 0.01 of an object;
* regression: 4 x (conv3x3 + ReLU), then a conv3x3 to A 4 box offsets (BoxCoder weights 1).

Training (torchvision's losses): anchors match the ground truth they overlap most when
IoU >= 0.5, are background below 0.4 and ignored between (plus each ground truth's best
anchors, whatever their IoU). Per image, with n_fg foreground anchors,

    L_cls = sum over non-ignored anchors and classes of FL(p, y) / max(1, n_fg),
    FL = -alpha_t (1 - p_t)^gamma log p_t   (alpha 0.25, gamma 2),
    L_box = sum over foreground anchors of |t - t*|_1 / max(1, n_fg)

(or smooth-L1 / GIoU on the decoded boxes), each averaged over the images. Inference: per
level the top ``topk_candidates`` (anchor, class) scores above ``score_thresh``, decoded and
clipped to the image; per-class NMS at ``nms_thresh``; the best ``detections_per_img``.

``retinanet_resnet50_fpn``: ResNet-50 (frozen batch norms) + FPN on layer2..layer4 with P6,
P7 from P5, 9 anchors per location (sizes 32..512 times 2^(0, 1/3, 2/3), ratios 0.5, 1, 2);
34,014,999 parameters with 91 classes, as torchvision's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from lamina import functional as F
from lamina import nn, vision
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.blocks import check_input, finish
from lamina.models.detection_base import IGNORED, DetectionModel, level_slices, match_by_iou, top_candidates
from lamina.models.fpn import BackboneWithFPN
from lamina.nn import init
from lamina.nn.layer import input_error, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = [
    "RetinaNet", "RetinaNetClassificationHead", "RetinaNetHead", "RetinaNetRegressionHead", "retinanet_resnet50_fpn",
    "retinanet_anchor_sizes",
]

BOX_LOSSES = ("l1", "smooth_l1", "giou")


def retinanet_anchor_sizes(base_sizes: Sequence[int] = (32, 64, 128, 256, 512)) -> list[list[int]]:
    """torchvision's RetinaNet sizes: per level (x, int(x 2^(1/3)), int(x 2^(2/3)))."""
    return [[x, int(x * 2 ** (1.0 / 3)), int(x * 2 ** (2.0 / 3))] for x in base_sizes]


def head_conv(filters: int, bias: float = 0.0, name: str | None = None) -> nn.Conv2D:
    """conv3x3 (padding 1) with weights N(0, 0.01^2) and a constant bias, as the detection heads start."""
    return nn.Conv2D(filters, 3, padding=1, kernel_init=init.normal(0.01), bias_init=init.constant(bias), name=name)


def prior_bias(prior_probability: float) -> float:
    """The logit bias -log((1 - pi) / pi) that makes sigma(bias) = pi."""
    return -math.log((1 - prior_probability) / prior_probability)


def _conv_relu_tower(in_channels: int, num_convs: int) -> nn.Sequential:
    """``num_convs`` x (conv3x3 + ReLU), keys 'i.0' (torchvision's Conv2dNormActivation without norm)."""
    return nn.Sequential(*[nn.Sequential(head_conv(in_channels, name="0"), nn.ReLU(name="1"), name=str(i))
                           for i in range(num_convs)], name="conv")


def flatten_level(output: Tensor, values: int) -> Tensor:
    """(N, H, W, A values) -> (N, H W A, values), location-major as the anchors."""
    # sizes spelled out: -1 is ambiguous for an empty batch (a summary traces one)
    return output.reshape(output.shape[0], math.prod(output.shape[1:]) // values, values)


class _Head(Module):
    """A tower of convolutions and an output convolution run on every level; ``forward(features)``
    gives (N, sum_l H_l W_l A, values) for the list of NHWC ``features``."""

    values_per_anchor = 1

    def __init__(self, in_channels: int, num_anchors: int, name: str | None = None):
        super().__init__(name=name)
        self.in_channels, self.num_anchors = int(in_channels), int(num_anchors)

    def build(self, input_shape=None) -> None:
        for layer in self.children():
            layer.build((None, None, None, self.in_channels))
            layer.built = True
        self.built = True

    def _check(self, features) -> list[Tensor]:
        maps = [as_tensor(f) for f in features]
        for x in maps:
            if x.ndim != 4 or x.shape[-1] != self.in_channels:
                raise input_error(self, x, f"a list of NHWC maps with {self.in_channels} channels")
        return maps


@register_layer
class RetinaNetClassificationHead(_Head):
    """``conv`` (num_convs x conv3x3 + ReLU) then ``cls_logits`` (A C outputs, prior bias); the
    logits (N, sum H W A, C)."""

    default_name = "classification_head"

    def __init__(self, in_channels: int, num_anchors: int, num_classes: int, prior_probability: float = 0.01,
                 num_convs: int = 4, name: str | None = "classification_head"):
        super().__init__(in_channels, num_anchors, name=name)
        self.num_classes, self.prior_probability, self.num_convs = int(num_classes), float(prior_probability), num_convs
        self.conv = _conv_relu_tower(in_channels, num_convs)
        self.cls_logits = head_conv(num_anchors * num_classes, prior_bias(prior_probability), name="cls_logits")

    def forward(self, features) -> Tensor:
        outs = [flatten_level(self.cls_logits(self.conv(x)), self.num_classes) for x in self._check(features)]
        return F.concat(outs, axis=1)

    def get_config(self) -> dict:
        return {"in_channels": self.in_channels, "num_anchors": self.num_anchors, "num_classes": self.num_classes,
                "prior_probability": self.prior_probability, "num_convs": self.num_convs, "name": self.name}


@register_layer
class RetinaNetRegressionHead(_Head):
    """``conv`` (num_convs x conv3x3 + ReLU) then ``bbox_reg`` (A 4 outputs); the box offsets
    (N, sum H W A, 4)."""

    default_name = "regression_head"

    def __init__(self, in_channels: int, num_anchors: int, num_convs: int = 4, name: str | None = "regression_head"):
        super().__init__(in_channels, num_anchors, name=name)
        self.num_convs = num_convs
        self.conv = _conv_relu_tower(in_channels, num_convs)
        self.bbox_reg = head_conv(num_anchors * 4, name="bbox_reg")

    def forward(self, features) -> Tensor:
        return F.concat([flatten_level(self.bbox_reg(self.conv(x)), 4) for x in self._check(features)], axis=1)

    def get_config(self) -> dict:
        return {"in_channels": self.in_channels, "num_anchors": self.num_anchors, "num_convs": self.num_convs,
                "name": self.name}


@register_layer
class RetinaNetHead(Module):
    """``classification_head`` and ``regression_head``; ``forward(features)`` gives
    {'cls_logits': (N, sum H W A, C), 'bbox_regression': (N, sum H W A, 4)}. ``num_convs``
    (4 in torchvision) sets the depth of both towers."""

    default_name = "head"

    def __init__(self, in_channels: int, num_anchors: int, num_classes: int, num_convs: int = 4,
                 prior_probability: float = 0.01, name: str | None = "head"):
        super().__init__(name=name)
        self.in_channels, self.num_anchors, self.num_classes = int(in_channels), int(num_anchors), int(num_classes)
        self.num_convs, self.prior_probability = int(num_convs), float(prior_probability)
        self.classification_head = RetinaNetClassificationHead(in_channels, num_anchors, num_classes,
                                                               prior_probability, num_convs)
        self.regression_head = RetinaNetRegressionHead(in_channels, num_anchors, num_convs)

    def build(self, input_shape=None) -> None:
        for head in self.children():
            head.build()
            head.built = True
        self.built = True

    def forward(self, features) -> dict[str, Tensor]:
        features = list(features)
        return {"cls_logits": self.classification_head(features), "bbox_regression": self.regression_head(features)}

    def get_config(self) -> dict:
        return {"in_channels": self.in_channels, "num_anchors": self.num_anchors, "num_classes": self.num_classes,
                "num_convs": self.num_convs, "prior_probability": self.prior_probability, "name": self.name}


def focal_classification_loss(logits: Tensor, labels: np.ndarray, matched: np.ndarray, alpha: float = 0.25,
                              gamma: float = 2.0) -> Tensor:
    """One image's RetinaNet classification loss: the sigmoid focal loss summed over the anchors
    not ignored (``matched`` != IGNORED) and every class, the one-hot targets of the
    foreground anchors (``matched`` >= 0) at their ground truth's label; divided by max(1, n_fg)."""
    foreground = matched >= 0
    target = np.zeros(logits.shape, dtype=logits.dtype)
    target[np.flatnonzero(foreground), labels[matched[foreground]]] = 1.0
    valid = np.flatnonzero(matched != IGNORED)
    loss = vision.sigmoid_focal_loss(F.take_rows(logits, valid), target[valid], alpha=alpha, gamma=gamma,
                                        reduction="sum")
    return loss / max(1, int(foreground.sum()))


def decode_boxes(coder, codes: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """``coder.decode_single`` on arrays, (0, 4) for no rows."""
    return coder.decode_single(codes, anchors) if len(codes) else np.zeros((0, 4))


def box_regression_loss(codes: Tensor, gt_boxes: np.ndarray, anchors: np.ndarray, matched: np.ndarray,
                        loss_type: str = "l1", beta: float = 1.0) -> Tensor:
    """One image's RetinaNet box loss over its foreground anchors, divided by max(1, n_fg):
    'l1' or 'smooth_l1' (``beta``) between the predicted and the target BoxCoder offsets, or
    'giou' (1 - GIoU) between the decoded and the ground-truth boxes."""
    foreground = np.flatnonzero(matched >= 0)
    if len(foreground) == 0:
        return codes.sum() * 0.0  # no box to fit; kept in the graph
    predicted = F.take_rows(codes, foreground)
    targets, references = gt_boxes[matched[foreground]], anchors[foreground]
    coder = vision.BoxCoder((1.0, 1.0, 1.0, 1.0))
    if loss_type == "giou":
        decoded = coder.decode_single(predicted, references)
        loss = vision.generalized_box_iou_loss(decoded, targets.astype(codes.dtype), reduction="sum")
    else:
        wanted = coder.encode(targets, references).astype(codes.dtype)
        loss = (F.l1_loss(predicted, wanted, reduction="sum") if loss_type == "l1"
                else F.smooth_l1_loss(predicted, wanted, reduction="sum", beta=beta))
    return loss / max(1, len(foreground))


@register_layer
class RetinaNet(DetectionModel):
    """RetinaNet (module docstring) on a :class:`~lamina.models.BackboneWithFPN` (any module
    whose call gives a dict of NHWC maps of ``backbone.out_channels`` channels works).

    ``anchor_sizes`` / ``aspect_ratios``: one list per pyramid level (the AnchorGenerator's);
    ``head``: a :class:`RetinaNetHead` (made from them when None, with ``head_convs``
    convolutions per tower). ``fg_iou_thresh``, ``bg_iou_thresh``: the matcher's thresholds;
    ``box_loss``: 'l1' (torchvision's), 'smooth_l1' (with ``smooth_l1_beta``) or 'giou'.
    ``forward``: see :mod:`lamina.models.detection_base`; the training losses are
    'classification' and 'bbox_regression'.
    """

    default_name = "retinanet"

    def __init__(self, backbone: Module, num_classes: int, anchor_sizes=None, aspect_ratios=None,
                 head: Module | None = None, image_mean: Sequence[float] = (0.485, 0.456, 0.406),
                 image_std: Sequence[float] = (0.229, 0.224, 0.225), score_thresh: float = 0.05,
                 nms_thresh: float = 0.5, detections_per_img: int = 300, fg_iou_thresh: float = 0.5,
                 bg_iou_thresh: float = 0.4, topk_candidates: int = 1000, box_loss: str = "l1",
                 smooth_l1_beta: float = 1.0, head_convs: int = 4, name: str | None = "retinanet"):
        anchor_sizes = retinanet_anchor_sizes() if anchor_sizes is None else anchor_sizes
        aspect_ratios = [[0.5, 1.0, 2.0]] * len(anchor_sizes) if aspect_ratios is None else aspect_ratios
        if box_loss not in BOX_LOSSES:
            raise ValueError(f"RetinaNet: box_loss must be one of {BOX_LOSSES}, got {box_loss!r}")
        if not 0 <= bg_iou_thresh <= fg_iou_thresh <= 1:
            raise ValueError(f"RetinaNet: need 0 <= bg_iou_thresh <= fg_iou_thresh <= 1, got {bg_iou_thresh!r} "
                             f"and {fg_iou_thresh!r}")
        if head is None:
            anchors_per_location = len(anchor_sizes[0]) * len(aspect_ratios[0])
            head = RetinaNetHead(backbone.out_channels, anchors_per_location, num_classes, head_convs)
        super().__init__(backbone, head, num_classes, anchor_sizes, aspect_ratios, image_mean, image_std,
                         score_thresh, nms_thresh, detections_per_img, topk_candidates, name=name)
        self.fg_iou_thresh, self.bg_iou_thresh = float(fg_iou_thresh), float(bg_iou_thresh)
        self.box_loss, self.smooth_l1_beta, self.head_convs = box_loss, float(smooth_l1_beta), int(head_convs)
        counts = set(self.anchor_generator.num_anchors_per_location())
        if len(counts) != 1 or getattr(head, "num_anchors", counts) not in counts:
            raise ValueError(f"RetinaNet: every level needs the head's number of anchors per location, got "
                             f"{self.anchor_generator.num_anchors_per_location()} for a head with "
                             f"{getattr(head, 'num_anchors', '?')}")

    def match(self, gt_boxes: np.ndarray, anchors: np.ndarray) -> np.ndarray:
        """Each anchor's ground truth index, UNMATCHED (-1) or IGNORED (-2) (see :func:`match_by_iou`)."""
        iou = vision.box_iou(gt_boxes, anchors) if len(gt_boxes) else np.zeros((0, len(anchors)))
        return match_by_iou(iou, self.fg_iou_thresh, self.bg_iou_thresh)

    def compute_loss(self, targets, head_outputs, anchors, level_sizes) -> dict[str, Tensor]:
        logits, codes = head_outputs["cls_logits"], head_outputs["bbox_regression"]
        if logits.shape[1] != len(anchors):
            raise ShapeError(f"{self._label()}: the head gives {logits.shape[1]} anchors' outputs but the anchor "
                             f"generator {len(anchors)}")
        classification, regression = [], []
        for i, target in enumerate(targets):
            matched = self.match(target["boxes"], anchors)
            classification.append(focal_classification_loss(logits[i], target["labels"], matched))
            regression.append(box_regression_loss(codes[i], target["boxes"], anchors, matched, self.box_loss,
                                                  self.smooth_l1_beta))
        count = len(targets)
        return {"classification": F.stack(classification).sum() / count,
                "bbox_regression": F.stack(regression).sum() / count}

    def postprocess_detections(self, head_outputs, anchors, level_sizes, image_size) -> list[dict]:
        coder = vision.BoxCoder((1.0, 1.0, 1.0, 1.0))
        logits = head_outputs["cls_logits"].numpy().astype(np.float64)
        codes = head_outputs["bbox_regression"].numpy().astype(np.float64)
        detections = []
        for image_logits, image_codes in zip(logits, codes):
            boxes, scores, labels = [], [], []
            for rows in level_slices(level_sizes):
                probabilities = 1.0 / (1.0 + np.exp(-image_logits[rows]))
                picked, picked_scores = top_candidates(probabilities.reshape(-1), self.score_thresh,
                                                       self.topk_candidates)
                anchor_rows = picked // self.num_classes
                boxes.append(decode_boxes(coder, image_codes[rows][anchor_rows], anchors[rows][anchor_rows]))
                scores.append(picked_scores)
                labels.append(picked % self.num_classes)
            detections.append(self._select(boxes, scores, labels, image_size))
        return detections

    def get_config(self) -> dict:
        return {**super().get_config(), "fg_iou_thresh": self.fg_iou_thresh, "bg_iou_thresh": self.bg_iou_thresh,
                "box_loss": self.box_loss, "smooth_l1_beta": self.smooth_l1_beta, "head_convs": self.head_convs}


def retinanet_resnet50_fpn(num_classes: int = 91, trainable_backbone_layers: int = 5,
                           input_shape: tuple[int, int, int] = (800, 800, 3), **kwargs) -> RetinaNet:
    """torchvision's RetinaNet ResNet-50 FPN (module docstring; unbuilt, ``model.input_shape``
    = (None, *input_shape)): 34,014,999 parameters with 91 classes. ``kwargs`` go to
    :class:`RetinaNet` (thresholds, anchors, image_mean / image_std, box_loss, ...)."""
    input_shape = check_input(input_shape, "retinanet_resnet50_fpn")
    backbone = BackboneWithFPN(50, (2, 3, 4), 256, "p6p7", trainable_backbone_layers)
    return finish(RetinaNet(backbone, num_classes, **kwargs), input_shape)
