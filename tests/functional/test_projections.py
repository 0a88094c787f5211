"""Projections onto the simplex, the l1 ball and a box: values against the QPs they solve, and
gradients against finite differences and PyTorch rewrites of the sort-based algorithm."""

import numpy as np
import pytest
import torch
from tests.helpers import check_gradients, compare_with_torch, randn

import lamina
from lamina import functional as F
from lamina.autograd import grad


def torch_simplex(x, radius=1.0):
    ordered = torch.sort(x, dim=-1, descending=True).values
    ranks = torch.arange(1, x.shape[-1] + 1, dtype=x.dtype)
    thresholds = (torch.cumsum(ordered, dim=-1) - radius) / ranks
    count = (ordered - thresholds > 0).sum(dim=-1, keepdim=True)
    tau = torch.gather(thresholds, -1, count - 1)
    return torch.clamp(x - tau, min=0)


def torch_l1_ball(x, radius=1.0):
    inside = x.abs().sum(dim=-1, keepdim=True) <= radius
    return torch.where(inside, x, torch.sign(x) * torch_simplex(x.abs(), radius))


def simplex_qp(x, radius):
    """The projection as the QP min 1/2 |y|^2 - x^T y s.t. -y <= 0, 1^T y = radius."""
    n = x.shape[-1]
    return F.qp_solve(np.eye(n), -x, -np.eye(n), np.zeros(n), np.ones((1, n)), np.full(1, radius)).numpy()


def l1_ball_qp(x, radius):
    """y = u - v with u, v >= 0 and sum(u + v) <= radius."""
    n = x.shape[-1]
    Q = np.block([[np.eye(n), -np.eye(n)], [-np.eye(n), np.eye(n)]]) + 1e-9 * np.eye(2 * n)
    G = np.vstack([-np.eye(2 * n), np.ones((1, 2 * n))])
    h = np.concatenate([np.zeros(2 * n), [radius]])
    uv = F.qp_solve(Q, np.concatenate([-x, x], axis=-1), G, h).numpy()
    return uv[..., :n] - uv[..., n:]


@pytest.mark.parametrize("radius", [1.0, 2.5])
def test_simplex_projection_equals_the_qp_solution(radius):
    x = randn(6, 5, seed=1, scale=1.5)
    y = F.project_simplex(lamina.tensor(x), radius).numpy()
    np.testing.assert_allclose(y, simplex_qp(x, radius), atol=1e-7)
    np.testing.assert_allclose(y.sum(axis=-1), radius, atol=1e-12)
    assert (y >= 0).all()


def test_l1_ball_projection_equals_the_qp_solution_inside_and_outside():
    x = randn(6, 4, seed=2)
    x[0] *= 0.05                        # inside the ball: unchanged
    y = F.project_l1_ball(lamina.tensor(x), 1.5).numpy()
    np.testing.assert_allclose(y[0], x[0])
    np.testing.assert_allclose(y, l1_ball_qp(x, 1.5), atol=1e-6)


def test_box_projection_against_torch_with_tensor_bounds():
    x, lower, upper = randn(4, 5, seed=3), randn(5, seed=4) - 1.0, randn(5, seed=5) + 1.0
    compare_with_torch(F.project_box, lambda x, lo, hi: torch.clamp(x, lo, hi), x, lower, upper,
                       dtype=np.float64)
    np.testing.assert_allclose(F.project_box(lamina.tensor(x), upper=0.0).numpy(), np.minimum(x, 0.0))


def test_simplex_and_l1_ball_match_torch_values_and_gradients():
    x = randn(5, 6, seed=6, scale=2.0)
    compare_with_torch(lambda x: F.project_simplex(x, 1.5), lambda x: torch_simplex(x, 1.5), x)
    x[0] *= 0.05
    compare_with_torch(lambda x: F.project_l1_ball(x, 2.0), lambda x: torch_l1_ball(x, 2.0), x, dtype=np.float64)


def test_projection_gradients_equal_finite_differences():
    x = randn(3, 5, seed=7, scale=2.0)
    assert check_gradients(lambda x: F.project_simplex(x, 1.0), x)
    assert check_gradients(lambda x: F.project_l1_ball(x, 1.0), x)
    assert check_gradients(lambda x: F.project_box(x, -0.5, 0.5), x)


def test_simplex_jacobian_is_the_exact_projection_on_the_support():
    x = lamina.tensor(np.array([0.9, 0.6, -1.0, 0.3]), requires_grad=True)
    y = F.project_simplex(x)
    support = y.numpy() > 0
    jacobian = np.stack([np.asarray(grad(y, [x], grad_output=np.eye(4)[i], retain_graph=True)[0]) for i in range(4)])
    s = support.astype(float)
    np.testing.assert_allclose(jacobian, np.diag(s) - np.outer(s, s) / s.sum(), atol=1e-12)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="project_simplex: radius"):
        F.project_simplex(np.ones(3), 0.0)
    with pytest.raises(ValueError, match="project_l1_ball: radius"):
        F.project_l1_ball(np.ones(3), -1.0)
    with pytest.raises(ValueError, match="project_box"):
        F.project_box(np.ones(3), 1.0, 0.0)
