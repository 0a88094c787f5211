"""Multi-head self-attention whose projections are group-quantized: the ``in_weight``
[W_q | W_k | W_v] (E, q + 2 kv) and ``out_weight`` W_o (h d, E) of a
:class:`~lamina.nn.MultiHeadAttention` held as packed integers (:mod:`.group_quant`) and
dequantized when read, the attention otherwise unchanged (rotary positions, grouped-query
heads, key/value caching).

:func:`quantize_projection` swaps a layer's class for :class:`QuantMultiHeadAttention` (as
parametrizations do) and replaces one projection's parameter by buffers ``in_qweight``,
``in_qzeros``, ``in_scales``, ``in_g_idx`` (``out_...`` for W_o); the other stays a float
parameter until it is quantized too. GPTQ needs each projection's inputs: those of W_q, W_k,
W_v are the layer's input (self-attention only), those of W_o the joined heads, which
:func:`attention_heads` reads by running the layer with W_o = I and no output bias.
"""

from __future__ import annotations

import numpy

from lamina.autograd import Tensor, no_grad
from lamina.nn.layer import build_for_shape, input_shape_config, register_layer
from lamina.nn.multi_head_attention import MultiHeadAttention
from lamina.nn.ptq.group_quant import QuantizedWeight, read_packed, register_packed

__all__ = ["PROJECTIONS", "QuantMultiHeadAttention", "attention_heads", "quantize_projection",
           "self_attention_input"]

PROJECTIONS = {"in_weight": "in_", "out_weight": "out_"}
"""The projections of an attention layer and the prefixes of their buffers."""


@register_layer
class QuantMultiHeadAttention(MultiHeadAttention):
    """A :class:`~lamina.nn.MultiHeadAttention` whose quantized projections are read from
    their packed buffers (see the module's docstring); made by :func:`quantize_projection`."""

    def _projection(self, name: str):
        param = self._parameters.get(name)
        if param is not None:
            return param
        return Tensor._wrap(self.dequantized_projection(name))

    in_weight = property(lambda self: self._projection("in_weight"))
    out_weight = property(lambda self: self._projection("out_weight"))

    def quantized_projection(self, name: str) -> QuantizedWeight:
        shape, bits, group_size, sym, _ = self.__dict__["_quantized_projections"][name]
        return read_packed(self, PROJECTIONS[name], shape, bits, group_size, sym)

    def dequantized_projection(self, name: str) -> numpy.ndarray:
        """The projection ``name`` as float (its former dtype), from its integers."""
        dtype = self.__dict__["_quantized_projections"][name][4]
        return self.quantized_projection(name).dequantize(dtype)

    def get_config(self) -> dict:
        """The attention's config, the input shape(s) it was built for and, per quantized
        projection, its shape, bits, group size, symmetry and float dtype."""
        held = self.__dict__.get("_quantized_projections", {})
        quantized = {name: {"shape": list(shape), "bits": bits, "group_size": size, "sym": sym,
                            "dtype": numpy.dtype(dtype).name}
                     for name, (shape, bits, size, sym, dtype) in held.items()}
        return {**super().get_config(), "input_shape": input_shape_config(self), "quantized": quantized}

    @classmethod
    def from_config(cls, config: dict) -> QuantMultiHeadAttention:
        """A fresh attention built for the saved input shape(s), its quantized projections
        placeholder integers (zeros, unit scales) that a state dict replaces."""
        config = dict(config)
        shape, quantized = config.pop("input_shape"), config.pop("quantized")
        layer = build_for_shape(MultiHeadAttention.from_config(config), shape)
        for name, spec in quantized.items():
            (n_in, n_out), size = spec["shape"], spec["group_size"]
            placeholder = QuantizedWeight(numpy.zeros((n_in, n_out), numpy.uint8),
                                          numpy.ones((n_in // size, n_out), numpy.float32),
                                          numpy.zeros((n_in // size, n_out), numpy.uint8),
                                          (numpy.arange(n_in) // size).astype(numpy.int32), spec["bits"], size,
                                          spec["sym"])
            layer._parameters[name].data = layer._parameters[name].data.astype(spec["dtype"])
            quantize_projection(layer, name, placeholder)
        return layer

    def extra_repr(self) -> str:
        held = self.__dict__.get("_quantized_projections", {})
        parts = [f"{name} int{bits} group_size={size}" for name, (_, bits, size, _, _) in held.items()]
        return super().extra_repr() + (", " + ", ".join(parts) if parts else "")


def quantize_projection(layer: MultiHeadAttention, name: str, quantized: QuantizedWeight) -> None:
    """Replace the float projection ``name`` ('in_weight' or 'out_weight') of ``layer`` by
    ``quantized`` (in place; the layer becomes a :class:`QuantMultiHeadAttention`)."""
    who = "quantize_projection"
    if not isinstance(layer, MultiHeadAttention):
        raise TypeError(f"{who}: expected a MultiHeadAttention, got {type(layer).__name__}")
    if name not in PROJECTIONS:
        raise ValueError(f"{who}: name must be one of {tuple(PROJECTIONS)}, got {name!r}")
    layer.require_joint_projection(who)
    param = layer._parameters.get(name)
    if param is None:
        raise ValueError(f"{who}: {layer._label()}.{name} is not a float parameter (already quantized?)")
    if quantized.shape != tuple(param.shape):
        raise ValueError(f"{who}: the quantized weight has shape {quantized.shape}, {name} has {tuple(param.shape)}")
    if type(layer) is MultiHeadAttention:
        layer.__class__ = QuantMultiHeadAttention
    del layer._parameters[name]
    register_packed(layer, PROJECTIONS[name], quantized)
    held = layer.__dict__.setdefault("_quantized_projections", {})
    held[name] = (quantized.shape, quantized.bits, quantized.group_size, quantized.sym, param.data.dtype)


def self_attention_input(layer: MultiHeadAttention, inputs: tuple, kwargs: dict):
    """The array the query, key and value projections read in a self-attention call."""
    if len(inputs) != 1 or any(kwargs.get(k) is not None for k in ("key", "value", "keys_values")):
        raise ValueError(f"{layer._label()}: only self-attention calls (query alone) can be quantized from their "
                         "inputs; this call passes keys or values")
    x = inputs[0]
    return x.data if isinstance(x, Tensor) else numpy.asarray(x)


def attention_heads(layer: MultiHeadAttention, inputs: tuple, kwargs: dict) -> numpy.ndarray:
    """The joined heads (N, T, h d) that W_o reads in the call ``layer(*inputs, **kwargs)``."""
    out = layer._parameters.get("out_weight")
    if out is None:
        raise ValueError(f"{layer._label()}: out_weight is already quantized")
    saved, use_out_bias = out.data, layer.use_out_bias
    out.data = numpy.eye(layer.query_dim, dtype=saved.dtype)
    layer.use_out_bias = False
    try:
        with no_grad():
            result = MultiHeadAttention.forward(layer, *inputs, **kwargs)
    finally:
        out.data, layer.use_out_bias = saved, use_out_bias
    return (result[0] if isinstance(result, tuple) else result).data
