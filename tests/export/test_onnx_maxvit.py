"""ONNX export of MaxViT (its blocks and a small network) run in ONNX Runtime against lamina
(evaluation mode)."""

import numpy as np
import pytest
from test_onnx import _randomize, _roundtrip

from lamina import models, nn
from lamina.models import MaxVitLayer, MaxVitMBConv, PartitionAttention

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _images(*shape, seed=1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((3, *shape)).astype(np.float32)


BLOCKS = {
    "mbconv_projected": (lambda: MaxVitMBConv(4, 8, stride=2), (6, 6, 4)),
    "mbconv_identity": (lambda: MaxVitMBConv(8, 8), (4, 4, 8)),
    "window_attention": (lambda: PartitionAttention(8, 4, 2, "window"), (4, 6, 8)),
    "grid_attention": (lambda: PartitionAttention(8, 4, 2, "grid"), (4, 6, 8)),
    "layer": (lambda: MaxVitLayer(4, 8, head_dim=4, partition_size=2, stride=2), (8, 8, 4)),
}


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_maxvit_blocks_export(name, tmp_path):
    make, shape = BLOCKS[name]
    model = nn.Sequential(make())
    model.build((1, *shape))
    _randomize(model)
    graph = _roundtrip(model, _images(*shape), tmp_path, rtol=1e-4, input_shape=shape)
    ops = [node.op_type for node in graph.node]
    assert ("Softmax" in ops) == ("attention" in name or name == "layer")


def test_a_small_maxvit_exports(tmp_path):
    model = models.maxvit(8, (8, 16), (2, 1), head_dim=4, partition_size=2, num_classes=3, input_shape=(16, 16, 3))
    model.build((1, 16, 16, 3))
    _randomize(model)
    _roundtrip(model, _images(16, 16, 3), tmp_path, rtol=1e-4, input_shape=(16, 16, 3))

