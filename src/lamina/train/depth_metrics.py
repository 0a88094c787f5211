"""Depth and surface-normal metrics of the KITTI / NYU evaluation protocol (NumPy).

Per image, over the valid pixels (target in (min_depth, max_depth), inside the mask and the
crop), with the prediction optionally aligned to the target first and then clipped to
[min_depth, max_depth] (as BTS and monodepth2 evaluate):

    abs_rel  = mean |p - g| / g          sq_rel   = mean (p - g)^2 / g
    rmse     = sqrt(mean (p - g)^2)      rmse_log = sqrt(mean (log p - log g)^2)
    log10    = mean |log10 p - log10 g|  silog    = 100 sqrt(mean e^2 - mean(e)^2), e = log p - log g
    delta_k  = fraction of pixels with max(p / g, g / p) < 1.25^k   (k = 1, 2, 3)

and each metric is averaged over the images. ``align='median'`` multiplies the prediction by
median(g) / median(p) (monodepth2's scale for self-supervised models); ``'least_squares'``
fits the scale and shift s p + t to g (relative-depth models such as MiDaS). The crops are
the KITTI fractions of the image: ``'garg'`` rows [0.408, 0.992) x columns [0.036, 0.964) of
Garg et al., ``'eigen'`` rows [0.332, 0.914) of Eigen et al., or an explicit
(top, bottom, left, right) box of pixels (NYU's Eigen crop is (45, 471, 41, 601) at 480 x 640).

:func:`normal_metrics` gives the angular errors of unit normals in degrees: the mean, the
median, the RMSE and the percentages within 11.25, 22.5 and 30 degrees.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina.errors import ShapeError

__all__ = ["DEPTH_METRICS", "depth_metrics", "normal_metrics"]

DEPTH_METRICS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog", "delta1", "delta2", "delta3")

_CROPS = {"garg": (0.40810811, 0.99189189, 0.03594771, 0.96405229),
          "eigen": (0.3324324, 0.91351351, 0.0359477, 0.96405229)}


def _as_maps(x, name: str, shape=None) -> np.ndarray:
    a = np.asarray(backend.to_numpy(x), dtype=np.float64)
    if a.ndim == 4 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or (shape is not None and a.shape != shape):
        expected = f"{shape}" if shape is not None else "(N, H, W, 1), (N, H, W) or (H, W)"
        raise ShapeError(f"depth_metrics: {name} of shape {np.shape(backend.to_numpy(x))}; expected {expected}")
    return a


def _crop_mask(shape, crop) -> np.ndarray:
    _, h, w = shape
    keep = np.zeros(shape, dtype=bool)
    if crop is None:
        keep[:] = True
        return keep
    if isinstance(crop, str):
        if crop not in _CROPS:
            raise ValueError(f"depth_metrics: crop must be one of {sorted(_CROPS)} or (top, bottom, left, right), "
                             f"got {crop!r}")
        top, bottom, left, right = _CROPS[crop]
        box = (int(top * h), int(bottom * h), int(left * w), int(right * w))
    else:
        box = tuple(int(b) for b in crop)
        if len(box) != 4:
            raise ValueError(f"depth_metrics: a crop box is (top, bottom, left, right), got {crop!r}")
    keep[:, box[0]:box[1], box[2]:box[3]] = True
    return keep


def _align(p: np.ndarray, g: np.ndarray, align: str) -> np.ndarray:
    if align == "median":
        return p * (np.median(g) / np.median(p))
    if align == "least_squares":
        design = np.stack([p, np.ones_like(p)], axis=1)
        (scale, shift), *_ = np.linalg.lstsq(design, g, rcond=None)
        return scale * p + shift
    return p


def _errors(p: np.ndarray, g: np.ndarray) -> dict[str, float]:
    ratio = np.maximum(p / g, g / p)
    e = np.log(p) - np.log(g)
    return {
        "abs_rel": float(np.mean(np.abs(p - g) / g)),
        "sq_rel": float(np.mean((p - g) ** 2 / g)),
        "rmse": float(np.sqrt(np.mean((p - g) ** 2))),
        "rmse_log": float(np.sqrt(np.mean(e ** 2))),
        "log10": float(np.mean(np.abs(np.log10(p) - np.log10(g)))),
        "silog": float(100 * np.sqrt(max(np.mean(e ** 2) - np.mean(e) ** 2, 0.0))),
        "delta1": float(np.mean(ratio < 1.25)),
        "delta2": float(np.mean(ratio < 1.25 ** 2)),
        "delta3": float(np.mean(ratio < 1.25 ** 3)),
    }


def depth_metrics(pred, target, mask=None, align: str = "none", min_depth: float = 1e-3,
                  max_depth: float | None = None, crop=None) -> dict[str, float]:
    """The KITTI/NYU depth metrics (module docstring) of depth maps (N, H, W, 1), (N, H, W) or
    (H, W), averaged over the images that have a valid pixel; keys :data:`DEPTH_METRICS`."""
    if align not in ("none", "median", "least_squares"):
        raise ValueError(f"depth_metrics: align must be 'none', 'median' or 'least_squares', got {align!r}")
    g = _as_maps(target, "target")
    p = _as_maps(pred, "prediction", g.shape)
    valid = (g > min_depth) & np.isfinite(g) & _crop_mask(g.shape, crop)
    if max_depth is not None:
        valid &= g < max_depth
    if mask is not None:
        valid &= _as_maps(mask, "mask", g.shape) != 0
    per_image = []
    for p_i, g_i, v_i in zip(p, g, valid):
        if not v_i.any():
            continue
        aligned = _align(p_i[v_i], g_i[v_i], align)
        aligned = np.clip(np.nan_to_num(aligned, nan=min_depth), min_depth, max_depth)
        per_image.append(_errors(aligned, g_i[v_i]))
    if not per_image:
        raise ValueError("depth_metrics: no image has a valid pixel (check the mask, min_depth, max_depth and crop)")
    return {name: float(np.mean([e[name] for e in per_image])) for name in DEPTH_METRICS}


def normal_metrics(pred, target, mask=None) -> dict[str, float]:
    """Angular errors in degrees between normals (..., 3) (normalised here), over the pixels of
    ``mask`` (..., or all): mean, median, rmse and the percentages within 11.25, 22.5, 30."""
    p = np.asarray(backend.to_numpy(pred), dtype=np.float64)
    g = np.asarray(backend.to_numpy(target), dtype=np.float64)
    if p.shape != g.shape or p.shape[-1:] != (3,):
        raise ShapeError(f"normal_metrics: expected predicted and target normals of the same shape (..., 3), got "
                         f"{p.shape} and {g.shape}")
    p = p / np.maximum(np.linalg.norm(p, axis=-1, keepdims=True), 1e-12)
    g = g / np.maximum(np.linalg.norm(g, axis=-1, keepdims=True), 1e-12)
    angles = np.degrees(np.arccos(np.clip((p * g).sum(axis=-1), -1.0, 1.0)))
    if mask is not None:
        keep = np.asarray(backend.to_numpy(mask)).reshape(angles.shape) != 0
        angles = angles[keep]
    angles = angles.reshape(-1)
    if angles.size == 0:
        raise ValueError("normal_metrics: no valid pixel")
    return {"mean": float(angles.mean()), "median": float(np.median(angles)),
            "rmse": float(np.sqrt(np.mean(angles ** 2))),
            "within_11.25": float(100 * np.mean(angles < 11.25)), "within_22.5": float(100 * np.mean(angles < 22.5)),
            "within_30": float(100 * np.mean(angles < 30))}
