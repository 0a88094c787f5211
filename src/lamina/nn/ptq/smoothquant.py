"""SmoothQuant (Xiao et al., "SmoothQuant: accurate and efficient post-training quantization
for large language models", 2022): move the difficulty of quantizing activations with outlier
channels onto the weights, so that both quantize to 8 bits (W8A8).

For linears fed by a norm, with max_j = max_t |x_tj| over calibration inputs and
m_j = max_k |w_jk| over the rows of all the linears sharing the input,

    s_j = max_j^alpha / m_j^(1 - alpha)        (alpha = 0.5; both clamped to >= 1e-5)

the norm's weight and bias are divided by s and the linears' rows multiplied by s, which leaves
the float function unchanged (:func:`~lamina.nn.ptq.scaling.fold_scales`).

:func:`w8a8_quantize` then fake-quantizes to 8 bits, symmetric, (:class:`W8A8Dense`): the
weights once per output channel, the inputs at each call per token (each row its own scale),

    q(v) = round(v / a) a,   a = max |v| / 127.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import numpy

from lamina.autograd import Tensor, no_grad
from lamina.nn.activation import activate_fresh, activation_config
from lamina.nn.dense import Dense, LinearFunction
from lamina.nn.layer import register_layer
from lamina.nn.module import Module, as_tensor, evaluation_mode, intercept_calls
from lamina.nn.ptq.scaling import ScaleGroup, fold_scales, scale_groups
from lamina.nn.ptq.sequential import (
    block_dense_layers,
    capture_block_inputs,
    find_blocks,
    replace_layers,
    run_block,
)
from lamina.nn.rms_norm import RMSNorm
from lamina.nn.sample_norm import LayerNorm

__all__ = ["W8A8Dense", "fake_quantize_absmax", "smooth_layer", "smooth_quant", "smooth_scales", "w8a8_quantize"]

SCALE_FLOOR = 1e-5


def smooth_scales(activation_max, weight_max, alpha: float = 0.5) -> numpy.ndarray:
    """s = max|X|^alpha / max|W|^(1 - alpha) per input channel."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"smooth_scales: alpha must be in [0, 1], got {alpha!r}")
    a = numpy.maximum(numpy.asarray(activation_max, dtype=numpy.float64), SCALE_FLOOR)
    w = numpy.maximum(numpy.asarray(weight_max, dtype=numpy.float64), SCALE_FLOOR)
    return numpy.maximum(a ** alpha / w ** (1 - alpha), SCALE_FLOOR)


def smooth_layer(norm: Module, linears: list[Dense], activation_max, alpha: float = 0.5) -> numpy.ndarray:
    """Migrate the scales of ``activation_max`` (the inputs' per-channel max |x|) from the
    outputs of ``norm`` (a LayerNorm or RMSNorm) into ``linears`` (Dense layers reading them),
    in place; returns s."""
    if type(norm) not in (LayerNorm, RMSNorm) or not linears or any(type(layer) is not Dense for layer in linears):
        raise ValueError("smooth_layer: expected a norm and a non-empty list of Dense layers reading its outputs, "
                         f"got {type(norm).__name__} and {[type(layer).__name__ for layer in linears]}")
    weight_max = numpy.max([numpy.abs(layer.weight.data).max(axis=1) for layer in linears], axis=0)
    s = smooth_scales(activation_max, weight_max, alpha)
    fold_scales(ScaleGroup("smoothed", list(linears), norm), s)
    return s


def smooth_quant(model: Module, calibration_batches: Iterable, alpha: float = 0.5, blocks=None,
                 inplace: bool = False) -> Module:
    """``model`` (a copy unless ``inplace``) with the activation scales of every norm-fed group
    of Dense layers in its blocks migrated into the weights, from the inputs' maxima over
    ``calibration_batches`` (the float model's). Quantize it afterwards with
    :func:`w8a8_quantize`."""
    who = "smooth_quant"
    calibration_batches = None if calibration_batches is None else list(calibration_batches)   # read twice
    model = model if inplace else copy.deepcopy(model)
    blocks = find_blocks(model, blocks, who)
    first_state = capture_block_inputs(model, blocks, calibration_batches, who)[0]
    groups, state = [], first_state
    for block in blocks:
        layers = [layer for _, layer in block_dense_layers(block, state, (), who)]
        groups += [g for g in scale_groups(block, layers) if type(g.previous) in (LayerNorm, RMSNorm)]
        state = run_block(block, [state])[0]
    if not groups:
        raise ValueError(f"{who}: no Dense layers fed by a LayerNorm or RMSNorm in the blocks of {model._label()}")
    maxima: dict[int, numpy.ndarray] = {}
    watched = {id(g.linears[0]) for g in groups}

    def observe(module, inputs, kwargs, forward):
        if id(module) in watched:
            x = inputs[0].data if isinstance(inputs[0], Tensor) else numpy.asarray(inputs[0])
            top = numpy.abs(x.reshape(-1, x.shape[-1])).max(axis=0)
            maxima[id(module)] = numpy.maximum(maxima.get(id(module), top), top)
        return forward()

    with evaluation_mode(model), no_grad(), intercept_calls(observe):
        for batch in calibration_batches:
            model(*batch) if isinstance(batch, tuple) else model(batch)
    for group in groups:
        smooth_layer(group.previous, group.linears, maxima[id(group.linears[0])], alpha)
    return model


def fake_quantize_absmax(v: numpy.ndarray, axis: int, bits: int = 8) -> numpy.ndarray:
    """round(v / a) a with a = max |v| / (2^(b-1) - 1) along ``axis`` (per row of that axis)."""
    top = numpy.maximum(numpy.abs(v).max(axis=axis, keepdims=True), SCALE_FLOOR)
    a = top / (2 ** (bits - 1) - 1)
    return (numpy.round(v / a) * a).astype(v.dtype)


@register_layer
class W8A8Dense(Module):
    """A Dense layer computed on 8-bit fake-quantized operands (see the module's docstring):
    the weight per output unit, the input per token; inference only (a constant weight)."""

    def __init__(self, dense: Dense, bits: int = 8):
        super().__init__(name=dense.name)
        if type(dense) is not Dense or not dense.built:
            raise ValueError(f"W8A8Dense: expected a built Dense layer, got {type(dense).__name__}")
        self.bits = int(bits)
        self.register_buffer("weight", fake_quantize_absmax(dense.weight.data, axis=0, bits=self.bits))
        self.use_bias = dense.use_bias
        if dense.use_bias:
            self.register_buffer("bias", dense.bias.data.copy())
        self.activation, self.activation_spec = dense.activation, dense.activation_spec
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        inputs = [Tensor._wrap(fake_quantize_absmax(x.data, axis=-1, bits=self.bits)),
                  Tensor._wrap(self.weight.astype(x.dtype))]
        if self.use_bias:
            inputs.append(Tensor._wrap(self.bias.astype(x.dtype)))
        z = LinearFunction.apply(*inputs)
        return activate_fresh(self.activation, z) if self.activation is not None else z

    def get_config(self) -> dict:
        in_features, units = self.weight.shape
        return {"in_features": int(in_features), "units": int(units), "bits": self.bits, "use_bias": self.use_bias,
                "activation": activation_config(self), "name": self.name}

    @classmethod
    def from_config(cls, config: dict) -> W8A8Dense:
        """A layer of the configured shape made from a fresh Dense; a state dict then gives its weight."""
        dense = Dense(config["units"], activation=config.get("activation"), use_bias=config["use_bias"],
                      name=config.get("name"))
        dense.build((None, config["in_features"]))
        return cls(dense, config["bits"])

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]} -> {self.weight.shape[1]}, W{self.bits}A{self.bits} per token"


def w8a8_quantize(model: Module, skip=("lm_head",), bits: int = 8, inplace: bool = False) -> Module:
    """``model`` (a copy unless ``inplace``) with every Dense layer outside ``skip`` replaced by
    a :class:`W8A8Dense`."""
    model = model if inplace else copy.deepcopy(model)
    skip = (skip,) if isinstance(skip, str) else tuple(skip or ())
    chosen = {id(m): W8A8Dense(m, bits) for path, m in model.named_modules()
              if type(m) is Dense and not any(path == n or path.endswith("." + n) for n in skip)}
    if not chosen:
        raise ValueError(f"w8a8_quantize: {model._label()} has no Dense layer to quantize outside skip={skip!r}")
    replace_layers(model, chosen)
    return model
