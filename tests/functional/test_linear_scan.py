"""linear_scan and log_linear_scan: the log-depth scan equals the step loop (float64), its
gradients equal torch autograd through the loop, gradient and second-derivative checks,
the log-space version, and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, check_second_derivatives, compare_with_torch, positive, randn
from lamina import ShapeError
from lamina.functional.linear_scan import linear_scan, log_linear_scan


@pytest.fixture(autouse=True)
def f64():
    lamina.set_default_dtype(np.float64)


def torch_loop(a, b, h0):
    h, states = h0, []
    for t in range(a.shape[1]):
        h = a[:, t] * h + b[:, t]
        states.append(h)
    return torch.stack(states, 1)


@pytest.mark.parametrize("steps", [1, 2, 5, 8, 13])
def test_parallel_scan_equals_loop(steps):
    a, b, h0 = randn(2, steps, 3, seed=1), randn(2, steps, 3, seed=2), randn(2, 3, seed=3)
    parallel = linear_scan(lamina.tensor(a), lamina.tensor(b), lamina.tensor(h0)).numpy()
    loop = torch_loop(torch.tensor(a), torch.tensor(b), torch.tensor(h0)).numpy()
    assert parallel.dtype == np.float64
    np.testing.assert_allclose(parallel, loop, rtol=0, atol=1e-12)
    sequential = linear_scan(a, b, h0, method="sequential").numpy()
    np.testing.assert_allclose(sequential, loop, rtol=0, atol=1e-12)


def test_default_initial_state_is_zero():
    a, b = randn(1, 6, 2, seed=4), randn(1, 6, 2, seed=5)
    np.testing.assert_allclose(linear_scan(a, b).numpy(), linear_scan(a, b, np.zeros((1, 2))).numpy())


def test_extra_feature_axes():
    a, b, h0 = randn(2, 7, 2, 3, seed=6), randn(2, 7, 2, 3, seed=7), randn(2, 2, 3, seed=8)
    compare_with_torch(linear_scan, torch_loop, a, b, h0, dtype=np.float64)


@pytest.mark.parametrize("steps", [1, 6, 11])
def test_values_and_gradients_match_torch_loop(steps):
    a, b, h0 = randn(2, steps, 3, seed=9), randn(2, steps, 3, seed=10), randn(2, 3, seed=11)
    compare_with_torch(linear_scan, torch_loop, a, b, h0, dtype=np.float64)
    lamina.set_default_dtype(np.float32)
    compare_with_torch(linear_scan, torch_loop, a, b, h0)


def test_gradcheck_and_second_derivatives():
    a, b, h0 = randn(1, 5, 2, seed=12), randn(1, 5, 2, seed=13), randn(1, 2, seed=14)
    assert check_gradients(linear_scan, a, b, h0)
    assert check_second_derivatives(linear_scan, a, b, h0)


def test_log_scan_matches_torch_loop():
    a, b, h0 = positive(2, 9, 3, seed=15, low=0.2, high=0.99), positive(2, 9, 3, seed=16), positive(2, 3, seed=17)
    compare_with_torch(
        lambda la, lb, lh: lamina.functional.exp(log_linear_scan(la, lb, lh)),
        lambda la, lb, lh: torch_loop(la.exp(), lb.exp(), lh.exp()),
        np.log(a), np.log(b), np.log(h0), dtype=np.float64)
    no_state = np.exp(log_linear_scan(np.log(a), np.log(b)).numpy())
    np.testing.assert_allclose(no_state, linear_scan(a, b).numpy(), rtol=1e-12)
    assert check_gradients(log_linear_scan, np.log(a[:1, :4]), np.log(b[:1, :4]), np.log(h0[:1]))


def test_errors():
    a = randn(2, 4, 3)
    with pytest.raises(ShapeError, match=r"linear_scan: the initial state h0 has shape \(3,\)"):
        linear_scan(a, a, np.zeros(3))
    with pytest.raises(ShapeError, match="same shape"):
        linear_scan(a, a[:, :3])
    with pytest.raises(ShapeError, match="empty"):
        linear_scan(a[:, :0], a[:, :0])
    with pytest.raises(ShapeError, match="empty"):
        log_linear_scan(a[:, :0], a[:, :0])
    with pytest.raises(ValueError, match="method"):
        linear_scan(a, a, method="blelloch")
