"""PointNet: classifier and segmentation forward and every gradient against a torch
re-implementation on the same weights (float64, batch norm in training and in evaluation),
the T-Net regulariser against its formula, invariance of the class scores and equivariance of
the per-point scores under a shuffle of the points, errors naming the model, and learning the
synthetic shapes."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch_point_clouds import TorchPointModels, fit_clouds, perturb

import lamina
from helpers import assert_close, compare_with_torch
from lamina.data import SyntheticShapes
from lamina.errors import ShapeError
from lamina.models import PointNet, PointNetSegmentation, transform_regularizer
from tabular_checks import compare_module

SMALL = {"local_widths": (6, 5), "global_widths": (7, 8), "tnet_widths": (6, 7), "tnet_head_widths": (5,)}


def cloud(batch=4, points=10, seed=1):
    return np.random.default_rng(seed).standard_normal((batch, points, 3))


@pytest.mark.parametrize("training", [True, False])
def test_classifier_matches_torch(f64, training):
    model = PointNet(3, head_widths=(6,), dropout=0.0, **SMALL)
    perturb(model, 0)
    x = cloud()
    if not training:
        model(x)                                              # running statistics move off 0 and 1
        model.eval()
    compare_module(model, model, lambda p, t: TorchPointModels(model, p, training).pointnet(t, 2, 2, 1, (2, 1))[0],
                   [x])


def test_feature_transform_and_its_regulariser_match_torch(f64):
    model = PointNet(2, head_widths=(4,), dropout=0.0, **SMALL)
    perturb(model, 2)

    def ours(t):
        logits, a = model.forward_with_transform(t)
        return logits.sum() * 0 + transform_regularizer(a)

    def theirs(p, t):
        logits, a = TorchPointModels(model, p, True).pointnet(t, 2, 2, 1, (2, 1))
        gap = torch.eye(a.shape[1], dtype=a.dtype) - a @ a.transpose(1, 2)
        return logits.sum() * 0 + (gap ** 2).sum((1, 2)).mean()

    compare_module(model, ours, theirs, [cloud(seed=3)])


def test_regulariser_equals_its_formula():
    a = np.random.default_rng(4).standard_normal((3, 5, 5))
    expected = np.mean([np.sum((np.eye(5) - m @ m.T) ** 2) for m in a])
    assert_close(transform_regularizer(lamina.tensor(a, dtype=np.float64)).numpy(), expected, 1e-12)
    orthogonal = np.linalg.qr(a)[0]
    assert transform_regularizer(lamina.tensor(orthogonal, dtype=np.float64)).item() < 1e-20

    def theirs(t):
        return ((torch.eye(5, dtype=t.dtype) - t @ t.transpose(1, 2)) ** 2).sum((1, 2)).mean()

    compare_with_torch(transform_regularizer, theirs, a, dtype=np.float64)


@pytest.mark.parametrize("training", [True, False])
def test_segmentation_matches_torch(f64, training):
    model = PointNetSegmentation(4, seg_widths=(6, 5), **SMALL)
    perturb(model, 5)
    x = cloud(batch=3, points=8, seed=6)
    if not training:
        model(x)
        model.eval()
    compare_module(model, model,
                   lambda p, t: TorchPointModels(model, p, training).pointnet_segmentation(t, 2, 2, 2, (2, 1)), [x])


def test_scores_are_invariant_and_per_point_scores_equivariant_to_point_order(f64):
    x = cloud(batch=2, points=12, seed=7)
    order = np.random.default_rng(8).permutation(12)
    classifier = PointNet(3, head_widths=(6,), **SMALL)
    segmenter = PointNetSegmentation(4, seg_widths=(5,), **SMALL)
    for model in (classifier, segmenter):
        perturb(model, 9)
        model(x)
        model.eval()
    with lamina.no_grad():
        assert_close(classifier(x[:, order]).numpy(), classifier(x).numpy(), 1e-12, "shuffled scores")
        assert_close(segmenter(x[:, order]).numpy(), segmenter(x).numpy()[:, order], 1e-12, "shuffled points")
    assert segmenter(x).shape == (2, 12, 4)


def test_errors_name_the_model():
    model = PointNet(3, **SMALL)
    with pytest.raises(ShapeError, match=r"PointNet.*\(2, 5, 4\).*points \(batch, points, 3\)"):
        model(np.zeros((2, 5, 4)))
    with pytest.raises(ValueError, match="PointNet: num_classes must be a positive int"):
        PointNet(0)
    with pytest.raises(ShapeError, match=r"transform_regularizer: .*\(2, 3, 4\)"):
        transform_regularizer(np.zeros((2, 3, 4)))


def regularised_loss(regulariser: float):
    """Cross-entropy plus ``regulariser`` times the feature transform's orthogonality penalty."""
    def loss_fn(model, xb, yb):
        logits, a = model.forward_with_transform(xb)
        loss = lamina.functional.cross_entropy(logits, yb)
        return loss if a is None or not regulariser else loss + regulariser * transform_regularizer(a)
    return loss_fn


@pytest.mark.parametrize("tnets", [False, True])
def test_learns_synthetic_shapes(tnets):
    """Five shapes, 128 points each, rotated about z, scaled and jittered: 40 clouds per class to
    train on, 20 unseen ones per class to test."""
    x, y = SyntheticShapes(40, 128, seed=0).arrays()
    xt, yt = SyntheticShapes(20, 128, seed=1).arrays()
    model = PointNet(5, input_transform=tnets, feature_transform=tnets, local_widths=(32, 32) if tnets else (32,),
                     global_widths=(64, 128), head_widths=(64,), tnet_widths=(32, 64), tnet_head_widths=(32,),
                     dropout=0.0)
    start = time.perf_counter()
    fit_clouds(model, x, y, epochs=10 if tnets else 8, lr=1e-3 if tnets else 3e-3, loss_fn=regularised_loss(1e-3))
    seconds = time.perf_counter() - start
    with lamina.no_grad():
        accuracy = (model(xt).numpy().argmax(axis=1) == yt).mean()
    print(f"PointNet (T-Nets {tnets}): test accuracy {accuracy:.3f} after {seconds:.1f} s")
    assert accuracy > 0.85
