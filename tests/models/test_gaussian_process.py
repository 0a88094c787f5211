"""Gaussian-process regression against scikit-learn's GaussianProcessRegressor, and the
kernels against formulas written in PyTorch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.gaussian_process import GaussianProcessRegressor as SklearnGP
from sklearn.gaussian_process import kernels as sk
from tests.helpers import check_gradients, check_second_derivatives, compare_with_torch, positive, swap_in

import lamina
from lamina.errors import ShapeError
from lamina.models import GaussianProcessRegressor, kernels

RNG = np.random.default_rng(0)
X = RNG.uniform(0, 5, (15, 2))
Y = np.sin(X[:, 0]) + 0.5 * np.cos(X[:, 1]) + 0.1 * RNG.standard_normal(15)
X_NEW = RNG.uniform(-1, 7, (6, 2))
NOISE = 1e-2


def _cases():
    """name: (lamina kernel, sklearn kernel, sklearn's theta order as lamina parameter names, 1-D inputs)."""
    return {
        "rbf": (kernels.RBF(0.8), sk.RBF(0.8), ["log_length_scale"], False),
        "rbf_ard": (kernels.RBF([0.8, 1.7]), sk.RBF([0.8, 1.7]), ["log_length_scale"], False),
        "matern_0.5": (kernels.Matern(0.7, nu=0.5), sk.Matern(0.7, nu=0.5), ["log_length_scale"], False),
        "matern_1.5": (kernels.Matern(0.7, nu=1.5), sk.Matern(0.7, nu=1.5), ["log_length_scale"], False),
        "matern_2.5_ard": (kernels.Matern([0.7, 2.0], nu=2.5), sk.Matern([0.7, 2.0], nu=2.5), ["log_length_scale"],
                           False),
        "rational_quadratic": (kernels.RationalQuadratic(0.9, alpha=0.6), sk.RationalQuadratic(0.9, alpha=0.6),
                               ["log_alpha", "log_length_scale"], False),
        "exp_sine_squared": (kernels.ExpSineSquared(1.1, period=2.5), sk.ExpSineSquared(1.1, periodicity=2.5),
                             ["log_length_scale", "log_period"], True),
        "scaled_rbf_plus_white": (kernels.ScaleKernel(kernels.RBF(0.8), 2.0) + kernels.White(0.05),
                                  sk.ConstantKernel(2.0) * sk.RBF(0.8) + sk.WhiteKernel(0.05),
                                  ["k1.log_outputscale", "k1.base.log_length_scale", "k2.log_noise_level"], False),
        "matern_plus_white": (kernels.Matern(1.2, nu=1.5) + kernels.White(0.2),
                              sk.Matern(1.2, nu=1.5) + sk.WhiteKernel(0.2),
                              ["k1.log_length_scale", "k2.log_noise_level"], False),
        "dot_product_plus_white": (kernels.DotProduct(0.5) + kernels.White(0.1),
                                   sk.DotProduct(0.5) + sk.WhiteKernel(0.1),
                                   ["k1.log_sigma_0", "k2.log_noise_level"], True),
        "product_plus_constant": (kernels.RBF(2.0) * kernels.Periodic(1.0, 3.0) + 1.5,
                                  sk.RBF(2.0) * sk.ExpSineSquared(1.0, 3.0) + 1.5,
                                  ["k1.k1.log_length_scale", "k1.k2.log_length_scale", "k1.k2.log_period",
                                   "k2.log_constant_value"], True),
    }


CASES = list(_cases())


def _fitted_pair(name: str, normalize_y: bool = False, y=Y):
    ours, theirs, order, one_d = _cases()[name]
    x, x_new = (X[:, :1], X_NEW[:, :1]) if one_d else (X, X_NEW)
    gp = GaussianProcessRegressor(ours, noise=NOISE, learn_noise=False, normalize_y=normalize_y)
    gp.fit(x, y, optimizer=None)
    reference = SklearnGP(theirs, alpha=NOISE, optimizer=None, normalize_y=normalize_y).fit(x, y)
    return gp, reference, order, x_new


@pytest.mark.parametrize("normalize_y", [False, True])
@pytest.mark.parametrize("name", CASES)
def test_matches_sklearn_with_fixed_hyperparameters(name, normalize_y):
    gp, reference, order, x_new = _fitted_pair(name, normalize_y)
    lml = gp.log_marginal_likelihood()
    lml.backward()
    expected, expected_grad = reference.log_marginal_likelihood(reference.kernel_.theta, eval_gradient=True)
    assert lml.item() == pytest.approx(expected, rel=1e-10, abs=1e-8)
    params = dict(gp.kernel.named_parameters())
    grad = np.concatenate([params[key].grad.ravel() for key in order])
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-8, atol=1e-8)

    mean, std = gp.predict(x_new, return_std=True)
    ref_mean, ref_std = reference.predict(x_new, return_std=True)
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(std, ref_std, rtol=1e-8, atol=1e-8)
    _, cov = gp.predict(x_new, return_cov=True)
    np.testing.assert_allclose(cov, reference.predict(x_new, return_cov=True)[1], rtol=1e-8, atol=1e-8)


def test_several_targets_match_sklearn():
    targets = np.stack([Y, 2.0 * Y ** 2 - 1.0], axis=1)
    gp, reference, _, x_new = _fitted_pair("scaled_rbf_plus_white", normalize_y=True, y=targets)
    assert gp.log_marginal_likelihood().item() == pytest.approx(reference.log_marginal_likelihood(), rel=1e-10)
    mean, std = gp.predict(x_new, return_std=True)
    ref_mean, ref_std = reference.predict(x_new, return_std=True)
    assert mean.shape == ref_mean.shape == (6, 2) and std.shape == ref_std.shape
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(std, ref_std, rtol=1e-8, atol=1e-8)
    _, cov = gp.predict(x_new, return_cov=True)
    np.testing.assert_allclose(cov, reference.predict(x_new, return_cov=True)[1], rtol=1e-8, atol=1e-8)


def test_log_marginal_likelihood_gradcheck():
    kernel = kernels.ScaleKernel(kernels.Matern(1.0, nu=2.5) + kernels.RationalQuadratic(0.5, 2.0)) + \
        kernels.White(0.1)
    gp = GaussianProcessRegressor(kernel, noise=0.05, mean="constant").fit(X, Y, optimizer=None)

    def lml(log_scale, log_length, log_alpha, log_noise, mean):
        swap_in(kernel.k1, "log_outputscale", log_scale)
        swap_in(kernel.k1.base.k1, "log_length_scale", log_length)
        swap_in(kernel.k1.base.k2, "log_alpha", log_alpha)
        swap_in(gp, "log_noise", log_noise)
        swap_in(gp, "mean_constant", mean)
        return gp.log_marginal_likelihood()

    start = [np.log([0.7]), np.log([1.3]), np.log([0.5]), np.log(0.05), np.asarray(0.2)]
    assert check_gradients(lml, *start)


# -- the kernels against PyTorch formulas --------------------------------------------------
def _torch_scaled_distance(x1, x2, log_length):
    length = log_length.exp()
    return torch.cdist(x1 / length, x2 / length)


def _torch_matern(nu):
    def matern(x1, x2, log_length):
        r = _torch_scaled_distance(x1, x2, log_length)
        if nu == 0.5:
            return torch.exp(-r)
        s = math.sqrt(2 * nu) * r
        return (1 + s) * torch.exp(-s) if nu == 1.5 else (1 + s + s * s / 3) * torch.exp(-s)
    return matern


def _torch_rational_quadratic(x1, x2, log_length, log_alpha):
    r = _torch_scaled_distance(x1, x2, log_length)
    return (1 + r ** 2 / (2 * log_alpha.exp())) ** -log_alpha.exp()


def _torch_periodic(x1, x2, log_length, log_period):
    d = torch.cdist(x1, x2)
    return torch.exp(-2 * torch.sin(math.pi * d / log_period.exp()) ** 2 / log_length.exp() ** 2)


def _lamina_kernel(kernel, *names):
    def run(x1, x2, *values):
        for name, value in zip(names, values):
            owner, _, attr = name.rpartition(".")
            swap_in(kernel.get_submodule(owner), attr, value)
        return kernel(x1, x2)
    return run


KERNEL_CASES = {
    "rbf_ard": (_lamina_kernel(kernels.RBF([1.0, 1.0]), "log_length_scale"),
                lambda x1, x2, ll: torch.exp(-0.5 * _torch_scaled_distance(x1, x2, ll) ** 2), [np.log([0.8, 1.4])]),
    "matern_0.5": (_lamina_kernel(kernels.Matern(nu=0.5), "log_length_scale"), _torch_matern(0.5), [np.log([0.9])]),
    "matern_1.5": (_lamina_kernel(kernels.Matern(nu=1.5), "log_length_scale"), _torch_matern(1.5), [np.log([0.9])]),
    "matern_2.5": (_lamina_kernel(kernels.Matern(nu=2.5, ard=True), "log_length_scale"), _torch_matern(2.5),
                   [np.log([0.9, 2.1])]),
    "rational_quadratic": (_lamina_kernel(kernels.RationalQuadratic(), "log_length_scale", "log_alpha"),
                           _torch_rational_quadratic, [np.log([1.2]), np.log([0.7])]),
    "periodic": (_lamina_kernel(kernels.Periodic(), "log_length_scale", "log_period"), _torch_periodic,
                 [np.log([1.2]), np.log([2.2])]),
    "dot_product": (_lamina_kernel(kernels.DotProduct(), "log_sigma_0"),
                    lambda x1, x2, ls: x1 @ x2.T + ls.exp() ** 2, [np.log(0.7)]),
    "scaled_sum": (_lamina_kernel(kernels.ScaleKernel(kernels.RBF() + kernels.Constant()), "log_outputscale",
                                  "base.k1.log_length_scale", "base.k2.log_constant_value"),
                   lambda x1, x2, lo, ll, lc: lo.exp() * (torch.exp(-0.5 * _torch_scaled_distance(x1, x2, ll) ** 2)
                                                         + lc.exp()), [np.log(1.5), np.log([0.6]), np.log(0.3)]),
}


@pytest.mark.parametrize("name", list(KERNEL_CASES))
def test_kernel_matches_torch(name):
    ours, theirs, hyper = KERNEL_CASES[name]
    x1, x2 = positive(5, 2, seed=1, low=-2, high=2), positive(4, 2, seed=2, low=-2, high=2)
    compare_with_torch(ours, theirs, x1, x2, *hyper, dtype=np.float64)


@pytest.mark.parametrize("name", list(KERNEL_CASES))
def test_kernel_gradcheck(name):
    ours, _, hyper = KERNEL_CASES[name]
    x1, x2 = positive(4, 2, seed=3, low=-2, high=2), positive(3, 2, seed=4, low=-2, high=2)
    assert check_gradients(ours, x1, x2, *hyper)


def test_kernel_diag_and_white_semantics():
    x = positive(5, 2, seed=5, low=-2, high=2)
    kernel = kernels.ScaleKernel(kernels.Matern(0.8) * kernels.DotProduct(0.3), 1.7) + kernels.White(0.25)
    full = kernel(x).numpy()
    np.testing.assert_allclose(kernel.diag(x).numpy(), np.diag(full), rtol=1e-12)
    np.testing.assert_allclose(kernel(x, x).numpy(), full - 0.25 * np.eye(5), rtol=1e-12, atol=1e-14)
    assert isinstance(2.0 * kernels.RBF(), kernels.Product) and isinstance(kernels.RBF() + 1, kernels.Sum)
    parts = [kernels.RBF(0.5), kernels.Matern(2.0), kernels.White(0.1)]
    np.testing.assert_allclose(sum(parts)(x).numpy(), sum(k(x).numpy() for k in parts), rtol=1e-12)
    assert kernels.RBF(ard=True)(x).shape == (5, 5)


# -- fitting --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def noisy_sine():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 6, (40, 1))
    y = np.sin(2 * x[:, 0]) + 0.2 * rng.standard_normal(40)
    reference = SklearnGP(sk.ConstantKernel(1.0) * sk.RBF(1.0) + sk.WhiteKernel(0.1), alpha=1e-10).fit(x, y)
    return x, y, reference


@pytest.mark.parametrize("optimizer, steps, tolerance", [("lbfgs", 100, 1e-7), ("adam", 200, 1e-5)])
def test_fit_reaches_sklearn_optimum(noisy_sine, optimizer, steps, tolerance):
    x, y, reference = noisy_sine
    gp = GaussianProcessRegressor(kernels.ScaleKernel(kernels.RBF()), noise=0.1)
    gp.fit(x, y, steps=steps, optimizer=optimizer)
    best = reference.log_marginal_likelihood_value_
    assert gp.log_marginal_likelihood().item() >= best - tolerance
    fitted = reference.kernel_.get_params()
    found = gp.kernel.hyperparameters()
    assert found["base.length_scale"] == pytest.approx(fitted["k1__k2__length_scale"], rel=1e-2)
    assert gp.noise.item() == pytest.approx(fitted["k2__noise_level"], rel=2e-2)
    assert found["outputscale"] == pytest.approx(fitted["k1__k1__constant_value"], rel=2e-2)


def test_std_small_near_data_and_prior_far_away(noisy_sine):
    x, y, _ = noisy_sine
    gp = GaussianProcessRegressor(kernels.ScaleKernel(kernels.RBF()), noise=0.1, mean="constant")
    gp.fit(x, y, steps=50)
    mean, std = gp.predict(np.array([[3.0], [60.0]]), return_std=True)
    prior_std = math.sqrt(gp.kernel.hyperparameters()["outputscale"])
    assert std[0] < 0.3 * prior_std
    assert std[1] == pytest.approx(prior_std, rel=1e-6)
    assert mean[1] == pytest.approx(gp.mean_constant.item(), abs=1e-6)


def test_prior_before_fit_and_sample_y():
    gp = GaussianProcessRegressor(kernels.ScaleKernel(kernels.RBF(1.0), 4.0))
    x_new = np.array([[0.0], [0.5], [3.0]])
    mean, std = gp.predict(x_new, return_std=True)
    np.testing.assert_allclose(mean, 0.0)
    np.testing.assert_allclose(std, 2.0)
    gp.fit(X[:, :1], Y, optimizer=None)
    draws = gp.sample_y(x_new, 4000, random_state=3)
    assert draws.shape == (3, 4000)
    mean, cov = gp.predict(x_new, return_cov=True)
    np.testing.assert_allclose(draws.mean(axis=1), mean, atol=4 * np.sqrt(np.diag(cov).max() / 4000) + 1e-9)
    np.testing.assert_allclose(np.cov(draws), cov, atol=0.1 * np.abs(cov).max())
    np.testing.assert_array_equal(draws, gp.sample_y(x_new, 4000, random_state=3))


def test_jitter_rescues_a_singular_covariance():
    x = np.linspace(0, 1, 20)[:, None]
    gp = GaussianProcessRegressor(kernels.DotProduct(1e-3), noise=1e-300, learn_noise=False)  # K of rank 2
    gp.fit(x, np.sin(x[:, 0]), optimizer=None)
    assert np.isfinite(gp.log_marginal_likelihood().item())
    assert gp.jitter_ > 0
    assert np.all(np.isfinite(gp.predict(x, return_std=True)[1]))


def test_state_dict_round_trip(noisy_sine):
    x, y, _ = noisy_sine
    gp = GaussianProcessRegressor(kernels.ScaleKernel(kernels.Matern(nu=2.5)), mean="constant", normalize_y=True)
    gp.fit(x, y, steps=20)
    fresh = GaussianProcessRegressor(kernels.ScaleKernel(kernels.Matern(nu=2.5)), mean="constant",
                                     normalize_y=True)
    fresh.load_state_dict(gp.state_dict())
    x_new = np.linspace(-1, 7, 9)[:, None]
    for a, b in zip(fresh.predict(x_new, return_std=True), gp.predict(x_new, return_std=True)):
        np.testing.assert_array_equal(a, b)
    assert fresh.log_marginal_likelihood().item() == gp.log_marginal_likelihood().item()


def test_float32_runs():
    gp = GaussianProcessRegressor(kernels.RBF(1.0), noise=0.05, dtype=np.float32).fit(X, Y, steps=5)
    mean = gp.predict(X_NEW)
    assert mean.dtype == np.float32 and np.all(np.isfinite(mean))


# -- errors -------------------------------------------------------------------------------
def test_errors_for_bad_shapes_and_values():
    gp = GaussianProcessRegressor(kernels.RBF())
    with pytest.raises(ShapeError, match=r"targets of shape \(14,\).*15 inputs"):
        gp.fit(X, Y[:14])
    with pytest.raises(ShapeError, match=r"\(n, d\) or \(n,\).*\(2, 3, 4\)"):
        gp.fit(np.zeros((2, 3, 4)), np.zeros(2))
    gp.fit(X, Y, optimizer=None)
    with pytest.raises(ShapeError, match="3 features; the model was fitted on 2"):
        gp.predict(np.zeros((4, 3)))
    with pytest.raises(ShapeError, match="different numbers of features"):
        kernels.RBF()(np.zeros((3, 2)), np.zeros((3, 1)))
    with pytest.raises(ShapeError, match="2 length scales for inputs with 3 features"):
        kernels.RBF([1.0, 2.0])(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="nu must be one of"):
        kernels.Matern(nu=1.0)
    with pytest.raises(ValueError, match="length_scale must be a positive"):
        kernels.RBF(-1.0)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        gp.fit(X, Y, optimizer="sgd")
    with pytest.raises(ValueError, match="mean must be one of"):
        GaussianProcessRegressor(mean="linear")
    with pytest.raises(ValueError, match="cannot both be True"):
        gp.predict(X_NEW, return_std=True, return_cov=True)
    with pytest.raises(RuntimeError, match="no training data"):
        GaussianProcessRegressor().log_marginal_likelihood()


def test_module_namespace():
    assert lamina.models.GaussianProcessRegressor is GaussianProcessRegressor
    assert lamina.models.kernels.ExpSineSquared is lamina.models.kernels.Periodic
    assert not hasattr(lamina.models, "RBF")          # the kernels live in their own namespace


def test_log_marginal_likelihood_second_derivatives():
    kernel = kernels.ScaleKernel(kernels.Matern(1.0, nu=2.5))
    gp = GaussianProcessRegressor(kernel, noise=0.05).fit(X[:8, :1], Y[:8], optimizer=None)

    def lml(log_length, log_noise):
        swap_in(kernel.base, "log_length_scale", log_length)
        swap_in(gp, "log_noise", log_noise)
        return gp.log_marginal_likelihood()

    assert check_second_derivatives(lml, np.log([0.8]), np.log(0.05))
