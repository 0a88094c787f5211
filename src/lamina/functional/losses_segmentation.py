"""Overlap losses for semantic segmentation, on per-pixel predictions with the class axis last.

``y_pred`` is (N, H, W, C) (or any (..., C)): logits (``from_logits=True``) or probabilities.
``y_true`` is either integer labels of shape y_pred.shape[:-1] (multi-class: softmax over
the C classes, labels one-hot encoded) or a mask of y_pred's shape with values in [0, 1]
(binary and multi-label: a sigmoid per channel; C = 1 is the binary case). Pixels labelled
``ignore_index`` count for nothing.

Every pixel of the batch is pooled, then for each class c, with p the predicted
probabilities and t the targets of class c:

    TP_c = sum p t,   FP_c = sum p (1 - t),   FN_c = sum (1 - p) t

    Dice_c    = (2 TP_c + s) / (2 TP_c + FP_c + FN_c + s)         dice loss 1 - Dice_c
    Jaccard_c = (TP_c + s) / (TP_c + FP_c + FN_c + s)             jaccard loss 1 - Jaccard_c
    Tversky_c = (TP_c + s) / (TP_c + alpha FP_c + beta FN_c + s)  tversky loss 1 - Tversky_c

(s = ``smooth``; each denominator is kept >= ``eps``). As segmentation_models_pytorch does,
a class absent from the targets of the batch has loss 0, and ``reduction='mean'`` averages
the C per-class losses ('sum' adds them, 'none' returns them). The focal Tversky loss
(Abraham & Khan 2019) raises each class's loss to the power ``gamma`` before the reduction.

:func:`lovasz_softmax_loss` (Berman, Rannen Triki & Blaschko 2018) is the Lovasz extension
of the Jaccard loss: per class, the pixel errors e_i = |t_i - p_i| sorted in decreasing
order, dotted with the Lovasz gradient g of the sorted targets,

    g_1 = J_1,  g_i = J_i - J_(i-1),  J_i = 1 - (G - sum_(j<=i) t_j) / (G + sum_(j<=i) (1 - t_j))

(G = sum t). The sort is a permutation (a constant), so the loss is the composite
sum_i g_i e_(pi(i)) and its gradient is the paper's.
"""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional import reduce as R
from lamina.functional.activation import sigmoid, softmax
from lamina.functional.arithmetic import power
from lamina.functional.elementwise import abs as absolute
from lamina.functional.elementwise import clip
from lamina.functional.loss import _check_reduction
from lamina.functional.shape import reshape

__all__ = ["dice_loss", "focal_tversky_loss", "jaccard_loss", "lovasz_softmax_loss", "tversky_loss"]

EPS = 1e-7


def _pixels(y_pred, y_true, from_logits: bool, ignore_index: int | None, fn: str):
    """(p, t, mask): probabilities and targets as (pixels, C) with ignored values zeroed (p a
    tensor, t an array), and the mask of kept values ((pixels, 1) for labels, (pixels, C) for masks)."""
    xp = backend.xp
    y_pred = y_pred if isinstance(y_pred, Tensor) else Tensor(y_pred)
    if y_pred.ndim < 2:
        raise ShapeError(f"{fn}: y_pred must be (..., C) with the classes last, got shape {tuple(y_pred.shape)}")
    classes = y_pred.shape[-1]
    target = backend.xp.asarray(y_true.data if isinstance(y_true, Tensor) else y_true)
    if target.shape == y_pred.shape[:-1] and target.dtype.kind in "iu":
        labels = target.reshape(-1)
        kept = labels != ignore_index if ignore_index is not None else xp.ones(labels.shape, dtype=bool)
        if bool(((labels[kept] < 0) | (labels[kept] >= classes)).any()):
            raise ValueError(f"{fn}: labels must lie in [0, {classes}) for y_pred of shape {tuple(y_pred.shape)}"
                             + (f" (or equal ignore_index={ignore_index})" if ignore_index is not None else ""))
        t = (labels[:, None] == xp.arange(classes)[None, :]) & kept[:, None]
        kept = kept[:, None]
        probs = softmax(y_pred, axis=-1) if from_logits else y_pred
    elif target.shape == y_pred.shape:
        flat = target.reshape(-1, classes)
        kept = flat != ignore_index if ignore_index is not None else xp.ones(flat.shape, dtype=bool)
        t = xp.where(kept, flat, 0)
        probs = sigmoid(y_pred) if from_logits else y_pred
    else:
        raise ShapeError(f"{fn}: y_true must be integer labels of shape {tuple(y_pred.shape[:-1])} or a mask of "
                         f"y_pred's shape {tuple(y_pred.shape)}, got {target.dtype} of shape {target.shape}")
    mask = kept.astype(y_pred.dtype)
    p = reshape(probs, (-1, classes)) * mask
    return p, t.astype(y_pred.dtype), mask


def _counts(p: Tensor, t):
    """(TP, FP, FN) per class, pooled over the pixels: sum p t, sum p (1 - t), sum (1 - p) t."""
    tp = R.sum(p * t, axis=0)
    return tp, R.sum(p, axis=0) - tp, t.sum(axis=0) - tp


def _reduce_classes(losses: Tensor, t, reduction: str) -> Tensor:
    """Per-class losses with the classes absent from the targets set to 0, then reduced."""
    losses = losses * (t.sum(axis=0) > 0).astype(losses.dtype)
    if reduction == "mean":
        return R.mean(losses)
    if reduction == "sum":
        return R.sum(losses)
    return losses


def _check(reduction: str, smooth: float, fn: str) -> None:
    _check_reduction(reduction, fn)
    if smooth < 0:
        raise ValueError(f"{fn}: smooth must be >= 0, got {smooth!r}")


def tversky_loss(y_pred, y_true, alpha: float = 0.5, beta: float = 0.5, smooth: float = 1.0,
                 from_logits: bool = True, ignore_index: int | None = None, reduction: str = "mean",
                 eps: float = EPS) -> Tensor:
    """1 - (TP + s) / (TP + alpha FP + beta FN + s) per class (module docstring); alpha = beta = 0.5
    is the Dice loss, alpha = beta = 1 the Jaccard loss; beta > alpha weighs missed pixels more."""
    fn = "tversky_loss"
    _check(reduction, smooth, fn)
    if alpha < 0 or beta < 0:
        raise ValueError(f"{fn}: alpha and beta must be >= 0, got alpha={alpha!r}, beta={beta!r}")
    return _tversky(y_pred, y_true, alpha, beta, 1.0, smooth, from_logits, ignore_index, reduction, eps, fn)


def _tversky(y_pred, y_true, alpha, beta, gamma, smooth, from_logits, ignore_index, reduction, eps, fn):
    p, t, _ = _pixels(y_pred, y_true, from_logits, ignore_index, fn)
    tp, fp, fn_ = _counts(p, t)
    score = (tp + smooth) / clip(tp + fp * alpha + fn_ * beta + smooth, eps)
    losses = 1.0 - score
    if gamma != 1.0:
        losses = power(clip(losses, 0.0), gamma)
    return _reduce_classes(losses, t, reduction)


def focal_tversky_loss(y_pred, y_true, alpha: float = 0.5, beta: float = 0.5, gamma: float = 0.75,
                       smooth: float = 1.0, from_logits: bool = True, ignore_index: int | None = None,
                       reduction: str = "mean", eps: float = EPS) -> Tensor:
    """(1 - Tversky_c) ** gamma per class (Abraham & Khan 2019 use gamma = 1 / (4/3) = 0.75: gamma < 1
    makes poorly segmented classes weigh more). segmentation_models_pytorch raises the mean over
    the classes instead; here each class's loss is raised, so ``reduction='none'`` stays per class."""
    fn = "focal_tversky_loss"
    _check(reduction, smooth, fn)
    if gamma <= 0:
        raise ValueError(f"{fn}: gamma must be > 0, got {gamma!r}")
    return _tversky(y_pred, y_true, alpha, beta, gamma, smooth, from_logits, ignore_index, reduction, eps, fn)


def dice_loss(y_pred, y_true, smooth: float = 1.0, from_logits: bool = True, ignore_index: int | None = None,
              reduction: str = "mean", eps: float = EPS) -> Tensor:
    """Soft Dice loss 1 - (2 TP + s) / (2 TP + FP + FN + s) per class (module docstring): multi-class
    with integer labels (softmax), binary or multi-label with a mask of y_pred's shape (sigmoid)."""
    fn = "dice_loss"
    _check(reduction, smooth, fn)
    p, t, _ = _pixels(y_pred, y_true, from_logits, ignore_index, fn)
    tp = R.sum(p * t, axis=0)
    cardinality = R.sum(p, axis=0) + t.sum(axis=0)
    losses = 1.0 - (tp * 2.0 + smooth) / clip(cardinality + smooth, eps)
    return _reduce_classes(losses, t, reduction)


def jaccard_loss(y_pred, y_true, smooth: float = 1.0, from_logits: bool = True, ignore_index: int | None = None,
                 reduction: str = "mean", eps: float = EPS) -> Tensor:
    """Soft Jaccard (IoU) loss 1 - (TP + s) / (TP + FP + FN + s) per class (module docstring)."""
    fn = "jaccard_loss"
    _check(reduction, smooth, fn)
    p, t, _ = _pixels(y_pred, y_true, from_logits, ignore_index, fn)
    tp = R.sum(p * t, axis=0)
    union = R.sum(p, axis=0) + t.sum(axis=0) - tp
    losses = 1.0 - (tp + smooth) / clip(union + smooth, eps)
    return _reduce_classes(losses, t, reduction)


def lovasz_gradient(sorted_targets):
    """The Lovasz gradient g of targets t sorted by decreasing error (module docstring): the
    increments of the Jaccard loss J_i as the pixels are added one by one."""
    xp = backend.xp
    total = sorted_targets.sum()
    intersection = total - xp.cumsum(sorted_targets)
    union = total + xp.cumsum(1.0 - sorted_targets)
    jaccard = 1.0 - intersection / union
    jaccard[1:] = jaccard[1:] - jaccard[:-1].copy()
    return jaccard


def _lovasz_flat(p: Tensor, t, kept, classes: str) -> Tensor:
    """The mean over the classes (all, or those present in t) of sum_i g_i e_(pi(i))."""
    xp = backend.xp
    rows = xp.flatnonzero(kept)
    p, t = p[rows], t[rows]
    terms = []
    for c in range(t.shape[1]):
        fg = t[:, c]
        if classes == "present" and not fg.any():
            continue
        errors = absolute(p[:, c] - fg)
        order = xp.argsort(-errors.data, kind="stable")
        terms.append(R.sum(errors[order] * lovasz_gradient(fg[order])))
    if not terms:
        return R.sum(p) * 0.0
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total / float(len(terms))


def lovasz_softmax_loss(y_pred, y_true, from_logits: bool = True, ignore_index: int | None = None,
                        classes: str = "present", per_image: bool = False) -> Tensor:
    """The Lovasz-Softmax loss (module docstring) for integer labels of shape y_pred.shape[:-1]:
    the mean over the classes (``classes='present'``: those in the labels; 'all': every class)
    of the Lovasz extension of 1 - IoU_c on the softmax probabilities. With ``per_image`` the
    loss is computed for each image (first axis) and averaged; otherwise over the whole batch."""
    fn = "lovasz_softmax_loss"
    if classes not in ("present", "all"):
        raise ValueError(f"{fn}: classes must be 'present' or 'all', got {classes!r}")
    y_pred = y_pred if isinstance(y_pred, Tensor) else Tensor(y_pred)
    labels = backend.xp.asarray(y_true.data if isinstance(y_true, Tensor) else y_true)
    if labels.dtype.kind not in "iu" or labels.shape != y_pred.shape[:-1]:
        raise ShapeError(f"{fn}: y_true must be integer labels of shape {tuple(y_pred.shape[:-1])}, got "
                         f"{labels.dtype} of shape {labels.shape}")
    if not per_image:
        p, t, mask = _pixels(y_pred, labels, from_logits, ignore_index, fn)
        return _lovasz_flat(p, t, mask[:, 0] > 0, classes)
    losses = [lovasz_softmax_loss(y_pred[i:i + 1], labels[i:i + 1], from_logits, ignore_index, classes)
              for i in range(y_pred.shape[0])]
    total = losses[0]
    for loss in losses[1:]:
        total = total + loss
    return total / float(len(losses))
