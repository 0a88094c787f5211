"""ONNX export of functional models (Input/Model graphs), of the noise layers (identities at
evaluation) and of layers under WeightNorm and SpectralNorm, checked in ONNX Runtime."""

import numpy as np
import pytest
from test_onnx import _images, _randomize, _roundtrip

import lamina
from helpers import assert_close
from lamina import nn
from lamina.export import export_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _residual_cnn():
    inputs = nn.Input((9, 8, 4))
    a = nn.Conv2D(6, 3, padding="same", activation="relu")(inputs)
    b = nn.Conv2D(6, 3, padding="same")(a)
    c = nn.Concatenate()([nn.Add()([a, b]), nn.MaxPool2D(1)(a)])
    outputs = nn.Dense(5, activation="softmax")(nn.Flatten()(nn.MaxPool2D(2)(c)))
    return nn.Model(inputs, outputs)


def _shared_dense_mlp():
    inputs = nn.Input((12,))
    shared = nn.Dense(12, activation="tanh")
    h = shared(shared(inputs))                        # one layer called twice
    return nn.Model(inputs, nn.Dense(3)(nn.Add()([h, inputs])))


@pytest.mark.parametrize("build, x", [(_residual_cnn, _images()),
                                      (_shared_dense_mlp, np.random.default_rng(2).standard_normal((4, 12)))],
                         ids=["residual_cnn", "shared_dense"])
def test_functional_models_export_with_branches_and_shared_layers(build, x, tmp_path):
    model = build()
    x = x.astype(np.float32)
    _randomize(model)
    graph = _roundtrip(model, x, tmp_path)
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_a_model_of_two_inputs_is_refused_with_its_name(tmp_path):
    a, b = nn.Input((3,)), nn.Input((3,))
    model = nn.Model([a, b], nn.Dense(2)(nn.Add()([a, b])), name="pair")
    with pytest.raises(NotImplementedError, match="pair.*2 inputs and 1 outputs"):
        export_onnx(model, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_noise_layers_export_as_identities(tmp_path):
    model = nn.Sequential(nn.Conv2D(4, 3), nn.GaussianNoise(0.3), nn.SpatialDropout2D(0.5), nn.Flatten(),
                          nn.GaussianDropout(0.2), nn.Dense(6, activation="selu"), nn.AlphaDropout(0.1), nn.Dense(3))
    x = _images()
    model(lamina.tensor(x))
    _randomize(model)
    graph = _roundtrip(model, x, tmp_path)
    assert not any("noise" in n.name or "dropout" in n.name for n in graph.node)


def test_weight_and_spectral_normalized_layers_export_their_current_weights(tmp_path):
    model = nn.Sequential(nn.WeightNorm(nn.Conv2D(5, 3, activation="relu")), nn.Flatten(),
                          nn.SpectralNorm(nn.Dense(4)))
    x = _images()
    model(lamina.tensor(x))
    for p in model.parameters():                      # as after an optimizer step: the layers' weights are stale
        p.data = (p.data * 1.3 + 0.05).astype(np.float32)
    model.eval()
    path = export_onnx(model, tmp_path / "m.onnx")   # before any call could refresh the inner weights
    (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    with lamina.no_grad():
        expected = model(lamina.tensor(x)).numpy()
    assert_close(got, expected, rtol=2e-5)
