"""Adaptive gradient clipping against a NumPy reference (clipped and unclipped units, dense,
convolution and vector parameters) and the AGC optimizer wrapper."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from lamina import nn
from lamina.optim import AGC, SGD, adaptive_clip_grad, unitwise_norm


def reference_agc(w, g, clipping, eps, unit_axes):
    """The paper's rule, unit by unit: G_i <- lambda max(|W_i|, eps) / |G_i| G_i where the ratio exceeds lambda."""
    w_norm = np.sqrt((w * w).sum(axis=unit_axes, keepdims=True))
    g_norm = np.sqrt((g * g).sum(axis=unit_axes, keepdims=True))
    max_norm = clipping * np.maximum(w_norm, eps)
    return np.where(g_norm > max_norm, g * max_norm / g_norm, g)


def _param(w, g):
    p = lamina.tensor(w, requires_grad=True, dtype=np.float64)
    p.grad = g.copy()
    return p


def _mixed_gradient(w, ratios, unit_axes, seed):
    """A gradient whose unit i has norm ratios[i] * |W_i| (clipped where the ratio exceeds lambda)."""
    g = np.random.default_rng(seed).standard_normal(w.shape)
    w_norm = np.sqrt((w * w).sum(axis=unit_axes, keepdims=True))
    g_norm = np.sqrt((g * g).sum(axis=unit_axes, keepdims=True))
    return g / g_norm * w_norm * np.asarray(ratios).reshape(w_norm.shape)


@pytest.mark.parametrize("shape,unit_axes,ratios", [
    ((5, 4), (0,), [0.001, 0.05, 0.009, 3.0]),                          # Dense (n_in, n_out): a unit per column
    ((4, 3, 3, 2), (1, 2, 3), [0.02, 0.005, 0.5, 0.0099]),              # conv (K, f, f, c_in): a unit per filter
])
def test_matches_the_numpy_reference_on_clipped_and_unclipped_units(shape, unit_axes, ratios):
    rng = np.random.default_rng(0)
    w = rng.standard_normal(shape)
    g = _mixed_gradient(w, ratios, unit_axes, seed=1)
    p = _param(w, g)
    adaptive_clip_grad([p], clipping=0.01, eps=1e-3)
    expected = reference_agc(w, g, 0.01, 1e-3, unit_axes)
    np.testing.assert_allclose(p.grad, expected, rtol=1e-12)
    clipped = np.asarray(ratios) > 0.01
    changed = ~np.isclose(p.grad, g).all(axis=unit_axes)
    assert (changed.reshape(-1) == clipped).all() and clipped.any() and not clipped.all()
    ratio = (unitwise_norm(p.grad) / unitwise_norm(w)).reshape(-1)
    np.testing.assert_allclose(ratio[clipped], 0.01, rtol=1e-9)


def test_vectors_are_one_unit_and_eps_guards_zero_weights():
    bias, g = np.array([0.3, -0.4]), np.array([1.0, 2.0])
    p = _param(bias, g)
    adaptive_clip_grad(p, clipping=0.1, eps=1e-3)
    np.testing.assert_allclose(p.grad, g * 0.1 * 0.5 / np.sqrt(5.0))
    zero = _param(np.zeros((3, 2)), np.ones((3, 2)))
    adaptive_clip_grad([zero], clipping=0.01, eps=1e-3)
    np.testing.assert_allclose(unitwise_norm(zero.grad).reshape(-1), [1e-5, 1e-5])


def test_the_wrapper_clips_all_but_the_excluded_classifier_then_steps():
    model = nn.Sequential(nn.Dense(3, name="hidden"), nn.Dense(2, name="fc"))
    model(lamina.tensor(np.ones((1, 4))))
    opt = AGC(SGD(model.parameters(), lr=1.0), clipping=0.01, exclude=model.layers[1])
    before = {id(p): p.data.copy() for p in model.parameters()}
    grads = {}
    for p in model.parameters():
        p.grad = np.full(p.shape, 10.0, dtype=p.dtype)
        grads[id(p)] = p.grad.copy()
    expected = {id(p): before[id(p)] - reference_agc(before[id(p)], grads[id(p)], 0.01, 1e-3,
                                                     (0,) if p.ndim == 2 else None)
                for p in model.layers[0].parameters()}
    expected.update({id(p): before[id(p)] - grads[id(p)] for p in model.layers[1].parameters()})
    opt.step()
    for p in model.parameters():
        np.testing.assert_allclose(p.data, expected[id(p)], rtol=1e-5)
    assert opt.state_dict() == opt.optimizer.state_dict()


def test_a_trainer_steps_through_the_wrapper_with_each_unit_moving_at_most_lambda_times_its_norm():
    from lamina import functional as F
    from lamina.train import Trainer

    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(8, activation="relu", name="hidden"), nn.Dense(3, name="fc"))
    x = np.random.default_rng(0).standard_normal((16, 5)).astype(np.float32)
    y = np.arange(16) % 3
    model(lamina.tensor(x))
    hidden = model.layers[0].weight
    before = hidden.data.copy()
    opt = AGC(SGD(model, lr=100.0), clipping=0.02, exclude=model.layers[1])
    Trainer(model, lambda scores, labels: F.cross_entropy(scores, labels), opt).fit((x, y), epochs=1, batch_size=16)
    moved = unitwise_norm(hidden.data - before) / unitwise_norm(before)
    assert moved.max() <= 100.0 * 0.02 * (1 + 1e-5) and moved.max() > 100.0 * 0.02 * 0.99


def test_errors():
    with pytest.raises(ValueError, match="adaptive_clip_grad: clipping"):
        adaptive_clip_grad([], clipping=0.0)
    with pytest.raises(TypeError, match="AGC: optimizer"):
        AGC(object())
