"""mLSTM (xLSTM, Beck et al. 2024): the parallel form equals the stabilised recurrence
(float64), both equal a torch rewrite of the unstabilised recurrence in values and
gradients, the stabiliser keeps large input gates finite, a gradient check and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, randn
from lamina import ShapeError
from lamina.nn.xlstm import mLSTM


@pytest.fixture(autouse=True)
def f64():
    lamina.set_default_dtype(np.float64)


def torch_unstabilised(kernel, bias, x, d):
    mixed = x @ kernel + bias
    q, k, v, o = (mixed[..., j * d:(j + 1) * d] for j in range(4))
    k, o = k / d ** 0.5, torch.sigmoid(o)
    i_gate, f_gate = torch.exp(mixed[..., 4 * d]), torch.sigmoid(mixed[..., 4 * d + 1])
    c = torch.zeros(x.shape[0], d, d, dtype=x.dtype)
    n = torch.zeros(x.shape[0], d, dtype=x.dtype)
    outputs = []
    for t in range(x.shape[1]):
        c = f_gate[:, t, None, None] * c + i_gate[:, t, None, None] * v[:, t, :, None] * k[:, t, None, :]
        n = f_gate[:, t, None] * n + i_gate[:, t, None] * k[:, t]
        denominator = torch.clamp((n * q[:, t]).sum(-1, keepdim=True).abs(), min=1.0)
        outputs.append(o[:, t] * (c @ q[:, t, :, None])[..., 0] / denominator)
    return torch.stack(outputs, 1)


def run_steps(layer, x):
    state, outputs = None, []
    for t in range(x.shape[1]):
        y, state = layer.step(x[:, t], state)
        outputs.append(y.numpy())
    return np.stack(outputs, 1)


@pytest.mark.parametrize("steps", [1, 7])
def test_parallel_equals_recurrent_and_torch(steps):
    layer = mLSTM(3, 4)
    x = randn(2, steps, 3, seed=1)
    out = layer(x).numpy()
    np.testing.assert_allclose(run_steps(layer, x), out, rtol=0, atol=1e-10)

    xl = lamina.tensor(x, requires_grad=True)
    up = randn(2, steps, 4, seed=2)
    (layer(xl) * lamina.tensor(up)).sum().backward()
    kt, bt = (torch.tensor(p.numpy(), requires_grad=True) for p in (layer.kernel, layer.bias))
    xt = torch.tensor(x, requires_grad=True)
    expected = torch_unstabilised(kt, bt, xt, 4)
    np.testing.assert_allclose(out, expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    (expected * torch.tensor(up)).sum().backward()
    for ours, ref in [(xl.grad, xt.grad), (layer.kernel.grad, kt.grad), (layer.bias.grad, bt.grad)]:
        np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-8, atol=1e-11)


def test_stabiliser_keeps_large_input_gates_finite():
    layer = mLSTM(2, 3)
    bias = layer.bias.numpy().copy()
    bias[-2] = 800.0                       # exp(800) overflows float64
    layer.bias.data[...] = bias
    x = randn(1, 6, 2, seed=3)
    out = layer(x).numpy()
    assert np.isfinite(out).all()
    np.testing.assert_allclose(run_steps(layer, x), out, rtol=1e-10, atol=1e-12)
    with np.errstate(over="ignore", invalid="ignore"):
        unstable = torch_unstabilised(torch.tensor(layer.kernel.numpy()), torch.tensor(bias), torch.tensor(x), 3)
    assert not np.isfinite(unstable.numpy()).all()


def test_gradcheck():
    layer = mLSTM(2, 2)
    assert check_gradients(lambda x: layer(x), randn(1, 4, 2, seed=4))
    assert check_gradients(lambda x: layer.step(x)[0], randn(2, 2, seed=5))


def test_errors():
    layer = mLSTM(2, 3)
    with pytest.raises(ShapeError, match="empty"):
        layer(np.zeros((1, 0, 2)))
    with pytest.raises(ShapeError, match="input_size 2"):
        layer(randn(1, 4, 3))
    bad = (lamina.tensor(np.zeros((1, 2, 2))), lamina.tensor(np.zeros((1, 3))), lamina.tensor(np.zeros(1)))
    with pytest.raises(ShapeError, match=r"expected \(1, 3, 3\)"):
        layer.step(randn(1, 2), bad)
