"""ONNX import of DFT (opsets 17 and 20; forward, inverse, one-sided, real and complex
inputs, cut or zero-extended lengths) against ONNX Runtime and torch.fft, and the spectral
layers and Fourier neural operators exported by lamina loading back with the same outputs
and gradients."""

import numpy as np
import pytest
import torch
from test_onnx_import import _against_runtime, _in_float64, _model, _node, _x

import lamina
from helpers import assert_close, check_gradients, compare_with_torch
from lamina import nn
from lamina.export import export_onnx, load_onnx
from lamina.models import FNO1D, FNO2D

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

REAL = _x(2, 6, 3, 1, seed=1)
COMPLEX = _x(2, 6, 3, 2, seed=2)
HALF = _x(2, 4, 3, 2, seed=3)

CASES = {        # name: (input, attributes, dft_length, axis input of opset 20)
    "real_forward": (REAL, {}, None, None),
    "real_onesided": (REAL, {"onesided": 1}, None, None),
    "real_onesided_odd_length": (REAL, {"onesided": 1}, 5, None),
    "real_inverse": (REAL, {"inverse": 1}, None, None),
    "complex_forward_axis2": (COMPLEX, {"axis": 2}, None, 2),
    "complex_inverse_padded": (COMPLEX, {"inverse": 1}, 8, None),
    "complex_negative_axis": (COMPLEX, {"axis": -2}, 4, -2),
    "half_spectrum_inverse": (HALF, {"inverse": 1, "onesided": 1}, None, None),
    "half_spectrum_inverse_odd": (HALF, {"inverse": 1, "onesided": 1}, 7, None),
}


def _dft_model(name: str, opset: int):
    x, attrs, length, axis = CASES[name]
    attrs = dict(attrs)
    initializers = {}
    inputs = ["x", "n" if length is not None else ""]
    if length is not None:
        initializers["n"] = np.array(length, dtype=np.int64)
    if opset >= 20:
        attrs.pop("axis", None)
        initializers["axis"] = np.array(1 if axis is None else axis, dtype=np.int64)
        inputs.append("axis")
    while inputs[-1] == "":
        inputs.pop()
    return _model([_node("DFT", inputs, **attrs)], {"x": x}, initializers, opset=opset)


@pytest.mark.parametrize("opset", [17, 20])
@pytest.mark.parametrize("name", sorted(CASES))
def test_dft_matches_onnx_runtime(name, opset):
    _against_runtime(_dft_model(name, opset), {"x": CASES[name][0]}, rtol=1e-4)


@pytest.mark.parametrize("name", ["real_onesided", "complex_inverse_padded", "half_spectrum_inverse_odd"])
def test_dft_gradients_pass_the_float64_check_and_equal_torch(name):
    imported = load_onnx(_in_float64(_dft_model(name, 17)))
    x = CASES[name][0][:1, :, :2]
    assert check_gradients(lambda a: imported(a), x)
    torch_fn = {
        "real_onesided": lambda a: torch.view_as_real(torch.fft.rfft(a[..., 0], dim=1)),
        "complex_inverse_padded": lambda a: torch.view_as_real(torch.fft.ifft(torch.view_as_complex(a), n=8, dim=1)),
        "half_spectrum_inverse_odd": lambda a: torch.fft.irfft(torch.view_as_complex(a), n=7, dim=1)[..., None],
    }[name]
    compare_with_torch(lambda a: load_onnx(_dft_model(name, 17))(a), torch_fn, x, rtol=1e-4)


def _randomized(model, shape):
    model.build((None, *shape[1:]))
    rng = np.random.default_rng(3)
    for value in model.state_dict().values():
        value[...] = rng.normal(0.0, 0.5 / np.sqrt(value.shape[0]), value.shape)
    return model


@pytest.mark.parametrize("make, shape", [
    (lambda: nn.Sequential(nn.SpectralConv1D(3, 4)), (2, 9, 2)),
    (lambda: nn.Sequential(nn.SpectralConv2D(3, (3, 2))), (2, 7, 6, 2)),
    (lambda: FNO1D(4, 8, layers=2, in_channels=2, out_channels=2), (2, 16, 2)),
    (lambda: FNO2D((3, 2), 6, layers=2), (2, 8, 6, 1)),
])
def test_spectral_models_round_trip_through_onnx(make, shape, tmp_path):
    lamina.manual_seed(0)
    model = _randomized(make(), shape)
    model.eval()
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    path = export_onnx(model, tmp_path / "spectral.onnx", input_shape=shape[1:])
    imported = load_onnx(path)
    ours = lamina.tensor(x, requires_grad=True)
    theirs = lamina.tensor(x, requires_grad=True)
    expected, got = model(ours), imported(theirs)
    assert_close(got.numpy(), expected.numpy(), rtol=2e-5)
    upstream = lamina.tensor(np.random.default_rng(2).standard_normal(expected.shape).astype(np.float32))
    (expected * upstream).sum().backward()
    (got * upstream).sum().backward()
    assert_close(np.asarray(theirs.grad), np.asarray(ours.grad), rtol=1e-4)
