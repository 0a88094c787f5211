"""The image transformation network of fast style transfer (Johnson, Alahi & Fei-Fei 2016),
with the later refinements of the usual implementations: instance normalization in place of
batch norm (Ulyanov et al. 2016), reflection padding, and nearest-neighbour upsampling followed
by a convolution in place of transposed convolutions (no checkerboard artefacts).

    ConvLayer 9x9 (w) - ConvLayer 3x3/2 (2w) - ConvLayer 3x3/2 (4w)    (each + IN + ReLU)
    5 residual blocks: x + IN(Conv3x3(ReLU(IN(Conv3x3(x)))))
    Upsample x2 + ConvLayer 3x3 (2w) - Upsample x2 + ConvLayer 3x3 (w)  (each + IN + ReLU)
    ConvLayer 9x9 (channels)

with w = ``width`` (32 in the paper) and every ConvLayer a reflection pad of kernel // 2 then
a 'valid' convolution. It is trained, one network per style, with
:class:`lamina.nn.PerceptualLoss` (content and style terms) plus total variation.
"""

from __future__ import annotations

from lamina import nn
from lamina.autograd import Tensor
from lamina.models.blocks import Block, PathBlock, nhwc, residual_sum
from lamina.nn.constructor_config import register_with_arguments

__all__ = ["TransformerNet"]


class _ConvLayer(PathBlock):
    """[nearest upsample x2] - reflection pad (kernel // 2) - conv - [instance norm - ReLU]."""

    default_name = "conv_layer"

    def __init__(self, filters: int, kernel_size: int, stride: int = 1, upsample: bool = False,
                 normalize: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest", name="upsample") if upsample else None
        self.pad = nn.ReflectionPad2D(kernel_size // 2, name="pad")
        self.conv = nn.Conv2D(filters, kernel_size, stride=stride, name="conv")
        self.norm = nn.InstanceNorm2D(affine=True, name="norm") if normalize else None
        self.relu = nn.ReLU(name="relu") if normalize else None

    def _path(self) -> tuple:
        return tuple(layer for layer in (self.upsample, self.pad, self.conv, self.norm, self.relu)
                     if layer is not None)


class _ResidualBlock(Block):
    default_name = "residual"

    def __init__(self, filters: int, name: str | None = None):
        super().__init__(name=name)
        self.first = _ConvLayer(filters, 3, name="first")
        self.pad = nn.ReflectionPad2D(1, name="pad")
        self.conv = nn.Conv2D(filters, 3, name="conv")
        self.norm = nn.InstanceNorm2D(affine=True, name="norm")

    def trace(self, shape, step):
        shape = nhwc(self, shape)
        out = step(self.norm, step(self.conv, step(self.pad, step(self.first, shape))))
        return residual_sum(self, out, shape)

    def forward(self, x) -> Tensor:
        return x + self.norm(self.conv(self.pad(self.first(x))))


@register_with_arguments
class TransformerNet(PathBlock):
    """Johnson et al.'s feed-forward style network (layout in the module docstring): an image
    (N, H, W, channels) to a stylised one of the same size (H and W multiples of 4 give exactly
    the input size). ``width`` scales every layer (32 in the paper), ``blocks`` residual blocks."""

    default_name = "transformer_net"

    def __init__(self, channels: int = 3, width: int = 32, blocks: int = 5, name: str | None = None):
        super().__init__(name=name)
        self.down1 = _ConvLayer(width, 9, name="down1")
        self.down2 = _ConvLayer(2 * width, 3, stride=2, name="down2")
        self.down3 = _ConvLayer(4 * width, 3, stride=2, name="down3")
        self.residuals = nn.Sequential(*[_ResidualBlock(4 * width, name=str(i)) for i in range(blocks)],
                                       name="residuals")
        self.up1 = _ConvLayer(2 * width, 3, upsample=True, name="up1")
        self.up2 = _ConvLayer(width, 3, upsample=True, name="up2")
        self.output = _ConvLayer(channels, 9, normalize=False, name="output")

    def _path(self) -> tuple:
        return self.down1, self.down2, self.down3, self.residuals, self.up1, self.up2, self.output
