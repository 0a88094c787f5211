"""ONNX export of SpectralConv1D / SpectralConv2D and the Fourier neural operators on ONNX's DFT
operator: ONNX Runtime gives what lamina gives, with even and odd grids and with the highest
(Nyquist) frequency kept."""

import numpy as np
import pytest
from test_onnx import _roundtrip

import lamina
from helpers import assert_close
from lamina import nn
from lamina.export import export_onnx
from lamina.models import FNO1D, FNO2D

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

TOLERANCE = 2e-5


def _randomized(model, shape):
    """``model`` built for ``shape`` with weights of a scale that keeps every frequency alive."""
    model.build((None, *shape[1:]))
    rng = np.random.default_rng(3)
    for value in model.state_dict().values():
        value[...] = rng.normal(0.0, 0.5 / np.sqrt(value.shape[0]), value.shape)
    return model


def _batch(*shape, seed=1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("length, modes", [(8, 5), (9, 5), (10, 3), (6, 1)])
def test_spectral_conv1d_exports(length, modes, tmp_path):
    x = _batch(3, length, 2)
    graph = _roundtrip(_randomized(nn.Sequential(nn.SpectralConv1D(3, modes)), x.shape), x, tmp_path,
                       rtol=TOLERANCE, input_shape=x.shape[1:])
    assert [n.op_type for n in graph.node].count("DFT") == 2


@pytest.mark.parametrize("h, w, modes", [(8, 9, (4, 5)), (7, 6, (2, 3)), (5, 4, (1, 1)), (12, 10, (3, 2))])
def test_spectral_conv2d_exports(h, w, modes, tmp_path):
    x = _batch(3, h, w, 2)
    graph = _roundtrip(_randomized(nn.Sequential(nn.SpectralConv2D(3, modes)), x.shape), x, tmp_path,
                       rtol=TOLERANCE, input_shape=x.shape[1:])
    assert [n.op_type for n in graph.node].count("DFT") == 4


@pytest.mark.parametrize("make, shape", [
    (lambda: FNO1D(6, 8, layers=3, in_channels=2, out_channels=2), (3, 32, 2)),
    (lambda: FNO1D(4, 8, layers=2, append_grid=False), (3, 16, 1)),
    (lambda: FNO2D((3, 4), 6, layers=2), (3, 12, 10, 1)),
    (lambda: FNO1D(5, 6, layers=2, padding=3, grid="closed"), (3, 8, 1)),
    (lambda: FNO2D((4, 3), 6, layers=2, padding=2, grid="closed"), (3, 7, 9, 1)),
    (lambda: FNO2D(3, 4, layers=1, append_grid=False, padding=4), (2, 6, 6, 1)),
])
def test_fno_models_export_and_keep_the_batch_free(make, shape, tmp_path):
    x = _batch(*shape)
    model = _randomized(make(), shape)
    _roundtrip(model, x, tmp_path, rtol=TOLERANCE, input_shape=shape[1:])
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    more = _batch(5, *shape[1:], seed=2)
    (got,) = session.run(None, {"input": more})
    with lamina.no_grad():
        assert_close(got, model(more).numpy(), TOLERANCE)


def test_a_grid_too_small_for_the_modes_is_refused(tmp_path):
    model = _randomized(FNO1D(6, 4, layers=1), (1, 16, 1))
    with pytest.raises(lamina.errors.ShapeError, match="modes"):
        export_onnx(model, tmp_path / "model.onnx", input_shape=(8, 1))
