"""Panoptic quality (Kirillov et al. 2019) of panoptic id maps, as the COCO panopticapi counts it.

An image's panoptic segmentation is an integer id map (H, W) and the category of each segment
id; id ``void_id`` (0) is unlabelled. Per category, a predicted and a ground-truth segment of
that category match when

    IoU = |P n G| / (|P| + |G| - |P n G| - |P n void|) > 0.5

(at most one match each: two segments cannot both overlap one segment by more than half). Matches
are true positives TP, unmatched ground-truth segments false negatives FN, unmatched predictions
false positives FP, except that

* crowd ground-truth regions (``crowd``) are never matched and never count as FN, and
* an unmatched prediction whose pixels fall more than half on void or on the crowd regions of
  its category is ignored (not an FP).

Counts pool over all images; per category

    PQ = sum_TP IoU / (TP + FP / 2 + FN / 2) = SQ * RQ,  SQ = sum_TP IoU / TP,  RQ = TP / (TP + FP / 2 + FN / 2)

and the results average PQ, SQ and RQ over the categories with TP + FP + FN > 0: all of them,
the ``thing_categories`` and the rest (stuff).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from lamina import backend
from lamina.errors import ShapeError

__all__ = ["PanopticSegments", "panoptic_quality"]


@dataclass
class PanopticSegments:
    """One image's panoptic segmentation: an id map (H, W), {segment id: category} and the ids of
    the crowd regions (ground truth only)."""

    ids: np.ndarray
    categories: dict[int, int]
    crowd: frozenset[int] = field(default_factory=frozenset)


@dataclass
class _ClassCounts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    iou: float = 0.0


def _segments(item, what: str) -> PanopticSegments:
    if not isinstance(item, PanopticSegments):
        item = PanopticSegments(*item)
    ids = np.asarray(backend.to_numpy(item.ids))
    if ids.ndim != 2 or ids.dtype.kind not in "iu":
        raise ShapeError(f"panoptic_quality: {what} id map must be an integer array (H, W), got {ids.dtype} of shape "
                         f"{ids.shape}")
    return PanopticSegments(ids.astype(np.int64), {int(k): int(v) for k, v in item.categories.items()},
                            frozenset(int(c) for c in item.crowd))


def _count_image(pred: PanopticSegments, gt: PanopticSegments, void_id: int, counts) -> None:
    if pred.ids.shape != gt.ids.shape:
        raise ShapeError(f"panoptic_quality: predicted id map {pred.ids.shape} and ground truth {gt.ids.shape} differ")
    for what, seg in (("predicted", pred), ("ground-truth", gt)):
        unknown = set(np.unique(seg.ids).tolist()) - set(seg.categories) - {void_id}
        if unknown:
            raise ValueError(f"panoptic_quality: {what} ids {sorted(unknown)} have no category")
    gt_ids, pred_ids = gt.ids.reshape(-1), pred.ids.reshape(-1)
    gt_area = dict(zip(*np.unique(gt_ids, return_counts=True)))
    pred_area = dict(zip(*np.unique(pred_ids, return_counts=True)))
    pairs, overlap = np.unique(np.stack([gt_ids, pred_ids]), axis=1, return_counts=True)
    intersection = {(int(g), int(p)): int(n) for (g, p), n in zip(pairs.T, overlap)}
    matched_gt, matched_pred = set(), set()
    for (g, p), inter in intersection.items():
        if g not in gt.categories or p not in pred.categories or g in gt.crowd:
            continue
        if gt.categories[g] != pred.categories[p]:
            continue
        union = pred_area[p] + gt_area[g] - inter - intersection.get((void_id, p), 0)
        iou = inter / union
        if iou > 0.5:
            cls = counts[gt.categories[g]]
            cls.tp += 1
            cls.iou += iou
            matched_gt.add(g)
            matched_pred.add(p)
    for g, category in gt.categories.items():
        if g in gt_area and g not in matched_gt and g not in gt.crowd:
            counts[category].fn += 1
    for p, category in pred.categories.items():
        if p not in pred_area or p in matched_pred:
            continue
        ignored = intersection.get((void_id, p), 0) + sum(
            intersection.get((g, p), 0) for g in gt.crowd if gt.categories.get(g) == category)
        if ignored / pred_area[p] > 0.5:
            continue
        counts[category].fp += 1


def _average(per_class: dict, categories) -> dict[str, float]:
    rows = [per_class[c] for c in categories if c in per_class]
    if not rows:
        return {"pq": float("nan"), "sq": float("nan"), "rq": float("nan"), "n": 0}
    return {key: float(np.mean([r[key] for r in rows])) for key in ("pq", "sq", "rq")} | {"n": len(rows)}


def panoptic_quality(pred_segments, gt_segments, thing_categories=(), void_id: int = 0) -> dict:
    """PQ, SQ and RQ (module docstring) of predictions against ground truth, each one image or a
    list of images given as :class:`PanopticSegments` or (ids, categories[, crowd]) tuples.

    Returns {"all": ..., "things": ..., "stuff": ...} (each {"pq", "sq", "rq", "n"}) and
    "per_class": {category: {"pq", "sq", "rq", "tp", "fp", "fn", "iou"}}."""
    if isinstance(pred_segments, (PanopticSegments, tuple)):
        pred_segments, gt_segments = [pred_segments], [gt_segments]
    pred_segments, gt_segments = list(pred_segments), list(gt_segments)
    if len(pred_segments) != len(gt_segments):
        raise ValueError(f"panoptic_quality: {len(pred_segments)} predicted images for {len(gt_segments)} "
                         "ground-truth images")
    counts = defaultdict(_ClassCounts)
    for pred, gt in zip(pred_segments, gt_segments):
        _count_image(_segments(pred, "predicted"), _segments(gt, "ground-truth"), void_id, counts)
    per_class = {}
    for category in sorted(counts):
        c = counts[category]
        if c.tp + c.fp + c.fn == 0:
            continue
        denominator = c.tp + 0.5 * c.fp + 0.5 * c.fn
        sq = c.iou / c.tp if c.tp else 0.0
        rq = c.tp / denominator
        per_class[category] = {"pq": c.iou / denominator, "sq": sq, "rq": rq, "tp": c.tp, "fp": c.fp, "fn": c.fn,
                               "iou": c.iou}
    things = set(thing_categories)
    return {"all": _average(per_class, per_class), "things": _average(per_class, [c for c in per_class if c in things]),
            "stuff": _average(per_class, [c for c in per_class if c not in things]), "per_class": per_class}
