"""Masked convolutions (PixelCNN, van den Oord et al. 2016).

An autoregressive image model predicts pixel (i, j) from the pixels before it in raster
order: the rows above and the pixels to its left. A convolution with 'same' padding
becomes causal when its kernel is zero at and after the centre (c, c), c = f // 2:

    mask[a, b] = 1 for a < c, or a = c and b < c      (type 'A': the first layer)
    mask[a, b] = 1 also at (c, c)                      (type 'B': every later layer)

The first layer must not see the pixel it predicts; later layers may read the centre,
which by then only carries information from earlier pixels.

With ``channel_groups`` = G the channels are split into G contiguous groups (R, G, B in the
paper) that are predicted in turn inside a pixel: at the centre, output group g reads input
groups < g (type 'A') or <= g (type 'B'). The group of channel c out of C is floor(c G / C).
"""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Tensor
from lamina.nn.conv import Conv2D, check_nhwc_input
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import as_tensor

__all__ = ["MaskedConv2D", "causal_mask"]


def causal_mask(kernel_size: int, c_in: int, filters: int, mask_type: str, channel_groups: int = 1, dtype=None):
    """The (filters, f, f, c_in) 0/1 mask of a masked convolution (see the module docstring)."""
    xp = backend.xp
    f, centre = kernel_size, kernel_size // 2
    mask = xp.zeros((filters, f, f, c_in), dtype=dtype or backend.get_default_dtype())
    mask[:, :centre] = 1
    mask[:, centre, :centre] = 1
    group_out = xp.arange(filters) * channel_groups // filters
    group_in = xp.arange(c_in) * channel_groups // c_in
    allowed = group_out[:, None] > group_in[None, :] if mask_type == "A" else group_out[:, None] >= group_in[None, :]
    mask[:, centre, centre] = allowed
    return mask


@register_layer
class MaskedConv2D(Conv2D):
    """A Conv2D (stride 1, 'same' padding, odd square kernel) whose weights are masked so
    that output pixel (i, j) reads only the pixels before it: ``mask_type`` 'A' excludes
    (i, j) itself, 'B' includes it; ``channel_groups`` orders channel groups inside a pixel
    (see the module docstring). The mask is applied at every call, so masked weights
    never receive a gradient."""

    def __init__(self, filters: int, kernel_size: int, mask_type: str = "B", channel_groups: int = 1,
                 use_bias: bool = True, activation=None, kernel_init="he_uniform", bias_init="zeros",
                 name: str | None = None):
        if mask_type not in ("A", "B"):
            raise ValueError(f"MaskedConv2D: mask_type must be 'A' (excludes the centre pixel) or 'B' (includes "
                             f"it), got {mask_type!r}")
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"MaskedConv2D: kernel_size must be an odd positive int (the mask needs a centre "
                             f"pixel), got {kernel_size!r}")
        super().__init__(filters, kernel_size, padding="same", use_bias=use_bias, activation=activation,
                         kernel_init=kernel_init, bias_init=bias_init, name=name)
        self.mask_type = mask_type
        self.channel_groups = positive_int(channel_groups, "MaskedConv2D: channel_groups")

    def build(self, input_shape) -> None:
        super().build(input_shape)
        c_in = self.weight.shape[-1]
        if c_in < self.channel_groups or self.filters < self.channel_groups:
            raise ValueError(f"{self._label()}: channel_groups={self.channel_groups} needs at least that many input "
                             f"channels and filters, got {c_in} and {self.filters}")
        mask = causal_mask(self.kernel_size[0], c_in, self.filters, self.mask_type, self.channel_groups,
                           self.weight.dtype)
        self.register_buffer("mask", mask)
        self.weight.data = self.weight.data * mask

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        check_nhwc_input(self, x, self.in_channels)
        mask = self.mask if self.mask.dtype == self.weight.dtype else self.mask.astype(self.weight.dtype)
        return self.apply_weights(x, self.weight * Tensor._wrap(mask))

    def get_config(self) -> dict:
        config = super().get_config()
        for key in ("stride", "padding", "dilation", "groups", "algorithm"):
            config.pop(key)
        config["kernel_size"] = self.kernel_size[0]
        return {**config, "mask_type": self.mask_type, "channel_groups": self.channel_groups}

    def extra_repr(self) -> str:
        groups = f", channel_groups={self.channel_groups}" if self.channel_groups != 1 else ""
        return f"{self.filters}, kernel_size={self.kernel_size[0]}, mask_type={self.mask_type!r}{groups}"
