"""HypLinear, HypAct, PoincareEmbedding and HyperbolicMLR against torch rewrites of the
HGCN / HNN reference code (float64, outputs and parameter/input gradients)."""

import math

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, randn
from lamina.errors import ShapeError
from lamina.manifolds import PoincareBall
from lamina.nn import HypAct, HyperbolicMLR, HypLinear, ManifoldParameter, PoincareEmbedding
from lamina.optim import RiemannianAdam


def t_norm(x):
    return x.norm(dim=-1, keepdim=True).clamp_min(1e-15)


def t_add(x, y, c):
    xy, x2, y2 = (x * y).sum(-1, keepdim=True), (x * x).sum(-1, keepdim=True), (y * y).sum(-1, keepdim=True)
    return ((1 + 2 * c * xy + c * y2) * x + (1 - c * x2) * y) / (1 + 2 * c * xy + c**2 * x2 * y2)


def t_proj(x, c):
    n, top = t_norm(x), (1 - 1e-5) / math.sqrt(c)
    return torch.where(n > top, x / n * top, x)


def t_expmap0(u, c):
    n = t_norm(u)
    return torch.tanh(math.sqrt(c) * n) * u / (math.sqrt(c) * n)


def t_logmap0(y, c):
    n = t_norm(y)
    return torch.atanh(math.sqrt(c) * n) * y / (math.sqrt(c) * n)


def t_hyp_linear(x, w, b, c):
    """HGCN's HypLinear: proj(mobius_matvec), then Möbius addition of proj(expmap0(bias))."""
    xn = t_norm(x)
    mx = x @ w.T
    mxn = t_norm(mx)
    res = t_proj(torch.tanh(mxn / xn * torch.atanh(math.sqrt(c) * xn)) * mx / (mxn * math.sqrt(c)), c)
    return t_proj(t_add(res, t_proj(t_expmap0(b.view(1, -1), c), c), c), c)


def t_mlr(x, p, a, c):
    """hyptorch's HyperbolicMLR: p = expmap0(p'), a = a' (1 - c|p|^2), logits by class."""
    p = t_expmap0(p, c)
    a = a * (1 - c * (p * p).sum(1, keepdim=True))
    lam = 2 / (1 - c * (p * p).sum(1))
    k = lam * a.norm(dim=1) / math.sqrt(c)
    w = t_add(-p, x.unsqueeze(-2), c)                                            # (B, K, n)
    num = 2 * math.sqrt(c) * (w * a).sum(-1)
    den = a.norm(dim=1) * (1 - c * (w * w).sum(-1))
    return k * torch.asinh(num / den)


def _compare(layer, params, torch_fn, x):
    """Outputs and the gradients of x and every parameter, lamina vs torch, float64."""
    xt = torch.tensor(x, requires_grad=True)
    tparams = [torch.tensor(p.data.copy(), requires_grad=True) for p in params]
    xl = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    out_l, out_t = layer(xl), torch_fn(xt, *tparams)
    assert_close(out_l.numpy(), out_t.detach().numpy(), 1e-10, "output")
    up = randn(*out_t.shape, seed=11)
    (out_l * lamina.tensor(up, dtype=np.float64)).sum().backward()
    (out_t * torch.tensor(up)).sum().backward()
    assert_close(xl.grad, xt.grad.numpy(), 1e-9, "input gradient")
    for p, t in zip(params, tparams):
        assert_close(p.grad, t.grad.numpy(), 1e-9, "parameter gradient")



X = randn(4, 5, seed=1, scale=0.2)


def test_hyp_linear_matches_hgcn(float64):
    layer = HypLinear(5, 3, ball=0.8)
    layer.bias.data[...] = randn(3, seed=2, scale=0.3)
    _compare(layer, [layer.weight, layer.bias], lambda x, w, b: t_hyp_linear(x, w, b, 0.8), X)
    assert check_gradients(layer, X)


def test_hyp_act_matches_reference(float64):
    layer = HypAct("relu", ball_in=0.8, ball_out=1.5)
    _compare(layer, [], lambda x: t_proj(t_expmap0(torch.relu(t_logmap0(x, 0.8)), 1.5), 1.5), X)


def test_hyperbolic_mlr_matches_hyptorch(float64):
    layer = HyperbolicMLR(5, 3, ball=0.8)
    _compare(layer, [layer.offsets, layer.normals], lambda x, p, a: t_mlr(x, p, a, 0.8), X)
    assert check_gradients(layer, X)


def test_poincare_embedding_lookup_and_distance(float64):
    table = PoincareEmbedding(6, 3, ball=1.0, init_scale=0.2)
    assert isinstance(table.weight, ManifoldParameter) and isinstance(table.weight.manifold, PoincareBall)
    ids = np.array([[0, 5], [2, 2]])
    assert_close(table(ids).numpy(), table.weight.data[ids], 1e-15)
    d = table.distance(np.array([0, 1]), np.array([3, 4]))
    assert_close(d.numpy(), table.ball.dist(table.weight.data[[0, 1]], table.weight.data[[3, 4]]).numpy(), 1e-12)
    d.sum().backward()
    assert np.all(table.weight.grad[[2, 5]] == 0) and np.all(table.weight.grad[[0, 1, 3, 4]] != 0)
    assert np.abs(table.weight.data).max() <= 0.2


def test_small_hyperbolic_network_trains():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)) * 0.1
    y = (x[:, 0] > 0).astype(np.int64)
    ball = PoincareBall(1.0)
    layers = [HypLinear(4, 8, ball), HypAct("tanh", ball), HyperbolicMLR(8, 2, ball)]
    params = [p for layer in layers for p in layer.parameters()]
    opt = RiemannianAdam(params, lr=0.05)
    losses = []
    for _ in range(40):
        h = ball.expmap0(x.astype(np.float32))
        for layer in layers:
            h = layer(h)
        loss = lamina.functional.cross_entropy(h, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.data))
    assert losses[-1] < 0.5 * losses[0]


def test_errors():
    with pytest.raises(ShapeError, match="HypLinear"):
        HypLinear(5, 3)(randn(2, 4, scale=0.1))
    with pytest.raises(TypeError, match="PoincareBall"):
        HypLinear(5, 3, ball="hyperbolic")
    with pytest.raises(ValueError, match="curvature"):
        HypAct("relu", ball_in=-1.0)
    with pytest.raises(ValueError, match="out of range"):
        PoincareEmbedding(4, 2)(np.array([4]))
