"""ONNX export of MLP-Mixer, ResMLP, ConvMixer and DeiT (plain and distilled): small networks
and their blocks run in ONNX Runtime against lamina (evaluation mode)."""

import numpy as np
import pytest
from test_onnx import _randomize, _roundtrip

from lamina import models, nn
from lamina.models import Affine, DeiTBlock, MixerBlock, ResMLPBlock

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

NETWORKS = {
    "mixer": lambda: models.mlp_mixer(4, 8, 2, num_classes=5, input_shape=(8, 8, 3)),
    "resmlp": lambda: models.resmlp(4, 8, 2, init_values=0.5, num_classes=5, input_shape=(8, 8, 3)),
    "convmixer_gelu": lambda: models.convmixer(8, 2, 3, 2, num_classes=5, input_shape=(8, 8, 3)),
    "convmixer_relu": lambda: models.convmixer(8, 2, 3, 2, "relu", num_classes=5, input_shape=(8, 8, 3)),
    "deit": lambda: models.deit(4, 8, 2, 2, num_classes=5, input_shape=(8, 8, 3)),
    "deit_distilled": lambda: models.deit(4, 8, 2, 2, distilled=True, num_classes=5, input_shape=(8, 8, 3)),
}
BLOCKS = {
    "mixer_block": lambda: MixerBlock(6, 4, 3, 8),
    "resmlp_block": lambda: ResMLPBlock(6, 4, 8, init_values=0.5),
    "affine": Affine,
    "deit_block": lambda: DeiTBlock(6, 2, 8),
}


def _inputs(*shape, seed=1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((3, *shape)).astype(np.float32)


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_small_networks_export(name, tmp_path):
    model = NETWORKS[name]()
    model.build((1, 8, 8, 3))
    _randomize(model)
    graph = _roundtrip(model, _inputs(8, 8, 3), tmp_path, rtol=1e-4)
    ops = {node.op_type for node in graph.node}
    assert ("Softmax" in ops) == name.startswith("deit")
    assert ("BatchNormalization" in ops) == name.startswith("convmixer")


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_blocks_export(name, tmp_path):
    model = nn.Sequential(BLOCKS[name]())
    model.build((1, 4, 6))
    _randomize(model)
    _roundtrip(model, _inputs(4, 6), tmp_path, rtol=1e-4, input_shape=(4, 6))
