"""Mixture density networks: mdn_loss against torch.distributions' MixtureSameFamily, the
mixture's mean, mode and samples, MixtureDensityHead, and Bishop's inverse problem, where a
least-squares network fails and a mixture density network does not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

import lamina
from helpers import check_gradients, compare_with_torch, randn
from lamina import functional as F
from lamina.nn import Dense, MixtureDensityHead, Sequential
from lamina.optim import Adam


def mixture_arrays(n=4, k=3, d=2, seed=0):
    return randn(n, k, seed=seed), randn(n, k, d, seed=seed + 1), np.exp(0.5 * randn(n, k, d, seed=seed + 2)), \
        randn(n, d, seed=seed + 3)


def torch_mixture(logits, mu, sigma):
    return MixtureSameFamily(Categorical(logits=logits), Independent(Normal(mu, sigma), 1))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mdn_loss_is_the_negative_log_prob_of_torchs_mixture(reduction):
    def theirs(logits, mu, sigma, y):
        nll = -torch_mixture(logits, mu, sigma).log_prob(y)
        return {"mean": nll.mean(), "sum": nll.sum(), "none": nll}[reduction]

    arrays = mixture_arrays()
    compare_with_torch(lambda *a: F.mdn_loss(*a, reduction=reduction), theirs, *arrays, dtype=np.float64)
    assert check_gradients(lambda *a: F.mdn_loss(*a, reduction=reduction).sum(), *arrays)


def test_far_outliers_and_one_dimensional_targets():
    logits, mu, sigma, _ = mixture_arrays(n=3, k=2, d=1, seed=4)
    y = np.array([0.3, -40.0, 60.0])                       # densities that underflow: logsumexp keeps them
    expected = -torch_mixture(*map(torch.tensor, (logits, mu, sigma))).log_prob(torch.tensor(y)[:, None])
    ours = F.mdn_loss(*(lamina.tensor(a, dtype=np.float64) for a in (logits, mu, sigma, y)), reduction="none")
    ours = ours.numpy()
    np.testing.assert_allclose(ours, expected.numpy(), rtol=1e-12)
    assert np.all(np.isfinite(ours))


def test_mean_mode_and_samples_of_the_mixture():
    logits, mu, sigma, _ = mixture_arrays(n=2, k=3, d=2, seed=5)
    weights = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    compare_with_torch(F.mdn_mean, lambda lg, m: (torch.softmax(lg, dim=1)[..., None] * m).sum(dim=1),
                       logits, mu, dtype=np.float64)
    peak = np.log(weights) - np.log(sigma).sum(axis=-1)
    np.testing.assert_array_equal(F.mdn_mode(logits, mu, sigma), mu[[0, 1], peak.argmax(axis=1)])
    samples = F.mdn_sample(logits, mu, sigma, num_samples=20000, rng=np.random.default_rng(0))
    assert samples.shape == (20000, 2, 2)
    mixture = torch_mixture(*map(torch.tensor, (logits, mu, sigma)))
    np.testing.assert_allclose(samples.mean(axis=0), mixture.mean.numpy(), atol=0.05)
    np.testing.assert_allclose(samples.var(axis=0), mixture.variance.numpy(), rtol=0.05)


def test_a_hand_made_mode():
    logits = np.log([[0.5, 0.5]])
    mu = np.array([[[1.0], [2.0]]])
    sigma = np.array([[[1.0], [0.1]]])                     # the narrow component has the higher peak
    np.testing.assert_array_equal(F.mdn_mode(logits, mu, sigma), [[2.0]])


@pytest.mark.parametrize("sigma_activation", ["softplus", "exp"])
def test_the_head_splits_one_dense_output(sigma_activation):
    head = MixtureDensityHead(3, out_dim=2, sigma_activation=sigma_activation, min_sigma=0.01)
    head.build((None, 4))
    head.double()
    x = randn(5, 4, seed=6)
    logits, mu, sigma = head(lamina.tensor(x, dtype=np.float64))
    out = x @ head.weight.numpy() + head.bias.numpy()
    np.testing.assert_allclose(logits.numpy(), out[:, :3])
    np.testing.assert_allclose(mu.numpy(), out[:, 3:9].reshape(5, 3, 2))
    raw = out[:, 9:].reshape(5, 3, 2)
    positive = np.log1p(np.exp(raw)) if sigma_activation == "softplus" else np.exp(raw)
    np.testing.assert_allclose(sigma.numpy(), positive + 0.01)
    assert check_gradients(lambda x: F.mdn_loss(*head(x), randn(5, 2, seed=7)), x)
    config = lamina.nn.layer_to_config(head)
    assert lamina.nn.layer_to_config(lamina.nn.layer_from_config(config)) == config


def inverse_sine(n, rng):
    """Bishop's inverse problem: x = y + 0.3 sin(2 pi y) + U(-0.1, 0.1), predict y from x."""
    y = rng.uniform(0, 1, (n, 1))
    x = y + 0.3 * np.sin(2 * np.pi * y) + rng.uniform(-0.1, 0.1, (n, 1))
    return x.astype(np.float32), y.astype(np.float32)


def fit(model, loss, x, y, steps):
    optimizer = Adam(model, lr=0.01)
    for _ in range(steps):
        optimizer.zero_grad()
        value = loss(model(x), y)
        value.backward()
        optimizer.step()


def test_an_mdn_solves_the_inverse_sine_problem_where_least_squares_fails():
    rng = np.random.default_rng(0)
    x, y = inverse_sine(600, rng)
    x_test, y_test = inverse_sine(600, rng)
    lamina.manual_seed(0)
    mse_net = Sequential(Dense(24, activation="tanh"), Dense(1))
    mse_net.build((None, 1))
    fit(mse_net, F.mean_squared_error, x, y, steps=500)
    residual_sd = float(np.std(mse_net(x).numpy() - y))       # the Gaussian NLL of the least-squares fit
    mse_nll = float(np.mean(0.5 * ((mse_net(x_test).numpy() - y_test) / residual_sd) ** 2
                            + np.log(residual_sd) + 0.5 * np.log(2 * np.pi)))
    mdn = Sequential(Dense(24, activation="tanh"), MixtureDensityHead(3))
    mdn.build((None, 1))
    fit(mdn, lambda out, target: F.mdn_loss(*out, target), x, y, steps=500)
    mdn_nll = F.mdn_loss(*mdn(x_test), y_test).item()
    print(f"inverse sine: test NLL least squares {mse_nll:.3f}, MDN {mdn_nll:.3f}; "
          f"least-squares residual sd {residual_sd:.3f}")
    assert mdn_nll < mse_nll - 0.5                          # measured: -1.04 vs -0.10
    samples = F.mdn_sample(*mdn(x_test), num_samples=1, rng=rng)[0]
    assert abs(np.std(samples) - np.std(y_test)) < 0.05      # the MDN's draws spread like the targets


def test_errors_name_the_function_and_shapes():
    logits, mu, sigma, y = mixture_arrays()
    with pytest.raises(lamina.ShapeError, match=r"mdn_log_prob: y must have shape \(N, D\) = \(4, 2\)"):
        F.mdn_loss(logits, mu, sigma, y[:, :1])
    with pytest.raises(lamina.ShapeError, match="sigma must have mu's shape"):
        F.mdn_loss(logits, mu, sigma[:, :2], y)
    with pytest.raises(lamina.ShapeError, match=r"pi_logits \(N, K\) and mu \(N, K, D\)"):
        F.mdn_mean(logits[:, :2], mu)
    with pytest.raises(ValueError, match="mdn_loss: reduction"):
        F.mdn_loss(logits, mu, sigma, y, reduction="max")
    with pytest.raises(ValueError, match="MixtureDensityHead: sigma_activation"):
        MixtureDensityHead(2, sigma_activation="relu")
    with pytest.raises(ValueError, match="mdn_sample: num_samples"):
        F.mdn_sample(logits, mu, sigma, num_samples=0)
