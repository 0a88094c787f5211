"""Bipartite matching of a set predictor's outputs to the ground truth (DETR, Carion et al. 2020).

A set predictor makes Q predictions (class probabilities p_i over C classes and a "no object"
class, and a box b_i); an image has n <= Q ground-truth objects (c_j, g_j). Training pairs
each object with one prediction by the assignment sigma of least total cost,

    sigma = argmin over injections j -> sigma(j) of sum_j C[sigma(j), j],
    C[i, j] = cost_class (-p_i(c_j)) + cost_bbox ||b_i - g_j||_1 + cost_giou (-GIoU(b_i, g_j)),

with the boxes as normalised centres and sizes (cx, cy, w, h) (the GIoU of their corners),
found by the Hungarian algorithm (:func:`scipy.optimize.linear_sum_assignment`). The
predictions left unmatched learn to say "no object".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lamina.errors import ShapeError

__all__ = ["HungarianMatcher", "matching_cost"]


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _corners(boxes: np.ndarray) -> np.ndarray:
    """(cx, cy, w, h) -> (x1, y1, x2, y2)."""
    return np.concatenate([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], axis=1)


def _pairwise_giou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """GIoU = IoU - (|C| - |A u B|) / |C| of corner boxes a (Q, 4) and b (n, 4): (Q, n)."""
    a, b = a[:, None, :], b[None, :, :]
    overlap = np.clip(np.minimum(a[..., 2:], b[..., 2:]) - np.maximum(a[..., :2], b[..., :2]), 0, None)
    inter = overlap[..., 0] * overlap[..., 1]
    union = ((a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1]) + (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
             - inter)
    hull = np.maximum(a[..., 2:], b[..., 2:]) - np.minimum(a[..., :2], b[..., :2])
    hull_area = hull[..., 0] * hull[..., 1]
    return inter / union - (hull_area - union) / hull_area


def matching_cost(logits, boxes, target_labels, target_boxes, cost_class: float = 1.0, cost_bbox: float = 5.0,
                  cost_giou: float = 2.0) -> np.ndarray:
    """The cost matrix C (Q, n) of the module docstring for one image: ``logits`` (Q, C + 1),
    ``boxes`` (Q, 4) and ``target_boxes`` (n, 4) as (cx, cy, w, h), ``target_labels`` (n,)."""
    fn = "matching_cost"
    logits, boxes = np.asarray(logits, dtype=np.float64), np.asarray(boxes, dtype=np.float64)
    labels = np.asarray(target_labels).reshape(-1).astype(np.int64)
    targets = np.asarray(target_boxes, dtype=np.float64).reshape(-1, 4)
    if logits.ndim != 2 or boxes.shape != (logits.shape[0], 4) or len(targets) != len(labels):
        raise ShapeError(f"{fn}: expected logits (Q, classes), boxes (Q, 4), target labels (n,) and boxes (n, 4); "
                         f"got {logits.shape}, {boxes.shape}, {labels.shape} and {targets.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= logits.shape[1]):
        raise ValueError(f"{fn}: target labels {labels.tolist()} must lie in [0, {logits.shape[1]})")
    probabilities = _softmax(logits)[:, labels]
    l1 = np.abs(boxes[:, None, :] - targets[None, :, :]).sum(axis=-1)
    giou = _pairwise_giou(_corners(boxes), _corners(targets))
    return cost_bbox * l1 - cost_class * probabilities - cost_giou * giou


class HungarianMatcher:
    """DETR's matcher (module docstring): ``matcher(logits, boxes, targets)`` with ``logits``
    (N, Q, C + 1), ``boxes`` (N, Q, 4) (cx, cy, w, h), and per image a dict with 'labels' (n,)
    and 'boxes' (n, 4) (cx, cy, w, h), gives per image the pair (query indices, target
    indices), int64 arrays of length min(Q, n) ordered by query."""

    def __init__(self, cost_class: float = 1.0, cost_bbox: float = 5.0, cost_giou: float = 2.0):
        if min(cost_class, cost_bbox, cost_giou) < 0 or cost_class == cost_bbox == cost_giou == 0:
            raise ValueError(f"HungarianMatcher: costs must be >= 0 and not all 0, got cost_class={cost_class!r}, "
                             f"cost_bbox={cost_bbox!r}, cost_giou={cost_giou!r}")
        self.cost_class, self.cost_bbox, self.cost_giou = float(cost_class), float(cost_bbox), float(cost_giou)

    def __call__(self, logits, boxes, targets: Sequence[dict]) -> list[tuple[np.ndarray, np.ndarray]]:
        from scipy.optimize import linear_sum_assignment  # imported on use: it costs 0.1 s

        logits, boxes = np.asarray(logits), np.asarray(boxes)
        if logits.ndim != 3 or boxes.shape != (*logits.shape[:2], 4) or len(targets) != len(logits):
            raise ShapeError(f"HungarianMatcher: expected logits (N, Q, classes), boxes (N, Q, 4) and N targets; got "
                             f"{logits.shape}, {boxes.shape} and {len(targets)} targets")
        matches = []
        for image_logits, image_boxes, target in zip(logits, boxes, targets):
            cost = matching_cost(image_logits, image_boxes, target["labels"], target["boxes"], self.cost_class,
                                 self.cost_bbox, self.cost_giou)
            queries, objects = linear_sum_assignment(cost)
            matches.append((queries.astype(np.int64), objects.astype(np.int64)))
        return matches

    def __repr__(self) -> str:
        return (f"HungarianMatcher(cost_class={self.cost_class}, cost_bbox={self.cost_bbox}, "
                f"cost_giou={self.cost_giou})")
