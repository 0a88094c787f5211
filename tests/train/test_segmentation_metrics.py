"""Segmentation metrics against hand counts and torch's bincount, by name in the Trainer, and a
small U-Net trained with Dice + cross-entropy on synthetic shapes."""

import numpy as np
import pytest
import torch

import lamina
from lamina import functional as F
from lamina import models, optim
from lamina.train import (
    MeanIoU,
    Trainer,
    dice_per_class,
    iou_per_class,
    mean_class_accuracy,
    mean_iou,
    pixel_accuracy,
    pixel_confusion_matrix,
)
from lamina.train.metrics import get_metric

IGNORE = 255


def test_confusion_matrix_and_metrics_by_hand():
    y_true = np.array([[0, 0, 1, 1], [2, 2, IGNORE, 1]])
    y_pred = np.array([[0, 1, 1, 1], [2, 0, 2, 1]])
    m = pixel_confusion_matrix(y_true, y_pred, 4, ignore_index=IGNORE)
    np.testing.assert_array_equal(m[:3, :3], [[1, 1, 0], [0, 3, 0], [1, 0, 1]])
    assert m.sum() == 7 and m[3].sum() == m[:, 3].sum() == 0
    # class 0: TP 1, FP 1, FN 1; class 1: TP 3, FP 1, FN 0; class 2: TP 1, FP 0, FN 1; class 3 absent
    np.testing.assert_allclose(iou_per_class(m), [1 / 3, 3 / 4, 1 / 2, np.nan])
    np.testing.assert_allclose(dice_per_class(m), [2 / 4, 6 / 7, 2 / 3, np.nan])
    assert mean_iou(m) == pytest.approx((1 / 3 + 3 / 4 + 1 / 2) / 3)
    assert pixel_accuracy(m) == pytest.approx(5 / 7)
    assert mean_class_accuracy(m) == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)


def test_confusion_matrix_matches_torch_counts():
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 5, (3, 7, 6)), rng.integers(0, 5, (3, 7, 6))
    y_true[0, :2] = IGNORE
    kept = torch.tensor(y_true != IGNORE)
    t, p = torch.tensor(y_true)[kept], torch.tensor(y_pred)[kept]
    expected = torch.bincount(t * 5 + p, minlength=25).reshape(5, 5).numpy()
    np.testing.assert_array_equal(pixel_confusion_matrix(y_true, y_pred, 5, IGNORE), expected)
    with pytest.raises(ValueError, match=r"pixel_confusion_matrix: labels must lie in \[0, 5\)"):
        pixel_confusion_matrix(y_true, y_pred, 5)


def test_epoch_metric_adds_up_the_matrix_over_batches():
    rng = np.random.default_rng(1)
    scores, labels = rng.standard_normal((6, 4, 4, 3)), rng.integers(0, 3, (6, 4, 4))
    metric = MeanIoU(ignore_index=IGNORE)
    metric.update(scores[:2], labels[:2])
    metric.update(scores[2:], labels[2:])
    whole = mean_iou(pixel_confusion_matrix(labels, scores.argmax(-1), 3))
    assert metric.result() == pytest.approx(whole)
    names = [get_metric(n)[0] for n in ("mean_iou", "pixel_accuracy", "mean_class_accuracy", "dice_score")]
    assert names == ["mean_iou", "pixel_accuracy", "mean_class_accuracy", "dice_score"]


def shapes(n, size=16, seed=0):
    """Noisy images with a bright square (class 1) and a dark disk (class 2) on background (0)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = rng.normal(0.0, 0.3, (n, size, size, 1)).astype(np.float32)
    masks = np.zeros((n, size, size), dtype=np.int64)
    for i in range(n):
        r, c, s = rng.integers(0, size - 6), rng.integers(0, size - 6), rng.integers(4, 7)
        masks[i, r:r + s, c:c + s] = 1
        cy, cx, radius = rng.integers(3, size - 3), rng.integers(3, size - 3), rng.uniform(2.0, 3.5)
        masks[i][(yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2] = 2
    images[..., 0] += np.where(masks == 1, 1.0, np.where(masks == 2, -1.0, 0.0))
    return images, masks


def dice_plus_cross_entropy(scores, labels):
    return F.dice_loss(scores, labels) + F.categorical_cross_entropy(scores, labels, from_logits=True)


def test_small_unet_learns_shapes_with_dice_and_cross_entropy():
    (xt, yt), (xv, yv) = shapes(96, seed=0), shapes(32, seed=1)
    lamina.manual_seed(0)
    model = models.unet(input_shape=(16, 16, 1), num_classes=3, depth=2, base_filters=8)
    trainer = Trainer(model, dice_plus_cross_entropy, optim.Adam(model, lr=1e-2),
                      metrics=("mean_iou", "pixel_accuracy"), verbose=0)
    before = trainer.evaluate((xv, yv))["mean_iou"]
    trainer.fit((xt, yt), epochs=6, batch_size=16, seed=0)
    scores = trainer.evaluate((xv, yv))
    # the trivial baseline (every pixel background) has mean IoU = background's share / 3
    trivial = mean_iou(pixel_confusion_matrix(yv, np.zeros_like(yv), 3))
    assert trivial < 0.3
    assert scores["mean_iou"] > 0.7 and scores["mean_iou"] > before + 0.3, (before, scores)
