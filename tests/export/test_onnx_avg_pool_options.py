"""ONNX export of AvgPool2D's count_include_pad (AveragePool's attribute of that name) and of
convolutions with a stride and a dilation together; divisor_override has no ONNX form."""

from __future__ import annotations

import numpy as np
import pytest
from test_onnx import _roundtrip

from lamina import nn
from lamina.export import export_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _batch(h=7, w=6, c=3, seed=2) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((3, h, w, c)).astype(np.float32)


@pytest.mark.parametrize("include_pad", [True, False])
@pytest.mark.parametrize("ceil_mode", [False, True])
def test_avg_pool_counting_the_padding_or_not_exports(include_pad, ceil_mode, tmp_path):
    model = nn.Sequential(nn.AvgPool2D(3, stride=2, padding=1, ceil_mode=ceil_mode, count_include_pad=include_pad))
    x = _batch()
    model.build(x.shape)
    graph = _roundtrip(model, x, tmp_path, rtol=1e-5, input_shape=x.shape[1:])
    (pool,) = [node for node in graph.node if node.op_type == "AveragePool"]
    assert {a.name: a.i for a in pool.attribute}["count_include_pad"] == int(include_pad)


def test_strided_dilated_convolution_exports(tmp_path):
    model = nn.Sequential(nn.Conv2D(4, 3, stride=2, dilation=2, padding="same"),
                          nn.DepthwiseConv2D(3, stride=(2, 1), dilation=(1, 2), padding="valid"))
    x = _batch(11, 12)
    model.build(x.shape)
    _roundtrip(model, x, tmp_path, rtol=1e-5, input_shape=x.shape[1:])


def test_avg_pool_divisor_override_is_refused(tmp_path):
    model = nn.Sequential(nn.AvgPool2D(2, divisor_override=3))
    model.build((1, 4, 4, 2))
    with pytest.raises(NotImplementedError, match="divisor_override=3"):
        export_onnx(model, tmp_path / "model.onnx", input_shape=(4, 4, 2))
