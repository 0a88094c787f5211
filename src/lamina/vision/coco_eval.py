"""COCO-style detection metrics: AP averaged over IoU thresholds, by object size, and average
recall (AR) with a cap on the detections per image, as the COCO benchmark reports them.

For every class, image, IoU threshold t and area range, the image's detections of that
class (the ``max(max_detections)`` best-scored, by decreasing score) are matched greedily:
each takes, among the ground truths not taken yet at t, the one it overlaps most with
IoU >= t, ground truths inside the area range preferred over those outside it (which are
"ignored"). A detection matched to an ignored ground truth, or unmatched and itself outside
the area range, is ignored too: it counts neither as a true nor as a false positive.

Over all images, keeping each image's m best detections, visited by decreasing score,

    precision_k = TP_k / (TP_k + FP_k),   recall_k = TP_k / n,

n the ground truths not ignored. Precision is made non-increasing in k from the right (the
envelope p_interp(r) = max {precision_k : recall_k >= r}) and read at the 101 recalls
r = 0, 0.01, ..., 1 (0 past the largest recall reached):

    AP_t = (1 / 101) sum_r p_interp(r),      AR_t = the largest recall reached.

A metric is the mean of AP_t (or AR_t) over the thresholds and over the classes that have
ground truth in the area range. Areas are box areas w h; the ranges are COCO's small
(< 32^2), medium (32^2 .. 96^2) and large (> 96^2) objects, bounds included on both sides.

Compared with :func:`~lamina.vision.average_precision` (all-point interpolation, the exact
area under p_interp), the 101-point sum samples the same envelope: both agree for a perfect
detector (1) and for none (0), and differ by at most 2/101 otherwise. The matching is the
same except on IoU ties (COCO takes the later ground truth, average_precision the earlier)
and for ignored boxes, which average_precision does not have. Crowd regions are not
supported. Boxes are corners (x1, y1, x2, y2).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lamina.vision.boxes import checked_corners, iou
from lamina.vision.metrics import _labels, _scores

__all__ = ["COCO_AREA_RANGES", "coco_evaluate", "format_coco_metrics"]

COCO_AREA_RANGES = {"all": (0.0, 1e10), "small": (0.0, 32.0 ** 2), "medium": (32.0 ** 2, 96.0 ** 2),
                    "large": (96.0 ** 2, 1e10)}
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def _areas(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _parts(entry, keys: tuple[str, ...]) -> tuple:
    """An image's entry as a tuple: a dict (a detector's output) by ``keys``, else as given."""
    return tuple(entry[key] for key in keys) if isinstance(entry, dict) else tuple(entry)


def _match_image(overlaps: np.ndarray, gt_ignored: np.ndarray, dt_outside: np.ndarray,
                 thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One image and class: (matched, ignored) flags (T, D) of its score-sorted detections.

    ``overlaps`` (D, G) is the IoU of each detection with each ground truth; a detection takes
    the not-yet-taken ground truth of highest IoU >= t, the ones not ignored first (the last
    one on ties)."""
    count, truths = overlaps.shape
    matched = np.zeros((len(thresholds), count), dtype=bool)
    ignored = np.zeros((len(thresholds), count), dtype=bool)
    groups = [np.flatnonzero(~gt_ignored), np.flatnonzero(gt_ignored)]
    for t, threshold in enumerate(np.minimum(thresholds, 1 - 1e-10)):
        taken = np.zeros(truths, dtype=bool)
        for d in range(count):
            for group in groups:
                free = group[~taken[group] & (overlaps[d, group] >= threshold)]
                if free.size:
                    values = overlaps[d, free]
                    best = free[len(values) - 1 - np.argmax(values[::-1])]
                    taken[best], matched[t, d], ignored[t, d] = True, True, gt_ignored[best]
                    break
        ignored[t] |= ~matched[t] & dt_outside
    return matched, ignored


def _precision_recall(scores: np.ndarray, matched: np.ndarray, ignored: np.ndarray,
                      positives: int) -> tuple[np.ndarray, np.ndarray]:
    """101-point interpolated precision (T, 101) and final recall (T,) of pooled detections."""
    order = np.argsort(-scores, kind="mergesort")
    matched, ignored = matched[:, order], ignored[:, order]
    true_pos = np.cumsum(matched & ~ignored, axis=1, dtype=np.float64)
    false_pos = np.cumsum(~matched & ~ignored, axis=1, dtype=np.float64)
    precision = np.zeros((len(matched), len(RECALL_POINTS)))
    recall = np.zeros(len(matched))
    for t in range(len(matched)):
        if not true_pos.shape[1]:
            continue
        rc = true_pos[t] / positives
        pr = true_pos[t] / np.maximum(true_pos[t] + false_pos[t], np.spacing(1))
        envelope = np.maximum.accumulate(pr[::-1])[::-1]
        at = np.searchsorted(rc, RECALL_POINTS, side="left")
        reached = at < len(rc)
        precision[t, reached] = envelope[at[reached]]
        recall[t] = rc[-1]
    return precision, recall


def _checked(predictions: Sequence, ground_truths: Sequence, num_classes: int, fn: str):
    if len(predictions) != len(ground_truths):
        raise ValueError(f"{fn}: need one entry per image, got {len(predictions)} predictions and "
                         f"{len(ground_truths)} ground truths")
    preds, truths = [], []
    for entry in predictions:
        boxes, scores, classes = _parts(entry, ("boxes", "scores", "labels"))
        boxes = checked_corners(boxes, fn).reshape(-1, 4).astype(np.float64)
        preds.append((boxes, _scores(scores, len(boxes), fn), _labels(classes, len(boxes), num_classes, fn)))
    for entry in ground_truths:
        boxes, labels = _parts(entry, ("boxes", "labels"))
        boxes = checked_corners(boxes, fn).reshape(-1, 4).astype(np.float64)
        truths.append((boxes, _labels(labels, len(boxes), num_classes, fn)))
    return preds, truths


def coco_evaluate(predictions: Sequence, ground_truths: Sequence, num_classes: int,
                  iou_thresholds: Sequence[float] = np.linspace(0.5, 0.95, 10),
                  max_detections: Sequence[int] = (1, 10, 100),
                  area_ranges: dict[str, tuple[float, float]] | None = None) -> dict[str, float]:
    """COCO's detection metrics (module docstring).

    ``predictions`` holds per image ``(boxes (k, 4), scores (k,), labels (k,))`` or a dict with
    those keys (a detector's output); ``ground_truths`` per image ``(boxes (n, 4), labels (n,))``
    or a dict with keys 'boxes' and 'labels'; labels lie in [0, num_classes). ``area_ranges``
    maps names to (low, high) box areas; the default is :data:`COCO_AREA_RANGES`, and it must
    hold 'all'.

    Returns a dict: 'AP' (mean over ``iou_thresholds``), 'AP50' and 'AP75' (when 0.5 and 0.75
    are among the thresholds), 'AP_<area>' for every other area range, all at the largest
    cap in ``max_detections``; 'AR<m>' for every cap m, and 'AR_<area>' at the largest cap.
    A metric with no ground truth to measure it on is NaN.
    """
    fn = "coco_evaluate"
    thresholds = np.asarray(iou_thresholds, dtype=np.float64).reshape(-1)
    if thresholds.size == 0 or not ((thresholds > 0) & (thresholds <= 1)).all():
        raise ValueError(f"{fn}: iou_thresholds must be values in (0, 1], got {thresholds.tolist()}")
    caps = sorted(int(m) for m in max_detections)
    if not caps or caps[0] < 1:
        raise ValueError(f"{fn}: max_detections must be positive integers, got {list(max_detections)}")
    ranges = dict(COCO_AREA_RANGES if area_ranges is None else area_ranges)
    if "all" not in ranges or any(not 0 <= low <= high for low, high in ranges.values()):
        raise ValueError(f"{fn}: area_ranges needs an 'all' entry and (low, high) pairs with 0 <= low <= high, "
                         f"got {ranges}")
    preds, truths = _checked(predictions, ground_truths, num_classes, fn)
    shape = (len(thresholds), num_classes, len(ranges), len(caps))
    precision = np.full((*shape[:1], len(RECALL_POINTS), *shape[1:]), np.nan)
    recall = np.full(shape, np.nan)
    for label in range(num_classes):
        per_image = []
        for (dt_boxes, dt_scores, dt_labels), (gt_boxes, gt_labels) in zip(preds, truths):
            keep = np.flatnonzero(dt_labels == label)
            keep = keep[np.argsort(-dt_scores[keep], kind="mergesort")][:caps[-1]]
            gt = gt_boxes[gt_labels == label]
            per_image.append((dt_boxes[keep], dt_scores[keep], gt, iou(dt_boxes[keep], gt)))
        for a, (low, high) in enumerate(ranges.values()):
            flags = []
            for dt, scores, gt, overlaps in per_image:
                gt_area, dt_area = _areas(gt), _areas(dt)
                gt_ignored = (gt_area < low) | (gt_area > high)
                matched, ignored = _match_image(overlaps, gt_ignored, (dt_area < low) | (dt_area > high), thresholds)
                flags.append((scores, matched, ignored, int((~gt_ignored).sum())))
            positives = sum(f[3] for f in flags)
            if positives == 0:
                continue
            for m, cap in enumerate(caps):
                scores = np.concatenate([f[0][:cap] for f in flags])
                matched = np.concatenate([f[1][:, :cap] for f in flags], axis=1)
                ignored = np.concatenate([f[2][:, :cap] for f in flags], axis=1)
                precision[:, :, label, a, m], recall[:, label, a, m] = _precision_recall(
                    scores, matched, ignored, positives)
    return _summarize(precision, recall, thresholds, list(ranges), caps)


def _mean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def _summarize(precision: np.ndarray, recall: np.ndarray, thresholds: np.ndarray, areas: list[str],
               caps: list[int]) -> dict[str, float]:
    """The headline numbers from precision (T, R, K, A, M) and recall (T, K, A, M)."""
    everything, last = areas.index("all"), len(caps) - 1
    metrics = {"AP": _mean(precision[..., everything, last])}
    for name, value in (("AP50", 0.5), ("AP75", 0.75)):
        at = np.flatnonzero(np.isclose(thresholds, value))
        if at.size:
            metrics[name] = _mean(precision[at[0], ..., everything, last])
    for a, area in enumerate(areas):
        if area != "all":
            metrics[f"AP_{area}"] = _mean(precision[..., a, last])
    for m, cap in enumerate(caps):
        metrics[f"AR{cap}"] = _mean(recall[..., everything, m])
    for a, area in enumerate(areas):
        if area != "all":
            metrics[f"AR_{area}"] = _mean(recall[..., a, last])
    return metrics


def format_coco_metrics(metrics: dict[str, float]) -> str:
    """The metrics of :func:`coco_evaluate`, one per line, as 'AP@[.5:.95]  0.512' ('n/a' for NaN;
    the label 'AP@[.5:.95]' names COCO's default thresholds)."""
    names = {"AP": "AP@[.5:.95]", "AP50": "AP@.5", "AP75": "AP@.75"}
    return "\n".join(f"{names.get(key, key):<12} " + ("n/a (no ground truth)" if np.isnan(value) else f"{value:.3f}")
                     for key, value in metrics.items())
