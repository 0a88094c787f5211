"""ShuffleNet v2 (Ma et al. 2018, "ShuffleNet V2: Practical Guidelines for Efficient CNN
Architecture Design") in torchvision's layout and names.

Its unit splits the channels instead of grouping the convolutions. With stride 1 the first
half of the channels passes unchanged and the second half goes through branch2; with
stride 2 both branches see the whole input and each outputs half of the channels:

    branch2: 1x1 conv - BN - ReLU - 3x3 depthwise conv (stride s) - BN - 1x1 conv - BN - ReLU
    branch1 (s = 2): 3x3 depthwise conv /2 - BN - 1x1 conv - BN - ReLU
    out = channel_shuffle([x_1 or branch1(x), branch2(x_2 or x)], 2)

The channel shuffle (:class:`lamina.nn.ChannelShuffle`) interleaves the two halves so that
the next unit's split mixes both. The network: conv1 (3x3/2 conv 24 - BN - ReLU) - 3x3/2
max pool - stage2, stage3, stage4 (4, 8, 4 units, the first of each with stride 2) - conv5
(1x1 conv - BN - ReLU) - global average pooling - fc. Stage widths per multiplier:
0.5x (48, 96, 192, 1024), 1.0x (116, 232, 464, 1024), 1.5x (176, 352, 704, 1024),
2.0x (244, 488, 976, 2048). Parameters with 1000 classes: 1,366,792; 2,278,604; 3,503,624;
7,393,996.
"""

from __future__ import annotations

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor
from lamina.models.blocks import Block, check_input, classifier_layers, concat_shapes, finish, nhwc_channels
from lamina.nn.layer import register_layer

__all__ = ["SHUFFLENET_V2_WIDTHS", "ShuffleNetV2Unit", "shufflenet_v2", "shufflenet_v2_x0_5", "shufflenet_v2_x1_0",
           "shufflenet_v2_x1_5", "shufflenet_v2_x2_0"]

# width multiplier -> output channels of conv1, stage2, stage3, stage4, conv5
SHUFFLENET_V2_WIDTHS: dict[str, tuple[int, int, int, int, int]] = {
    "0.5": (24, 48, 96, 192, 1024), "1.0": (24, 116, 232, 464, 1024),
    "1.5": (24, 176, 352, 704, 1024), "2.0": (24, 244, 488, 976, 2048),
}
STAGE_REPEATS = (4, 8, 4)


def _depthwise(stride: int, name: str) -> nn.DepthwiseConv2D:
    return nn.DepthwiseConv2D(3, stride=stride, padding=1, use_bias=False, name=name)


@register_layer
class ShuffleNetV2Unit(Block):
    """ShuffleNet v2's unit (see the module docstring) from ``in_channels`` to
    ``out_channels`` channels: sub-layers ``branch2`` and, with stride 2, ``branch1``
    (Sequentials with torchvision's indices), then ``shuffle`` (ChannelShuffle(2)). With
    stride 1 the input must have ``out_channels`` channels, half of which skip the unit."""

    default_name = "shufflenet_v2_unit"

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, name: str | None = None):
        super().__init__(name=name)
        if stride not in (1, 2):
            raise ValueError(f"ShuffleNetV2Unit: stride must be 1 or 2, got {stride!r}")
        if isinstance(out_channels, bool) or not isinstance(out_channels, int) or out_channels < 2 or out_channels % 2:
            raise ValueError(f"ShuffleNetV2Unit: out_channels must be a positive even int, got {out_channels!r}")
        if stride == 1 and in_channels != out_channels:
            raise ValueError(f"ShuffleNetV2Unit: with stride 1 in_channels must equal out_channels, got "
                             f"{in_channels} and {out_channels}")
        self.in_channels, self.out_channels, self.stride = int(in_channels), out_channels, int(stride)
        half = out_channels // 2
        if stride == 2:
            self.branch1 = nn.Sequential(
                _depthwise(stride, "0"), nn.BatchNorm(name="1"), nn.Conv2D(half, 1, use_bias=False, name="2"),
                nn.BatchNorm(name="3"), nn.ReLU(name="4"), name="branch1")
        self.branch2 = nn.Sequential(
            nn.Conv2D(half, 1, use_bias=False, name="0"), nn.BatchNorm(name="1"), nn.ReLU(name="2"),
            _depthwise(stride, "3"), nn.BatchNorm(name="4"),
            nn.Conv2D(half, 1, use_bias=False, name="5"), nn.BatchNorm(name="6"), nn.ReLU(name="7"), name="branch2")
        self.shuffle = nn.ChannelShuffle(2, name="shuffle")

    def trace(self, shape, step):
        shape = nhwc_channels(self, shape, self.in_channels)
        if self.stride == 2:
            return concat_shapes(self, [step(self.branch1, shape), step(self.branch2, shape)])
        half = (*shape[:3], self.out_channels // 2)
        return concat_shapes(self, [half, step(self.branch2, half)])

    def forward(self, x) -> Tensor:
        if self.stride == 2:
            out = F.concat([self.branch1(x), self.branch2(x)], axis=-1)
        else:
            kept, rest = F.chunk(x, 2, axis=-1)
            out = F.concat([kept, self.branch2(rest)], axis=-1)
        return self.shuffle(out)

    def get_config(self) -> dict:
        return {"in_channels": self.in_channels, "out_channels": self.out_channels, "stride": self.stride,
                "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.in_channels} -> {self.out_channels}, stride={self.stride}"


def shufflenet_v2(width: str = "1.0", num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                  classifier_activation: str | None = None) -> nn.Sequential:
    """ShuffleNet v2 of width multiplier ``width`` '0.5', '1.0', '1.5' or '2.0' (unbuilt) in
    torchvision's layout (see the module docstring). Outputs logits unless
    ``classifier_activation``."""
    if width not in SHUFFLENET_V2_WIDTHS:
        raise ValueError(f"shufflenet_v2: width must be one of {sorted(SHUFFLENET_V2_WIDTHS)}, got {width!r}")
    name = f"shufflenet_v2_x{width.replace('.', '_')}"
    input_shape = check_input(input_shape, name)
    stem, *stage_channels, last = SHUFFLENET_V2_WIDTHS[width]
    layers: list = [
        nn.Sequential(nn.Conv2D(stem, 3, stride=2, padding=1, use_bias=False, name="0"), nn.BatchNorm(name="1"),
                      nn.ReLU(name="2"), name="conv1"),
        nn.MaxPool2D(3, stride=2, padding=1, name="maxpool"),
    ]
    channels = stem
    for i, (repeats, out) in enumerate(zip(STAGE_REPEATS, stage_channels)):
        units = [ShuffleNetV2Unit(channels, out, 2, name="0")]
        units += [ShuffleNetV2Unit(out, out, 1, name=str(k)) for k in range(1, repeats)]
        layers.append(nn.Sequential(*units, name=f"stage{i + 2}"))
        channels = out
    layers += [
        nn.Sequential(nn.Conv2D(last, 1, use_bias=False, name="0"), nn.BatchNorm(name="1"), nn.ReLU(name="2"),
                      name="conv5"),
        nn.GlobalAvgPool2D(name="avgpool"),
        nn.Dense(num_classes, name="fc"),
        *classifier_layers(classifier_activation),
    ]
    return finish(nn.Sequential(*layers, name=name), input_shape)


def shufflenet_v2_x0_5(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                       classifier_activation: str | None = None) -> nn.Sequential:
    """ShuffleNet v2 0.5x: stages of 48, 96, 192 channels; 1,366,792 parameters (about 41 M
    multiply-adds at 224x224)."""
    return shufflenet_v2("0.5", num_classes, input_shape, classifier_activation)


def shufflenet_v2_x1_0(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                       classifier_activation: str | None = None) -> nn.Sequential:
    """ShuffleNet v2 1.0x: stages of 116, 232, 464 channels; 2,278,604 parameters (about 146 M
    multiply-adds at 224x224)."""
    return shufflenet_v2("1.0", num_classes, input_shape, classifier_activation)


def shufflenet_v2_x1_5(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                       classifier_activation: str | None = None) -> nn.Sequential:
    """ShuffleNet v2 1.5x: stages of 176, 352, 704 channels; 3,503,624 parameters."""
    return shufflenet_v2("1.5", num_classes, input_shape, classifier_activation)


def shufflenet_v2_x2_0(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                       classifier_activation: str | None = None) -> nn.Sequential:
    """ShuffleNet v2 2.0x: stages of 244, 488, 976 channels, conv5 2048; 7,393,996 parameters."""
    return shufflenet_v2("2.0", num_classes, input_shape, classifier_activation)
