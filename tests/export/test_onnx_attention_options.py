"""The ONNX export of attention writes the options of the published language models (an
output projection without bias beside biased inputs, partial rotary, a custom scale,
soft-capped scores), alone and together, and ONNX Runtime gives lamina's outputs for any length."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from helpers import assert_close
from lamina import nn
from lamina.export import export_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

OPTIONS = {
    "out_bias": {"out_bias": False},
    "out_bias_alone": {"use_bias": False, "out_bias": True},
    "rotary_dims": {"rotary": True, "rotary_dims": 2},
    "scale": {"scale": 0.5},
    "logit_softcap": {"logit_softcap": 0.5},
    "together": {"rotary": True, "rotary_dims": 4, "scale": 0.3, "logit_softcap": 1.5, "out_bias": False,
                 "num_kv_heads": 1},
}


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_the_options_export_and_match_onnx_runtime_for_any_length(name, tmp_path):
    lamina.manual_seed(0)
    layer = nn.MultiHeadAttention(8, 2, head_dim=6, bias_init="normal", **OPTIONS[name]).eval()
    layer.build((None, 3, 8))
    path = export_onnx(layer, tmp_path / "model.onnx", input_shape=(3, 8))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for steps in (3, 6):
        x = np.random.default_rng(steps).standard_normal((2, steps, 8)).astype(np.float32)
        with lamina.no_grad():
            expected = layer(lamina.tensor(x)).numpy()
        (got,) = session.run(None, {"input": x})
        assert_close(got, expected, rtol=1e-5, what=f"{name}, {steps} steps")
