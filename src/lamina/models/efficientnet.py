"""EfficientNet (Tan & Le 2019, "EfficientNet: Rethinking Model Scaling for Convolutional
Neural Networks") B0-B7 in torchvision's layout and names.

B0 is a network of MBConv blocks (MobileNet v2's inverted residual with squeeze-and-excitation
and SiLU, a = z sigma(z)):

    1x1 conv to t C_in channels - BN - SiLU            (left out when t = 1)
    k x k depthwise conv, stride s - BN - SiLU
    squeeze-and-excitation (C_sq = max(1, C_in / 4), SiLU inside, sigmoid gate)
    1x1 conv to C_out - BN
    + the input when s = 1 and C_in = C_out, the branch dropped per sample with the
      stochastic-depth probability p_l = 0.2 l / L of block l of the L blocks

The network: features.0 3x3/2 conv 32 - BN - SiLU; features.1..7 the seven stages of
:data:`EFFICIENTNET_STAGES` (t, k, s, C_in, C_out, n); features.8 1x1 conv to 4 C_last - BN -
SiLU; global average pooling; classifier.0 dropout - classifier.1 FC.

Compound scaling makes B1-B7 from B0: every channel count is multiplied by the width
coefficient (rounded to a multiple of 8 by :func:`lamina.models.make_divisible`) and every
stage's number of blocks by the depth coefficient (rounded up); the paper also scales the
input resolution, which the builders take as ``input_shape``. Parameters with 1000 classes:
B0 5,288,548; B1 7,794,184; B2 9,109,994; B3 12,233,232; B4 19,341,616; B5 30,389,784;
B6 43,040,704; B7 66,347,960.

EfficientNetV2 (Tan & Le 2021, "EfficientNetV2: Smaller Models and Faster Training") starts
with stages of FusedMBConv blocks, which replace the 1x1 expansion and the depthwise conv by
one full k x k conv (cheaper on accelerators for the large early maps):

    k x k conv to t C_in channels, stride s - BN - SiLU
    1x1 conv to C_out - BN                              (both become one k x k conv to C_out
                                                         - BN - SiLU when t = 1)
    + the input when s = 1 and C_in = C_out, with stochastic depth

followed by MBConv stages; the stem has C_in of the first stage channels, the last 1x1 conv
1280 (:data:`EFFICIENTNET_V2_STAGES`, BatchNorm eps 0.001). Parameters with 1000 classes:
V2-S 21,458,488; V2-M 54,139,356; V2-L 118,515,272.
"""

from __future__ import annotations

import math

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor
from lamina.models.blocks import Block, check_input, classifier_layers, finish, nhwc_channels
from lamina.models.mobilenet_v2 import make_divisible
from lamina.models.squeeze_excitation import SqueezeExcitation, conv_norm_activation
from lamina.nn.layer import register_layer

__all__ = ["EFFICIENTNET_SCALING", "EFFICIENTNET_STAGES", "EFFICIENTNET_V2_STAGES", "FusedMBConv", "MBConv",
           "efficientnet", "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3",
           "efficientnet_b4", "efficientnet_b5", "efficientnet_b6", "efficientnet_b7", "efficientnet_v2",
           "efficientnet_v2_l", "efficientnet_v2_m", "efficientnet_v2_s"]

# (expansion t, kernel k, stride s of the first block, C_in, C_out, blocks n) of B0
EFFICIENTNET_STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1),
)
# variant -> (width coefficient, depth coefficient, dropout before the classifier, native resolution)
EFFICIENTNET_SCALING: dict[str, tuple[float, float, float, int]] = {
    "b0": (1.0, 1.0, 0.2, 224), "b1": (1.0, 1.1, 0.2, 240), "b2": (1.1, 1.2, 0.3, 288),
    "b3": (1.2, 1.4, 0.3, 300), "b4": (1.4, 1.8, 0.4, 380), "b5": (1.6, 2.2, 0.4, 456),
    "b6": (1.8, 2.6, 0.5, 528), "b7": (2.0, 3.1, 0.5, 600),
}
# variant -> stages of (block "fused" or "mbconv", t, k, s, C_in, C_out, n), dropout, native resolution
EFFICIENTNET_V2_STAGES: dict[str, tuple[tuple[tuple[str, int, int, int, int, int, int], ...], float, int]] = {
    "s": ((("fused", 1, 3, 1, 24, 24, 2), ("fused", 4, 3, 2, 24, 48, 4), ("fused", 4, 3, 2, 48, 64, 4),
           ("mbconv", 4, 3, 2, 64, 128, 6), ("mbconv", 6, 3, 1, 128, 160, 9), ("mbconv", 6, 3, 2, 160, 256, 15)),
          0.2, 384),
    "m": ((("fused", 1, 3, 1, 24, 24, 3), ("fused", 4, 3, 2, 24, 48, 5), ("fused", 4, 3, 2, 48, 80, 5),
           ("mbconv", 4, 3, 2, 80, 160, 7), ("mbconv", 6, 3, 1, 160, 176, 14), ("mbconv", 6, 3, 2, 176, 304, 18),
           ("mbconv", 6, 3, 1, 304, 512, 5)), 0.3, 480),
    "l": ((("fused", 1, 3, 1, 32, 32, 4), ("fused", 4, 3, 2, 32, 64, 7), ("fused", 4, 3, 2, 64, 96, 7),
           ("mbconv", 4, 3, 2, 96, 192, 10), ("mbconv", 6, 3, 1, 192, 224, 19), ("mbconv", 6, 3, 2, 224, 384, 25),
           ("mbconv", 6, 3, 1, 384, 640, 7)), 0.4, 480),
}
V2_LAST_CHANNELS = 1280
# B5-B7 were trained with BatchNorm eps 0.001 and PyTorch's momentum 0.01
_LARGE_BN = {"eps": 1e-3, "momentum": 0.99}
_BN = {"eps": 1e-5, "momentum": 0.9}


class _ResidualBottleneck(Block):
    """What MBConv and FusedMBConv share: the branch ``block``, added to the input through
    ``stochastic_depth`` when ``use_shortcut``; the same arguments and config."""

    def trace(self, shape, step):
        shape = nhwc_channels(self, shape, self.in_channels)
        return step(self.block, shape)

    def forward(self, x) -> Tensor:
        out = self.block(x)
        return F.add(self.stochastic_depth(out), x) if self.use_shortcut else out

    def get_config(self) -> dict:
        return {"in_channels": self.in_channels, "out_channels": self.out_channels, "kernel_size": self.kernel_size,
                "stride": self.stride, "expand_ratio": self.expand_ratio,
                "stochastic_depth_prob": self.stochastic_depth.p, "eps": self.eps, "momentum": self.momentum,
                "name": self.name}

    def extra_repr(self) -> str:
        shortcut = f", shortcut (p={self.stochastic_depth.p:.3g})" if self.use_shortcut else ""
        return (f"{self.in_channels} -> {self.out_channels}, k={self.kernel_size}, stride={self.stride}, "
                f"t={self.expand_ratio:g}{shortcut}")


@register_layer
class MBConv(_ResidualBottleneck):
    """EfficientNet's mobile inverted bottleneck (see the module docstring): sub-layers
    ``block`` (a Sequential: [expansion to make_divisible(t C_in) channels when ``expand_ratio``
    != 1], the depthwise ``kernel_size`` conv with ``stride``, SqueezeExcitation, the 1x1
    projection) and ``stochastic_depth`` (drop probability ``stochastic_depth_prob``, on the
    residual branch when the shortcut applies). ``eps``, ``momentum``: the BatchNorms'."""

    default_name = "mbconv"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 expand_ratio: float = 6, stochastic_depth_prob: float = 0.0, eps: float = 1e-5,
                 momentum: float = 0.9, name: str | None = None):
        super().__init__(name=name)
        if stride not in (1, 2):
            raise ValueError(f"MBConv: stride must be 1 or 2, got {stride!r}")
        if not expand_ratio >= 1:
            raise ValueError(f"MBConv: expand_ratio must be at least 1, got {expand_ratio!r}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size, self.stride, self.expand_ratio = int(kernel_size), int(stride), expand_ratio
        self.eps, self.momentum = float(eps), float(momentum)
        self.use_shortcut = self.stride == 1 and self.in_channels == self.out_channels
        hidden = make_divisible(self.in_channels * expand_ratio)
        norm = {"eps": self.eps, "momentum": self.momentum}
        layers = []
        if hidden != self.in_channels:
            layers.append(conv_norm_activation(hidden, 1, activation="silu", **norm))
        layers += [conv_norm_activation(hidden, kernel_size, stride=stride, groups=hidden, activation="silu", **norm),
                   SqueezeExcitation(hidden, max(1, self.in_channels // 4), activation="silu"),
                   conv_norm_activation(out_channels, 1, activation=None, **norm)]
        for i, layer in enumerate(layers):
            layer.name = str(i)
        self.block = nn.Sequential(*layers, name="block")
        self.stochastic_depth = nn.StochasticDepth(stochastic_depth_prob, "row", name="stochastic_depth")


@register_layer
class FusedMBConv(_ResidualBottleneck):
    """EfficientNetV2's fused inverted bottleneck (see the module docstring): sub-layers
    ``block`` (a Sequential: the ``kernel_size`` conv with ``stride`` to make_divisible(t C_in)
    channels and the 1x1 projection, or one ``kernel_size`` conv to C_out when ``expand_ratio``
    is 1) and ``stochastic_depth``, as torchvision's ``FusedMBConv``. ``eps``, ``momentum``:
    the BatchNorms'."""

    default_name = "fused_mbconv"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 expand_ratio: float = 4, stochastic_depth_prob: float = 0.0, eps: float = 1e-5,
                 momentum: float = 0.9, name: str | None = None):
        super().__init__(name=name)
        if stride not in (1, 2):
            raise ValueError(f"FusedMBConv: stride must be 1 or 2, got {stride!r}")
        if not expand_ratio >= 1:
            raise ValueError(f"FusedMBConv: expand_ratio must be at least 1, got {expand_ratio!r}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size, self.stride, self.expand_ratio = int(kernel_size), int(stride), expand_ratio
        self.eps, self.momentum = float(eps), float(momentum)
        self.use_shortcut = self.stride == 1 and self.in_channels == self.out_channels
        hidden = make_divisible(self.in_channels * expand_ratio)
        norm = {"eps": self.eps, "momentum": self.momentum}
        if hidden != self.in_channels:
            layers = [conv_norm_activation(hidden, kernel_size, stride=stride, activation="silu", **norm),
                      conv_norm_activation(out_channels, 1, activation=None, **norm)]
        else:
            layers = [conv_norm_activation(out_channels, kernel_size, stride=stride, activation="silu", **norm)]
        for i, layer in enumerate(layers):
            layer.name = str(i)
        self.block = nn.Sequential(*layers, name="block")
        self.stochastic_depth = nn.StochasticDepth(stochastic_depth_prob, "row", name="stochastic_depth")


def _stages_network(stages, last_channels: int, num_classes: int, input_shape, dropout: float,
                    stochastic_depth_prob: float, classifier_activation: str | None, norm: dict,
                    name: str) -> nn.Sequential:
    """The EfficientNet layout for ``stages`` of (block class, t, k, s, C_in, C_out, n): stem 3x3/2
    conv to the first C_in, the stages (block l of L with stochastic depth p l / L), a 1x1 conv to
    ``last_channels``, pooling, dropout and the classifier."""
    total = sum(stage[-1] for stage in stages)
    features: list = [conv_norm_activation(stages[0][4], 3, stride=2, activation="silu", **norm)]
    index = 0
    for block, t, k, s, c_in, c_out, n in stages:
        blocks = []
        for i in range(n):
            p = stochastic_depth_prob * index / total
            blocks.append(block(c_in if i == 0 else c_out, c_out, k, s if i == 0 else 1, t, p, name=str(i), **norm))
            index += 1
        features.append(nn.Sequential(*blocks))
    features.append(conv_norm_activation(last_channels, 1, activation="silu", **norm))
    for i, layer in enumerate(features):
        layer.name = str(i)
    model = nn.Sequential(
        nn.Sequential(*features, name="features"),
        nn.GlobalAvgPool2D(name="avgpool"),
        nn.Sequential(nn.Dropout(dropout, name="0"), nn.Dense(num_classes, name="1"), name="classifier"),
        *classifier_layers(classifier_activation),
        name=name,
    )
    return finish(model, input_shape)


def _check_rates(name: str, dropout: float, stochastic_depth_prob: float) -> None:
    if not 0 <= dropout < 1:
        raise ValueError(f"{name}: dropout must be in [0, 1), got {dropout!r}")
    if not 0 <= stochastic_depth_prob < 1:
        raise ValueError(f"{name}: stochastic_depth_prob must be in [0, 1), got {stochastic_depth_prob!r}")


def efficientnet(width_mult: float = 1.0, depth_mult: float = 1.0, num_classes: int = 1000,
                 input_shape: tuple[int, int, int] = (224, 224, 3), dropout: float = 0.2,
                 stochastic_depth_prob: float = 0.2, classifier_activation: str | None = None,
                 eps: float = 1e-5, momentum: float = 0.9, name: str = "efficientnet") -> nn.Sequential:
    """An EfficientNet (unbuilt) in torchvision's layout: B0's stages with channels scaled by
    ``width_mult`` and blocks by ``depth_mult`` (see the module docstring); block l of L gets
    the stochastic-depth probability ``stochastic_depth_prob`` l / L. Outputs logits unless
    ``classifier_activation``."""
    for what, value in (("width_mult", width_mult), ("depth_mult", depth_mult)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name}: {what} must be a positive number, got {value!r}")
    _check_rates(name, dropout, stochastic_depth_prob)
    input_shape = check_input(input_shape, name)

    def scaled(channels: int) -> int:
        return make_divisible(channels * width_mult)

    stages = [(MBConv, t, k, s, scaled(c_in), scaled(c_out), int(math.ceil(n * depth_mult)))
              for t, k, s, c_in, c_out, n in EFFICIENTNET_STAGES]
    return _stages_network(stages, 4 * stages[-1][5], num_classes, input_shape, dropout, stochastic_depth_prob,
                           classifier_activation, {"eps": eps, "momentum": momentum}, name)


def _variant(variant: str, num_classes: int, input_shape, stochastic_depth_prob: float,
             classifier_activation: str | None) -> nn.Sequential:
    width, depth, dropout, _ = EFFICIENTNET_SCALING[variant]
    norm = _LARGE_BN if variant in ("b5", "b6", "b7") else _BN
    return efficientnet(width, depth, num_classes, input_shape, dropout, stochastic_depth_prob,
                        classifier_activation, name=f"efficientnet_{variant}", **norm)


def efficientnet_b0(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                    stochastic_depth_prob: float = 0.2, classifier_activation: str | None = None) -> nn.Sequential:
    """EfficientNet-B0: 16 MBConv blocks; 5,288,548 parameters with 1000 classes (about 0.39 G
    multiply-adds at 224x224)."""
    return _variant("b0", num_classes, input_shape, stochastic_depth_prob, classifier_activation)


def efficientnet_b1(num_classes: int = 1000, input_shape: tuple[int, int, int] = (240, 240, 3),
                    stochastic_depth_prob: float = 0.2, classifier_activation: str | None = None) -> nn.Sequential:
    """EfficientNet-B1 (width 1.0, depth 1.1, 240x240): 7,794,184 parameters with 1000 classes."""
    return _variant("b1", num_classes, input_shape, stochastic_depth_prob, classifier_activation)


def efficientnet_b2(num_classes: int = 1000, input_shape: tuple[int, int, int] = (288, 288, 3),
                    stochastic_depth_prob: float = 0.2, classifier_activation: str | None = None) -> nn.Sequential:
    """EfficientNet-B2 (width 1.1, depth 1.2, 288x288): 9,109,994 parameters with 1000 classes."""
    return _variant("b2", num_classes, input_shape, stochastic_depth_prob, classifier_activation)


def efficientnet_b3(num_classes: int = 1000, input_shape: tuple[int, int, int] = (300, 300, 3),
                    stochastic_depth_prob: float = 0.2, classifier_activation: str | None = None) -> nn.Sequential:
    """EfficientNet-B3 (width 1.2, depth 1.4, 300x300): 12,233,232 parameters with 1000 classes."""
    return _variant("b3", num_classes, input_shape, stochastic_depth_prob, classifier_activation)


def efficientnet_b4(num_classes: int = 1000, input_shape: tuple[int, int, int] = (380, 380, 3),
                    stochastic_depth_prob: float = 0.2, classifier_activation: str | None = None) -> nn.Sequential:
    """EfficientNet-B4 (width 1.4, depth 1.8, 380x380): 19,341,616 parameters with 1000 classes."""
    return _variant("b4", num_classes, input_shape, stochastic_depth_prob, classifier_activation)


def efficientnet_b5(num_classes: int = 1000, input_shape: tuple[int, int, int] = (456, 456, 3),
                    stochastic_depth_prob: float = 0.2, classifier_activation: str | None = None) -> nn.Sequential:
    """EfficientNet-B5 (width 1.6, depth 2.2, 456x456; BN eps 0.001): 30,389,784 parameters."""
    return _variant("b5", num_classes, input_shape, stochastic_depth_prob, classifier_activation)


def efficientnet_b6(num_classes: int = 1000, input_shape: tuple[int, int, int] = (528, 528, 3),
                    stochastic_depth_prob: float = 0.2, classifier_activation: str | None = None) -> nn.Sequential:
    """EfficientNet-B6 (width 1.8, depth 2.6, 528x528; BN eps 0.001): 43,040,704 parameters."""
    return _variant("b6", num_classes, input_shape, stochastic_depth_prob, classifier_activation)


def efficientnet_b7(num_classes: int = 1000, input_shape: tuple[int, int, int] = (600, 600, 3),
                    stochastic_depth_prob: float = 0.2, classifier_activation: str | None = None) -> nn.Sequential:
    """EfficientNet-B7 (width 2.0, depth 3.1, 600x600; BN eps 0.001): 66,347,960 parameters."""
    return _variant("b7", num_classes, input_shape, stochastic_depth_prob, classifier_activation)


def efficientnet_v2(variant: str = "s", num_classes: int = 1000, input_shape: tuple[int, int, int] | None = None,
                    dropout: float | None = None, stochastic_depth_prob: float = 0.2,
                    classifier_activation: str | None = None) -> nn.Sequential:
    """EfficientNetV2-S, -M or -L (``variant`` 's', 'm', 'l'; unbuilt) in torchvision's layout:
    the FusedMBConv and MBConv stages of :data:`EFFICIENTNET_V2_STAGES`, BatchNorm eps 0.001.
    ``input_shape`` defaults to the variant's native resolution and ``dropout`` to its rate
    (0.2, 0.3, 0.4). Outputs logits unless ``classifier_activation``."""
    if variant not in EFFICIENTNET_V2_STAGES:
        raise ValueError(f"efficientnet_v2: variant must be one of {sorted(EFFICIENTNET_V2_STAGES)}, got {variant!r}")
    rows, default_dropout, resolution = EFFICIENTNET_V2_STAGES[variant]
    name = f"efficientnet_v2_{variant}"
    dropout = default_dropout if dropout is None else dropout
    _check_rates(name, dropout, stochastic_depth_prob)
    input_shape = check_input((resolution, resolution, 3) if input_shape is None else input_shape, name)
    blocks = {"fused": FusedMBConv, "mbconv": MBConv}
    stages = [(blocks[kind], *row) for kind, *row in rows]
    return _stages_network(stages, V2_LAST_CHANNELS, num_classes, input_shape, dropout, stochastic_depth_prob,
                           classifier_activation, {"eps": 1e-3, "momentum": 0.9}, name)


def efficientnet_v2_s(num_classes: int = 1000, input_shape: tuple[int, int, int] = (384, 384, 3),
                      stochastic_depth_prob: float = 0.2, classifier_activation: str | None = None) -> nn.Sequential:
    """EfficientNetV2-S (384x384): 40 blocks; 21,458,488 parameters with 1000 classes (about 8.4 G
    multiply-adds)."""
    return efficientnet_v2("s", num_classes, input_shape, None, stochastic_depth_prob, classifier_activation)


def efficientnet_v2_m(num_classes: int = 1000, input_shape: tuple[int, int, int] = (480, 480, 3),
                      stochastic_depth_prob: float = 0.2, classifier_activation: str | None = None) -> nn.Sequential:
    """EfficientNetV2-M (480x480): 57 blocks; 54,139,356 parameters with 1000 classes (about 24.6 G
    multiply-adds)."""
    return efficientnet_v2("m", num_classes, input_shape, None, stochastic_depth_prob, classifier_activation)


def efficientnet_v2_l(num_classes: int = 1000, input_shape: tuple[int, int, int] = (480, 480, 3),
                      stochastic_depth_prob: float = 0.2, classifier_activation: str | None = None) -> nn.Sequential:
    """EfficientNetV2-L (480x480): 79 blocks; 118,515,272 parameters with 1000 classes (about 56.1 G
    multiply-adds)."""
    return efficientnet_v2("l", num_classes, input_shape, None, stochastic_depth_prob, classifier_activation)
