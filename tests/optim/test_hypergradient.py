"""Hypergradient descent (Baydin et al. 2018): HDSGD and HDAdam against a NumPy rewrite of the
paper's update rules, their learning-rate adaptation on a quadratic, and their checks."""

from __future__ import annotations

import numpy as np
import pytest

from lamina.nn import Parameter
from lamina.optim import HDSGD, HDAdam

STEPS = 20
_rng = np.random.default_rng(35)
A = _rng.standard_normal((5, 5))
A = A @ A.T / 5 + 0.5 * np.eye(5)  # a positive-definite curvature
B = _rng.standard_normal(5)
W0 = [_rng.standard_normal(3), _rng.standard_normal(2)]  # the 5 weights split into two parameters


def grads(w: list[np.ndarray]) -> list[np.ndarray]:
    """The gradient of 0.5 x'Ax - b'x + 0.1 sum(x^4) at x = concat(w), split like w."""
    x = np.concatenate(w)
    g = A @ x - B + 0.4 * x**3
    return [g[:3], g[3:]]


def loss(w: list[np.ndarray]) -> float:
    x = np.concatenate(w)
    return float(0.5 * x @ A @ x - B @ x + 0.1 * np.sum(x**4))


def numpy_hd(kind: str, lr: float, hyper_lr: float, weight_decay: float = 0.0, betas=(0.9, 0.999), eps=1e-8):
    """The paper's Algorithms (SGD-HD, Adam-HD), one learning rate for all weights."""
    w = [a.copy() for a in W0]
    alpha = lr
    u_prev = [np.zeros_like(a) for a in w]  # the previous step's direction (w -= alpha * u)
    m = [np.zeros_like(a) for a in w]
    v = [np.zeros_like(a) for a in w]
    trajectory, rates = [], []
    for t in range(1, STEPS + 1):
        g = [gi + weight_decay * wi for gi, wi in zip(grads(w), w, strict=True)]
        alpha = alpha + hyper_lr * sum(float(np.sum(gi * ui)) for gi, ui in zip(g, u_prev, strict=True))
        if kind == "sgd":
            u = [gi.copy() for gi in g]
        else:
            b1, b2 = betas
            m = [b1 * mi + (1 - b1) * gi for mi, gi in zip(m, g, strict=True)]
            v = [b2 * vi + (1 - b2) * gi**2 for vi, gi in zip(v, g, strict=True)]
            u = [(mi / (1 - b1**t)) / (np.sqrt(vi / (1 - b2**t)) + eps) for mi, vi in zip(m, v, strict=True)]
        w = [wi - alpha * ui for wi, ui in zip(w, u, strict=True)]
        u_prev = u
        trajectory.append([wi.copy() for wi in w])
        rates.append(alpha)
    return trajectory, rates


def lamina_hd(cls, steps: int = STEPS, **kwargs):
    params = [Parameter(a.copy(), dtype=np.float64) for a in W0]
    opt = cls(params, **kwargs)
    trajectory, rates = [], []
    for _ in range(steps):
        for p, g in zip(params, grads([p.data for p in params]), strict=True):
            p.grad = g.copy()
        opt.step()
        trajectory.append([p.data.copy() for p in params])
        rates.append(opt.param_groups[0]["lr"])
    return trajectory, rates


@pytest.mark.parametrize(("cls", "kind", "kwargs"), [
    (HDSGD, "sgd", {"lr": 0.05, "hyper_lr": 0.01}),
    (HDSGD, "sgd", {"lr": 0.02, "hyper_lr": 0.003, "weight_decay": 0.1}),
    (HDAdam, "adam", {"lr": 0.01, "hyper_lr": 0.001}),
    (HDAdam, "adam", {"lr": 0.02, "hyper_lr": 0.002, "betas": (0.8, 0.95), "eps": 0.1, "weight_decay": 0.05}),
])
def test_follows_the_papers_rules_for_20_steps(cls, kind, kwargs):
    expected, expected_rates = numpy_hd(kind, **kwargs)
    got, rates = lamina_hd(cls, **kwargs)
    assert got[0][0].dtype == np.float64
    for step, (e, g) in enumerate(zip(expected, got, strict=True)):
        for ei, gi in zip(e, g, strict=True):
            np.testing.assert_allclose(gi, ei, rtol=1e-10, atol=1e-10, err_msg=f"step {step + 1}")
    np.testing.assert_allclose(rates, expected_rates, rtol=1e-10, atol=1e-12)
    assert rates[-1] != kwargs["lr"]  # the rate did move


@pytest.mark.parametrize(("cls", "kwargs"), [
    (HDSGD, {"lr": 1e-3, "hyper_lr": 1e-3}),
    (HDAdam, {"lr": 1e-3, "hyper_lr": 1e-3}),
])
def test_a_too_small_learning_rate_grows_and_beats_the_fixed_rate(cls, kwargs):
    _, rates = lamina_hd(cls, steps=100, **kwargs)
    assert rates[-1] > 5 * kwargs["lr"]
    adapted, _ = lamina_hd(cls, steps=100, **kwargs)
    fixed, _ = lamina_hd(cls, steps=100, **{**kwargs, "hyper_lr": 0.0})
    assert loss(adapted[-1]) < loss(fixed[-1]) - 0.1


def test_zero_hyper_lr_is_plain_sgd():
    got, rates = lamina_hd(HDSGD, lr=0.05, hyper_lr=0.0)
    w = [a.copy() for a in W0]
    for _ in range(STEPS):
        w = [wi - 0.05 * gi for wi, gi in zip(w, grads(w), strict=True)]
    for wi, gi in zip(w, got[-1], strict=True):
        np.testing.assert_allclose(gi, wi, rtol=1e-12)
    assert set(rates) == {0.05}


def test_state_dict_round_trip_continues_identically():
    params = [Parameter(a.copy(), dtype=np.float64) for a in W0]
    opt = HDAdam(params, lr=0.01, hyper_lr=0.001)
    for _ in range(3):
        for p, g in zip(params, grads([p.data for p in params]), strict=True):
            p.grad = g.copy()
        opt.step()
    clone_params = [Parameter(p.data.copy(), dtype=np.float64) for p in params]
    clone = HDAdam(clone_params, lr=0.01, hyper_lr=0.001)
    clone.load_state_dict(opt.state_dict())
    for ps in (params, clone_params):
        for p, g in zip(ps, grads([p.data for p in ps]), strict=True):
            p.grad = g.copy()
    opt.step()
    clone.step()
    assert clone.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    for a, b in zip(params, clone_params, strict=True):
        np.testing.assert_array_equal(a.data, b.data)


@pytest.mark.parametrize("cls", [HDSGD, HDAdam])
def test_negative_hyper_lr_is_refused_with_the_name(cls):
    with pytest.raises(ValueError, match=rf"{cls.__name__}.*hyper_lr"):
        cls([Parameter(np.zeros(2), dtype=np.float64)], lr=0.1, hyper_lr=-1.0)
