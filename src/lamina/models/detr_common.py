"""The pieces :class:`lamina.models.DETR` and :class:`lamina.models.DeformableDETR` share: the
sine position encoding of a grid's cells, :class:`SetCriterion` (the Hungarian-matched loss of
:mod:`lamina.models.detr`'s docstring: class cross-entropy with a "no object" weight, L1 and
GIoU box terms over n_boxes, for the last and every auxiliary decoder output), the forward that
gives the losses in training and the detections in evaluation, and the detections in pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from lamina import functional as F
from lamina import vision
from lamina.autograd import Tensor
from lamina.models.detection_base import DetectorBase
from lamina.vision.matching import HungarianMatcher


def sine_position_encoding(height: int, width: int, num_pos_feats: int, temperature: float = 10000.0,
                           normalize: bool = True, scale: float = 2 * math.pi, dtype=np.float64) -> np.ndarray:
    """DETR's sine encoding of the cells of an (height, width) map: (height, width, 2 F), F =
    ``num_pos_feats`` (even), the F features of the row y then the F of the column x.

    With y = 1 .. height (x = 1 .. width), normalised to y / (height + 1e-6) scale when
    ``normalize``, and t_k = temperature^(2 floor(k / 2) / F), feature k of y is
    sin(y / t_k) for even k and cos(y / t_k) for odd k."""
    if num_pos_feats < 2 or num_pos_feats % 2:
        raise ValueError(f"sine_position_encoding: num_pos_feats must be even and >= 2, got {num_pos_feats!r}")
    y = np.arange(1, height + 1, dtype=np.float64)
    x = np.arange(1, width + 1, dtype=np.float64)
    if normalize:
        y, x = y / (height + 1e-6) * scale, x / (width + 1e-6) * scale
    return _sine_grid(y, x, num_pos_feats, temperature, dtype)


def _sine_grid(y: np.ndarray, x: np.ndarray, num_pos_feats: int, temperature: float, dtype) -> np.ndarray:
    """(len(y), len(x), 2 F): at cell (i, j) the F features of the row position y_i, then the F
    of the column position x_j; with t_k = temperature^(2 floor(k / 2) / F), feature k of y is
    sin(y / t_k) for even k and cos(y / t_k) for odd k."""
    periods = float(temperature) ** (2 * (np.arange(num_pos_feats) // 2) / num_pos_feats)

    def encode(values: np.ndarray) -> np.ndarray:
        angles = values[:, None] / periods
        angles[:, 0::2], angles[:, 1::2] = np.sin(angles[:, 0::2]), np.cos(angles[:, 1::2])
        return angles

    rows, cols = encode(y), encode(x)
    shape = (len(y), len(x), num_pos_feats)
    grid = np.concatenate([np.broadcast_to(rows[:, None, :], shape), np.broadcast_to(cols[None, :, :], shape)],
                          axis=-1)
    return grid.astype(dtype)


def _centres(corners: np.ndarray) -> np.ndarray:
    """(x1, y1, x2, y2) -> (cx, cy, w, h)."""
    return np.concatenate([(corners[:, :2] + corners[:, 2:]) / 2, corners[:, 2:] - corners[:, :2]], axis=1)



class SetCriterion:
    """DETR's training loss (module docstring) of outputs {'pred_logits' (N, Q, C + 1),
    'pred_boxes' (N, Q, 4), 'aux_outputs': [{...}, ...]} against targets (per image
    'labels' (n,) and 'boxes' (n, 4) normalised (cx, cy, w, h)).

    ``criterion(outputs, targets)`` gives the weighted terms 'loss_ce' (x ``ce_weight``),
    'loss_bbox' (x ``bbox_weight``), 'loss_giou' (x ``giou_weight``), and 'loss_ce_i',
    'loss_bbox_i', 'loss_giou_i' for the i-th auxiliary output: their sum is the loss."""

    def __init__(self, num_classes: int, matcher: HungarianMatcher, eos_coef: float = 0.1, ce_weight: float = 1.0,
                 bbox_weight: float = 5.0, giou_weight: float = 2.0):
        self.num_classes, self.matcher, self.eos_coef = int(num_classes), matcher, float(eos_coef)
        self.weights = {"loss_ce": float(ce_weight), "loss_bbox": float(bbox_weight), "loss_giou": float(giou_weight)}

    def __call__(self, outputs: dict, targets: Sequence[dict]) -> dict[str, Tensor]:
        num_boxes = max(1, sum(len(t["labels"]) for t in targets))
        losses = self.losses(outputs["pred_logits"], outputs["pred_boxes"], targets, num_boxes)
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            aux_losses = self.losses(aux["pred_logits"], aux["pred_boxes"], targets, num_boxes)
            losses.update({f"{key}_{i}": value for key, value in aux_losses.items()})
        return losses

    def losses(self, logits: Tensor, boxes: Tensor, targets: Sequence[dict], num_boxes: int) -> dict[str, Tensor]:
        """The three weighted terms of one set of outputs."""
        matches = self.matcher(logits.numpy(), boxes.numpy(), targets)
        terms = {"loss_ce": self.class_loss(logits, matches, targets, num_boxes),
                 **self.box_losses(boxes, matches, targets, num_boxes)}
        return {key: value * self.weights[key] for key, value in terms.items()}

    def class_loss(self, logits: Tensor, matches, targets: Sequence[dict], num_boxes: int) -> Tensor:
        """Cross-entropy of every query's class: its matched object's label, "no object" (the
        last class, weight ``eos_coef``) for the unmatched queries."""
        n, q, classes = logits.shape
        wanted = np.full((n, q), self.num_classes, dtype=np.int64)
        for image, ((queries, objects), target) in enumerate(zip(matches, targets)):
            wanted[image, queries] = np.asarray(target["labels"])[objects]
        class_weights = np.ones(classes, dtype=logits.dtype)
        class_weights[-1] = self.eos_coef
        return F.cross_entropy(logits, wanted, weight=class_weights)

    @staticmethod
    def box_losses(boxes: Tensor, matches, targets: Sequence[dict], num_boxes: int) -> dict[str, Tensor]:
        """'loss_bbox' (L1) and 'loss_giou' (1 - GIoU) of the matched queries' boxes, summed and
        divided by ``num_boxes``; zeros (keeping the graph) when nothing is matched."""
        n, q = boxes.shape[:2]
        rows = np.concatenate([image * q + queries for image, (queries, _) in enumerate(matches)])
        if len(rows) == 0:
            zero = boxes.sum() * 0.0
            return {"loss_bbox": zero, "loss_giou": zero}
        predicted = F.take_rows(F.reshape(boxes, n * q, 4), rows)
        truth = np.concatenate([np.asarray(target["boxes"], dtype=np.float64).reshape(-1, 4)[objects]
                                for (_, objects), target in zip(matches, targets)]).astype(boxes.dtype)
        loss_bbox = F.abs(predicted - Tensor(truth, dtype=truth.dtype)).sum() / num_boxes
        truth_corners = np.concatenate([truth[:, :2] - truth[:, 2:] / 2, truth[:, :2] + truth[:, 2:] / 2], axis=1)
        loss_giou = vision.generalized_box_iou_loss(vision.box_convert(predicted, "cxcywh", "xyxy"), truth_corners,
                                                    reduction="sum", eps=0.0) / num_boxes
        return {"loss_bbox": loss_bbox, "loss_giou": loss_giou}


def _train_or_detect(model: DetectorBase, images, targets=None):
    """DETR's and Deformable DETR's ``forward``: in training mode the criterion's losses for
    ``targets`` (pixel (x1, y1, x2, y2) boxes, made normalised (cx, cy, w, h)), else
    :meth:`postprocess`'s detections."""
    x, checked = model._checked_inputs(images, targets)
    outputs = model.raw_outputs(model.normalize(x))
    height, width = x.shape[1:3]
    if model.training:
        scale = np.array([width, height, width, height], dtype=np.float64)
        return model.criterion(outputs, [{"labels": t["labels"], "boxes": _centres(t["boxes"] / scale)}
                                         for t in checked])
    return model.postprocess(outputs, (height, width))


def _pixel_detections(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                     image_size: tuple[int, int]) -> dict[str, np.ndarray]:
    """One image's detections: normalised (cx, cy, w, h) ``boxes`` as (x1, y1, x2, y2) pixels of
    an image of (height, width), float32 ``scores`` and int64 ``labels``."""
    height, width = image_size
    scale = np.array([width, height, width, height], dtype=np.float64)
    corners = vision.box_convert(boxes, "cxcywh", "xyxy") * scale
    return {"boxes": corners.astype(np.float32), "scores": scores.astype(np.float32), "labels": labels.astype(np.int64)}
