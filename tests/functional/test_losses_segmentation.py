"""Segmentation losses against PyTorch re-writes of segmentation_models_pytorch's definitions
(NCHW there, NHWC here), float64 values and gradients, plus gradient and second-derivative checks."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
from helpers import (
    check_gradients,
    check_second_derivatives,
    compare_double_backward_with_torch,
    compare_with_torch,
    randn,
)
from lamina import functional as F
from lamina.errors import ShapeError

IGNORE = 255


def labels_with_holes(shape, classes, seed=1, absent=None):
    y = np.random.default_rng(seed).integers(0, classes, shape)
    if absent is not None:
        y[y == absent] = (absent + 1) % classes
    y.reshape(-1)[::7] = IGNORE
    return y


# -- torch references (segmentation_models_pytorch's formulas) -----------------------------


def torch_pixels(logits_nhwc, y, ignore_index, from_logits=True):
    """(p, t) as (N, C, H*W), ignored values zeroed: smp's DiceLoss preamble."""
    x = logits_nhwc.permute(0, 3, 1, 2)
    n, c = x.shape[:2]
    y = torch.as_tensor(y)
    if y.dtype in (torch.int64, torch.int32):
        p = (x.log_softmax(dim=1).exp() if from_logits else x).reshape(n, c, -1)
        y = y.reshape(n, -1)
        mask = (y != ignore_index) if ignore_index is not None else torch.ones_like(y, dtype=torch.bool)
        p = p * mask.unsqueeze(1)
        t = TF.one_hot((y * mask).long(), c).permute(0, 2, 1) * mask.unsqueeze(1)
    else:
        p = (torch.sigmoid(x) if from_logits else x).reshape(n, c, -1)
        t = y.permute(0, 3, 1, 2).reshape(n, c, -1)
        if ignore_index is not None:
            mask = t != ignore_index
            p, t = p * mask, t * mask
    return p, t.type_as(p)


def torch_overlap(score, logits, y, ignore_index=None, reduction="mean", gamma=1.0, smooth=1.0, eps=1e-7,
                  from_logits=True):
    p, t = torch_pixels(logits, y, ignore_index, from_logits)
    dims = (0, 2)
    tp = (p * t).sum(dims)
    fp = (p * (1 - t)).sum(dims)
    fn = ((1 - p) * t).sum(dims)
    loss = (1 - score(tp, fp, fn, smooth, eps)) ** gamma
    loss = loss * (t.sum(dims) > 0).to(loss.dtype)
    return {"mean": loss.mean(), "sum": loss.sum(), "none": loss}[reduction]


def dice_score(tp, fp, fn, smooth, eps):
    cardinality = 2 * tp + fp + fn                   # smp: sum(p + t)
    return (2 * tp + smooth) / (cardinality + smooth).clamp_min(eps)


def jaccard_score(tp, fp, fn, smooth, eps):
    return (tp + smooth) / (tp + fp + fn + smooth).clamp_min(eps)


def tversky_score(alpha, beta):
    return lambda tp, fp, fn, smooth, eps: (tp + smooth) / (tp + alpha * fp + beta * fn + smooth).clamp_min(eps)


def torch_lovasz_grad(gt_sorted):
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    jaccard[1:] = jaccard[1:] - jaccard[:-1].clone()
    return jaccard


def torch_lovasz_flat(probas, labels, classes):
    losses = []
    for c in range(probas.shape[1]):
        fg = (labels == c).type_as(probas)
        if classes == "present" and fg.sum() == 0:
            continue
        errors = (fg - probas[:, c]).abs()
        errors_sorted, perm = torch.sort(errors, 0, descending=True)
        losses.append(torch.dot(errors_sorted, torch_lovasz_grad(fg[perm])))
    return torch.stack(losses).mean()


def torch_lovasz(logits_nhwc, y, ignore_index=None, classes="present", per_image=False):
    probas = logits_nhwc.softmax(dim=-1)
    y = torch.as_tensor(y)
    pairs = [(probas[i:i + 1], y[i:i + 1]) for i in range(len(y))] if per_image else [(probas, y)]
    losses = []
    for p, lab in pairs:
        p, lab = p.reshape(-1, p.shape[-1]), lab.reshape(-1)
        if ignore_index is not None:
            keep = lab != ignore_index
            p, lab = p[keep], lab[keep]
        losses.append(torch_lovasz_flat(p, lab, classes))
    return torch.stack(losses).mean()


# -- the losses against torch --------------------------------------------------------------

OVERLAP = {
    "dice": (lambda z, y, **k: F.dice_loss(z, y, **k), dice_score),
    "jaccard": (lambda z, y, **k: F.jaccard_loss(z, y, **k), jaccard_score),
    "tversky": (lambda z, y, **k: F.tversky_loss(z, y, alpha=0.3, beta=0.7, **k), tversky_score(0.3, 0.7)),
}


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name", list(OVERLAP))
def test_multiclass_overlap_losses_match_torch(name, reduction):
    ours, score = OVERLAP[name]
    z, y = randn(2, 4, 5, 4, scale=2), labels_with_holes((2, 4, 5), 4, absent=2)   # class 2 absent: loss 0
    out = compare_with_torch(lambda a: ours(a, y, ignore_index=IGNORE, reduction=reduction),
                             lambda a: torch_overlap(score, a, y, IGNORE, reduction), z, dtype=np.float64)
    if reduction == "none":
        assert out[0].shape == (4,) and out[0].numpy()[2] == 0
    assert check_gradients(lambda a: ours(a, y, ignore_index=IGNORE, reduction=reduction), z)


@pytest.mark.parametrize("channels", [1, 3])                  # binary, multi-label
@pytest.mark.parametrize("name", list(OVERLAP))
def test_binary_and_multilabel_masks_match_torch(name, channels):
    ours, score = OVERLAP[name]
    z = randn(2, 3, 4, channels, seed=channels)
    mask = (np.random.default_rng(3).random((2, 3, 4, channels)) > 0.5).astype(np.float64)
    mask[0, 0, 0, 0] = IGNORE
    compare_with_torch(lambda a: ours(a, mask, ignore_index=IGNORE, smooth=0.0),
                       lambda a: torch_overlap(score, a, torch.tensor(mask), IGNORE, smooth=0.0),
                       z, dtype=np.float64)
    mask[0, 0, 0, 0] = 1.0
    assert check_gradients(lambda a: ours(a, mask, smooth=0.0), z)


def test_dice_on_probabilities_and_float32():
    z, y = randn(2, 3, 3, 3), labels_with_holes((2, 3, 3), 3)
    probs = torch.softmax(torch.tensor(z), dim=-1).numpy()
    compare_with_torch(lambda p: F.dice_loss(p, y, from_logits=False, ignore_index=IGNORE),
                       lambda p: torch_overlap(dice_score, p, y, IGNORE, from_logits=False), probs, dtype=np.float64)
    compare_with_torch(lambda a: F.dice_loss(a, y, ignore_index=IGNORE),
                       lambda a: torch_overlap(dice_score, a, y, IGNORE), z, dtype=np.float32)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_focal_tversky_matches_torch(reduction):
    z, y = randn(2, 4, 4, 3, scale=2, seed=5), labels_with_holes((2, 4, 4), 3, seed=6)
    loss = lambda a: F.focal_tversky_loss(a, y, alpha=0.7, beta=0.3, gamma=0.75, ignore_index=IGNORE,  # noqa: E731
                                          reduction=reduction)
    compare_with_torch(loss, lambda a: torch_overlap(tversky_score(0.7, 0.3), a, y, IGNORE, reduction, gamma=0.75),
                       z, dtype=np.float64)
    assert check_gradients(loss, z)


def test_special_cases_of_tversky():
    z, y = randn(2, 3, 3, 3, seed=7), labels_with_holes((2, 3, 3), 3, seed=8)
    a = lamina.tensor(z, dtype=np.float64)
    k = {"ignore_index": IGNORE, "smooth": 0.0}             # Dice smooths 2 TP, Tversky TP
    assert F.tversky_loss(a, y, 0.5, 0.5, **k).item() == pytest.approx(F.dice_loss(a, y, **k).item(), rel=1e-12)
    assert F.tversky_loss(a, y, 1.0, 1.0, **k).item() == pytest.approx(F.jaccard_loss(a, y, **k).item(), rel=1e-12)
    perfect = np.where(np.arange(3) == y[..., None], 30.0, -30.0)
    assert F.dice_loss(lamina.tensor(perfect), y, ignore_index=IGNORE).item() == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("classes, per_image", [("present", False), ("all", False), ("present", True)])
def test_lovasz_softmax_matches_torch(classes, per_image):
    z, y = randn(2, 4, 4, 4, scale=2, seed=9), labels_with_holes((2, 4, 4), 4, seed=10, absent=3)
    loss = lambda a: F.lovasz_softmax_loss(a, y, ignore_index=IGNORE, classes=classes,  # noqa: E731
                                           per_image=per_image)
    compare_with_torch(loss, lambda a: torch_lovasz(a, y, IGNORE, classes, per_image), z, dtype=np.float64)
    compare_with_torch(loss, lambda a: torch_lovasz(a, y, IGNORE, classes, per_image), z, dtype=np.float32)
    assert check_gradients(loss, z)


def test_lovasz_gradient_formula():
    from lamina.functional.losses_segmentation import lovasz_gradient
    t = np.array([1.0, 0.0, 1.0, 1.0, 0.0])
    g = lovasz_gradient(t.copy())
    # J_i = 1 - (G - cumsum t) / (G + cumsum (1 - t)), G = 3: its increments, and they add up to J_n = 1
    jaccard = 1 - (3 - np.cumsum(t)) / (3 + np.cumsum(1 - t))
    np.testing.assert_allclose(g, np.diff(jaccard, prepend=0.0))
    assert g.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["dice", "jaccard", "tversky", "lovasz"])
def test_second_derivatives(name):
    z, y = randn(1, 3, 3, 3, seed=11), labels_with_holes((1, 3, 3), 3, seed=12)
    if name == "lovasz":
        ours = lambda a: F.lovasz_softmax_loss(a, y, ignore_index=IGNORE)  # noqa: E731
        theirs = lambda a: torch_lovasz(a, y, IGNORE)  # noqa: E731
    else:
        loss, score = OVERLAP[name]
        ours = lambda a: loss(a, y, ignore_index=IGNORE)  # noqa: E731
        theirs = lambda a: torch_overlap(score, a, y, IGNORE)  # noqa: E731
    compare_double_backward_with_torch(ours, theirs, z)
    assert check_second_derivatives(ours, z)


def test_errors_name_the_loss_and_shapes():
    z = lamina.tensor(randn(2, 3, 3, 4))
    with pytest.raises(ShapeError, match=r"dice_loss: y_true must be integer labels of shape \(2, 3, 3\)"):
        F.dice_loss(z, np.zeros((2, 3, 4), dtype=np.int64))
    with pytest.raises(ValueError, match=r"jaccard_loss: labels must lie in \[0, 4\)"):
        F.jaccard_loss(z, np.full((2, 3, 3), 4))
    with pytest.raises(ValueError, match="tversky_loss: alpha and beta must be >= 0"):
        F.tversky_loss(z, np.zeros((2, 3, 3), dtype=np.int64), alpha=-1.0)
    with pytest.raises(ShapeError, match="lovasz_softmax_loss: y_true must be integer labels"):
        F.lovasz_softmax_loss(z, np.zeros((2, 3, 3, 4)))


# -- cross-entropy already covers per-pixel logits ----------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_on_pixel_logits_with_ignore_index(reduction):
    z, y = randn(2, 3, 4, 5, scale=2, seed=13), labels_with_holes((2, 3, 4), 5, seed=14)
    out = compare_with_torch(
        lambda a: F.categorical_cross_entropy(a, y, from_logits=True, ignore_index=IGNORE, reduction=reduction),
        lambda a: TF.cross_entropy(a.permute(0, 3, 1, 2), torch.tensor(y), ignore_index=IGNORE, reduction=reduction),
        z, dtype=np.float64)
    if reduction == "none":
        assert out[0].shape == (2, 3, 4) and (out[0].numpy()[y == IGNORE] == 0).all()
