"""NFNet-F (Brock, De, Smith, Simonyan 2021, "High-Performance Large-Scale Image Recognition
Without Normalization"): normalizer-free bottleneck networks, trained with adaptive gradient
clipping (:class:`lamina.optim.AGC`), that match batch-normalized EfficientNets.

A block keeps the signal propagation of :mod:`lamina.models.nfnet`,

    h_{i+1} = h_i + alpha · g_i · f_i(act(h_i) · 1 / beta_i),   beta_i = sqrt(E[Var h_i])

(the reference code scales after the activation), with Var(h_{i+1}) = Var(h_i) + alpha^2 tracked
analytically and reset to 1 + alpha^2 by each stage's first (transition) block, alpha = 0.2
and g_i the skipinit gain, a learnable scalar started at 0. The branch f_i is a bottleneck of
width w = expansion · out_channels (expansion 0.5) cut into groups of ``group_size`` (128)
channels:

    1x1 -> w,  3x3 grouped (stride),  3x3 grouped,  1x1 -> out_channels   (ScaledStdConv2D,
                                                                           scaled GELU between)
    f = 2 · sigma(SE(f)) · f                 (squeeze-excite of ratio 0.5; x2 keeps Var(f) = 1)
    f = stochastic depth of f                (rate growing linearly with the block index)

A transition block's shortcut is a 1x1 ScaledStdConv2D of act(h_i) / beta_i, after a 2x2
average pool when the block has stride 2. :class:`NFNet` stacks a four-convolution stem
(3x3/2 16, 3x3 32, 3x3 64, 3x3/2 128), stages of widths (256, 512, 1536, 1536) and depths
(1, 2, 6, 3) · k for NFNet-F(k-1), a 1x1 final convolution to twice the last width, the scaled
activation, global average pooling, dropout and the classifier ``fc``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor
from lamina.models.blocks import Block, nhwc, nhwc_channels, residual_sum
from lamina.models.nfnet import ScaledActivation, _activation_name, _positive_float, _positive_ints
from lamina.models.squeeze_excitation import SqueezeExcitation
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int

__all__ = ["NFNET_F_CONFIGS", "NFBottleneck", "NFNet", "nfnet_f0", "nfnet_f1"]

#: depths and dropout of the presets (widths (256, 512, 1536, 1536) for all).
NFNET_F_CONFIGS: dict[str, dict] = {
    "f0": {"depths": (1, 2, 6, 3), "dropout": 0.2},
    "f1": {"depths": (2, 4, 12, 6), "dropout": 0.3},
}


def _rate(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{what} must be a number in [0, 1), got {value!r}")
    return float(value)


@register_with_arguments
class NFBottleneck(Block):
    """The NFNet block (module docstring): ``in_channels`` -> ``out_channels`` with ``stride``,
    residual scale ``alpha``, ``beta`` the expected standard deviation of the input, branch
    width ``expansion`` · out_channels in groups of ``group_size``, squeeze-excite of
    ``se_ratio``, stochastic depth ``drop_path`` and the skipinit gain ``skip_gain`` (started
    at 0). Sub-layers ``act``, ``conv0``, ``conv1``, ``conv1b``, ``conv2``, ``se``, [``pool``,
    ``shortcut``], ``drop_path``."""

    default_name = "nf_bottleneck"

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, alpha: float = 0.2, beta: float = 1.0,
                 expansion: float = 0.5, group_size: int = 128, se_ratio: float = 0.5, drop_path: float = 0.0,
                 activation: str = "gelu", name: str | None = None):
        super().__init__(name=name)
        self.in_channels = positive_int(in_channels, "NFBottleneck: in_channels")
        self.out_channels = positive_int(out_channels, "NFBottleneck: out_channels")
        if stride not in (1, 2):
            raise ValueError(f"NFBottleneck: stride must be 1 or 2, got {stride!r}")
        self.stride, self.activation = stride, _activation_name(activation, "NFBottleneck")
        self.alpha = _positive_float(alpha, "NFBottleneck: alpha")
        self.beta = _positive_float(beta, "NFBottleneck: beta")
        self.expansion = _positive_float(expansion, "NFBottleneck: expansion")
        self.group_size = positive_int(group_size, "NFBottleneck: group_size")
        self.se_ratio = _positive_float(se_ratio, "NFBottleneck: se_ratio")
        self.drop_rate = _rate(drop_path, "NFBottleneck: drop_path")
        groups = int(out_channels * expansion) // group_size
        if groups < 1:
            raise ValueError(f"NFBottleneck: the branch width {out_channels} x {expansion} = "
                             f"{out_channels * expansion:g} holds no group of {group_size} channels")
        self.width = groups * group_size
        self.is_transition = stride != 1 or in_channels != out_channels
        self.act = ScaledActivation(activation, name="act")
        self.conv0 = nn.ScaledStdConv2D(self.width, 1, name="conv0")
        self.conv1 = nn.ScaledStdConv2D(self.width, 3, stride=stride, padding=1, groups=groups, name="conv1")
        self.conv1b = nn.ScaledStdConv2D(self.width, 3, padding=1, groups=groups, name="conv1b")
        self.conv2 = nn.ScaledStdConv2D(out_channels, 1, name="conv2")
        self.se = SqueezeExcitation(out_channels, max(1, int(out_channels * se_ratio)), name="se")
        if stride != 1:
            self.pool = nn.AvgPool2D(2, stride=2, ceil_mode=True, count_include_pad=False, name="pool")
        if self.is_transition:
            self.shortcut = nn.ScaledStdConv2D(out_channels, 1, name="shortcut")
        self.drop_path = nn.StochasticDepth(self.drop_rate, name="drop_path")

    def trace(self, shape, step):
        shape = nhwc_channels(self, shape, self.in_channels)
        normalized = step(self.act, shape)
        out = step(self.conv1b, step(self.act, step(self.conv1, step(self.act, step(self.conv0, normalized)))))
        out = step(self.drop_path, step(self.se, step(self.conv2, step(self.act, out))))
        short = shape
        if self.is_transition:
            short = step(self.shortcut, step(self.pool, normalized) if self.stride != 1 else normalized)
        return residual_sum(self, out, short)

    def build(self, input_shape) -> None:
        super().build(input_shape)
        self.add_parameter("skip_gain", nn.init.get("zeros")((1,), 1, 1, self.conv0.weight.dtype))

    def branch(self, normalized) -> Tensor:
        """f(a) before the residual scale and the skipinit gain, of a = act(h) / beta."""
        out = self.conv1b(self.act(self.conv1(self.act(self.conv0(normalized)))))
        out = self.conv2(self.act(out))
        out = F.mul(self.se(out), 2.0)
        return self.drop_path(out)

    def forward(self, x) -> Tensor:
        normalized = F.mul(self.act(x), 1.0 / self.beta)
        out = F.mul(F.mul(self.branch(normalized), self.alpha), self._parameters["skip_gain"])
        if not self.is_transition:
            return F.add(out, x)
        shortcut = self.shortcut(self.pool(normalized) if self.stride != 1 else normalized)
        return F.add(out, shortcut)

    def extra_repr(self) -> str:
        return (f"{self.in_channels} -> {self.width} -> {self.out_channels}, stride={self.stride}, "
                f"groups of {self.group_size}, beta={self.beta:.4g}")


@register_with_arguments
class NFNet(Block):
    """NFNet-F (module docstring): ``depths`` :class:`NFBottleneck` blocks per stage of
    ``widths`` channels (stride 1 in the first stage, 2 after), the stem of ``stem_widths``,
    a final 1x1 convolution to ``final_multiplier`` · widths[-1] channels, ``dropout`` before
    ``fc``; ``drop_path`` the stochastic depth rate of the last block (block i of B: rate · i /
    B). Sub-layers ``stem``, ``stages`` (a Sequential of Sequentials), ``final_conv``,
    ``final_act``, ``avgpool``, ``dropout``, ``fc``. Outputs logits."""

    default_name = "nfnet"

    def __init__(self, depths: Sequence[int] = (1, 2, 6, 3), widths: Sequence[int] = (256, 512, 1536, 1536),
                 num_classes: int = 1000, stem_widths: Sequence[int] = (16, 32, 64, 128), group_size: int = 128,
                 expansion: float = 0.5, se_ratio: float = 0.5, alpha: float = 0.2, activation: str = "gelu",
                 final_multiplier: int = 2, drop_path: float = 0.1, dropout: float = 0.2, name: str | None = None):
        super().__init__(name=name)
        depths, widths = _positive_ints(depths, "NFNet: depths"), _positive_ints(widths, "NFNet: widths")
        stem_widths = _positive_ints(stem_widths, "NFNet: stem_widths")
        if len(depths) != len(widths) or len(stem_widths) != 4:
            raise ValueError(f"NFNet: depths and widths must be equally long and stem_widths hold 4 widths, got "
                             f"depths={depths!r}, widths={widths!r}, stem_widths={stem_widths!r}")
        self.alpha, self.drop_rate = _positive_float(alpha, "NFNet: alpha"), _rate(drop_path, "NFNet: drop_path")
        stem = []
        for i, (width, stride) in enumerate(zip(stem_widths, (2, 1, 1, 2))):
            if i:
                stem.append(ScaledActivation(activation, name=f"act{i}"))
            stem.append(nn.ScaledStdConv2D(width, 3, stride=stride, padding=1, name=f"conv{i}"))
        self.stem = nn.Sequential(*stem, name="stem")
        stages, channels, expected_var, index, total = [], stem_widths[-1], 1.0, 0, sum(depths)
        for s, (depth, width) in enumerate(zip(depths, widths)):
            blocks = []
            for b in range(depth):
                stride = 2 if s > 0 and b == 0 else 1
                blocks.append(NFBottleneck(channels, width, stride, alpha, math.sqrt(expected_var), expansion,
                                           group_size, se_ratio, self.drop_rate * index / total, activation,
                                           name=str(b)))
                expected_var = (1.0 if blocks[-1].is_transition else expected_var) + alpha**2
                channels, index = width, index + 1
            stages.append(nn.Sequential(*blocks, name=str(s)))
        self.stages = nn.Sequential(*stages, name="stages")
        #: Var(h) expected at the output of the last block.
        self.expected_var = expected_var
        self.final_conv = nn.ScaledStdConv2D(positive_int(final_multiplier, "NFNet: final_multiplier") * channels, 1,
                                             name="final_conv")
        self.final_act = ScaledActivation(activation, name="final_act")
        self.avgpool = nn.GlobalAvgPool2D(name="avgpool")
        self.dropout = nn.Dropout(_rate(dropout, "NFNet: dropout"), name="dropout")
        self.fc = nn.Dense(positive_int(num_classes, "NFNet: num_classes"), name="fc")

    def trace(self, shape, step):
        shape = nhwc(self, shape)
        for layer in (self.stem, self.stages, self.final_conv, self.final_act, self.avgpool, self.dropout, self.fc):
            shape = step(layer, shape)
        return shape

    def features(self, x) -> Tensor:
        """The last stage's output h (before the final convolution)."""
        return self.stages(self.stem(x))

    def forward(self, x) -> Tensor:
        h = self.final_act(self.final_conv(self.features(x)))
        return self.fc(self.dropout(self.avgpool(h)))


def _preset(key: str, num_classes: int, options: dict) -> NFNet:
    return NFNet(**{**NFNET_F_CONFIGS[key], "num_classes": num_classes, **options})


def nfnet_f0(num_classes: int = 1000, **options) -> NFNet:
    """NFNet-F0: depths (1, 2, 6, 3), dropout 0.2 (71.5M parameters); ``options`` go to :class:`NFNet`."""
    return _preset("f0", num_classes, options)


def nfnet_f1(num_classes: int = 1000, **options) -> NFNet:
    """NFNet-F1: depths (2, 4, 12, 6), dropout 0.3 (132.6M parameters)."""
    return _preset("f1", num_classes, options)
