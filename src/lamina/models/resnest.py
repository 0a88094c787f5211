"""Attention over convolution branches: Selective Kernel networks (Li, Wang, Hu, Yang 2019,
"Selective Kernel Networks") and ResNeSt (Zhang et al. 2022, "ResNeSt: Split-Attention
Networks").

Selective Kernel convolution (:class:`SKConv`) on a volume x (H x W x C), M branches:

    U_m = ReLU(BN(conv3x3, dilation m (x)))     m = 1..M (dilation 2 sees a 5x5 field)
    s   = mean over the pixels of sum_m U_m       (fuse: 1 x 1 x C)
    z   = ReLU(BN(W s))                           (C -> d = max(C / r, L))
    a_m = softmax over m of (A_m z + b_m)         (select: one weight per branch and channel)
    V   = sum_m a_m · U_m

Split attention (:class:`SplitAttention`), cardinality K, radix R: one grouped 3x3 convolution
(K R groups) - BN - ReLU gives R splits U_1..U_R of C channels each; then

    s   = mean over the pixels of sum_r U_r
    z   = ReLU(BN(G_1 s))                         (1x1 conv in K groups, C -> max(C R / 4, 32))
    l   = G_2 z                                   (1x1 conv in K groups, -> C R logits)
    a   = softmax over the radix of l within each cardinal group (sigmoid when R = 1)
    V   = sum_r a_r · U_r

:func:`sknet50` is ResNeXt-50 32x4d with SK[M=2, G=32, r=16, L=32] convolutions for the 3x3
ones (27,494,888 parameters with 1000 classes; the paper's 27.5 M). :func:`resnest50` has the
deep stem (three 3x3 convolutions, 32, 32, 64 filters), radix 2 split attention in its
bottlenecks, the stride taken by a 3x3 average pool after the split attention (avd) and
average pooling before the shortcut projections (avg_down): 27,483,240 parameters with 1000
classes (the paper's 27.5 M).
"""

from __future__ import annotations

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor
from lamina.models.blocks import Block, nhwc, nhwc_channels, residual_sum
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int

__all__ = ["ResNeSt", "ResNeStBottleneck", "SKBlock", "SKConv", "SKNet", "SplitAttention", "resnest50",
           "resnest_tiny", "sknet50", "sknet_tiny"]


def _conv_bn_relu(filters: int, kernel: int, stride: int = 1, dilation: int = 1, groups: int = 1,
                  relu: bool = True, name: str | None = None) -> nn.Sequential:
    layers = [nn.Conv2D(filters, kernel, stride=stride, padding=(kernel - 1) // 2 * dilation, dilation=dilation,
                        groups=groups, use_bias=False, name="0"), nn.BatchNorm(name="1")]
    return nn.Sequential(*layers, *([nn.ReLU(name="2")] if relu else []), name=name)


def _check_groups(what: str, channels: int, groups: int) -> None:
    if channels % groups:
        raise ValueError(f"{what}: channels ({channels}) must be divisible by groups ({groups})")


@register_with_arguments
class SKConv(Block):
    """Selective Kernel convolution (module docstring) from ``channels`` to ``channels``:
    ``branches`` M branches ``convs.m`` (3x3, dilation m + 1, ``groups`` groups, ``stride``) -
    BN - ReLU; ``fc`` (1x1 conv to d = max(channels // ``reduction``, ``min_dim``) - BN - ReLU);
    ``fcs.m`` (1x1 conv d -> channels, with bias); softmax over the branches."""

    default_name = "sk_conv"

    def __init__(self, channels: int, stride: int = 1, branches: int = 2, groups: int = 1, reduction: int = 16,
                 min_dim: int = 32, name: str | None = None):
        super().__init__(name=name)
        self.channels = positive_int(channels, "SKConv: channels")
        self.branches = positive_int(branches, "SKConv: branches")
        _check_groups("SKConv", channels, positive_int(groups, "SKConv: groups"))
        dim = max(channels // positive_int(reduction, "SKConv: reduction"), positive_int(min_dim, "SKConv: min_dim"))
        self.convs = nn.ModuleList([_conv_bn_relu(channels, 3, stride, m + 1, groups, name=str(m))
                                    for m in range(branches)])
        self.fc = _conv_bn_relu(dim, 1, name="fc")
        self.fcs = nn.ModuleList([nn.Conv2D(channels, 1, name=str(m)) for m in range(branches)])

    def trace(self, shape, step):
        shape = nhwc_channels(self, shape, self.channels)
        outs = [step(conv, shape) for conv in self.convs]
        z = step(self.fc, (shape[0], 1, 1, self.channels))
        for fc in self.fcs:
            step(fc, z)
        return outs[0]

    def forward(self, x) -> Tensor:
        branches = [conv(x) for conv in self.convs]
        fused = branches[0]
        for branch in branches[1:]:
            fused = F.add(fused, branch)
        z = self.fc(F.mean(fused, axis=(1, 2), keepdims=True))
        weights = F.softmax(F.stack([fc(z) for fc in self.fcs], axis=0), axis=0)    # (M, N, 1, 1, C)
        return F.sum(F.mul(weights, F.stack(branches, axis=0)), axis=0)

    def extra_repr(self) -> str:
        return f"{self.channels}, branches={self.branches}"


@register_with_arguments
class SplitAttention(Block):
    """Split attention (module docstring) from ``channels`` to ``channels``: ``conv`` (3x3,
    ``channels`` x ``radix`` filters in ``groups`` x ``radix`` groups, ``stride``, ``dilation``)
    - ``bn0`` - ReLU; ``fc1`` (1x1 in ``groups`` groups to max(channels x radix // ``reduction``,
    ``min_inter``), with bias) - ``bn1`` - ReLU; ``fc2`` (1x1 in ``groups`` groups, with bias);
    r-softmax over the radix, or a sigmoid when ``radix`` is 1."""

    default_name = "split_attention"

    def __init__(self, channels: int, stride: int = 1, groups: int = 1, radix: int = 2, reduction: int = 4,
                 min_inter: int = 32, dilation: int = 1, name: str | None = None):
        super().__init__(name=name)
        self.channels = positive_int(channels, "SplitAttention: channels")
        self.groups = positive_int(groups, "SplitAttention: groups")
        self.radix = positive_int(radix, "SplitAttention: radix")
        _check_groups("SplitAttention (groups x radix)", channels, groups * radix)
        inter = max(channels * radix // positive_int(reduction, "SplitAttention: reduction"),
                    positive_int(min_inter, "SplitAttention: min_inter"))
        _check_groups("SplitAttention (attention width)", inter, groups)
        self.conv = nn.Conv2D(channels * radix, 3, stride=stride, padding=dilation, dilation=dilation,
                              groups=groups * radix, use_bias=False, name="conv")
        self.bn0 = nn.BatchNorm(name="bn0")
        self.fc1 = nn.Conv2D(inter, 1, groups=groups, name="fc1")
        self.bn1 = nn.BatchNorm(name="bn1")
        self.fc2 = nn.Conv2D(channels * radix, 1, groups=groups, name="fc2")

    def trace(self, shape, step):
        shape = nhwc_channels(self, shape, self.channels)
        out = step(self.bn0, step(self.conv, shape))
        step(self.fc2, step(self.bn1, step(self.fc1, (shape[0], 1, 1, self.channels))))
        return (*out[:3], self.channels)

    def attention(self, logits: Tensor) -> Tensor:
        """Weights (N, R, C) from fc2's logits (N, 1, 1, K R C/K, cardinal-group major): a
        softmax over the radix within each group, laid out radix major like the splits."""
        n, (k, r) = logits.shape[0], (self.groups, self.radix)
        if r == 1:
            return F.reshape(F.sigmoid(logits), n, 1, self.channels)
        weights = F.softmax(F.reshape(logits, n, k, r, self.channels // k), axis=2)
        return F.reshape(F.transpose(weights, 0, 2, 1, 3), n, r, self.channels)

    def forward(self, x) -> Tensor:
        out = F.relu(self.bn0(self.conv(x)))
        n, h, w, _ = out.shape
        splits = F.reshape(out, n, h, w, self.radix, self.channels)
        z = F.relu(self.bn1(self.fc1(F.mean(F.sum(splits, axis=3), axis=(1, 2), keepdims=True))))
        weights = F.reshape(self.attention(self.fc2(z)), n, 1, 1, self.radix, self.channels)
        return F.sum(F.mul(weights, splits), axis=3)

    def extra_repr(self) -> str:
        return f"{self.channels}, groups={self.groups}, radix={self.radix}"


class _Bottleneck(Block):
    """conv1 (1x1) - bn1 - ReLU - the middle unit - conv3 (1x1, 4 ``filters``) - bn3, plus the
    shortcut, ReLU."""

    expansion = 4

    def _setup(self, in_channels: int, filters: int, stride: int, groups: int, base_width: int) -> int:
        self.in_channels = positive_int(in_channels, f"{type(self).__name__}: in_channels")
        self.filters, self.stride = positive_int(filters, f"{type(self).__name__}: filters"), stride
        width = int(filters * base_width / 64) * groups
        self.conv1 = nn.Conv2D(width, 1, use_bias=False, name="conv1")
        self.bn1 = nn.BatchNorm(name="bn1")
        self.conv3 = nn.Conv2D(filters * self.expansion, 1, use_bias=False, name="conv3")
        self.bn3 = nn.BatchNorm(name="bn3")
        self.has_downsample = stride != 1 or in_channels != filters * self.expansion
        return width

    def _middle(self) -> list:
        raise NotImplementedError

    def trace(self, shape, step):
        shape = nhwc_channels(self, shape, self.in_channels)
        out = step(self.bn1, step(self.conv1, shape))
        for layer in self._middle():
            out = step(layer, out)
        out = step(self.bn3, step(self.conv3, out))
        return residual_sum(self, out, step(self.downsample, shape) if self.has_downsample else shape)

    def forward(self, x) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        for layer in self._middle():
            out = layer(out)
        out = self.bn3(self.conv3(out))
        return F.relu(F.add(out, self.downsample(x) if self.has_downsample else x))

    def extra_repr(self) -> str:
        return f"{self.in_channels} -> {self.filters * self.expansion}, stride={self.stride}"


@register_with_arguments
class SKBlock(_Bottleneck):
    """SKNet's bottleneck: ResNeXt's with an :class:`SKConv` (``conv2``, carrying the stride)
    for its 3x3 convolution, width = filters · base_width / 64 · groups; a 1x1 conv (stride) +
    BN ``downsample`` shortcut when the shape changes."""

    default_name = "sk_block"

    def __init__(self, in_channels: int, filters: int, stride: int = 1, groups: int = 32, base_width: int = 4,
                 branches: int = 2, reduction: int = 16, min_dim: int = 32, name: str | None = None):
        super().__init__(name=name)
        width = self._setup(in_channels, filters, stride, groups, base_width)
        self.conv2 = SKConv(width, stride, branches, groups, reduction, min_dim, name="conv2")
        if self.has_downsample:
            self.downsample = _conv_bn_relu(filters * self.expansion, 1, stride, relu=False, name="downsample")

    def _middle(self) -> list:
        return [self.conv2]


@register_with_arguments
class ResNeStBottleneck(_Bottleneck):
    """ResNeSt's bottleneck: conv1 - bn1 - ReLU - :class:`SplitAttention` ``conv2`` (radix
    ``radix``, cardinality ``groups``) [- ``avd_layer``, a 3x3 average pool with the stride,
    when ``avd`` and (stride > 1 or ``is_first``)] - conv3 - bn3; the shortcut ``downsample``
    average-pools (stride x stride, ceil mode, padding not counted) before its 1x1 conv + BN."""

    default_name = "resnest_bottleneck"

    def __init__(self, in_channels: int, filters: int, stride: int = 1, groups: int = 1, base_width: int = 64,
                 radix: int = 2, avd: bool = True, is_first: bool = False, reduction: int = 4, min_inter: int = 32,
                 name: str | None = None):
        super().__init__(name=name)
        width = self._setup(in_channels, filters, stride, groups, base_width)
        self.use_avd = bool(avd) and (stride > 1 or bool(is_first))
        self.conv2 = SplitAttention(width, 1 if self.use_avd else stride, groups, radix, reduction, min_inter,
                                    name="conv2")
        if self.use_avd:
            self.avd_layer = nn.AvgPool2D(3, stride=stride, padding=1, name="avd_layer")
        if self.has_downsample:
            pool = (nn.AvgPool2D(stride, stride=stride, ceil_mode=True, count_include_pad=False, name="0")
                    if stride > 1 else nn.Identity(name="0"))
            self.downsample = nn.Sequential(pool, nn.Conv2D(filters * self.expansion, 1, use_bias=False, name="1"),
                                            nn.BatchNorm(name="2"), name="downsample")

    def _middle(self) -> list:
        return [self.conv2, *([self.avd_layer] if self.use_avd else [])]


class _Network(Block):
    """stem - stages ``layer1``.. (the first of stride 1, the others 2) - global average pool - ``fc``."""

    def _stages(self, make_block, in_channels: int, layers, filters) -> None:
        if len(layers) != len(filters) or not layers:
            raise ValueError(f"{type(self).__name__}: layers {tuple(layers)} and filters {tuple(filters)} need "
                             f"the same positive length")
        self.stage_names = []
        for i, (count, width) in enumerate(zip(layers, filters)):
            blocks = []
            for b in range(positive_int(count, f"{type(self).__name__}: layers[{i}]")):
                blocks.append(make_block(in_channels, width, 2 if (i > 0 and b == 0) else 1, b == 0, str(b)))
                in_channels = width * _Bottleneck.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks, name=f"layer{i + 1}"))
            self.stage_names.append(f"layer{i + 1}")

    def _head(self, num_classes: int) -> None:
        self.avgpool = nn.GlobalAvgPool2D(name="avgpool")
        self.fc = nn.Dense(positive_int(num_classes, f"{type(self).__name__}: num_classes"), name="fc")

    def _path(self) -> list:
        return [*self._stem(), *(getattr(self, s) for s in self.stage_names), self.avgpool, self.fc]

    def _stem(self) -> list:
        raise NotImplementedError

    def trace(self, shape, step):
        shape = nhwc(self, shape)
        for layer in self._path():
            shape = step(layer, shape)
        return shape

    def forward(self, x) -> Tensor:
        for layer in self._path():
            x = layer(x)
        return x


@register_with_arguments
class SKNet(_Network):
    """SKNet: ResNeXt's stem (conv1 7x7/``stem_stride`` to ``stem_width`` - bn1 - ReLU [-
    maxpool 3x3/2 when ``stem_pool``]), stages of :class:`SKBlock` (``layers`` blocks of
    ``filters``), global average pool, ``fc``; outputs logits."""

    default_name = "sknet"

    def __init__(self, layers=(3, 4, 6, 3), num_classes: int = 1000, filters=(64, 128, 256, 512), groups: int = 32,
                 base_width: int = 4, branches: int = 2, reduction: int = 16, min_dim: int = 32,
                 stem_width: int = 64, stem_stride: int = 2, stem_pool: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.conv1 = nn.Conv2D(positive_int(stem_width, "SKNet: stem_width"), 7, stride=stem_stride, padding=3,
                               use_bias=False, name="conv1")
        self.bn1 = nn.BatchNorm(name="bn1")
        self.relu = nn.ReLU(name="relu")
        self.stem_pool = bool(stem_pool)
        if self.stem_pool:
            self.maxpool = nn.MaxPool2D(3, stride=2, padding=1, name="maxpool")
        self._stages(lambda c, f, s, first, n: SKBlock(c, f, s, groups, base_width, branches, reduction, min_dim,
                                                       name=n), stem_width, layers, filters)
        self._head(num_classes)

    def _stem(self) -> list:
        return [self.conv1, self.bn1, self.relu, *([self.maxpool] if self.stem_pool else [])]


@register_with_arguments
class ResNeSt(_Network):
    """ResNeSt: the deep stem (``conv1``: 3x3/``stem_stride`` to ``stem_width`` - BN - ReLU -
    3x3 - BN - ReLU - 3x3 to 2 ``stem_width``; bn1 - ReLU [- maxpool 3x3/2 when ``stem_pool``]),
    stages of :class:`ResNeStBottleneck` (``layers`` blocks of ``filters``), global average
    pool, ``fc``; outputs logits."""

    default_name = "resnest"

    def __init__(self, layers=(3, 4, 6, 3), num_classes: int = 1000, filters=(64, 128, 256, 512), groups: int = 1,
                 base_width: int = 64, radix: int = 2, avd: bool = True, reduction: int = 4, min_inter: int = 32,
                 stem_width: int = 32, stem_stride: int = 2, stem_pool: bool = True, name: str | None = None):
        super().__init__(name=name)
        stem_width = positive_int(stem_width, "ResNeSt: stem_width")
        self.conv1 = nn.Sequential(_conv_bn_relu(stem_width, 3, stem_stride, name="0"),
                                   _conv_bn_relu(stem_width, 3, name="1"),
                                   nn.Conv2D(2 * stem_width, 3, padding=1, use_bias=False, name="2"), name="conv1")
        self.bn1 = nn.BatchNorm(name="bn1")
        self.relu = nn.ReLU(name="relu")
        self.stem_pool = bool(stem_pool)
        if self.stem_pool:
            self.maxpool = nn.MaxPool2D(3, stride=2, padding=1, name="maxpool")
        self._stages(lambda c, f, s, first, n: ResNeStBottleneck(c, f, s, groups, base_width, radix, avd, first,
                                                                 reduction, min_inter, name=n),
                     2 * stem_width, layers, filters)
        self._head(num_classes)

    def _stem(self) -> list:
        return [self.conv1, self.bn1, self.relu, *([self.maxpool] if self.stem_pool else [])]


def sknet50(num_classes: int = 1000) -> SKNet:
    """SKNet-50: ResNeXt-50 32x4d with SK[M=2, G=32, r=16, L=32] units; 27,494,888 parameters."""
    return SKNet((3, 4, 6, 3), num_classes, name="sknet50")


def sknet_tiny(num_classes: int = 10) -> SKNet:
    """A two-stage SKNet for small images (8x8 digits): a 7x7/1 stem to 8 channels without max
    pooling, one SK block of 4 and one of 8 filters (groups 2, d >= 4)."""
    return SKNet((1, 1), num_classes, filters=(4, 8), groups=2, base_width=32, reduction=4, min_dim=4,
                 stem_width=8, stem_stride=1, stem_pool=False, name="sknet_tiny")


def resnest50(num_classes: int = 1000) -> ResNeSt:
    """ResNeSt-50 (radix 2, cardinality 1, width 64, deep stem of 32, avd, avg_down); 27,483,240 parameters."""
    return ResNeSt((3, 4, 6, 3), num_classes, name="resnest50")


def resnest_tiny(num_classes: int = 10) -> ResNeSt:
    """A two-stage ResNeSt for small images: deep stem of 4 (stride 1, no max pooling), one
    radix-2 bottleneck of 4 and of 8 filters (cardinality 2, attention width >= 4)."""
    return ResNeSt((1, 1), num_classes, filters=(4, 8), groups=2, base_width=32, min_inter=4, stem_width=4,
                   stem_stride=1, stem_pool=False, name="resnest_tiny")
