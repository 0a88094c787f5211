"""ONNX export of LPPool3D: ONNX Runtime gives what lamina gives, with and without ceil_mode
(an overhanging window left out of the divisor), alone and after a 3-D convolution."""

import numpy as np
import pytest
from test_onnx import _randomize, _roundtrip

from lamina import nn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("make, shape", [
    (lambda: nn.LPPool3D(2, 2), (4, 5, 4, 3)),
    (lambda: nn.LPPool3D(1.5, (2, 2, 3), stride=2, ceil_mode=True), (5, 4, 7, 2)),
    (lambda: nn.Sequential(nn.Conv3D(3, 2, padding="same", activation="relu"), nn.LPPool3D(3, (1, 2, 2))),
     (3, 4, 4, 2)),
], ids=["square", "ceil_overhang", "after_conv3d"])
def test_lp_pool3d_exports(make, shape, tmp_path):
    x = np.abs(np.random.default_rng(1).standard_normal((3, *shape)).astype(np.float32)) + np.float32(0.1)
    model = make()
    model = model if isinstance(model, nn.Sequential) else nn.Sequential(model)
    model.build(x.shape)
    _randomize(model)
    graph = _roundtrip(model, x, tmp_path, rtol=1e-5, input_shape=x.shape[1:])
    pools = [n for n in graph.node if n.op_type == "AveragePool"]
    assert len(pools) == 1 and len(next(a.ints for a in pools[0].attribute if a.name == "kernel_shape")) == 3
