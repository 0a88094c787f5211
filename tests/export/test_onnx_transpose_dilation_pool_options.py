"""ONNX export of Conv2DTranspose with dilation and groups (ConvTranspose's ``dilations`` and
``group``) and of AvgPool1D/AvgPool3D's count_include_pad; divisor_override has no ONNX form."""

from __future__ import annotations

import numpy as np
import pytest
from test_onnx import _randomize, _roundtrip

from lamina import nn, no_grad, tensor
from lamina.export import export_onnx, load_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _batch(*shape, seed=2) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((3, *shape)).astype(np.float32)


def _exported(layer, x, tmp_path):
    model = nn.Sequential(layer)
    model.build(x.shape)
    _randomize(model)
    return _roundtrip(model, x, tmp_path, rtol=1e-5, input_shape=x.shape[1:])


def _attributes(graph, op: str) -> dict:
    (node,) = [node for node in graph.node if node.op_type == op]
    return {a.name: (list(a.ints) if a.ints else a.i) for a in node.attribute}


# output_padding at least the stride (allowed below the dilation) uncrops the padding, or is
# a zero Pad where there is none: ONNX Runtime refuses such an output_padding
@pytest.mark.parametrize("kernel, stride, padding, output_padding, dilation, groups, use_bias", [
    (3, 2, 1, 1, 2, 1, True), (3, 1, 0, 1, 2, 2, True), (3, 1, 0, 2, 3, 1, False), (3, 1, 1, 1, 2, 1, True),
    ((2, 3), (2, 1), (0, 1), (1, 0), (3, 2), 2, True), (3, 2, "same", 0, 2, 1, True),
])
def test_dilated_grouped_conv_transpose_exports(kernel, stride, padding, output_padding, dilation, groups,
                                                use_bias, tmp_path):
    layer = nn.Conv2DTranspose(4, kernel, stride=stride, padding=padding, output_padding=output_padding,
                               dilation=dilation, groups=groups, use_bias=use_bias, activation="tanh")
    graph = _exported(layer, _batch(5, 4, 4), tmp_path)
    attributes = _attributes(graph, "ConvTranspose")
    assert attributes["dilations"] == list(layer.dilation) and attributes["group"] == groups
    assert all(e < s for e, s in zip(attributes["output_padding"], layer.stride))


@pytest.mark.parametrize("include_pad", [True, False])
def test_avg_pool1d_and_3d_count_include_pad_export(include_pad, tmp_path):
    graph = _exported(nn.AvgPool1D(3, stride=2, padding=1, count_include_pad=include_pad), _batch(9, 4), tmp_path)
    assert _attributes(graph, "AveragePool")["count_include_pad"] == int(include_pad)
    graph = _exported(nn.AvgPool3D(3, stride=(1, 2, 2), padding=1, count_include_pad=include_pad),
                      _batch(3, 5, 4, 2), tmp_path)
    assert _attributes(graph, "AveragePool")["count_include_pad"] == int(include_pad)


@pytest.mark.parametrize("layer, shape", [(nn.AvgPool1D(2, divisor_override=3), (6, 2)),
                                          (nn.AvgPool3D(2, divisor_override=5), (4, 4, 4, 2))])
def test_divisor_override_is_refused(layer, shape, tmp_path):
    model = nn.Sequential(layer)
    model.build((1, *shape))
    with pytest.raises(NotImplementedError, match=rf"{type(layer).__name__}.*divisor_override="):
        export_onnx(model, tmp_path / "model.onnx", input_shape=shape)


def test_an_exported_dilated_conv_transpose_imports_back(tmp_path):
    layer = nn.Conv2DTranspose(4, 3, stride=1, padding=0, output_padding=1, dilation=2, groups=2)
    x = _batch(5, 4, 4)
    model = nn.Sequential(layer)
    model.build(x.shape)
    _randomize(model)
    path = export_onnx(model, tmp_path / "model.onnx", input_shape=x.shape[1:])
    with no_grad():
        expected = model(tensor(x)).numpy()
        got = load_onnx(str(path))(x).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
