"""sLSTM (xLSTM, Beck et al. 2024): the stabilised layer equals a torch rewrite of the
unstabilised recurrence in values and gradients, forward equals step-by-step generation,
the stabiliser keeps huge input gates finite, a gradient check and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, randn
from lamina import ShapeError
from lamina.nn.xlstm import sLSTM


@pytest.fixture(autouse=True)
def f64():
    lamina.set_default_dtype(np.float64)


def torch_unstabilised(kernel, recurrent, bias, x, d):
    h = c = n = torch.zeros(x.shape[0], d, dtype=x.dtype)
    outputs = []
    for t in range(x.shape[1]):
        z, o, i_pre, f_pre = torch.split(x[:, t] @ kernel + h @ recurrent + bias, d, dim=-1)
        c = torch.sigmoid(f_pre) * c + torch.exp(i_pre) * torch.tanh(z)
        n = torch.sigmoid(f_pre) * n + torch.exp(i_pre)
        h = torch.sigmoid(o) * c / n
        outputs.append(h)
    return torch.stack(outputs, 1)


def test_matches_unstabilised_torch_and_steps():
    layer = sLSTM(3, 4)
    x = randn(2, 7, 3, seed=1)
    xl = lamina.tensor(x, requires_grad=True)
    out = layer(xl)
    state, steps = None, []
    for t in range(7):
        y, state = layer.step(x[:, t], state)
        steps.append(y.numpy())
    np.testing.assert_allclose(np.stack(steps, 1), out.numpy(), rtol=0, atol=1e-12)
    up = randn(2, 7, 4, seed=2)
    (out * lamina.tensor(up)).sum().backward()
    params = [layer.kernel, layer.recurrent_kernel, layer.bias]
    theirs = [torch.tensor(p.numpy(), requires_grad=True) for p in params]
    xt = torch.tensor(x, requires_grad=True)
    expected = torch_unstabilised(*theirs, xt, 4)
    np.testing.assert_allclose(out.numpy(), expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    (expected * torch.tensor(up)).sum().backward()
    for ours, ref in zip(params + [xl], theirs + [xt]):
        np.testing.assert_allclose(ours.grad, ref.grad.numpy(), rtol=1e-8, atol=1e-11)


def test_stabiliser_keeps_large_input_gates_finite():
    layer = sLSTM(2, 3)
    bias = layer.bias.numpy().copy()
    bias[6:9] = 800.0                      # input gates exp(800): overflow unstabilised
    layer.bias.data[...] = bias
    x = randn(1, 5, 2, seed=3)
    assert np.isfinite(layer(x).numpy()).all()
    unstable = torch_unstabilised(*(torch.tensor(p.numpy()) for p in (layer.kernel, layer.recurrent_kernel)),
                                  torch.tensor(bias), torch.tensor(x), 3)
    assert not np.isfinite(unstable.numpy()).all()


def test_gradcheck():
    layer = sLSTM(2, 2)
    assert check_gradients(lambda x: layer(x), randn(1, 4, 2, seed=4))


def test_errors():
    layer = sLSTM(2, 3)
    with pytest.raises(ShapeError, match="empty"):
        layer(np.zeros((1, 0, 2)))
    with pytest.raises(ShapeError, match=r"four arrays of shape \(1, 3\)"):
        layer.step(randn(1, 2), tuple(lamina.tensor(np.zeros((1, 2))) for _ in range(4)))
