"""Detection metrics: average precision (AP) of one class and its mean over classes (mAP).

Detections of all images are visited by decreasing score (equal scores in input order); each
takes, among its image's ground-truth boxes not matched yet, the one it overlaps most, provided
their IoU is at least the threshold: a true positive. Otherwise it is a false positive, and so
is a second detection of an object already matched. After the k best-scored detections

    precision_k = TP_k / k,   recall_k = TP_k / n_true.

AP is the area under the precision envelope p_interp(r) = max {precision_k : recall_k >= r},
taken at every recall reached (all-point interpolation, PASCAL VOC 2010 onwards):

    AP = sum_k (recall_k - recall_(k-1)) p_interp(recall_k),

so objects never detected count as recall never reached. Boxes are corners (x1, y1, x2, y2).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lamina.errors import ShapeError
from lamina.vision.boxes import checked_corners, iou

__all__ = ["average_precision", "mean_average_precision"]


def _scores(scores, count: int, fn: str) -> np.ndarray:
    array = np.asarray(scores, dtype=np.float64).reshape(-1) if np.size(scores) == 0 else np.asarray(scores)
    if array.shape != (count,) or array.dtype.kind not in "iuf" or not np.isfinite(array).all():
        raise ShapeError(f"{fn}: expected {count} finite scores, got shape {array.shape}")
    return array.astype(np.float64)


def _true_positives(pred_boxes: list, order: list[tuple[int, int]], true_boxes: list, threshold: float) -> np.ndarray:
    """For detections (image, index) in ``order``: whether each matches a ground truth."""
    overlaps = [iou(p, t) for p, t in zip(pred_boxes, true_boxes)]
    matched = [np.zeros(len(t), dtype=bool) for t in true_boxes]
    hits = np.zeros(len(order), dtype=bool)
    for rank, (image, index) in enumerate(order):
        free = np.where(matched[image], -1.0, overlaps[image][index])
        if free.size and free.max() >= threshold:
            matched[image][free.argmax()] = True
            hits[rank] = True
    return hits


def average_precision(pred_boxes: Sequence, pred_scores: Sequence, true_boxes: Sequence,
                      iou_threshold: float = 0.5) -> float:
    """AP of one class over a set of images (see the module docstring).

    Each argument holds one entry per image: predicted corner boxes (k_i, 4), their scores
    (k_i,), ground-truth corner boxes (n_i, 4). A detection matches at IoU >= ``iou_threshold``.
    Returns NaN when there is no ground truth at all (AP is undefined).
    """
    fn = "average_precision"
    if not len(pred_boxes) == len(pred_scores) == len(true_boxes):
        raise ValueError(f"{fn}: need one entry per image in each argument, got {len(pred_boxes)} prediction, "
                         f"{len(pred_scores)} score and {len(true_boxes)} ground-truth entries")
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"{fn}: iou_threshold must lie in (0, 1], got {iou_threshold!r}")
    preds = [checked_corners(p, fn).reshape(-1, 4) for p in pred_boxes]
    truths = [checked_corners(t, fn).reshape(-1, 4) for t in true_boxes]
    scores = [_scores(s, len(p), fn) for s, p in zip(pred_scores, preds)]
    true_count = sum(len(t) for t in truths)
    if true_count == 0:
        return float("nan")
    detections = [(image, index) for image, s in enumerate(scores) for index in range(len(s))]
    flat_scores = np.array([scores[image][index] for image, index in detections], dtype=np.float64)
    order = [detections[k] for k in np.argsort(-flat_scores, kind="stable")]
    true_positives = np.cumsum(_true_positives(preds, order, truths, iou_threshold))
    precision = true_positives / np.arange(1, len(order) + 1)
    recall = true_positives / true_count
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum(np.diff(recall, prepend=0.0) * envelope))


def _labels(labels, count: int, num_classes: int, fn: str) -> np.ndarray:
    array = np.asarray(labels, dtype=np.int64).reshape(-1) if np.size(labels) == 0 else np.asarray(labels)
    if array.shape != (count,) or array.dtype.kind not in "iu":
        raise ShapeError(f"{fn}: expected {count} integer class labels, got shape {array.shape} "
                         f"and dtype {array.dtype}")
    if array.size and (array.min() < 0 or array.max() >= num_classes):
        raise ValueError(f"{fn}: class labels must lie in [0, {num_classes}), got {array.tolist()}")
    return array


def mean_average_precision(predictions: Sequence, ground_truths: Sequence, num_classes: int,
                           iou_threshold: float = 0.5) -> float:
    """mAP: the mean of :func:`average_precision` over the classes with at least one ground truth.

    ``predictions`` holds per image ``(boxes (k, 4), scores (k,), classes (k,))`` (a
    :class:`~lamina.vision.detection.Detections` will do), ``ground_truths`` per image
    ``(boxes (n, 4), labels (n,))``; boxes are corners. Returns NaN without any ground truth.
    """
    fn = "mean_average_precision"
    if len(predictions) != len(ground_truths):
        raise ValueError(f"{fn}: need one entry per image, got {len(predictions)} predictions and "
                         f"{len(ground_truths)} ground truths")
    preds, truths = [], []
    for boxes, scores, classes in predictions:
        boxes = checked_corners(boxes, fn).reshape(-1, 4)
        preds.append((boxes, _scores(scores, len(boxes), fn), _labels(classes, len(boxes), num_classes, fn)))
    for boxes, labels in ground_truths:
        boxes = checked_corners(boxes, fn).reshape(-1, 4)
        truths.append((boxes, _labels(labels, len(boxes), num_classes, fn)))
    per_class = []
    for label in range(num_classes):
        true_boxes = [boxes[labels == label] for boxes, labels in truths]
        if sum(len(t) for t in true_boxes) == 0:
            continue
        per_class.append(average_precision([b[c == label] for b, _, c in preds],
                                           [s[c == label] for _, s, c in preds], true_boxes, iou_threshold))
    return float(np.mean(per_class)) if per_class else float("nan")
