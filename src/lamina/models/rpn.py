"""The region proposal network of Faster R-CNN (Ren et al. 2015) in torchvision's layout.

:class:`RPNHead` runs on every pyramid level: a conv3x3 + ReLU, then two 1x1 convolutions, one
objectness logit and four box offsets (BoxCoder weights 1) per anchor (weights N(0, 0.01^2),
biases 0).

Proposals, per image: on each level the ``pre_nms_top_n`` anchors of highest objectness,
decoded and clipped to the image; boxes narrower or lower than 1e-3 pixels and scores
sigma(logit) below ``score_thresh`` dropped; NMS at ``nms_thresh`` within each level; the best
``post_nms_top_n`` of all levels. Training and evaluation use their own top-n.

Training loss (torchvision's): anchors match their best ground truth at IoU >= 0.7, are
background below 0.3 and ignored between (plus each ground truth's best anchors, whatever
their IoU); :class:`~lamina.models.detection_base.BalancedPositiveNegativeSampler` draws 256
anchors per image, at most half of them positive. Over the S anchors sampled in the batch,

    loss_objectness = mean over S of BCE-with-logits(logit, 1 if positive else 0),
    loss_rpn_box_reg = sum over the positives of smooth-L1_beta(t - t*) / |S|,  beta = 1/9.
"""

from __future__ import annotations

import math

import numpy as np

from lamina import functional as F
from lamina import nn, vision
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.detection_base import IGNORED, UNMATCHED, BalancedPositiveNegativeSampler, level_slices, match_by_iou
from lamina.models.retinanet import head_conv
from lamina.nn import init
from lamina.nn.layer import input_error, layer_from_config, layer_to_config, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["RPNHead", "RegionProposalNetwork", "rpn_loss"]

MIN_PROPOSAL_SIZE = 1e-3
SMOOTH_L1_BETA = 1.0 / 9


def _conv1x1(filters: int, name: str) -> nn.Conv2D:
    return nn.Conv2D(filters, 1, kernel_init=init.normal(0.01), bias_init="zeros", name=name)


@register_layer
class RPNHead(Module):
    """torchvision's RPNHead: ``conv`` (``conv_depth`` x conv3x3 + ReLU, keys 'i.0'), then
    ``cls_logits`` (A outputs) and ``bbox_pred`` (4 A outputs), all 1x1 but the first.

    ``forward(features)`` on a list of NHWC maps gives two lists, one map per level:
    objectness logits (N, H, W, A) and box offsets (N, H, W, 4 A), anchor a's offsets at
    channels 4a .. 4a + 3."""

    default_name = "head"

    def __init__(self, in_channels: int, num_anchors: int, conv_depth: int = 1, name: str | None = "head"):
        super().__init__(name=name)
        self.in_channels, self.num_anchors, self.conv_depth = int(in_channels), int(num_anchors), int(conv_depth)
        self.conv = nn.Sequential(*[nn.Sequential(head_conv(in_channels, name="0"), nn.ReLU(name="1"), name=str(i))
                                    for i in range(self.conv_depth)], name="conv")
        self.cls_logits = _conv1x1(num_anchors, "cls_logits")
        self.bbox_pred = _conv1x1(4 * num_anchors, "bbox_pred")

    def build(self, input_shape=None) -> None:
        for layer in self.children():
            layer.build((None, None, None, self.in_channels))
            layer.built = True
        self.built = True

    def forward(self, features) -> tuple[list[Tensor], list[Tensor]]:
        logits, offsets = [], []
        for x in (as_tensor(f) for f in features):
            if x.ndim != 4 or x.shape[-1] != self.in_channels:
                raise input_error(self, x, f"a list of NHWC maps with {self.in_channels} channels")
            hidden = self.conv(x)
            logits.append(self.cls_logits(hidden))
            offsets.append(self.bbox_pred(hidden))
        return logits, offsets

    def get_config(self) -> dict:
        return {"in_channels": self.in_channels, "num_anchors": self.num_anchors, "conv_depth": self.conv_depth,
                "name": self.name}


def _top_n_per_level(logits: np.ndarray, level_sizes, top_n: int) -> tuple[np.ndarray, np.ndarray]:
    """The indices of the ``top_n`` highest logits of every level (by decreasing logit within a
    level), and each one's level."""
    picked, levels = [], []
    for level, rows in enumerate(level_slices(level_sizes)):
        order = np.argsort(-logits[rows], kind="stable")[:top_n] + rows.start
        picked.append(order)
        levels.append(np.full(len(order), level, dtype=np.int64))
    return np.concatenate(picked), np.concatenate(levels)


def rpn_loss(logits: Tensor, offsets: Tensor, labels: np.ndarray, regression_targets: np.ndarray,
             positive: np.ndarray, negative: np.ndarray) -> dict[str, Tensor]:
    """torchvision's RPN losses (module docstring) over the batch's anchors, flattened image by
    image: ``logits`` (M,), ``offsets`` (M, 4), the anchors' ``labels`` (M,) (1, 0 or -1) and
    ``regression_targets`` (M, 4), and the sampled anchors' boolean masks ``positive`` and
    ``negative`` (M,)."""
    positive_rows = np.flatnonzero(positive)
    sampled = np.concatenate([positive_rows, np.flatnonzero(negative)])
    objectness = F.binary_cross_entropy_with_logits(F.take_rows(logits, sampled),
                                                    labels[sampled].astype(logits.dtype))
    if len(positive_rows) == 0:
        return {"loss_objectness": objectness, "loss_rpn_box_reg": offsets.sum() * 0.0}
    box = F.smooth_l1_loss(F.take_rows(offsets, positive_rows), regression_targets[positive_rows].astype(offsets.dtype),
                           reduction="sum", beta=SMOOTH_L1_BETA)
    return {"loss_objectness": objectness, "loss_rpn_box_reg": box / len(sampled)}


@register_layer
class RegionProposalNetwork(Module):
    """torchvision's RegionProposalNetwork (module docstring) with an :class:`RPNHead` ``head``.

    ``anchor_sizes`` / ``aspect_ratios``: one list per pyramid level (the AnchorGenerator's);
    ``pre_nms_top_n`` (per level) and ``post_nms_top_n`` (per image): dicts with 'training'
    and 'testing' counts. ``forward(image_size, features, targets=None)`` takes the images'
    (height, width), the list of NHWC maps and, in training, the checked targets; it returns
    the proposals (one (k, 4) array per image, by decreasing objectness within each level) and
    a dict of losses (empty in evaluation)."""

    default_name = "rpn"

    def __init__(self, anchor_sizes, aspect_ratios, head: Module, fg_iou_thresh: float = 0.7,
                 bg_iou_thresh: float = 0.3, batch_size_per_image: int = 256, positive_fraction: float = 0.5,
                 pre_nms_top_n: dict | None = None, post_nms_top_n: dict | None = None, nms_thresh: float = 0.7,
                 score_thresh: float = 0.0, name: str | None = "rpn"):
        super().__init__(name=name)
        if not 0 <= bg_iou_thresh <= fg_iou_thresh <= 1:
            raise ValueError(f"RegionProposalNetwork: need 0 <= bg_iou_thresh <= fg_iou_thresh <= 1, got "
                             f"{bg_iou_thresh!r} and {fg_iou_thresh!r}")
        self.anchor_sizes = [[float(s) for s in level] for level in anchor_sizes]
        self.aspect_ratios = [[float(r) for r in level] for level in aspect_ratios]
        self.anchor_generator = vision.AnchorGenerator(tuple(tuple(s) for s in self.anchor_sizes),
                                                          tuple(tuple(r) for r in self.aspect_ratios))
        counts = set(self.anchor_generator.num_anchors_per_location())
        if len(counts) != 1 or getattr(head, "num_anchors", None) not in counts:
            raise ValueError(f"RegionProposalNetwork: every level needs the head's number of anchors per location, "
                             f"got {self.anchor_generator.num_anchors_per_location()} for a head with "
                             f"{getattr(head, 'num_anchors', '?')}")
        self.head = head
        self.fg_iou_thresh, self.bg_iou_thresh = float(fg_iou_thresh), float(bg_iou_thresh)
        self.sampler = BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        self.pre_nms_top_n = _train_test_counts(pre_nms_top_n, 2000, 1000, "pre_nms_top_n")
        self.post_nms_top_n = _train_test_counts(post_nms_top_n, 2000, 1000, "post_nms_top_n")
        self.nms_thresh, self.score_thresh = float(nms_thresh), float(score_thresh)
        self.box_coder = vision.BoxCoder((1.0, 1.0, 1.0, 1.0))

    def build(self, input_shape=None) -> None:
        self.head.build(None)
        self.head.built = True
        self.built = True

    def _mode(self) -> str:
        return "training" if self.training else "testing"

    def forward(self, image_size, features, targets=None) -> tuple[list[np.ndarray], dict[str, Tensor]]:
        features = [as_tensor(f) for f in features]
        level_logits, level_offsets = self.head(features)
        count = features[0].shape[0]
        # sizes spelled out: -1 is ambiguous for an empty batch (a summary traces one)
        logits = F.concat([x.reshape(count, math.prod(x.shape[1:])) for x in level_logits], axis=1)
        offsets = F.concat([x.reshape(count, math.prod(x.shape[1:]) // 4, 4) for x in level_offsets], axis=1)
        levels = self.anchor_generator.grid_anchors(tuple(image_size), [tuple(f.shape[1:3]) for f in features])
        level_sizes = [len(a) for a in levels]
        anchors = np.concatenate(levels).astype(np.float64)
        if logits.shape[1] != len(anchors):
            raise ShapeError(f"{self._label()}: the head gives {logits.shape[1]} anchors' outputs but the anchor "
                             f"generator {len(anchors)}")
        proposals = self.filter_proposals(logits.numpy().astype(np.float64), offsets.numpy().astype(np.float64),
                                          anchors, level_sizes, tuple(image_size))
        if not self.training:
            return proposals, {}
        return proposals, self.compute_loss(logits, offsets, anchors, targets)

    def filter_proposals(self, logits: np.ndarray, offsets: np.ndarray, anchors: np.ndarray, level_sizes,
                         image_size) -> list[np.ndarray]:
        """The proposals of every image (module docstring) from the objectness ``logits`` (N, A)
        and box ``offsets`` (N, A, 4) of the ``anchors`` (A, 4)."""
        if len(logits) == 0:  # an empty batch (traced by a summary)
            return []
        pre_n, post_n = self.pre_nms_top_n[self._mode()], self.post_nms_top_n[self._mode()]
        picked, levels = zip(*(_top_n_per_level(image_logits, level_sizes, pre_n) for image_logits in logits))
        picked = np.stack(picked)
        count = picked.shape[1]
        images = np.repeat(np.arange(len(logits)), count)
        boxes = self.box_coder.decode_single(offsets[images, picked.reshape(-1)], anchors[picked.reshape(-1)])
        boxes = vision.clip_boxes_to_image(boxes, image_size).reshape(len(logits), count, 4)
        scores = 1.0 / (1.0 + np.exp(-np.take_along_axis(logits, picked, axis=1)))
        proposals = []
        for image_boxes, image_scores, image_levels in zip(boxes, scores, levels):
            keep = vision.remove_small_boxes(image_boxes, MIN_PROPOSAL_SIZE)
            keep = keep[image_scores[keep] >= self.score_thresh]
            kept = vision.batched_nms(image_boxes[keep], image_scores[keep], image_levels[keep], self.nms_thresh)
            proposals.append(image_boxes[keep][kept[:post_n]])
        return proposals

    def assign_targets(self, anchors: np.ndarray, gt_boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One image's anchor labels (1 foreground, 0 background, -1 ignored) and the boxes they
        regress to (their matched ground truth, the first one for the others; the anchors
        themselves, unused, when the image has no object)."""
        if len(gt_boxes) == 0:
            return np.zeros(len(anchors)), anchors.copy()
        matched = match_by_iou(vision.iou(gt_boxes, anchors), self.fg_iou_thresh, self.bg_iou_thresh)
        labels = (matched >= 0).astype(np.float64)
        labels[matched == UNMATCHED] = 0.0
        labels[matched == IGNORED] = -1.0
        return labels, gt_boxes[np.maximum(matched, 0)]

    def compute_loss(self, logits: Tensor, offsets: Tensor, anchors: np.ndarray, targets) -> dict[str, Tensor]:
        """The RPN losses (module docstring) of the batch's ``logits`` (N, A) and ``offsets``
        (N, A, 4), the anchors' samples drawn by the sampler."""
        labels, matched_boxes = zip(*(self.assign_targets(anchors, target["boxes"]) for target in targets))
        regression_targets = self.box_coder.encode(np.concatenate(matched_boxes), np.tile(anchors, (len(targets), 1)))
        positive, negative = self.sampler(labels)
        return rpn_loss(logits.reshape(-1), offsets.reshape(-1, 4), np.concatenate(labels), regression_targets,
                        np.concatenate(positive), np.concatenate(negative))

    def get_config(self) -> dict:
        return {"anchor_sizes": self.anchor_sizes, "aspect_ratios": self.aspect_ratios,
                "head": layer_to_config(self.head), "fg_iou_thresh": self.fg_iou_thresh,
                "bg_iou_thresh": self.bg_iou_thresh, "batch_size_per_image": self.sampler.batch_size_per_image,
                "positive_fraction": self.sampler.positive_fraction, "pre_nms_top_n": dict(self.pre_nms_top_n),
                "post_nms_top_n": dict(self.post_nms_top_n), "nms_thresh": self.nms_thresh,
                "score_thresh": self.score_thresh, "name": self.name}

    @classmethod
    def from_config(cls, config: dict) -> RegionProposalNetwork:
        config = dict(config)
        return cls(head=layer_from_config(config.pop("head")), **config)


def _train_test_counts(counts: dict | None, training: int, testing: int, what: str) -> dict[str, int]:
    counts = {"training": training, "testing": testing} if counts is None else dict(counts)
    if set(counts) != {"training", "testing"} or min(int(v) for v in counts.values()) < 1:
        raise ValueError(f"RegionProposalNetwork: {what} must be a dict with positive 'training' and 'testing' "
                         f"counts, got {counts!r}")
    return {key: int(value) for key, value in counts.items()}
