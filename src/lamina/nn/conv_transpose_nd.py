"""Transposed 1-D and 3-D convolution layers, PyTorch's ConvTranspose1d/ConvTranspose3d on
channel-last inputs (:mod:`lamina.functional.conv_transpose_nd`):

    Conv1DTranspose(K, f)   (N, L, c_in) -> (N, L_out, K)
    Conv3DTranspose(K, f)   (N, D, H, W, c_in) -> (N, D_out, H_out, W_out, K)

with n_out = (n - 1) s - 2p + q (f - 1) + e + 1 per axis for stride s, padding p, dilation
q and output padding e (smaller than s or q). ``weight``: (c_in, f..., K / groups), the layout
of Conv2DTranspose (PyTorch's weight is ``weight.transpose(0, -1, 1, ...)``); ``bias``: (K,).
Defaults: He uniform weights with fan_in = f... K / groups (PyTorch's and Keras's convention
for these weights), zero biases. Learned parameters: c_in f... K / groups + K.
"""

from __future__ import annotations

import math

from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.conv_transpose_nd import conv_transpose1d, conv_transpose3d, conv_transpose_output_length
from lamina.nn import init as initializers
from lamina.nn.activation import activate_fresh, activation_config, get_activation
from lamina.nn.layer import check_shape_ndim, input_error, positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["Conv1DTranspose", "Conv3DTranspose"]


def _per_axis(value, d: int, what: str, low: int) -> tuple[int, ...]:
    values = (value,) * d if isinstance(value, int) and not isinstance(value, bool) else tuple(value)
    if len(values) != d or any(isinstance(v, bool) or not isinstance(v, int) or v < low for v in values):
        raise ValueError(f"{what} must be an int >= {low} or {d} of them, got {value!r}")
    return tuple(int(v) for v in values)


class _ConvTransposeND(Module):
    spatial = 1

    def __init__(self, filters: int, kernel_size, stride=1, padding=0, output_padding=0, groups: int = 1,
                 dilation=1, use_bias: bool = True, activation=None, kernel_init="he_uniform",
                 bias_init="zeros", name: str | None = None):
        super().__init__(name=name)
        who, d = type(self).__name__, self.spatial
        self.filters = positive_int(filters, f"{who}: filters")
        self.groups = positive_int(groups, f"{who}: groups")
        if filters % groups:
            raise ValueError(f"{who}: groups={groups} must divide filters={filters}")
        self.kernel_size = _per_axis(kernel_size, d, f"{who}: kernel_size", 1)
        self.stride = _per_axis(stride, d, f"{who}: stride", 1)
        self.padding = _per_axis(padding, d, f"{who}: padding", 0)
        self.output_padding = _per_axis(output_padding, d, f"{who}: output_padding", 0)
        self.dilation = _per_axis(dilation, d, f"{who}: dilation", 1)
        if any(e >= max(s, q) for e, s, q in zip(self.output_padding, self.stride, self.dilation)):
            raise ValueError(f"{who}: output_padding {self.output_padding} must be smaller than the stride "
                             f"{self.stride} or the dilation {self.dilation} along each axis")
        self.use_bias = bool(use_bias)
        self.activation_spec = activation
        self.activation = get_activation(activation)
        self.kernel_init, self.bias_init = kernel_init, bias_init

    def _expected(self) -> str:
        layout = "(batch, steps, channels)" if self.spatial == 1 else "(batch, depth, height, width, channels)"
        return f"a {self.spatial + 2}-D input {layout}"

    @property
    def in_channels(self) -> int:
        return self.weight.shape[0]

    def _output_sizes(self, shape) -> tuple:
        outs = tuple(None if n is None else conv_transpose_output_length(n, f, s, p, e, q)
                     for n, f, s, p, e, q in zip(shape[1:-1], self.kernel_size, self.stride, self.padding,
                                                 self.output_padding, self.dilation))
        if any(n is not None and n < 1 for n in outs):
            raise ShapeError(f"{self._label()}: padding {self.padding} crops the whole output for input shape "
                             f"{tuple(shape)} (output size {outs}); expected a positive output size")
        return outs

    def build(self, input_shape) -> None:
        shape = check_shape_ndim(self, input_shape, self.spatial + 2, self._expected())
        c_in = shape[-1]
        if c_in is None:
            raise ShapeError(f"{self._label()}: the channel (last) axis of {tuple(shape)} must be known")
        if c_in % self.groups:
            raise ShapeError(f"{self._label()}: groups={self.groups} must divide the {c_in} input channels of "
                             f"{tuple(shape)}")
        self._output_sizes(shape)
        w_shape = (c_in, *self.kernel_size, self.filters // self.groups)
        initializers.add_weight_and_bias(self, w_shape, self.filters)

    def _check_channels(self, shape) -> None:
        c = shape[-1]
        if self.built and c is not None and c != self.in_channels:
            raise ShapeError(f"{self._label()}: input shape {tuple(shape)} has {c} channels; the layer was built "
                             f"for {self.in_channels}")

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != self.spatial + 2:
            raise input_error(self, x, self._expected())
        self._check_channels(x.shape)
        self._output_sizes(x.shape)
        conv = conv_transpose1d if self.spatial == 1 else conv_transpose3d
        z = conv(x, self.weight, self.bias if self.use_bias else None, self.stride, self.padding,
                 self.output_padding, self.groups, self.dilation)
        return activate_fresh(self.activation, z) if self.activation is not None else z

    def compute_output_shape(self, input_shape):
        shape = check_shape_ndim(self, input_shape, self.spatial + 2, self._expected())
        self._check_channels(shape)
        return (shape[0], *self._output_sizes(shape), self.filters)

    def macs(self, input_shapes, output_shapes) -> int:
        """n... c_in f... K / groups per sample: every input value meets each weight of its group."""
        if not input_shapes:
            return 0
        return math.prod(input_shapes[0]) * math.prod(self.kernel_size) * (self.filters // self.groups)

    def get_config(self) -> dict:
        def plain(values):
            return values[0] if self.spatial == 1 else list(values)

        return {"filters": self.filters, "kernel_size": plain(self.kernel_size), "stride": plain(self.stride),
                "padding": plain(self.padding), "output_padding": plain(self.output_padding),
                "groups": self.groups, "dilation": plain(self.dilation), "use_bias": self.use_bias,
                "activation": activation_config(self), "kernel_init": self.kernel_init,
                "bias_init": self.bias_init, "name": self.name}

    def extra_repr(self) -> str:
        parts = [f"{self.filters}", f"kernel_size={self.kernel_size}", f"stride={self.stride}"]
        for key, default in (("padding", 0), ("output_padding", 0), ("dilation", 1)):
            value = getattr(self, key)
            if any(v != default for v in value):
                parts.append(f"{key}={value}")
        if self.groups != 1:
            parts.append(f"groups={self.groups}")
        return ", ".join(parts)


@register_layer
class Conv1DTranspose(_ConvTransposeND):
    """Transposed 1-D convolution (PyTorch's ConvTranspose1d, Keras's Conv1DTranspose) with
    K = ``filters`` output channels over (N, L, c_in) sequences; weight (c_in, f, K / groups)."""

    default_name = "conv1d_transpose"
    spatial = 1


@register_layer
class Conv3DTranspose(_ConvTransposeND):
    """Transposed 3-D convolution (PyTorch's ConvTranspose3d, Keras's Conv3DTranspose) with
    K = ``filters`` output channels over (N, D, H, W, c_in) volumes; weight
    (c_in, f_d, f_h, f_w, K / groups)."""

    default_name = "conv3d_transpose"
    spatial = 3
