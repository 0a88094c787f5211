"""The parts of SOLOv2 (Wang et al. 2020, "SOLOv2: Dynamic and Fast Instance Segmentation")
that are not layers: the dynamic mask convolution, target assignment, the losses and Matrix
NMS.

Dynamic convolution: the kernel branch predicts, for a grid cell k, the weights G_k of a 1x1
convolution over the unified mask feature map F (H x W x E); its mask logits are

    M_k(i, j) = sum_e F(i, j, e) G_k(e).

Target assignment: an object with mask T, box height h and width w, is assigned to every level
whose scale range (lower, upper) contains sqrt(w h). On a level of S x S cells over the image
it is positive in the cells of its centre region: the box of size (sigma w, sigma h) around
the mask's centre of mass, cut to the 3 x 3 cells around the cell of the centre. The cell's
category is the object's label and its mask target is T.

Losses: L = L_cate + lambda L_mask, lambda = 3, L_cate the sigmoid focal loss (alpha 0.25,
gamma 2) summed over all cells and classes and divided by (positives + 1), L_mask the mean
over positive cells of the Dice loss of p = sigma(M_k) and the target t,

    L_dice = 1 - 2 sum(p t) / (sum p^2 + sum t^2)    (each sum + 0.001, as the reference code).

Matrix NMS (the paper's pseudo-code): with the masks sorted by score, IoU_ij their mask IoU
for i < j (0 otherwise, and 0 between different labels), and IoU_cmax_i = max_k IoU_ki the
largest IoU of mask i with a higher-scored mask, the score of mask j is multiplied by

    decay_j = min_i f(IoU_ij) / f(IoU_cmax_i),
    f(iou) = 1 - iou (linear) or exp(-iou^2 / sigma) (Gaussian).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lamina import functional as F
from lamina import vision
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn.module import as_tensor

__all__ = ["dynamic_mask_logits", "matrix_nms", "solo_dice_loss", "solo_focal_loss", "solo_targets"]

DICE_EPS = 0.001


def dynamic_mask_logits(features, kernels) -> Tensor:
    """Mask logits (K, H, W) of the 1x1 dynamic convolution of ``features`` (H, W, E) with the
    ``kernels`` (K, E) (module docstring)."""
    x, g = as_tensor(features), as_tensor(kernels)
    if x.ndim != 3 or g.ndim != 2 or g.shape[1] != x.shape[2]:
        raise ShapeError(f"dynamic_mask_logits: expected features (H, W, E) and kernels (K, E) with the same E, "
                         f"got {x.shape} and {g.shape}")
    h, w, e = x.shape
    logits = F.matmul(g, F.transpose(F.reshape(x, h * w, e), 1, 0))
    return F.reshape(logits, g.shape[0], h, w)


def solo_dice_loss(mask_logits, targets) -> Tensor:
    """Per mask Dice loss (module docstring) of sigma(``mask_logits``) (K, H, W) against
    ``targets`` (K, H, W) in [0, 1]: a (K,) tensor."""
    logits = as_tensor(mask_logits)
    t = np.asarray(targets.data if isinstance(targets, Tensor) else targets, dtype=logits.dtype)
    if logits.ndim != 3 or t.shape != logits.shape:
        raise ShapeError(f"solo_dice_loss: expected mask logits (K, H, W) and targets of the same shape, got "
                         f"{logits.shape} and {t.shape}")
    p = F.reshape(F.sigmoid(logits), logits.shape[0], -1)
    t = t.reshape(t.shape[0], -1)
    overlap = F.sum(p * Tensor(t), axis=1)
    denominator = F.sum(p * p, axis=1) + Tensor((t * t).sum(axis=1) + 2 * DICE_EPS)
    return 1.0 - 2.0 * overlap / denominator


def solo_focal_loss(category_logits, labels, num_positive: int, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Sigmoid focal loss of ``category_logits`` (cells, C) against ``labels`` (cells,), -1 for
    the background, summed and divided by (``num_positive`` + 1)."""
    logits = as_tensor(category_logits)
    labels = np.asarray(labels)
    if logits.ndim != 2 or labels.shape != logits.shape[:1]:
        raise ShapeError(f"solo_focal_loss: expected logits (cells, C) and labels (cells,), got {logits.shape} "
                         f"and {labels.shape}")
    one_hot = np.zeros(logits.shape, dtype=logits.dtype)
    rows = np.flatnonzero(labels >= 0)
    one_hot[rows, labels[rows]] = 1.0
    return vision.sigmoid_focal_loss(logits, one_hot, alpha, gamma, reduction="sum") / (num_positive + 1)


def _cell(position: float, size: int, grid: int) -> int:
    return int(np.floor(position / size * grid))


def solo_targets(masks: np.ndarray, labels: np.ndarray, grid_numbers: Sequence[int],
                 scale_ranges: Sequence[Sequence[float]], sigma: float = 0.2) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per level (labels (S S,), instances (S S,)): each cell's category and object index, -1
    where none (module docstring). ``masks`` (n, H, W) of one image at its size; later objects
    overwrite earlier ones in shared cells."""
    masks = np.asarray(masks) > 0
    labels = np.asarray(labels)
    if masks.ndim != 3 or labels.shape != masks.shape[:1]:
        raise ShapeError(f"solo_targets: expected masks (n, H, W) and labels (n,), got {masks.shape} and "
                         f"{labels.shape}")
    if len(grid_numbers) != len(scale_ranges):
        raise ValueError(f"solo_targets: one scale range per grid number, got {len(grid_numbers)} grids and "
                         f"{len(scale_ranges)} ranges")
    height, width = masks.shape[1:]
    levels = []
    for grid, (lower, upper) in zip(grid_numbers, scale_ranges):
        cate = np.full((grid, grid), -1, dtype=np.int64)
        instance = np.full((grid, grid), -1, dtype=np.int64)
        for index, (mask, label) in enumerate(zip(masks, labels)):
            ys, xs = np.nonzero(mask)
            if len(ys) == 0:
                continue
            h, w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
            if not lower <= np.sqrt(h * w) <= upper:
                continue
            cy, cx = ys.mean() + 0.5, xs.mean() + 0.5     # pixel centres
            row, col = _cell(cy, height, grid), _cell(cx, width, grid)
            half_h, half_w = 0.5 * sigma * h, 0.5 * sigma * w
            top = max(_cell(cy - half_h, height, grid), row - 1, 0)
            bottom = min(_cell(cy + half_h, height, grid), row + 1, grid - 1)
            left = max(_cell(cx - half_w, width, grid), col - 1, 0)
            right = min(_cell(cx + half_w, width, grid), col + 1, grid - 1)
            cate[top:bottom + 1, left:right + 1] = label
            instance[top:bottom + 1, left:right + 1] = index
        levels.append((cate.reshape(-1), instance.reshape(-1)))
    return levels


def matrix_nms(masks: np.ndarray, scores: np.ndarray, labels: np.ndarray | None = None, kernel: str = "gaussian",
               sigma: float = 0.5) -> np.ndarray:
    """Decayed scores (n,) of binary ``masks`` (n, H, W) whose ``scores`` are sorted in
    descending order (module docstring); ``labels``: only masks of the same label decay each
    other (all when None)."""
    masks = np.asarray(masks)
    scores = np.asarray(scores, dtype=np.float64)
    if kernel not in ("gaussian", "linear"):
        raise ValueError(f"matrix_nms: kernel must be 'gaussian' or 'linear', got {kernel!r}")
    if masks.ndim != 3 or scores.shape != masks.shape[:1]:
        raise ShapeError(f"matrix_nms: expected masks (n, H, W) and scores (n,), got {masks.shape} and "
                         f"{scores.shape}")
    if np.any(np.diff(scores) > 0):
        raise ValueError("matrix_nms: scores must be sorted in descending order")
    n = len(scores)
    if n == 0:
        return scores
    flat = masks.reshape(n, -1).astype(np.float64)
    inter = flat @ flat.T
    areas = flat.sum(axis=1)
    union = areas[:, None] + areas[None, :] - inter
    iou = np.triu(np.divide(inter, union, out=np.zeros_like(inter), where=union > 0), k=1)
    if labels is not None:
        labels = np.asarray(labels)
        iou = iou * (labels[:, None] == labels[None, :])
    cmax = iou.max(axis=0)[:, None]                  # row i: mask i's largest IoU with a higher one
    if kernel == "gaussian":
        decay = np.exp(-(iou ** 2 - cmax ** 2) / sigma)
    else:
        decay = (1.0 - iou) / np.maximum(1.0 - cmax, 1e-12)
    return scores * decay.min(axis=0)
