"""GhostNet (Han, Wang, Tian, Guo, Xu, Xu 2020, "GhostNet: More Features from Cheap
Operations") in the reference implementation's layout and names.

A Ghost module makes C_out feature maps for the price of about C_out / ratio ordinary ones:

    primary = act(BN(conv_k(x)))               m = ceil(C_out / ratio) intrinsic maps (1x1 by default)
    ghosts  = act(BN(depthwise_d(primary)))    (ratio - 1) cheap maps from each intrinsic one (3x3)
    out     = [primary, ghosts][..., :C_out]   (concatenated along the channels)

A Ghost bottleneck is MobileNet v3's inverted residual with Ghost modules for the 1x1
convolutions:

    Ghost module (expand to C_mid, ReLU)
    depthwise k x k conv, stride 2 - BN         (only in the blocks of stride 2)
    squeeze-and-excitation                      (some blocks: C_mid / 4 rounded to a multiple of 4, hard sigmoid)
    Ghost module (project to C_out, no activation)
    + shortcut: the input, or depthwise k x k (stride s) - BN - 1x1 conv - BN when the shape changes

The network: conv_stem 3x3/2 to 16 - BN - ReLU; 16 Ghost bottlenecks (:data:`GHOSTNET_CONFIG`)
in 9 stages and a 1x1 conv-BN-ReLU to 960; global average pooling; conv_head 1x1 to 1280 (with
bias) - ReLU - dropout - classifier. Channels are scaled by ``width`` and rounded to multiples
of 4. GhostNet 1.0x has 5,182,508 parameters with 1000 classes (the paper's 5.2 M).
"""

from __future__ import annotations

import math

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor
from lamina.models.blocks import Block, nhwc, nhwc_channels, residual_sum
from lamina.models.squeeze_excitation import SqueezeExcitation, conv_norm_activation
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int

__all__ = ["GHOSTNET_CONFIG", "GhostBottleneck", "GhostModule", "GhostNet", "ghostnet_0_5", "ghostnet_1_0",
           "ghostnet_1_3", "make_divisible_by"]

# stages of (kernel, C_mid, C_out, SE ratio, stride) rows, channels before the width multiplier
GHOSTNET_CONFIG: tuple[tuple[tuple, ...], ...] = (
    ((3, 16, 16, 0.0, 1),),
    ((3, 48, 24, 0.0, 2),),
    ((3, 72, 24, 0.0, 1),),
    ((5, 72, 40, 0.25, 2),),
    ((5, 120, 40, 0.25, 1),),
    ((3, 240, 80, 0.0, 2),),
    ((3, 200, 80, 0.0, 1), (3, 184, 80, 0.0, 1), (3, 184, 80, 0.0, 1), (3, 480, 112, 0.25, 1),
     (3, 672, 112, 0.25, 1)),
    ((5, 672, 160, 0.25, 2),),
    ((5, 960, 160, 0.0, 1), (5, 960, 160, 0.25, 1), (5, 960, 160, 0.0, 1), (5, 960, 160, 0.25, 1)),
)


def make_divisible_by(value: float, divisor: int = 4) -> int:
    """``value`` rounded to the nearest multiple of ``divisor`` (at least ``divisor``), raised
    by one ``divisor`` when rounding lost more than 10%."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


@register_with_arguments
class GhostModule(Block):
    """A Ghost module (module docstring): ``out_channels`` maps from ceil(out_channels / ratio)
    intrinsic ones (``primary_conv``: ``kernel_size`` conv with ``stride`` - BN [- ReLU]) and
    their cheap ``dw_size`` depthwise transforms (``cheap_operation``: conv - BN [- ReLU]); ReLU
    when ``relu``."""

    default_name = "ghost_module"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, ratio: int = 2,
                 dw_size: int = 3, stride: int = 1, relu: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.in_channels = positive_int(in_channels, "GhostModule: in_channels")
        self.out_channels = positive_int(out_channels, "GhostModule: out_channels")
        if isinstance(ratio, bool) or not isinstance(ratio, int) or ratio < 2:
            raise ValueError(f"GhostModule: ratio must be an int >= 2, got {ratio!r}")
        init_channels = math.ceil(out_channels / ratio)
        activation = "relu" if relu else None
        self.primary_conv = conv_norm_activation(init_channels, kernel_size, stride=stride, activation=activation,
                                                 name="primary_conv")
        self.cheap_operation = conv_norm_activation(init_channels * (ratio - 1), dw_size, groups=init_channels,
                                                    activation=activation, name="cheap_operation")

    def trace(self, shape, step):
        shape = nhwc_channels(self, shape, self.in_channels)
        primary = step(self.primary_conv, shape)
        step(self.cheap_operation, primary)
        return (*primary[:3], self.out_channels)

    def forward(self, x) -> Tensor:
        primary = self.primary_conv(x)
        out = F.concat([primary, self.cheap_operation(primary)], axis=3)
        return F.getitem(out, (Ellipsis, slice(0, self.out_channels)))

    def extra_repr(self) -> str:
        return f"{self.in_channels} -> {self.out_channels}"


@register_with_arguments
class GhostBottleneck(Block):
    """A Ghost bottleneck (module docstring): ``ghost1`` to ``mid_channels``, [``conv_dw`` -
    ``bn_dw`` when ``stride`` is 2], [``se`` when ``se_ratio`` > 0], ``ghost2`` to
    ``out_channels``, plus the input or the ``shortcut`` Sequential."""

    default_name = "ghost_bottleneck"

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, dw_kernel_size: int = 3,
                 stride: int = 1, se_ratio: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        if stride not in (1, 2):
            raise ValueError(f"GhostBottleneck: stride must be 1 or 2, got {stride!r}")
        if not 0 <= se_ratio <= 1:
            raise ValueError(f"GhostBottleneck: se_ratio must be in [0, 1], got {se_ratio!r}")
        self.in_channels = positive_int(in_channels, "GhostBottleneck: in_channels")
        self.out_channels, self.stride = out_channels, stride
        self.ghost1 = GhostModule(in_channels, mid_channels, relu=True, name="ghost1")
        if stride > 1:
            self.conv_dw = nn.Conv2D(mid_channels, dw_kernel_size, stride=stride, padding=(dw_kernel_size - 1) // 2,
                                     groups=mid_channels, use_bias=False, name="conv_dw")
            self.bn_dw = nn.BatchNorm(name="bn_dw")
        self.has_se = se_ratio > 0
        if self.has_se:
            self.se = SqueezeExcitation(mid_channels, make_divisible_by(mid_channels * se_ratio),
                                        scale_activation="hard_sigmoid", name="se")
        self.ghost2 = GhostModule(mid_channels, out_channels, relu=False, name="ghost2")
        self.identity_shortcut = stride == 1 and in_channels == out_channels
        if not self.identity_shortcut:
            self.shortcut = nn.Sequential(
                nn.Conv2D(in_channels, dw_kernel_size, stride=stride, padding=(dw_kernel_size - 1) // 2,
                          groups=in_channels, use_bias=False, name="0"),
                nn.BatchNorm(name="1"), nn.Conv2D(out_channels, 1, use_bias=False, name="2"),
                nn.BatchNorm(name="3"), name="shortcut")

    def _branch(self):
        return [self.ghost1, *([self.conv_dw, self.bn_dw] if self.stride > 1 else []),
                *([self.se] if self.has_se else []), self.ghost2]

    def trace(self, shape, step):
        shape = nhwc_channels(self, shape, self.in_channels)
        out = shape
        for layer in self._branch():
            out = step(layer, out)
        return residual_sum(self, out, shape if self.identity_shortcut else step(self.shortcut, shape))

    def forward(self, x) -> Tensor:
        out = x
        for layer in self._branch():
            out = layer(out)
        return F.add(out, x if self.identity_shortcut else self.shortcut(x))

    def extra_repr(self) -> str:
        return f"{self.in_channels} -> {self.out_channels}, stride={self.stride}{', SE' if self.has_se else ''}"


@register_with_arguments
class GhostNet(Block):
    """GhostNet (module docstring) with channels scaled by ``width``: sub-layers ``conv_stem``,
    ``bn1``, ``act1``, ``blocks`` (a Sequential of stages, the last the 1x1 conv-BN-ReLU),
    ``global_pool``, ``conv_head`` (a Dense layer: the 1x1 conv on the pooled map), ``act2``,
    ``dropout``, ``classifier``. Outputs
    logits. ``config`` replaces :data:`GHOSTNET_CONFIG`."""

    default_name = "ghostnet"

    def __init__(self, num_classes: int = 1000, width: float = 1.0, dropout: float = 0.2, config=None,
                 name: str | None = None):
        super().__init__(name=name)
        if not width > 0:
            raise ValueError(f"GhostNet: width must be positive, got {width!r}")
        if not 0 <= dropout < 1:
            raise ValueError(f"GhostNet: dropout must be in [0, 1), got {dropout!r}")
        stages_config = GHOSTNET_CONFIG if config is None else config
        channels = make_divisible_by(16 * width)
        self.conv_stem = nn.Conv2D(channels, 3, stride=2, padding=1, use_bias=False, name="conv_stem")
        self.bn1 = nn.BatchNorm(name="bn1")
        self.act1 = nn.ReLU(name="act1")
        stages = []
        for s, rows in enumerate(stages_config):
            blocks = []
            for b, (kernel, mid, out, se_ratio, stride) in enumerate(rows):
                out_channels = make_divisible_by(out * width)
                blocks.append(GhostBottleneck(channels, make_divisible_by(mid * width), out_channels, kernel, stride,
                                              se_ratio, name=str(b)))
                channels = out_channels
            stages.append(nn.Sequential(*blocks, name=str(s)))
        last = make_divisible_by(stages_config[-1][-1][1] * width)
        stages.append(nn.Sequential(conv_norm_activation(last, 1, name="0"), name=str(len(stages))))
        self.blocks = nn.Sequential(*stages, name="blocks")
        self.global_pool = nn.GlobalAvgPool2D(name="global_pool")
        # the reference's 1x1 conv_head on the pooled 1 x 1 map: a dense layer
        self.conv_head = nn.Dense(1280, name="conv_head")
        self.act2 = nn.ReLU(name="act2")
        self.dropout = nn.Dropout(dropout, name="dropout")
        self.classifier = nn.Dense(positive_int(num_classes, "GhostNet: num_classes"), name="classifier")

    def _path(self):
        return (self.conv_stem, self.bn1, self.act1, self.blocks, self.global_pool, self.conv_head, self.act2,
                self.dropout, self.classifier)

    def trace(self, shape, step):
        shape = nhwc(self, shape)
        for layer in self._path():
            shape = step(layer, shape)
        return shape

    def forward(self, x) -> Tensor:
        for layer in self._path():
            x = layer(x)
        return x


def ghostnet_1_0(num_classes: int = 1000, dropout: float = 0.2) -> GhostNet:
    """GhostNet 1.0x: 5,182,508 parameters with 1000 classes (about 141 M multiply-adds at 224x224)."""
    return GhostNet(num_classes, 1.0, dropout)


def ghostnet_0_5(num_classes: int = 1000, dropout: float = 0.2) -> GhostNet:
    """GhostNet 0.5x (channels halved, then rounded to multiples of 4)."""
    return GhostNet(num_classes, 0.5, dropout)


def ghostnet_1_3(num_classes: int = 1000, dropout: float = 0.2) -> GhostNet:
    """GhostNet 1.3x."""
    return GhostNet(num_classes, 1.3, dropout)
