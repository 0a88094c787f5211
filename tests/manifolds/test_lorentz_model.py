"""Lorentz (hyperboloid) model: ops against torch rewrites of the formulas (HGCN's and
geoopt's), the constraint <x, x>_L = -1/k, the isometry with the Poincaré ball, errors."""

import math

import numpy as np
import pytest
import torch

from helpers import assert_close, check_gradients, compare_with_torch, randn
from lamina.errors import ShapeError
from lamina.manifolds import Lorentz, PoincareBall

K = 0.6
R2 = 1 / K


def t_mink(u, v):
    return (u * v).sum(-1, keepdim=True) - 2 * u[..., :1] * v[..., :1]


def t_projx(x):
    space = x[..., 1:]
    return torch.cat([torch.sqrt(R2 + (space * space).sum(-1, keepdim=True)), space], -1)


def t_proju(x, v):
    return v + t_mink(x, v) * x / R2


def t_dist(x, y):
    return math.sqrt(R2) * torch.acosh((-t_mink(x, y) / R2).clamp_min(1 + 1e-12))


def t_expmap(x, u):
    n = t_mink(u, u).clamp_min(1e-30).sqrt()
    return torch.cosh(n / math.sqrt(R2)) * x + math.sqrt(R2) * torch.sinh(n / math.sqrt(R2)) * u / n


def t_logmap(x, y):
    w = y + t_mink(x, y) * x / R2
    return t_dist(x, y) * w / t_mink(w, w).clamp_min(1e-30).sqrt()


def t_transp(x, y, v):
    return v + t_mink(y, v) / (R2 - t_mink(x, y)) * (x + y)


def t_egrad(x, u):
    return t_proju(x, torch.cat([-u[..., :1], u[..., 1:]], -1))


def t_to_ball(x):
    return math.sqrt(R2) * x[..., 1:] / (x[..., :1] + math.sqrt(R2))


def t_from_ball(p):
    s = K * (p * p).sum(-1, keepdim=True)
    return torch.cat([math.sqrt(R2) * (1 + s), 2 * p], -1) / (1 - s)


H = Lorentz(K)
X = H.projx(randn(3, 4, seed=1, scale=0.7)).numpy()
Y = H.projx(randn(3, 4, seed=2, scale=0.7)).numpy()
V = H.proju(X, randn(3, 4, seed=3, scale=0.5)).numpy()
P = randn(3, 3, seed=4, scale=0.3)

CASES = {
    "projx": (H.projx, t_projx, (randn(3, 4, seed=5),)),
    "proju": (H.proju, t_proju, (X, randn(3, 4, seed=6))),
    "egrad2rgrad": (H.egrad2rgrad, t_egrad, (X, randn(3, 4, seed=7))),
    "dist": (lambda x, y: H.dist(x, y, keepdim=True), t_dist, (X, Y)),
    "expmap": (lambda x, u: H.expmap(x, u, project=False), t_expmap, (X, V)),
    "logmap": (H.logmap, t_logmap, (X, Y)),
    "transp": (H.transp, t_transp, (X, Y, V)),
    "to_poincare": (H.to_poincare, t_to_ball, (X,)),
    "from_poincare": (H.from_poincare, t_from_ball, (P,)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_torch_rewrite(name):
    ours, theirs, inputs = CASES[name]
    compare_with_torch(ours, theirs, *inputs, dtype=np.float64, rtol=1e-9)


@pytest.mark.parametrize("name", ["dist", "expmap", "logmap", "from_poincare"])
def test_gradcheck(name):
    ours, _, inputs = CASES[name]
    # tangent inputs are moved off the tangent space by the finite differences: fine, the
    # formulas are smooth functions of R^{n+1}
    assert check_gradients(ours, *inputs)


def test_points_satisfy_the_constraint():
    for points in (X, H.expmap(X, V).numpy(), H.expmap0(randn(3, 4, seed=8)).numpy(), H.from_poincare(P).numpy()):
        assert_close(H.minkowski(points).numpy(), np.full(3, -1 / K), 1e-10)
        assert np.all(points[..., 0] > 0)
    np.testing.assert_allclose(H.minkowski(X, V).numpy(), 0.0, atol=1e-10)    # proju gives tangent vectors


def test_logmap_inverts_expmap_and_distance_is_the_tangent_norm():
    y = H.expmap(X, V)
    assert_close(H.logmap(X, y).numpy(), V, 1e-8)
    assert_close(H.dist(X, y).numpy(), np.sqrt(H.minkowski(V).numpy()), 1e-8)


def test_conversions_invert_each_other_and_keep_distances():
    assert_close(H.to_poincare(H.from_poincare(P)).numpy(), P, 1e-12)
    assert_close(H.from_poincare(H.to_poincare(X)).numpy(), X, 1e-10)
    ball = PoincareBall(K)
    assert_close(ball.dist(H.to_poincare(X), H.to_poincare(Y)).numpy(), H.dist(X, Y).numpy(), 1e-9)


def test_transport_keeps_tangent_and_norm():
    moved = H.transp(X, Y, V)
    np.testing.assert_allclose(H.minkowski(Y, moved).numpy(), 0.0, atol=1e-10)
    assert_close(H.minkowski(moved).numpy(), H.minkowski(V).numpy(), 1e-10)


def test_errors():
    with pytest.raises(ValueError, match="curvature"):
        Lorentz(-2.0)
    with pytest.raises(ValueError, match="hyperboloid"):
        H.check_point(np.array([[0.1, 0.2, 0.3]]))
    with pytest.raises(ValueError, match="outside the Poincaré ball"):
        H.from_poincare(np.array([[2.0, 0.0]]))
    with pytest.raises(ShapeError, match="dist"):
        H.dist(X, randn(3, 5))
    with pytest.raises(ShapeError, match="at least 2"):
        H.projx(randn(3, 1))
