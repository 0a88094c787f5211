"""Keras's layer names and arguments, mapped onto lamina's layers.

Each name makes lamina's layer (``layers.Conv2D(32, 3)`` is a :class:`lamina.nn.Conv2D`),
translating Keras's arguments where lamina's differ: ``strides`` -> ``stride``,
``dilation_rate`` -> ``dilation``, ``kernel_initializer`` -> ``kernel_init`` (Keras's default
``glorot_uniform``, where lamina's convolutions and dense layers default to He), ``epsilon``
-> ``eps``, ``rate`` of dropout as it is. BatchNormalization's ``momentum`` means the same in
both (running = momentum running + (1 - momentum) batch; Keras's 0.99 is PyTorch's 0.01), with
Keras's defaults momentum 0.99 and epsilon 1e-3; lamina's moving variance takes the unbiased
batch variance (as PyTorch), Keras's the biased one. ``LeakyReLU`` has Keras's slope 0.3,
``Embedding`` Keras's U(-0.05, 0.05) table, ``LayerNormalization`` Keras's epsilon 1e-3.

``input_shape=`` (Keras 2's way of giving a Sequential's input) is kept on the layer for
:class:`lamina.keras.Sequential`. Pooling with ``padding="same"`` is
:class:`lamina.keras.pooling.SamePooling` (TensorFlow's SAME rule). Options lamina does not
have (``data_format="channels_first"``, regularizers, constraints) raise a ValueError naming
the layer and the option. ``MultiHeadAttention``, ``Rescaling`` and ``Resizing`` are small
layers of their own (see their docstrings); ``Attention`` and ``AdditiveAttention`` are
Keras's, with its masks (:mod:`lamina.keras.attention`). Masks (``Embedding(mask_zero=True)``,
``Masking``) are :mod:`lamina.keras.masking`'s; the recurrent layers, with masks and
dropout, :mod:`lamina.keras.recurrent`'s.
"""

from __future__ import annotations

import numpy as np

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor
from lamina.keras.attention import AdditiveAttention, Attention, ProjectedAttention
from lamina.keras.masking import Embedding as KerasEmbedding
from lamina.keras.masking import Masking as MaskingLayer
from lamina.keras.masking import mask_of
from lamina.keras.pooling import GlobalAveragePooling1D as MaskedAveragePooling1D
from lamina.keras.pooling import SamePooling
from lamina.keras.recurrent import KerasBidirectional, KerasGRU, KerasLSTM, KerasSimpleRNN
from lamina.nn import (
    AlphaDropout,
    CategoryEncoding,
    ConvLSTM2D,
    Cropping2D,
    Discretization,
    Flatten,
    GaussianDropout,
    GaussianNoise,
    Hashing,
    IntegerLookup,
    Normalization,
    RandomBrightness,
    RandomContrast,
    RandomCrop,
    RandomFlip,
    RandomRotation,
    StringLookup,
    TextVectorization,
    UpSampling2D,
    ZeroPadding2D,
)
from lamina.nn import Input as _lamina_input
from lamina.nn.layer import register_layer
from lamina.nn.module import Module

Layer = Module
"""Keras's base class of layers is lamina's Module (``build``, ``forward``/``call``)."""

__all__ = [
    "Activation", "Add", "AdditiveAttention", "AlphaDropout", "Attention", "AveragePooling1D", "AveragePooling2D",
    "AveragePooling3D", "BatchNormalization", "Bidirectional", "CategoryEncoding", "Concatenate", "Conv1D",
    "Conv2D", "Conv2DTranspose", "Conv3D", "ConvLSTM2D", "Cropping2D", "Dense", "DepthwiseConv2D", "Discretization",
    "Dropout", "ELU", "Embedding", "Flatten", "GRU", "GaussianDropout", "GaussianNoise", "GlobalAveragePooling1D",
    "GlobalAveragePooling2D", "GlobalAveragePooling3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D",
    "GlobalMaxPooling3D", "Hashing", "Input", "IntegerLookup", "LSTM", "Layer", "LayerNormalization", "LeakyReLU",
    "Masking", "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "MultiHeadAttention", "Normalization",
    "RandomBrightness", "RandomContrast", "RandomCrop", "RandomFlip", "RandomRotation", "ReLU", "Rescaling", "Reshape",
    "Resizing", "SeparableConv2D", "SimpleRNN", "Softmax", "SpatialDropout1D", "SpatialDropout2D", "StringLookup",
    "TextVectorization", "TimeDistributed", "UpSampling2D", "ZeroPadding2D", "KerasBidirectional", "KerasGRU",
    "KerasLSTM", "KerasSimpleRNN",
]

_IGNORED = ("dtype",)                   # accepted: lamina layers take the input's dtype


def _finish(what: str, layer: Module, options: dict) -> Module:
    """Apply the arguments every Keras layer takes (``input_shape``) and refuse the rest."""
    input_shape = options.pop("input_shape", None)
    input_dim = options.pop("input_dim", None)
    if input_dim is not None and input_shape is None:
        input_shape = (input_dim,)
    if options.pop("data_format", None) not in (None, "channels_last"):
        raise ValueError(f"{what}: only data_format='channels_last' (NHWC) is supported")
    if options.pop("trainable", True) is not True:
        raise ValueError(f"{what}: trainable=False on a new layer is not supported; freeze its parameters "
                         "(parameter.trainable = False) once the model is built")
    for key in _IGNORED:
        options.pop(key, None)
    unsupported = {k: v for k, v in options.items() if v is not None}
    if unsupported:
        raise ValueError(f"{what}: option(s) {sorted(unsupported)} are not supported by lamina's "
                         f"{type(layer).__name__}")
    if input_shape is not None:
        layer.keras_input_shape = (None, *tuple(input_shape))
    return layer


def Input(shape=None, batch_size=None, name: str | None = None, dtype="float32", **options):  # noqa: N802
    """A model input (a placeholder) for samples of ``shape`` (without the batch axis)."""
    if options:
        raise ValueError(f"Input: option(s) {sorted(options)} are not supported")
    return _lamina_input(shape, name=name, dtype=dtype)


# -- dense and convolutions ----------------------------------------------------------------------
def Dense(units: int, activation=None, use_bias: bool = True, kernel_initializer="glorot_uniform",  # noqa: N802
          bias_initializer="zeros", name: str | None = None, **options) -> nn.Dense:
    """y = activation(x W + b), W glorot-uniform."""
    layer = nn.Dense(units, activation=activation, use_bias=use_bias, kernel_init=kernel_initializer,
                     bias_init=bias_initializer, name=name)
    return _finish("Dense", layer, options)


def _conv(what, cls, filters, kernel_size, strides, padding, dilation_rate, groups, activation, use_bias,
          kernel_initializer, bias_initializer, name, options):
    layer = cls(filters, kernel_size, stride=strides, padding=padding, dilation=dilation_rate, groups=groups,
                activation=activation, use_bias=use_bias, kernel_init=kernel_initializer,
                bias_init=bias_initializer, name=name)
    return _finish(what, layer, options)


def Conv1D(filters: int, kernel_size, strides=1, padding="valid", dilation_rate=1, groups: int = 1,  # noqa: N802
           activation=None, use_bias: bool = True, kernel_initializer="glorot_uniform", bias_initializer="zeros",
           name: str | None = None, **options) -> nn.Conv1D:
    """1-D convolution of (N, L, C) sequences; padding 'valid', 'same' or 'causal'."""
    return _conv("Conv1D", nn.Conv1D, filters, kernel_size, strides, padding, dilation_rate, groups, activation,
                 use_bias, kernel_initializer, bias_initializer, name, options)


def Conv2D(filters: int, kernel_size, strides=1, padding="valid", dilation_rate=1, groups: int = 1,  # noqa: N802
           activation=None, use_bias: bool = True, kernel_initializer="glorot_uniform", bias_initializer="zeros",
           name: str | None = None, **options) -> nn.Conv2D:
    """2-D convolution of NHWC images: f x f x C_in x filters weights plus filters biases."""
    return _conv("Conv2D", nn.Conv2D, filters, kernel_size, strides, padding, dilation_rate, groups, activation,
                 use_bias, kernel_initializer, bias_initializer, name, options)


def Conv3D(filters: int, kernel_size, strides=1, padding="valid", dilation_rate=1, groups: int = 1,  # noqa: N802
           activation=None, use_bias: bool = True, kernel_initializer="glorot_uniform", bias_initializer="zeros",
           name: str | None = None, **options) -> nn.Conv3D:
    """3-D convolution of (N, D, H, W, C) volumes."""
    return _conv("Conv3D", nn.Conv3D, filters, kernel_size, strides, padding, dilation_rate, groups, activation,
                 use_bias, kernel_initializer, bias_initializer, name, options)


def Conv2DTranspose(filters: int, kernel_size, strides=1, padding="valid", output_padding=None,  # noqa: N802
                    activation=None, use_bias: bool = True, kernel_initializer="glorot_uniform",
                    bias_initializer="zeros", name: str | None = None, **options) -> nn.Conv2DTranspose:
    """Transposed 2-D convolution ('valid': (H - 1) s + f; 'same': H s)."""
    if options.get("dilation_rate", 1) in (1, (1, 1)):
        options.pop("dilation_rate", None)
    layer = nn.Conv2DTranspose(filters, kernel_size, stride=strides, padding=padding,
                               output_padding=0 if output_padding is None else output_padding, use_bias=use_bias,
                               activation=activation, kernel_init=kernel_initializer, bias_init=bias_initializer,
                               name=name)
    return _finish("Conv2DTranspose", layer, options)


def DepthwiseConv2D(kernel_size, strides=1, padding="valid", depth_multiplier: int = 1,  # noqa: N802
                    activation=None, use_bias: bool = True, depthwise_initializer="glorot_uniform",
                    bias_initializer="zeros", dilation_rate=1, name: str | None = None,
                    **options) -> nn.DepthwiseConv2D:
    """One f x f filter per input channel (times ``depth_multiplier``)."""
    layer = nn.DepthwiseConv2D(kernel_size, depth_multiplier=depth_multiplier, stride=strides, padding=padding,
                               use_bias=use_bias, activation=activation, kernel_init=depthwise_initializer,
                               bias_init=bias_initializer, dilation=dilation_rate, name=name)
    return _finish("DepthwiseConv2D", layer, options)


def SeparableConv2D(filters: int, kernel_size, strides=1, padding="valid", depth_multiplier: int = 1,  # noqa: N802
                    activation=None, use_bias: bool = True, depthwise_initializer="glorot_uniform",
                    pointwise_initializer="glorot_uniform", bias_initializer="zeros", dilation_rate=1,
                    name: str | None = None, **options) -> nn.SeparableConv2D:
    """A depthwise convolution then a 1 x 1 one; one bias, after the pointwise step."""
    if pointwise_initializer != depthwise_initializer:
        raise ValueError("SeparableConv2D: lamina's layer takes one initializer for both kernels; give "
                         "depthwise_initializer and pointwise_initializer the same value")
    layer = nn.SeparableConv2D(filters, kernel_size, depth_multiplier=depth_multiplier, stride=strides,
                               padding=padding, use_bias=use_bias, activation=activation,
                               kernel_init=depthwise_initializer, bias_init=bias_initializer,
                               dilation=dilation_rate, name=name)
    return _finish("SeparableConv2D", layer, options)


# -- pooling ---------------------------------------------------------------------------------------
def _pool(what: str, cls, pool_size, strides, padding, name, options):
    mode = str(padding).lower()
    if mode == "same":
        kind = "max" if what.startswith("Max") else "average"
        return _finish(what, SamePooling(kind, int(what[-2]), pool_size, strides, name=name), options)
    if mode != "valid":
        raise ValueError(f"{what}: padding={padding!r} is not supported; expected 'valid' or 'same'")
    return _finish(what, cls(pool_size, stride=strides, name=name), options)


def MaxPooling1D(pool_size=2, strides=None, padding="valid", name=None, **options):  # noqa: N802
    return _pool("MaxPooling1D", nn.MaxPool1D, pool_size, strides, padding, name, options)


def MaxPooling2D(pool_size=(2, 2), strides=None, padding="valid", name=None, **options):  # noqa: N802
    return _pool("MaxPooling2D", nn.MaxPool2D, pool_size, strides, padding, name, options)


def MaxPooling3D(pool_size=(2, 2, 2), strides=None, padding="valid", name=None, **options):  # noqa: N802
    return _pool("MaxPooling3D", nn.MaxPool3D, pool_size, strides, padding, name, options)


def AveragePooling1D(pool_size=2, strides=None, padding="valid", name=None, **options):  # noqa: N802
    return _pool("AveragePooling1D", nn.AvgPool1D, pool_size, strides, padding, name, options)


def AveragePooling2D(pool_size=(2, 2), strides=None, padding="valid", name=None, **options):  # noqa: N802
    return _pool("AveragePooling2D", nn.AvgPool2D, pool_size, strides, padding, name, options)


def AveragePooling3D(pool_size=(2, 2, 2), strides=None, padding="valid", name=None, **options):  # noqa: N802
    return _pool("AveragePooling3D", nn.AvgPool3D, pool_size, strides, padding, name, options)


_GLOBAL_AXES = {1: "l", 2: "h w", 3: "d h w"}


def _global(what: str, dims: int, reduction: str, keepdims: bool, name, options) -> Module:
    """Pool over the spatial axes: ``lamina.nn.Reduce('b h w c -> b c', reduction)``."""
    axes = _GLOBAL_AXES[dims]
    kept = " ".join("1" for _ in axes.split()) if keepdims else ""
    pattern = f"b {axes} c -> b {kept} c".replace("  ", " ")
    return _finish(what, nn.Reduce(pattern, reduction=reduction, name=name), options)


def GlobalAveragePooling1D(keepdims: bool = False, name=None, **options):  # noqa: N802
    """The mean over the time axis; over the unmasked steps of a masked input."""
    return _finish("GlobalAveragePooling1D", MaskedAveragePooling1D(keepdims, name=name), options)


def GlobalAveragePooling2D(keepdims: bool = False, name=None, **options):  # noqa: N802
    return _global("GlobalAveragePooling2D", 2, "mean", keepdims, name, options)


def GlobalAveragePooling3D(keepdims: bool = False, name=None, **options):  # noqa: N802
    return _global("GlobalAveragePooling3D", 3, "mean", keepdims, name, options)


def GlobalMaxPooling1D(keepdims: bool = False, name=None, **options):  # noqa: N802
    return _global("GlobalMaxPooling1D", 1, "max", keepdims, name, options)


def GlobalMaxPooling2D(keepdims: bool = False, name=None, **options):  # noqa: N802
    return _global("GlobalMaxPooling2D", 2, "max", keepdims, name, options)


def GlobalMaxPooling3D(keepdims: bool = False, name=None, **options):  # noqa: N802
    return _global("GlobalMaxPooling3D", 3, "max", keepdims, name, options)


# -- shapes, dropout, normalization, activations ------------------------------------------------------
def Reshape(target_shape, name=None, **options):  # noqa: N802
    """Reshape each sample to ``target_shape`` (one size may be -1)."""
    return _finish("Reshape", nn.Reshape(target_shape, name=name), options)


def Dropout(rate: float, noise_shape=None, seed=None, name=None, **options):  # noqa: N802
    """Zero each value with probability ``rate`` in training, scaling the rest by 1 / (1 - rate)."""
    return _finish("Dropout", nn.Dropout(rate, name=name), {**options, "noise_shape": noise_shape, "seed": seed})


def SpatialDropout1D(rate: float, name=None, **options):  # noqa: N802
    return _finish("SpatialDropout1D", nn.SpatialDropout1D(rate, name=name), options)


def SpatialDropout2D(rate: float, name=None, **options):  # noqa: N802
    """Drop whole channels (feature maps) with probability ``rate``."""
    return _finish("SpatialDropout2D", nn.SpatialDropout2D(rate, name=name), options)


def BatchNormalization(axis: int = -1, momentum: float = 0.99, epsilon: float = 1e-3, center: bool = True,  # noqa: N802
                       scale: bool = True, name=None, **options):
    """Batch normalization over the channel (last) axis: gamma, beta trainable; moving mean
    and variance not (4 C weights of which 2 C trainable)."""
    if axis not in (-1,):
        raise ValueError(f"BatchNormalization: only axis=-1 (channels last) is supported, got {axis!r}")
    if center != scale:
        raise ValueError("BatchNormalization: center and scale must be both True or both False in lamina")
    return _finish("BatchNormalization", nn.BatchNorm(momentum=momentum, eps=epsilon, affine=center, name=name),
                   options)


def LayerNormalization(axis=-1, epsilon: float = 1e-3, center: bool = True, scale: bool = True, name=None,  # noqa: N802
                       **options):
    """Normalize each sample over ``axis`` (the last by default); gamma and beta per feature."""
    if center != scale:
        raise ValueError("LayerNormalization: center and scale must be both True or both False in lamina")
    layer = nn.LayerNorm(axes=tuple(axis) if isinstance(axis, list) else axis, eps=epsilon, affine=center,
                         name=name)
    return _finish("LayerNormalization", layer, options)


def Activation(activation, name=None, **options):  # noqa: N802
    """An activation by name ('relu', 'softmax', 'sigmoid', 'tanh', 'gelu', 'swish', ...)."""
    return _finish("Activation", nn.Activation(activation, name=name), options)


def ReLU(max_value: float | None = None, negative_slope: float = 0.0, threshold: float = 0.0, name=None,  # noqa: N802
         **options):
    """max(x, 0); ``max_value=6`` gives ReLU6; ``negative_slope`` a leaky ReLU."""
    if threshold != 0.0:
        raise ValueError("ReLU: threshold other than 0 is not supported")
    if max_value is None and negative_slope == 0.0:
        layer = nn.ReLU(name=name)
    elif max_value == 6 and negative_slope == 0.0:
        layer = nn.ReLU6(name=name)
    elif max_value is None:
        layer = nn.LeakyReLU(alpha=negative_slope, name=name)
    else:
        raise ValueError(f"ReLU: max_value={max_value!r} is supported only as 6 (ReLU6) without negative_slope")
    return _finish("ReLU", layer, options)


def LeakyReLU(negative_slope: float = 0.3, name=None, **options):  # noqa: N802
    """x for x > 0, ``negative_slope`` x otherwise (Keras's default slope 0.3; ``alpha=`` too)."""
    slope = options.pop("alpha", negative_slope)
    return _finish("LeakyReLU", nn.LeakyReLU(alpha=slope, name=name), options)


def ELU(alpha: float = 1.0, name=None, **options):  # noqa: N802
    return _finish("ELU", nn.ELU(alpha=alpha, name=name), options)


def Softmax(axis: int = -1, name=None, **options):  # noqa: N802
    """Softmax over the last axis."""
    if axis != -1:
        raise ValueError(f"Softmax: only axis=-1 is supported, got {axis!r}")
    return _finish("Softmax", nn.Softmax(name=name), options)


# -- embeddings and sequences ---------------------------------------------------------------------------
def Embedding(input_dim: int, output_dim: int, embeddings_initializer="uniform", mask_zero: bool = False,  # noqa: N802
              name=None, **options):
    """A table of ``input_dim`` vectors of ``output_dim`` values, drawn from U(-0.05, 0.05);
    ``mask_zero=True`` masks the steps of id 0 (see :mod:`lamina.keras.masking`)."""
    options.pop("input_length", None)
    init = {"name": "uniform", "limit": 0.05} if embeddings_initializer == "uniform" else embeddings_initializer
    layer = KerasEmbedding(input_dim, output_dim, embeddings_init=init, mask_zero=mask_zero, name=name)
    return _finish("Embedding", layer, options)


def Masking(mask_value: float = 0.0, name=None, **options):  # noqa: N802
    """Mask the steps whose features all equal ``mask_value`` (see :mod:`lamina.keras.masking`)."""
    return _finish("Masking", MaskingLayer(mask_value, name=name), options)


def _recurrent_options(what: str, options: dict, activation: str = "tanh", recurrent_activation="sigmoid") -> dict:
    """Keras's dropout rates and ``zero_output_for_mask`` (see :mod:`lamina.keras.recurrent`;
    ``seed`` is accepted, the masks come from lamina's generator, :func:`lamina.manual_seed`);
    refuses other activations."""
    if activation != "tanh" or recurrent_activation != "sigmoid":
        raise ValueError(f"{what}: only activation='tanh' and recurrent_activation='sigmoid' are supported")
    options.pop("seed", None)
    return {"dropout": options.pop("dropout", 0.0), "recurrent_dropout": options.pop("recurrent_dropout", 0.0),
            "zero_output_for_mask": bool(options.pop("zero_output_for_mask", False))}


def SimpleRNN(units: int, activation="tanh", use_bias: bool = True, kernel_initializer="glorot_uniform",  # noqa: N802
              recurrent_initializer="orthogonal", bias_initializer="zeros", return_sequences: bool = False,
              return_state: bool = False, go_backwards: bool = False, stateful: bool = False, name=None,
              **options):
    """a<t> = activation(x<t> W + a<t-1> U + b), one bias as Keras."""
    rates = _recurrent_options("SimpleRNN", options)
    layer = KerasSimpleRNN(units, activation=activation, return_sequences=return_sequences,
                           return_state=return_state, go_backwards=go_backwards, kernel_init=kernel_initializer,
                           recurrent_init=recurrent_initializer, bias_init=bias_initializer, use_bias=use_bias,
                           stateful=stateful, name=name, **rates)
    return _finish("SimpleRNN", layer, options)


def GRU(units: int, activation="tanh", recurrent_activation="sigmoid", use_bias: bool = True,  # noqa: N802
        kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal", bias_initializer="zeros",
        return_sequences: bool = False, return_state: bool = False, go_backwards: bool = False,
        stateful: bool = False, reset_after: bool = True, name=None, **options):
    """Keras's GRU with ``reset_after=True`` (two biases per gate)."""
    rates = _recurrent_options("GRU", options, activation, recurrent_activation)
    if not reset_after:
        raise ValueError("GRU: only reset_after=True (Keras's default) is supported")
    layer = KerasGRU(units, return_sequences=return_sequences, return_state=return_state, go_backwards=go_backwards,
                     kernel_init=kernel_initializer, recurrent_init=recurrent_initializer, bias_init=bias_initializer,
                     use_bias=use_bias, stateful=stateful, name=name, **rates)
    return _finish("GRU", layer, options)


def LSTM(units: int, activation="tanh", recurrent_activation="sigmoid", use_bias: bool = True,  # noqa: N802
         kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal", bias_initializer="zeros",
         unit_forget_bias: bool = True, return_sequences: bool = False, return_state: bool = False,
         go_backwards: bool = False, stateful: bool = False, name=None, **options):
    """Keras's LSTM; ``unit_forget_bias`` starts the forget gate's bias at 1."""
    rates = _recurrent_options("LSTM", options, activation, recurrent_activation)
    layer = KerasLSTM(units, return_sequences=return_sequences, return_state=return_state, go_backwards=go_backwards,
                      kernel_init=kernel_initializer, recurrent_init=recurrent_initializer, bias_init=bias_initializer,
                      use_bias=use_bias, unit_forget_bias=unit_forget_bias, stateful=stateful, name=name, **rates)
    return _finish("LSTM", layer, options)


def Bidirectional(layer, merge_mode: str | None = "concat", name=None, **options):  # noqa: N802
    """Run a recurrent layer forwards and backwards; merge the two ('concat', 'sum', 'mul', 'ave').
    A mask on the input reaches both directions."""
    return _finish("Bidirectional", KerasBidirectional(layer, merge_mode=merge_mode, name=name), options)


def TimeDistributed(layer, name=None, **options):  # noqa: N802
    """Apply ``layer`` to every step of (N, T, ...) inputs."""
    return _finish("TimeDistributed", nn.TimeDistributed(layer, name=name), options)


def Add(name=None, **options):  # noqa: N802
    """The sum of a list of tensors of one shape."""
    return _finish("Add", nn.Add(name=name), options)


def Concatenate(axis: int = -1, name=None, **options):  # noqa: N802
    """A list of tensors joined along ``axis``."""
    return _finish("Concatenate", nn.Concatenate(axis=axis, name=name), options)


# -- layers of their own ---------------------------------------------------------------------------------
@register_layer(name="KerasMultiHeadAttention")
class MultiHeadAttention(Module):
    """Keras's multi-head attention: ``mha(query, value, key=None)``, ``num_heads`` heads with
    keys of ``key_dim`` and values of ``value_dim`` (default ``key_dim``) features each, the
    output projected back to the query's E features.

    When the value heads are as wide as the key heads and the query, value (and key, if passed
    positionally) share E, it is built on the first call as lamina's
    :class:`lamina.nn.MultiHeadAttention` with ``embed_dim=E`` and ``head_dim=key_dim``;
    otherwise as :class:`lamina.keras.attention.ProjectedAttention` (four Dense projections).
    Either way Keras's parameter count: E_q h d_k + E_k h d_k + E_v h d_v + h d_v E_q weights
    plus 2 h d_k + h d_v + E_q biases. ``attention_mask`` (N, T_q, T_k), True where a query
    may attend, and-ed as Keras does with the query's mask (rows) and the value's and key's
    (columns): the masks the tensors carry, or ``query_mask=``, ``value_mask=``,
    ``key_mask=`` (N, T); a fully masked query row gets zero attention weights (no NaN), its
    output the output projection's bias; the output carries the query's mask. ``use_causal_mask``;
    ``return_attention_scores`` also returns the weights (N, h, T_q, T_k). A key of another
    width than the value must be passed positionally (``mha(query, value, key)``) when
    ``value_dim`` equals ``key_dim``, so that the first call sees it.
    """

    def __init__(self, num_heads: int, key_dim: int, value_dim: int | None = None, dropout: float = 0.0,
                 use_bias: bool = True, kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 name: str | None = None):
        super().__init__(name=name)
        self.num_heads, self.key_dim, self.dropout = int(num_heads), int(key_dim), float(dropout)
        self.value_dim = self.key_dim if value_dim is None else int(value_dim)
        if min(self.num_heads, self.key_dim, self.value_dim) < 1:
            raise ValueError(f"MultiHeadAttention: num_heads, key_dim and value_dim must be positive, got "
                             f"{num_heads!r}, {key_dim!r}, {value_dim!r}")
        self.use_bias, self.kernel_initializer, self.bias_initializer = bool(use_bias), kernel_initializer, \
            bias_initializer

    def build(self, input_shape) -> None:
        shapes = list(input_shape) if input_shape and isinstance(input_shape[0], (tuple, list)) else [input_shape]
        widths = {shape[-1] for shape in shapes}
        if self.value_dim == self.key_dim and len(widths) == 1:
            self.attention = nn.MultiHeadAttention(shapes[0][-1], self.num_heads, use_bias=self.use_bias,
                                                   dropout=self.dropout, kernel_init=self.kernel_initializer,
                                                   bias_init=self.bias_initializer, head_dim=self.key_dim)
        else:
            self.attention = ProjectedAttention(self.num_heads, self.key_dim, self.value_dim, dropout=self.dropout,
                                                use_bias=self.use_bias, kernel_initializer=self.kernel_initializer,
                                                bias_initializer=self.bias_initializer)
        self.built = True

    def forward(self, query, value, key=None, attention_mask=None, return_attention_scores: bool = False,
                use_causal_mask: bool = False, training=None, query_mask=None, value_mask=None, key_mask=None):
        attention_mask = self._combined_mask(query, value, key, attention_mask, query_mask, value_mask, key_mask)
        if isinstance(self.attention, ProjectedAttention):
            return self.attention(query, value, key, attention_mask=attention_mask,
                                  return_attention_scores=return_attention_scores, use_causal_mask=use_causal_mask)
        key = value if key is None else key
        return self.attention(query, key, value, mask=attention_mask, causal=use_causal_mask,
                              return_weights=return_attention_scores)

    @staticmethod
    def _combined_mask(query, value, key, attention_mask, query_mask=None, value_mask=None, key_mask=None):
        """Keras's attention mask: ``attention_mask`` and-ed with the query's mask (N, T_q, 1),
        the value's and the key's (N, 1, T_k) (each given, or the one the tensor carries; the
        key's only for a key other than the value). A query row so masked that it attends to
        no key gets zero weights, hence a zero context and the output projection's bias (as
        Keras's masked softmax, which multiplies the weights by the mask)."""
        def given(mask, tensor):
            mask = mask_of(tensor) if mask is None else mask
            return None if mask is None else np.asarray(mask.data if isinstance(mask, Tensor) else mask, dtype=bool)

        t_q, t_k = query.shape[1], value.shape[1]
        masks = []
        q_mask = given(query_mask, query)
        if q_mask is not None:
            masks.append(q_mask[:, :, None])
        for mask in (given(value_mask, value), None if key is None or key is value else given(key_mask, key)):
            if mask is not None:
                masks.append(mask[:, None, :])
        if not masks:
            return attention_mask
        auto = np.logical_and.reduce([np.broadcast_to(m, (m.shape[0], t_q, t_k)) for m in masks])
        if attention_mask is None:
            return auto
        given_mask = np.asarray(attention_mask.data if isinstance(attention_mask, Tensor) else attention_mask)
        return given_mask.astype(bool) & auto

    def compute_mask(self, inputs, mask=None):
        """The query's mask."""
        return mask

    def get_config(self) -> dict:
        return {"num_heads": self.num_heads, "key_dim": self.key_dim, "value_dim": self.value_dim,
                "dropout": self.dropout, "use_bias": self.use_bias, "kernel_initializer": self.kernel_initializer,
                "bias_initializer": self.bias_initializer, "name": self.name}


@register_layer(name="KerasRescaling")
class Rescaling(Module):
    """y = x scale + offset (e.g. ``Rescaling(1 / 255)`` for pixel values)."""

    def __init__(self, scale: float, offset: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        self.scale, self.offset = float(scale), float(offset)

    def forward(self, x) -> Tensor:
        x = x if isinstance(x, Tensor) else Tensor(x)
        return x * self.scale + self.offset

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {"scale": self.scale, "offset": self.offset, "name": self.name}


@register_layer(name="KerasResizing")
class Resizing(Module):
    """Resize NHWC images to ``height`` x ``width`` ('bilinear', 'nearest', 'bicubic', 'area'),
    sampling at pixel centres (``align_corners=False``) without antialiasing."""

    def __init__(self, height: int, width: int, interpolation: str = "bilinear", crop_to_aspect_ratio: bool = False,
                 name: str | None = None):
        super().__init__(name=name)
        if crop_to_aspect_ratio:
            raise ValueError("Resizing: crop_to_aspect_ratio is not supported")
        self.height, self.width, self.interpolation = int(height), int(width), interpolation

    def forward(self, x) -> Tensor:
        align = False if self.interpolation in ("bilinear", "bicubic") else None
        return F.interpolate(x, size=(self.height, self.width), mode=self.interpolation, align_corners=align)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.height, self.width, input_shape[-1])

    def get_config(self) -> dict:
        return {"height": self.height, "width": self.width, "interpolation": self.interpolation, "name": self.name}
