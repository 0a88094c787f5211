"""Pooling on edge values against PyTorch (float64): windows of zeros in LP pooling, and NaN or
inf in one channel or one window, which must reach only the outputs that read it."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
import lamina.functional as F


def assert_close(actual, expected, tol: float, what: str = "values") -> None:
    """Equal within ``tol``, NaN where (and only where) the reference is NaN."""
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, rtol=tol, atol=tol, err_msg=what)


def _nchw(x: np.ndarray) -> np.ndarray:
    return np.moveaxis(x, -1, 1)


def _nhwc(t: torch.Tensor) -> np.ndarray:
    return np.moveaxis(t.detach().numpy(), 1, -1)


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0])
def test_lp_pool_gradient_of_an_all_zero_window_is_zero_as_torch(p):
    x = np.zeros((1, 2, 6, 2))
    x[0, :, 2:4, 0] = [[1.0, 2.0], [0.5, -1.0]]
    x[0, :, 4:, 1] = [[0.5, 0.0], [1.5, 2.0]]
    grad = np.random.default_rng(0).standard_normal((1, 1, 3, 2))
    lx = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    y = F.lp_pool2d(lx, p, 2)
    (y * lamina.tensor(grad, dtype=np.float64)).sum().backward()
    tx = torch.tensor(_nchw(x), requires_grad=True)
    ty = TF.lp_pool2d(tx, p, 2)
    ty.backward(torch.tensor(_nchw(grad)))
    assert_close(y.numpy(), _nhwc(ty), 1e-12)
    assert_close(lx.grad, _nhwc(tx.grad), 1e-12, "gradient")


def test_lp_pool1d_and_3d_gradients_of_zero_windows_are_zero():
    x1 = np.zeros((1, 4, 1))
    x1[0, 2:, 0] = [1.0, 2.0]
    lx = lamina.tensor(x1, requires_grad=True, dtype=np.float64)
    F.lp_pool1d(lx, 2.0, 2).sum().backward()
    assert_close(lx.grad.ravel(), [0.0, 0.0, 1 / np.sqrt(5), 2 / np.sqrt(5)], 1e-12)
    x3 = np.zeros((1, 2, 2, 4, 1))
    x3[0, :, :, 3, 0] = 1.0
    for ceil_mode, kernel in ((False, 2), (True, (2, 2, 3))):
        lx = lamina.tensor(x3, requires_grad=True, dtype=np.float64)
        F.lp_pool3d(lx, 2.0, kernel, 2, ceil_mode).sum().backward()
        tx = torch.tensor(np.moveaxis(x3, -1, 1), requires_grad=True)
        TF.lp_pool3d(tx, 2.0, kernel, 2, ceil_mode).sum().backward()
        assert_close(lx.grad, np.moveaxis(tx.grad.numpy(), 1, -1), 1e-12, f"gradient (ceil_mode={ceil_mode})")


def _with_bad_pixels(shape, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).uniform(0.5, 2.0, shape)
    x[0, 0, 1, 1] = np.nan
    x[-1, -1, 0, -1] = np.inf
    x[-1, 1, -1, 0] = -np.inf
    return x


@pytest.mark.parametrize("name, ours, theirs", [
    ("avg_pool2d", lambda x: F.avg_pool2d(x, 2), lambda t: TF.avg_pool2d(t, 2)),
    ("avg_pool2d_3x2", lambda x: F.avg_pool2d(x, (3, 2)), lambda t: TF.avg_pool2d(t, (3, 2))),
    ("adaptive_avg_pool2d", lambda x: F.adaptive_avg_pool2d(x, (2, 3)), lambda t: TF.adaptive_avg_pool2d(t, (2, 3))),
    ("lp_pool2d", lambda x: F.lp_pool2d(x, 2.0, 2), lambda t: TF.lp_pool2d(t, 2.0, 2)),
    ("adaptive_avg_pool2d_uneven", lambda x: F.adaptive_avg_pool2d(x, (4, 5)),
     lambda t: TF.adaptive_avg_pool2d(t, (4, 5))),
])
def test_a_non_finite_value_stays_in_its_channel_and_window(name, ours, theirs):
    x = _with_bad_pixels((2, 6, 6, 3))
    y = ours(lamina.tensor(x, dtype=np.float64)).numpy()
    assert_close(y, _nhwc(theirs(torch.tensor(_nchw(x)))), 1e-12, name)
    assert np.isfinite(y).sum() > y.size // 2


def test_adaptive_avg_pool1d_and_3d_with_a_nan_match_torch():
    x = np.ones((1, 6, 2))
    x[0, 1, 0] = np.nan
    y = F.adaptive_avg_pool1d(lamina.tensor(x, dtype=np.float64), 3).numpy()
    assert_close(y, np.moveaxis(TF.adaptive_avg_pool1d(torch.tensor(np.moveaxis(x, -1, 1)), 3).numpy(), 1, -1), 1e-12)
    x3 = np.ones((1, 2, 4, 4, 2))
    x3[0, 0, 0, 0, 1] = np.nan
    y = F.adaptive_avg_pool3d(lamina.tensor(x3, dtype=np.float64), 2).numpy()
    expected = TF.adaptive_avg_pool3d(torch.tensor(np.moveaxis(x3, -1, 1)), 2).numpy()
    assert_close(y, np.moveaxis(expected, 1, -1), 1e-12)


def test_avg_pool2d_gradient_of_a_non_finite_upstream_stays_in_its_channel():
    grad = np.ones((1, 2, 2, 3))
    grad[0, 0, 1, 2] = np.nan
    grad[0, 1, 0, 0] = np.inf
    lx = lamina.tensor(np.ones((1, 4, 4, 3)), requires_grad=True, dtype=np.float64)
    F.avg_pool2d(lx, 2).backward(grad)
    tx = torch.ones((1, 3, 4, 4), dtype=torch.float64, requires_grad=True)
    TF.avg_pool2d(tx, 2).backward(torch.tensor(_nchw(grad)))
    assert_close(lx.grad, _nhwc(tx.grad), 1e-12, "gradient")


@pytest.mark.parametrize("name, ours, theirs", [
    ("max_pool2d", lambda x: F.max_pool2d(x, 2), lambda t: TF.max_pool2d(t, 2)),
    ("max_pool2d_overlapping", lambda x: F.max_pool2d(x, 3, 1, 1), lambda t: TF.max_pool2d(t, 3, 1, 1)),
    ("adaptive_max_pool2d", lambda x: F.adaptive_max_pool2d(x, 1), lambda t: TF.adaptive_max_pool2d(t, 1)),
    ("adaptive_max_pool2d_uneven", lambda x: F.adaptive_max_pool2d(x, (3, 4)),
     lambda t: TF.adaptive_max_pool2d(t, (3, 4))),
])
def test_max_pooling_sends_the_gradient_to_the_last_nan_of_a_window_as_torch(name, ours, theirs):
    x = np.random.default_rng(1).standard_normal((2, 4, 6, 2))
    x[0, 1, 2, 0] = x[0, 1, 4, 0] = x[0, 2, 1, 0] = np.nan
    x[1, 3, 5, 1] = np.nan
    grad_shape = ours(lamina.tensor(x, dtype=np.float64)).shape
    grad = np.random.default_rng(2).standard_normal(grad_shape)
    lx = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    y = ours(lx)
    y.backward(grad)
    tx = torch.tensor(_nchw(x), requires_grad=True)
    ty = theirs(tx)
    ty.backward(torch.tensor(_nchw(grad)))
    assert_close(y.numpy(), _nhwc(ty), 1e-12, name)
    assert_close(lx.grad, _nhwc(tx.grad), 1e-12, f"{name} gradient")
