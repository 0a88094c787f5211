"""ONNX export of pools whose ceil_mode drops a last window starting in the padding (PyTorch's
rule, which ONNX's ceil_mode does not follow) and of LocalResponseNorm with an even size (whose
window ONNX's LRN places differently and onnxruntime refuses)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_onnx import _roundtrip

from lamina import nn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _pool_2d(op, **options):
    if op == "max":
        return nn.MaxPool2D(2, stride=2, padding=1, ceil_mode=True), torch.nn.MaxPool2d(2, 2, 1, ceil_mode=True)
    return (nn.AvgPool2D(3, stride=3, padding=1, ceil_mode=True, **options),
            torch.nn.AvgPool2d(3, 3, 1, ceil_mode=True, **options))


@pytest.mark.parametrize("size", [5, 6])
@pytest.mark.parametrize("op, options", [("max", {}), ("avg", {"count_include_pad": True}),
                                         ("avg", {"count_include_pad": False})])
def test_ceil_mode_pool_2d_exports_lamina_windows(op, options, size, tmp_path):
    layer, reference = _pool_2d(op, **options)
    x = np.random.default_rng(size).standard_normal((2, size, size, 3)).astype(np.float32)
    expected = reference(torch.tensor(x, dtype=torch.float64).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    model = nn.Sequential(layer)
    model.build(x.shape)
    graph = _roundtrip(model, x, tmp_path, rtol=1e-5, input_shape=x.shape[1:])
    np.testing.assert_allclose(model(x).numpy(), expected, rtol=1e-5, atol=1e-6)
    assert graph.output[0].type.tensor_type.shape.dim[1].dim_value == expected.shape[1]


@pytest.mark.parametrize("length", [5, 6])
@pytest.mark.parametrize("layer", [lambda: nn.MaxPool1D(2, 2, padding=1, ceil_mode=True),
                                   lambda: nn.AvgPool1D(2, 2, padding=1, ceil_mode=True),
                                   lambda: nn.AvgPool1D(3, 3, padding=1, ceil_mode=True, count_include_pad=False)])
def test_ceil_mode_pool_1d_before_a_dense_layer_exports(layer, length, tmp_path):
    x = np.random.default_rng(length).standard_normal((3, length, 2)).astype(np.float32)
    model = nn.Sequential(layer(), nn.Flatten(), nn.Dense(2))
    model.build(x.shape)
    _roundtrip(model, x, tmp_path, rtol=1e-5, input_shape=x.shape[1:])


@pytest.mark.parametrize("size", [2, 3, 4])
def test_local_response_norm_of_any_size_runs_in_onnxruntime(size, tmp_path):
    x = np.random.default_rng(size).standard_normal((2, 3, 4, 6)).astype(np.float32) * 2
    model = nn.Sequential(nn.LocalResponseNorm(size, alpha=0.7, beta=0.8, k=1.5))
    model.build(x.shape)
    expected = torch.nn.functional.local_response_norm(torch.tensor(x, dtype=torch.float64).permute(0, 3, 1, 2),
                                                       size, alpha=0.7, beta=0.8, k=1.5).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(model(x).numpy(), expected, rtol=1e-5, atol=1e-6)
    _roundtrip(model, x, tmp_path, rtol=1e-5, input_shape=x.shape[1:])
