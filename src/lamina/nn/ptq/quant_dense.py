"""A Dense layer whose weight is stored group-quantized in 2, 3, 4 or 8 bits, as the layers of
GPTQ and AWQ checkpoints (:mod:`lamina.nn.ptq.group_quant` gives the format).

    z = g((x / s_in) W + b),      W_ik = scales[g_idx[i], k] (q_ik - zeros[g_idx[i], k])

The weight is dequantized at each call in the compute dtype (the input's floating dtype) and
is a constant: gradients reach the input and the float bias, never the integers. ``s_in``
(``input_scale``, optional) is AWQ's per-input-channel scale when it could not be folded into
the layer before (the weight stored is then W diag(s_in), whose rows quantize better).

Buffers: ``qweight`` (int32, (ceil(n_in b / 32), units), AutoGPTQ's layout), ``qzeros``
(int32, (n_groups, ceil(units b / 32))), ``scales`` (float32, (n_groups, units)), ``g_idx``
(int32, (n_in,)) and ``input_scale`` (float32, (n_in,)) when there is one.
"""

from __future__ import annotations

import numpy

from lamina.autograd import Tensor
from lamina.autograd.function import cast
from lamina.errors import ShapeError
from lamina.nn.activation import activate_fresh, activation_config, get_activation
from lamina.nn.dense import Dense, LinearFunction
from lamina.nn.layer import check_shape_ndim, input_error, register_layer
from lamina.nn.module import Module, as_tensor
from lamina.nn.ptq.group_quant import (
    QuantizedWeight,
    check_bits,
    check_group_size,
    read_packed,
    register_packed,
    rtn_quantize_weight,
)

__all__ = ["QuantDense"]


@register_layer
class QuantDense(Module):
    """A fully connected layer a = g(x W + b) with W (n_in, units) held as b-bit group-quantized
    integers. Built from a trained :class:`Dense` with :meth:`from_dense`, either by
    round-to-nearest (``bits``, ``group_size``, ``sym``) or from a :class:`QuantizedWeight`
    found elsewhere (GPTQ, AWQ)."""

    def __init__(self, quantized: QuantizedWeight, bias=None, activation=None, activation_spec=None,
                 input_scale=None, name: str | None = None):
        super().__init__(name=name)
        who = "QuantDense"
        if not isinstance(quantized, QuantizedWeight):
            raise TypeError(f"{who}: expected a QuantizedWeight, got {type(quantized).__name__}")
        self.bits = check_bits(quantized.bits, who)
        self.in_features, self.units = quantized.shape
        self.group_size = check_group_size(quantized.group_size, self.in_features, who)
        self.sym = bool(quantized.sym)
        n_groups = self.in_features // self.group_size
        if quantized.scales.shape != (n_groups, self.units) or quantized.zeros.shape != (n_groups, self.units):
            raise ShapeError(f"{who}: a weight {quantized.shape} in groups of {self.group_size} needs scales and "
                             f"zeros of shape {(n_groups, self.units)}, got {quantized.scales.shape} and "
                             f"{quantized.zeros.shape}")
        register_packed(self, "", quantized)
        self.use_bias = bias is not None
        if bias is not None:
            self.add_parameter("bias", numpy.asarray(bias.data if isinstance(bias, Tensor) else bias).copy(),
                               trainable=False)
        self.has_input_scale = input_scale is not None
        if input_scale is not None:
            scale = numpy.asarray(input_scale, dtype=numpy.float32).reshape(-1)
            if scale.shape != (self.in_features,):
                raise ShapeError(f"{who}: input_scale must have one value per input ({self.in_features}), got "
                                 f"shape {numpy.shape(input_scale)}")
            self.register_buffer("input_scale", scale.copy())
        self.activation, self.activation_spec = activation, activation_spec
        self.built = True
        self.training = False

    @classmethod
    def from_dense(cls, dense: Dense, bits: int = 4, group_size: int = 128, sym: bool = False,
                   quantized: QuantizedWeight | None = None, input_scale=None) -> QuantDense:
        """The built ``dense`` with its weight quantized: by round-to-nearest, or ``quantized``
        (a :class:`QuantizedWeight` of the same shape) when given. Bias, activation and name
        are kept."""
        who = "QuantDense.from_dense"
        if not isinstance(dense, Dense):
            raise TypeError(f"{who}: expected a Dense layer, got {type(dense).__name__} (only Dense layers are "
                            "supported)")
        if not dense.built:
            raise ValueError(f"{who}: {dense._label()} has no weights yet; call it on an input first")
        if quantized is None:
            quantized = rtn_quantize_weight(dense.weight.data, bits, group_size, sym)
        elif quantized.shape != tuple(dense.weight.shape):
            raise ShapeError(f"{who}: the quantized weight has shape {quantized.shape}, the layer's is "
                             f"{tuple(dense.weight.shape)}")
        layer = cls(quantized, dense.bias if dense.use_bias else None, dense.activation, dense.activation_spec,
                    input_scale, name=dense.name)
        layer.build_input_shape = dense.build_input_shape
        return layer

    def quantized_weight(self) -> QuantizedWeight:
        """The integers, scales, zeros and g_idx, unpacked."""
        return read_packed(self, "", (self.in_features, self.units), self.bits, self.group_size, self.sym)

    def dequantized_weight(self, dtype=numpy.float32) -> numpy.ndarray:
        """W (n_in, units) as stored (the product of the weight and the input scale, if any)."""
        return self.quantized_weight().dequantize(dtype)

    def forward(self, x) -> Tensor:
        if type(x) is not Tensor:
            x = as_tensor(x)
        if not x.data.shape or x.data.shape[-1] != self.in_features:
            raise input_error(self, x, f"(batch, ..., {self.in_features}): the last axis must have the "
                                       f"{self.in_features} features the layer was built for")
        dtype = x.dtype if x.dtype.kind == "f" else numpy.dtype(numpy.float32)
        x = cast(x, dtype) if x.dtype.kind == "f" else Tensor._wrap(x.data.astype(dtype))
        if self.has_input_scale:
            x = x / Tensor._wrap(self.input_scale.astype(dtype))
        inputs = [x, Tensor._wrap(self.dequantized_weight(dtype))]
        if self.use_bias:
            inputs.append(cast(self.bias, dtype))
        z = LinearFunction.apply(*inputs)
        return activate_fresh(self.activation, z) if self.activation is not None else z

    def compute_output_shape(self, input_shape):
        shape = check_shape_ndim(self, input_shape, tuple(range(1, 9)), "(batch, ..., features)")
        return shape[:-1] + (self.units,)

    def get_config(self) -> dict:
        return {"in_features": self.in_features, "units": self.units, "bits": self.bits,
                "group_size": self.group_size, "sym": self.sym, "use_bias": self.use_bias,
                "activation": activation_config(self), "input_scale": self.has_input_scale, "name": self.name}

    @classmethod
    def from_config(cls, config: dict) -> QuantDense:
        """A layer of the configured shape and format holding placeholder integers (zeros, unit
        scales), bias and input scale, which a state dict then replaces."""
        n_in, units, size = config["in_features"], config["units"], config["group_size"]
        n_groups = n_in // size
        placeholder = QuantizedWeight(numpy.zeros((n_in, units), numpy.uint8),
                                      numpy.ones((n_groups, units), numpy.float32),
                                      numpy.zeros((n_groups, units), numpy.uint8),
                                      (numpy.arange(n_in) // size).astype(numpy.int32), config["bits"], size,
                                      config["sym"])
        activation = get_activation(config.get("activation"))
        spec = None if isinstance(activation, Module) else config.get("activation")
        return cls(placeholder, numpy.zeros(units, numpy.float32) if config["use_bias"] else None, activation, spec,
                   numpy.ones(n_in, numpy.float32) if config["input_scale"] else None, name=config.get("name"))

    def extra_repr(self) -> str:
        kind = "sym" if self.sym else "asym"
        scaled = ", input_scale" if self.has_input_scale else ""
        return (f"{self.in_features} -> {self.units}, int{self.bits} {kind}, group_size={self.group_size}"
                + ("" if self.use_bias else ", use_bias=False") + scaled)
