"""The ONNX export of attention refuses the options of the published language models it does
not write (an output projection without bias beside biased inputs, partial rotary, a custom
scale, soft-capped scores) rather than drop them."""

from __future__ import annotations

import pytest

from lamina import nn
from lamina.export import export_onnx


@pytest.mark.parametrize("option", [{"out_bias": False}, {"rotary": True, "rotary_dims": 2}, {"scale": 0.5},
                                    {"logit_softcap": 5.0}])
def test_onnx_export_refuses_the_options_it_does_not_write(tmp_path, option):
    layer = nn.MultiHeadAttention(8, 2, **option)
    layer.build((None, 3, 8))
    with pytest.raises(NotImplementedError, match=f"sets {next(iter(option.keys() - {'rotary'}))}"):
        export_onnx(layer, tmp_path / "model.onnx", input_shape=(3, 8))
