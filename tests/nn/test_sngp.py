"""SNGP: random Fourier features, the Laplace precision matrix, predictive variances,
mean-field logits, bounded spectral normalisation and distance-aware uncertainty on two moons."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, randn, run_readme_section
from lamina import functional as F
from lamina import nn
from lamina.autograd import no_grad
from lamina.optim import Adam


def _gp(x, **kwargs):
    layer = nn.RandomFeatureGaussianProcess(**{"num_classes": 3, "num_inducing": 16, **kwargs})
    layer.eval()
    with no_grad():
        layer(x)
    return layer


def _numpy_features(layer, x):
    h = np.asarray(x, dtype=np.float64)
    if layer.normalize_input:
        h = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-5)
    w, b = np.asarray(layer.W, dtype=np.float64), np.asarray(layer.b, dtype=np.float64)
    return math.sqrt(2.0 / layer.num_inducing) * np.cos(h @ w / layer.scale + b)


def test_random_features_approximate_the_rbf_kernel():
    lamina.manual_seed(0)
    x = randn(6, 3, seed=1)
    squared = ((x[:, None] - x[None]) ** 2).sum(-1)
    kernel = np.exp(-squared / (2 * 1.5 ** 2))
    errors = []
    for m in (50, 4000):
        layer = _gp(x, num_inducing=m, scale=1.5)
        phi = layer.random_features(lamina.tensor(x)).numpy().astype(np.float64)
        errors.append(np.abs(phi @ phi.T - kernel).max())
    assert errors[1] < 0.05 and errors[1] < errors[0] / 2, errors
    assert np.abs(kernel - np.eye(6)).max() > 0.2          # the points are close enough for the test to mean something


@pytest.mark.parametrize("likelihood, momentum", [("gaussian", -1.0), ("logistic", -1.0), ("gaussian", 0.9),
                                                  ("logistic", 0.5)])
def test_precision_matrix_equals_a_numpy_accumulation(likelihood, momentum):
    lamina.manual_seed(2)
    batches = [randn(5, 4, seed=3), randn(7, 4, seed=4)]
    layer = _gp(batches[0], likelihood=likelihood, momentum=momentum, ridge_penalty=0.5)
    layer.train()
    eye = 0.5 * np.eye(16)
    expected = eye if likelihood == "gaussian" else np.stack([eye] * 3)
    beta = np.asarray(layer.beta.data, dtype=np.float64)
    for x in batches:
        with no_grad():
            layer(x)
        phi = _numpy_features(layer, x)
        if likelihood == "gaussian":
            batch = phi.T @ phi
        else:
            p = 1 / (1 + np.exp(-(phi @ beta)))
            batch = np.stack([(phi * (p[:, k] * (1 - p[:, k]))[:, None]).T @ phi for k in range(3)])
        expected = momentum * expected + (1 - momentum) * batch / len(x) if momentum > 0 else expected + batch
        np.testing.assert_allclose(layer.precision, expected, rtol=1e-4, atol=1e-5)
    layer.eval()
    with no_grad():
        layer(batches[0])
    np.testing.assert_allclose(layer.precision, expected, rtol=1e-4, atol=1e-5)   # evaluation adds nothing
    layer.reset_covariance()
    np.testing.assert_array_equal(layer.precision, eye if likelihood == "gaussian" else np.stack([eye] * 3))


@pytest.mark.parametrize("likelihood", ["gaussian", "logistic"])
def test_predictive_variance_equals_the_closed_form(likelihood):
    lamina.manual_seed(5)
    lamina.set_default_dtype("float64")
    try:
        x, seen = randn(4, 3, seed=6), randn(30, 3, seed=7)
        layer = _gp(x, likelihood=likelihood, ridge_penalty=2.0, normalize_input=True)
        layer.train()
        with no_grad():
            layer(seen)
        layer.eval()
        with no_grad():
            logits, variance = layer(lamina.tensor(x, dtype=np.float64), return_variance=True)
    finally:
        lamina.set_default_dtype("float32")
    phi = _numpy_features(layer, x)
    covariances = 2.0 * np.linalg.inv(np.asarray(layer.precision))
    if likelihood == "gaussian":
        expected = np.einsum("nm,mj,nj->n", phi, covariances, phi)
    else:
        expected = np.stack([np.einsum("nm,mj,nj->n", phi, c, phi) for c in covariances], axis=1)
    np.testing.assert_allclose(variance.numpy(), expected, rtol=1e-9)
    np.testing.assert_allclose(logits.numpy(), phi @ np.asarray(layer.beta.data), rtol=1e-9)
    # the data seen shrink the variance below that of the prior, ridge * |phi|^2 / ridge = |phi|^2
    prior = (phi * phi).sum(-1)
    assert np.all(variance.numpy() < (prior if likelihood == "gaussian" else prior[:, None]))


def test_mean_field_logits_follow_the_formula():
    logits, shared, per_class = randn(5, 3, seed=8), np.abs(randn(5, seed=9)), np.abs(randn(5, 3, seed=10))
    lam = math.pi / 8
    np.testing.assert_allclose(nn.mean_field_logits(logits, shared).numpy(),
                               logits / np.sqrt(1 + lam * shared)[:, None], rtol=1e-6)
    np.testing.assert_allclose(nn.mean_field_logits(logits, per_class, 0.3).numpy(),
                               logits / np.sqrt(1 + 0.3 * per_class), rtol=1e-6)
    np.testing.assert_array_equal(nn.mean_field_logits(logits, shared, -1.0).numpy(), logits.astype(np.float32))
    with pytest.raises(lamina.errors.ShapeError, match="mean_field_logits"):
        nn.mean_field_logits(logits, np.ones(4))
    torch_out = torch.tensor(logits) / torch.sqrt(1 + lam * torch.tensor(shared))[:, None]
    assert check_gradients(lambda z, v: nn.mean_field_logits(z, v), logits, shared)
    np.testing.assert_allclose(nn.mean_field_logits(logits, shared).numpy(), torch_out.numpy(), rtol=1e-6)


def _dense(weight):
    layer = nn.Dense(weight.shape[1])
    layer.build((None, weight.shape[0]))
    layer.weight.data = weight.astype(np.float32)
    return layer


def test_bounded_spectral_norm_keeps_small_weights_and_scales_large_ones_to_the_bound():
    lamina.manual_seed(11)
    rng = np.random.default_rng(12)
    w = rng.standard_normal((6, 4))
    sigma = np.linalg.svd(w, compute_uv=False)[0]
    x = randn(3, 6, seed=13).astype(np.float32)
    small = nn.BoundedSpectralNorm(_dense(0.5 * w / sigma), norm_bound=0.95, n_power_iterations=30)
    with no_grad():
        small(x)
    np.testing.assert_array_equal(small.layer.weight.numpy(), (0.5 * w / sigma).astype(np.float32))
    large = nn.BoundedSpectralNorm(_dense(3.0 * w), norm_bound=0.95, n_power_iterations=30)
    with no_grad():
        large(x)
    effective = large.layer.weight.numpy().astype(np.float64)
    assert abs(np.linalg.svd(effective, compute_uv=False)[0] - 0.95) < 1e-4
    np.testing.assert_allclose(effective, 0.95 * w / sigma, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("scale", [0.2, 5.0])
def test_bounded_spectral_norm_values_and_gradients_match_torch(scale):
    """With u and v held fixed (evaluation): c W / (u^T W v) above the bound c, W below it."""
    lamina.manual_seed(14)
    w = (np.random.default_rng(15).standard_normal((5, 3)) * scale).astype(np.float32).astype(np.float64)
    layer = nn.BoundedSpectralNorm(_dense(w), norm_bound=0.8).double()
    layer.eval()
    x = randn(4, 5, seed=16)
    ours_x = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    out = layer(ours_x)
    up = randn(4, 3, seed=17)
    (out * lamina.tensor(up, dtype=np.float64)).sum().backward()
    u, v = torch.tensor(np.asarray(layer.u)), torch.tensor(np.asarray(layer.v))
    tw, tx = torch.tensor(w, requires_grad=True), torch.tensor(x, requires_grad=True)
    sigma = u @ (tw.T @ v)                              # the units axis of a Dense weight is the last
    effective = 0.8 * tw / sigma if sigma.item() > 0.8 else tw
    expected = tx @ effective + torch.tensor(np.asarray(layer.layer.bias.data))
    (expected * torch.tensor(up)).sum().backward()
    np.testing.assert_allclose(out.numpy(), expected.detach().numpy(), rtol=1e-10)
    np.testing.assert_allclose(ours_x.grad, tx.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(layer.weight_orig.grad, tw.grad.numpy(), rtol=1e-10)
    assert check_gradients(lambda t: layer(t), x)


def test_gp_training_forward_values_and_gradients_match_torch():
    lamina.manual_seed(18)
    x = randn(6, 4, seed=19)
    layer = _gp(x, normalize_input=True, scale=0.7).double()
    layer.train()
    ours_x = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    logits = layer(ours_x)
    up = randn(6, 3, seed=20)
    (logits * lamina.tensor(up, dtype=np.float64)).sum().backward()
    tx = torch.tensor(x, requires_grad=True)
    beta = torch.tensor(np.asarray(layer.beta.data), requires_grad=True)
    h = torch.nn.functional.layer_norm(tx, (4,), eps=1e-5)
    phi = math.sqrt(2 / 16) * torch.cos(h @ torch.tensor(np.asarray(layer.W)) / 0.7 + torch.tensor(np.asarray(layer.b)))
    expected = phi @ beta
    (expected * torch.tensor(up)).sum().backward()
    np.testing.assert_allclose(logits.numpy(), expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours_x.grad, tx.grad.numpy(), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(layer.beta.grad, beta.grad.numpy(), rtol=1e-10, atol=1e-12)
    assert check_gradients(lambda t: layer(t), x)


def test_errors_name_the_layer():
    with pytest.raises(ValueError, match="RandomFeatureGaussianProcess: likelihood"):
        nn.RandomFeatureGaussianProcess(2, likelihood="poisson")
    with pytest.raises(ValueError, match="momentum"):
        nn.RandomFeatureGaussianProcess(2, momentum=1.0)
    layer = _gp(randn(2, 3))
    with pytest.raises(lamina.errors.ShapeError, match="RandomFeatureGaussianProcess"):
        layer(randn(2, 4))


def test_trained_model_saves_and_loads_with_its_covariance(tmp_path):
    lamina.manual_seed(21)
    model = nn.SNGPResMLP(2, hidden=8, num_layers=2, gp={"num_inducing": 12, "likelihood": "logistic"})
    x = randn(10, 2, seed=22).astype(np.float32)
    with no_grad():
        model(x)
    model.eval()
    with no_grad():
        expected = model(x, return_variance=True)
    lamina.save(model, tmp_path / "sngp.safetensors")
    twin = lamina.load(tmp_path / "sngp.safetensors")
    twin.eval()
    with no_grad():
        got = twin(x, return_variance=True)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not any(p.trainable for p in twin.input_projection.parameters())


# -- distance-aware uncertainty on two moons ---------------------------------------------------
def _moons(n, seed, noise=0.1):
    rng = np.random.default_rng(seed)
    t, label = rng.uniform(0, np.pi, n), rng.integers(0, 2, n)
    upper = np.stack([np.cos(t), np.sin(t)], 1)
    lower = np.stack([1 - np.cos(t), 0.5 - np.sin(t)], 1)
    points = np.where(label[:, None] == 0, upper, lower) + noise * rng.standard_normal((n, 2))
    return points.astype(np.float32), label


def _fit(model, x, y, epochs, before_last_epoch=None):
    with no_grad():
        model(x[:2])
    optimizer = Adam(model.parameters(trainable_only=True), lr=0.01)
    model.train()
    for epoch in range(epochs):
        if epoch == epochs - 1 and before_last_epoch is not None:
            before_last_epoch()                          # the last epoch sums the precision matrix
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def test_sngp_is_uncertain_far_from_two_moons_where_a_softmax_mlp_is_confident():
    lamina.manual_seed(0)
    x, y = _moons(200, 0)
    x_test, y_test = _moons(200, 1)
    angles = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    far = np.stack([0.5 + 4 * np.cos(angles), 0.25 + 4 * np.sin(angles)], 1).astype(np.float32)

    sngp = nn.SNGPResMLP(2, hidden=32, num_layers=3, dropout=0.0, gp={"num_inducing": 256, "scale": 2.0})
    _fit(sngp, x, y, 120, sngp.reset_covariance)
    with no_grad():
        test_logits, test_variance = sngp(x_test, return_variance=True)
        far_logits, far_variance = sngp(far, return_variance=True)
    assert (test_logits.numpy().argmax(1) == y_test).mean() > 0.97
    near_var, far_var = test_variance.numpy(), far_variance.numpy()
    assert far_var.min() > near_var.mean() + 0.4 and far_var.mean() > 3 * near_var.mean()
    far_confidence = F.softmax(nn.mean_field_logits(far_logits, far_variance), axis=-1).numpy().max(1)
    near_confidence = F.softmax(nn.mean_field_logits(test_logits, test_variance), axis=-1).numpy().max(1)
    assert near_confidence.mean() > 0.95 and far_confidence.mean() < 0.8

    plain = nn.Sequential([nn.Dense(32, activation="relu"), nn.Dense(32, activation="relu"), nn.Dense(2)])
    _fit(plain, x, y, 120)
    with no_grad():
        assert (plain(x_test).numpy().argmax(1) == y_test).mean() > 0.97
        plain_far = F.softmax(plain(far), axis=-1).numpy().max(1)
    assert plain_far.mean() > 0.95                      # confidently one class or the other, far from any data
    assert plain_far.mean() - far_confidence.mean() > 0.2


def test_readme_example_runs():
    printed, names = run_readme_section("Distance-aware uncertainty (SNGP)")
    assert names["far_variance"] > 2 * names["near_variance"]
    assert "variance" in printed
