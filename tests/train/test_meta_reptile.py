"""Reptile: detached inner SGD on copies, and the update theta + eps * (mean phi - theta)."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from lamina import functional as F
from lamina import nn
from lamina.optim import SGD
from lamina.train.meta import MAML, Reptile


@pytest.fixture(autouse=True)
def f64():
    lamina.set_default_dtype(np.float64)


def _mlp():
    model = nn.Sequential(nn.Dense(5, activation="tanh"), nn.Dense(1))
    model.build((None, 2))
    return model


def _task(seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((6, 2)), rng.standard_normal((6, 1))


def _adapted(reptile, seed, steps=3):
    x, y = _task(seed)
    learner = reptile.clone()
    learner.adapt(lambda: F.mean_squared_error(learner(x), y), steps=steps)
    return learner


def _sgd_by_hand(model, seed, lr, steps=3):
    """The same inner loop with a plain model and lamina's SGD on a copy of the weights."""
    copy = _mlp()
    for p, q in zip(copy.parameters(), model.parameters()):
        p.data[...] = q.data
    opt = SGD(copy.parameters(), lr=lr)
    x, y = _task(seed)
    for _ in range(steps):
        opt.zero_grad()
        F.mean_squared_error(copy(x), y).backward()
        opt.step()
    return [p.numpy() for p in copy.parameters()]


def test_inner_loop_is_plain_sgd_on_a_detached_copy():
    model = _mlp()
    before = [p.numpy().copy() for p in model.parameters()]
    reptile = Reptile(model, inner_lr=0.1, outer_lr=0.5)
    learner = _adapted(reptile, seed=1)
    for adapted, expected in zip(learner.parameters(), _sgd_by_hand(model, 1, 0.1)):
        np.testing.assert_allclose(adapted.numpy(), expected, rtol=1e-12, atol=1e-14)
    assert all(w.requires_grad and w._ctx is None for w in learner.parameters())     # leaves, off theta's graph
    assert all(np.array_equal(p.numpy(), b) for p, b in zip(model.parameters(), before))
    assert all(p.grad is None for p in model.parameters())


def test_step_moves_towards_the_mean_of_the_adapted_weights():
    model = _mlp()
    theta = [p.numpy().copy() for p in model.parameters()]
    reptile = Reptile(model, inner_lr=0.1, outer_lr=0.5)
    learners = [_adapted(reptile, seed) for seed in (1, 2, 3)]
    phis = [[w.numpy() for w in learner.parameters()] for learner in learners]
    reptile.step(learners)
    for k, p in enumerate(model.parameters()):
        mean_phi = np.mean([phi[k] for phi in phis], axis=0)
        np.testing.assert_allclose(p.numpy(), theta[k] + 0.5 * (mean_phi - theta[k]), rtol=1e-12, atol=1e-15)
        assert np.abs(p.numpy() - theta[k]).max() > 1e-4


def test_set_gradients_lets_an_optimizer_make_the_same_move():
    model, twin = _mlp(), _mlp()
    for p, q in zip(twin.parameters(), model.parameters()):
        p.data[...] = q.data
    reptile, reptile_twin = Reptile(model, inner_lr=0.1, outer_lr=0.3), Reptile(twin, inner_lr=0.1)
    reptile.step([_adapted(reptile, seed) for seed in (4, 5)])
    reptile_twin.set_gradients([_adapted(reptile_twin, seed) for seed in (4, 5)])
    SGD(twin.parameters(), lr=0.3).step()
    for p, q in zip(model.parameters(), twin.parameters()):
        np.testing.assert_allclose(q.numpy(), p.numpy(), rtol=1e-12, atol=1e-15)


def test_errors_are_clear():
    reptile = Reptile(_mlp(), inner_lr=0.1)
    with pytest.raises(ValueError, match="Reptile.step: expected at least one adapted learner, got none"):
        reptile.step([])
    other = MAML(_mlp(), lr=0.1).clone()
    with pytest.raises(TypeError, match=r"Reptile.step: learner 0 is not a clone of this Reptile \(got FastLearner\)"):
        reptile.step([other])
    with pytest.raises(ValueError, match="Reptile: outer_lr must be a positive number, got 0"):
        Reptile(_mlp(), inner_lr=0.1, outer_lr=0)
    with pytest.raises(RuntimeError, match="Reptile.adapt: adapt a clone"):
        reptile.adapt(None)
