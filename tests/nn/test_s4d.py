"""S4D (Gu et al. 2022): the Vandermonde kernel equals the impulse response of the unrolled
ZOH recurrence, the FFT convolution equals step-by-step generation (float64), values and
gradients equal a torch rewrite of the recurrence, S4D-Lin/Inv initialisation, a gradient
check and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, randn
from lamina import ShapeError
from lamina.nn.ssm import S4D


@pytest.fixture(autouse=True)
def f64():
    lamina.set_default_dtype(np.float64)


def numpy_impulse_response(layer, length):
    a = -np.exp(layer.log_A_real.numpy()) + 1j * layer.A_imag.numpy()
    dt = np.exp(layer.log_dt.numpy())[:, None]
    a_bar, b_bar = np.exp(dt * a), (np.exp(dt * a) - 1) / a
    c = layer.C_re.numpy() + 1j * layer.C_im.numpy()
    s, response = np.zeros_like(a), []
    for t in range(length):
        s = a_bar * s + b_bar * (1.0 if t == 0 else 0.0)
        response.append(2 * (c * s).sum(-1).real)
    return np.stack(response, 1)


@pytest.mark.parametrize("init", ["lin", "inv"])
def test_kernel_is_impulse_response(init):
    layer = S4D(3, 4, init=init, dt_min=0.01, dt_max=0.5)
    np.testing.assert_allclose(layer.kernel(12).numpy(), numpy_impulse_response(layer, 12), rtol=1e-10, atol=1e-12)


def test_initialisation():
    n = np.arange(6)
    lin, inv = S4D(2, 6, init="lin"), S4D(2, 6, init="inv")
    np.testing.assert_allclose(lin.A_imag.numpy()[1], np.pi * n)
    np.testing.assert_allclose(inv.A_imag.numpy()[0], 6 / np.pi * (6 / (2 * n + 1) - 1))
    np.testing.assert_allclose(-np.exp(lin.log_A_real.numpy()), -0.5)
    dt = np.exp(S4D(64, 2, dt_min=1e-3, dt_max=1e-1).log_dt.numpy())
    assert dt.min() >= 1e-3 and dt.max() <= 1e-1


def torch_s4d(params, x):
    log_a_real, a_imag, c_re, c_im, log_dt, d, w, bias = params
    a = torch.complex(-torch.exp(log_a_real), a_imag)
    dt = torch.exp(log_dt)[:, None]
    a_bar, b_bar = torch.exp(dt * a), (torch.exp(dt * a) - 1) / a
    c = torch.complex(c_re, c_im)
    s = torch.zeros(x.shape[0], *a.shape, dtype=a.dtype)
    outputs = []
    for t in range(x.shape[1]):
        s = a_bar * s + b_bar * x[:, t, :, None]
        outputs.append(2 * (c * s).sum(-1).real + d * x[:, t])
    y = torch.stack(outputs, 1)
    return torch.nn.functional.glu(torch.nn.functional.gelu(y) @ w + bias, dim=-1)


def test_convolution_equals_steps_and_torch_rewrite():
    layer = S4D(3, 4, dt_min=0.05, dt_max=0.5)
    x = randn(2, 11, 3, seed=1)
    out = layer(x).numpy()
    state, steps = None, []
    for t in range(11):
        y, state = layer.step(x[:, t], state)
        steps.append(y.numpy())
    np.testing.assert_allclose(np.stack(steps, 1), out, rtol=0, atol=1e-10)

    params = [p for _, p in layer.named_parameters()]
    xl = lamina.tensor(x, requires_grad=True)
    up = randn(2, 11, 3, seed=2)
    (layer(xl) * lamina.tensor(up)).sum().backward()
    theirs = [torch.tensor(p.numpy(), requires_grad=True) for p in params]
    xt = torch.tensor(x, requires_grad=True)
    expected = torch_s4d(theirs, xt)
    np.testing.assert_allclose(out, expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    (expected * torch.tensor(up)).sum().backward()
    for ours, ref in zip(params + [xl], theirs + [xt]):
        np.testing.assert_allclose(ours.grad, ref.grad.numpy(), rtol=1e-8, atol=1e-11)


def test_gradcheck():
    layer = S4D(2, 2, dt_min=0.1, dt_max=0.5)
    assert check_gradients(lambda x: layer(x), randn(1, 5, 2, seed=3))


def test_errors():
    layer = S4D(2, 3)
    with pytest.raises(ShapeError, match="empty"):
        layer(np.zeros((1, 0, 2)))
    with pytest.raises(ShapeError, match="features 2"):
        layer(randn(1, 4, 3))
    with pytest.raises(ShapeError, match=r"\(1, 2, 3\) each"):
        layer.step(randn(1, 2), (np.zeros((1, 2, 2)), np.zeros((1, 2, 2))))
    with pytest.raises(ValueError, match="dt_min=0.5, dt_max=0.1"):
        S4D(2, 3, dt_min=0.5, dt_max=0.1)
    with pytest.raises(ValueError, match="init"):
        S4D(2, 3, init="legs")
