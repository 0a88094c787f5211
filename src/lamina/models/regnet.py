"""RegNet (Radosavovic et al. 2020, "Designing Network Design Spaces") in torchvision's layout
and names.

A RegNet is an AnyNet (stem, stages of residual bottleneck blocks, head) whose stage widths
and depths come from a few numbers instead of a search over each stage. Block j = 0 .. d - 1
of a network of depth d gets the width of a line, snapped to a geometric grid in log space:

    u_j = w_0 + w_a j                       (the continuous widths: initial width, slope)
    s_j = round(log(u_j / w_0) / log(w_m))  (how many steps of ratio w_m above w_0)
    w_j = 8 round(w_0 w_m^s_j / 8)          (quantised to a multiple of 8)

Consecutive blocks of equal width form a stage (every stage starts with a stride 2). Each
stage's bottleneck width w b (b the bottleneck ratio) is then made a multiple of the group
width g (g itself capped by it), and the stage width re-derived from it. torchvision
evaluates the three lines above in float32, and so does :func:`regnet_block_params`, so that
the widths agree to the last rounding.

The block (torchvision's ``ResBottleneckBlock``), from w_in to w_out channels, stride s:

    f = a: 1x1 conv w_b - BN - ReLU;  b: 3x3 conv w_b, stride s, w_b / g groups - BN - ReLU;
        [se: squeeze-and-excitation of w_b channels through round(r w_in) (RegNet-Y only)];
        c: 1x1 conv w_out - BN
    out = ReLU(proj(x) + f(x))   (proj: 1x1 conv with stride s - BN, when the shape changes;
                                  x itself otherwise)

The network: ``stem`` 3x3/2 conv 32 - BN - ReLU; ``trunk_output.block{i}.block{i}-{j}``, the
blocks of stage i; global average pooling (``avgpool``); ``fc``. RegNet-X has no
squeeze-and-excitation, RegNet-Y has it with r = 0.25. Parameters with 1000 classes
(torchvision's figures; the multiply-adds at 224x224 in the builders' docstrings):

    Y-400MF 4,344,144   Y-800MF 6,432,512   Y-1.6GF 11,202,430   Y-3.2GF 19,436,338
    Y-8GF 39,381,472    Y-16GF 83,590,140   Y-32GF 145,046,770   Y-128GF 644,812,894
    X-400MF 5,495,976   X-800MF 7,259,656   X-1.6GF 9,190,136    X-3.2GF 15,296,552
    X-8GF 39,572,648    X-16GF 54,278,536   X-32GF 107,811,560
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.blocks import Block, check_input, classifier_layers, finish, nhwc_channels
from lamina.models.mobilenet_v2 import make_divisible
from lamina.models.squeeze_excitation import SqueezeExcitation, conv_norm_activation
from lamina.nn.layer import register_layer

__all__ = [
    "REGNET_CONFIGS", "RegNetBlock", "RegNetParams", "regnet", "regnet_block_params",
    "regnet_x_1_6gf", "regnet_x_3_2gf", "regnet_x_8gf", "regnet_x_16gf", "regnet_x_32gf", "regnet_x_400mf",
    "regnet_x_800mf", "regnet_y_1_6gf", "regnet_y_3_2gf", "regnet_y_8gf", "regnet_y_16gf", "regnet_y_32gf",
    "regnet_y_128gf", "regnet_y_400mf", "regnet_y_800mf",
]

QUANTUM = 8  # block widths are multiples of 8
STEM_WIDTH = 32

# variant -> (depth d, w_0, w_a, w_m, group width g, squeeze-and-excitation ratio r or None)
REGNET_CONFIGS: dict[str, tuple[int, int, float, float, int, float | None]] = {
    "y_400mf": (16, 48, 27.89, 2.09, 8, 0.25),
    "y_800mf": (14, 56, 38.84, 2.4, 16, 0.25),
    "y_1_6gf": (27, 48, 20.71, 2.65, 24, 0.25),
    "y_3_2gf": (21, 80, 42.63, 2.66, 24, 0.25),
    "y_8gf": (17, 192, 76.82, 2.19, 56, 0.25),
    "y_16gf": (18, 200, 106.23, 2.48, 112, 0.25),
    "y_32gf": (20, 232, 115.89, 2.53, 232, 0.25),
    "y_128gf": (27, 456, 160.83, 2.52, 264, 0.25),
    "x_400mf": (22, 24, 24.48, 2.54, 16, None),
    "x_800mf": (16, 56, 35.73, 2.28, 16, None),
    "x_1_6gf": (18, 80, 34.01, 2.25, 24, None),
    "x_3_2gf": (25, 88, 26.31, 2.25, 48, None),
    "x_8gf": (23, 80, 49.56, 2.88, 120, None),
    "x_16gf": (22, 216, 55.59, 2.1, 128, None),
    "x_32gf": (23, 320, 69.86, 2.0, 168, None),
}


class RegNetParams(NamedTuple):
    """Per-stage settings of a RegNet: blocks, output widths and group widths (one per stage)."""

    depths: tuple[int, ...]
    widths: tuple[int, ...]
    group_widths: tuple[int, ...]


def _check_generator(depth, w_0, w_a, w_m, group_width, bottleneck_multiplier) -> None:
    def number(value) -> bool:
        return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)

    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"regnet: depth must be a positive int, got {depth!r}")
    if isinstance(w_0, bool) or not isinstance(w_0, int) or w_0 <= 0 or w_0 % QUANTUM:
        raise ValueError(f"regnet: w_0 must be a positive multiple of {QUANTUM}, got {w_0!r}")
    if not number(w_a) or w_a < 0:
        raise ValueError(f"regnet: the slope w_a must be a number >= 0, got {w_a!r}")
    if not number(w_m) or w_m <= 1:
        raise ValueError(f"regnet: the width multiplier w_m must be a number > 1, got {w_m!r}")
    if isinstance(group_width, bool) or not isinstance(group_width, int) or group_width < 1:
        raise ValueError(f"regnet: group_width must be a positive int, got {group_width!r}")
    if not number(bottleneck_multiplier) or bottleneck_multiplier <= 0:
        raise ValueError(f"regnet: bottleneck_multiplier must be a positive number, got {bottleneck_multiplier!r}")


def regnet_block_params(depth: int, w_0: int, w_a: float, w_m: float, group_width: int,
                        bottleneck_multiplier: float = 1.0) -> RegNetParams:
    """The stages of the RegNet of ``depth`` blocks with initial width ``w_0`` (a multiple of
    8), slope ``w_a`` >= 0, width multiplier ``w_m`` > 1 and group width ``group_width`` (the
    module docstring's generator; torchvision's ``BlockParams.from_init_params``)."""
    _check_generator(depth, w_0, w_a, w_m, group_width, bottleneck_multiplier)
    f32 = np.float32
    continuous = np.arange(depth, dtype=f32) * f32(w_a) + f32(w_0)
    steps = np.round(np.log(continuous / f32(w_0)) / f32(math.log(w_m)))
    block_widths = (np.round(f32(w_0) * np.power(f32(w_m), steps) / f32(QUANTUM)) * QUANTUM).astype(int).tolist()
    starts = [j for j in range(depth) if j == 0 or block_widths[j] != block_widths[j - 1]]
    depths = [end - start for start, end in zip(starts, starts[1:] + [depth])]
    widths, group_widths = [], []
    for start in starts:
        bottleneck = int(block_widths[start] * bottleneck_multiplier)
        group = min(group_width, bottleneck)
        widths.append(int(make_divisible(bottleneck, group) / bottleneck_multiplier))
        group_widths.append(group)
    return RegNetParams(tuple(depths), tuple(widths), tuple(group_widths))


@register_layer
class RegNetBlock(Block):
    """RegNet's residual bottleneck block from ``in_channels`` to ``out_channels`` (see the
    module docstring): sub-layers ``proj`` (when the stride or the width changes), ``f`` (a
    Sequential 'a', 'b', ['se'], 'c') and ``activation``. The bottleneck has
    round(out_channels · ``bottleneck_multiplier``) channels in groups of ``group_width``;
    ``se_ratio`` (None for RegNet-X) sizes the squeeze-and-excitation from ``in_channels``."""

    default_name = "regnet_block"

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, group_width: int = 1,
                 bottleneck_multiplier: float = 1.0, se_ratio: float | None = None, name: str | None = None):
        super().__init__(name=name)
        for what, value in (("in_channels", in_channels), ("out_channels", out_channels),
                            ("group_width", group_width)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"RegNetBlock: {what} must be a positive int, got {value!r}")
        if stride not in (1, 2):
            raise ValueError(f"RegNetBlock: stride must be 1 or 2, got {stride!r}")
        if se_ratio is not None and not 0 < se_ratio <= 1:
            raise ValueError(f"RegNetBlock: se_ratio must be None or in (0, 1], got {se_ratio!r}")
        bottleneck = int(round(out_channels * bottleneck_multiplier))
        if bottleneck < 1 or bottleneck % group_width:
            raise ValueError(f"RegNetBlock: the bottleneck width {bottleneck} (out_channels {out_channels} x "
                             f"bottleneck_multiplier {bottleneck_multiplier}) must be a positive multiple of "
                             f"group_width {group_width}")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.group_width, self.bottleneck_multiplier, self.se_ratio = group_width, bottleneck_multiplier, se_ratio
        if stride != 1 or in_channels != out_channels:
            self.proj = conv_norm_activation(out_channels, 1, stride=stride, activation=None, name="proj")
        layers = [conv_norm_activation(bottleneck, 1, name="a"),
                  conv_norm_activation(bottleneck, 3, stride=stride, groups=bottleneck // group_width, name="b")]
        if se_ratio:
            layers.append(SqueezeExcitation(bottleneck, int(round(se_ratio * in_channels)), name="se"))
        layers.append(conv_norm_activation(out_channels, 1, activation=None, name="c"))
        self.f = nn.Sequential(*layers, name="f")
        self.activation = nn.ReLU(name="activation")

    @property
    def has_projection(self) -> bool:
        return "proj" in self._modules

    def trace(self, shape, step):
        shape = nhwc_channels(self, shape, self.in_channels)
        out = step(self.f, shape)
        shortcut = step(self.proj, shape) if self.has_projection else shape
        if tuple(out[1:]) != tuple(shortcut[1:]):
            raise ShapeError(f"{self._label()}: the branch gives {tuple(out)} but the shortcut {tuple(shortcut)}")
        return step(self.activation, out)

    def forward(self, x) -> Tensor:
        shortcut = self.proj(x) if self.has_projection else x
        return self.activation(F.add(shortcut, self.f(x)))

    def get_config(self) -> dict:
        return {"in_channels": self.in_channels, "out_channels": self.out_channels, "stride": self.stride,
                "group_width": self.group_width, "bottleneck_multiplier": self.bottleneck_multiplier,
                "se_ratio": self.se_ratio, "name": self.name}

    def extra_repr(self) -> str:
        se = "" if not self.se_ratio else f", se={self.se_ratio:g}"
        return f"{self.in_channels} -> {self.out_channels}, stride={self.stride}, g={self.group_width}{se}"


def regnet(depth: int, w_0: int, w_a: float, w_m: float, group_width: int, se_ratio: float | None = None,
           bottleneck_multiplier: float = 1.0, stem_width: int = STEM_WIDTH, num_classes: int = 1000,
           input_shape: tuple[int, int, int] = (224, 224, 3), classifier_activation: str | None = None,
           name: str = "regnet") -> nn.Sequential:
    """A RegNet (unbuilt) in torchvision's layout, its stages generated by
    :func:`regnet_block_params` from ``depth``, ``w_0``, ``w_a``, ``w_m`` and ``group_width``;
    ``se_ratio`` adds squeeze-and-excitation (RegNet-Y). Outputs logits unless
    ``classifier_activation``."""
    stages = regnet_block_params(depth, w_0, w_a, w_m, group_width, bottleneck_multiplier)
    if isinstance(stem_width, bool) or not isinstance(stem_width, int) or stem_width < 1:
        raise ValueError(f"{name}: stem_width must be a positive int, got {stem_width!r}")
    input_shape = check_input(input_shape, name)
    trunk, width_in = [], stem_width
    for i, (count, width, group) in enumerate(zip(*stages), start=1):
        blocks = [RegNetBlock(width_in if j == 0 else width, width, 2 if j == 0 else 1, group,
                              bottleneck_multiplier, se_ratio, name=f"block{i}-{j}") for j in range(count)]
        trunk.append(nn.Sequential(*blocks, name=f"block{i}"))
        width_in = width
    model = nn.Sequential(
        conv_norm_activation(stem_width, 3, stride=2, name="stem"),
        nn.Sequential(*trunk, name="trunk_output"),
        nn.GlobalAvgPool2D(name="avgpool"),
        nn.Dense(num_classes, name="fc"),
        *classifier_layers(classifier_activation),
        name=name,
    )
    return finish(model, input_shape)


def _variant(variant: str, num_classes: int, input_shape, classifier_activation: str | None) -> nn.Sequential:
    depth, w_0, w_a, w_m, group_width, se_ratio = REGNET_CONFIGS[variant]
    return regnet(depth, w_0, w_a, w_m, group_width, se_ratio, num_classes=num_classes, input_shape=input_shape,
                  classifier_activation=classifier_activation, name=f"regnet_{variant}")


def regnet_y_400mf(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                   classifier_activation: str | None = None) -> nn.Sequential:
    """RegNetY-400MF: d 16, w_0 48, w_a 27.89, w_m 2.09, g 8, SE 0.25; 4,344,144 parameters
    with 1000 classes (about 0.40 G multiply-adds at 224x224)."""
    return _variant("y_400mf", num_classes, input_shape, classifier_activation)


def regnet_y_800mf(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                   classifier_activation: str | None = None) -> nn.Sequential:
    """RegNetY-800MF: d 14, w_0 56, w_a 38.84, w_m 2.4, g 16, SE 0.25; 6,432,512 parameters
    (about 0.83 G multiply-adds)."""
    return _variant("y_800mf", num_classes, input_shape, classifier_activation)


def regnet_y_1_6gf(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                   classifier_activation: str | None = None) -> nn.Sequential:
    """RegNetY-1.6GF: d 27, w_0 48, w_a 20.71, w_m 2.65, g 24, SE 0.25; 11,202,430 parameters
    (about 1.61 G multiply-adds)."""
    return _variant("y_1_6gf", num_classes, input_shape, classifier_activation)


def regnet_y_3_2gf(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                   classifier_activation: str | None = None) -> nn.Sequential:
    """RegNetY-3.2GF: d 21, w_0 80, w_a 42.63, w_m 2.66, g 24, SE 0.25; 19,436,338 parameters
    (about 3.18 G multiply-adds)."""
    return _variant("y_3_2gf", num_classes, input_shape, classifier_activation)


def regnet_y_8gf(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                 classifier_activation: str | None = None) -> nn.Sequential:
    """RegNetY-8GF: d 17, w_0 192, w_a 76.82, w_m 2.19, g 56, SE 0.25; 39,381,472 parameters
    (about 8.47 G multiply-adds)."""
    return _variant("y_8gf", num_classes, input_shape, classifier_activation)


def regnet_y_16gf(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                  classifier_activation: str | None = None) -> nn.Sequential:
    """RegNetY-16GF: d 18, w_0 200, w_a 106.23, w_m 2.48, g 112, SE 0.25; 83,590,140 parameters
    (about 15.91 G multiply-adds)."""
    return _variant("y_16gf", num_classes, input_shape, classifier_activation)


def regnet_y_32gf(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                  classifier_activation: str | None = None) -> nn.Sequential:
    """RegNetY-32GF: d 20, w_0 232, w_a 115.89, w_m 2.53, g 232, SE 0.25; 145,046,770
    parameters (about 32.28 G multiply-adds)."""
    return _variant("y_32gf", num_classes, input_shape, classifier_activation)


def regnet_y_128gf(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                   classifier_activation: str | None = None) -> nn.Sequential:
    """RegNetY-128GF: d 27, w_0 456, w_a 160.83, w_m 2.52, g 264, SE 0.25; 644,812,894
    parameters (about 127.5 G multiply-adds)."""
    return _variant("y_128gf", num_classes, input_shape, classifier_activation)


def regnet_x_400mf(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                   classifier_activation: str | None = None) -> nn.Sequential:
    """RegNetX-400MF: d 22, w_0 24, w_a 24.48, w_m 2.54, g 16; 5,495,976 parameters with 1000
    classes (about 0.41 G multiply-adds at 224x224)."""
    return _variant("x_400mf", num_classes, input_shape, classifier_activation)


def regnet_x_800mf(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                   classifier_activation: str | None = None) -> nn.Sequential:
    """RegNetX-800MF: d 16, w_0 56, w_a 35.73, w_m 2.28, g 16; 7,259,656 parameters (about
    0.80 G multiply-adds)."""
    return _variant("x_800mf", num_classes, input_shape, classifier_activation)


def regnet_x_1_6gf(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                   classifier_activation: str | None = None) -> nn.Sequential:
    """RegNetX-1.6GF: d 18, w_0 80, w_a 34.01, w_m 2.25, g 24; 9,190,136 parameters (about
    1.60 G multiply-adds)."""
    return _variant("x_1_6gf", num_classes, input_shape, classifier_activation)


def regnet_x_3_2gf(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                   classifier_activation: str | None = None) -> nn.Sequential:
    """RegNetX-3.2GF: d 25, w_0 88, w_a 26.31, w_m 2.25, g 48; 15,296,552 parameters (about
    3.18 G multiply-adds)."""
    return _variant("x_3_2gf", num_classes, input_shape, classifier_activation)


def regnet_x_8gf(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                 classifier_activation: str | None = None) -> nn.Sequential:
    """RegNetX-8GF: d 23, w_0 80, w_a 49.56, w_m 2.88, g 120; 39,572,648 parameters (about
    8.00 G multiply-adds)."""
    return _variant("x_8gf", num_classes, input_shape, classifier_activation)


def regnet_x_16gf(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                  classifier_activation: str | None = None) -> nn.Sequential:
    """RegNetX-16GF: d 22, w_0 216, w_a 55.59, w_m 2.1, g 128; 54,278,536 parameters (about
    15.94 G multiply-adds)."""
    return _variant("x_16gf", num_classes, input_shape, classifier_activation)


def regnet_x_32gf(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                  classifier_activation: str | None = None) -> nn.Sequential:
    """RegNetX-32GF: d 23, w_0 320, w_a 69.86, w_m 2.0, g 168; 107,811,560 parameters (about
    31.74 G multiply-adds)."""
    return _variant("x_32gf", num_classes, input_shape, classifier_activation)
