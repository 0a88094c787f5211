"""Volumetric layers on NDHWC batches (batch, depth, height, width, channels): Conv3D,
MaxPool3D, AvgPool3D and GlobalAvgPool3D (course notes, Convolutional layer and Pooling
layer, with one more spatial axis).

A Conv3D layer holds K filters of (f_d, f_h, f_w, c_in / groups) as one weight tensor and
one bias per filter, a^[l] = g(conv(W^[l], a^[l-1]) + b^[l]). Per spatial axis an input of
length n gives floor((n + 2p - e) / s) + 1 outputs, e = dilation (f - 1) + 1 the kernel's
extent; 'valid' is p = 0 and 'same' gives ceil(n / s). Learned parameters:
K (f_d f_h f_w c_in / groups + 1). Pooling changes only the spatial size, by the same rule.

The arithmetic lives in :mod:`lamina.functional.conv3d`; these layers own the weights, the
shape inference and the input checks.
"""

from __future__ import annotations

import math

from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.conv3d import conv3d, triple
from lamina.functional.pool3d import avg_pool3d, global_avg_pool3d, max_pool3d
from lamina.functional.unpool_nd import max_pool3d_with_indices
from lamina.nn import init as initializers
from lamina.nn.activation import activate_fresh, activation_config, get_activation
from lamina.nn.conv import grouped_input_channels, nd_conv_repr
from lamina.nn.layer import check_shape_ndim, input_error, positive_int, register_layer
from lamina.nn.module import Module, as_tensor
from lamina.nn.pooling import average_options_config, average_options_repr, set_average_options

__all__ = ["AvgPool3D", "Conv3D", "GlobalAvgPool3D", "MaxPool3D"]

_VOLUMES = "a 5-D NDHWC batch (batch, depth, height, width, channels)"
_VOLUME_SHAPE = "a 5-D NDHWC shape (batch, depth, height, width, channels)"


def _ndim_hint(ndim: int) -> str:
    if ndim == 4:
        return " (a 4-D input is one volume without its batch axis, x[None], or a batch of images: use the 2-D layers)"
    return ""


def _volume_shape(layer: Module, input_shape) -> tuple:
    """``input_shape`` as a tuple, checked to be 5-D."""
    ndim = len(tuple(input_shape)) if input_shape is not None else 5
    return check_shape_ndim(layer, input_shape, 5, _VOLUME_SHAPE + _ndim_hint(ndim))


def _check_volumes(layer: Module, x, channels: int | None = None) -> None:
    """A 5-D NDHWC batch (with ``channels`` on the last axis, when given), or a ShapeError
    naming the layer, the input's shape and dtype and what was expected."""
    if x.ndim != 5:
        raise input_error(layer, x, _VOLUMES + _ndim_hint(x.ndim))
    if channels is not None and x.shape[-1] != channels:
        hint = ""
        if x.shape[1] == channels:
            hint = "; it looks like NCDHW: transpose it with x.transpose(0, 2, 3, 4, 1)"
        raise input_error(layer, x, f"NDHWC with C={channels} channels on the last axis{hint}")


def _volume_padding(padding, what: str):
    """'valid' | 'same' (any case) | int | (p_d, p_h, p_w) -> 'valid' | 'same' | (p_d, p_h, p_w)."""
    if isinstance(padding, str):
        key = padding.lower()
        if key not in ("valid", "same"):
            raise ValueError(f"{what}: padding must be 'valid', 'same', an int or 3 ints, got {padding!r}")
        return key
    pads = triple(padding, "padding", what)
    if min(pads) < 0:
        raise ValueError(f"{what}: padding must be non-negative, got {padding!r}")
    return pads


def _sizes(values: tuple) -> str:
    return "x".join(str(v) for v in values)


# -- convolution ------------------------------------------------------------------------------


@register_layer
class Conv3D(Module):
    """3-D convolution: K = ``filters`` filters of (f_d, f_h, f_w, c_in / groups) over NDHWC
    volumes.

    ``weight``: (K, f_d, f_h, f_w, c_in / groups) (PyTorch's Conv3d weight is
    ``w.transpose(0, 4, 1, 2, 3)``); ``bias``: (K,). ``padding``: 'valid', 'same' (ceil(n / s)
    per axis, the odd padding value at the back/bottom/right), an int or (p_d, p_h, p_w).
    ``groups`` splits the channels and the filters into independent convolutions
    (groups = c_in: depthwise). ``dilation`` spaces the taps apart. Defaults: He uniform
    weights (fan_in = f_d f_h f_w c_in / groups), zero biases.
    """

    def __init__(self, filters: int, kernel_size, stride=1, padding="valid", groups: int = 1, activation=None,
                 use_bias: bool = True, kernel_init="he_uniform", bias_init="zeros", dilation=1,
                 name: str | None = None):
        super().__init__(name=name)
        self.filters = positive_int(filters, "Conv3D: filters")
        self.groups = positive_int(groups, "Conv3D: groups")
        if filters % groups:
            raise ValueError(f"Conv3D: groups={groups} must divide filters={filters}")
        self.kernel_size = triple(kernel_size, "kernel_size", "Conv3D")
        self.stride = triple(stride, "stride", "Conv3D")
        self.dilation = triple(dilation, "dilation", "Conv3D")
        if min(self.kernel_size + self.stride + self.dilation) < 1:
            raise ValueError(f"Conv3D: kernel_size, stride and dilation must be positive, got {kernel_size!r}, "
                             f"{stride!r}, {dilation!r}")
        self.padding = _volume_padding(padding, "Conv3D")
        self.use_bias = bool(use_bias)
        self.activation = get_activation(activation)
        self.activation_spec = None if isinstance(self.activation, Module) else activation
        self.kernel_init = kernel_init
        self.bias_init = bias_init
        initializers.get(kernel_init)
        initializers.get(bias_init)

    @property
    def extent(self) -> tuple[int, int, int]:
        """The input positions one window spans per axis: dilation (f - 1) + 1."""
        return tuple(d * (f - 1) + 1 for f, d in zip(self.kernel_size, self.dilation))

    @property
    def in_channels(self) -> int:
        """c_in of the built layer."""
        return self.weight.shape[-1] * self.groups

    def _output_dhw(self, shape) -> tuple:
        """(d', h', w') for an input of ``shape`` (None stays None); a ShapeError when the
        kernel does not fit in the padded input."""
        outs = []
        for axis, (n, e, s) in enumerate(zip(shape[1:4], self.extent, self.stride)):
            if n is None:
                outs.append(None)
            elif self.padding == "same":
                outs.append(-(-n // s))
            else:
                p = 0 if self.padding == "valid" else self.padding[axis]
                outs.append((n + 2 * p - e) // s + 1)
        if any(o is not None and o < 1 for o in outs):
            kernel = f"{_sizes(self.extent)} kernel"
            if self.dilation != (1, 1, 1):
                kernel += f" ({_sizes(self.kernel_size)} dilated by {self.dilation})"
            raise ShapeError(f"{self._label()}: the {kernel} is larger than the padded input (input shape "
                             f"{tuple(shape)}, padding {self.padding!r}); expected a depth, height and width of at "
                             f"least the kernel size")
        return tuple(outs)

    def build(self, input_shape) -> None:
        shape = _volume_shape(self, input_shape)
        c_in = grouped_input_channels(self, shape)
        self._output_dhw(shape)
        w_shape = (self.filters, *self.kernel_size, c_in // self.groups)
        initializers.add_weight_and_bias(self, w_shape, self.filters)

    def forward(self, x) -> Tensor:
        return self.apply_weights(x, self.weight)

    def apply_weights(self, x, weight, activate: bool = True) -> Tensor:
        """The layer's computation with ``weight`` in place of its own (DropConnect);
        ``activate=False`` leaves out the layer's activation."""
        x = as_tensor(x)
        _check_volumes(self, x, self.in_channels)
        self._output_dhw(x.shape)
        z = conv3d(x, weight, self.bias if self.use_bias else None, stride=self.stride, padding=self.padding,
                   groups=self.groups, dilation=self.dilation)
        return activate_fresh(self.activation, z) if self.activation is not None and activate else z

    def compute_output_shape(self, input_shape):
        shape = _volume_shape(self, input_shape)
        c = shape[-1]
        if self.built and c is not None and c != self.in_channels:
            raise ShapeError(f"{self._label()}: input shape {shape} has {c} channels; the layer was built for "
                             f"NDHWC with C={self.in_channels}")
        return (shape[0], *self._output_dhw(shape), self.filters)

    def macs(self, input_shapes, output_shapes) -> int:
        """d' h' w' K f_d f_h f_w c_in / groups per sample (the bias additions not counted)."""
        if not input_shapes or not output_shapes:
            return 0
        c_in, (*out_dhw, k) = input_shapes[0][-1], output_shapes[0]
        return math.prod(out_dhw) * k * math.prod(self.kernel_size) * (c_in // self.groups)

    def get_config(self) -> dict:
        return {
            "filters": self.filters,
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": self.padding if isinstance(self.padding, str) else list(self.padding),
            "groups": self.groups,
            "activation": activation_config(self),
            "use_bias": self.use_bias,
            "kernel_init": initializers.serialize(self.kernel_init),
            "bias_init": initializers.serialize(self.bias_init),
            "dilation": list(self.dilation),
            "name": self.name,
        }

    def extra_repr(self) -> str:
        return nd_conv_repr(self, (1, 1, 1))


# -- pooling ----------------------------------------------------------------------------------


class _Pool3D(Module):
    """A (f_d, f_h, f_w) window slid with ``stride`` (default: the pool size) over each
    channel; ``padding`` (at most half the pool) on both sides of each axis."""

    _kernel = None                           # subclasses: the functional op

    def __init__(self, pool_size=2, stride=None, padding=0, name: str | None = None):
        super().__init__(name=name)
        what = type(self).__name__
        self.pool_size = triple(pool_size, "pool_size", what)
        self.stride = self.pool_size if stride is None else triple(stride, "stride", what)
        if isinstance(padding, str):
            if padding.lower() != "valid":
                raise ValueError(f"{what}: padding must be 'valid', an int or 3 ints, got {padding!r}")
            padding = 0
        self.padding = triple(padding, "padding", what)
        if min(self.pool_size + self.stride) < 1 or min(self.padding) < 0:
            raise ValueError(f"{what}: pool_size and stride must be positive and padding non-negative, got "
                             f"{self.pool_size}, {self.stride}, {self.padding}")
        if any(2 * p > f for p, f in zip(self.padding, self.pool_size)):
            raise ValueError(f"{what}: padding {self.padding} must be at most half the pool size {self.pool_size}")

    def _output_dhw(self, shape) -> tuple:
        outs = []
        for n, f, s, p in zip(shape[1:4], self.pool_size, self.stride, self.padding):
            if n is not None and f > n + 2 * p:
                raise ShapeError(f"{self._label()}: the {_sizes(self.pool_size)} pool is larger than the input of "
                                 f"shape {tuple(shape)} (padding {self.padding}); expected a depth, height and width "
                                 f"of at least the pool size")
            outs.append(None if n is None else (n + 2 * p - f) // s + 1)
        return tuple(outs)

    def compute_output_shape(self, input_shape):
        shape = _volume_shape(self, input_shape)
        return (shape[0], *self._output_dhw(shape), shape[4])

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        _check_volumes(self, x)
        self._output_dhw(x.shape)
        return self._kernel(x, self.pool_size, stride=self.stride, padding=self.padding)

    def macs(self, input_shapes, output_shapes) -> int:
        """d' h' w' c f_d f_h f_w per sample, as the 2-D pools' h_out w_out c f_h f_w."""
        if not output_shapes:
            return 0
        return math.prod(output_shapes[0]) * math.prod(self.pool_size)

    def get_config(self) -> dict:
        return {"pool_size": list(self.pool_size), "stride": list(self.stride), "padding": list(self.padding),
                "name": self.name}

    def extra_repr(self) -> str:
        parts = [f"pool_size={self.pool_size}"]
        if self.stride != self.pool_size:
            parts.append(f"stride={self.stride}")
        if self.padding != (0, 0, 0):
            parts.append(f"padding={self.padding}")
        return ", ".join(parts)


@register_layer
class MaxPool3D(_Pool3D):
    """Max pooling: each output is the largest value of its window, per channel (padding
    counts as -inf); the gradient goes to that element (the first one on ties). With
    ``return_indices`` the layer returns (output, indices), the flat positions of the maxima
    that :class:`lamina.nn.MaxUnpool3D` takes."""

    _kernel = staticmethod(max_pool3d)

    def __init__(self, pool_size=2, stride=None, padding=0, return_indices: bool = False, name: str | None = None):
        super().__init__(pool_size, stride, padding, name=name)
        self.return_indices = bool(return_indices)

    def forward(self, x):
        if not self.return_indices:
            return super().forward(x)
        x = as_tensor(x)
        _check_volumes(self, x)
        self._output_dhw(x.shape)
        return max_pool3d_with_indices(x, self.pool_size, self.stride, self.padding)

    def get_config(self) -> dict:
        config = super().get_config()
        if self.return_indices:
            config["return_indices"] = True
        return config


@register_layer
class AvgPool3D(_Pool3D):
    """Average pooling: each output is the mean of its window, per channel. As PyTorch's
    AvgPool3d, the zero padding counts in the window size unless ``count_include_pad=False``,
    and ``divisor_override`` d divides every window's sum by d instead."""

    _kernel = staticmethod(avg_pool3d)

    def __init__(self, pool_size=2, stride=None, padding=0, count_include_pad: bool = True,
                 divisor_override: int | None = None, name: str | None = None):
        super().__init__(pool_size, stride, padding, name=name)
        set_average_options(self, count_include_pad, divisor_override)

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        _check_volumes(self, x)
        self._output_dhw(x.shape)
        return avg_pool3d(x, self.pool_size, stride=self.stride, padding=self.padding,
                          count_include_pad=self.count_include_pad, divisor_override=self.divisor_override)

    def get_config(self) -> dict:
        return {**super().get_config(), **average_options_config(self)}

    def extra_repr(self) -> str:
        return ", ".join([super().extra_repr(), *average_options_repr(self)])


@register_layer
class GlobalAvgPool3D(Module):
    """The mean of each channel over the whole volume: (N, D, H, W, C) -> (N, C)."""

    def __init__(self, name: str | None = None):
        super().__init__(name=name)

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        _check_volumes(self, x)
        return global_avg_pool3d(x)

    def compute_output_shape(self, input_shape):
        shape = _volume_shape(self, input_shape)
        return (shape[0], shape[4])

    def macs(self, input_shapes, output_shapes) -> int:
        """d h w c per sample: one window of the whole volume per channel."""
        if not input_shapes:
            return 0
        return math.prod(input_shapes[0])

    def get_config(self) -> dict:
        return {"name": self.name}
