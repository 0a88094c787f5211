"""Post-training quantization of language models' linear layers, as AutoGPTQ, AutoAWQ and
SmoothQuant do it:

* weight-only group quantization in 2, 3, 4 or 8 bits (:mod:`.group_quant`), the layer that
  holds it packed (:class:`QuantDense`, :class:`QuantMultiHeadAttention` for attention
  projections) and the round-to-nearest baseline (:func:`rtn_quantize`);
* GPTQ (:func:`gptq_quantize`), second-order error feedback from calibration inputs, block by block;
* AWQ (:func:`awq_quantize`), activation-aware scales folded into the ops before, and clipping;
* SmoothQuant (:func:`smooth_quant`, :func:`w8a8_quantize`), activation outliers migrated into
  the weights for 8-bit weights and activations;
* :func:`perplexity`, :func:`layer_output_errors` and :func:`block_output_errors` to compare them.

The int8 layers with integer products are :mod:`lamina.nn.quantize`; NF4/FP4 weights
:class:`lamina.nn.Dense4bit`.
"""

from lamina.nn.ptq.awq import awq_clip_weight, awq_quantize, awq_search_scales
from lamina.nn.ptq.evaluate import block_output_errors, layer_output_errors, perplexity, rtn_quantize
from lamina.nn.ptq.gptq import GPTQResult, HessianAccumulator, gptq_quantize, gptq_quantize_weight
from lamina.nn.ptq.group_quant import (
    BITS,
    QuantizedWeight,
    group_params,
    pack_bits,
    quantize_to_grid,
    rtn_quantize_weight,
    unpack_bits,
)
from lamina.nn.ptq.quant_attention import QuantMultiHeadAttention, quantize_projection
from lamina.nn.ptq.quant_dense import QuantDense
from lamina.nn.ptq.scaling import ScaleGroup, fold_scales, scale_groups
from lamina.nn.ptq.smoothquant import (
    W8A8Dense,
    fake_quantize_absmax,
    smooth_layer,
    smooth_quant,
    smooth_scales,
    w8a8_quantize,
)

__all__ = [
    "BITS", "GPTQResult", "HessianAccumulator", "QuantDense", "QuantMultiHeadAttention", "QuantizedWeight",
    "ScaleGroup", "W8A8Dense", "awq_clip_weight", "awq_quantize", "awq_search_scales", "block_output_errors",
    "fake_quantize_absmax", "fold_scales", "gptq_quantize", "gptq_quantize_weight", "group_params",
    "layer_output_errors", "pack_bits", "perplexity", "quantize_projection", "quantize_to_grid", "rtn_quantize",
    "rtn_quantize_weight", "scale_groups", "smooth_layer", "smooth_quant", "smooth_scales", "unpack_bits",
    "w8a8_quantize",
]
