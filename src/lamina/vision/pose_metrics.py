"""Keypoint metrics: PCK, its AUC, end-point error (mmpose's definitions) and COCO's object
keypoint similarity with keypoint AP / AR.

PCK. With d_nk = ||(p_nk - g_nk) / s_n|| (s_n the normalizing size of instance n: its box's
longer side, its head size for PCKh, or a given factor), keypoint k's accuracy is the share of
its labelled instances with d_nk < threshold, and PCK the mean of those accuracies over the
keypoints labelled at least once. Instances whose size is not positive are left out.
``auc`` averages the PCK at thresholds 0, 1/m, ..., (m - 1)/m; ``epe`` is the mean pixel
distance over the labelled keypoints.

OKS (COCO). For a detection d and a ground truth g of area a (the object's segment area),

    OKS = mean over g's labelled keypoints of exp(-||d_k - g_k||^2 / (2 a (2 sigma_k)^2)),

sigma_k the per-keypoint constants (:data:`COCO_SIGMAS` for the 17 COCO keypoints) and a
replaced by a + eps (a zero area gives 0 unless the points coincide). A ground truth with no
labelled keypoint measures instead every detected keypoint's distance to the box (x, y, w, h)
grown to (x - w, y - h, x + 2w, y + 2h), averaged over all keypoints (0 without a box).

Keypoint AP / AR match detections to ground truths by OKS exactly as COCO's box evaluation
matches by IoU (:mod:`lamina.vision.coco_eval`, whose matching this reuses): at most 20
detections per image, ground truths without labelled keypoints or outside the area range
ignored, a detection's area that of its keypoints' bounding box; area ranges 'all', 'medium'
(32^2 .. 96^2) and 'large'.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lamina.errors import ShapeError
from lamina.vision.coco_eval import _match_image, _precision_recall

__all__ = ["COCO_KEYPOINT_AREA_RANGES", "COCO_SIGMAS", "auc", "coco_keypoint_evaluate", "epe", "oks", "pck"]

COCO_SIGMAS = np.array([0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87,
                        0.87, 0.89, 0.89]) / 10.0
COCO_KEYPOINT_AREA_RANGES = {"all": (0.0, 1e10), "medium": (32.0 ** 2, 96.0 ** 2), "large": (96.0 ** 2, 1e10)}


def _points(pred, gt, visible, fn: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    if pred.ndim != 3 or pred.shape[-1] != 2 or pred.shape != gt.shape:
        raise ShapeError(f"{fn}: predictions and ground truths need the same shape (N, K, 2), got {pred.shape} "
                         f"and {gt.shape}")
    visible = np.asarray(visible)
    if visible.shape != pred.shape[:2]:
        raise ShapeError(f"{fn}: visibility needs shape {pred.shape[:2]}, got {visible.shape}")
    return pred, gt, visible > 0


def _normalized_distances(pred, gt, labelled, sizes) -> np.ndarray:
    """||(p - g) / s|| (N, K), -1 where not labelled or the instance's size is not positive."""
    sizes = np.broadcast_to(np.asarray(sizes, dtype=np.float64).reshape(len(pred), -1), (len(pred), 2))
    usable = labelled & (sizes > 0).all(axis=1)[:, None]
    distances = np.full(labelled.shape, -1.0)
    scaled = (pred - gt) / np.where(sizes > 0, sizes, 1.0)[:, None, :]
    distances[usable] = np.linalg.norm(scaled[usable], axis=-1)
    return distances


def _pck_from_distances(distances: np.ndarray, threshold: float) -> tuple[np.ndarray, float]:
    counted = distances != -1
    per_keypoint = np.full(distances.shape[1], np.nan)
    for k in range(distances.shape[1]):
        if counted[:, k].any():
            per_keypoint[k] = float((distances[counted[:, k], k] < threshold).mean())
    seen = ~np.isnan(per_keypoint)
    return per_keypoint, float(per_keypoint[seen].mean()) if seen.any() else float("nan")


def _sizes(count: int, bboxes, head_sizes, norm_factor, fn: str) -> np.ndarray:
    given = [v is not None for v in (bboxes, head_sizes, norm_factor)]
    if sum(given) != 1:
        raise ValueError(f"{fn}: give exactly one of bboxes (PCK), head_sizes (PCKh) or norm_factor")
    if bboxes is not None:
        boxes = np.asarray(bboxes, dtype=np.float64)
        if boxes.shape != (count, 4):
            raise ShapeError(f"{fn}: bboxes need shape ({count}, 4) (x1, y1, x2, y2), got {boxes.shape}")
        return (boxes[:, 2:] - boxes[:, :2]).max(axis=1)
    value = head_sizes if head_sizes is not None else norm_factor
    return np.broadcast_to(np.asarray(value, dtype=np.float64), (count,))


def pck(pred, gt, visible, threshold: float = 0.2, bboxes=None, head_sizes=None, norm_factor=None,
        per_keypoint: bool = False):
    """Percentage of correct keypoints (module docstring) of predictions and ground truths
    (N, K, 2) with visibility (N, K), normalized by exactly one of ``bboxes`` (N, 4) (the
    longer side), ``head_sizes`` (N,) (PCKh) or ``norm_factor`` (a number or (N,)). Returns
    the mean PCK, or (per-keypoint accuracies (K,) with NaN for unlabelled keypoints, mean) when
    ``per_keypoint``."""
    pred, gt, labelled = _points(pred, gt, visible, "pck")
    sizes = _sizes(len(pred), bboxes, head_sizes, norm_factor, "pck")
    per, mean = _pck_from_distances(_normalized_distances(pred, gt, labelled, sizes), threshold)
    return (per, mean) if per_keypoint else mean


def auc(pred, gt, visible, norm_factor: float = 30.0, num_thresholds: int = 20) -> float:
    """Area under the PCK curve (mmpose's ``keypoint_auc``): the mean PCK, normalized by
    ``norm_factor`` pixels, at thresholds i / m for i = 0 .. m - 1."""
    pred, gt, labelled = _points(pred, gt, visible, "auc")
    distances = _normalized_distances(pred, gt, labelled, np.full(len(pred), float(norm_factor)))
    return float(np.mean([_pck_from_distances(distances, i / num_thresholds)[1] for i in range(num_thresholds)]))


def epe(pred, gt, visible) -> float:
    """End-point error: the mean distance in pixels over the labelled keypoints (0 when none)."""
    pred, gt, labelled = _points(pred, gt, visible, "epe")
    distances = np.linalg.norm(pred - gt, axis=-1)[labelled]
    return float(distances.sum() / max(1, distances.size))


def oks(pred, gt, visible, areas, sigmas=COCO_SIGMAS, gt_boxes=None) -> np.ndarray:
    """Object keypoint similarity (module docstring) of detections (D, K, 2) with ground truths
    (G, K, 2), their visibility (G, K) and areas (G,); ``gt_boxes`` (G, 4) as (x, y, w, h)
    serve ground truths with no labelled keypoint. Returns (D, G)."""
    fn = "oks"
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    sigmas = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    joints = len(sigmas)
    if pred.ndim != 3 or gt.ndim != 3 or pred.shape[1:] != (joints, 2) or gt.shape[1:] != (joints, 2):
        raise ShapeError(f"{fn}: detections and ground truths need shapes (D, {joints}, 2) and (G, {joints}, 2) "
                         f"({joints} sigmas), got {pred.shape} and {gt.shape}")
    labelled = np.asarray(visible) > 0
    areas = np.asarray(areas, dtype=np.float64).reshape(-1)
    if labelled.shape != gt.shape[:2] or areas.shape != (len(gt),):
        raise ShapeError(f"{fn}: need visibility {gt.shape[:2]} and areas ({len(gt)},), got {labelled.shape} and "
                         f"{areas.shape}")
    variances = (2 * sigmas) ** 2
    out = np.zeros((len(pred), len(gt)))
    for g in range(len(gt)):
        if labelled[g].any():
            dx, dy = pred[..., 0] - gt[g, :, 0], pred[..., 1] - gt[g, :, 1]
        elif gt_boxes is not None:
            x, y, w, h = np.asarray(gt_boxes, dtype=np.float64)[g]
            dx = np.maximum(0, x - w - pred[..., 0]) + np.maximum(0, pred[..., 0] - (x + 2 * w))
            dy = np.maximum(0, y - h - pred[..., 1]) + np.maximum(0, pred[..., 1] - (y + 2 * h))
        else:
            continue
        e = (dx ** 2 + dy ** 2) / variances / (areas[g] + np.spacing(1)) / 2
        e = e[:, labelled[g]] if labelled[g].any() else e
        out[:, g] = np.exp(-e).mean(axis=1)
    return out


def _entry(entry, keys: tuple[str, ...]) -> tuple:
    return tuple(entry.get(key) for key in keys) if isinstance(entry, dict) else tuple(entry) + (None,) * (
        len(keys) - len(entry))


def coco_keypoint_evaluate(predictions: Sequence, ground_truths: Sequence, sigmas=COCO_SIGMAS,
                           oks_thresholds: Sequence[float] = np.linspace(0.5, 0.95, 10), max_detections: int = 20,
                           area_ranges: dict[str, tuple[float, float]] | None = None) -> dict[str, float]:
    """COCO keypoint AP / AR (module docstring) of one category.

    ``predictions`` per image: a dict with 'keypoints' (k, K, 2 or 3) and 'scores' (k,), or that
    pair; ``ground_truths`` per image: a dict with 'keypoints' (n, K, 3) (x, y, visibility),
    'areas' (n,) and optionally 'boxes' (n, 4) as (x, y, w, h), or that tuple. Returns 'AP',
    'AP50', 'AP75', 'AP_<area>', 'AR', 'AR50', 'AR75', 'AR_<area>' (NaN without ground truth).
    """
    fn = "coco_keypoint_evaluate"
    if len(predictions) != len(ground_truths):
        raise ValueError(f"{fn}: need one entry per image, got {len(predictions)} predictions and "
                         f"{len(ground_truths)} ground truths")
    thresholds = np.asarray(oks_thresholds, dtype=np.float64).reshape(-1)
    ranges = dict(COCO_KEYPOINT_AREA_RANGES if area_ranges is None else area_ranges)
    if "all" not in ranges:
        raise ValueError(f"{fn}: area_ranges needs an 'all' entry, got {list(ranges)}")
    joints = len(np.asarray(sigmas).reshape(-1))
    images = []
    for i, (p_entry, g_entry) in enumerate(zip(predictions, ground_truths)):
        dt, scores = _entry(p_entry, ("keypoints", "scores"))
        gt, areas, boxes = _entry(g_entry, ("keypoints", "areas", "boxes"))
        dt = np.asarray(dt, dtype=np.float64).reshape(-1, joints, np.shape(dt)[-1] if np.size(dt) else 2)[..., :2]
        gt = np.asarray(gt, dtype=np.float64).reshape(-1, joints, 3)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        if len(scores) != len(dt):
            raise ShapeError(f"{fn}: image {i} has {len(dt)} detections but {len(scores)} scores")
        keep = np.argsort(-scores, kind="mergesort")[:max_detections]
        dt, scores = dt[keep], scores[keep]
        overlaps = oks(dt, gt[..., :2], gt[..., 2], areas, sigmas, boxes)
        extent = dt.max(axis=1) - dt.min(axis=1) if len(dt) else np.zeros((0, 2))
        images.append((scores, overlaps, (gt[..., 2] > 0).any(axis=1), np.asarray(areas, dtype=np.float64),
                       extent.prod(axis=1)))
    precision = np.full((len(ranges), len(thresholds), 101), np.nan)
    recall = np.full((len(ranges), len(thresholds)), np.nan)
    for a, (low, high) in enumerate(ranges.values()):
        flags, positives = [], 0
        for scores, overlaps, labelled, gt_area, dt_area in images:
            gt_ignored = ~labelled | (gt_area < low) | (gt_area > high)
            matched, ignored = _match_image(overlaps, gt_ignored, (dt_area < low) | (dt_area > high), thresholds)
            flags.append((scores, matched, ignored))
            positives += int((~gt_ignored).sum())
        if positives:
            precision[a], recall[a] = _precision_recall(np.concatenate([f[0] for f in flags]),
                                                        np.concatenate([f[1] for f in flags], axis=1),
                                                        np.concatenate([f[2] for f in flags], axis=1), positives)
    return _summary(precision, recall, thresholds, list(ranges))


def _summary(precision: np.ndarray, recall: np.ndarray, thresholds: np.ndarray, areas: list[str]) -> dict:
    def mean(values):
        return float(np.mean(values)) if not np.isnan(values).any() else float("nan")

    everything = areas.index("all")
    metrics = {"AP": mean(precision[everything])}
    for name, value in (("AP50", 0.5), ("AP75", 0.75)):
        at = np.flatnonzero(np.isclose(thresholds, value))
        if at.size:
            metrics[name] = mean(precision[everything, at[0]])
    metrics.update({f"AP_{area}": mean(precision[a]) for a, area in enumerate(areas) if area != "all"})
    metrics["AR"] = mean(recall[everything])
    for name, value in (("AR50", 0.5), ("AR75", 0.75)):
        at = np.flatnonzero(np.isclose(thresholds, value))
        if at.size:
            metrics[name] = mean(recall[everything, at[0]])
    metrics.update({f"AR_{area}": mean(recall[a]) for a, area in enumerate(areas) if area != "all"})
    return metrics
