"""GaLore: against plain SGD and AdamW where the projection is complete, the update inside
the column space of P, the refresh period of P, a torch rewrite of the step, the state dict
round trip, a digits MLP against AdamW with a fraction of the state, and bad arguments."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

import lamina
from helpers import run_readme_section
from lamina import functional as F
from lamina import nn
from lamina.data import load_digits, train_val_test_split
from lamina.nn import Parameter
from lamina.optim import SGD, AdamW, GaLore, optimizer_state_bytes


def _params(*shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [Parameter(rng.standard_normal(shape), dtype=np.float64) for shape in shapes]


def _targets(params, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(p.data.shape) for p in params]


def _set_quadratic_grads(params, targets, step):
    """grad = (w - target) * (1 + 0.1 step) + a step-dependent wiggle: the gradients change
    with the parameters and from step to step."""
    for p, target in zip(params, targets):
        wiggle = np.sin(np.arange(p.data.size).reshape(p.data.shape) + step)
        p.grad = (p.data - target) * (1.0 + 0.1 * step) + 0.3 * wiggle


def _run(optimizer, params, targets, steps, start=0):
    for k in range(start, start + steps):
        _set_quadratic_grads(params, targets, k)
        optimizer.step()


def test_full_rank_sgd_equals_sgd_step_for_step():
    """P P^T = I when r is the shorter side: SGD on the projected gradient is SGD."""
    shapes = ((5, 3), (3, 7), (4,))
    ours, plain = _params(*shapes), _params(*shapes)
    targets = _targets(ours)
    galore = GaLore(ours, base="sgd", rank=7, update_proj_gap=1, scale=1.0, lr=0.1)
    sgd = SGD(plain, lr=0.1)
    for k in range(5):
        _run(galore, ours, targets, 1, start=k)
        _run(sgd, plain, targets, 1, start=k)
        for a, b in zip(ours, plain):
            np.testing.assert_allclose(a.data, b.data, rtol=0, atol=1e-12)


def test_full_rank_sgd_momentum_with_a_fixed_projection_equals_sgd_momentum():
    shapes = ((6, 4), (4, 6))
    ours, plain = _params(*shapes), _params(*shapes)
    targets = _targets(ours)
    galore = GaLore(ours, base="sgd", rank=4, update_proj_gap=100, scale=1.0, lr=0.05, momentum=0.9)
    sgd = SGD(plain, lr=0.05, momentum=0.9)
    _run(galore, ours, targets, 6)
    _run(sgd, plain, targets, 6)
    for a, b in zip(ours, plain):
        np.testing.assert_allclose(a.data, b.data, rtol=0, atol=1e-10)


def test_full_rank_adamw_equals_adamw_where_the_projection_is_a_sign():
    """Adam's step is elementwise, so it commutes with P only when P is a signed permutation:
    for a (1, n) or (n, 1) matrix (r = 1 = the shorter side, P = 1 with the signs fixed)
    GaLore is AdamW exactly, and parameters that are not matrices get AdamW's own update."""
    shapes = ((1, 6), (6, 1), (5,))
    ours, plain = _params(*shapes), _params(*shapes)
    targets = _targets(ours)
    galore = GaLore(ours, rank=1, update_proj_gap=1, scale=1.0, lr=0.01, weight_decay=0.1)
    adamw = AdamW(plain, lr=0.01, weight_decay=0.1)
    for k in range(6):
        _run(galore, ours, targets, 1, start=k)
        _run(adamw, plain, targets, 1, start=k)
        for a, b in zip(ours, plain):
            np.testing.assert_allclose(a.data, b.data, rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape", [(6, 10), (10, 6)])
def test_the_update_lies_in_the_span_of_the_projection(shape):
    (w,) = _params(shape)
    targets = _targets([w])
    galore = GaLore([w], rank=2, update_proj_gap=1, lr=0.01, scale=0.5)
    for k in range(3):
        before = w.data.copy()
        _run(galore, [w], targets, 1, start=k)
        delta = w.data - before
        p = galore.state[0]["projection"]
        assert p.shape == (6, 2)
        np.testing.assert_allclose(p.T @ p, np.eye(2), atol=1e-12)
        outside = delta - p @ (p.T @ delta) if shape[0] < shape[1] else delta - (delta @ p) @ p.T
        assert np.abs(delta).max() > 1e-4
        assert np.abs(outside).max() < 1e-12 * np.abs(delta).max() + 1e-15


def test_the_projection_is_refreshed_exactly_every_gap_steps():
    (w,) = _params((5, 8))
    targets = _targets([w])
    galore = GaLore([w], rank=2, update_proj_gap=3, lr=0.01)
    refreshed, previous = [], None
    for k in range(10):
        _run(galore, [w], targets, 1, start=k)
        current = galore.state[0]["projection"].copy()
        refreshed.append(previous is None or not np.array_equal(current, previous))
        previous = current
    assert [k + 1 for k, changed in enumerate(refreshed) if changed] == [1, 4, 7, 10]


def _torch_galore(weights, targets, steps, rank, gap, scale, lr, betas, eps, decay):
    """GaLore-AdamW written out with torch ops (float64), on the same gradients."""
    beta1, beta2 = betas
    ws = [torch.tensor(w) for w in weights]
    state = [{} for _ in ws]
    for step in range(steps):
        for w, target, s in zip(ws, targets, state):
            wiggle = torch.sin(torch.arange(w.numel(), dtype=torch.float64).reshape(w.shape) + step)
            g = (w - torch.tensor(target)) * (1.0 + 0.1 * step) + 0.3 * wiggle
            t = step + 1
            w.mul_(1 - lr * decay)
            if w.ndim == 2:
                left = w.shape[0] < w.shape[1]
                if step % gap == 0:
                    u, _, vh = torch.linalg.svd(g, full_matrices=False)
                    p = u[:, :rank] if left else vh[:rank].T
                    biggest = p.abs().argmax(dim=0)
                    s["P"] = p * torch.sign(p[biggest, torch.arange(p.shape[1])])
                g = s["P"].T @ g if left else g @ s["P"]
            if "m" not in s:
                s["m"], s["v"] = torch.zeros_like(g), torch.zeros_like(g)
            s["m"] = beta1 * s["m"] + (1 - beta1) * g
            s["v"] = beta2 * s["v"] + (1 - beta2) * g * g
            n = (s["m"] / (1 - beta1**t)) / (torch.sqrt(s["v"] / (1 - beta2**t)) + eps)
            if w.ndim == 2:
                n = scale * (s["P"] @ n if left else n @ s["P"].T)
            w.sub_(lr * n)
    return [w.numpy() for w in ws]


def test_equals_a_torch_rewrite_of_the_galore_adamw_step():
    shapes = ((4, 7), (7, 4), (4,))
    ours = _params(*shapes, seed=3)
    start = [p.data.copy() for p in ours]
    targets = _targets(ours, seed=4)
    hp = dict(rank=2, update_proj_gap=2, scale=0.25, lr=0.05, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    galore = GaLore(ours, **hp)
    _run(galore, ours, targets, 7)
    expected = _torch_galore(start, targets, 7, hp["rank"], hp["update_proj_gap"], hp["scale"], hp["lr"],
                             hp["betas"], hp["eps"], hp["weight_decay"])
    for p, e, s in zip(ours, expected, start):
        assert np.abs(p.data - s).max() > 1e-2
        np.testing.assert_allclose(p.data, e, rtol=0, atol=1e-10)


@pytest.mark.parametrize("base", ["adamw", "adam", "sgd"])
def test_a_state_dict_round_trip_continues_identically(base):
    shapes = ((5, 8), (8, 3), (3,))
    first = _params(*shapes, seed=5)
    targets = _targets(first)
    hp = dict(base=base, rank=2, update_proj_gap=3, lr=0.02, momentum=0.5 if base == "sgd" else 0.0,
              weight_decay=0.01)
    galore = GaLore(first, **hp)
    _run(galore, first, targets, 2)
    saved = json.loads(json.dumps(galore.state_dict(), default=lambda a: a.tolist()))
    second = [Parameter(p.data.copy(), dtype=np.float64) for p in first]
    twin = GaLore(second, **{**hp, "lr": 1.0})
    twin.load_state_dict(saved)
    assert twin.lr == galore.lr and twin.step_count == 2
    np.testing.assert_array_equal(twin.state[0]["projection"], galore.state[0]["projection"])
    _run(galore, first, targets, 5, start=2)          # a refresh at step 4 after the load
    _run(twin, second, targets, 5, start=2)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.data, b.data)


def test_load_state_dict_checks_the_projected_shapes():
    (w,) = _params((5, 8))
    galore = GaLore([w], rank=2)
    _run(galore, [w], _targets([w]), 1)
    saved = galore.state_dict()
    other = GaLore([Parameter(w.data.copy(), dtype=np.float64)], rank=3)
    with pytest.raises(ValueError, match="expected \\(3, 8\\)"):
        other.load_state_dict(saved)


def _digits():
    x, y = load_digits(size=8)
    x = x.reshape(len(x), -1).astype(np.float32) / 255
    (xtr, ytr), _, (xte, yte) = train_val_test_split(x, y, val=0.0, test=0.25, seed=0)
    return xtr, ytr, xte, yte


def _train_mlp(make_optimizer, epochs=12, batch=64):
    xtr, ytr, xte, yte = _digits()
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(64, activation="relu"), nn.Dense(10))
    model.build((None, 64))
    optimizer = make_optimizer(model)
    order = np.random.default_rng(0)
    for _ in range(epochs):
        idx = order.permutation(len(xtr))
        for start in range(0, len(idx), batch):
            rows = idx[start:start + batch]
            optimizer.zero_grad()
            F.cross_entropy(model(xtr[rows]), ytr[rows]).backward()
            optimizer.step()
    accuracy = float((model(xte).numpy().argmax(axis=1) == yte).mean())
    return accuracy, optimizer_state_bytes(optimizer)


def test_rank_4_galore_trains_a_digits_mlp_near_adamw_with_a_fraction_of_the_state():
    begin = time.perf_counter()
    adamw_accuracy, adamw_bytes = _train_mlp(lambda m: AdamW(m, lr=0.003))
    galore_accuracy, galore_bytes = _train_mlp(
        lambda m: GaLore(m, rank=4, update_proj_gap=20, scale=0.25, lr=0.08))
    print(f"digits MLP: AdamW {adamw_accuracy:.3f} ({adamw_bytes} B of state), "
          f"GaLore r=4 {galore_accuracy:.3f} ({galore_bytes} B), {time.perf_counter() - begin:.1f} s")
    assert adamw_accuracy > 0.9
    assert galore_accuracy > adamw_accuracy - 0.05
    assert galore_bytes < 0.2 * adamw_bytes


def test_state_bytes_counts_the_projected_moments_and_the_projection():
    w, b = Parameter(np.zeros((32, 48), np.float32)), Parameter(np.zeros(48, np.float32))
    galore = GaLore([w, b], rank=4)
    w.grad = np.random.default_rng(0).standard_normal((32, 48)).astype(np.float32)
    b.grad = np.ones(48, np.float32)
    galore.step()
    assert galore.state_bytes() == optimizer_state_bytes(galore) == 4 * (32 * 4 + 2 * 4 * 48 + 2 * 48)


@pytest.mark.parametrize("kwargs, match", [
    ({"base": "lion"}, "base"), ({"rank": 0}, "rank"), ({"update_proj_gap": 1.5}, "update_proj_gap"),
    ({"scale": -1.0}, "scale"), ({"betas": (0.9, 1.0)}, "beta2"), ({"momentum": 1.0}, "momentum"),
])
def test_bad_hyperparameters_are_named(kwargs, match):
    with pytest.raises(ValueError, match=f"GaLore: invalid {match}"):
        GaLore(_params((3, 4)), **kwargs)


def test_readme_galore_example_runs():
    printed, names = run_readme_section("Memory-efficient training with GaLore")
    assert "state bytes" in printed
    assert names["galore_bytes"] < names["adamw_bytes"] / 4
