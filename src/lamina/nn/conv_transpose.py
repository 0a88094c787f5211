"""The transposed convolution layer (:func:`lamina.functional.conv_transpose.conv_transpose2d`):
a learned upsampling by the stride, the adjoint of a Conv2D with the same kernel, stride and
padding.

Output volume for an (h, w, c_in) input: ((h - 1) s - 2p + q (f - 1) + output_padding + 1, ..., K)
for dilation q; 'valid' is p = 0 and 'same' gives (h s, w s). Learned parameters:
c_in f_h f_w K / groups + K.
"""

from __future__ import annotations

from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.conv_transpose import conv_transpose2d
from lamina.nn import init as initializers
from lamina.nn.activation import activate_fresh
from lamina.nn.conv import _set_conv_options, check_nhwc_input, conv_config, conv_repr, nhwc_shape
from lamina.nn.layer import compact, pair, positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["Conv2DTranspose", "transpose_output_length"]


def transpose_output_length(n: int | None, f: int, s: int, padding, output_padding: int, axis: int = 0,
                            dilation: int = 1) -> int | None:
    """Output length along one spatial axis: (n - 1) s - 2p + q (f - 1) + output_padding + 1;
    'same' -> n s."""
    if n is None:
        return None
    if padding == "same":
        return n * s
    p = 0 if padding == "valid" else padding[axis]
    return (n - 1) * s - 2 * p + dilation * (f - 1) + output_padding + 1


@register_layer
class Conv2DTranspose(Module):
    """Transposed 2-D convolution (Keras's Conv2DTranspose, PyTorch's ConvTranspose2d) with
    K = ``filters`` output channels over NHWC inputs.

    ``weight``: (c_in, f_h, f_w, K / groups), the layout of the Conv2D from K to c_in
    channels whose adjoint this is; ``bias``: (K,). ``output_padding`` (smaller than the
    stride or the dilation) adds rows and columns at the bottom/right, to reach an output
    size that 'valid' or an explicit padding alone does not give. ``dilation`` q spaces the
    kernel's taps q pixels apart; ``groups`` splits the channels into independent transposed
    convolutions. Defaults: He uniform weights with fan_in = f_h f_w K / groups (the
    convention of PyTorch and Keras for these weights), zero biases.
    """

    default_name = "conv2d_transpose"

    def __init__(self, filters: int, kernel_size, stride=1, padding="valid", output_padding=0,
                 use_bias: bool = True, activation=None, kernel_init="he_uniform", bias_init="zeros",
                 dilation=1, groups: int = 1, name: str | None = None):
        super().__init__(name=name)
        positive_int(filters, "Conv2DTranspose: filters")
        positive_int(groups, "Conv2DTranspose: groups")
        if filters % groups:
            raise ValueError(f"Conv2DTranspose: groups={groups} must divide filters={filters}")
        self.filters = filters
        self.groups = groups
        _set_conv_options(self, kernel_size, stride, padding, use_bias, activation, kernel_init, bias_init,
                          "im2col", dilation)
        self.output_padding = pair(output_padding, "Conv2DTranspose output_padding")
        if any(not 0 <= e < max(s, q) for e, s, q in zip(self.output_padding, self.stride, self.dilation)):
            raise ValueError(f"Conv2DTranspose: output_padding must be at least 0 and smaller than the stride "
                             f"{self.stride} or the dilation {self.dilation} along each axis, got "
                             f"{output_padding!r}")
        if self.padding == "same" and self.output_padding != (0, 0):
            raise ValueError(f"Conv2DTranspose: padding='same' gives h s x w s; output_padding must be 0, got "
                             f"{output_padding!r}")

    @property
    def in_channels(self) -> int:
        return self.weight.shape[0]

    def build(self, input_shape) -> None:
        shape = nhwc_shape(self, input_shape)
        c_in = shape[-1]
        if c_in is None:
            raise ShapeError(f"{self._label()}: the channel (last) axis of {shape} must be known")
        if c_in % self.groups:
            raise ShapeError(f"{self._label()}: groups={self.groups} must divide the {c_in} input channels of "
                             f"{shape}")
        self._output_hw(shape)
        fh, fw = self.kernel_size
        w_shape = (c_in, fh, fw, self.filters // self.groups)
        initializers.add_weight_and_bias(self, w_shape, self.filters)

    def _output_hw(self, shape) -> tuple[int | None, int | None]:
        outs = tuple(transpose_output_length(shape[1 + axis], self.kernel_size[axis], self.stride[axis],
                                             self.padding, self.output_padding[axis], axis, self.dilation[axis])
                     for axis in (0, 1))
        if any(out is not None and out < 1 for out in outs):
            raise ShapeError(f"{self._label()}: padding {self.padding!r} crops the whole output for input shape "
                             f"{tuple(shape)} (output size {outs}); expected a positive output size")
        return outs

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        check_nhwc_input(self, x, self.in_channels)
        self._output_hw(x.shape)
        z = conv_transpose2d(x, self.weight, self.bias if self.use_bias else None, stride=compact(self.stride),
                             padding=compact(self.padding), output_padding=compact(self.output_padding),
                             groups=self.groups, dilation=compact(self.dilation))
        return activate_fresh(self.activation, z) if self.activation is not None else z

    def compute_output_shape(self, input_shape):
        shape = nhwc_shape(self, input_shape)
        c = shape[-1]
        if self.built and c is not None and c != self.in_channels:
            raise ShapeError(f"{self._label()}: input shape {shape} has {c} channels; the layer was built for "
                             f"NHWC with C={self.in_channels}")
        return (shape[0], *self._output_hw(shape), self.filters)

    def get_config(self) -> dict:
        config = conv_config(self)
        del config["algorithm"]
        return {"filters": self.filters, **config, "output_padding": list(self.output_padding),
                "groups": self.groups}

    def extra_repr(self) -> str:
        extra = f", output_padding={self.output_padding}" if self.output_padding != (0, 0) else ""
        extra += f", groups={self.groups}" if self.groups != 1 else ""
        return f"{self.filters}, {conv_repr(self)}{extra}"
