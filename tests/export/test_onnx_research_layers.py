"""ONNX export of SIREN's sine layers, Fourier features, the Bayesian layers (posterior means)
and the modern Hopfield layers: ONNX Runtime gives lamina's evaluation outputs for two batch
sizes and the export leaves the weights as they were; a Bayesian layer that samples in
evaluation and the mixture density head are refused with the layer named."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from onnx_checks import check_export

import lamina
from lamina import nn
from lamina.export import export_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

_check = functools.partial(check_export, build=True)



def test_a_siren_exports(tmp_path):
    lamina.manual_seed(0)
    _check(nn.Sequential(nn.Siren(2, 8, 1, 3, w0=3.0, w0_initial=5.0)), tmp_path, (5, 2), "Siren", rtol=1e-4)


def test_a_sine_output_layer_without_bias_exports(tmp_path):
    lamina.manual_seed(0)
    model = nn.Sequential(nn.SineLayer(3, 4, w0=2.0, use_bias=False), nn.SineLayer(4, 2, w0=2.0))
    _check(model, tmp_path, (3,), "sine layers")


@pytest.mark.parametrize("kind", ["gaussian", "positional", "basic"])
@pytest.mark.parametrize("trainable", [False, True])
def test_fourier_features_export(kind, trainable, tmp_path):
    lamina.manual_seed(0)
    model = nn.Sequential(nn.FourierFeatures(2, mapping_size=4, scale=2.0, kind=kind, trainable=trainable),
                          nn.Dense(3))
    _check(model, tmp_path, (6, 2), f"FourierFeatures {kind}", rtol=1e-4)


def _moved_posterior(model: nn.Module) -> nn.Module:
    """Bias means off zero and the standard deviations large: a sampled forward pass would
    differ from the means'."""
    rng = np.random.default_rng(3)
    for name, p in model.named_parameters():
        shift = 2.0 if name.endswith("rho") else 0.3
        p.data = (p.data + shift * rng.standard_normal(p.shape)).astype(p.data.dtype)
    return model


def test_a_bayesian_dense_exports_its_posterior_means(tmp_path):
    lamina.manual_seed(0)
    model = nn.Sequential(nn.BayesianDense(6, activation="relu"), nn.BayesianDense(2, use_bias=False))
    model(lamina.tensor(np.zeros((1, 4), dtype=np.float32)))
    _check(_moved_posterior(model), tmp_path, (4,), "BayesianDense")


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_a_bayesian_conv2d_exports_its_posterior_means(padding, tmp_path):
    lamina.manual_seed(0)
    model = nn.Sequential(nn.BayesianConv2D(3, 3, stride=2, padding=padding, activation="tanh"),
                          nn.Flatten(), nn.Dense(2))
    model(lamina.tensor(np.zeros((1, 7, 6, 2), dtype=np.float32)))
    _check(_moved_posterior(model), tmp_path, (7, 6, 2), "BayesianConv2D")


def test_a_bayesian_layer_sampling_in_evaluation_is_refused(tmp_path):
    model = nn.Sequential(nn.Dense(3), nn.BayesianDense(2, sample_in_eval=True, name="sampler"))
    model(lamina.tensor(np.zeros((1, 4), dtype=np.float32)))
    with pytest.raises(NotImplementedError, match="sampler.*sample_in_eval"):
        export_onnx(model, tmp_path / "model.onnx")


def test_the_mixture_density_head_is_refused(tmp_path):
    model = nn.Sequential(nn.Dense(3), nn.MixtureDensityHead(2, out_dim=2, name="mdn"))
    model(lamina.tensor(np.zeros((1, 4), dtype=np.float32)))
    with pytest.raises(NotImplementedError, match="mdn.*three"):
        export_onnx(model, tmp_path / "model.onnx")


@pytest.mark.parametrize("steps", [1, 3])
def test_a_hopfield_layer_exports_on_sets_and_vectors(steps, tmp_path):
    lamina.manual_seed(0)
    layer = nn.HopfieldLayer(num_patterns=5, hidden_size=4, output_size=3, beta=2.0, update_steps=steps)
    _check(nn.Sequential(layer), tmp_path, (6, 3), "HopfieldLayer on a set")
    lamina.manual_seed(0)
    layer = nn.HopfieldLayer(num_patterns=5, hidden_size=4, output_size=3, update_steps=steps)
    _check(nn.Sequential(nn.Dense(3), layer), tmp_path, (3,), "HopfieldLayer on vectors")


@pytest.mark.parametrize("output_size", [None, 3])
@pytest.mark.parametrize("steps", [1, 2])
def test_hopfield_pooling_exports(output_size, steps, tmp_path):
    lamina.manual_seed(0)
    layer = nn.HopfieldPooling(4, num_queries=2, output_size=output_size, beta=1.5, update_steps=steps)
    _check(nn.Sequential(layer, nn.Dense(2)), tmp_path, (5, 3), "HopfieldPooling")


@pytest.mark.parametrize("output_size", [None, 3])
@pytest.mark.parametrize("steps", [1, 2])
def test_a_hopfield_self_association_exports(output_size, steps, tmp_path):
    lamina.manual_seed(0)
    layer = nn.Hopfield(4, output_size=output_size, update_steps=steps)
    _check(nn.Sequential(layer), tmp_path, (5, 3), "Hopfield")
