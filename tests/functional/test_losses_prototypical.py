"""Prototypical networks' loss: prototypes, logits and loss against a torch reference, float64
gradient and second-derivative checks, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

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

SUPPORT_LABELS = np.array([2, 0, 1, 1, 0, 2, 2])
QUERY_LABELS = np.array([0, 2, 1, 1, 2])


def _torch_loss(es, ys, eq, yq, reduction="mean"):
    prototypes = torch.stack([es[ys == k].mean(dim=0) for k in range(int(ys.max()) + 1)])
    logits = -((eq[:, None, :] - prototypes[None, :, :]) ** 2).sum(dim=-1)
    return torch.nn.functional.cross_entropy(logits, yq, reduction=reduction)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_loss_matches_torch(reduction):
    compare_with_torch(lambda es, ys, eq, yq: F.prototypical_loss(es, ys, eq, yq, reduction=reduction),
                       lambda es, ys, eq, yq: _torch_loss(es, ys, eq, yq, reduction),
                       randn(7, 4), SUPPORT_LABELS, randn(5, 4, seed=1), QUERY_LABELS)


def test_prototypes_are_class_means_and_logits_negative_squared_distances():
    es, eq = randn(7, 4), randn(5, 4, seed=1)
    prototypes = F.class_prototypes(es, SUPPORT_LABELS).numpy()
    np.testing.assert_allclose(prototypes[2], es[[0, 5, 6]].mean(axis=0), rtol=1e-6)
    logits = F.prototypical_logits(es, SUPPORT_LABELS, eq).numpy()
    expected = -((eq[:, None, :] - prototypes[None]) ** 2).sum(axis=-1)
    np.testing.assert_allclose(logits, expected, rtol=1e-5)
    assert F.class_prototypes(es, SUPPORT_LABELS, n_classes=3).shape == (3, 4)


def test_gradients_and_second_derivatives():
    fn = lambda es, eq: F.prototypical_loss(es, SUPPORT_LABELS, eq, QUERY_LABELS)  # noqa: E731
    assert check_gradients(fn, randn(7, 3), randn(5, 3, seed=1))
    assert check_second_derivatives(fn, randn(7, 3), randn(5, 3, seed=1))
    compare_double_backward_with_torch(
        lambda es, eq: F.prototypical_loss(es, SUPPORT_LABELS, eq, QUERY_LABELS, reduction="none"),
        lambda es, eq: _torch_loss(es, torch.tensor(SUPPORT_LABELS), eq, torch.tensor(QUERY_LABELS), "none"),
        randn(7, 3), randn(5, 3, seed=1))


def test_errors_are_clear():
    es, eq = randn(7, 4), randn(5, 4, seed=1)
    with pytest.raises(ValueError, match=r"class_prototypes: classes \[1\] have no support embedding"):
        F.class_prototypes(es, np.array([0, 0, 2, 2, 0, 2, 2]))
    with pytest.raises(ValueError, match="prototypical_loss: query label 3 has no prototype; the support labels "
                                         "cover classes 0..2"):
        F.prototypical_loss(es, SUPPORT_LABELS, eq, np.array([0, 1, 2, 3, 0]))
    with pytest.raises(ShapeError, match=r"labels_support must hold one integer class per embedding, shape \(7,\); "
                                         r"got shape \(6,\)"):
        F.prototypical_loss(es, SUPPORT_LABELS[:6], eq, QUERY_LABELS)
    with pytest.raises(ShapeError, match=r"query embeddings have 3 features but the support ones 4"):
        F.prototypical_logits(es, SUPPORT_LABELS, randn(5, 3))
    with pytest.raises(ShapeError, match=r"embeddings_query must be embeddings of shape \(N, D\), got shape \(5,\)"):
        F.prototypical_loss(es, SUPPORT_LABELS, lamina.tensor(randn(5)), QUERY_LABELS)
