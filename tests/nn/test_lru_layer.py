"""LRU (Orvieto et al. 2023) and the complex linear scan under it: eigenvalues on the ring
at initialisation, the scan equals the step loop (float64), values and gradients equal a
torch rewrite with complex tensors, gradient checks and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch, randn
from lamina import ShapeError
from lamina.functional.linear_scan import complex_linear_scan
from lamina.nn.lru import LRU


@pytest.fixture(autouse=True)
def f64():
    lamina.set_default_dtype(np.float64)


def torch_complex_loop(a_re, a_im, b_re, b_im, h0_re, h0_im):
    a, b, h = torch.complex(a_re, a_im), torch.complex(b_re, b_im), torch.complex(h0_re, h0_im)
    states = []
    for t in range(a.shape[1]):
        h = a[:, t] * h + b[:, t]
        states.append(h)
    states = torch.stack(states, 1)
    return [states.real, states.imag]


def torch_lru(layer_params, x, h0_re, h0_im):
    nu_log, theta_log, gamma_log, b_re, b_im, c_re, c_im, d = layer_params
    lam = torch.exp(torch.complex(-torch.exp(nu_log), torch.exp(theta_log)))
    gamma = torch.exp(gamma_log)
    b = torch.complex(b_re, b_im)
    c = torch.complex(c_re, c_im)
    h, outputs = torch.complex(h0_re, h0_im), []
    for t in range(x.shape[1]):
        h = lam * h + gamma * (x[:, t].to(b.dtype) @ b)
        outputs.append((h @ c).real + d * x[:, t])
    return torch.stack(outputs, 1)


NAMES = ("nu_log", "theta_log", "gamma_log", "B_re", "B_im", "C_re", "C_im", "D")


@pytest.mark.parametrize("steps", [1, 6, 9])
def test_complex_scan_matches_torch(steps):
    arrays = [randn(2, steps, 3, seed=k, scale=0.7) for k in range(4)] + [randn(2, 3, seed=5), randn(2, 3, seed=6)]
    compare_with_torch(complex_linear_scan, torch_complex_loop, *arrays, dtype=np.float64)
    assert check_gradients(lambda *t: complex_linear_scan(*t)[0] * 2 + complex_linear_scan(*t)[1],
                           *[a[:1, :4] for a in arrays[:4]], arrays[4][:1], arrays[5][:1])


def test_eigenvalues_lie_in_ring():
    layer = LRU(4, 256, r_min=0.4, r_max=0.9, max_phase=np.pi / 4)
    lam_re, lam_im = (t.numpy() for t in layer.eigenvalues())
    modulus, phase = np.hypot(lam_re, lam_im), np.arctan2(lam_im, lam_re)
    assert modulus.min() >= 0.4 - 1e-12 and modulus.max() <= 0.9 + 1e-12
    assert modulus.min() < 0.5 and modulus.max() > 0.85       # the ring is covered, not a point
    assert (phase >= 0).all() and (phase <= np.pi / 4 + 1e-12).all()
    np.testing.assert_allclose(np.exp(2 * layer.gamma_log.numpy()), 1 - modulus ** 2, rtol=1e-12)


def test_scan_equals_steps_and_torch_rewrite():
    layer = LRU(3, 5, r_min=0.5, r_max=0.95)
    x, h0_re, h0_im = randn(2, 8, 3, seed=1), randn(2, 5, seed=2), randn(2, 5, seed=3)
    out = layer(x, (h0_re, h0_im)).numpy()
    state, steps = (h0_re, h0_im), []
    for t in range(8):
        y, state = layer.step(x[:, t], state)
        steps.append(y.numpy())
    np.testing.assert_allclose(np.stack(steps, 1), out, rtol=0, atol=1e-10)

    params = [getattr(layer, n) for n in NAMES]
    inputs = [lamina.tensor(a, requires_grad=True) for a in (x, h0_re, h0_im)]
    up = randn(2, 8, 3, seed=4)
    (layer(inputs[0], tuple(inputs[1:])) * lamina.tensor(up)).sum().backward()
    theirs_params = [torch.tensor(p.numpy(), requires_grad=True) for p in params]
    theirs_inputs = [torch.tensor(a, requires_grad=True) for a in (x, h0_re, h0_im)]
    expected = torch_lru(theirs_params, *theirs_inputs)
    np.testing.assert_allclose(out, expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    (expected * torch.tensor(up)).sum().backward()
    for ours, theirs in zip(params + inputs, theirs_params + theirs_inputs):
        np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_gradcheck_layer():
    layer = LRU(2, 3, r_min=0.3, r_max=0.8)
    assert check_gradients(lambda x: layer(x), randn(1, 4, 2, seed=7))


def test_errors():
    with pytest.raises(ValueError, match="r_min=0.9, r_max=0.5"):
        LRU(2, 3, r_min=0.9, r_max=0.5)
    layer = LRU(2, 3)
    with pytest.raises(ShapeError, match=r"expected \(N, state_size\) = \(1, 3\)"):
        layer(randn(1, 4, 2), (np.zeros((1, 4)), np.zeros((1, 4))))
    with pytest.raises(ShapeError, match="empty"):
        layer(np.zeros((1, 0, 2)))
    with pytest.raises(ShapeError, match="features 2"):
        layer.step(randn(1, 3))
