"""Keras's Dense, convolution and pooling layer names mapped onto lamina's layers, and
``_finish``, which applies the arguments every Keras layer takes (``input_shape``,
``input_dim``, ``data_format``, ``trainable``, ``dtype``) and refuses the others. The argument
translations are described in :mod:`lamina.keras.layers`, which re-exports these names.
"""

from __future__ import annotations

from lamina import nn
from lamina.keras.pooling import GlobalAveragePooling1D as MaskedAveragePooling1D
from lamina.keras.pooling import SamePooling
from lamina.nn.module import Module

__all__ = [
    "AveragePooling1D", "AveragePooling2D", "AveragePooling3D", "Conv1D", "Conv2D", "Conv2DTranspose", "Conv3D",
    "Dense", "DepthwiseConv2D", "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
    "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D", "MaxPooling1D", "MaxPooling2D",
    "MaxPooling3D", "SeparableConv2D",
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
