"""PerturbedOptimizer: Monte Carlo expectation and Jacobian against the exact ones of tiny
discrete problems, and the Fenchel-Young loss and its gradient."""

import math

import numpy as np
import pytest

import lamina
import lamina.functional as F
from lamina.autograd import grad


def one_hot_argmax(scores: np.ndarray) -> np.ndarray:
    return np.eye(scores.shape[-1])[scores.argmax(axis=-1)]


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


THETA = np.array([[0.5, -0.3, 0.1], [1.0, 0.2, -0.8]])


def test_gumbel_expectation_is_the_softmax():
    """argmax(theta + sigma G) is distributed as softmax(theta / sigma): within 5 standard errors."""
    samples = 20000
    opt = F.PerturbedOptimizer(one_hot_argmax, num_samples=samples, sigma=0.7, noise="gumbel", seed=0)
    expected = opt(lamina.tensor(THETA, dtype=np.float64)).numpy()
    exact = _softmax(THETA / 0.7)
    assert np.all(np.abs(expected - exact) < 5 * np.sqrt(exact * (1 - exact) / samples))
    np.testing.assert_allclose(expected.sum(axis=1), 1.0, atol=1e-12)


def test_normal_expectation_of_a_two_way_choice():
    """For two options, P(first) = Phi((theta_0 - theta_1) / (sigma sqrt 2))."""
    theta = np.array([[0.4, -0.2]])
    samples = 20000
    opt = F.PerturbedOptimizer(one_hot_argmax, num_samples=samples, sigma=0.5, noise="normal", seed=1)
    first = opt(lamina.tensor(theta, dtype=np.float64)).numpy()[0, 0]
    exact = 0.5 * (1 + math.erf((0.6 / (0.5 * math.sqrt(2))) / math.sqrt(2)))
    assert abs(first - exact) < 5 * math.sqrt(exact * (1 - exact) / samples)


@pytest.mark.parametrize("noise", ["gumbel", "normal"])
def test_monte_carlo_jacobian(noise):
    """The estimated Jacobian against the exact one: softmax's (diag p - p p^T) / sigma for Gumbel
    noise, and for normal noise the finite differences of the exact two-way probabilities."""
    theta = lamina.tensor(THETA[:1], requires_grad=True, dtype=np.float64)
    opt = F.PerturbedOptimizer(one_hot_argmax, num_samples=100000, sigma=1.0, noise=noise, seed=2)
    upstream = np.array([[1.0, -0.5, 0.25]])
    (estimate,) = grad((opt(theta) * lamina.tensor(upstream, dtype=np.float64)).sum(), [theta])
    if noise == "gumbel":
        p = _softmax(THETA[:1])[0]
        exact = upstream @ (np.diag(p) - np.outer(p, p))
    else:
        exact = upstream @ _normal_jacobian(THETA[0])
    np.testing.assert_allclose(np.asarray(estimate), exact, atol=0.01)


def _normal_jacobian(theta, h=1e-4):
    """d E[one_hot argmax(theta + Z)] / d theta for standard normal Z and 3 options, by
    finite differences of exact probabilities from a fine 1-D quadrature."""
    z = np.linspace(-9, 9, 4001)
    density = np.exp(-z ** 2 / 2) / math.sqrt(2 * math.pi)
    cdf = np.vectorize(lambda t: 0.5 * (1 + math.erf(t / math.sqrt(2))))

    def probabilities(t):
        out = []
        for i in range(3):
            others = np.prod([cdf(t[i] - t[j] + z) for j in range(3) if j != i], axis=0)
            out.append(np.trapezoid(density * others, z))
        return np.array(out)

    columns = [(probabilities(theta + h * e) - probabilities(theta - h * e)) / (2 * h) for e in np.eye(3)]
    return np.stack(columns, axis=1)


def test_fenchel_young_loss_value_and_gradient():
    """The loss is E[max_i(theta_i + sigma G_i)] - <theta, y> = sigma (logsumexp(theta / sigma) + gamma)
    - <theta, y> in expectation, and its gradient is the sampled expectation minus the target."""
    target = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    theta = lamina.tensor(THETA, requires_grad=True, dtype=np.float64)
    samples = 20000
    loss = F.PerturbedOptimizer(one_hot_argmax, samples, 0.7, "gumbel", seed=3).fenchel_young_loss(theta, target)
    smooth_max = 0.7 * (np.log(np.exp(THETA / 0.7).sum(axis=1)) + np.euler_gamma)
    exact = smooth_max - (THETA * target).sum(axis=1)
    np.testing.assert_allclose(loss.numpy(), exact, atol=5 * 0.7 * math.pi / math.sqrt(6 * samples))
    loss.sum().backward()
    same_noise = F.PerturbedOptimizer(one_hot_argmax, samples, 0.7, "gumbel", seed=3)(THETA).numpy()
    np.testing.assert_allclose(theta.grad, same_noise - target, atol=1e-12)


def test_fenchel_young_second_derivative_is_the_expectation_jacobian():
    theta = lamina.tensor(THETA, requires_grad=True, dtype=np.float64)
    upstream = lamina.tensor(np.array([[0.3, -1.0, 0.5], [1.0, 0.0, -0.2]]), dtype=np.float64)
    loss = F.PerturbedOptimizer(one_hot_argmax, 500, 1.0, "normal", seed=4).fenchel_young_loss(theta, np.zeros((2, 3)))
    (first,) = grad(loss.sum(), [theta], create_graph=True)
    (second,) = grad((first * upstream).sum(), [theta])
    expectation = F.PerturbedOptimizer(one_hot_argmax, 500, 1.0, "normal", seed=4)(theta)
    (direct,) = grad((expectation * upstream).sum(), [theta])
    np.testing.assert_allclose(np.asarray(second), np.asarray(direct), atol=1e-12)


def test_errors():
    with pytest.raises(ValueError, match="noise"):
        F.PerturbedOptimizer(one_hot_argmax, noise="uniform")
    with pytest.raises(ValueError, match="num_samples"):
        F.PerturbedOptimizer(one_hot_argmax, num_samples=0)
    with pytest.raises(ValueError, match="argmax_fn must return"):
        F.PerturbedOptimizer(lambda s: s.argmax(axis=-1), 4)(THETA)
