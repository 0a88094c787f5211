"""Ops whose torch counterparts clamp (a value on the bound keeps its whole gradient) or use a
strict hinge (no gradient at 0) keep those gradients exactly at the tie, now that element-wise
maximum and minimum split a tie's gradient evenly as torch.maximum does."""

import numpy as np
import torch

import lamina
import lamina.functional as F
from helpers import compare_with_torch
from lamina.functional.projections import project_box


def test_triplet_margin_with_distance_loss_at_the_hinge():
    anchor = np.array([[0.0, 0.0], [1.0, 1.0]])
    positive = np.array([[3.0, 4.0], [1.0, 2.0]])        # d+ = 5 and 1
    negative = np.array([[0.0, 4.0], [1.0, 3.0]])        # d- = 4 and 2: d+ - d- + 1 = 2 and 0 (the hinge)
    compare_with_torch(lambda a, p, n: F.triplet_margin_with_distance_loss(a, p, n, reduction="none"),
                       lambda a, p, n: torch.nn.functional.triplet_margin_with_distance_loss(a, p, n, reduction="none"),
                       anchor, positive, negative, dtype=np.float64, rtol=1e-12)


def test_multi_margin_loss_squared_and_weighted_at_the_hinge():
    x = np.array([[1.0, 0.0, 2.0], [0.5, 1.5, 0.5]])    # margins 1 - x_y + x_i hit 0 exactly
    target = np.array([0, 1])
    weight = np.array([1.0, 2.0, 0.5])
    for p, w in ((2, None), (1, weight), (2, weight)):
        compare_with_torch(
            lambda z, p=p, w=w: F.multi_margin_loss(z, target, p=p, weight=w, reduction="none"),
            lambda z, p=p, w=w: torch.nn.functional.multi_margin_loss(
                z, torch.tensor(target), p=p, weight=None if w is None else torch.tensor(w), reduction="none"),
            x, dtype=np.float64, rtol=1e-12)


def test_project_box_is_torch_clamp_on_the_bounds():
    x = np.array([-1.0, 0.0, 0.5, 1.0, 2.0])
    compare_with_torch(lambda t: project_box(t, 0.0, 1.0), lambda t: torch.clamp(t, 0.0, 1.0), x,
                       dtype=np.float64, rtol=1e-12)


def test_hetero_max_aggregation_sends_a_tie_to_one_relation():
    a = lamina.tensor(np.array([1.0, 2.0]), requires_grad=True, dtype=np.float64)
    b = lamina.tensor(np.array([1.0, 3.0]), requires_grad=True, dtype=np.float64)
    F.stack([a, b], axis=0).max(axis=0).sum().backward()
    ta = torch.tensor([1.0, 2.0], requires_grad=True, dtype=torch.float64)
    tb = torch.tensor([1.0, 3.0], requires_grad=True, dtype=torch.float64)
    torch.stack([ta, tb]).max(dim=0).values.sum().backward()
    np.testing.assert_array_equal(a.grad + b.grad, (ta.grad + tb.grad).numpy())
    assert sorted([a.grad[0], b.grad[0]]) == [0.0, 1.0]
