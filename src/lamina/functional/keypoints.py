"""Heatmap-based keypoint regression: the soft-argmax of integral pose regression (Sun et al.
2018) and mmpose's KeypointMSELoss, as composites of existing ops (NHWC heatmaps).

    soft_argmax_2d(h)[n, k] = sum_{y, x} softmax_{(y, x)}(beta h[n, :, :, k]) (x, y),

the expected cell under the softmax over the whole (H, W) map, in cells (x = column).

    keypoint_mse_loss(p, t, w) = mean_{n, y, x, k} w[n, k] (p[n, y, x, k] - t[n, y, x, k])^2,

w the keypoints' target weights (all ones when None).
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.activation import softmax

__all__ = ["keypoint_mse_loss", "soft_argmax_2d"]


def _heatmaps(x, fn: str) -> Tensor:
    x = x if isinstance(x, Tensor) else Tensor(x)
    if x.ndim != 4:
        raise ShapeError(f"{fn}: heatmaps need shape (N, H, W, K), got {tuple(x.shape)}")
    return x


def soft_argmax_2d(heatmaps, beta: float = 1.0) -> Tensor:
    """Differentiable keypoints (N, K, 2) as (x, y) cells from heatmaps (N, H, W, K) (module
    docstring); ``beta`` sharpens the softmax."""
    heatmaps = _heatmaps(heatmaps, "soft_argmax_2d")
    count, height, width, joints = heatmaps.shape
    weights = softmax(heatmaps.reshape(count, height * width, joints) * beta, axis=1)
    rows, cols = np.divmod(np.arange(height * width), width)
    grid = backend.xp.asarray(np.stack([cols, rows], axis=-1).astype(np.dtype(heatmaps.dtype)))
    return weights.transpose(0, 2, 1) @ Tensor(grid, dtype=heatmaps.dtype)


def keypoint_mse_loss(pred, target, target_weights=None) -> Tensor:
    """mmpose's KeypointMSELoss (module docstring): ``pred`` and ``target`` heatmaps
    (N, H, W, K), ``target_weights`` (N, K) or None."""
    fn = "keypoint_mse_loss"
    pred = _heatmaps(pred, fn)
    target = target if isinstance(target, Tensor) else Tensor(backend.xp.asarray(target, dtype=pred.dtype))
    if tuple(target.shape) != tuple(pred.shape):
        raise ShapeError(f"{fn}: predicted heatmaps {tuple(pred.shape)} and targets {tuple(target.shape)} must "
                         "have the same shape (check the heatmap size)")
    squared = (pred - target) ** 2
    if target_weights is None:
        return squared.mean()
    weights = target_weights if isinstance(target_weights, Tensor) else Tensor(
        backend.xp.asarray(target_weights, dtype=pred.dtype))
    wanted = (pred.shape[0], pred.shape[3])
    if tuple(weights.shape) != wanted:
        raise ShapeError(f"{fn}: target weights need shape {wanted} (one per keypoint), got {tuple(weights.shape)}")
    return (squared * weights.reshape(wanted[0], 1, 1, wanted[1])).mean()
