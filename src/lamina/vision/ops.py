"""Box operators of anchor-based and two-stage detectors, as torchvision.ops.

Boxes are corner boxes ``(x1, y1, x2, y2)`` in pixels on the last axis unless a format says
otherwise. Each function takes NumPy arrays or lamina tensors: given arrays it returns arrays;
given a tensor it returns a tensor, differentiable in the box coordinates, so the IoU
variants can serve as regression losses.

Pairwise measures of boxes A (N, 4) and B (M, 4) give (N, M); with C the smallest box
enclosing both, rho the distance between the centres and d C's diagonal:

    IoU  = |A ∩ B| / |A ∪ B|
    GIoU = IoU - (|C| - |A ∪ B|) / |C|                   (Rezatofighi et al. 2019)
    DIoU = IoU - rho^2 / (d^2 + eps)                      (Zheng et al. 2020)
    CIoU = DIoU - alpha v,  v = (4 / pi^2) (atan(w_A / h_A) - atan(w_B / h_B))^2,
           alpha = v / (1 - IoU + v + eps), held constant (no gradient), as in the paper.

The losses (``*_box_iou_loss``) compare matched boxes element-wise: 1 - GIoU, 1 - DIoU, 1 - CIoU,
with IoU = |A ∩ B| / (|A ∪ B| + eps) (and GIoU's |C| + eps) as torchvision computes them.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.activation import sigmoid
from lamina.functional.elementwise import clip, maximum, minimum, where
from lamina.functional.losses_focal import BinaryFocal
from lamina.functional.math_more import atan2
from lamina.functional.shape import stack
from lamina.functional.smooth_activation import softplus
from lamina.vision.boxes import _greedy_nms

__all__ = [
    "batched_nms", "box_convert", "box_iou", "clip_boxes_to_image", "complete_box_iou", "complete_box_iou_loss",
    "distance_box_iou", "distance_box_iou_loss", "generalized_box_iou", "generalized_box_iou_loss", "nms",
    "remove_small_boxes", "sigmoid_focal_loss",
]

FORMATS = ("xyxy", "xywh", "cxcywh")
REDUCTIONS = ("none", "mean", "sum")


# -- arrays in, arrays out; tensors in, tensors out -------------------------------------------


def _tensors(fn: str, *boxes) -> tuple[bool, list[Tensor]]:
    """Whether any input is a tensor, and every input as a float tensor with 4 values on its
    last axis (arrays of integers become float64)."""
    given_tensor = any(isinstance(b, Tensor) for b in boxes)
    out = []
    for b in boxes:
        if not isinstance(b, Tensor):
            array = np.asarray(b)
            array = array.reshape(0, 4) if array.shape == (0,) else array
            array = array if array.dtype.kind == "f" else array.astype(np.float64)
            b = Tensor(array, dtype=array.dtype)
        if b.ndim == 0 or b.shape[-1] != 4:
            raise ShapeError(f"{fn}: boxes must have a last axis of 4 values, got shape {b.shape}")
        out.append(b)
    return given_tensor, out


def _result(value: Tensor, given_tensor: bool):
    return value if given_tensor else value.numpy()


def _sides(boxes: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]


def _pairwise_sides(boxes_a: Tensor, boxes_b: Tensor, fn: str):
    """The corners of A (N, 4) as (N, 1) columns and of B (M, 4) as (1, M) rows."""
    if boxes_a.ndim != 2 or boxes_b.ndim != 2:
        raise ShapeError(f"{fn}: expected boxes (N, 4) and (M, 4), got {boxes_a.shape} and {boxes_b.shape}")
    a = [s.reshape(-1, 1) for s in _sides(boxes_a)]
    b = [s.reshape(1, -1) for s in _sides(boxes_b)]
    return a, b


# -- formats ------------------------------------------------------------------------------------


def box_convert(boxes, in_fmt: str, out_fmt: str):
    """Convert boxes between 'xyxy' (corners), 'xywh' (top-left corner, width, height) and
    'cxcywh' (centre, width, height). The result is always new, even for in_fmt == out_fmt
    (a copy, as torchvision's clone)."""
    fn = "box_convert"
    for name, fmt in (("in_fmt", in_fmt), ("out_fmt", out_fmt)):
        if fmt not in FORMATS:
            raise ValueError(f"{fn}: {name} must be one of {FORMATS}, got {fmt!r}")
    given_tensor, (boxes,) = _tensors(fn, boxes)
    if in_fmt == out_fmt:
        return _result(boxes * 1.0, given_tensor)   # a new array or node, never the caller's boxes
    a, b, c, d = _sides(boxes)
    if in_fmt == "xywh":
        a, b, c, d = a, b, a + c, b + d
    elif in_fmt == "cxcywh":
        a, b, c, d = a - 0.5 * c, b - 0.5 * d, a + 0.5 * c, b + 0.5 * d
    if out_fmt == "xywh":
        a, b, c, d = a, b, c - a, d - b
    elif out_fmt == "cxcywh":
        a, b, c, d = (a + c) / 2, (b + d) / 2, c - a, d - b
    return _result(stack([a, b, c, d], axis=-1), given_tensor)


# -- pairwise measures ----------------------------------------------------------------------------


def _inter_union(a, b) -> tuple[Tensor, Tensor]:
    """Pairwise intersection and union areas of corner lists a, b = [x1, y1, x2, y2]."""
    width = clip(minimum(a[2], b[2]) - maximum(a[0], b[0]), 0.0, None)
    height = clip(minimum(a[3], b[3]) - maximum(a[1], b[1]), 0.0, None)
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter, union


def _enclosing(a, b) -> tuple[Tensor, Tensor]:
    """Width and height of the smallest box enclosing each pair."""
    width = clip(maximum(a[2], b[2]) - minimum(a[0], b[0]), 0.0, None)
    height = clip(maximum(a[3], b[3]) - minimum(a[1], b[1]), 0.0, None)
    return width, height


def _centre_distance_squared(a, b) -> Tensor:
    return ((a[0] + a[2]) / 2 - (b[0] + b[2]) / 2) ** 2 + ((a[1] + a[3]) / 2 - (b[1] + b[3]) / 2) ** 2


def _slope(w: Tensor, h: Tensor) -> Tensor:
    """atan(w / h) for any sign of h, as atan2(s w, s h) with s = -1 where h < 0 and 1 elsewhere:
    pi/2 sign(w) at h = 0 as atan(+-inf), with finite gradients there; 0 (not torchvision's NaN)
    for a point box, w = h = 0."""
    s = backend.xp.where(h.data < 0, -1.0, 1.0).astype(h.dtype, copy=False)
    return atan2(w * s, h * s)


def _aspect_term(a, b) -> Tensor:
    """v = (4 / pi^2) (atan(w_a / h_a) - atan(w_b / h_b))^2."""
    return (4 / math.pi**2) * (_slope(a[2] - a[0], a[3] - a[1]) - _slope(b[2] - b[0], b[3] - b[1])) ** 2


def _held(value: Tensor) -> Tensor:
    return value.detach()


def box_iou(boxes_a, boxes_b):
    """Pairwise IoU = |A ∩ B| / |A ∪ B| of corner boxes (N, 4) and (M, 4): (N, M)."""
    given_tensor, (ta, tb) = _tensors("box_iou", boxes_a, boxes_b)
    inter, union = _inter_union(*_pairwise_sides(ta, tb, "box_iou"))
    return _result(inter / union, given_tensor)


def generalized_box_iou(boxes_a, boxes_b):
    """Pairwise GIoU = IoU - (|C| - |A ∪ B|) / |C|, C the enclosing box: (N, M), in [-1, 1]."""
    given_tensor, (ta, tb) = _tensors("generalized_box_iou", boxes_a, boxes_b)
    a, b = _pairwise_sides(ta, tb, "generalized_box_iou")
    inter, union = _inter_union(a, b)
    width, height = _enclosing(a, b)
    hull = width * height
    return _result(inter / union - (hull - union) / hull, given_tensor)


def _diou_and_iou(a, b, eps: float) -> tuple[Tensor, Tensor]:
    inter, union = _inter_union(a, b)
    iou = inter / union
    width, height = _enclosing(a, b)
    return iou - _centre_distance_squared(a, b) / (width**2 + height**2 + eps), iou


def distance_box_iou(boxes_a, boxes_b, eps: float = 1e-7):
    """Pairwise DIoU = IoU - rho^2 / (d^2 + eps): (N, M)."""
    given_tensor, (ta, tb) = _tensors("distance_box_iou", boxes_a, boxes_b)
    diou, _ = _diou_and_iou(*_pairwise_sides(ta, tb, "distance_box_iou"), eps)
    return _result(diou, given_tensor)


def complete_box_iou(boxes_a, boxes_b, eps: float = 1e-7):
    """Pairwise CIoU = DIoU - alpha v (alpha held constant): (N, M)."""
    given_tensor, (ta, tb) = _tensors("complete_box_iou", boxes_a, boxes_b)
    a, b = _pairwise_sides(ta, tb, "complete_box_iou")
    diou, iou = _diou_and_iou(a, b, eps)
    v = _aspect_term(a, b)
    alpha = _held(v) / (1 - _held(iou) + _held(v) + eps)
    return _result(diou - alpha * v, given_tensor)


# -- losses of matched boxes ------------------------------------------------------------------------


def _reduce(loss: Tensor, reduction: str, fn: str) -> Tensor:
    if reduction not in REDUCTIONS:
        raise ValueError(f"{fn}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.mean() if loss.size else 0.0 * loss.sum()
    return loss


def _matched(boxes_a, boxes_b, fn: str):
    given_tensor, (ta, tb) = _tensors(fn, boxes_a, boxes_b)
    if ta.shape != tb.shape:
        raise ShapeError(f"{fn}: matched boxes need the same shape, got {ta.shape} and {tb.shape}")
    return given_tensor, list(_sides(ta)), list(_sides(tb))


def _loss_inter_union(a, b) -> tuple[Tensor, Tensor]:
    """Intersection (0 where the boxes do not overlap) and union of matched boxes."""
    right, left = minimum(a[2], b[2]), maximum(a[0], b[0])
    bottom, top = minimum(a[3], b[3]), maximum(a[1], b[1])
    overlap = (right.data > left.data) & (bottom.data > top.data)
    inter = where(overlap, (right - left) * (bottom - top), 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter, union


def _diou_loss_and_iou(a, b, eps: float) -> tuple[Tensor, Tensor]:
    inter, union = _loss_inter_union(a, b)
    iou = inter / (union + eps)
    hull_w, hull_h = maximum(a[2], b[2]) - minimum(a[0], b[0]), maximum(a[3], b[3]) - minimum(a[1], b[1])
    return 1 - iou + _centre_distance_squared(a, b) / (hull_w**2 + hull_h**2 + eps), iou


def generalized_box_iou_loss(boxes_a, boxes_b, reduction: str = "none", eps: float = 1e-7):
    """1 - GIoU of matched boxes (..., 4), with IoU = |A ∩ B| / (|A ∪ B| + eps) and the hull
    term (|C| - |A ∪ B|) / (|C| + eps); ``reduction`` 'none', 'mean' or 'sum'."""
    fn = "generalized_box_iou_loss"
    given_tensor, a, b = _matched(boxes_a, boxes_b, fn)
    inter, union = _loss_inter_union(a, b)
    hull = (maximum(a[2], b[2]) - minimum(a[0], b[0])) * (maximum(a[3], b[3]) - minimum(a[1], b[1]))
    giou = inter / (union + eps) - (hull - union) / (hull + eps)
    return _result(_reduce(1 - giou, reduction, fn), given_tensor)


def distance_box_iou_loss(boxes_a, boxes_b, reduction: str = "none", eps: float = 1e-7):
    """1 - DIoU = 1 - IoU + rho^2 / (d^2 + eps) of matched boxes (..., 4)."""
    fn = "distance_box_iou_loss"
    given_tensor, a, b = _matched(boxes_a, boxes_b, fn)
    loss, _ = _diou_loss_and_iou(a, b, eps)
    return _result(_reduce(loss, reduction, fn), given_tensor)


def complete_box_iou_loss(boxes_a, boxes_b, reduction: str = "none", eps: float = 1e-7):
    """1 - CIoU = 1 - DIoU + alpha v of matched boxes (..., 4), alpha held constant."""
    fn = "complete_box_iou_loss"
    given_tensor, a, b = _matched(boxes_a, boxes_b, fn)
    loss, iou = _diou_loss_and_iou(a, b, eps)
    v = _aspect_term(a, b)
    alpha = _held(v) / (1 - _held(iou) + _held(v) + eps)
    return _result(_reduce(loss + alpha * v, reduction, fn), given_tensor)


def _focal_terms(logits: Tensor, y, alpha: float, gamma: float) -> Tensor:
    """The loss values composed from recorded ops, so that targets on the graph get dL/dy."""
    ce = (1 - y) * logits + softplus(-logits, threshold=math.inf)
    p = sigmoid(logits)
    loss = ce * (1 - (p * y + (1 - p) * (1 - y))) ** gamma
    return (alpha * y + (1 - alpha) * (1 - y)) * loss if alpha >= 0 else loss


def sigmoid_focal_loss(inputs, targets, alpha: float = 0.25, gamma: float = 2.0, reduction: str = "none") -> Tensor:
    """torchvision's focal loss on logits, value by value:

        L = alpha_t (1 - p_t)^gamma BCE(sigma(z), y),   p_t = p y + (1 - p)(1 - y),

    alpha_t = alpha y + (1 - alpha)(1 - y) for any alpha >= 0, and no weighting for alpha < 0.
    Targets may be soft or lie outside [0, 1] as in torchvision, and a target tensor that
    requires grad gets dL/dy. ``reduction``: 'none' keeps the input's shape, 'mean' and 'sum'
    reduce over every value. Targets in [0, 1] off the graph with gamma >= 0 take the fused
    node of :func:`lamina.functional.binary_focal_loss`; the rest is composed from sigmoid
    and softplus."""
    fn = "sigmoid_focal_loss"
    if reduction not in REDUCTIONS:
        raise ValueError(f"{fn}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
    for name, value in (("alpha", alpha), ("gamma", gamma)):
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            raise TypeError(f"{fn}: {name} must be a real number, got {value!r}")
    logits = inputs if isinstance(inputs, Tensor) else Tensor(np.asarray(inputs), dtype=np.asarray(inputs).dtype)
    target = targets.data if isinstance(targets, Tensor) else backend.xp.asarray(targets)
    if target.shape != logits.shape:
        raise ShapeError(f"{fn}: inputs {logits.shape} and targets {target.shape} must have the same shape")
    y = target.astype(logits.dtype, copy=False)
    on_graph = isinstance(targets, Tensor) and targets.requires_grad
    if on_graph or gamma < 0 or (y.size and not bool(backend.xp.all((y >= 0) & (y <= 1)))):
        values = _focal_terms(logits, targets if on_graph else y, float(alpha), float(gamma))
        return values if reduction == "none" else _reduce(values, reduction, fn)
    values = BinaryFocal.apply(logits.reshape(-1), y=y.reshape(-1), gamma=float(gamma),
                               alpha=None if alpha < 0 else float(alpha), from_logits=True, reduction=reduction)
    return values.reshape(logits.shape) if reduction == "none" else values


# -- selection -----------------------------------------------------------------------------------------


def _plain(values, dtype=None) -> np.ndarray:
    array = backend.to_numpy(values.data if isinstance(values, Tensor) else values)
    return np.asarray(array, dtype=dtype)


def _boxes_and_scores(boxes, scores, fn: str) -> tuple[np.ndarray, np.ndarray]:
    boxes = _plain(boxes, np.float64)
    boxes = boxes.reshape(0, 4) if boxes.size == 0 else boxes
    scores = _plain(scores, np.float64).reshape(-1)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or scores.shape != boxes.shape[:1]:
        raise ShapeError(f"{fn}: expected boxes (N, 4) and scores (N,), got {boxes.shape} and {scores.shape}")
    return boxes, scores


def nms(boxes, scores, iou_threshold: float) -> np.ndarray:
    """Greedy non-max suppression: visiting boxes by decreasing score, keep a box and drop
    every later one whose IoU with it exceeds ``iou_threshold``. The kept indices (int64),
    by decreasing score."""
    boxes, scores = _boxes_and_scores(boxes, scores, "nms")
    order = np.argsort(-scores, kind="stable")
    return np.asarray(_greedy_nms(boxes, order, float(iou_threshold)), dtype=np.int64)


def batched_nms(boxes, scores, idxs, iou_threshold: float) -> np.ndarray:
    """NMS within each category ``idxs`` (N integers): boxes of different categories never
    suppress each other. Every box is shifted by idx * (max coordinate - min coordinate + 1),
    which puts the categories apart whatever the signs of the coordinates, and one NMS runs on
    the shifted boxes."""
    fn = "batched_nms"
    boxes, scores = _boxes_and_scores(boxes, scores, fn)
    idxs = _plain(idxs).reshape(-1)
    if idxs.shape != scores.shape or (idxs.size and idxs.dtype.kind not in "iu"):
        raise ShapeError(f"{fn}: idxs must be {scores.size} integer categories, got shape {idxs.shape} and "
                         f"dtype {idxs.dtype}")
    if boxes.size == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = idxs.astype(np.float64) * (boxes.max() - boxes.min() + 1)
    return nms(boxes + offsets[:, None], scores, iou_threshold)


def remove_small_boxes(boxes, min_size: float) -> np.ndarray:
    """Indices of the boxes whose width and height are both at least ``min_size``."""
    boxes, _ = _boxes_and_scores(boxes, np.zeros(len(_plain(boxes).reshape(-1, 4))), "remove_small_boxes")
    keep = (boxes[:, 2] - boxes[:, 0] >= min_size) & (boxes[:, 3] - boxes[:, 1] >= min_size)
    return np.flatnonzero(keep)


def clip_boxes_to_image(boxes, size: tuple[int, int]):
    """Boxes (..., 4) with x clipped to [0, width] and y to [0, height], ``size`` = (height, width)."""
    given_tensor, (tb,) = _tensors("clip_boxes_to_image", boxes)
    height, width = size
    x1, y1, x2, y2 = _sides(tb)
    clipped = [clip(x1, 0, width), clip(y1, 0, height), clip(x2, 0, width), clip(y2, 0, height)]
    return _result(stack(clipped, axis=-1), given_tensor)
