"""ONNX export of KANLinear: the B-spline basis written out by the Cox-de Boor recursion gives in
ONNX Runtime what the layer gives in lamina, inside and outside the grid, for two batch sizes;
the export leaves the weights as they were, and symbolic edges are refused with the layer named."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from helpers import assert_close
from lamina import nn
from lamina.export import export_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _built(model: nn.Module, input_shape) -> nn.Module:
    model(lamina.tensor(np.zeros((1, *input_shape), dtype=np.float32)))
    return model.eval()


@pytest.mark.parametrize("options", [{}, {"spline_order": 1, "grid_size": 3, "base_activation": "tanh"},
                                     {"enable_standalone_scale_spline": False, "grid_range": (-2.0, 1.0),
                                      "base_activation": None}])
@pytest.mark.parametrize("input_shape", [(3,), (4, 3)])
def test_kan_layers_export(options, input_shape, tmp_path):
    lamina.manual_seed(0)
    model = _built(nn.Sequential(nn.KANLinear(5, **options), nn.KANLinear(2, grid_size=4)), input_shape)
    rng = np.random.default_rng(0)
    for p in model.parameters():
        p.data = (p.data + 0.3 * rng.standard_normal(p.shape)).astype(p.data.dtype)
    before = {name: np.array(v, copy=True) for name, v in model.state_dict().items()}
    path = export_onnx(model, tmp_path / "model.onnx", input_shape=input_shape)
    assert all(np.array_equal(before[name], v) for name, v in model.state_dict().items())
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        x = (1.5 * np.random.default_rng(batch).standard_normal((batch, *input_shape))).astype(np.float32)
        with lamina.no_grad():
            expected = model(lamina.tensor(x)).numpy()
        (got,) = session.run(None, {"input": x})
        assert_close(got, expected, rtol=1e-5, what=f"KANLinear {options}, batch {batch}")


def test_a_kan_layer_with_a_symbolic_edge_is_refused(tmp_path):
    lamina.manual_seed(0)
    model = _built(nn.Sequential(nn.KANLinear(2, name="kan")), (3,))
    model.layers[0].fix_symbolic(0, 1, "x", (1.0, 1.0, 0.0, 0.0))
    with pytest.raises(NotImplementedError, match="kan.*symbolic"):
        export_onnx(model, tmp_path / "model.onnx")
