"""ONNX export of the whole CaiT classifier and of ConvNeXt V2 (its block and global response
normalization): ONNX Runtime gives lamina's evaluation outputs for two batch sizes, with every
parameter moved off its initial value, and the export leaves the weights as they were."""

from __future__ import annotations

import functools
import pathlib

import numpy as np
import pytest
from onnx_checks import check_export

import lamina
from helpers import assert_close
from lamina import models, nn
from lamina.export import export_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


_check = functools.partial(check_export, build=True, perturb_seed=7)


def _grn_reference(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    """The paper's formula in float64 NumPy."""
    x = x.astype(np.float64)
    response = np.sqrt((x ** 2).sum(axis=(1, 2), keepdims=True))
    normalized = response / (response.mean(axis=-1, keepdims=True) + eps)
    return gamma * (x * normalized) + beta + x


@pytest.mark.parametrize("opset", [17, 18])
def test_global_response_norm_exports_the_papers_formula(opset, tmp_path):
    model = nn.Sequential(nn.GlobalResponseNorm(5, eps=1e-3))
    _check(model, tmp_path, (3, 4, 5), f"GlobalResponseNorm opset {opset}", opset=opset)
    grn = model[0]
    x = np.random.default_rng(2).standard_normal((2, 3, 4, 5)).astype(np.float32)
    path = export_onnx(model, tmp_path / "grn.onnx", input_shape=(3, 4, 5), opset=opset)
    (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    assert_close(got, _grn_reference(x, grn.gamma.numpy(), grn.beta.numpy(), grn.eps), rtol=1e-5,
                 what="GRN against NumPy")


def test_convnextv2_blocks_export(tmp_path):
    """A GRN straight after a convolution too (its input in ONNX's NCHW layout)."""
    model = nn.Sequential(nn.Conv2D(6, 3, padding=1), nn.GlobalResponseNorm(6),
                          models.ConvNeXtV2Block(6, stochastic_depth_prob=0.3), models.ConvNeXtV2Block(6))
    _check(model, tmp_path, (8, 8, 2), "ConvNeXtV2Block")


def test_a_tiny_convnextv2_exports(tmp_path):
    model = models.convnext((1, 2), (8, 16), 0.2, num_classes=5, input_shape=(16, 16, 3), version=2)
    _check(model, tmp_path, (16, 16, 3), "ConvNeXt V2", rtol=1e-4)


@pytest.mark.parametrize("options", [dict(depth=2, class_attention_depth=2),
                                     dict(depth=1, class_attention_depth=1, stochastic_depth_prob=0.2)])
def test_a_tiny_cait_exports(options, tmp_path):
    model = models.cait(4, dim=8, num_heads=2, mlp_ratio=2.0, num_classes=5, input_shape=(8, 12, 3), **options)
    _check(model, tmp_path, (8, 12, 3), f"CaiT {options}", rtol=1e-4)


def test_cait_at_another_image_size_is_refused(tmp_path):
    model = models.cait(4, dim=8, depth=1, num_heads=2, class_attention_depth=1, num_classes=3,
                        input_shape=(8, 8, 3), name="small_cait")
    model(lamina.tensor(np.zeros((1, 8, 8, 3), dtype=np.float32)))
    with pytest.raises((NotImplementedError, lamina.errors.ShapeError), match="small_cait"):
        export_onnx(model, tmp_path / "model.onnx", input_shape=(12, 8, 3))


def test_the_readme_example_runs(tmp_path, capsys):
    readme = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Exporting CaiT and ConvNeXt V2 to ONNX", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0].replace("/tmp/", f"{tmp_path}/")
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out.split() == ["True", "True"]
