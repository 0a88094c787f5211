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

The Dense, convolution and pooling names are in :mod:`lamina.keras.conv_layers` and the layers
of their own in :mod:`lamina.keras.own_layers`; this module re-exports them.
"""

from __future__ import annotations

from lamina import nn
from lamina.keras.attention import AdditiveAttention, Attention, ProjectedAttention  # noqa: F401
from lamina.keras.conv_layers import (  # noqa: F401  (moved there, importable from here too)
    _GLOBAL_AXES,
    _IGNORED,
    AveragePooling1D,
    AveragePooling2D,
    AveragePooling3D,
    Conv1D,
    Conv2D,
    Conv2DTranspose,
    Conv3D,
    Dense,
    DepthwiseConv2D,
    GlobalAveragePooling1D,
    GlobalAveragePooling2D,
    GlobalAveragePooling3D,
    GlobalMaxPooling1D,
    GlobalMaxPooling2D,
    GlobalMaxPooling3D,
    MaxPooling1D,
    MaxPooling2D,
    MaxPooling3D,
    SeparableConv2D,
    _conv,
    _finish,
    _global,
    _pool,
)
from lamina.keras.masking import Embedding as KerasEmbedding
from lamina.keras.masking import Masking as MaskingLayer
from lamina.keras.masking import mask_of  # noqa: F401  (importable from here as before)
from lamina.keras.own_layers import MultiHeadAttention, Rescaling, Resizing  # noqa: F401  (moved there)
from lamina.keras.pooling import GlobalAveragePooling1D as MaskedAveragePooling1D  # noqa: F401
from lamina.keras.pooling import SamePooling  # noqa: F401
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


def Input(shape=None, batch_size=None, name: str | None = None, dtype="float32", **options):  # noqa: N802
    """A model input (a placeholder) for samples of ``shape`` (without the batch axis)."""
    if options:
        raise ValueError(f"Input: option(s) {sorted(options)} are not supported")
    return _lamina_input(shape, name=name, dtype=dtype)


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
