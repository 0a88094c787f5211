"""Post-training quantization of Dense and Conv2D layers to int8, in the manner of ``torch.ao.quantization``.

A trained model's Dense and Conv2D layers are replaced by :class:`QuantizedDense` and
:class:`QuantizedConv2D`, which keep their weights as int8 (a quarter of float32's bytes) and
do the multiply-accumulates in integers. For a layer z = x W + b (a convolution likewise):

* the weights, once: per output channel k (a Dense unit, a Conv2D filter), symmetric int8,
  w ≈ s_wk q_w with s_wk = max |w_k| / 127.5 (:func:`quantize_weight`);
* the input, at each call: uint8 affine, x ≈ s_x (q_x - z_x), with (s_x, z_x) chosen from the
  batch's own min and max (:func:`quantize_dynamic`) or fixed beforehand from the ranges seen
  on calibration batches (:func:`quantize_static`); values outside a fixed range are clamped;
* the product, exactly in int32: acc_k = sum_i (q_xi - z_x) q_wik, the int8 and uint8 values
  cast to int32 before the matrix product, so that no partial sum overflows;
* the output, in float32: z_k = (s_x s_wk) acc_k + b_k, the factor s_x s_wk computed in
  float32, the bias added in float; then the layer's own activation, as before.

The error of z_k is bounded by that of the quantized operands: |x̂_i - x_i| <= s_x / 2 inside the
range and |ŵ_ik - w_ik| <= s_wk / 2, so |ẑ_k - z_k| <= sum_i (s_x / 2 |w_ik| + s_wk / 2 |x_i| +
s_x s_wk / 4) (plus float rounding).

The quantization (:mod:`lamina.nn.quantize_ops`) gives PyTorch's integers for the same scale and
zero point, and the scales and zero points of PyTorch's MinMaxObserver (per tensor, affine) and
PerChannelMinMaxObserver (per channel, symmetric) with ``reduce_range=False``. (PyTorch's
dynamic quantization on x86 defaults to ``reduce_range=True``, 7 bits for the activations, for
its fbgemm kernels; these layers use the full 8 bits.)

The quantized model is for inference: :func:`quantize_dynamic` and :func:`quantize_static`
return a copy (the original model is untouched) in evaluation mode, whose remaining float
parameters (those of the layers not quantized) are frozen. A quantized layer raises an error when it is called in
training mode or with an input that requires a gradient: nothing flows back through integers.
The copy is walked through all its sub-modules (Sequential, ModuleList, attributes of a custom
Module, the layers of a functional Model); a layer is replaced when its type is exactly one of
``layers`` (a subclass may compute something else), and every other layer is kept as it is.
:func:`model_size_bytes` reports what a model stores, before and after.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import numpy

from lamina import backend
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.nn.activation import activate_fresh
from lamina.nn.conv import Conv2D, check_nhwc_input, check_window, conv_repr, nhwc_shape
from lamina.nn.dense import Dense
from lamina.nn.layer import check_shape_ndim, input_error
from lamina.nn.module import Module, evaluation_mode, intercept_calls
from lamina.nn.quantize_ops import (
    QUANTIZED_RANGES,
    choose_qparams,
    dequantize,
    int_conv2d,
    int_linear,
    quantize_per_channel,
    quantize_per_tensor,
    quantize_weight,
)

__all__ = ["QuantizedConv2D", "QuantizedDense", "choose_qparams", "dequantize", "model_size_bytes",
           "quantize_dynamic", "quantize_per_channel", "quantize_per_tensor", "quantize_static"]

WEIGHT_DTYPES = ("int8",)
"""The weight types a model can be quantized to."""


class _QuantizedLayer(Module):
    """What both quantized layers share: the input's quantization, the rescaling of the int32
    sums, the bias, the activation, and the inference-only checks.

    Buffers: ``weight`` (int8), ``weight_scale`` (float32, one per output channel), ``bias``
    (float32, if the layer has one) and, for a static quantization, ``input_scale`` and
    ``input_zero_point`` (0-d).

    ``weight_qparams`` (the int8 weight and its scales) and ``input_qparams`` (scale, zero
    point and the integer range (q_min, q_max) of the input, inside uint8's) give parameters
    found elsewhere (quantization-aware training, :func:`lamina.nn.qat.convert`) in place of
    those computed here."""

    #: The axis of the output channels in the float layer's weight.
    channel_axis = 0

    def __init__(self, layer: Module, input_range: tuple[float, float] | None = None, *,
                 weight_qparams: tuple | None = None, input_qparams: tuple | None = None):
        super().__init__(name=layer.name)
        q_weight, scales = (quantize_weight(layer.weight, self.channel_axis) if weight_qparams is None
                            else weight_qparams)
        self.register_buffer("weight", q_weight)
        self.register_buffer("weight_scale", scales)
        self.use_bias = layer.use_bias
        if layer.use_bias:
            self.register_buffer("bias", backend.xp.asarray(layer.bias.data, dtype=numpy.float32).copy())
        self.activation = layer.activation
        self.activation_spec = layer.activation_spec
        self.static = input_range is not None or input_qparams is not None
        self.input_quant_range = QUANTIZED_RANGES["uint8"]
        if input_qparams is not None:
            scale, zero_point, self.input_quant_range = input_qparams
            self.register_buffer("input_scale", scale)
            self.register_buffer("input_zero_point", zero_point)
        elif input_range is not None:
            scale, zero_point = choose_qparams(input_range[0], input_range[1], "uint8")
            self.register_buffer("input_scale", scale)
            self.register_buffer("input_zero_point", zero_point)
        self.built = True
        self.build_input_shape = layer.build_input_shape
        self.training = False

    def _check_call(self, x) -> None:
        if self.training:
            raise RuntimeError(f"{self._label()}: a quantized layer computes inference only; it was called in "
                               "training mode (call model.eval() first)")
        if isinstance(x, Tensor) and x.requires_grad and x.size:   # an empty batch is a shape probe (summary)
            raise ValueError(f"{self._label()}: a quantized layer computes inference only and gives no gradients; "
                             f"got an input of shape {tuple(x.shape)} that requires grad (detach it, or call the "
                             "model under lamina.no_grad())")

    def _input_qparams(self, x):
        """(s_x, z_x): fixed (static), or from the batch's min and max (dynamic)."""
        if self.static:
            return self.input_scale, self.input_zero_point
        if x.size == 0:
            return choose_qparams(0.0, 0.0, "uint8")
        return choose_qparams(x.min(), x.max(), "uint8")

    def forward(self, x) -> Tensor:
        self._check_call(x)
        x = x if isinstance(x, Tensor) else Tensor(x)
        self._check_input(x)
        scale, zero_point = self._input_qparams(x.data)
        q_x = quantize_per_tensor(x.data, scale, zero_point, "uint8")
        if self.input_quant_range != QUANTIZED_RANGES["uint8"]:      # a narrower range (quantization-aware training)
            q_x = backend.xp.clip(q_x, *self.input_quant_range)
        acc = self._accumulate(q_x.astype(numpy.int32) - zero_point.astype(numpy.int32))
        z = acc.astype(numpy.float32) * (scale * self.weight_scale)
        if self.use_bias:
            z += self.bias
        z = Tensor._wrap(z)
        return activate_fresh(self.activation, z) if self.activation is not None else z

    # subclasses: the input's check and the int32 sums of (q_x - z_x) with the int8 weights
    def _check_input(self, x: Tensor) -> None:
        raise NotImplementedError

    def _accumulate(self, x_shifted):
        raise NotImplementedError

    def _quantization_repr(self) -> str:
        if self.static:
            narrower = "" if self.input_quant_range == QUANTIZED_RANGES["uint8"] else \
                f", range={list(self.input_quant_range)}"
            inputs = (f"uint8 static (scale={float(self.input_scale):.4g}, zero_point={int(self.input_zero_point)}"
                      f"{narrower})")
        else:
            inputs = "uint8 dynamic"
        return f"weight=int8 per channel, input={inputs}"


class QuantizedDense(_QuantizedLayer):
    """A Dense layer with int8 weights (n_in, units), one scale per unit, computing
    z = (s_x s_w) sum_i (q_x - z_x)_i q_w[i] + b in int32 then float32 (see the module's docstring)."""

    channel_axis = 1
    streamable = True

    def __init__(self, layer: Dense, input_range: tuple[float, float] | None = None, **qparams):
        super().__init__(layer, input_range, **qparams)
        self.units = layer.units

    def _check_input(self, x: Tensor) -> None:
        n_in = self.weight.shape[0]
        if x.ndim == 0 or x.shape[-1] != n_in:
            raise input_error(self, x, f"(batch, ..., {n_in}): the last axis must have the {n_in} features the "
                                       "layer was built for")

    def _accumulate(self, x_shifted):
        return int_linear(x_shifted, self.weight)

    def compute_output_shape(self, input_shape):
        shape = check_shape_ndim(self, input_shape, tuple(range(1, 9)), "(batch, ..., features)")
        if shape[-1] is not None and shape[-1] != self.weight.shape[0]:
            raise ShapeError(f"{self._label()}: input shape {shape} has {shape[-1]} features; the layer was built "
                             f"for {self.weight.shape[0]}")
        return shape[:-1] + (self.units,)

    def macs(self, input_shapes, output_shapes) -> int:
        """Multiply-accumulates per sample, for the model summary."""
        return int(numpy.prod(output_shapes[0][:-1], dtype=numpy.int64)) * self.weight.size

    def extra_repr(self) -> str:
        act = f", activation={self.activation_spec!r}" if isinstance(self.activation_spec, str) else ""
        return f"{self.weight.shape[0]} -> {self.units}{act}, {self._quantization_repr()}"


class QuantizedConv2D(_QuantizedLayer):
    """A Conv2D layer with int8 filters (K, f_h, f_w, c_in / groups), one scale per filter, its
    stride, padding, dilation and groups; the int32 sums by im2col and an integer matrix product."""

    channel_axis = 0

    def __init__(self, layer: Conv2D, input_range: tuple[float, float] | None = None, **qparams):
        super().__init__(layer, input_range, **qparams)
        self.filters = layer.filters
        self.groups = layer.groups
        self.kernel_size, self.stride, self.dilation = layer.kernel_size, layer.stride, layer.dilation
        self.padding = layer.padding

    @property
    def in_channels(self) -> int:
        return self.weight.shape[-1] * self.groups

    def _check_input(self, x: Tensor) -> None:
        check_nhwc_input(self, x, self.in_channels)
        check_window(self, x.shape)

    def _accumulate(self, x_shifted):
        return int_conv2d(x_shifted, self.weight, self.stride, self.padding, self.dilation, self.groups)

    def compute_output_shape(self, input_shape):
        shape = nhwc_shape(self, input_shape)
        if shape[-1] is not None and shape[-1] != self.in_channels:
            raise ShapeError(f"{self._label()}: input shape {shape} has {shape[-1]} channels; the layer was built "
                             f"for NHWC with C={self.in_channels}")
        out_h, out_w = check_window(self, shape)
        return (shape[0], out_h, out_w, self.filters)

    def macs(self, input_shapes, output_shapes) -> int:
        """Multiply-accumulates per sample, for the model summary."""
        h_out, w_out, k = output_shapes[0]
        return h_out * w_out * k * int(numpy.prod(self.weight.shape[1:]))

    def extra_repr(self) -> str:
        groups = f", groups={self.groups}" if self.groups != 1 else ""
        return f"{self.filters}, {conv_repr(self)}{groups}, {self._quantization_repr()}"


QUANTIZED_LAYERS: dict[type, type] = {Dense: QuantizedDense, Conv2D: QuantizedConv2D}
"""Float layer type -> its quantized replacement."""


# -- whole models ------------------------------------------------------------------------------

def _targets(model: Module, layers, dtype, who: str) -> tuple[Module, list[Module]]:
    """Check the request; a deep copy of ``model`` and its layers to quantize (each once)."""
    if not isinstance(model, Module):
        raise ValueError(f"{who}: expected a lamina Module, got {type(model).__name__}")
    if not isinstance(dtype, str) or dtype not in WEIGHT_DTYPES:
        raise ValueError(f"{who}: dtype must be one of {list(WEIGHT_DTYPES)} (the weights' type), got {dtype!r}")
    duplicate, found = copy_with_layers(model, layers, QUANTIZED_LAYERS, who, "quantizing")
    return duplicate, list(found.values())


def copy_with_layers(model: Module, layers, allowed, who: str, purpose: str) -> tuple[Module, dict[int, Module]]:
    """A deep copy of ``model`` and its layers of the types ``layers`` (each among ``allowed``
    and built), by id, each once."""
    kinds = (layers,) if isinstance(layers, (type, str)) else tuple(layers)
    unknown = [getattr(kind, "__name__", repr(kind)) for kind in kinds if kind not in allowed]
    if unknown:
        raise ValueError(f"{who}: layers must be among {[t.__name__ for t in allowed]}, got also {unknown}")
    duplicate = copy.deepcopy(model)
    found = {id(m): m for m in duplicate.modules() if type(m) in kinds}
    for layer in found.values():
        if not layer.built:
            raise ValueError(f"{who}: {layer._label()} has no weights yet; call the model on a batch (or build it) "
                             f"before {purpose}")
    return duplicate, found


def _replace(model: Module, replacements: dict[int, Module]) -> Module:
    """``model`` with every sub-module whose id is in ``replacements`` swapped for its replacement
    (in every container and in the calls of functional Models); the model itself if it is one."""
    for module in list(model.modules()):
        for key, child in list(module._modules.items()):
            if id(child) in replacements:
                module._modules[key] = replacements[id(child)]
        for node in module.__dict__.get("_nodes", ()):
            node.layer = replacements.get(id(node.layer), node.layer)
    return replacements.get(id(model), model)


def _for_inference(model: Module) -> Module:
    model.eval()
    for param in model.parameters():
        param.freeze()
    return model


def quantize_dynamic(model: Module, layers: Iterable[type] = (Dense, Conv2D), dtype: str = "int8") -> Module:
    """A copy of ``model`` whose layers of the types ``layers`` (Dense and/or Conv2D) are
    replaced by quantized ones: int8 weights per output channel, each input quantized to uint8
    from its own batch's min and max at every call. The copy is in evaluation mode with its
    remaining parameters frozen; ``model`` is not changed."""
    duplicate, found = _targets(model, layers, dtype, "quantize_dynamic")
    replacements = {id(layer): QUANTIZED_LAYERS[type(layer)](layer) for layer in found}
    return _for_inference(_replace(duplicate, replacements))


def quantize_static(model: Module, calibration_batches: Iterable, layers: Iterable[type] = (Dense, Conv2D),
                    dtype: str = "int8") -> Module:
    """As :func:`quantize_dynamic`, but each quantized layer's input scale and zero point are
    fixed: the copy is first run (evaluation mode, no gradients) on ``calibration_batches``
    (an iterable of inputs, each what the model is called with), each layer's inputs' min and
    max over all batches are recorded (PyTorch's MinMaxObserver) and give its uint8 (s_x, z_x)."""
    who = "quantize_static"
    duplicate, found = _targets(model, layers, dtype, who)
    targets = {id(layer) for layer in found}
    ranges: dict[int, list[float]] = {}

    def observe(module, inputs, kwargs, forward):
        if id(module) in targets and inputs:
            x = inputs[0].data if isinstance(inputs[0], Tensor) else backend.xp.asarray(inputs[0])
            if x.size:
                low, high = float(x.min()), float(x.max())
                seen = ranges.setdefault(id(module), [low, high])
                seen[0], seen[1] = min(seen[0], low), max(seen[1], high)
        return forward()

    batches = 0
    with evaluation_mode(duplicate), no_grad(), intercept_calls(observe):
        for batch in calibration_batches:
            duplicate(batch)
            batches += 1
    if not batches:
        raise ValueError(f"{who}: calibration_batches gave no batch; expected at least one input batch")
    missed = [layer._label() for layer in found if id(layer) not in ranges]
    if missed:
        raise ValueError(f"{who}: the calibration batches never reached {missed}, so their input ranges are unknown")
    replacements = {id(layer): QUANTIZED_LAYERS[type(layer)](layer, tuple(ranges[id(layer)])) for layer in found}
    return _for_inference(_replace(duplicate, replacements))


def model_size_bytes(model: Module) -> int:
    """The bytes a model stores: its parameters and its array buffers (the int8 weights, scales
    and biases of quantized layers), each array counted once."""
    if not isinstance(model, Module):
        raise ValueError(f"model_size_bytes: expected a lamina Module, got {type(model).__name__}")
    arrays = {id(p.data): p.data for _, p in model.named_parameters()}
    arrays.update((id(b), b) for _, b in model.named_buffers() if hasattr(b, "nbytes"))
    return int(sum(a.nbytes for a in arrays.values()))
