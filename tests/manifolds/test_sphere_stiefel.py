"""Sphere, Stiefel and Euclidean: ops against torch rewrites of their formulas (values and
gradients, float64), and their identities."""

import numpy as np
import pytest
import torch

from helpers import assert_close, check_gradients, compare_with_torch, randn
from lamina.errors import ShapeError
from lamina.manifolds import Euclidean, Sphere, Stiefel

S = Sphere()
X = randn(3, 5, seed=1)
X /= np.linalg.norm(X, axis=-1, keepdims=True)
Y = randn(3, 5, seed=2)
Y /= np.linalg.norm(Y, axis=-1, keepdims=True)
U = S.proju(X, randn(3, 5, seed=3, scale=0.4)).numpy()


def t_dot(a, b):
    return (a * b).sum(-1, keepdim=True)


def t_proju(x, u):
    return u - t_dot(x, u) * x


def t_expmap(x, u):
    n = u.norm(dim=-1, keepdim=True)
    y = torch.cos(n) * x + torch.sin(n) * u / n
    return y / y.norm(dim=-1, keepdim=True)


def t_dist(x, y):
    return torch.acos(t_dot(x, y).clamp(-1 + 1e-15, 1 - 1e-15))[..., 0]


def t_logmap(x, y):
    w = t_proju(x, y - x)
    return t_dist(x, y)[..., None] * w / w.norm(dim=-1, keepdim=True)


SPHERE_CASES = {
    "proju": (S.proju, t_proju, (X, randn(3, 5, seed=4))),
    "expmap": (S.expmap, t_expmap, (X, U)),
    "dist": (S.dist, t_dist, (X, Y)),
    "logmap": (S.logmap, t_logmap, (X, Y)),
    "retr": (S.retr, lambda x, u: (x + u) / (x + u).norm(dim=-1, keepdim=True), (X, U)),
}


@pytest.mark.parametrize("name", sorted(SPHERE_CASES))
def test_sphere_matches_torch_rewrite(name):
    ours, theirs, inputs = SPHERE_CASES[name]
    compare_with_torch(ours, theirs, *inputs, dtype=np.float64, rtol=1e-9)
    assert check_gradients(ours, *inputs)


def test_sphere_identities():
    y = S.expmap(X, U).numpy()
    assert_close(np.linalg.norm(y, axis=-1), np.ones(3), 1e-12)
    assert_close(S.logmap(X, y).numpy(), U, 1e-9)
    assert_close(S.dist(X, y).numpy(), np.linalg.norm(U, axis=-1), 1e-9)
    moved = S.transp(X, y, U).numpy()
    np.testing.assert_allclose((moved * y).sum(-1), 0.0, atol=1e-12)   # tangent at y


# -- Stiefel -----------------------------------------------------------------------------
FRAME = np.linalg.qr(randn(2, 6, 3, seed=5))[0]
STEP = randn(2, 6, 3, seed=6, scale=0.3)


def t_sym(a):
    return (a + a.transpose(-1, -2)) / 2


def t_stiefel_proju(x, u):
    return u - x @ t_sym(x.transpose(-1, -2) @ u)


def t_qr_retr(x, u):
    q, r = torch.linalg.qr(x + u)
    return q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)


def t_polar_retr(x, u):
    w, _, vh = torch.linalg.svd(x + u, full_matrices=False)
    return w @ vh


def t_cayley_retr(x, u):
    g = t_stiefel_proju(x, u)
    a = g @ x.transpose(-1, -2) - x @ g.transpose(-1, -2)
    eye = torch.eye(x.shape[-2], dtype=x.dtype)
    return torch.linalg.solve(eye - a / 2, (eye + a / 2) @ x)


STIEFEL_CASES = {
    "proju": (Stiefel().proju, t_stiefel_proju),
    "qr": (Stiefel("qr").retr, t_qr_retr),
    "polar": (Stiefel("polar").retr, t_polar_retr),
    "cayley": (Stiefel("cayley").retr, t_cayley_retr),
}


@pytest.mark.parametrize("name", sorted(STIEFEL_CASES))
def test_stiefel_matches_torch_rewrite(name):
    ours, theirs = STIEFEL_CASES[name]
    compare_with_torch(ours, theirs, FRAME, STEP, dtype=np.float64, rtol=1e-8)


@pytest.mark.parametrize("name", ["proju", "qr", "polar"])
def test_stiefel_gradcheck(name):
    assert check_gradients(STIEFEL_CASES[name][0], FRAME, STEP)


@pytest.mark.parametrize("retraction", ["qr", "polar", "cayley"])
def test_stiefel_retractions_stay_on_the_manifold(retraction):
    manifold = Stiefel(retraction)
    y = manifold.retr(FRAME, STEP).numpy()
    assert_close(np.swapaxes(y, -1, -2) @ y, np.broadcast_to(np.eye(3), (2, 3, 3)), 1e-10)
    tangent = manifold.proju(FRAME, STEP).numpy()
    gram = np.swapaxes(FRAME, -1, -2) @ tangent
    np.testing.assert_allclose(gram + np.swapaxes(gram, -1, -2), 0.0, atol=1e-12)  # X^T U skew


def test_euclidean_is_flat():
    e = Euclidean()
    a, b = randn(4, 3, seed=7), randn(4, 3, seed=8)
    assert_close(e.expmap(a, b).numpy(), a + b, 1e-15)
    assert_close(e.logmap(a, b).numpy(), b - a, 1e-15)
    assert_close(e.dist(a, b).numpy(), np.linalg.norm(a - b, axis=-1), 1e-12)
    assert e.transp(a, b, a).numpy() is not None and np.all(e.transp(a, b, a).numpy() == a)


def test_errors():
    with pytest.raises(ValueError, match="retraction"):
        Stiefel("exp")
    with pytest.raises(ShapeError, match="n >= p"):
        Stiefel().proju(randn(2, 3), randn(2, 3))
    with pytest.raises(ShapeError, match="last 1 axes"):
        S.proju(X, randn(3, 4))
    with pytest.raises(ValueError, match="unit sphere"):
        S.check_point(2 * X)
    with pytest.raises(ValueError, match="X\\^T X"):
        Stiefel().check_point(2 * FRAME)
