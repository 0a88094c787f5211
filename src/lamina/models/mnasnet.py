"""MnasNet (Tan et al. 2019, "MnasNet: Platform-Aware Neural Architecture Search for Mobile")
in torchvision's layout and names.

The searched network is a stack of inverted residual blocks (MobileNet v2's, with ReLU and
kernels of 3 or 5):

    1x1 conv to t C_in channels - BN - ReLU
    k x k depthwise conv, stride s - BN - ReLU
    1x1 conv to C_out - BN                          (linear bottleneck)
    + the input when s = 1 and C_in = C_out

The network (``layers``, one flat Sequential as torchvision's):

    layers.0-2   3x3/2 conv d_0 - BN - ReLU
    layers.3-7   3x3 depthwise conv - BN - ReLU - 1x1 conv d_1 - BN   (a separable conv, no shortcut)
    layers.8-13  six stacks (k, s, t, n): (3, 2, 3, 3), (5, 2, 3, 3), (5, 2, 6, 3), (3, 1, 6, 2),
                 (5, 2, 6, 4), (3, 1, 6, 1) to d_2 .. d_7 channels
    layers.14-16 1x1 conv 1280 - BN - ReLU
    global average pooling - classifier.0 dropout - classifier.1 FC

The depth multiplier alpha scales the widths d = (32, 16, 24, 40, 80, 96, 192, 320) to the
nearest multiple of 8 (never more than 10% below; :func:`lamina.models.make_divisible`); the
last conv keeps 1280 channels. BatchNorm uses PyTorch's momentum 0.0003 (lamina's 0.9997).
Parameters with 1000 classes: alpha 0.5 2,218,512; 0.75 3,170,208; 1.0 4,383,312; 1.3 6,282,256.
"""

from __future__ import annotations

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor
from lamina.models.blocks import Block, check_input, classifier_layers, finish, nhwc_channels
from lamina.models.mobilenet_v2 import make_divisible
from lamina.nn.layer import register_layer

__all__ = ["MNASNET_STACKS", "MNASNET_WIDTHS", "MnasNetBlock", "mnasnet", "mnasnet0_5", "mnasnet0_75",
           "mnasnet1_0", "mnasnet1_3"]

MNASNET_WIDTHS: tuple[int, ...] = (32, 16, 24, 40, 80, 96, 192, 320)
# (kernel k, stride s of the first block, expansion t, blocks n) of the six stacks
MNASNET_STACKS: tuple[tuple[int, int, int, int], ...] = (
    (3, 2, 3, 3), (5, 2, 3, 3), (5, 2, 6, 3), (3, 1, 6, 2), (5, 2, 6, 4), (3, 1, 6, 1),
)
LAST_CHANNELS = 1280
BN_MOMENTUM = 0.9997  # PyTorch's 0.0003


def _conv(filters: int, kernel_size: int, stride: int = 1, groups: int = 1, name: str | None = None) -> nn.Conv2D:
    return nn.Conv2D(filters, kernel_size, stride=stride, padding=kernel_size // 2, groups=groups, use_bias=False,
                     name=name)


def _bn(momentum: float, name: str | None = None) -> nn.BatchNorm:
    return nn.BatchNorm(momentum=momentum, eps=1e-5, name=name)


@register_layer
class MnasNetBlock(Block):
    """MnasNet's inverted residual (torchvision's ``_InvertedResidual``; see the module
    docstring): sub-layer ``layers``, a Sequential of 1x1 conv, BN, ReLU, depthwise
    ``kernel_size`` conv with ``stride``, BN, ReLU, 1x1 conv, BN named '0' .. '7', with
    ``expansion`` t C_in hidden channels. ``momentum``: the BatchNorms' (lamina's convention)."""

    default_name = "mnasnet_block"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 expansion: int = 6, momentum: float = 0.9, name: str | None = None):
        super().__init__(name=name)
        if stride not in (1, 2):
            raise ValueError(f"MnasNetBlock: stride must be 1 or 2, got {stride!r}")
        if kernel_size not in (3, 5):
            raise ValueError(f"MnasNetBlock: kernel_size must be 3 or 5, got {kernel_size!r}")
        if isinstance(expansion, bool) or not isinstance(expansion, int) or expansion < 1:
            raise ValueError(f"MnasNetBlock: expansion must be a positive int, got {expansion!r}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size, self.stride, self.expansion = int(kernel_size), int(stride), expansion
        self.momentum = float(momentum)
        self.use_shortcut = self.stride == 1 and self.in_channels == self.out_channels
        hidden = self.in_channels * expansion
        layers = [_conv(hidden, 1), _bn(momentum), nn.ReLU(),
                  _conv(hidden, kernel_size, stride, groups=hidden), _bn(momentum), nn.ReLU(),
                  _conv(out_channels, 1), _bn(momentum)]
        for i, layer in enumerate(layers):
            layer.name = str(i)
        self.layers = nn.Sequential(*layers, name="layers")

    def trace(self, shape, step):
        return step(self.layers, nhwc_channels(self, shape, self.in_channels))

    def forward(self, x) -> Tensor:
        out = self.layers(x)
        return F.add(out, x) if self.use_shortcut else out

    def get_config(self) -> dict:
        return {"in_channels": self.in_channels, "out_channels": self.out_channels, "kernel_size": self.kernel_size,
                "stride": self.stride, "expansion": self.expansion, "momentum": self.momentum, "name": self.name}

    def extra_repr(self) -> str:
        shortcut = ", shortcut" if self.use_shortcut else ""
        return (f"{self.in_channels} -> {self.out_channels}, k={self.kernel_size}, stride={self.stride}, "
                f"t={self.expansion}{shortcut}")


def mnasnet_widths(alpha: float) -> tuple[int, ...]:
    """The eight widths d_0 .. d_7 for depth multiplier ``alpha`` (see the module docstring)."""
    return tuple(make_divisible(width * alpha) for width in MNASNET_WIDTHS)


def mnasnet(alpha: float = 1.0, num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
            dropout: float = 0.2, classifier_activation: str | None = None, name: str = "mnasnet") -> nn.Sequential:
    """MnasNet-A1 without squeeze-and-excitation (torchvision's ``MNASNet``; unbuilt) with depth
    multiplier ``alpha`` (see the module docstring). Outputs logits unless ``classifier_activation``."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ValueError(f"mnasnet: alpha must be a positive number, got {alpha!r}")
    if not 0 <= dropout < 1:
        raise ValueError(f"mnasnet: dropout must be in [0, 1), got {dropout!r}")
    input_shape = check_input(input_shape, "mnasnet")
    widths = mnasnet_widths(alpha)
    m = BN_MOMENTUM
    layers: list = [_conv(widths[0], 3, 2), _bn(m), nn.ReLU(),
                    _conv(widths[0], 3, groups=widths[0]), _bn(m), nn.ReLU(),
                    _conv(widths[1], 1), _bn(m)]
    for (k, s, t, n), c_in, c_out in zip(MNASNET_STACKS, widths[1:], widths[2:]):
        layers.append(nn.Sequential(*[MnasNetBlock(c_in if i == 0 else c_out, c_out, k, s if i == 0 else 1, t, m,
                                                   name=str(i)) for i in range(n)]))
    layers += [_conv(LAST_CHANNELS, 1), _bn(m), nn.ReLU()]
    for i, layer in enumerate(layers):
        layer.name = str(i)
    model = nn.Sequential(
        nn.Sequential(*layers, name="layers"),
        nn.GlobalAvgPool2D(name="avgpool"),
        nn.Sequential(nn.Dropout(dropout, name="0"), nn.Dense(num_classes, name="1"), name="classifier"),
        *classifier_layers(classifier_activation),
        name=name,
    )
    return finish(model, input_shape)


def mnasnet0_5(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
               classifier_activation: str | None = None) -> nn.Sequential:
    """MnasNet with alpha 0.5: 2,218,512 parameters with 1000 classes (about 0.10 G multiply-adds)."""
    return mnasnet(0.5, num_classes, input_shape, classifier_activation=classifier_activation,
                   name="mnasnet0_5")


def mnasnet0_75(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                classifier_activation: str | None = None) -> nn.Sequential:
    """MnasNet with alpha 0.75: 3,170,208 parameters with 1000 classes (about 0.21 G multiply-adds)."""
    return mnasnet(0.75, num_classes, input_shape, classifier_activation=classifier_activation,
                   name="mnasnet0_75")


def mnasnet1_0(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
               classifier_activation: str | None = None) -> nn.Sequential:
    """MnasNet with alpha 1.0: 4,383,312 parameters with 1000 classes (about 0.31 G multiply-adds)."""
    return mnasnet(1.0, num_classes, input_shape, classifier_activation=classifier_activation,
                   name="mnasnet1_0")


def mnasnet1_3(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
               classifier_activation: str | None = None) -> nn.Sequential:
    """MnasNet with alpha 1.3: 6,282,256 parameters with 1000 classes (about 0.53 G multiply-adds)."""
    return mnasnet(1.3, num_classes, input_shape, classifier_activation=classifier_activation,
                   name="mnasnet1_3")
