"""ONNX export of RepVGG and MobileOne: ONNX Runtime gives lamina's evaluation outputs for a
re-parameterized model and for one still holding its training-time branches (written as the
fused convolution), and the graph of either holds one Conv per block and no BatchNormalization."""

from __future__ import annotations

import numpy as np
import pytest
from onnx_checks import check_export, perturb

import lamina
from lamina import models, nn
from lamina.export import export_onnx

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def _built(model):
    """``model`` built, its parameters perturbed and its batch norms given running statistics."""
    model.eval()(lamina.tensor(np.zeros((1, 16, 16, 3), dtype=np.float32)))
    perturb(model, scale=0.1, seed=7)
    rng = np.random.default_rng(8)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm):
            m.running_mean = rng.normal(0, 0.3, m.num_features).astype(np.float32)
            m.running_var = rng.uniform(0.5, 2.0, m.num_features).astype(np.float32)
    return model


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("builder", [models.repvgg_tiny, models.mobileone_tiny])
def test_tiny_models_export_as_plain_convolutions(builder, fused, tmp_path):
    model = _built(builder(4, input_shape=(16, 16, 3)))
    if fused:
        model.reparameterize()
    check_export(model, tmp_path, (16, 16, 3), f"{builder.__name__} (fused={fused})", rtol=1e-4)
    graph = onnx.load(export_onnx(model, tmp_path / "again.onnx", input_shape=(16, 16, 3))).graph
    ops = [node.op_type for node in graph.node]
    blocks = [m for m in model.modules() if isinstance(m, models.ReparamBlock)]
    assert ops.count("Conv") == len(blocks) and ops.count("Relu") == len(blocks)
    assert "BatchNormalization" not in ops
