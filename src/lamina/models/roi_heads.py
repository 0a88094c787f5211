"""The second stage of Faster R-CNN (Ren et al. 2015) in torchvision's layout: pool each
proposal's features, classify it and refine its box per class.

Each proposal is pooled by RoIAlign (7 x 7, 2 samples per bin side) from the FPN level that
suits its size (:class:`~lamina.vision.MultiScaleRoIAlign`); :class:`TwoMLPHead` flattens the
grid (in PyTorch's (C, h, w) order, so torchvision's weights load unchanged) and runs two
fully connected layers with ReLU; :class:`FastRCNNPredictor` gives C class logits and 4 C box
offsets (one box per class, BoxCoder weights (10, 10, 5, 5)).

Training (torchvision's): the ground-truth boxes join the proposals; a proposal is matched
to its best ground truth at IoU >= 0.5 (its label) and is background (0) below; 512 proposals
per image are sampled, at most a quarter positive. Over the S sampled proposals,

    loss_classifier = mean over S of cross-entropy(logits, label),
    loss_box_reg = sum over the positives of smooth-L1_beta(t_label - t*) / |S|,  beta = 1/9,

t_label the offsets predicted for the proposal's own class.

Inference: softmax scores; every proposal decoded once per class (but the background) and
clipped to the image; scores above ``score_thresh``, boxes at least 0.01 pixel wide and high;
NMS at ``nms_thresh`` within each class; the best ``detections_per_img``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from lamina import functional as F
from lamina import nn, vision
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.detection_base import IGNORED, UNMATCHED, BalancedPositiveNegativeSampler, match_by_iou
from lamina.nn.layer import input_error, layer_from_config, layer_to_config, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["FastRCNNPredictor", "RoIHeads", "TwoMLPHead", "fastrcnn_loss"]

SMOOTH_L1_BETA = 1.0 / 9
MIN_DETECTION_SIZE = 1e-2


@register_layer
class TwoMLPHead(Module):
    """torchvision's TwoMLPHead: pooled features (K, h, w, C) -> flattened in (C, h, w) order
    -> ReLU(fc6) -> ReLU(fc7), (K, representation_size); ``in_channels`` = C h w."""

    default_name = "box_head"

    def __init__(self, in_channels: int, representation_size: int, name: str | None = "box_head"):
        super().__init__(name=name)
        self.in_channels, self.representation_size = int(in_channels), int(representation_size)
        self.fc6 = nn.Dense(self.representation_size, kernel_init="lecun_uniform", name="fc6")
        self.fc7 = nn.Dense(self.representation_size, kernel_init="lecun_uniform", name="fc7")

    def build(self, input_shape=None) -> None:
        self.fc6.build((None, self.in_channels))
        self.fc7.build((None, self.representation_size))
        self.fc6.built = self.fc7.built = self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 4 or math.prod(x.shape[1:]) != self.in_channels:
            raise input_error(self, x, f"pooled NHWC features (K, h, w, C) with C h w = {self.in_channels}")
        flat = x.transpose(0, 3, 1, 2).reshape(x.shape[0], self.in_channels)
        return F.relu(self.fc7(F.relu(self.fc6(flat))))

    def get_config(self) -> dict:
        return {"in_channels": self.in_channels, "representation_size": self.representation_size, "name": self.name}


@register_layer
class FastRCNNPredictor(Module):
    """torchvision's FastRCNNPredictor: ``cls_score`` (num_classes logits) and ``bbox_pred``
    (4 num_classes offsets, class c's at columns 4c .. 4c + 3) of (K, in_channels) features."""

    default_name = "box_predictor"

    def __init__(self, in_channels: int, num_classes: int, name: str | None = "box_predictor"):
        super().__init__(name=name)
        self.in_channels, self.num_classes = int(in_channels), int(num_classes)
        self.cls_score = nn.Dense(self.num_classes, kernel_init="lecun_uniform", name="cls_score")
        self.bbox_pred = nn.Dense(4 * self.num_classes, kernel_init="lecun_uniform", name="bbox_pred")

    def build(self, input_shape=None) -> None:
        for layer in (self.cls_score, self.bbox_pred):
            layer.build((None, self.in_channels))
            layer.built = True
        self.built = True

    def forward(self, x) -> tuple[Tensor, Tensor]:
        x = as_tensor(x)
        if x.ndim == 4 and x.shape[1:3] == (1, 1):
            x = x.reshape(x.shape[0], x.shape[3])
        if x.ndim != 2 or x.shape[1] != self.in_channels:
            raise input_error(self, x, f"features (K, {self.in_channels})")
        return self.cls_score(x), self.bbox_pred(x)

    def get_config(self) -> dict:
        return {"in_channels": self.in_channels, "num_classes": self.num_classes, "name": self.name}


def fastrcnn_loss(class_logits: Tensor, box_regression: Tensor, labels: np.ndarray,
                  regression_targets: np.ndarray) -> dict[str, Tensor]:
    """torchvision's Fast R-CNN losses (module docstring) of the sampled proposals of the
    batch: ``class_logits`` (S, C), ``box_regression`` (S, 4 C), their ``labels`` (S,) and the
    offsets ``regression_targets`` (S, 4) to their matched ground truths."""
    labels = np.asarray(labels, dtype=np.int64)
    classifier = F.cross_entropy(class_logits, labels)
    positive = np.flatnonzero(labels > 0)
    if len(positive) == 0:
        return {"loss_classifier": classifier, "loss_box_reg": box_regression.sum() * 0.0}
    num_classes = class_logits.shape[1]
    own_class = F.take_rows(box_regression.reshape(-1, 4), positive * num_classes + labels[positive])
    box = F.smooth_l1_loss(own_class, regression_targets[positive].astype(box_regression.dtype), reduction="sum",
                           beta=SMOOTH_L1_BETA)
    return {"loss_classifier": classifier, "loss_box_reg": box / len(labels)}


def infer_scales(features: Sequence[Tensor], image_size) -> list[float]:
    """Each map's scale (its size / the image's), rounded to a power of 2 as torchvision does."""
    return [2.0 ** round(math.log2(f.shape[1] / image_size[0])) for f in features]


@register_layer
class RoIHeads(Module):
    """torchvision's RoIHeads for boxes (module docstring): ``box_head`` (a :class:`TwoMLPHead`)
    and ``box_predictor`` (a :class:`FastRCNNPredictor`); the proposals are pooled from the
    maps named ``featmap_names`` by RoIAlign of ``output_size`` with ``sampling_ratio``.

    ``forward(features, proposals, image_size, targets=None)``: ``features`` the dict of NHWC
    maps, ``proposals`` one (k, 4) array per image, ``image_size`` (height, width) and, in
    training, the checked targets (labels from 1; 0 is the background). Returns the detections
    (one dict {'boxes', 'scores', 'labels'} per image; empty in training) and the losses
    (empty in evaluation)."""

    default_name = "roi_heads"

    def __init__(self, box_head: Module, box_predictor: Module, featmap_names: Sequence[str] = ("0", "1", "2", "3"),
                 output_size: int = 7, sampling_ratio: int = 2, fg_iou_thresh: float = 0.5,
                 bg_iou_thresh: float = 0.5, batch_size_per_image: int = 512, positive_fraction: float = 0.25,
                 bbox_reg_weights: Sequence[float] | None = None, score_thresh: float = 0.05,
                 nms_thresh: float = 0.5, detections_per_img: int = 100, name: str | None = "roi_heads"):
        super().__init__(name=name)
        if not 0 <= bg_iou_thresh <= fg_iou_thresh <= 1:
            raise ValueError(f"RoIHeads: need 0 <= bg_iou_thresh <= fg_iou_thresh <= 1, got {bg_iou_thresh!r} and "
                             f"{fg_iou_thresh!r}")
        self.box_head, self.box_predictor = box_head, box_predictor
        self.featmap_names = [str(n) for n in featmap_names]
        self.output_size, self.sampling_ratio = int(output_size), int(sampling_ratio)
        self.fg_iou_thresh, self.bg_iou_thresh = float(fg_iou_thresh), float(bg_iou_thresh)
        self.sampler = BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        self.bbox_reg_weights = [float(w) for w in (bbox_reg_weights or (10.0, 10.0, 5.0, 5.0))]
        self.box_coder = vision.BoxCoder(tuple(self.bbox_reg_weights))
        self.score_thresh, self.nms_thresh = float(score_thresh), float(nms_thresh)
        self.detections_per_img = int(detections_per_img)

    def build(self, input_shape=None) -> None:
        for layer in (self.box_head, self.box_predictor):
            layer.build(None)
            layer.built = True
        self.built = True

    # -- pooling -------------------------------------------------------------------------------
    def pool(self, features: Mapping[str, Tensor], proposals: Sequence[np.ndarray], image_size) -> Tensor:
        """RoIAlign of every proposal (in image order) on its pyramid level: (K, s, s, C)."""
        missing = [n for n in self.featmap_names if n not in features]
        if missing:
            raise ShapeError(f"{self._label()}: the backbone gives maps {list(features)} but RoI pooling needs "
                             f"{self.featmap_names}")
        maps = [features[n] for n in self.featmap_names]
        pooler = vision.MultiScaleRoIAlign(infer_scales(maps, image_size), self.output_size, self.sampling_ratio)
        return pooler(maps, list(proposals))

    def box_outputs(self, features, proposals, image_size) -> tuple[Tensor, Tensor]:
        """The class logits (K, C) and box offsets (K, 4 C) of the proposals."""
        return self.box_predictor(self.box_head(self.pool(features, proposals, image_size)))

    # -- training ------------------------------------------------------------------------------
    def assign_targets(self, proposals: np.ndarray, gt_boxes: np.ndarray,
                       gt_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One image's proposal labels (the ground truth's class, 0 background, -1 ignored) and
        the index of the ground truth each regresses to (0 for the unmatched)."""
        if len(gt_boxes) == 0:
            return np.zeros(len(proposals), dtype=np.int64), np.zeros(len(proposals), dtype=np.int64)
        matched = match_by_iou(vision.iou(gt_boxes, proposals), self.fg_iou_thresh, self.bg_iou_thresh,
                               allow_low_quality_matches=False)
        clamped = np.maximum(matched, 0)
        labels = gt_labels[clamped].astype(np.int64)
        labels[matched == UNMATCHED] = 0
        labels[matched == IGNORED] = -1
        return labels, clamped

    def select_training_samples(self, proposals, targets) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray,
                                                                   np.ndarray]:
        """The sampled proposals of every image (ground truths added), the index of the ground
        truth each one is matched to (per image; 0 for the background), their labels and their
        regression targets (both concatenated over the images)."""
        candidates, labels, matched = [], [], []
        for image_proposals, target in zip(proposals, targets):
            image_proposals = np.concatenate([np.asarray(image_proposals).reshape(-1, 4), target["boxes"]])
            image_labels, image_matched = self.assign_targets(image_proposals, target["boxes"], target["labels"])
            candidates.append(image_proposals)
            labels.append(image_labels)
            matched.append(image_matched)
        positive, negative = self.sampler(labels)
        sampled_proposals, sampled_matched, sampled_labels, matched_boxes = [], [], [], []
        for i, target in enumerate(targets):
            rows = np.flatnonzero(positive[i] | negative[i])
            sampled_proposals.append(candidates[i][rows])
            sampled_matched.append(matched[i][rows])
            sampled_labels.append(labels[i][rows])
            # without objects every sample is background: its (unused) target is itself
            matched_boxes.append(target["boxes"][matched[i][rows]] if len(target["boxes"]) else candidates[i][rows])
        references = np.concatenate(sampled_proposals)
        regression_targets = (self.box_coder.encode(np.concatenate(matched_boxes), references) if len(references)
                              else np.zeros((0, 4)))
        return sampled_proposals, sampled_matched, np.concatenate(sampled_labels), regression_targets

    # -- inference -----------------------------------------------------------------------------
    def postprocess_detections(self, class_logits: np.ndarray, box_regression: np.ndarray,
                               proposals: Sequence[np.ndarray], image_size) -> list[dict[str, np.ndarray]]:
        """The detections of every image (module docstring) from the logits (K, C) and offsets
        (K, 4 C) of the proposals of all images, in order."""
        num_classes = class_logits.shape[1]
        shifted = np.exp(class_logits - class_logits.max(axis=1, keepdims=True))
        scores = shifted / shifted.sum(axis=1, keepdims=True)
        references = np.concatenate([np.zeros((0, 4)), *(np.asarray(p).reshape(-1, 4) for p in proposals)])
        boxes = (self.box_coder.decode_single(box_regression, references) if len(references)
                 else np.zeros((0, 4 * num_classes)))
        boxes = vision.clip_boxes_to_image(boxes.reshape(-1, num_classes, 4), image_size)
        detections, start = [], 0
        for image_proposals in proposals:
            rows = slice(start, start + len(image_proposals))
            start = rows.stop
            image_boxes = boxes[rows, 1:].reshape(-1, 4)
            image_scores = scores[rows, 1:].reshape(-1)
            image_labels = np.tile(np.arange(1, num_classes), rows.stop - rows.start)
            keep = np.flatnonzero(image_scores > self.score_thresh)
            keep = keep[vision.remove_small_boxes(image_boxes[keep], MIN_DETECTION_SIZE)]
            image_boxes, image_scores, image_labels = image_boxes[keep], image_scores[keep], image_labels[keep]
            kept = vision.batched_nms(image_boxes, image_scores, image_labels, self.nms_thresh)
            kept = kept[:self.detections_per_img]
            detections.append({"boxes": image_boxes[kept].astype(np.float32),
                               "scores": image_scores[kept].astype(np.float32),
                               "labels": image_labels[kept].astype(np.int64)})
        return detections

    def forward(self, features, proposals, image_size, targets=None) -> tuple[list[dict], dict[str, Tensor]]:
        if self.training:
            proposals, _, labels, regression_targets = self.select_training_samples(proposals, targets)
            class_logits, box_regression = self.box_outputs(features, proposals, image_size)
            return [], fastrcnn_loss(class_logits, box_regression, labels, regression_targets)
        class_logits, box_regression = self.box_outputs(features, proposals, image_size)
        return self.postprocess_detections(class_logits.numpy().astype(np.float64),
                                           box_regression.numpy().astype(np.float64), proposals, image_size), {}

    def get_config(self) -> dict:
        return {"box_head": layer_to_config(self.box_head), "box_predictor": layer_to_config(self.box_predictor),
                "featmap_names": list(self.featmap_names), "output_size": self.output_size,
                "sampling_ratio": self.sampling_ratio, "fg_iou_thresh": self.fg_iou_thresh,
                "bg_iou_thresh": self.bg_iou_thresh, "batch_size_per_image": self.sampler.batch_size_per_image,
                "positive_fraction": self.sampler.positive_fraction, "bbox_reg_weights": list(self.bbox_reg_weights),
                "score_thresh": self.score_thresh, "nms_thresh": self.nms_thresh,
                "detections_per_img": self.detections_per_img, "name": self.name}

    @classmethod
    def from_config(cls, config: dict) -> RoIHeads:
        config = dict(config)
        box_head = layer_from_config(config.pop("box_head"))
        return cls(box_head, layer_from_config(config.pop("box_predictor")), **config)
