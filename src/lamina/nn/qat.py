"""Quantization-aware training (QAT): a model trained with its Dense and Conv2D layers seeing the
values they will compute with once quantized, then converted to integer layers.

:func:`prepare_qat` returns a copy of a trained float model whose Dense and Conv2D layers are
:class:`QATDense` / :class:`QATConv2D`: at every call each one

* fake-quantizes its input per tensor, affine, to [a_min, a_max] (``activation_quant_range``,
  default uint8's 0..255), with a moving average of the batches' ranges (in training) giving
  the scale and zero point -- where the integer layer will quantize its input;
* fake-quantizes its weight per output channel, symmetric, to [w_min, w_max]
  (``weight_quant_range``, default int8's -128..127), the scale of each channel from the
  current weights' range (max |w_k| / ((w_max - w_min) / 2));

and computes with the rounded values; the gradients pass straight through the rounding
(:mod:`lamina.functional.fake_quantize`), so training learns weights that survive it. A
smaller range (4 bits: ``weight_quant_range=(-8, 7)``, ``activation_quant_range=(0, 15)``) is
where post-training quantization loses accuracy and training with the rounding wins it back.

:func:`convert` turns the QAT model into the integer layers of :mod:`lamina.nn.quantize`
(:class:`QuantizedDense`, :class:`QuantizedConv2D`) with the same parameters: the weights'
integers are those the fake quantization rounded to, the input's scale, zero point and range
those last observed. The integer layer then computes, exactly in int32, the sums the QAT layer
computed in float, so the two models' outputs agree up to float rounding (and where that
rounding moves a value across a rounding boundary of the next layer's input, by one step
of that input's grid).

:func:`calibrate` runs batches through a prepared model, observing but not training:
prepare, calibrate and convert is post-training static quantization at any bit width.
:func:`fuse_conv_bn` folds a BatchNorm into the convolution before it (inference only).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Iterable

import numpy

from lamina import backend
from lamina.autograd import no_grad
from lamina.nn.conv import Conv2D
from lamina.nn.dense import Dense
from lamina.nn.layer import input_shape_config, layer_from_config, layer_to_config, register_layer
from lamina.nn.module import Module, evaluation_mode
from lamina.nn.normalization import BatchNorm
from lamina.nn.observers import FakeQuantize, MinMaxObserver, MovingAverageMinMaxObserver, PerChannelMinMaxObserver
from lamina.nn.quantize import QUANTIZED_LAYERS, _for_inference, _replace, copy_with_layers
from lamina.nn.quantize_ops import QUANTIZED_RANGES, quantize_per_channel
from lamina.nn.reshape import Identity

__all__ = ["QATConv2D", "QATDense", "calibrate", "convert", "fuse_conv_bn", "prepare_qat"]

ACTIVATION_OBSERVERS = ("moving_average", "min_max")


class _QATLayer:
    """What QATDense and QATConv2D add to their float layer: the two fake quantizations."""

    #: The axis of the output channels in the float layer's weight.
    channel_axis = 0

    @classmethod
    def from_float(cls, layer: Module, weight_quant_range: tuple[int, int], activation_observer) -> Module:
        """The QAT form of the built float ``layer``, sharing its parameters."""
        qat = cls.__new__(cls)
        qat.__dict__.update(layer.__dict__)
        for registry in ("_parameters", "_buffers", "_modules"):
            object.__setattr__(qat, registry, OrderedDict(layer.__dict__[registry]))
        w_min, w_max = weight_quant_range
        weight_observer = PerChannelMinMaxObserver(cls.channel_axis, "int8", "per_channel_symmetric", w_min, w_max)
        qat.weight_fake_quant = FakeQuantize(weight_observer, observe_in_eval=True)
        qat.input_fake_quant = FakeQuantize(activation_observer)
        qat.weight_fake_quant.training = qat.input_fake_quant.training = layer.training
        qat.observe_weight()
        return qat

    def observe_weight(self) -> None:
        """Take the weight's quantization parameters from its current per-channel range."""
        self.weight_fake_quant.observer.reset_min_max_vals()
        self.weight_fake_quant.observe(self.weight)

    def fake_quantized_weight(self):
        fake_quant = self.weight_fake_quant
        if fake_quant.observer_enabled:
            fake_quant.observer.reset_min_max_vals()      # the range of the weights as they are now
        return fake_quant(self.weight)

    def forward(self, x):
        return self.apply_weights(self.input_fake_quant(x), self.fake_quantized_weight())

    def get_config(self) -> dict:
        """The float layer's config, the input shape it was built for and both fake quantizations."""
        return {**super().get_config(), "input_shape": input_shape_config(self),
                "weight_fake_quant": layer_to_config(self.weight_fake_quant),
                "input_fake_quant": layer_to_config(self.input_fake_quant)}

    @classmethod
    def from_config(cls, config: dict) -> Module:
        """A fresh float layer built for the saved input shape, in its QAT form with the saved
        fake quantizations (their ranges filled by the state dict)."""
        config = dict(config)
        shape = config.pop("input_shape")
        if shape is None:
            raise ValueError(f"{cls.__name__}.from_config: the config holds no input shape to build the layer for")
        weight_fake_quant = layer_from_config(config.pop("weight_fake_quant"))
        input_fake_quant = layer_from_config(config.pop("input_fake_quant"))
        layer = cls.float_layer.from_config(config)
        layer.build(tuple(shape))
        layer.built = True
        layer.build_input_shape = tuple(shape)
        qat = cls.from_float(layer, (weight_fake_quant.quant_min, weight_fake_quant.quant_max),
                             input_fake_quant.observer)
        qat.weight_fake_quant, qat.input_fake_quant = weight_fake_quant, input_fake_quant
        return qat

    def quantization_repr(self) -> str:
        w, a = self.weight_fake_quant, self.input_fake_quant
        return f"weight=[{w.quant_min}, {w.quant_max}] per channel, input=[{a.quant_min}, {a.quant_max}]"


@register_layer
class QATDense(_QATLayer, Dense):
    """A Dense layer that fake-quantizes its input (per tensor) and weight (per unit) at every call."""

    channel_axis = 1
    float_layer = Dense

    def extra_repr(self) -> str:
        return f"{Dense.extra_repr(self)}, {self.quantization_repr()}"


@register_layer
class QATConv2D(_QATLayer, Conv2D):
    """A Conv2D layer that fake-quantizes its input (per tensor) and filters (per filter) at every call."""

    channel_axis = 0
    float_layer = Conv2D

    def extra_repr(self) -> str:
        return f"{Conv2D.extra_repr(self)}, {self.quantization_repr()}"


QAT_LAYERS: dict[type, type] = {Dense: QATDense, Conv2D: QATConv2D}
"""Float layer type -> its quantization-aware form."""


def _check_range(quant_range, bounds: tuple[int, int], what: str) -> tuple[int, int]:
    low, high = bounds
    ok = (isinstance(quant_range, (tuple, list)) and len(quant_range) == 2
          and all(isinstance(v, int) and not isinstance(v, bool) for v in quant_range))
    if not ok or not low <= quant_range[0] <= 0 <= quant_range[1] <= high or quant_range[0] == quant_range[1]:
        raise ValueError(f"prepare_qat: {what} must be a pair of ints (q_min, q_max) with q_min <= 0 <= q_max, "
                         f"q_min < q_max, inside [{low}, {high}]; got {quant_range!r}")
    return int(quant_range[0]), int(quant_range[1])


def prepare_qat(model: Module, weight_quant_range: tuple[int, int] = (-128, 127),
                activation_quant_range: tuple[int, int] = (0, 255), layers: Iterable[type] = (Dense, Conv2D),
                activation_observer: str = "moving_average", averaging_constant: float = 0.01) -> Module:
    """A copy of ``model`` (in training mode) whose layers of the types ``layers`` are replaced by
    their QAT forms (see the module's docstring); ``model`` is not changed. The weights are
    int8 per channel, symmetric, in ``weight_quant_range``; the inputs uint8 per tensor, affine,
    in ``activation_quant_range``, observed by a moving average (``averaging_constant``) or
    ``activation_observer='min_max'`` (the running min and max, for calibration)."""
    if not isinstance(model, Module):
        raise ValueError(f"prepare_qat: expected a lamina Module, got {type(model).__name__}")
    w_range = _check_range(weight_quant_range, QUANTIZED_RANGES["int8"], "weight_quant_range")
    a_range = _check_range(activation_quant_range, QUANTIZED_RANGES["uint8"], "activation_quant_range")
    if activation_observer not in ACTIVATION_OBSERVERS:
        raise ValueError(f"prepare_qat: activation_observer must be one of {list(ACTIVATION_OBSERVERS)}, "
                         f"got {activation_observer!r}")
    def observer():
        if activation_observer == "min_max":
            return MinMaxObserver("uint8", "per_tensor_affine", *a_range)
        return MovingAverageMinMaxObserver(averaging_constant, "uint8", "per_tensor_affine", *a_range)

    duplicate, found = copy_with_layers(model, layers, QAT_LAYERS, "prepare_qat", "preparing it")
    replacements = {key: QAT_LAYERS[type(layer)].from_float(layer, w_range, observer())
                    for key, layer in found.items()}
    return _replace(duplicate, replacements).train()


def _fake_quantizers(model: Module) -> list[FakeQuantize]:
    return [m for m in model.modules() if isinstance(m, FakeQuantize)]


def calibrate(model: Module, batches: Iterable) -> Module:
    """Run ``batches`` (inputs, each what the model is called with) through the prepared
    ``model`` in evaluation mode without gradients, every fake quantization observing: the
    inputs' ranges are recorded and nothing is trained. Returns ``model``."""
    fake_quants = _fake_quantizers(model)
    if not fake_quants:
        raise ValueError("calibrate: the model has no fake quantization; prepare it with prepare_qat first")
    saved = [fq.observe_in_eval for fq in fake_quants]
    count = 0
    try:
        for fq in fake_quants:
            fq.observe_in_eval = True
        with evaluation_mode(model), no_grad():
            for batch in batches:
                model(batch)
                count += 1
    finally:
        for fq, keep in zip(fake_quants, saved):
            fq.observe_in_eval = keep
    if not count:
        raise ValueError("calibrate: batches gave no batch; expected at least one input batch")
    return model


def _integer_layer(layer: _QATLayer) -> Module:
    """The QuantizedDense / QuantizedConv2D computing what the QAT ``layer`` computes in evaluation."""
    weight_fq, input_fq = layer.weight_fake_quant, layer.input_fake_quant
    if not input_fq.observer._observed():
        raise ValueError(f"convert: {layer._label()} never observed an input, so its input range is unknown; train "
                         "or calibrate the prepared model first")
    layer.observe_weight()
    q_weight = quantize_per_channel(layer.weight.data, weight_fq.scale, weight_fq.zero_point, layer.channel_axis)
    q_weight = backend.xp.clip(q_weight, weight_fq.quant_min, weight_fq.quant_max).astype(numpy.int8)
    float_type = next(base for base, qat in QAT_LAYERS.items() if type(layer) is qat)
    input_qparams = (input_fq.scale.reshape(()).astype(numpy.float32), input_fq.zero_point.reshape(()),
                     (input_fq.quant_min, input_fq.quant_max))
    return QUANTIZED_LAYERS[float_type](layer, weight_qparams=(q_weight, weight_fq.scale.astype(numpy.float32)),
                                        input_qparams=input_qparams)


def convert(model: Module) -> Module:
    """A copy of the QAT ``model`` whose QATDense / QATConv2D layers are replaced by the int8
    QuantizedDense / QuantizedConv2D with the same quantization parameters (see the module's
    docstring); in evaluation mode, the remaining float parameters frozen. ``model`` is not changed."""
    if not isinstance(model, Module):
        raise ValueError(f"convert: expected a lamina Module, got {type(model).__name__}")
    duplicate = copy.deepcopy(model)
    found = {id(m): m for m in duplicate.modules() if isinstance(m, _QATLayer)}
    if not found:
        raise ValueError("convert: the model has no QATDense or QATConv2D layer; prepare it with prepare_qat first")
    replacements = {key: _integer_layer(layer) for key, layer in found.items()}
    return _for_inference(_replace(duplicate, replacements))


def fuse_conv_bn(model: Module) -> Module:
    """A copy of ``model`` in which every Conv2D directly followed by a BatchNorm in a Sequential
    (or list of layers) becomes one Conv2D with the batch norm folded in, for inference:
    with a = gamma / sqrt(running_var + eps), w'_k = a_k w_k and b'_k = a_k (b_k - mean_k) + beta_k;
    the BatchNorm's place takes an Identity. Fold before :func:`prepare_qat` so that the
    quantized convolution carries the normalization. ``model`` is not changed."""
    if not isinstance(model, Module):
        raise ValueError(f"fuse_conv_bn: expected a lamina Module, got {type(model).__name__}")
    duplicate = copy.deepcopy(model)
    for module in duplicate.modules():
        children = list(module._modules.items())
        for (_, conv), (key, norm) in zip(children, children[1:]):
            if type(conv) is Conv2D and type(norm) is BatchNorm and conv.built and norm.built \
                    and conv.activation is None:
                _fold(conv, norm)
                module._modules[key] = Identity()
    return duplicate.eval()


def _fold(conv: Conv2D, norm: BatchNorm) -> None:
    norm.require_running_statistics("fuse_conv_bn")
    xp = backend.xp
    dtype = conv.weight.data.dtype
    gamma = norm.weight.data if norm.affine else xp.ones(norm.num_features, dtype=dtype)
    beta = norm.bias.data if norm.affine else xp.zeros(norm.num_features, dtype=dtype)
    factor = (gamma / xp.sqrt(norm.running_var + norm.eps)).astype(dtype)
    bias = conv.bias.data if conv.use_bias else xp.zeros(factor.shape, dtype=dtype)
    conv.weight.data = conv.weight.data * factor.reshape(-1, 1, 1, 1)
    folded_bias = ((bias - norm.running_mean) * factor + beta).astype(dtype)
    if conv.use_bias:
        conv.bias.data = folded_bias
    else:
        conv.use_bias = True
        conv.add_parameter("bias", folded_bias)
