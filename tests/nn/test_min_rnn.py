"""MinGRU and MinLSTM (Feng et al. 2024): the parallel scan, the step loop, the log-space
scan and step-by-step generation agree (float64); values and gradients equal a torch
rewrite of the papers' recurrences; gradient checks; a small learning task; errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, randn, run_readme_section
from lamina import ShapeError
from lamina.nn.min_rnn import MinGRU, MinLSTM, log_positive_activation, positive_activation


@pytest.fixture(autouse=True)
def f64():
    lamina.set_default_dtype(np.float64)


def torch_g(x):
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


def torch_min_rnn(cls, x, kernel, bias, h0, positive_values):
    """The papers' sequential recurrences written out in torch."""
    hidden = h0.shape[-1]
    parts = torch.split(x @ kernel + bias, hidden, dim=-1)
    h, states = h0, []
    for t in range(x.shape[1]):
        if cls is MinGRU:
            z = torch.sigmoid(parts[0][:, t])
            forget, take = 1 - z, z
        else:
            f, i = torch.sigmoid(parts[0][:, t]), torch.sigmoid(parts[1][:, t])
            forget, take = f / (f + i), i / (f + i)
        candidate = parts[-1][:, t]
        h = forget * h + take * (torch_g(candidate) if positive_values else candidate)
        states.append(h)
    return torch.stack(states, 1)


def run_steps(layer, x, state):
    outputs = []
    for t in range(x.shape[1]):
        y, state = layer.step(x[:, t], state)
        outputs.append(y.numpy())
    return np.stack(outputs, 1)


@pytest.mark.parametrize("cls", [MinGRU, MinLSTM])
@pytest.mark.parametrize("mode", ["parallel", "sequential", "log"])
def test_forms_agree_and_match_torch(cls, mode):
    layer = cls(3, 4, mode=mode)
    x = randn(2, 9, 3, seed=1)
    h0 = np.abs(randn(2, 4, seed=2)) + 0.1
    out = layer(x, h0).numpy()
    np.testing.assert_allclose(run_steps(layer, x, h0), out, rtol=0, atol=1e-10)
    if mode != "log":
        layer.mode = "sequential" if mode == "parallel" else "parallel"
        np.testing.assert_allclose(layer(x, h0).numpy(), out, rtol=0, atol=1e-10)
        layer.mode = mode

    xl = lamina.tensor(x, requires_grad=True)
    hl = lamina.tensor(h0, requires_grad=True)
    up = randn(2, 9, 4, seed=3)
    (layer(xl, hl) * lamina.tensor(up)).sum().backward()
    xt, ht = torch.tensor(x, requires_grad=True), torch.tensor(h0, requires_grad=True)
    kt = torch.tensor(layer.kernel.numpy(), requires_grad=True)
    bt = torch.tensor(layer.bias.numpy(), requires_grad=True)
    expected = torch_min_rnn(cls, xt, kt, bt, ht, positive_values=mode == "log")
    (expected * torch.tensor(up)).sum().backward()
    np.testing.assert_allclose(out, expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    for ours, theirs in [(xl.grad, xt.grad), (hl.grad, ht.grad), (layer.kernel.grad, kt.grad),
                         (layer.bias.grad, bt.grad)]:
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("cls", [MinGRU, MinLSTM])
def test_zero_initial_state_and_log_mode_without_state(cls):
    layer = cls(2, 3, mode="log")
    x = randn(1, 5, 2, seed=4)
    out = layer(x).numpy()
    np.testing.assert_allclose(run_steps(layer, x, None), out, rtol=0, atol=1e-10)
    assert (out > 0).all()
    layer.mode = "parallel"
    np.testing.assert_allclose(run_steps(layer, x, None), layer(x).numpy(), rtol=0, atol=1e-10)


def test_positive_activation():
    x = np.array([-3.0, -0.5, 0.0, 0.25, 2.0])
    expected = np.where(x >= 0, x + 0.5, 1 / (1 + np.exp(-x)))
    np.testing.assert_allclose(positive_activation(lamina.tensor(x)).numpy(), expected)
    np.testing.assert_allclose(log_positive_activation(lamina.tensor(x)).numpy(), np.log(expected))


@pytest.mark.parametrize("cls", [MinGRU, MinLSTM])
@pytest.mark.parametrize("mode", ["parallel", "log"])
def test_gradcheck(cls, mode):
    layer = cls(2, 2, mode=mode)
    assert check_gradients(lambda x, h: layer(x, h), randn(1, 4, 2, seed=5), np.abs(randn(1, 2, seed=6)) + 0.2)


def test_errors():
    layer = MinGRU(3, 4)
    with pytest.raises(ShapeError, match=r"MinGRU: the state has shape \(2, 3\), expected"):
        layer(randn(2, 5, 3), np.zeros((2, 3)))
    with pytest.raises(ShapeError, match="empty"):
        layer(np.zeros((2, 0, 3)))
    with pytest.raises(ShapeError, match="input_size 3"):
        layer(randn(2, 5, 2))
    with pytest.raises(ShapeError, match=r"\(N, input_size\)"):
        layer.step(randn(2, 5, 3))
    with pytest.raises(ValueError, match="mode"):
        MinLSTM(3, 4, mode="scan")


def test_two_layer_stack_learns_sign_of_long_sum():
    """Two stacked MinGRUs and a linear readout learn whether the sum of 64 noisy +-1 inputs
    is positive (an answer that depends on every step) within a few seconds."""
    rng = np.random.default_rng(0)
    lamina.set_default_dtype(np.float32)
    from lamina import nn, optim

    def batch(n):
        x = rng.choice([-1.0, 1.0], size=(n, 64, 1)) * rng.uniform(0.5, 1.5, size=(n, 64, 1))
        return x.astype(np.float32), (x.sum(axis=(1, 2)) > 0).astype(np.float32)

    first, second, head = MinGRU(1, 16), MinGRU(16, 16), nn.Dense(1)
    head.build((None, 16))

    def model(x):
        return head(second(first(x))[:, -1])[:, 0]

    params = list(first.parameters()) + list(second.parameters()) + list(head.parameters())
    opt = optim.Adam(params, lr=0.01)
    for _ in range(400):
        x, y = batch(64)
        loss = lamina.functional.binary_cross_entropy_with_logits(model(x), lamina.tensor(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y = batch(512)
    accuracy = float(((model(x).numpy() > 0) == (y > 0.5)).mean())
    assert accuracy > 0.85, accuracy


def test_readme_section():
    printed, _ = run_readme_section("Linear recurrences and state-space layers")
    lines = printed.splitlines()
    np.testing.assert_allclose(np.array(lines[0].strip("[]").split(), dtype=float), [1, 1.5, 1.75, 1.875])
    assert lines[1:] == ["MinGRU (2, 16, 8) True", "S4D (2, 16, 3) True", "mLSTM (2, 16, 8) True"]
