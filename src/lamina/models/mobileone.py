"""MobileOne (Vasu, Gabriel, Zhu, Tuzel, Ranjan 2023, "MobileOne: An Improved One millisecond
Mobile Backbone") in the reference implementation's layout and names.

A MobileOne block is a re-parameterizable convolution with k over-parameterized branches:

    y = ReLU(sum_{i=1..k} BN_i(conv_f_i(x)) + BN(conv1x1(x)) + BN(x))

(``rbr_conv`` the k f x f ConvBN branches, ``rbr_scale`` the 1x1 one, only when f > 1,
``rbr_skip`` the identity batch norm, only with stride 1 and equal channels).
:meth:`MobileOneBlock.reparameterize` folds them into one f x f convolution with bias (see
:mod:`lamina.models.reparam`). A MobileOne unit is a depthwise 3x3 block (groups = C) and a
pointwise 1x1 block, as MobileNet's separable convolution.

The network: ``stage0`` a 3x3 stride-2 block to min(64, 64 w1) channels (one branch); four
stages of (2, 8, 10, 1) units with widths 64 w1, 128 w2, 256 w3, 512 w4, each stage starting
with stride 2; global average pooling; a dense classifier (``linear``). MobileOne-S0
(w = 0.75, 1, 1, 2, k = 4) has 2,078,504 parameters deployed with 1000 classes (the paper's
2.1 M). The squeeze-and-excitation units of S4 are left out.
"""

from __future__ import annotations

from lamina import nn
from lamina.models.blocks import check_input, finish
from lamina.models.reparam import ReparamBlock, _ReparamNet
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int

__all__ = ["MobileOne", "MobileOneBlock", "mobileone_s0", "mobileone_s1", "mobileone_tiny"]


@register_with_arguments
class MobileOneBlock(ReparamBlock):
    """A MobileOne block (module docstring): ``num_conv_branches`` ConvBN branches of
    ``kernel_size`` (the Sequential ``rbr_conv``), the 1x1 ConvBN ``rbr_scale`` when
    ``kernel_size`` > 1 and the batch norm ``rbr_skip`` when ``stride`` is 1 and ``in_channels`` =
    ``out_channels``, summed, then ReLU; with ``deploy`` the one convolution ``reparam``."""

    default_name = "mobileone_block"
    branch_names = ("rbr_conv", "rbr_scale", "rbr_skip")

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, groups: int = 1,
                 num_conv_branches: int = 1, deploy: bool = False, name: str | None = None):
        super().__init__(name=name)
        self._setup(in_channels, out_channels, kernel_size, stride, groups, deploy, "MobileOneBlock")
        self.num_conv_branches = positive_int(num_conv_branches, "MobileOneBlock: num_conv_branches")
        if self.deploy:
            self.reparam = self._fused_conv()
            return
        self.rbr_conv = nn.Sequential(*(self._conv_bn(kernel_size, str(i)) for i in range(num_conv_branches)),
                                      name="rbr_conv")
        if kernel_size > 1:
            self.rbr_scale = self._conv_bn(1, "rbr_scale")
        if self.has_identity:
            self.rbr_skip = nn.BatchNorm(name="rbr_skip")

    def _branches(self):
        return (list(self.rbr_conv), self.rbr_scale if self.kernel_size > 1 else None,
                self.rbr_skip if self.has_identity else None)


@register_with_arguments
class MobileOne(_ReparamNet):
    """MobileOne (module docstring) with ``num_blocks`` units per stage, ``width_multipliers``
    (w1, w2, w3, w4) and ``num_conv_branches`` k: sub-layers ``stage0`` (a block), ``stage1`` to
    ``stage4`` (Sequentials of blocks '0', '1', ...: depthwise and pointwise in turn), ``gap``
    and ``linear``; outputs logits. ``deploy`` builds the re-parameterized network; inputs have
    ``in_channels`` channels."""

    default_name = "mobileone"

    def __init__(self, num_blocks=(2, 8, 10, 1), width_multipliers=(0.75, 1.0, 1.0, 2.0), num_conv_branches: int = 4,
                 num_classes: int = 1000, deploy: bool = False, in_channels: int = 3, name: str | None = None):
        super().__init__(name=name)
        self.deploy = bool(deploy)
        k = num_conv_branches

        def stage(channels: int, width: int, depth: int) -> list:
            blocks = []
            for b in range(depth):
                blocks.append(MobileOneBlock(channels, channels, 3, 2 if b == 0 else 1, groups=channels,
                                             num_conv_branches=k, deploy=deploy, name=str(2 * b)))
                blocks.append(MobileOneBlock(channels, width, 1, 1, num_conv_branches=k, deploy=deploy,
                                             name=str(2 * b + 1)))
                channels = width
            return blocks

        self._build(num_blocks, width_multipliers, "width_multipliers",
                    lambda channels: MobileOneBlock(in_channels, channels, 3, stride=2, deploy=deploy, name="stage0"),
                    stage, num_classes)


def _preset(num_blocks, widths, k: int, num_classes: int, input_shape, deploy: bool) -> MobileOne:
    shape = check_input(input_shape, "MobileOne")
    return finish(MobileOne(num_blocks, widths, k, num_classes, deploy, in_channels=shape[2]), shape)


def mobileone_s0(num_classes: int = 1000, deploy: bool = False, input_shape=(224, 224, 3)) -> MobileOne:
    """MobileOne-S0: widths (0.75, 1, 1, 2), k = 4 branches; 2,078,504 parameters deployed."""
    return _preset((2, 8, 10, 1), (0.75, 1.0, 1.0, 2.0), 4, num_classes, input_shape, deploy)


def mobileone_s1(num_classes: int = 1000, deploy: bool = False, input_shape=(224, 224, 3)) -> MobileOne:
    """MobileOne-S1: widths (1.5, 1.5, 2, 2.5), one branch; 4.8 M parameters deployed."""
    return _preset((2, 8, 10, 1), (1.5, 1.5, 2.0, 2.5), 1, num_classes, input_shape, deploy)


def mobileone_tiny(num_classes: int = 10, deploy: bool = False, input_shape=(16, 16, 3)) -> MobileOne:
    """A small MobileOne for tests and toy data: widths 8, 8, 16, 32, 32, one unit per stage, k = 2."""
    return _preset((1, 1, 1, 1), (0.125, 0.125, 0.125, 0.0625), 2, num_classes, input_shape, deploy)
