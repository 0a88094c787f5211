"""RepVGG (Ding, Zhang, Ma, Han, Ding, Sun 2021, "RepVGG: Making VGG-style ConvNets Great
Again") in the reference implementation's layout and names.

A training-time RepVGG block sums three branches and applies ReLU:

    y = ReLU(BN(conv3x3(x)) + BN(conv1x1(x)) + BN(x))

(``rbr_dense``, ``rbr_1x1``, ``rbr_identity``; the identity branch only when the block keeps
its channels and has stride 1). :meth:`RepVGGBlock.reparameterize` folds them into one 3x3
convolution with bias (``reparam``; see :mod:`lamina.models.reparam`), a plain VGG-style
stack of 3x3 conv - ReLU for inference.

The network: five stages of widths min(64, 64a), 64a, 128a, 256a, 512b, each starting with a
stride-2 block, with 1, d1, d2, d3, d4 blocks; global average pooling; a dense classifier
(``linear``). RepVGG-A: depths (2, 4, 14, 1); RepVGG-B: (4, 6, 16, 1). Parameters with 1000
classes (training-time / deployed; the paper's table rounds the deployed ones down): A0 9,108,968 /
8,309,384, A1 14,092,264 / 12,789,864, A2 28,210,600 / 25,499,944, B0 15,817,960 / 14,339,048
(9.11 M / 8.30 M, 14.09 M / 12.78 M, 28.21 M / 25.49 M, 15.82 M / 14.33 M in the paper).
"""

from __future__ import annotations

from lamina import nn
from lamina.models.blocks import check_input, finish
from lamina.models.reparam import ReparamBlock, _ReparamNet
from lamina.nn.constructor_config import register_with_arguments

__all__ = ["RepVGG", "RepVGGBlock", "repvgg_a0", "repvgg_a1", "repvgg_a2", "repvgg_b0", "repvgg_tiny"]


@register_with_arguments
class RepVGGBlock(ReparamBlock):
    """A RepVGG block (module docstring): 3x3 ConvBN ``rbr_dense`` + 1x1 ConvBN ``rbr_1x1`` (+
    batch norm ``rbr_identity`` when ``stride`` is 1 and ``in_channels`` = ``out_channels``),
    then ReLU; with ``deploy`` the one 3x3 convolution ``reparam``. ``groups`` groups every
    convolution."""

    default_name = "repvgg_block"
    branch_names = ("rbr_dense", "rbr_1x1", "rbr_identity")

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, groups: int = 1, deploy: bool = False,
                 name: str | None = None):
        super().__init__(name=name)
        self._setup(in_channels, out_channels, 3, stride, groups, deploy, "RepVGGBlock")
        if self.deploy:
            self.reparam = self._fused_conv()
            return
        self.rbr_dense = self._conv_bn(3, "rbr_dense")
        self.rbr_1x1 = self._conv_bn(1, "rbr_1x1")
        if self.has_identity:
            self.rbr_identity = nn.BatchNorm(name="rbr_identity")

    def _branches(self):
        return [self.rbr_dense], self.rbr_1x1, (self.rbr_identity if self.has_identity else None)


@register_with_arguments
class RepVGG(_ReparamNet):
    """RepVGG (module docstring) with ``num_blocks`` (d1, d2, d3, d4) blocks in stages 1-4 and
    ``width_multiplier`` (a, a, a, b) per stage: sub-layers ``stage0`` (a block) to ``stage4``
    (Sequentials of blocks '0', '1', ...), ``gap`` and ``linear``; outputs logits. ``deploy``
    builds the re-parameterized network; :meth:`reparameterize` converts a trained one. Inputs
    have ``in_channels`` channels (3: RGB)."""

    default_name = "repvgg"

    def __init__(self, num_blocks=(2, 4, 14, 1), width_multiplier=(0.75, 0.75, 0.75, 2.5), num_classes: int = 1000,
                 deploy: bool = False, in_channels: int = 3, name: str | None = None):
        super().__init__(name=name)
        self.deploy = bool(deploy)

        def stage(channels: int, width: int, depth: int) -> list:
            return [RepVGGBlock(channels if b == 0 else width, width, stride=2 if b == 0 else 1, deploy=deploy,
                                name=str(b)) for b in range(depth)]

        self._build(num_blocks, width_multiplier, "width_multiplier",
                    lambda channels: RepVGGBlock(in_channels, channels, stride=2, deploy=deploy, name="stage0"),
                    stage, num_classes)


def _preset(num_blocks, widths, num_classes: int, input_shape, deploy: bool) -> RepVGG:
    shape = check_input(input_shape, "RepVGG")
    return finish(RepVGG(num_blocks, widths, num_classes, deploy, in_channels=shape[2]), shape)


def repvgg_a0(num_classes: int = 1000, deploy: bool = False, input_shape=(224, 224, 3)) -> RepVGG:
    """RepVGG-A0: 9,108,968 parameters for training, 8,309,384 deployed (1000 classes)."""
    return _preset((2, 4, 14, 1), (0.75, 0.75, 0.75, 2.5), num_classes, input_shape, deploy)


def repvgg_a1(num_classes: int = 1000, deploy: bool = False, input_shape=(224, 224, 3)) -> RepVGG:
    """RepVGG-A1: 14.09 M parameters for training, 12.78 M deployed (1000 classes)."""
    return _preset((2, 4, 14, 1), (1.0, 1.0, 1.0, 2.5), num_classes, input_shape, deploy)


def repvgg_a2(num_classes: int = 1000, deploy: bool = False, input_shape=(224, 224, 3)) -> RepVGG:
    """RepVGG-A2: 28.21 M parameters for training, 25.49 M deployed (1000 classes)."""
    return _preset((2, 4, 14, 1), (1.5, 1.5, 1.5, 2.75), num_classes, input_shape, deploy)


def repvgg_b0(num_classes: int = 1000, deploy: bool = False, input_shape=(224, 224, 3)) -> RepVGG:
    """RepVGG-B0: 15.82 M parameters for training, 14.33 M deployed (1000 classes)."""
    return _preset((4, 6, 16, 1), (1.0, 1.0, 1.0, 2.5), num_classes, input_shape, deploy)


def repvgg_tiny(num_classes: int = 10, deploy: bool = False, input_shape=(16, 16, 3)) -> RepVGG:
    """A small RepVGG for tests and toy data: widths 8, 8, 16, 32, 64 and depths 1, 1, 2, 1, 1."""
    return _preset((1, 2, 1, 1), (0.125, 0.125, 0.125, 0.125), num_classes, input_shape, deploy)
