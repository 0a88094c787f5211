"""MobileNet v2 (Sandler et al. 2018, "MobileNetV2: Inverted Residuals and Linear Bottlenecks";
course notes, MobileNet) in torchvision's layout and names.

The inverted residual block takes a thin volume of c_in channels, widens it, filters it
depthwise and projects it back to a thin one:

    1x1 conv to t c_in channels - BN - ReLU6        (expansion; left out when t = 1)
    3x3 depthwise conv, stride s - BN - ReLU6       (one (3, 3) filter per channel)
    1x1 conv to c_out channels - BN                 (linear bottleneck: no activation)
    + the block's input when s = 1 and c_in = c_out (the shortcut joins the thin volumes)

The projection has no ReLU6 because a ReLU on a low-dimensional volume destroys
information the next block cannot recover. The network:

    features.0   3x3/2 conv 32 - BN - ReLU6
    features.1..17  inverted residual blocks (t, c, n, s): (1, 16, 1, 1), (6, 24, 2, 2),
                 (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)
                 (n blocks of c channels, the first of each group with stride s)
    features.18  1x1 conv 1280 - BN - ReLU6
    global average pooling - classifier.0 dropout - classifier.1 FC

The width multiplier alpha scales every channel count c to the multiple of 8 nearest to
alpha c (never more than 10% below it; see :func:`make_divisible`); the last 1x1 conv
keeps 1280 channels unless alpha > 1. Convolutions have no bias; BatchNorm uses
PyTorch's eps 1e-5 and momentum 0.1. Keys follow torchvision (``features.0.0.weight``,
``features.2.conv.1.0.weight`` for a depthwise filter, ``features.2.conv.3.running_var``,
``classifier.1.weight``) so :func:`lamina.models.load_torchvision_state_dict` loads its
weights. Parameters with alpha = 1 and 1000 classes: 3,504,872.
"""

from __future__ import annotations

from collections.abc import Sequence

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor
from lamina.models.blocks import Block, check_input, classifier_layers, finish, nhwc_channels
from lamina.nn.layer import register_layer

__all__ = ["INVERTED_RESIDUAL_SETTING", "InvertedResidual", "make_divisible", "mobilenet_v2"]

# (t expansion, c output channels, n blocks, s stride of the first block)
INVERTED_RESIDUAL_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)
STEM_CHANNELS, LAST_CHANNELS, ROUND_NEAREST = 32, 1280, 8


def make_divisible(value: float, divisor: int = ROUND_NEAREST) -> int:
    """The multiple of ``divisor`` nearest to ``value`` (halves round up), at least ``divisor``,
    raised by one more ``divisor`` if rounding lost more than 10% of ``value``."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def conv_bn_relu6(filters: int, kernel_size: int, stride: int = 1, groups: int = 1,
                  name: str | None = None, activation: str = "relu6") -> nn.Sequential:
    """Conv2D ('same' padding (f - 1) / 2, no bias) - BatchNorm - ReLU6 (or ``activation``) as a
    Sequential of layers named '0', '1', '2' (torchvision's ``Conv2dNormActivation``)."""
    return nn.Sequential(
        nn.Conv2D(filters, kernel_size, stride=stride, padding=(kernel_size - 1) // 2, groups=groups,
                  use_bias=False, name="0"),
        nn.BatchNorm(name="1"),
        nn.ReLU6(name="2") if activation == "relu6" else nn.Activation(activation, name="2"),
        name=name,
    )


@register_layer
class InvertedResidual(Block):
    """MobileNet v2's block (see the module docstring): sub-layer ``conv``, a Sequential of
    [expansion ConvBNReLU6 (when ``expand_ratio`` != 1)], the depthwise ConvBNReLU6, the 1x1
    projection and its BN; the input is added to the output when ``stride`` is 1 and
    ``in_channels`` equals ``out_channels``. The expanded width is round(t c_in). ``activation``
    replaces ReLU6 (MobileViT's blocks use 'silu')."""

    default_name = "inverted_residual"

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, expand_ratio: float = 6,
                 name: str | None = None, activation: str = "relu6"):
        super().__init__(name=name)
        if stride not in (1, 2):
            raise ValueError(f"InvertedResidual: stride must be 1 or 2, got {stride!r}")
        if not expand_ratio >= 1:
            raise ValueError(f"InvertedResidual: expand_ratio must be at least 1, got {expand_ratio!r}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.stride, self.expand_ratio, self.activation = int(stride), expand_ratio, activation
        self.hidden_channels = int(round(in_channels * expand_ratio))
        self.use_shortcut = self.stride == 1 and self.in_channels == self.out_channels
        hidden = self.hidden_channels
        layers = [conv_bn_relu6(hidden, 1, activation=activation)] if expand_ratio != 1 else []
        layers += [conv_bn_relu6(hidden, 3, stride=stride, groups=hidden, activation=activation),
                   nn.Conv2D(out_channels, 1, use_bias=False), nn.BatchNorm()]
        for i, layer in enumerate(layers):
            layer.name = str(i)
        self.conv = nn.Sequential(*layers, name="conv")

    def trace(self, shape, step):
        shape = nhwc_channels(self, shape, self.in_channels)
        return step(self.conv, shape)

    def forward(self, x) -> Tensor:
        out = self.conv(x)
        return F.add(x, out) if self.use_shortcut else out

    def get_config(self) -> dict:
        config = {"in_channels": self.in_channels, "out_channels": self.out_channels, "stride": self.stride,
                  "expand_ratio": self.expand_ratio, "name": self.name}
        return config if self.activation == "relu6" else {**config, "activation": self.activation}

    def extra_repr(self) -> str:
        shortcut = ", shortcut" if self.use_shortcut else ""
        return f"{self.in_channels} -> {self.out_channels}, stride={self.stride}, t={self.expand_ratio:g}{shortcut}"


def _check_setting(setting) -> tuple[tuple[int, int, int, int], ...]:
    rows = tuple(tuple(row) for row in setting) if isinstance(setting, (tuple, list)) else ()
    if not rows or any(len(row) != 4 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in row)
                       or row[3] not in (1, 2) for row in rows):
        raise ValueError("mobilenet_v2: inverted_residual_setting must be a non-empty list of (t, c, n, s) rows of "
                         f"positive ints with s 1 or 2, got {setting!r}")
    return rows


def mobilenet_v2(num_classes: int = 1000, width_mult: float = 1.0, input_shape: tuple[int, int, int] = (224, 224, 3),
                 dropout: float = 0.2, classifier_activation: str | None = None,
                 inverted_residual_setting: Sequence[Sequence[int]] = INVERTED_RESIDUAL_SETTING) -> nn.Sequential:
    """MobileNet v2 (unbuilt) in torchvision's layout; ``width_mult`` is the width multiplier
    alpha (channels rounded by :func:`make_divisible`). Outputs logits, as torchvision's,
    unless ``classifier_activation`` (e.g. 'softmax'). A 224x224 input leaves a 7x7x1280
    volume before the pooling; 3,504,872 parameters with alpha = 1 and 1000 classes.
    ``inverted_residual_setting`` lists the groups of blocks as (t, c, n, s) rows (default:
    the paper's seven, see the module docstring); the last 1x1 conv follows the last group."""
    if not width_mult > 0:
        raise ValueError(f"mobilenet_v2: width_mult must be positive, got {width_mult!r}")
    input_shape = check_input(input_shape, "mobilenet_v2")
    setting = _check_setting(inverted_residual_setting)
    channels = make_divisible(STEM_CHANNELS * width_mult)
    features: list = [conv_bn_relu6(channels, 3, stride=2)]
    for t, c, n, s in setting:
        out_channels = make_divisible(c * width_mult)
        for i in range(n):
            features.append(InvertedResidual(channels, out_channels, s if i == 0 else 1, t))
            channels = out_channels
    features.append(conv_bn_relu6(make_divisible(LAST_CHANNELS * max(1.0, width_mult)), 1))
    for i, layer in enumerate(features):
        layer.name = str(i)
    model = nn.Sequential(
        nn.Sequential(*features, name="features"),
        nn.GlobalAvgPool2D(name="avgpool"),
        nn.Sequential(nn.Dropout(dropout, name="0"), nn.Dense(num_classes, name="1"), name="classifier"),
        *classifier_layers(classifier_activation),
        name=f"mobilenet_v2_{width_mult:g}",
    )
    return finish(model, input_shape)
