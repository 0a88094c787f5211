"""SegNet (Badrinarayanan et al. 2017, "SegNet: A Deep Convolutional Encoder-Decoder
Architecture for Image Segmentation"): an encoder-decoder whose decoder upsamples with the
positions of the encoder's maxima.

The encoder is VGG16's 13 convolutions in five stages (64, 64 | 128, 128 | 256 x 3 | 512 x 3 |
512 x 3 filters), each a 3x3 conv (padding 1) - BN - ReLU, every stage ended by a 2x2 max pooling
of stride 2 that keeps the flat positions of its maxima. The decoder mirrors it: stage k puts its
input back at those positions (:func:`lamina.functional.max_unpool2d`, zeros elsewhere, at the
encoder map's size) and applies as many 3x3 conv - BN - ReLU as encoder stage k, the last one
narrowing to the channels of the stage above; the very last conv is the per-pixel classifier
(3x3, no BN, no ReLU, ``num_classes`` filters), as the authors' Caffe model (conv1_1_D).

With biases on every conv (the authors' model), the encoder's convolutions hold exactly VGG16's
14,714,688 conv parameters (the paper's "14.7M"); :func:`segnet_vgg16` has 29,449,355 parameters
with 11 classes (15,872 of them BN scales and shifts). ``forward`` gives the (N, H, W, classes) logits; H and W need
not be divisible by 32 (each unpooling restores its encoder map's size).
"""

from __future__ import annotations

from lamina import nn
from lamina.autograd import Tensor
from lamina.models.blocks import Block, check_input, finish, nhwc
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int

__all__ = ["SEGNET_VGG16_STAGES", "SegNet", "segnet_small", "segnet_vgg16"]

SEGNET_VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def _conv_bn_relu(filters: int, name: str) -> nn.Sequential:
    return nn.Sequential(nn.Conv2D(filters, 3, padding=1, name="conv"), nn.BatchNorm(name="bn"),
                         nn.ReLU(name="relu"), name=name)


def _decoder_stage(stage: tuple[int, ...], out_channels: int, classifier: bool, name: str) -> nn.Sequential:
    """The mirror of an encoder stage: its widths, the last one ``out_channels`` (a bare conv,
    the classifier, when ``classifier``)."""
    widths = list(stage[:-1]) + [out_channels]
    layers = [_conv_bn_relu(width, str(k)) for k, width in enumerate(widths[:-1])]
    last = str(len(widths) - 1)
    layers.append(nn.Conv2D(out_channels, 3, padding=1, name=last) if classifier
                  else _conv_bn_relu(out_channels, last))
    return nn.Sequential(*layers, name=name)


@register_with_arguments
class SegNet(Block):
    """SegNet (module docstring) for any ``stages`` (the filters of each encoder stage's convs).
    Sub-layers ``encoder.k`` and ``decoder.k`` (Sequentials of conv-BN-ReLU named '0', '1', ...,
    each with 'conv', 'bn', 'relu'; decoder k mirrors encoder len(stages) - 1 - k), ``pool`` and
    ``unpool``."""

    default_name = "segnet"

    def __init__(self, num_classes: int, stages=SEGNET_VGG16_STAGES, name: str | None = None):
        super().__init__(name=name)
        self.num_classes = positive_int(num_classes, "SegNet: num_classes")
        self.stages = tuple(tuple(positive_int(w, "SegNet: stages") for w in stage) for stage in stages)
        if not self.stages or not all(self.stages):
            raise ValueError(f"SegNet: stages must be a non-empty list of non-empty width lists, got {stages!r}")
        self.encoder = nn.ModuleList([
            nn.Sequential(*[_conv_bn_relu(w, str(j)) for j, w in enumerate(stage)], name=str(k))
            for k, stage in enumerate(self.stages)])
        reversed_stages = self.stages[::-1]
        self.decoder = nn.ModuleList([
            _decoder_stage(stage, reversed_stages[k + 1][-1] if k + 1 < len(self.stages) else self.num_classes,
                           k + 1 == len(self.stages), str(k))
            for k, stage in enumerate(reversed_stages)])
        self.pool = nn.MaxPool2D(2, return_indices=True, name="pool")
        self.unpool = nn.MaxUnpool2D(2, name="unpool")

    def trace(self, shape, step):
        shape = nhwc(self, shape)
        sizes = []
        for stage in self.encoder:
            shape = step(stage, shape)
            sizes.append(shape[1:3])
            shape = (shape[0], *(None if n is None else n // 2 for n in shape[1:3]), shape[3])
        for stage, size in zip(self.decoder, reversed(sizes)):
            shape = step(stage, (shape[0], *size, shape[3]))
        return shape

    def encode(self, x) -> tuple[Tensor, list]:
        """The encoder's last pooled map and, per stage, (indices, size before pooling)."""
        x = x if isinstance(x, Tensor) else Tensor(x)
        nhwc(self, tuple(x.shape))
        switches = []
        for stage in self.encoder:
            x = stage(x)
            size = tuple(x.shape[1:3])
            x, indices = self.pool(x)
            switches.append((indices, size))
        return x, switches

    def forward(self, x) -> Tensor:
        x, switches = self.encode(x)
        for stage, (indices, size) in zip(self.decoder, reversed(switches)):
            x = stage(self.unpool(x, indices, output_size=size))
        return x


def segnet_vgg16(num_classes: int = 11, input_shape: tuple[int, int, int] = (360, 480, 3)) -> SegNet:
    """SegNet on VGG16's 13 convolutions (module docstring; unbuilt; CamVid's 360 x 480 by
    default): 29,449,355 parameters with 11 classes."""
    model = SegNet(num_classes, SEGNET_VGG16_STAGES, name="segnet_vgg16")
    return finish(model, check_input(input_shape, "segnet_vgg16"))


def segnet_small(num_classes: int, input_shape: tuple[int, int, int], width: int = 8, depth: int = 2,
                 convs: int = 2) -> SegNet:
    """A small SegNet: ``depth`` stages of ``convs`` convolutions, width, 2 width, 4 width, ...
    filters (unbuilt)."""
    width, depth, convs = (positive_int(v, f"segnet_small: {what}")
                           for v, what in ((width, "width"), (depth, "depth"), (convs, "convs")))
    stages = tuple((width * 2 ** k,) * convs for k in range(depth))
    return finish(SegNet(num_classes, stages, name="segnet_small"), check_input(input_shape, "segnet_small"))
