"""Deformable convolution layer (DCNv2, Zhu et al. 2019; DCNv1 with ``modulated=False``).

A plain Conv2D of the same kernel, stride, padding and dilation reads the input and predicts,
at every output pixel, one (dy, dx) offset per kernel tap and offset group and, when
``modulated``, one modulation m = sigmoid(z) per tap and group; the layer's own K filters then
convolve the input sampled at the shifted taps (:func:`lamina.functional.deform_conv2d`):

    v = deform_conv2d(x, offsets(x), W, b, mask=sigmoid(z(x)))

The offset convolution starts at zero (weights and biases), so a fresh layer is a Conv2D on the
regular grid, its output halved by the masks sigmoid(0) = 1/2 when modulated, and learns where
to look from there.
"""

from __future__ import annotations

from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.activation import sigmoid
from lamina.functional.deform_conv import deform_conv2d
from lamina.nn import init as initializers
from lamina.nn.activation import activate_fresh, activation_config, get_activation
from lamina.nn.conv import Conv2D, check_nhwc_input, nhwc_shape
from lamina.nn.layer import pair, positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["DeformConv2D"]


@register_layer
class DeformConv2D(Module):
    """Deformable 2-D convolution with K = ``filters`` filters that predicts its own offsets.

    ``weight``: (K, f_h, f_w, c_in); ``bias``: (K,); ``offset_conv``: a Conv2D with
    (2 + modulated) offset_groups f_h f_w zero-initialised filters whose first
    2 offset_groups f_h f_w outputs are the offsets (torchvision's (dy, dx) order) and the rest the
    mask logits. ``padding``: zeros, an int or a pair (symmetric, as torchvision).
    """

    def __init__(self, filters: int, kernel_size, stride=1, padding=0, dilation=1, offset_groups: int = 1,
                 modulated: bool = True, use_bias: bool = True, activation=None, kernel_init="he_uniform",
                 bias_init="zeros", name: str | None = None):
        super().__init__(name=name)
        what = "DeformConv2D"
        self.filters = positive_int(filters, f"{what}: filters")
        self.offset_groups = positive_int(offset_groups, f"{what}: offset_groups")
        self.kernel_size = pair(kernel_size, f"{what} kernel_size")
        self.stride = pair(stride, f"{what} stride")
        self.padding = pair(padding, f"{what} padding")
        self.dilation = pair(dilation, f"{what} dilation")
        if min(self.kernel_size + self.stride + self.dilation) < 1 or min(self.padding) < 0:
            raise ValueError(f"{what}: kernel_size, stride and dilation must be positive and padding non-negative, "
                             f"got {kernel_size!r}, {stride!r}, {dilation!r}, {padding!r}")
        self.modulated = bool(modulated)
        self.use_bias = bool(use_bias)
        self.activation = get_activation(activation)
        self.activation_spec = None if isinstance(self.activation, Module) else activation
        self.kernel_init, self.bias_init = kernel_init, bias_init
        initializers.get(kernel_init)
        initializers.get(bias_init)
        taps = self.offset_groups * self.kernel_size[0] * self.kernel_size[1]
        self.offset_conv = Conv2D((3 if self.modulated else 2) * taps, self.kernel_size, self.stride, self.padding,
                                  dilation=self.dilation, kernel_init="zeros", bias_init="zeros")

    @property
    def in_channels(self) -> int:
        """c_in of the built layer."""
        return self.weight.shape[-1]

    def build(self, input_shape) -> None:
        shape = nhwc_shape(self, input_shape)
        c_in = shape[-1]
        if c_in is None:
            raise ShapeError(f"{self._label()}: the channel (last) axis of {shape} must be known")
        if c_in % self.offset_groups:
            raise ShapeError(f"{self._label()}: offset_groups={self.offset_groups} must divide the {c_in} input "
                             f"channels (input shape {shape})")
        self.offset_conv.build(shape)
        self.offset_conv.built = True
        self.offset_conv.build_input_shape = shape
        fh, fw = self.kernel_size
        initializers.add_weight_and_bias(self, (self.filters, fh, fw, c_in), self.filters)

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        check_nhwc_input(self, x, self.in_channels)
        predicted = self.offset_conv(x)
        split = 2 * self.offset_groups * self.kernel_size[0] * self.kernel_size[1]
        offset = predicted[..., :split] if self.modulated else predicted
        mask = sigmoid(predicted[..., split:]) if self.modulated else None
        z = deform_conv2d(x, offset, self.weight, self.bias if self.use_bias else None, stride=self.stride,
                          padding=self.padding, dilation=self.dilation, mask=mask, offset_groups=self.offset_groups)
        return activate_fresh(self.activation, z) if self.activation is not None else z

    def compute_output_shape(self, input_shape):
        shape = self.offset_conv.compute_output_shape(nhwc_shape(self, input_shape))
        return shape[:3] + (self.filters,)

    def get_config(self) -> dict:
        return {"filters": self.filters, "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": list(self.padding), "dilation": list(self.dilation), "offset_groups": self.offset_groups,
                "modulated": self.modulated, "use_bias": self.use_bias, "activation": activation_config(self),
                "kernel_init": initializers.serialize(self.kernel_init),
                "bias_init": initializers.serialize(self.bias_init), "name": self.name}

    def extra_repr(self) -> str:
        fh, fw = self.kernel_size
        parts = [f"{self.filters}", f"kernel_size=({fh}, {fw})"]
        for label, value, default in (("stride", self.stride, (1, 1)), ("padding", self.padding, (0, 0)),
                                      ("dilation", self.dilation, (1, 1))):
            if value != default:
                parts.append(f"{label}={value}")
        if self.offset_groups != 1:
            parts.append(f"offset_groups={self.offset_groups}")
        if not self.modulated:
            parts.append("modulated=False")
        return ", ".join(parts)
