"""relative_lp_loss / nn.RelativeLpLoss (the relative error of operator learning) against torch's
vector norms, float64 gradient and second-derivative checks, and its edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, check_second_derivatives, compare_with_torch, randn
from lamina import functional as F
from lamina import nn
from lamina.errors import ShapeError


def torch_relative(prediction, target, p, reduction):
    n = prediction.shape[0]
    difference = torch.linalg.vector_norm((prediction - target).reshape(n, -1), ord=p, dim=1)
    ratio = difference / torch.linalg.vector_norm(target.reshape(n, -1), ord=p, dim=1)
    return {"mean": ratio.mean(), "sum": ratio.sum(), "none": ratio}[reduction]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p, reduction", [(2, "mean"), (2, "none"), (1, "sum"), (3, "mean"), (math.inf, "mean")])
def test_matches_torch(p, reduction, dtype):
    """Values and the gradients of both the prediction and the target, on (batch, h, w, c) fields."""
    compare_with_torch(lambda x, y: F.relative_lp_loss(x, y, p=p, reduction=reduction),
                       lambda x, y: torch_relative(x, y, p, reduction),
                       randn(3, 4, 5, 2), randn(3, 4, 5, 2, seed=1), dtype=dtype)


@pytest.mark.parametrize("p", [2, 1.5])
def test_gradcheck_and_second_derivatives(p):
    x, y = randn(2, 6, 1), randn(2, 6, 1, seed=1)
    assert check_gradients(lambda a, b: F.relative_lp_loss(a, b, p=p), x, y)
    assert check_second_derivatives(lambda a, b: F.relative_lp_loss(a, b, p=p), x, y)


def test_the_module_is_the_function_and_the_error_is_resolution_free():
    """Sampling the same two smooth fields on a grid twice as fine leaves the relative error
    (nearly) unchanged, unlike a sum of squares."""
    loss = nn.RelativeLpLoss()
    assert "p=" not in repr(loss) and "p=1" in repr(nn.RelativeLpLoss(p=1))
    x = np.linspace(0, 1, 64, endpoint=False)
    u, v = np.sin(2 * np.pi * x), np.sin(2 * np.pi * x) + 0.1 * np.cos(6 * np.pi * x)
    fine = float(loss(v[None, :, None], u[None, :, None]).numpy())
    coarse = float(loss(v[None, ::2, None], u[None, ::2, None]).numpy())
    assert fine == pytest.approx(0.1, rel=1e-5) and coarse == pytest.approx(fine, rel=1e-5)
    np.testing.assert_allclose(nn.RelativeLpLoss(reduction="none")(np.stack([v, u])[..., None],
                                                                   np.stack([u, u])[..., None]).numpy(),
                               [0.1, 0.0], atol=1e-6)


def test_a_perfect_prediction_has_zero_loss_and_a_zero_gradient():
    y = randn(2, 5, 1)
    x = lamina.tensor(y, requires_grad=True, dtype=np.float64)
    loss = F.relative_lp_loss(x, y)
    loss.backward()
    assert float(loss.numpy()) == 0.0
    np.testing.assert_array_equal(x.grad, np.zeros_like(y))


def test_bad_arguments_are_named():
    with pytest.raises(ShapeError, match="relative_lp_loss.*shape"):
        F.relative_lp_loss(randn(2, 3), randn(2, 4))
    with pytest.raises(ShapeError, match="relative_lp_loss.*batch"):
        F.relative_lp_loss(randn(3), randn(3))
    with pytest.raises(ValueError, match="relative_lp_loss: p"):
        F.relative_lp_loss(randn(2, 3), randn(2, 3), p=0)
    with pytest.raises(ValueError, match="relative_lp_loss: reduction"):
        F.relative_lp_loss(randn(2, 3), randn(2, 3), reduction="avg")
    with pytest.raises(ValueError, match="RelativeLpLoss: reduction"):
        nn.RelativeLpLoss(reduction="avg")
