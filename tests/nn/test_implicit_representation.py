"""SIREN and Fourier features: values and gradients against torch rewrites, SIREN's
initialisation, derivatives of a SIREN with respect to its coordinates (gradient, Laplacian)
against torch's double backward, the coordinate grid, and fitting one 32x32 image."""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, compare_double_backward_with_torch, randn, run_readme_section
from lamina import nn, parallel
from lamina.autograd import Tensor, grad, gradcheck
from lamina.errors import ShapeError
from lamina.vision import fit_image, image_coordinates


@contextlib.contextmanager
def _single_threaded():
    """Small products: lamina's and BLAS's threads only cost here (more so on a busy machine)."""
    previous = parallel.get_num_threads()
    parallel.set_num_threads(1)
    try:
        with parallel.one_blas_thread():
            yield
    finally:
        parallel.set_num_threads(previous)


def _leaf(array):
    return Tensor(array, requires_grad=True, dtype=np.float64)


def _torch_siren(x, params, w0s, outermost_linear=True):
    """The SIREN forward pass in torch: sin(w0 (x W + b)) per layer, the last one linear."""
    for k, ((w, b), w0) in enumerate(zip(params, w0s)):
        x = x @ w + b
        if k < len(params) - 1 or not outermost_linear:
            x = torch.sin(w0 * x)
    return x


def _siren_params(model):
    return [(layer.weight, layer.bias) for layer in model.layers]


def test_sine_layer_matches_torch_and_passes_gradcheck():
    lamina.manual_seed(0)
    layer = nn.SineLayer(3, 4, w0=30.0).double()
    x = _leaf(randn(5, 3, scale=0.5))
    up = randn(5, 4, seed=1)
    out = layer(x)
    ours = grad((out * Tensor(up, dtype=np.float64)).sum(), [x, layer.weight, layer.bias])
    tx, tw, tb = (torch.tensor(a.data, requires_grad=True) for a in (x, layer.weight, layer.bias))
    reference = torch.sin(30.0 * (tx @ tw + tb))
    (reference * torch.tensor(up)).sum().backward()
    assert_close(out.data, reference.detach().numpy(), 1e-12)
    for mine, theirs in zip(ours, (tx, tw, tb)):
        assert_close(mine, theirs.grad.numpy(), 1e-11, "gradient")
    assert gradcheck(lambda x, w, b: layer(x), x, layer.weight, layer.bias, atol=1e-6)


def test_siren_initialisation_bounds():
    lamina.manual_seed(1)
    model = nn.Siren(2, 256, 2, 3, w0=30.0, w0_initial=30.0)
    first, hidden, last = model.layers[0], model.layers[1], model.layers[-1]
    bounds = [(first, 1.0 / 2), (hidden, math.sqrt(6.0 / 256) / 30.0), (last, math.sqrt(6.0 / 256) / 30.0)]
    for layer, bound in bounds:
        w = layer.weight.data
        assert np.abs(w).max() <= bound
        assert np.abs(w).max() > 0.95 * bound                   # the whole interval is used
        assert abs(w.std() - bound / math.sqrt(3.0)) < 0.1 * bound  # U(-a, a) has std a / sqrt(3)
        assert abs(w.mean()) < 0.05 * bound
        assert np.abs(layer.bias.data).max() <= 1.0 / math.sqrt(layer.in_features)
    assert first.is_first and not hidden.is_first and last.linear
    # the property the initialisation is for: hidden pre-activations w0 (x W + b) keep unit-order spread
    coords = Tensor(image_coordinates(16), dtype=np.float32)
    h = model.layers[1](model.layers[0](coords))
    assert 0.5 < float(h.data.std()) < 0.9                       # arcsine-distributed: std 1/sqrt(2)


def test_siren_matches_torch_values_and_parameter_gradients():
    lamina.manual_seed(2)
    model = nn.Siren(2, 8, 2, 3, w0=20.0, w0_initial=30.0).double()
    coords = _leaf(image_coordinates(4, 5, dtype=np.float64))
    up = randn(20, 3, seed=3)
    out = model(coords)
    leaves = [coords] + [p for pair in _siren_params(model) for p in pair]
    ours = grad((out * Tensor(up, dtype=np.float64)).sum(), leaves)
    theirs = [torch.tensor(t.data, requires_grad=True) for t in leaves]
    pairs = list(zip(theirs[1::2], theirs[2::2]))
    reference = _torch_siren(theirs[0], pairs, [30.0, 20.0, 20.0, 20.0])
    (reference * torch.tensor(up)).sum().backward()
    assert_close(out.data, reference.detach().numpy(), 1e-12)
    for k, (mine, t) in enumerate(zip(ours, theirs)):
        assert_close(mine, t.grad.numpy(), 1e-10, f"gradient {k}")


def test_siren_coordinate_gradient_and_laplacian_match_torch_double_backward():
    lamina.manual_seed(3)
    model = nn.Siren(2, 16, 1, 1, w0=30.0).double()
    params = [(torch.tensor(w.data), torch.tensor(b.data)) for w, b in _siren_params(model)]
    coords = image_coordinates(3, 4, dtype=np.float64)

    compare_double_backward_with_torch(model, lambda x: _torch_siren(x, params, [30.0] * 3), coords, rtol=1e-9)

    x = _leaf(coords)
    (gradient,) = grad(model(x).sum(), [x], create_graph=True)
    laplacian = sum(grad(gradient[:, i].sum(), [x], create_graph=True)[0][:, i] for i in range(2))
    tx = torch.tensor(coords, requires_grad=True)
    (tgradient,) = torch.autograd.grad(_torch_siren(tx, params, [30.0] * 3).sum(), tx, create_graph=True)
    tlaplacian = sum(torch.autograd.grad(tgradient[:, i].sum(), tx, create_graph=True)[0][:, i] for i in range(2))
    assert_close(gradient.data, tgradient.detach().numpy(), 1e-10, "gradient")
    assert_close(laplacian.data, tlaplacian.detach().numpy(), 1e-9, "laplacian")
    # the Laplacian is itself differentiable in the parameters (a loss on it can be trained)
    (dlap,) = grad(laplacian.sum(), [model.layers[0].weight])
    tw = params[0][0].requires_grad_(True)
    (tgradient,) = torch.autograd.grad(_torch_siren(tx, params, [30.0] * 3).sum(), tx, create_graph=True)
    tlaplacian = sum(torch.autograd.grad(tgradient[:, i].sum(), tx, create_graph=True)[0][:, i] for i in range(2))
    (tdlap,) = torch.autograd.grad(tlaplacian.sum(), tw)
    assert_close(dlap, tdlap.numpy(), 1e-9, "gradient of the laplacian")


@pytest.mark.parametrize("kind", ["gaussian", "positional", "basic"])
def test_fourier_features_match_torch(kind):
    lamina.manual_seed(4)
    layer = nn.FourierFeatures(2, mapping_size=6, scale=3.0, kind=kind).double()
    b = np.asarray(layer.B, dtype=np.float64)
    x = _leaf(randn(7, 2, scale=0.5))
    up = randn(7, layer.out_features, seed=5)
    out = layer(x)
    (dx,) = grad((out * Tensor(up, dtype=np.float64)).sum(), [x])
    tx = torch.tensor(x.data, requires_grad=True)
    projected = 2 * math.pi * tx @ torch.tensor(b).T
    reference = torch.cat([torch.cos(projected), torch.sin(projected)], dim=-1)
    (reference * torch.tensor(up)).sum().backward()
    assert_close(out.data, reference.detach().numpy(), 1e-12)
    assert_close(dx, tx.grad.numpy(), 1e-11, "gradient")
    assert gradcheck(lambda x: layer(x), x)


def test_fourier_feature_matrices():
    lamina.manual_seed(5)
    gaussian = np.asarray(nn.FourierFeatures(3, mapping_size=4000, scale=10.0).B)
    assert gaussian.shape == (4000, 3)
    assert abs(gaussian.std() - 10.0) < 0.3 and abs(gaussian.mean()) < 0.3
    positional = np.asarray(nn.FourierFeatures(2, mapping_size=4, scale=16.0, kind="positional").B)
    levels = 16.0 ** (np.arange(4) / 4)                              # sigma^(j/m): 1, 2, 4, 8
    np.testing.assert_allclose(positional, np.stack([np.diag([s, s]) for s in levels]).reshape(8, 2))
    np.testing.assert_array_equal(np.asarray(nn.FourierFeatures(2, kind="basic").B), np.eye(2))
    trainable = nn.FourierFeatures(2, mapping_size=3, trainable=True).double()
    x = _leaf(randn(4, 2))
    assert gradcheck(lambda x, b: trainable(x), x, trainable.B)
    assert [p is trainable.B for p in trainable.parameters()] == [True]


def test_image_coordinates():
    grid = image_coordinates(3, 5, flatten=False)
    assert grid.shape == (3, 5, 2) and grid.dtype == np.float32
    np.testing.assert_allclose(grid[:, 0, 0], [-1, 0, 1])
    np.testing.assert_allclose(grid[0, :, 1], [-1, -0.5, 0, 0.5, 1])
    flat = image_coordinates(3, 5)
    np.testing.assert_array_equal(flat, grid.reshape(-1, 2))
    assert image_coordinates(4).shape == (16, 2)


def test_errors():
    with pytest.raises(ShapeError, match=r"\(\.\.\., 2\).*got shape \(4, 3\)"):
        nn.Siren(2, 8, 1, 1)(np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match="kind must be one of"):
        nn.FourierFeatures(2, kind="random")
    with pytest.raises(ShapeError, match="expected \\(16, 3\\)"):
        fit_image(nn.Siren(2, 8, 1, 1), np.zeros((4, 4, 3), np.float32), steps=1)


def test_siren_and_fourier_features_fit_an_image_far_better_than_a_relu_mlp():
    from lamina.data import load_digits

    images, _ = load_digits(size=32)                        # an 8x8 digit enlarged to 32x32: sharp edges
    image = images[0, :, :, 0].astype(np.float32) / 255
    with _single_threaded():
        lamina.manual_seed(0)
        siren = fit_image(nn.Siren(2, 32, 1, 1), image, steps=100, lr=1e-3, log_every=50)
        lamina.manual_seed(0)
        fourier = nn.Sequential(nn.FourierFeatures(2, mapping_size=32, scale=3.0), nn.Dense(32, "relu"), nn.Dense(1))
        fourier = fit_image(fourier, image, steps=100, lr=1e-2, log_every=50)
        lamina.manual_seed(0)
        relu = nn.Sequential(nn.Dense(32, "relu"), nn.Dense(32, "relu"), nn.Dense(1))
        relu = fit_image(relu, image, steps=100, lr=1e-2, log_every=50)
    final = {name: h["psnr"][-1] for name, h in (("siren", siren), ("fourier", fourier), ("relu", relu))}
    print("PSNR after 100 steps (dB):", {k: round(v, 1) for k, v in final.items()})
    assert siren["prediction"].shape == (32, 32, 1) and siren["steps"] == [0, 50, 100]
    assert final["siren"] > final["relu"] + 10
    assert final["fourier"] > final["relu"] + 5
    assert siren["psnr"][-1] > siren["psnr"][0] + 15


def test_readme_example_runs():
    with _single_threaded():
        _, names = run_readme_section("Implicit layers: deep equilibrium models and SIREN", {"steps=200": "steps=60"})
    assert names["result"].converged and names["result"].steps < 30
    assert names["dx"].shape == (4, 16) and names["dw"].shape == (16, 16)
    assert names["history"]["psnr"][-1] > 25


def test_configs_and_state_round_trip():
    lamina.manual_seed(6)
    for layer in (nn.SineLayer(2, 3, w0=10.0, is_first=True), nn.Siren(2, 4, 1, 1),
                  nn.FourierFeatures(2, mapping_size=5, scale=2.0, kind="positional")):
        again = nn.layer_from_config(nn.layer_to_config(layer))
        assert type(again) is type(layer) and again.get_config() == layer.get_config()
        again.load_state_dict(layer.state_dict())
        x = randn(3, 2).astype(np.float32)
        np.testing.assert_array_equal(again(x).data, layer(x).data)
