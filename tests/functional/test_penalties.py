"""The WGAN-GP gradient penalty: value and weight gradients against PyTorch, a flat critic,
and the errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
from helpers import assert_close, randn
from lamina import nn
from lamina.errors import ShapeError
from lamina.functional import gradient_penalty


def _critic(features=3, hidden=5):
    model = nn.Sequential(nn.Dense(hidden), nn.LeakyReLU(0.2), nn.Dense(hidden, activation="tanh"), nn.Dense(1))
    model.build((None, features))
    model.to(np.float64)
    return model


def test_penalty_and_its_weight_gradients_match_torch():
    critic = _critic()
    real, fake, eps = randn(6, 3), randn(6, 3, seed=1), np.random.default_rng(2).uniform(size=6)
    penalty = gradient_penalty(critic, lamina.tensor(real, dtype=np.float64), lamina.tensor(fake, dtype=np.float64),
                               eps=eps)
    penalty.backward()

    layers = [layer for layer in critic if isinstance(layer, nn.Dense)]
    weights = [(torch.tensor(d.weight.numpy(), requires_grad=True), torch.tensor(d.bias.numpy(), requires_grad=True))
               for d in layers]
    (w1, b1), (w2, b2), (w3, b3) = weights
    mixed = torch.tensor(eps[:, None] * real + (1 - eps[:, None]) * fake, requires_grad=True)
    scores = torch.tanh(TF.leaky_relu(mixed @ w1 + b1, 0.2) @ w2 + b2) @ w3 + b3
    (slope,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    expected = ((slope.norm(dim=1) - 1) ** 2).mean()
    expected.backward()

    assert penalty.item() == pytest.approx(expected.item(), rel=1e-10)
    for layer, (w, b) in zip(layers, weights):
        assert_close(layer.weight.grad, w.grad.numpy(), 1e-9, "weight gradient")
        if b.grad is None:                  # the output bias does not change the input gradient
            assert layer.bias.grad is None or not np.any(layer.bias.grad)
        else:
            assert_close(layer.bias.grad, b.grad.numpy(), 1e-9, "bias gradient")


def test_images_take_the_norm_over_every_axis_but_the_first():
    critic = nn.Sequential(nn.Flatten(), nn.Dense(1))
    critic.build((None, 2, 2, 1))
    critic.to(np.float64)
    w = critic[1].weight.numpy().reshape(-1)
    x = lamina.tensor(randn(4, 2, 2, 1), dtype=np.float64)
    # a linear critic has the same input gradient w everywhere: GP = (||w|| - 1)^2
    penalty = gradient_penalty(critic, x, x * 0.5, target=0.5)
    assert penalty.item() == pytest.approx((np.linalg.norm(w) - 0.5) ** 2, rel=1e-9)


def test_a_flat_critic_gets_a_finite_penalty_gradient():
    critic = _critic()
    for p in critic.parameters():
        p.data[...] = 0
    penalty = gradient_penalty(critic, randn(4, 3), randn(4, 3, seed=1))
    penalty.backward()
    assert penalty.item() == pytest.approx(1.0, abs=1e-5)     # (sqrt(1e-12) - 1)^2
    assert all(np.isfinite(p.grad).all() for p in critic.parameters() if p.grad is not None)


def test_eps_comes_from_lamina_generator_when_not_given():
    critic = _critic()
    real, fake = randn(5, 3), randn(5, 3, seed=1)
    lamina.manual_seed(3)
    first = gradient_penalty(critic, real, fake).item()
    lamina.manual_seed(3)
    assert gradient_penalty(critic, real, fake).item() == first
    assert gradient_penalty(critic, real, fake).item() != first


def test_errors_name_the_function_and_shapes():
    critic = _critic()
    with pytest.raises(ShapeError, match=r"gradient_penalty: real and fake .* \(4, 3\) and \(5, 3\)"):
        gradient_penalty(critic, randn(4, 3), randn(5, 3))
    with pytest.raises(ShapeError, match=r"eps must hold one weight per sample \(4\), got shape \(3,\)"):
        gradient_penalty(critic, randn(4, 3), randn(4, 3), eps=np.ones(3))
    with pytest.raises(ShapeError, match=r"one score per sample.*m = 4; it gave \(4, 3\)"):
        gradient_penalty(lambda x: x * 2, randn(4, 3), randn(4, 3))
