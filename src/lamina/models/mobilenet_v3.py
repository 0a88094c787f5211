"""MobileNet v3 (Howard et al. 2019, "Searching for MobileNetV3") in torchvision's layout and
names.

The block is MobileNet v2's inverted residual with two additions found by architecture
search: a squeeze-and-excitation block after the depthwise convolution in some blocks
(:class:`lamina.models.SqueezeExcitation` with a hard-sigmoid gate and C_sq = C_exp / 4
rounded to a multiple of 8), and the hard swish h(z) = z relu6(z + 3) / 6, a cheap
approximation of z sigma(z), instead of ReLU in the deeper blocks:

    1x1 conv to C_exp - BN - act                (left out when C_exp = C_in)
    k x k depthwise conv, stride s - BN - act   (k = 3 or 5)
    squeeze-and-excitation                      (some blocks)
    1x1 conv to C_out - BN                      (linear bottleneck)
    + the input when s = 1 and C_in = C_out

The network: features.0 3x3/2 conv 16 - BN - hard swish; features.1..n the blocks of the
table (:data:`MOBILENET_V3_LARGE`, :data:`MOBILENET_V3_SMALL`); a 1x1 conv to 6 C_last
channels - BN - hard swish; global average pooling; classifier.0 FC (1280 or 1024) - hard
swish - dropout - FC. BatchNorm uses eps 0.001 and PyTorch's momentum 0.01. Channel counts
are scaled by ``width_mult`` and rounded by :func:`lamina.models.make_divisible`.
Parameters with 1000 classes: large 5,483,032; small 2,542,856.
"""

from __future__ import annotations

from collections.abc import Sequence

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor
from lamina.models.blocks import Block, check_input, classifier_layers, finish, nhwc_channels
from lamina.models.mobilenet_v2 import make_divisible
from lamina.models.squeeze_excitation import SqueezeExcitation, conv_norm_activation
from lamina.nn.layer import register_layer

__all__ = ["MOBILENET_V3_LARGE", "MOBILENET_V3_SMALL", "MobileNetV3Block", "mobilenet_v3", "mobilenet_v3_large",
           "mobilenet_v3_small"]

# (C_in, kernel, C_exp, C_out, squeeze-and-excitation, activation, stride)
MOBILENET_V3_LARGE: tuple[tuple, ...] = (
    (16, 3, 16, 16, False, "relu", 1), (16, 3, 64, 24, False, "relu", 2), (24, 3, 72, 24, False, "relu", 1),
    (24, 5, 72, 40, True, "relu", 2), (40, 5, 120, 40, True, "relu", 1), (40, 5, 120, 40, True, "relu", 1),
    (40, 3, 240, 80, False, "hard_swish", 2), (80, 3, 200, 80, False, "hard_swish", 1),
    (80, 3, 184, 80, False, "hard_swish", 1), (80, 3, 184, 80, False, "hard_swish", 1),
    (80, 3, 480, 112, True, "hard_swish", 1), (112, 3, 672, 112, True, "hard_swish", 1),
    (112, 5, 672, 160, True, "hard_swish", 2), (160, 5, 960, 160, True, "hard_swish", 1),
    (160, 5, 960, 160, True, "hard_swish", 1),
)
MOBILENET_V3_SMALL: tuple[tuple, ...] = (
    (16, 3, 16, 16, True, "relu", 2), (16, 3, 72, 24, False, "relu", 2), (24, 3, 88, 24, False, "relu", 1),
    (24, 5, 96, 40, True, "hard_swish", 2), (40, 5, 240, 40, True, "hard_swish", 1),
    (40, 5, 240, 40, True, "hard_swish", 1), (40, 5, 120, 48, True, "hard_swish", 1),
    (48, 5, 144, 48, True, "hard_swish", 1), (48, 5, 288, 96, True, "hard_swish", 2),
    (96, 5, 576, 96, True, "hard_swish", 1), (96, 5, 576, 96, True, "hard_swish", 1),
)
LAST_CHANNELS = {"large": 1280, "small": 1024}
BN_EPS, BN_MOMENTUM = 1e-3, 0.99          # PyTorch's momentum 0.01


@register_layer
class MobileNetV3Block(Block):
    """MobileNet v3's inverted residual (see the module docstring): sub-layer ``block``, a
    Sequential of [the expansion (when ``expanded_channels`` != ``in_channels``)], the
    depthwise ``kernel_size`` conv with ``stride``, [SqueezeExcitation when ``use_se``] and the
    1x1 projection, each conv followed by BN and ``activation`` ('relu' or 'hard_swish') but
    the projection. The input is added when ``stride`` is 1 and ``in_channels`` = ``out_channels``.
    A ``dilation`` above 1 dilates the depthwise conv and runs it with stride 1 (torchvision's
    dilated MobileNet v3, used by the segmentation models)."""

    default_name = "mobilenet_v3_block"

    def __init__(self, in_channels: int, kernel_size: int, expanded_channels: int, out_channels: int,
                 use_se: bool, activation: str = "relu", stride: int = 1, name: str | None = None,
                 dilation: int = 1):
        super().__init__(name=name)
        if stride not in (1, 2):
            raise ValueError(f"MobileNetV3Block: stride must be 1 or 2, got {stride!r}")
        if activation not in ("relu", "hard_swish"):
            raise ValueError(f"MobileNetV3Block: activation must be 'relu' or 'hard_swish', got {activation!r}")
        self.in_channels, self.kernel_size = int(in_channels), int(kernel_size)
        self.expanded_channels, self.out_channels = int(expanded_channels), int(out_channels)
        if isinstance(dilation, bool) or not isinstance(dilation, int) or dilation < 1:
            raise ValueError(f"MobileNetV3Block: dilation must be a positive int, got {dilation!r}")
        self.use_se, self.activation, self.stride, self.dilation = bool(use_se), activation, int(stride), dilation
        self.use_shortcut = self.stride == 1 and self.in_channels == self.out_channels
        norm = {"eps": BN_EPS, "momentum": BN_MOMENTUM}
        hidden = self.expanded_channels
        layers = []
        if hidden != self.in_channels:
            layers.append(conv_norm_activation(hidden, 1, activation=activation, **norm))
        layers.append(conv_norm_activation(hidden, kernel_size, stride=1 if dilation > 1 else stride, groups=hidden,
                                           activation=activation, dilation=dilation, **norm))
        if self.use_se:
            layers.append(SqueezeExcitation(hidden, make_divisible(hidden // 4), scale_activation="hard_sigmoid"))
        layers.append(conv_norm_activation(out_channels, 1, activation=None, **norm))
        for i, layer in enumerate(layers):
            layer.name = str(i)
        self.block = nn.Sequential(*layers, name="block")

    def trace(self, shape, step):
        shape = nhwc_channels(self, shape, self.in_channels)
        return step(self.block, shape)

    def forward(self, x) -> Tensor:
        out = self.block(x)
        return F.add(out, x) if self.use_shortcut else out

    def get_config(self) -> dict:
        return {"in_channels": self.in_channels, "kernel_size": self.kernel_size,
                "expanded_channels": self.expanded_channels, "out_channels": self.out_channels,
                "use_se": self.use_se, "activation": self.activation, "stride": self.stride, "name": self.name,
                "dilation": self.dilation}

    def extra_repr(self) -> str:
        se = ", SE" if self.use_se else ""
        dilation = f", dilation={self.dilation}" if self.dilation > 1 else ""
        return (f"{self.in_channels} -> {self.expanded_channels} -> {self.out_channels}, k={self.kernel_size}, "
                f"stride={self.stride}{dilation}, {self.activation}{se}")


def _check_setting(setting: Sequence[Sequence]) -> tuple[tuple, ...]:
    rows = tuple(tuple(row) for row in setting) if isinstance(setting, (tuple, list)) else ()
    good = rows and all(len(row) == 7 and all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                              for v in (row[0], row[1], row[2], row[3]))
                        and row[6] in (1, 2) and row[5] in ("relu", "hard_swish") for row in rows)
    if not good:
        raise ValueError("mobilenet_v3: setting must be a non-empty list of (C_in, kernel, C_exp, C_out, use_se, "
                         "activation, stride) rows, activation 'relu' or 'hard_swish' and stride 1 or 2, "
                         f"got {setting!r}")
    return rows


def mobilenet_v3(arch: str = "large", num_classes: int = 1000, width_mult: float = 1.0,
                 input_shape: tuple[int, int, int] = (224, 224, 3), dropout: float = 0.2,
                 classifier_activation: str | None = None, setting: Sequence[Sequence] | None = None,
                 dilated: bool = False) -> nn.Sequential:
    """MobileNet v3 ``arch`` 'large' or 'small' (unbuilt) in torchvision's layout; ``width_mult``
    scales every channel count (rounded to multiples of 8). Outputs logits unless
    ``classifier_activation``. ``setting`` replaces the architecture's table of blocks
    (rows as :data:`MOBILENET_V3_LARGE`'s, channel counts before ``width_mult``). ``dilated``
    gives the last three blocks dilation 2 and stride 1 (output stride 16, torchvision's
    ``dilated=True`` for LR-ASPP)."""
    if arch not in LAST_CHANNELS:
        raise ValueError(f"mobilenet_v3: arch must be 'large' or 'small', got {arch!r}")
    if not width_mult > 0:
        raise ValueError(f"mobilenet_v3: width_mult must be positive, got {width_mult!r}")
    if not 0 <= dropout < 1:
        raise ValueError(f"mobilenet_v3: dropout must be in [0, 1), got {dropout!r}")
    name = f"mobilenet_v3_{arch}"
    input_shape = check_input(input_shape, name)
    rows = _check_setting(setting if setting is not None else
                          (MOBILENET_V3_LARGE if arch == "large" else MOBILENET_V3_SMALL))
    norm = {"eps": BN_EPS, "momentum": BN_MOMENTUM}

    def scaled(channels: int) -> int:
        return make_divisible(channels * width_mult)

    features: list = [conv_norm_activation(scaled(rows[0][0]), 3, stride=2, activation="hard_swish", **norm)]
    for i, (c_in, kernel, c_exp, c_out, use_se, activation, stride) in enumerate(rows):
        dilation = 2 if dilated and i >= len(rows) - 3 else 1
        features.append(MobileNetV3Block(scaled(c_in), kernel, scaled(c_exp), scaled(c_out), use_se, activation,
                                         stride, dilation=dilation))
    last_conv = 6 * scaled(rows[-1][3])
    features.append(conv_norm_activation(last_conv, 1, activation="hard_swish", **norm))
    for i, layer in enumerate(features):
        layer.name = str(i)
    model = nn.Sequential(
        nn.Sequential(*features, name="features"),
        nn.GlobalAvgPool2D(name="avgpool"),
        nn.Sequential(nn.Dense(scaled(LAST_CHANNELS[arch]), name="0"), nn.HardSwish(name="1"),
                      nn.Dropout(dropout, name="2"), nn.Dense(num_classes, name="3"), name="classifier"),
        *classifier_layers(classifier_activation),
        name=name,
    )
    return finish(model, input_shape)


def mobilenet_v3_large(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                       width_mult: float = 1.0, dropout: float = 0.2,
                       classifier_activation: str | None = None) -> nn.Sequential:
    """MobileNet v3 large: 15 blocks, a 960-channel last conv, 1280 hidden units before the
    classifier; 5,483,032 parameters with 1000 classes (about 217 M multiply-adds at 224x224)."""
    return mobilenet_v3("large", num_classes, width_mult, input_shape, dropout, classifier_activation)


def mobilenet_v3_small(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                       width_mult: float = 1.0, dropout: float = 0.2,
                       classifier_activation: str | None = None) -> nn.Sequential:
    """MobileNet v3 small: 11 blocks, a 576-channel last conv, 1024 hidden units before the
    classifier; 2,542,856 parameters with 1000 classes (about 57 M multiply-adds at 224x224)."""
    return mobilenet_v3("small", num_classes, width_mult, input_shape, dropout, classifier_activation)
