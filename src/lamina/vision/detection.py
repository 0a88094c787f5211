"""A YOLO-style grid detector's targets, loss and decoding (course notes, Object localization
and detection; You only look once).

The image (height H, width W) is cut into an S x S grid; each cell holds A slots, one per
anchor box shape (A = 1 without anchors), and each slot predicts 5 + C numbers

    (p_c, t_x, t_y, t_w, t_h, c_1 .. c_C).

Ground-truth boxes come in pixels, centre format (b_x, b_y, b_w, b_h). An object belongs to
the cell (row i, column j) holding its centre, and, with anchors (given as (w, h) pairs in
pixels), to the anchor whose shape fits it best: the largest IoU of the two boxes put on the
same centre. Its slot holds p_c = 1, the centre's offsets within the cell

    t_x = S b_x / W - j,   t_y = S b_y / H - i        (0 <= t < 1),

the size relative to the image, t_w = b_w / W and t_h = b_h / H, or with anchors the log-ratio
to the anchor, t_w = log(b_w / a_w) and t_h = log(b_h / a_h) (as YOLO v2), and the class one-hot.
A slot holds one object: when several objects fall in the same cell (and anchor), the one
listed first keeps the slot and the others are not encoded (the notes' limit of one object per
window location, which anchors ease). Targets take lamina's default dtype.

A network's predictions use the same layout, with logits in place of p_c and of the class
one-hot, and the box numbers (t_x, t_y, t_w, t_h) regressed directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.vision.boxes import center_to_corners, non_max_suppression

__all__ = ["Detections", "decode_grid_predictions", "encode_grid_targets", "encode_grid_targets_batch",
           "grid_detection_loss", "localization_loss"]


class Detections(NamedTuple):
    """One image's detections: corner boxes (k, 4) in pixels, scores (k,), classes (k,)."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray


def _values(x):
    """The array inside a Tensor, or ``x`` itself."""
    return x.data if isinstance(x, Tensor) else x


def _image_size(image_size, fn: str) -> tuple[float, float]:
    """(height, width) from an int (square) or a pair."""
    size = (image_size, image_size) if np.ndim(image_size) == 0 else tuple(image_size)
    if len(size) != 2 or not all(np.isfinite(s) and s > 0 for s in size):
        raise ValueError(f"{fn}: image_size must be a positive number or (height, width), got {image_size!r}")
    return float(size[0]), float(size[1])


def _anchors(anchors, fn: str) -> np.ndarray | None:
    if anchors is None:
        return None
    wh = np.asarray(anchors, dtype=np.float64)
    if wh.ndim != 2 or wh.shape[1] != 2 or len(wh) == 0:
        raise ShapeError(f"{fn}: anchors must be (w, h) pairs of shape (A, 2), got shape {wh.shape}")
    if not (np.isfinite(wh).all() and (wh > 0).all()):
        raise ValueError(f"{fn}: anchor widths and heights must be positive, got {wh.tolist()}")
    return wh


def _shape_iou(sizes: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """IoU (n, A) of boxes of sizes (n, 2) and anchors (A, 2) sharing one centre."""
    inter = np.prod(np.minimum(sizes[:, None, :], anchors[None, :, :]), axis=-1)
    return inter / (np.prod(sizes, axis=-1)[:, None] + np.prod(anchors, axis=-1)[None, :] - inter)


def encode_grid_targets(boxes, labels, grid_size: int, image_size, anchors=None, *, num_classes: int) -> np.ndarray:
    """One image's target array (S, S, A, 5 + C) from centre boxes (n, 4) in pixels and labels (n,).

    See the module docstring for the encoding; ``image_size`` is an int or (height, width),
    ``anchors`` None (A = 1) or (A, 2) (w, h) pairs in pixels.
    """
    fn = "encode_grid_targets"
    height, width = _image_size(image_size, fn)
    anchor_wh = _anchors(anchors, fn)
    if int(grid_size) != grid_size or grid_size < 1 or int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"{fn}: grid_size and num_classes must be integers >= 1, got {grid_size!r}, {num_classes!r}")
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) if np.size(boxes) == 0 else np.asarray(boxes)
    labels = np.asarray(labels)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or labels.shape != boxes.shape[:1]:
        raise ShapeError(f"{fn}: expected boxes (n, 4) and labels (n,), got {boxes.shape} and {labels.shape}")
    if labels.size and (labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{fn}: labels must be integers in [0, {num_classes}), got {labels.tolist()}")
    centres, sizes = boxes[:, :2].astype(np.float64), boxes[:, 2:].astype(np.float64)
    if not (np.isfinite(boxes).all() and (sizes > 0).all()):
        raise ValueError(f"{fn}: boxes need finite values and positive widths and heights, got {boxes.tolist()}")
    if ((centres < 0) | (centres > [width, height])).any():
        raise ValueError(f"{fn}: box centres must lie in the image ({width} x {height}), got {centres.tolist()}")
    anchor_count = 1 if anchor_wh is None else len(anchor_wh)
    target = np.zeros((grid_size, grid_size, anchor_count, 5 + num_classes), dtype=backend.get_default_dtype())
    grid_xy = centres * grid_size / [width, height]
    col, row = np.minimum(np.floor(grid_xy).astype(np.int64), grid_size - 1).T
    if anchor_wh is None:
        slot, encoded_size = np.zeros(len(boxes), dtype=np.int64), sizes / [width, height]
    else:
        slot = np.argmax(_shape_iou(sizes, anchor_wh), axis=1)
        encoded_size = np.log(sizes / anchor_wh[slot])
    # np.unique gives each slot's first occurrence: the first object listed keeps the slot
    _, first = np.unique((row * grid_size + col) * anchor_count + slot, return_index=True)
    where = row[first], col[first], slot[first]
    target[where + (0,)] = 1
    target[where + (slice(1, 3),)] = grid_xy[first] - np.stack([col[first], row[first]], axis=-1)
    target[where + (slice(3, 5),)] = encoded_size[first]
    target[where + (5 + labels[first],)] = 1
    return target


def encode_grid_targets_batch(boxes_per_image: Sequence, labels_per_image: Sequence, grid_size: int, image_size,
                              anchors=None, *, num_classes: int) -> np.ndarray:
    """:func:`encode_grid_targets` for each image of a batch: (B, S, S, A, 5 + C)."""
    if len(boxes_per_image) != len(labels_per_image) or len(boxes_per_image) == 0:
        raise ValueError(f"encode_grid_targets_batch: need one label array per box array and at least one image, "
                         f"got {len(boxes_per_image)} and {len(labels_per_image)}")
    return np.stack([encode_grid_targets(b, y, grid_size, image_size, anchors, num_classes=num_classes)
                     for b, y in zip(boxes_per_image, labels_per_image)])


def grid_detection_loss(pred, target, lambda_coord: float = 5.0, lambda_noobj: float = 0.5) -> Tensor:
    """Detection cost of predictions against targets, both (B, S, S, A, 5 + C) (or one image's (S, S, A, 5 + C)).

    With 1_obj = p_c of the target and 1_noobj = 1 - 1_obj, summed over every slot and averaged
    over the images,

        J = lambda_coord sum 1_obj sum_(k in x,y,w,h) (t_hat_k - t_k)^2
            + sum 1_obj BCE(z, 1) + lambda_noobj sum 1_noobj BCE(z, 0) + sum 1_obj CE(c_hat, c)

    with z the objectness logit and BCE(z, y) = -y log sigma(z) - (1 - y) log(1 - sigma(z)),
    and CE the categorical cross-entropy of the class logits. The weights default to YOLO v1's;
    unlike YOLO v1 the objectness is learnt with cross-entropy rather than squared error, and
    widths and heights are compared as encoded (no square roots). With S = A = 1 and an object
    in every image this is the notes' localization cost plus the objectness term.
    """
    fn = "grid_detection_loss"
    pred = pred if isinstance(pred, Tensor) else Tensor(pred)
    target = backend.xp.asarray(_values(target)).astype(pred.dtype, copy=False)
    if pred.shape != target.shape or pred.ndim not in (4, 5) or pred.shape[-1] < 6:
        raise ShapeError(f"{fn}: pred and target must share a shape (B, S, S, A, 5 + C) or (S, S, A, 5 + C) "
                         f"with C >= 1, got {pred.shape} and {target.shape}")
    present = target[..., 0]
    if not ((present == 0) | (present == 1)).all():
        raise ValueError(f"{fn}: target objectness p_c must be 0 or 1")
    images = pred.shape[0] if pred.ndim == 5 else 1
    obj = present.reshape(-1).astype(pred.dtype)
    classes = pred.shape[-1] - 5
    objectness = F.binary_cross_entropy(pred[..., 0].reshape(-1), obj, from_logits=True, reduction="none")
    objectness_cost = F.sum(objectness * (obj + lambda_noobj * (1 - obj)))
    box_error = pred[..., 1:5].reshape(-1, 4) - target[..., 1:5].reshape(-1, 4)
    box_cost = F.sum(F.sum(box_error * box_error, axis=-1) * obj)
    class_loss = F.categorical_cross_entropy(pred[..., 5:].reshape(-1, classes), target[..., 5:].reshape(-1, classes),
                                             from_logits=True, reduction="none")
    class_cost = F.sum(class_loss * obj)
    return (lambda_coord * box_cost + objectness_cost + class_cost) / images


def localization_loss(class_logits, box_pred, labels, boxes, box_weight: float = 1.0) -> Tensor:
    """The notes' localization cost for m images with one object each:

        J = (1/m) sum_i CE(z_i, y_i) + box_weight (1/m) sum_i sum_(k in x,y,w,h) (b_hat_ik - b_ik)^2

    ``class_logits`` (m, C), integer ``labels`` (m,), ``box_pred`` and ``boxes`` (m, 4).
    """
    fn = "localization_loss"
    box_pred = box_pred if isinstance(box_pred, Tensor) else Tensor(box_pred)
    boxes = backend.xp.asarray(_values(boxes))
    m = box_pred.shape[0] if box_pred.ndim else None
    if box_pred.shape != (m, 4) or boxes.shape != (m, 4) or np.shape(class_logits)[:1] != (m,):
        raise ShapeError(f"{fn}: expected class_logits (m, C), box_pred (m, 4) and boxes (m, 4), got "
                         f"{np.shape(class_logits)}, {box_pred.shape} and {boxes.shape}")
    class_cost = F.categorical_cross_entropy(class_logits, labels, from_logits=True)
    box_error = box_pred - boxes.astype(box_pred.dtype)
    return class_cost + box_weight * F.mean(F.sum(box_error * box_error, axis=-1))


def _decode_image(pred: np.ndarray, height: float, width: float, anchor_wh: np.ndarray | None,
                  score_threshold: float, iou_threshold: float, from_logits: bool) -> Detections:
    grid = pred.shape[0]
    rows, cols = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
    objectness, class_scores = pred[..., 0], pred[..., 5:]
    if from_logits:
        objectness = 0.5 * (1 + np.tanh(objectness / 2))                   # sigma(z), without overflow
        class_scores = np.exp(class_scores - class_scores.max(axis=-1, keepdims=True))
        class_scores /= class_scores.sum(axis=-1, keepdims=True)
    classes = class_scores.argmax(axis=-1)
    scores = objectness * class_scores.max(axis=-1)
    b_x = (cols[..., None] + pred[..., 1]) * width / grid
    b_y = (rows[..., None] + pred[..., 2]) * height / grid
    if anchor_wh is None:
        b_w, b_h = np.maximum(pred[..., 3], 0) * width, np.maximum(pred[..., 4], 0) * height
    else:
        b_w, b_h = anchor_wh[:, 0] * np.exp(pred[..., 3]), anchor_wh[:, 1] * np.exp(pred[..., 4])
    chosen = scores >= score_threshold
    corners = center_to_corners(np.stack([b_x, b_y, b_w, b_h], axis=-1)[chosen])
    scores, classes = scores[chosen], classes[chosen]
    kept = non_max_suppression(corners, scores, iou_threshold, classes=classes)
    return Detections(corners[kept], scores[kept], classes[kept].astype(np.int64))


def decode_grid_predictions(pred, image_size, anchors=None, score_threshold: float = 0.5,
                            iou_threshold: float = 0.5, from_logits: bool = True) -> Detections | list[Detections]:
    """Detections from grid predictions (S, S, A, 5 + C), or a list of them for (B, S, S, A, 5 + C).

    Each slot gives the centre box b_x = W (j + t_x) / S, b_y = H (i + t_y) / S and b_w = W t_w,
    b_h = H t_h (clipped at 0), or with anchors b_w = a_w e^(t_w), b_h = a_h e^(t_h), scored by
    p_c times its best class probability (sigmoid and softmax of the logits; with
    ``from_logits=False`` ``pred`` holds the probabilities themselves, as targets do). Slots
    scoring at least ``score_threshold`` go through class-aware non-max suppression; the
    detections come as corner boxes in pixels, by decreasing score.
    """
    fn = "decode_grid_predictions"
    height, width = _image_size(image_size, fn)
    anchor_wh = _anchors(anchors, fn)
    array = backend.to_numpy(_values(pred)).astype(np.float64)
    anchor_count = 1 if anchor_wh is None else len(anchor_wh)
    if array.ndim not in (4, 5) or array.shape[-4] != array.shape[-3] or array.shape[-2:-1] != (anchor_count,) \
            or array.shape[-1] < 6:
        raise ShapeError(f"{fn}: pred must be (S, S, A, 5 + C) or (B, S, S, A, 5 + C) with A = {anchor_count} "
                         f"and C >= 1, got shape {array.shape}")
    args = height, width, anchor_wh, score_threshold, iou_threshold, from_logits
    if array.ndim == 4:
        return _decode_image(array, *args)
    return [_decode_image(image, *args) for image in array]
