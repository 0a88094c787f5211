"""Koopman autoencoder: the layers and the three losses against a PyTorch rewrite (float64, values
and gradients of every weight and of the input), finite-difference gradients, and learning: on
the slow-manifold system x1' = mu x1, x2' = lambda (x2 - x1^2), whose observables (x1, x2, x1^2)
evolve linearly, the latent K finds continuous-time eigenvalues near mu and lambda."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, randn
from lamina.data import slow_manifold_trajectory
from lamina.errors import ShapeError
from lamina.models import KoopmanAutoencoder


def _dense_layers(model):
    return list(model.encoder) + [model.koopman] + list(model.decoder)


def mlp(h, layers):
    for i, (w, b) in enumerate(layers):
        h = h @ w + b
        if i < len(layers) - 1:
            h = torch.tanh(h)
    return h


def _torch_loss(x, params, n_encoder, weights):
    """The losses written directly in torch: tanh MLPs, z K, means of squared errors."""
    encoder, k, decoder = params[:n_encoder], params[n_encoder][0], params[n_encoder + 1:]
    z = mlp(x, encoder)
    reconstruction = ((mlp(z, decoder) - x) ** 2).mean()
    z_hat, advanced = z[:, 0], []
    for _ in range(1, x.shape[1]):
        z_hat = z_hat @ k
        advanced.append(z_hat)
    z_hat = torch.stack(advanced, 1)
    prediction = ((mlp(z_hat, decoder) - x[:, 1:]) ** 2).mean()
    linearity = ((z_hat - z[:, 1:]) ** 2).mean()
    return weights[0] * reconstruction + weights[1] * prediction + weights[2] * linearity, reconstruction, \
        prediction, linearity


def test_losses_and_gradients_match_a_torch_rewrite(f64):
    model = KoopmanAutoencoder(2, 3, hidden=(5, 4), reconstruction_weight=0.7, prediction_weight=1.3,
                               linearity_weight=0.4)
    x = randn(4, 5, 2, seed=1)
    inputs = lamina.tensor(x, requires_grad=True)
    out = model.loss(inputs)
    out.loss.backward()
    layers = _dense_layers(model)
    params = [(torch.tensor(layer.weight.data, requires_grad=True),
               torch.tensor(layer.bias.data, requires_grad=True) if layer.use_bias else None) for layer in layers]
    tx = torch.tensor(x, requires_grad=True)
    theirs = _torch_loss(tx, params, len(model.encoder), (0.7, 1.3, 0.4))
    theirs[0].backward()
    for ours, expected in zip((out.loss, out.reconstruction, out.prediction, out.linearity), theirs):
        np.testing.assert_allclose(ours.numpy(), expected.item(), rtol=1e-12)
    np.testing.assert_allclose(inputs.grad, tx.grad.numpy(), rtol=1e-10, atol=1e-13)
    for layer, (w, b) in zip(layers, params):
        np.testing.assert_allclose(layer.weight.grad, w.grad.numpy(), rtol=1e-10, atol=1e-13)
        if b is not None:
            np.testing.assert_allclose(layer.bias.grad, b.grad.numpy(), rtol=1e-10, atol=1e-13)
    assert not model.koopman.use_bias
    one_step = model(lamina.tensor(x[:, 0])).numpy()
    n = len(model.encoder)
    with torch.no_grad():
        expected = mlp(mlp(torch.tensor(x[:, 0]), params[:n]) @ params[n][0], params[n + 1:])
    np.testing.assert_allclose(one_step, expected.numpy(), rtol=1e-12)


def test_gradients_by_finite_differences(f64):
    model = KoopmanAutoencoder(2, 2, hidden=(3,))
    assert check_gradients(lambda x: model.loss(x).loss, randn(3, 4, 2, seed=2))


def test_eigenvalues_of_k():
    model = KoopmanAutoencoder(2, 2, hidden=(3,))
    model.koopman.weight.data = np.array([[0.9, 0.0], [0.0, 0.5]], dtype=model.koopman.weight.data.dtype)
    np.testing.assert_allclose(np.sort(model.continuous_eigenvalues(0.1).real), np.log([0.5, 0.9]) / 0.1, rtol=1e-6)


def test_learns_the_koopman_eigenvalues_of_the_slow_manifold_system():
    lamina.manual_seed(0)
    mu, lam, dt = -0.3, -1.0, 0.25
    rng = np.random.default_rng(0)
    t = dt * np.arange(9)
    windows = np.stack([slow_manifold_trajectory(t, rng.uniform(-1.5, 1.5, 2), mu, lam) for _ in range(256)])
    model = KoopmanAutoencoder(2, 3, hidden=(16,))
    start = time.perf_counter()
    history = model.fit(windows.astype(np.float32), steps=800, lr=1e-2)
    seconds = time.perf_counter() - start
    found = np.sort(model.continuous_eigenvalues(dt).real)
    print(f"Koopman eigenvalues {found} (mu {mu}, lambda {lam}, 2 mu {2 * mu}); loss {history[0]:.3g} -> "
          f"{history[-1]:.2g} in {seconds:.1f} s")
    assert history[-1] < 0.01 * history[0]
    assert np.abs(found - mu).min() < 0.05                                    # measured ~0.005
    assert np.abs(found - lam).min() < 0.15                                   # measured 0.01-0.07
    assert np.abs(model.continuous_eigenvalues(dt).imag).max() < 1e-6


def test_clear_errors():
    model = KoopmanAutoencoder(2, 3, hidden=(4,))
    with pytest.raises(ShapeError, match=r"sequences \(batch, steps \+ 1 >= 2, 2\)"):
        model.loss(np.zeros((4, 1, 2), dtype=np.float32))
    with pytest.raises(ShapeError, match="KoopmanAutoencoder.loss"):
        model.loss(np.zeros((4, 3, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="loss weights"):
        KoopmanAutoencoder(2, 3, linearity_weight=-1.0)
    with pytest.raises(ValueError, match="dt must be positive"):
        model.continuous_eigenvalues(0.0)
