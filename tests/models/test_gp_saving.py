"""Gaussian-process models saved by architecture config: the kernels of
:mod:`lamina.models.kernels` (registered as ``kernels.<name>``, composite kernels holding their
parts' configs), an exact GP with its training data, an SVGP and deep kernels go through
``lamina.save`` / ``lamina.load`` and predict the same; ARD length scales sized on the first
call are sized again on loading."""

from __future__ import annotations

import json

import numpy as np
import pytest

import lamina
from lamina import nn
from lamina.errors import ShapeError
from lamina.models import SVGP, DeepKernel, GaussianProcessRegressor, kernels

RNG = np.random.default_rng(0)
X = RNG.uniform(-2, 2, (24, 3))
Y = np.sin(2 * X[:, 0]) + 0.5 * X[:, 1] + 0.05 * RNG.standard_normal(24)
X_TEST = RNG.uniform(-2, 2, (9, 3))


def _sum_kernel() -> kernels.Kernel:
    """ScaleKernel(RBF) + White, the RBF with one length scale per feature (sized on the first call)."""
    return kernels.ScaleKernel(kernels.RBF(0.8, ard=True), 1.5) + kernels.White(0.05)


def _round_trip(model, tmp_path):
    path = tmp_path / "gp.safetensors"
    lamina.save(model, path)
    return lamina.load(path)


def _assert_same_predictions(twin, model, **options):
    for a, b in zip(twin.predict(X_TEST, **options), model.predict(X_TEST, **options)):
        np.testing.assert_array_equal(a, b)


def test_kernels_are_registered_under_their_module_name():
    registered = nn.registered_layers()
    for name in ("RBF", "Matern", "RationalQuadratic", "Periodic", "DotProduct", "White", "Constant", "ScaleKernel",
                 "Sum", "Product"):
        assert registered[f"kernels.{name}"] is getattr(kernels, name)
    config = json.loads(json.dumps(nn.layer_to_config(_sum_kernel())))
    assert config["class_name"] == "kernels.Sum"
    assert config["config"]["k1"]["class_name"] == "kernels.ScaleKernel"
    base = config["config"]["k1"]["config"]["base"]
    assert base["class_name"] == "kernels.RBF" and base["config"] == {"length_scale": 0.8, "ard": True}
    assert config["config"]["k2"]["config"] == {"noise_level": 0.05}


def test_exact_gp_with_a_sum_kernel_round_trips_with_its_training_data(tmp_path):
    gp = GaussianProcessRegressor(_sum_kernel(), noise=0.01, mean="constant", normalize_y=True)
    gp.fit(X, Y, steps=15)
    twin = _round_trip(gp, tmp_path)
    assert type(twin) is GaussianProcessRegressor and twin.get_config() == gp.get_config()
    assert type(twin.kernel) is kernels.Sum and twin.kernel.k1.base.log_length_scale.shape == (3,)
    np.testing.assert_array_equal(twin.train_x, gp.train_x)
    _assert_same_predictions(twin, gp, return_std=True)
    _assert_same_predictions(twin, gp, return_cov=True, include_noise=True)
    assert twin.log_marginal_likelihood().item() == gp.log_marginal_likelihood().item()
    np.testing.assert_array_equal(twin(X_TEST).numpy(), gp.predict(X_TEST))      # calling the model: the mean


def test_an_unfitted_float32_gp_round_trips_as_its_prior(tmp_path):
    gp = GaussianProcessRegressor(kernels.Matern(1.3, nu=0.5) * kernels.Constant(2.0), dtype=np.float32)
    twin = _round_trip(gp, tmp_path)
    assert twin.dtype == np.float32 and not twin.fitted and twin.kernel.dtype == np.float32
    _assert_same_predictions(twin, gp, return_std=True)


def test_svgp_round_trips(tmp_path):
    gp = SVGP(X[:8], _sum_kernel(), noise=0.1)
    gp.fit(X, Y, steps=20, batch_size=12)
    twin = _round_trip(gp, tmp_path)
    assert type(twin) is SVGP and twin.num_inducing == 8
    np.testing.assert_array_equal(twin.inducing_points.numpy(), gp.inducing_points.numpy())
    _assert_same_predictions(twin, gp, include_noise=True)
    assert twin.elbo(X, Y).item() == gp.elbo(X, Y).item()


def _deep_kernel() -> DeepKernel:
    lamina.manual_seed(0)
    network = nn.Sequential(nn.Dense(6, activation="tanh"), nn.Dense(2))
    return DeepKernel(kernels.ScaleKernel(kernels.RBF(ard=True)) + kernels.White(0.01), network)


@pytest.mark.parametrize("holder", ["exact", "svgp"])
def test_deep_kernel_models_round_trip(tmp_path, holder):
    """The network is rebuilt for its saved input shape (in the default dtype) and cast to the
    base kernel's float64 before the weights are loaded, so no digit is lost."""
    if holder == "exact":
        gp = GaussianProcessRegressor(_deep_kernel(), noise=0.05).fit(X, Y, steps=5, optimizer="adam")
    else:
        gp = SVGP(X[:6], _deep_kernel(), noise=0.05).fit(X, Y, steps=5)
    twin = _round_trip(gp, tmp_path)
    assert type(twin.kernel) is DeepKernel and twin.kernel.network.layers[0].weight.dtype == np.float64
    _assert_same_predictions(twin, gp)


def test_a_deep_kernel_alone_round_trips_in_float64(tmp_path):
    kernel = _deep_kernel()
    expected = kernel(X, X_TEST).numpy()
    twin = _round_trip(kernel, tmp_path)
    assert all(p.dtype == np.float64 for p in twin.parameters())
    np.testing.assert_array_equal(twin(X, X_TEST).numpy(), expected)


def test_a_loaded_ard_kernel_takes_the_saved_number_of_length_scales(tmp_path):
    kernel = kernels.RBF(ard=True)
    expected = kernel(X, X_TEST).numpy()                       # sized for 3 features here
    twin = _round_trip(kernel, tmp_path)
    assert twin.log_length_scale.shape == (3,)
    np.testing.assert_array_equal(twin(X, X_TEST).numpy(), expected)
    kernels.match_length_scales(twin, {"log_length_scale": np.zeros(2)})   # sized already: left alone
    assert twin.log_length_scale.shape == (3,)


def test_a_state_of_other_length_scales_is_refused():
    kernel = kernels.ScaleKernel(kernels.Matern([1.0, 2.0]))
    with pytest.raises(ShapeError, match=r"load_state_dict: 'base.log_length_scale' has shape \(3,\).*\(2,\)"):
        kernel.load_state_dict({"log_outputscale": np.zeros(()), "base.log_length_scale": np.zeros(3)})
