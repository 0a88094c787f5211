"""PoincareBall: every op against a torch rewrite of the gyrovector formulas (geoopt's, Ganea
et al. 2018), in float64 with gradients; the identities of the model; projx; the errors."""

import math

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, check_second_derivatives, compare_with_torch, randn
from lamina.errors import ShapeError
from lamina.manifolds import PoincareBall

C = 0.7


# -- torch rewrites of the published formulas -------------------------------------------
def t_norm(x):
    return x.norm(dim=-1, keepdim=True).clamp_min(1e-15)


def t_dot(x, y):
    return (x * y).sum(-1, keepdim=True)


def t_artanh(x):
    return torch.atanh(x.clamp(-1 + 1e-15, 1 - 1e-15))


def t_lambda(x, c=C):
    return 2 / (1 - c * t_dot(x, x)).clamp_min(1e-15)


def t_add(x, y, c=C):
    xy, x2, y2 = t_dot(x, y), t_dot(x, x), t_dot(y, y)
    num = (1 + 2 * c * xy + c * y2) * x + (1 - c * x2) * y
    return num / (1 + 2 * c * xy + c**2 * x2 * y2).clamp_min(1e-15)


def t_expmap(x, u, c=C):
    sc, un = math.sqrt(c), t_norm(u)
    return t_add(x, torch.tanh(sc * t_lambda(x, c) * un / 2) * u / (sc * un), c)


def t_logmap(x, y, c=C):
    sc, w = math.sqrt(c), t_add(-x, y, c)
    wn = t_norm(w)
    return 2 / (sc * t_lambda(x, c)) * t_artanh(sc * wn) * w / wn


def t_dist(x, y, c=C):
    return 2 / math.sqrt(c) * t_artanh(math.sqrt(c) * t_norm(t_add(-x, y, c)))[..., 0]


def t_expmap0(u, c=C):
    sc, un = math.sqrt(c), t_norm(u)
    return torch.tanh(sc * un) * u / (sc * un)


def t_logmap0(y, c=C):
    sc, yn = math.sqrt(c), t_norm(y)
    return t_artanh(sc * yn) * y / (sc * yn)


def t_matvec(m, x, c=C):
    sc, xn = math.sqrt(c), t_norm(x)
    mx = x @ m.T
    mxn = t_norm(mx)
    return torch.tanh(mxn / xn * t_artanh(sc * xn)) * mx / (mxn * sc)


def t_scalar_mul(x, r=1.7, c=C):
    sc, xn = math.sqrt(c), t_norm(x)
    return torch.tanh(r * t_artanh(sc * xn)) * x / (sc * xn)


def t_gyration(a, b, u, c=C):
    """gyr[a, b] u by its definition, -(a + b) + (a + (b + u)) (Möbius additions)."""
    return t_add(-t_add(a, b, c), t_add(a, t_add(b, u, c), c), c)


def t_transp(x, y, v, c=C):
    return t_gyration(y, -x, v, c) * t_lambda(x, c) / t_lambda(y, c)


BALL = PoincareBall(C)
X, Y, U, V = (randn(3, 4, seed=s, scale=0.25) for s in range(4))
M = randn(5, 4, seed=9)

CASES = {
    "mobius_add": (BALL.mobius_add, t_add, (X, Y)),
    "expmap": (lambda x, u: BALL.expmap(x, u, project=False), t_expmap, (X, U)),
    "logmap": (BALL.logmap, t_logmap, (X, Y)),
    "dist": (BALL.dist, t_dist, (X, Y)),
    "expmap0": (lambda u: BALL.expmap0(u, project=False), t_expmap0, (U,)),
    "logmap0": (BALL.logmap0, t_logmap0, (Y,)),
    "mobius_matvec": (BALL.mobius_matvec, t_matvec, (M, X)),
    "mobius_scalar_mul": (lambda x: BALL.mobius_scalar_mul(1.7, x), t_scalar_mul, (X,)),
    "lambda_x": (BALL.lambda_x, t_lambda, (X,)),
    "egrad2rgrad": (BALL.egrad2rgrad, lambda x, u: u / t_lambda(x) ** 2, (X, U)),
    "inner": (BALL.inner, lambda x, u, v: (t_lambda(x) ** 2 * t_dot(u, v))[..., 0], (X, U, V)),
    "transp": (BALL.transp, t_transp, (X, Y, V)),
    "gyration": (BALL.gyration, t_gyration, (X, Y, V)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_torch_rewrite(name):
    ours, theirs, inputs = CASES[name]
    compare_with_torch(ours, theirs, *inputs, dtype=np.float64, rtol=1e-9)


@pytest.mark.parametrize("name", ["mobius_add", "expmap", "logmap", "dist", "mobius_matvec", "transp"])
def test_gradcheck(name):
    ours, _, inputs = CASES[name]
    assert check_gradients(ours, *inputs)


def test_second_derivatives_of_distance():
    assert check_second_derivatives(BALL.dist, X, Y)


def test_float32_matches_float64_reference():
    compare_with_torch(BALL.dist, t_dist, X, Y, dtype=np.float32, rtol=1e-4)


# -- identities ---------------------------------------------------------------------------
def test_logmap_inverts_expmap_and_distance_is_lambda_times_norm():
    y = BALL.expmap(X, U)
    assert_close(BALL.logmap(X, y).numpy(), U, 1e-10)
    expected = BALL.lambda_x(X, keepdim=False).numpy() * np.linalg.norm(U, axis=-1)
    assert_close(BALL.dist(X, y).numpy(), expected, 1e-10)
    assert_close(BALL.logmap0(BALL.expmap0(U)).numpy(), U, 1e-10)


def test_left_cancellation_and_gyration_definition():
    assert_close(BALL.mobius_add(-X, BALL.mobius_add(X, Y)).numpy(), Y, 1e-12)
    # the closed form of gyr[a, b] u equals its definition through Möbius additions
    defined = t_gyration(*(torch.tensor(a) for a in (X, Y, V))).numpy()
    assert_close(BALL.gyration(X, Y, V).numpy(), defined, 1e-10)


def test_transport_preserves_the_metric():
    moved_u, moved_v = BALL.transp(X, Y, U), BALL.transp(X, Y, V)
    assert_close(BALL.inner(Y, moved_u, moved_v).numpy(), BALL.inner(X, U, V).numpy(), 1e-10)


def test_matvec_is_linear_map_in_the_tangent_space_at_the_origin():
    expected = BALL.expmap0(BALL.logmap0(X).numpy() @ M.T).numpy()
    assert_close(BALL.mobius_matvec(M, X).numpy(), expected, 1e-10)
    zero_rows = np.zeros((5, 4))
    assert np.all(BALL.mobius_matvec(zero_rows, X).numpy() == 0)


def test_scalar_mul_two_is_self_addition_and_expmap_at_origin():
    assert_close(BALL.mobius_scalar_mul(2.0, X).numpy(), BALL.mobius_add(X, X).numpy(), 1e-10)
    assert_close(BALL.expmap(np.zeros_like(U), U).numpy(), BALL.expmap0(U).numpy(), 1e-12)


def test_distance_is_symmetric_and_matches_origin_form():
    assert_close(BALL.dist(X, Y).numpy(), BALL.dist(Y, X).numpy(), 1e-10)
    assert_close(BALL.dist(np.zeros_like(Y), Y).numpy(), BALL.dist0(Y).numpy(), 1e-10)


@pytest.mark.parametrize("dtype, eps", [(np.float32, 4e-3), (np.float64, 1e-5)])
def test_projx_keeps_points_inside(dtype, eps):
    far = (randn(6, 3, seed=5) * 10).astype(dtype)
    inside = (randn(2, 3, seed=6) * 0.01).astype(dtype)
    ball = PoincareBall(2.0)
    projected = ball.projx(np.concatenate([far, inside])).numpy()
    norms = np.linalg.norm(projected.astype(np.float64), axis=-1)
    assert projected.dtype == dtype
    assert np.all(norms[:6] <= (1 - eps) / math.sqrt(2.0) * (1 + 1e-6))
    assert_close(norms[:6], np.full(6, (1 - eps) / math.sqrt(2.0)), 1e-6)
    np.testing.assert_array_equal(projected[6:], inside)
    ball.check_point(projected)


# -- errors --------------------------------------------------------------------------------
@pytest.mark.parametrize("c", [0.0, -1.0, float("nan"), "1"])
def test_bad_curvature(c):
    with pytest.raises(ValueError, match="curvature"):
        PoincareBall(c)


def test_point_outside_ball_is_refused():
    outside = np.array([[0.9, 0.9]])
    for op in (lambda: BALL.dist(outside, np.zeros((1, 2))), lambda: BALL.logmap0(outside),
               lambda: BALL.expmap(outside, np.zeros((1, 2)))):
        with pytest.raises(ValueError, match="outside the ball"):
            op()


def test_shape_mismatch():
    with pytest.raises(ShapeError, match="mobius_add"):
        BALL.mobius_add(X, randn(3, 5))
    with pytest.raises(ShapeError, match="mobius_matvec"):
        BALL.mobius_matvec(randn(2, 3), X)
    with pytest.raises(ShapeError, match="broadcast"):
        BALL.dist(X, randn(2, 4, scale=0.1))


def test_ops_record_on_the_graph():
    x = lamina.tensor(X, requires_grad=True, dtype=np.float64)
    BALL.dist(x, Y).sum().backward()
    assert x.grad is not None and np.all(np.isfinite(x.grad))
