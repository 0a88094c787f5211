"""KalmanFilter and kalman_log_likelihood: filtered, smoothed and predicted moments against
brute-force Gaussian conditioning of the full joint distribution, the log-likelihood against
the joint normal density, gradients against a torch rewrite, and a noise variance learned by
gradient against the maximum-likelihood estimate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize_scalar

import lamina
from helpers import assert_close, check_gradients, compare_with_torch
from lamina.errors import ShapeError
from lamina.models import KalmanFilter, kalman_log_likelihood
from lamina.optim import LBFGS


def model():
    """A damped oscillator observed through two sensors (d = 2, k = 2)."""
    F = np.array([[0.9, 0.2], [-0.3, 0.8]])
    H = np.array([[1.0, 0.0], [0.5, 1.0]])
    Q = np.array([[0.2, 0.05], [0.05, 0.1]])
    R = np.array([[0.3, 0.1], [0.1, 0.4]])
    return KalmanFilter(F, H, Q, R, x0=np.array([1.0, -0.5]), P0=np.array([[0.5, 0.1], [0.1, 0.3]]))


def joint_moments(kf, steps):
    """Mean and covariance of (x_0 .. x_{T-1}) and (y_0 .. y_{T-1}), stacked time-major."""
    d = kf.F.shape[0]
    variances, means = [kf.P0], [kf.x0]
    for _ in range(1, steps):
        variances.append(kf.F @ variances[-1] @ kf.F.T + kf.Q)
        means.append(kf.F @ means[-1])
    sxx = np.zeros((steps * d, steps * d))
    for s in range(steps):
        for t in range(s, steps):
            block = np.linalg.matrix_power(kf.F, t - s) @ variances[s]        # Cov(x_t, x_s)
            sxx[t * d:(t + 1) * d, s * d:(s + 1) * d] = block
            sxx[s * d:(s + 1) * d, t * d:(t + 1) * d] = block.T
    big_h = np.kron(np.eye(steps), kf.H)
    syy = big_h @ sxx @ big_h.T + np.kron(np.eye(steps), kf.R)
    return np.concatenate(means), sxx, big_h @ np.concatenate(means), syy, sxx @ big_h.T


def condition(mean_a, cov_a, cov_ab, mean_b, cov_b, b):
    gain = np.linalg.solve(cov_b, cov_ab.T).T
    return mean_a + gain @ (b - mean_b), cov_a - gain @ cov_ab.T


def test_filter_and_smoother_equal_conditioning_of_the_joint_gaussian():
    kf, steps = model(), 5
    _, y = kf.sample(steps, seed=0)
    mx, sxx, my, syy, sxy = joint_moments(kf, steps)
    means, covs = kf.filter(y)
    smoothed_means, smoothed_covs = kf.smooth(y)
    flat_y = y.reshape(-1)
    for t in range(steps):
        xs, seen = slice(2 * t, 2 * t + 2), slice(0, 2 * (t + 1))
        mean, cov = condition(mx[xs], sxx[xs, xs], sxy[xs, seen], my[seen], syy[seen, seen], flat_y[seen])
        assert_close(means[t], mean, 1e-9, f"filtered mean {t}")
        assert_close(covs[t], cov, 1e-9, f"filtered covariance {t}")
        mean, cov = condition(mx[xs], sxx[xs, xs], sxy[xs], my, syy, flat_y)
        assert_close(smoothed_means[t], mean, 1e-9, f"smoothed mean {t}")
        assert_close(smoothed_covs[t], cov, 1e-9, f"smoothed covariance {t}")


def test_predictions_equal_conditioning_of_the_future_observations():
    kf, seen, ahead = model(), 4, 2
    _, y = kf.sample(seen, seed=1)
    _, _, my, syy, _ = joint_moments(kf, seen + ahead)
    past, future = slice(0, 2 * seen), slice(2 * seen, None)
    mean, cov = condition(my[future], syy[future, future], syy[future, past], my[past], syy[past, past],
                          y.reshape(-1))
    means, covs = kf.predict(y, n_steps=ahead)
    assert_close(means.reshape(-1), mean, 1e-9)
    for step in range(ahead):
        assert_close(covs[step], cov[2 * step:2 * step + 2, 2 * step:2 * step + 2], 1e-9)


def test_log_likelihood_equals_the_joint_normal_log_density():
    kf, steps = model(), 6
    _, y = kf.sample(steps, seed=2)
    _, _, my, syy, _ = joint_moments(kf, steps)
    residual = y.reshape(-1) - my
    expected = -0.5 * (residual @ np.linalg.solve(syy, residual) + np.linalg.slogdet(2 * np.pi * syy)[1])
    assert abs(kf.log_likelihood(y) - expected) < 1e-10 * abs(expected)
    ours = kalman_log_likelihood(y, kf.F, kf.H, kf.Q, kf.R, kf.x0, kf.P0)
    assert abs(ours.item() - expected) < 1e-10 * abs(expected)
    batch = kalman_log_likelihood(np.stack([y, y[::-1]]), kf.F, kf.H, kf.Q, kf.R, kf.x0, kf.P0).numpy()
    assert_close(batch, np.array([kf.log_likelihood(y), kf.log_likelihood(y[::-1])]), 1e-12)


def torch_log_likelihood(y, F, H, Q, R, x0, P0):
    """The filter's log-likelihood in torch: innovations, Cholesky factors, symmetrized updates."""
    Q, R, P0 = (0.5 * (a + a.T) for a in (Q, R, P0))
    mean, cov, total = x0[:, None], P0, 0.0
    for t in range(y.shape[0]):
        if t:
            mean, cov = F @ mean, F @ cov @ F.T + Q
        projected = H @ cov
        s = projected @ H.T + R
        factor = torch.linalg.cholesky(0.5 * (s + s.T))
        innovation = y[t][:, None] - H @ mean
        whitened = torch.linalg.solve_triangular(factor, innovation, upper=False)
        total = total - 0.5 * (whitened ** 2).sum() - torch.log(torch.diagonal(factor)).sum() \
            - 0.5 * len(innovation) * np.log(2 * np.pi)
        gain_t = torch.cholesky_solve(projected, factor)
        mean = mean + gain_t.T @ innovation
        cov = cov - projected.T @ gain_t
        cov = 0.5 * (cov + cov.T)
    return total


def test_gradients_match_torch_rewrite_and_finite_differences():
    kf = model()
    _, y = kf.sample(4, seed=3)
    arrays = (y, kf.F, kf.H, kf.Q, kf.R, kf.x0, kf.P0)
    compare_with_torch(kalman_log_likelihood, torch_log_likelihood, *arrays, dtype=np.float64)
    assert check_gradients(kalman_log_likelihood, y[:3], *arrays[1:])


def local_level_log_likelihoods(y, log_q):
    """log p(y) of each row of y (N, T) under the local-level model x_0 ~ N(0, 1), x_{t+1} = x_t
    + N(0, q), y_t = x_t + N(0, 1), from its joint covariance 1 + q min(s, t) + [s = t]."""
    steps = y.shape[1]
    times = np.arange(steps)
    cov = 1.0 + np.exp(log_q) * np.minimum.outer(times, times) + np.eye(steps)
    factor = np.linalg.cholesky(cov)
    whitened = np.linalg.solve(factor, y.T)
    return -0.5 * (whitened ** 2).sum(axis=0) - np.log(np.diag(factor)).sum() - 0.5 * steps * np.log(2 * np.pi)


def test_learning_the_process_noise_by_gradient_finds_the_maximum_likelihood():
    """The local-level model with process variance q = 0.5: learn log q by L-BFGS steps on the
    differentiable log-likelihood of 60 sequences of 20 steps."""
    truth = KalmanFilter([[1.0]], [[1.0]], [[0.5]], [[1.0]], [0.0], [[1.0]])
    y = np.stack([truth.sample(20, seed=s)[1] for s in range(60)])
    assert_close(local_level_log_likelihoods(y[:, :, 0], np.log(0.5))[:3],
                 np.array([truth.log_likelihood(seq) for seq in y[:3]]), 1e-10)

    def total(log_q):
        return local_level_log_likelihoods(y[:, :, 0], log_q).sum()

    best = minimize_scalar(lambda v: -total(v), bounds=(-4, 2), method="bounded", options={"xatol": 1e-8}).x
    log_q = lamina.tensor(np.array([0.0]), requires_grad=True, dtype=np.float64)
    optimizer = LBFGS([log_q], lr=1.0, max_iter=15, line_search_fn="strong_wolfe")
    eye = lamina.tensor(np.eye(1), dtype=np.float64)

    def closure():
        optimizer.zero_grad()
        loss = -kalman_log_likelihood(y, [[1.0]], [[1.0]], log_q.exp() * eye, [[1.0]], [0.0], [[1.0]]).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    learned = float(log_q.data[0])
    assert abs(learned - best) < 1e-4
    # The margin against the truth: the standard error of log q from the observed information
    # (the curvature of the log-likelihood at its maximum); the estimate lies within 3 of them.
    h = 1e-3
    curvature = (total(best + h) - 2 * total(best) + total(best - h)) / h ** 2
    standard_error = 1 / np.sqrt(-curvature)
    assert standard_error < 0.2
    assert abs(learned - np.log(0.5)) < 3 * standard_error


def test_one_em_step_equals_the_update_from_brute_force_smoothed_moments():
    kf, steps = model(), 5
    _, y = kf.sample(steps, seed=4)
    mx, sxx, my, syy, sxy = joint_moments(kf, steps)
    mean, cov = condition(mx, sxx, sxy, my, syy, y.reshape(-1))
    mean = mean.reshape(steps, 2)
    block = [[cov[2 * s:2 * s + 2, 2 * t:2 * t + 2] for t in range(steps)] for s in range(steps)]
    second = [block[t][t] + np.outer(mean[t], mean[t]) for t in range(steps)]
    cross = [block[t][t - 1] + np.outer(mean[t], mean[t - 1]) for t in range(1, steps)]    # E[x_t x_{t-1}^T]
    expected_r = sum(np.outer(y[t] - kf.H @ mean[t], y[t] - kf.H @ mean[t]) + kf.H @ block[t][t] @ kf.H.T
                     for t in range(steps)) / steps
    expected_q = sum(second[t] - kf.F @ cross[t - 1].T - cross[t - 1] @ kf.F.T + kf.F @ second[t - 1] @ kf.F.T
                     for t in range(1, steps)) / (steps - 1)
    history = kf.em(y, n_iter=1)
    assert_close(kf.R, expected_r, 1e-9, "R")
    assert_close(kf.Q, expected_q, 1e-9, "Q")
    assert len(history) == 1 and abs(history[0] - model().log_likelihood(y)) < 1e-12 * abs(history[0])


def test_em_never_decreases_the_likelihood_and_reaches_a_stationary_point():
    truth = model()
    _, y = truth.sample(100, seed=5)
    kf = KalmanFilter(truth.F, truth.H, np.eye(2), np.eye(2), truth.x0, truth.P0)

    def gradient_norm():
        q = lamina.tensor(kf.Q, requires_grad=True, dtype=np.float64)
        r = lamina.tensor(kf.R, requires_grad=True, dtype=np.float64)
        kalman_log_likelihood(y, kf.F, kf.H, q, r, kf.x0, kf.P0).backward()
        assert_close(q.grad, q.grad.T, 1e-12, "symmetric gradient")
        return np.abs(q.grad).max() + np.abs(r.grad).max()

    before = gradient_norm()
    history = np.array(kf.em(y, n_iter=40))
    assert (np.diff(history) >= -1e-9 * np.abs(history[1:])).all()
    assert history[-1] > history[0] + 10
    assert gradient_norm() < 0.03 * before


def test_errors_are_clear():
    kf = model()
    with pytest.raises(ValueError, match="R .*must be positive definite"):
        KalmanFilter(kf.F, kf.H, kf.Q, -kf.R, kf.x0, kf.P0)
    with pytest.raises(ValueError, match="Q .*positive semi-definite"):
        KalmanFilter(kf.F, kf.H, -kf.Q, kf.R, kf.x0, kf.P0)
    with pytest.raises(ShapeError, match=r"H must have shape \(2, 2\)"):
        KalmanFilter(kf.F, np.ones((2, 3)), kf.Q, kf.R, kf.x0, kf.P0)
    with pytest.raises(ShapeError, match=r"observations must be \(T, 2\)"):
        kf.filter(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="learn must be a subset"):
        kf.em(np.zeros((3, 2)), learn=("F",))
    with pytest.raises(ShapeError, match=r"kalman_log_likelihood: Q must have shape \(2, 2\)"):
        kalman_log_likelihood(np.zeros((3, 2)), kf.F, kf.H, np.eye(3), kf.R, kf.x0, kf.P0)
