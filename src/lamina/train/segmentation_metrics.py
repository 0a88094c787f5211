"""Semantic segmentation metrics from a per-pixel confusion matrix (NumPy).

The matrix M (C x C) counts pixels: M[i, j] = pixels of true class i predicted as j; pixels
labelled ``ignore_index`` are left out. With TP_c = M[c, c], FP_c = sum_i M[i, c] - TP_c and
FN_c = sum_j M[c, j] - TP_c:

    IoU_c  = TP_c / (TP_c + FP_c + FN_c)          mean IoU: the mean over the classes seen
    Dice_c = 2 TP_c / (2 TP_c + FP_c + FN_c)      (in the labels or the predictions)
    pixel accuracy = sum_c TP_c / sum M,   mean class accuracy = mean_c TP_c / (TP_c + FN_c)

A class absent from both labels and predictions has no IoU or Dice (NaN, left out of the
means); one absent from the labels has no class accuracy. The epoch metrics add up the
matrix over the batches, so the result is the metric of the whole epoch's pixels (not a mean
of per-batch values): ``Trainer(metrics=("mean_iou", "pixel_accuracy"))``.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina.errors import ShapeError
from lamina.train.epoch_metric import EpochMetric

__all__ = [
    "DiceScore", "MeanClassAccuracy", "MeanIoU", "PixelAccuracy", "SegmentationMetric", "dice_per_class",
    "iou_per_class", "mean_class_accuracy", "mean_iou", "pixel_accuracy", "pixel_confusion_matrix",
]


def pixel_confusion_matrix(y_true, y_pred, num_classes: int, ignore_index: int | None = None) -> np.ndarray:
    """The (num_classes, num_classes) int64 counts M[true, predicted] over all pixels of two label
    maps of the same shape, leaving out the pixels whose label is ``ignore_index``."""
    y_true, y_pred = np.asarray(backend.to_numpy(y_true)), np.asarray(backend.to_numpy(y_pred))
    if y_true.shape != y_pred.shape:
        raise ShapeError(f"pixel_confusion_matrix: labels of shape {y_true.shape} and predictions of shape "
                         f"{y_pred.shape}; expected the same shape")
    y_true, y_pred = y_true.reshape(-1).astype(np.int64), y_pred.reshape(-1).astype(np.int64)
    if ignore_index is not None:
        kept = y_true != ignore_index
        y_true, y_pred = y_true[kept], y_pred[kept]
    for what, values in (("labels", y_true), ("predictions", y_pred)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"pixel_confusion_matrix: {what} must lie in [0, {num_classes}), got values in "
                             f"[{values.min()}, {values.max()}]")
    flat = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def _parts(matrix):
    m = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(m)
    return tp, m.sum(axis=0) - tp, m.sum(axis=1) - tp


def _divide(a, b) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def iou_per_class(matrix) -> np.ndarray:
    """TP / (TP + FP + FN) for each class; NaN for a class neither labelled nor predicted."""
    tp, fp, fn = _parts(matrix)
    return _divide(tp, tp + fp + fn)


def dice_per_class(matrix) -> np.ndarray:
    """2 TP / (2 TP + FP + FN) for each class (the F1 score of its pixels); NaN when absent."""
    tp, fp, fn = _parts(matrix)
    return _divide(2 * tp, 2 * tp + fp + fn)


def _nanmean(values) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def mean_iou(matrix) -> float:
    """The mean of the per-class IoU over the classes present (labelled or predicted)."""
    return _nanmean(iou_per_class(matrix))


def pixel_accuracy(matrix) -> float:
    """The fraction of (not ignored) pixels labelled correctly."""
    m = np.asarray(matrix, dtype=np.float64)
    return float(np.trace(m) / m.sum()) if m.sum() else float("nan")


def mean_class_accuracy(matrix) -> float:
    """The mean over the labelled classes of each class's pixel recall TP / (TP + FN)."""
    tp, _, fn = _parts(matrix)
    return _nanmean(_divide(tp, tp + fn))


class SegmentationMetric(EpochMetric):
    """A metric of the confusion matrix added up over an epoch. ``update(scores, labels)`` takes
    per-pixel scores (N, H, W, C) (the prediction is their argmax) and integer labels (N, H, W)
    or one-hot labels (N, H, W, C); it returns the batch's value."""

    name = "segmentation_metric"

    def __init__(self, num_classes: int | None = None, ignore_index: int | None = None):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.reset()

    def reset(self) -> None:
        self.matrix = None

    def score(self, matrix) -> float:
        raise NotImplementedError

    def update(self, scores, y_true) -> float:
        scores = np.asarray(backend.to_numpy(scores))
        labels = np.asarray(backend.to_numpy(y_true))
        classes = self.num_classes or scores.shape[-1]
        if labels.shape == scores.shape and classes > 1:
            labels = labels.argmax(axis=-1)
        predicted = scores.argmax(axis=-1) if classes > 1 else (scores[..., 0] > 0).astype(np.int64)
        if classes == 1:
            classes = 2                                 # one logit per pixel: background and foreground
            labels = labels.reshape(predicted.shape)
        batch = pixel_confusion_matrix(labels, predicted, classes, self.ignore_index)
        self.matrix = batch if self.matrix is None else self.matrix + batch
        return self.score(batch)

    def result(self) -> float:
        return self.score(self.matrix) if self.matrix is not None else float("nan")


class MeanIoU(SegmentationMetric):
    name = "mean_iou"

    def score(self, matrix) -> float:
        return mean_iou(matrix)


class PixelAccuracy(SegmentationMetric):
    name = "pixel_accuracy"

    def score(self, matrix) -> float:
        return pixel_accuracy(matrix)


class MeanClassAccuracy(SegmentationMetric):
    name = "mean_class_accuracy"

    def score(self, matrix) -> float:
        return mean_class_accuracy(matrix)


class DiceScore(SegmentationMetric):
    """The mean over the classes present of the per-class Dice score."""

    name = "dice_score"

    def score(self, matrix) -> float:
        return _nanmean(dice_per_class(matrix))
