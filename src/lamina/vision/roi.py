"""Region-of-interest feature extraction for two-stage detectors (Fast / Faster / Mask R-CNN),
as torchvision.ops: ``roi_align``, ``roi_pool`` and FPN's choice of pyramid level per box.

Boxes are given either as one (K, 5) array of rows ``(batch_index, x1, y1, x2, y2)`` or as a
list with one (K_i, 4) array of corner boxes per image; the features are NHWC and the result
is (K, out_h, out_w, C), box k's grid of features. The boxes get no gradient (as in torchvision).
"""

from __future__ import annotations

import math

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.roi_align import (
    RoIAlign,
    RoIPool,
    as_tensor,
    check_sampling_ratio,
    roi_align_weights,
    roi_pool_windows,
)
from lamina.functional.shape import concat, getitem

__all__ = ["MultiScaleRoIAlign", "fpn_levels", "roi_align", "roi_pool", "rois_from_boxes"]


def _plain(values) -> np.ndarray:
    return backend.to_numpy(values.data if isinstance(values, Tensor) else values)


def rois_from_boxes(boxes, fn: str = "rois_from_boxes") -> np.ndarray:
    """(K, 5) rows (batch_index, x1, y1, x2, y2) from a (K, 5) array or a list of per-image
    (K_i, 4) arrays (image i's boxes get batch index i)."""
    if isinstance(boxes, (list, tuple)):
        parts = []
        for i, per_image in enumerate(boxes):
            array = np.asarray(_plain(per_image), dtype=np.float64)
            array = array.reshape(0, 4) if array.size == 0 else array
            if array.ndim != 2 or array.shape[1] != 4:
                raise ShapeError(f"{fn}: the boxes of image {i} must be (K_i, 4), got shape {array.shape}")
            parts.append(np.column_stack([np.full(len(array), float(i)), array]))
        return np.concatenate(parts) if parts else np.zeros((0, 5))
    rois = np.asarray(_plain(boxes), dtype=np.float64)
    if rois.ndim != 2 or rois.shape[1] != 5:
        raise ShapeError(f"{fn}: boxes must be a (K, 5) array of (batch_index, x1, y1, x2, y2) or a list of "
                         f"(K_i, 4) arrays, got shape {rois.shape}")
    return rois


def _pair(size, fn: str) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or any(int(s) != s or s < 1 for s in pair):
        raise ValueError(f"{fn}: output_size must be a positive integer or a pair of them, got {size!r}")
    return int(pair[0]), int(pair[1])


def _checked(x, boxes, output_size, fn: str):
    x = as_tensor(x)
    if x.ndim != 4:
        raise ShapeError(f"{fn}: expected NHWC features (N, H, W, C), got shape {x.shape}")
    rois = rois_from_boxes(boxes, fn)
    batch = rois[:, 0].astype(np.int64)
    if len(rois) and (np.any(batch != rois[:, 0]) or batch.min() < 0 or batch.max() >= x.shape[0]):
        raise ValueError(f"{fn}: batch indices must be integers in [0, {x.shape[0]}) for {x.shape[0]} images, "
                         f"got values from {rois[:, 0].min()} to {rois[:, 0].max()}")
    if not np.isfinite(rois).all():
        raise ValueError(f"{fn}: boxes must be finite")
    return x, rois, batch, _pair(output_size, fn)


def roi_align(x, boxes, output_size, spatial_scale: float = 1.0, sampling_ratio: int = -1,
              aligned: bool = False) -> Tensor:
    """RoIAlign (He et al. 2017) of NHWC features ``x`` over ``boxes``: (K, out_h, out_w, C).

    Each box, scaled by ``spatial_scale`` (feature size / image size), is cut into
    out_h x out_w bins; a bin's value is the mean of bilinear samples of ``x`` on a regular
    grid, ``sampling_ratio`` points per bin side (<= 0: ceil(box side / bins)). With
    ``aligned=True`` pixel centres sit at half-integers (the box is shifted by -0.5) and boxes
    are not enlarged to at least one pixel. Differentiable in ``x`` to any order.
    """
    fn = "roi_align"
    x, rois, batch, size = _checked(x, boxes, output_size, fn)
    rows, cols = roi_align_weights(rois, x.shape[1:3], size, float(spatial_scale), check_sampling_ratio(sampling_ratio),
                                   bool(aligned), x.dtype)
    xp = backend.xp
    return RoIAlign.apply(x, rows=xp.asarray(rows), cols=xp.asarray(cols), batch=batch)


def roi_pool(x, boxes, output_size, spatial_scale: float = 1.0) -> Tensor:
    """RoIPool (Girshick 2015, Fast R-CNN) of NHWC features ``x`` over ``boxes``:
    (K, out_h, out_w, C), the maximum of each of out_h x out_w bins of the box rounded to
    whole feature pixels (0 for a bin that lies outside the map)."""
    fn = "roi_pool"
    x, rois, batch, size = _checked(x, boxes, output_size, fn)
    row_bins, col_bins = roi_pool_windows(rois, x.shape[1:3], size, float(spatial_scale),
                                          x.dtype)
    return RoIPool.apply(x, row_bins=row_bins, col_bins=col_bins, batch=batch)


def fpn_levels(boxes, k_min: int, k_max: int, canonical_scale: float = 224.0, canonical_level: int = 4,
               eps: float = 1e-6) -> np.ndarray:
    """FPN's pyramid level for each corner box (K, 4) (Lin et al. 2017, eq. 1), as an index
    from 0 (level k_min):

        k = clamp(floor(k0 + log2(sqrt(w h) / s0) + eps), k_min, k_max) - k_min,

    with k0 = ``canonical_level`` and s0 = ``canonical_scale`` (a 224 x 224 box goes to level 4).
    """
    fn = "fpn_levels"
    array = np.asarray(_plain(boxes), dtype=np.float64).reshape(-1, 4)
    if k_min > k_max:
        raise ValueError(f"{fn}: k_min must not exceed k_max, got {k_min} and {k_max}")
    area = (array[:, 2] - array[:, 0]) * (array[:, 3] - array[:, 1])
    with np.errstate(divide="ignore"):
        level = np.floor(canonical_level + np.log2(np.sqrt(np.maximum(area, 0.0)) / canonical_scale) + eps)
    return (np.clip(level, k_min, k_max) - k_min).astype(np.int64)


class MultiScaleRoIAlign:
    """RoIAlign over a feature pyramid (torchvision's MultiScaleRoIAlign): each box is pooled
    from the level :func:`fpn_levels` picks. ``scales`` are the levels' feature size / image
    size (powers of 2: 1/4, 1/8, ...), from the finest level to the coarsest.

    ``pooler(features, boxes)``: ``features`` a list of NHWC maps, one per scale; ``boxes`` as
    for :func:`roi_align`; returns (K, out_h, out_w, C) in the order of the boxes."""

    def __init__(self, scales, output_size, sampling_ratio: int = 2, canonical_scale: float = 224.0,
                 canonical_level: int = 4, aligned: bool = False):
        self.scales = [float(s) for s in scales]
        if not self.scales:
            raise ValueError("MultiScaleRoIAlign: at least one scale is needed")
        levels = [-math.log2(s) for s in self.scales]
        if any(abs(level - round(level)) > 1e-6 for level in levels):
            raise ValueError(f"MultiScaleRoIAlign: scales must be powers of 2, got {self.scales}")
        self.k_min, self.k_max = round(levels[0]), round(levels[-1])
        self.output_size, self.sampling_ratio, self.aligned = output_size, sampling_ratio, aligned
        self.canonical_scale, self.canonical_level = canonical_scale, canonical_level

    def __call__(self, features, boxes) -> Tensor:
        if len(features) != len(self.scales):
            raise ValueError(f"MultiScaleRoIAlign: {len(features)} feature maps for {len(self.scales)} scales")
        rois = rois_from_boxes(boxes, "MultiScaleRoIAlign")
        if len(self.scales) == 1:
            return roi_align(features[0], rois, self.output_size, self.scales[0], self.sampling_ratio, self.aligned)
        levels = fpn_levels(rois[:, 1:], self.k_min, self.k_max, self.canonical_scale, self.canonical_level)
        parts, order = [], []
        for level, (feature, scale) in enumerate(zip(features, self.scales)):
            chosen = np.flatnonzero(levels == level)
            if chosen.size:
                parts.append(roi_align(feature, rois[chosen], self.output_size, scale, self.sampling_ratio,
                                       self.aligned))
                order.append(chosen)
        if not parts:
            out_h, out_w = _pair(self.output_size, "MultiScaleRoIAlign")
            return as_tensor(backend.xp.zeros((0, out_h, out_w, as_tensor(features[0]).shape[3])))
        return getitem(concat(parts, axis=0), np.argsort(np.concatenate(order), kind="stable"))
