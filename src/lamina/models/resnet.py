"""Residual networks (He et al. 2015, "Deep Residual Learning for Image Recognition"; course
notes, ResNet): a^[l+2] = ReLU(z^[l+2] + a^[l]).

ImageNet models in torchvision's layout (v1.5: the stride of a bottleneck sits on its 3x3
convolution), so torchvision weights map one to one (:func:`lamina.models.load_torchvision_state_dict`):

    conv1 7x7/2 (64, no bias) - bn1 - relu - maxpool 3x3/2 pad 1
    layer1..layer4: stages of residual blocks with 64, 128, 256, 512 filters; the first block
        of layers 2-4 halves the map with a stride-2 convolution (no pooling inside stages)
        and projects its shortcut with a 1x1 convolution + BN (``downsample``)
    avgpool (global average) - fc

Parameters with 1000 classes: ResNet-18 11,689,512; -34 21,797,672; -50 25,557,032;
-101 44,549,160; -152 60,192,808.

ResNeXt (Xie et al. 2017, "Aggregated Residual Transformations for Deep Neural Networks") and
wide ResNets (Zagoruyko & Komodakis 2016) are the same network with wider bottlenecks: the
3x3 convolution of a bottleneck with ``filters`` = 64, 128, 256, 512 has
width = floor(filters · width_per_group / 64) · groups channels split into ``groups``
independent groups (a grouped convolution: each group sees width / groups input channels).
ResNeXt-50 32x4d: 32 groups of 4 channels in layer1 (25,028,904 parameters); -101 32x8d
88,791,336; -101 64x4d 83,455,272. Wide ResNet-50-2 and -101-2 keep one group but double the
width (width_per_group 128): 68,883,240 and 126,886,696 parameters.

:func:`resnet_cifar` is the paper's CIFAR-10 family (section 4.2): a 3x3 conv with 16
filters, three stages of n basic blocks with 16, 32 and 64 filters (depth = 6n + 2: 20, 32,
44, 56, 110), global average pooling and a 10-way fc; the shortcuts that change shape use
option A (zero-padding identity, no parameters) or option B (projection).
"""

from __future__ import annotations

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.blocks import Block, check_input, classifier_layers, finish, identity_shortcut, nhwc, residual_sum
from lamina.nn.layer import register_layer

__all__ = [
    "BasicBlock", "Bottleneck", "resnet", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "resnet_cifar", "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2",
    "wide_resnet101_2",
]

SHORTCUTS = ("A", "B")


def _projection(filters: int, stride: int) -> nn.Sequential:
    """Shortcut projection W_s a^[l]: a 1x1 convolution with the block's stride, then BN
    (torchvision's ``downsample``: keys ``downsample.0.weight``, ``downsample.1.running_mean``)."""
    return nn.Sequential(nn.Conv2D(filters, 1, stride=stride, use_bias=False, name="0"),
                         nn.BatchNorm(name="1"), name="downsample")


class _Residual(Block):
    """What the basic and the bottleneck block share: the shortcut and the final add + ReLU."""

    expansion = 1

    def _setup_shortcut(self, out_channels: int, stride: int, downsample: bool, shortcut: str) -> None:
        if shortcut not in SHORTCUTS:
            raise ValueError(f"{type(self).__name__}: shortcut must be 'A' (zero padding) or 'B' "
                             f"(projection), got {shortcut!r}")
        self.out_channels = out_channels
        self.stride = int(stride)
        self.has_downsample = bool(downsample)
        self.shortcut = shortcut
        if downsample and shortcut == "B":
            self.downsample = _projection(out_channels, stride)

    def _shortcut_shape(self, shape, step):
        if not self.has_downsample:
            return identity_shortcut(self, shape, shape[3], self.out_channels, self.stride)
        if self.shortcut == "B":
            return step(self.downsample, shape)
        if shape[3] is not None and shape[3] > self.out_channels:
            raise ShapeError(f"{self._label()}: option A pads channels with zeros and cannot reduce "
                             f"{shape[3]} channels to {self.out_channels}")
        s = self.stride
        hw = [None if n is None else -(-n // s) for n in shape[1:3]]
        return (shape[0], hw[0], hw[1], self.out_channels)

    def _join(self, out_shape, short_shape):
        return residual_sum(self, out_shape, short_shape)

    def _shortcut(self, x: Tensor) -> Tensor:
        if not self.has_downsample:
            return x
        if self.shortcut == "B":
            return self.downsample(x)
        # option A: subsample the map with the stride, append zero channels (no parameters)
        s = self.stride
        sub = F.getitem(x, (slice(None), slice(None, None, s), slice(None, None, s))) if s > 1 else x
        extra = self.out_channels - x.shape[3]
        if extra == 0:
            return sub
        before = extra // 2
        return F.pad(sub, ((0, 0), (0, 0), (0, 0), (before, extra - before)))

    def _shortcut_config(self) -> dict:
        return {"stride": self.stride, "downsample": self.has_downsample, "shortcut": self.shortcut,
                "name": self.name}


@register_layer
class BasicBlock(_Residual):
    """The two-layer residual block of ResNet-18/34 and the CIFAR ResNets:

        out = ReLU(bn2(conv2(ReLU(bn1(conv1(x))))) + shortcut(x))

    conv1: 3x3 with ``stride``, conv2: 3x3, both ``filters`` filters, padding 1, no bias.
    ``downsample``: the shortcut changes shape (stride 2 or more channels): option 'B'
    projects it (1x1 conv with the stride + BN, sub-layer ``downsample``), option 'A'
    subsamples the map and pads the new channels with zeros (He et al., CIFAR experiments).
    """

    default_name = "basic_block"
    expansion = 1

    def __init__(self, filters: int, stride: int = 1, downsample: bool = False, shortcut: str = "B",
                 name: str | None = None):
        super().__init__(name=name)
        self.filters = int(filters)
        self.conv1 = nn.Conv2D(filters, 3, stride=stride, padding=1, use_bias=False, name="conv1")
        self.bn1 = nn.BatchNorm(name="bn1")
        self.conv2 = nn.Conv2D(filters, 3, stride=1, padding=1, use_bias=False, name="conv2")
        self.bn2 = nn.BatchNorm(name="bn2")
        self._setup_shortcut(filters, stride, downsample, shortcut)

    def trace(self, shape, step):
        shape = nhwc(self, shape)
        out = step(self.bn1, step(self.conv1, shape))
        out = step(self.bn2, step(self.conv2, out))
        return self._join(out, self._shortcut_shape(shape, step))

    def forward(self, x) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(F.add(out, self._shortcut(x)))

    def get_config(self) -> dict:
        return {"filters": self.filters, **self._shortcut_config()}

    def extra_repr(self) -> str:
        return f"{self.filters}, stride={self.stride}" + (", downsample" if self.has_downsample else "")


@register_layer
class Bottleneck(_Residual):
    """The three-layer bottleneck block of ResNet-50/101/152 (torchvision v1.5):

        1x1 conv (width) - BN - ReLU - 3x3 conv (width, ``stride``) - BN - ReLU
        - 1x1 conv (4 ``filters``) - BN, + shortcut, ReLU

    with width = filters · base_width / 64 · groups (64 and 1 for ResNet; ResNeXt and wide
    ResNets change them). The 1x1 convolutions shrink and restore the channels around the
    costly 3x3 one (course notes: 1x1 convolutions as learned compression). ``dilation`` d
    dilates the 3x3 convolution (padding d keeps the map's size): the backbones of
    segmentation networks trade strides for dilation.
    """

    default_name = "bottleneck"
    expansion = 4

    def __init__(self, filters: int, stride: int = 1, downsample: bool = False, groups: int = 1,
                 base_width: int = 64, shortcut: str = "B", dilation: int = 1, name: str | None = None):
        super().__init__(name=name)
        self.filters, self.groups, self.base_width = int(filters), int(groups), int(base_width)
        self.dilation = int(dilation)
        width = int(filters * (base_width / 64.0)) * groups
        self.conv1 = nn.Conv2D(width, 1, use_bias=False, name="conv1")
        self.bn1 = nn.BatchNorm(name="bn1")
        self.conv2 = nn.Conv2D(width, 3, stride=stride, padding=self.dilation, groups=groups, use_bias=False,
                               dilation=self.dilation, name="conv2")
        self.bn2 = nn.BatchNorm(name="bn2")
        self.conv3 = nn.Conv2D(filters * self.expansion, 1, use_bias=False, name="conv3")
        self.bn3 = nn.BatchNorm(name="bn3")
        self._setup_shortcut(filters * self.expansion, stride, downsample, shortcut)

    def trace(self, shape, step):
        shape = nhwc(self, shape)
        out = step(self.bn1, step(self.conv1, shape))
        out = step(self.bn2, step(self.conv2, out))
        out = step(self.bn3, step(self.conv3, out))
        return self._join(out, self._shortcut_shape(shape, step))

    def forward(self, x) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(F.add(out, self._shortcut(x)))

    def get_config(self) -> dict:
        return {"filters": self.filters, "groups": self.groups, "base_width": self.base_width,
                "dilation": self.dilation, **self._shortcut_config()}

    def extra_repr(self) -> str:
        return f"{self.filters}, stride={self.stride}" + (", downsample" if self.has_downsample else "")


def _stage(block: type[_Residual], in_channels: int, filters: int, blocks: int, stride: int, name: str,
           shortcut: str = "B", dilation: tuple[int, int] = (1, 1), **widths) -> tuple[nn.Sequential, int]:
    """``blocks`` residual blocks named '0', '1', ... (torchvision's ``layerN.i``); the first
    one carries the stride and a shape-changing shortcut when needed. ``widths``: a
    bottleneck's ``groups`` and ``base_width``, when given. ``dilation``: (the first block's,
    the others'), as torchvision's stride-to-dilation swap gives them (bottlenecks only)."""
    out_channels = filters * block.expansion
    first_dilation, dilation = dilation
    first = block(filters, stride=stride, downsample=stride != 1 or in_channels != out_channels,
                  shortcut=shortcut, name="0", **widths, **_dilated(first_dilation))
    rest = [block(filters, shortcut=shortcut, name=str(i), **widths, **_dilated(dilation)) for i in range(1, blocks)]
    return nn.Sequential(first, *rest, name=name), out_channels


def _dilated(dilation: int) -> dict:
    return {} if dilation == 1 else {"dilation": dilation}


def _head(layers: list, num_classes: int, classifier_activation: str | None) -> None:
    layers += [nn.GlobalAvgPool2D(name="avgpool"), nn.Dense(num_classes, name="fc")]
    layers += classifier_layers(classifier_activation)


BLOCKS = {18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)), 50: (Bottleneck, (3, 4, 6, 3)),
          101: (Bottleneck, (3, 4, 23, 3)), 152: (Bottleneck, (3, 8, 36, 3))}


def _check_widths(depth: int, groups, width_per_group, block: type[_Residual]) -> dict:
    for what, value in (("groups", groups), ("width_per_group", width_per_group)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"resnet: {what} must be a positive int, got {value!r}")
    if (groups, width_per_group) == (1, 64):
        return {}
    if block is not Bottleneck:
        raise ValueError(f"resnet: groups and width_per_group need bottleneck blocks (depth 50, 101 or 152); "
                         f"ResNet-{depth} has basic blocks (got groups={groups}, width_per_group={width_per_group})")
    return {"groups": groups, "base_width": width_per_group}


def _check_dilation_flags(flags, block: type[_Residual]) -> tuple[bool, bool, bool]:
    flags = tuple(bool(f) for f in flags)
    if len(flags) != 3:
        raise ValueError(f"resnet: replace_stride_with_dilation needs 3 flags (layer2..layer4), got {flags!r}")
    if any(flags) and block is not Bottleneck:
        raise ValueError("resnet: replace_stride_with_dilation needs bottleneck blocks (depth 50, 101 or 152)")
    return flags


def resnet(depth: int, num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
           classifier_activation: str | None = None, groups: int = 1, width_per_group: int = 64,
           replace_stride_with_dilation: tuple[bool, bool, bool] = (False, False, False),
           name: str | None = None) -> nn.Sequential:
    """An ImageNet ResNet of ``depth`` 18, 34, 50, 101 or 152 (torchvision layout; unbuilt).

    The output is the fc layer's scores (logits), as torchvision's; pass
    ``classifier_activation='softmax'`` to end with a softmax layer named 'predictions'.
    ``model.input_shape`` holds (None, *input_shape). ``groups`` and ``width_per_group``
    widen the bottlenecks' 3x3 convolutions (ResNeXt, wide ResNets; see the module
    docstring); ``name`` defaults to 'resnet<depth>'.

    ``replace_stride_with_dilation`` (one flag for each of layer2..layer4, as torchvision's):
    a flagged stage keeps stride 1 and dilates its 3x3 convolutions instead (its first block
    with the dilation so far, the others with it times 2), so the output stride is 8 with
    (False, True, True), the backbone of DeepLabv3 and FCN; bottleneck ResNets only.
    """
    if depth not in BLOCKS:
        raise ValueError(f"resnet: depth must be one of {sorted(BLOCKS)}, got {depth!r}")
    block, counts = BLOCKS[depth]
    widths = _check_widths(depth, groups, width_per_group, block)
    name = name or f"resnet{depth}"
    input_shape = check_input(input_shape, name)
    layers: list = [
        nn.Conv2D(64, 7, stride=2, padding=3, use_bias=False, name="conv1"),
        nn.BatchNorm(name="bn1"),
        nn.ReLU(name="relu"),
        nn.MaxPool2D(3, stride=2, padding=1, name="maxpool"),
    ]
    channels, dilation = 64, 1
    flags = _check_dilation_flags(replace_stride_with_dilation, block)
    for i, (filters, count) in enumerate(zip((64, 128, 256, 512), counts)):
        stride, previous = (1 if i == 0 else 2), dilation
        if i > 0 and flags[i - 1]:
            dilation, stride = dilation * stride, 1
        stage, channels = _stage(block, channels, filters, count, stride, f"layer{i + 1}",
                                 dilation=(previous, dilation), **widths)
        layers.append(stage)
    _head(layers, num_classes, classifier_activation)
    return finish(nn.Sequential(*layers, name=name), input_shape)


def resnet18(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
             classifier_activation: str | None = None) -> nn.Sequential:
    """ResNet-18: basic blocks (2, 2, 2, 2); 11,689,512 parameters with 1000 classes."""
    return resnet(18, num_classes, input_shape, classifier_activation)


def resnet34(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
             classifier_activation: str | None = None) -> nn.Sequential:
    """ResNet-34 (the course notes' 34-layer network): basic blocks (3, 4, 6, 3); 21,797,672 parameters."""
    return resnet(34, num_classes, input_shape, classifier_activation)


def resnet50(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
             classifier_activation: str | None = None) -> nn.Sequential:
    """ResNet-50: bottlenecks (3, 4, 6, 3); 25,557,032 parameters with 1000 classes."""
    return resnet(50, num_classes, input_shape, classifier_activation)


def resnet101(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
              classifier_activation: str | None = None) -> nn.Sequential:
    """ResNet-101: bottlenecks (3, 4, 23, 3); 44,549,160 parameters with 1000 classes."""
    return resnet(101, num_classes, input_shape, classifier_activation)


def resnet152(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
              classifier_activation: str | None = None) -> nn.Sequential:
    """ResNet-152 (the course comparison table's ~60 M): bottlenecks (3, 8, 36, 3); 60,192,808 parameters."""
    return resnet(152, num_classes, input_shape, classifier_activation)


def resnext50_32x4d(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                    classifier_activation: str | None = None) -> nn.Sequential:
    """ResNeXt-50 32x4d: ResNet-50 with 32 groups of 4 channels in layer1's 3x3 convolutions
    (width 128; 256, 512, 1024 in layers 2-4); 25,028,904 parameters with 1000 classes."""
    return resnet(50, num_classes, input_shape, classifier_activation, groups=32, width_per_group=4,
                  name="resnext50_32x4d")


def resnext101_32x8d(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                     classifier_activation: str | None = None) -> nn.Sequential:
    """ResNeXt-101 32x8d: ResNet-101 with 32 groups of 8 channels; 88,791,336 parameters."""
    return resnet(101, num_classes, input_shape, classifier_activation, groups=32, width_per_group=8,
                  name="resnext101_32x8d")


def resnext101_64x4d(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                     classifier_activation: str | None = None) -> nn.Sequential:
    """ResNeXt-101 64x4d: ResNet-101 with 64 groups of 4 channels; 83,455,272 parameters."""
    return resnet(101, num_classes, input_shape, classifier_activation, groups=64, width_per_group=4,
                  name="resnext101_64x4d")


def wide_resnet50_2(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                    classifier_activation: str | None = None) -> nn.Sequential:
    """Wide ResNet-50-2: ResNet-50 with bottlenecks twice as wide (128, 256, 512, 1024
    channels around the 3x3 convolutions); 68,883,240 parameters with 1000 classes."""
    return resnet(50, num_classes, input_shape, classifier_activation, width_per_group=128,
                  name="wide_resnet50_2")


def wide_resnet101_2(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
                     classifier_activation: str | None = None) -> nn.Sequential:
    """Wide ResNet-101-2: ResNet-101 with bottlenecks twice as wide; 126,886,696 parameters."""
    return resnet(101, num_classes, input_shape, classifier_activation, width_per_group=128,
                  name="wide_resnet101_2")


def resnet_cifar(depth: int = 20, num_classes: int = 10, input_shape: tuple[int, int, int] = (32, 32, 3),
                 shortcut: str = "A", classifier_activation: str | None = None) -> nn.Sequential:
    """He et al.'s CIFAR-10 ResNet (section 4.2): depth = 6n + 2 (20, 32, 44, 56, 110, ...).

    conv1 3x3 16 (no bias) - bn1 - relu - layer1 (n basic blocks, 16 filters) - layer2 (n, 32,
    the first with stride 2) - layer3 (n, 64, stride 2) - avgpool (global) - fc. ``shortcut``
    'A': shape-changing shortcuts subsample with the stride and pad the new channels with zeros
    (no parameters; ResNet-20: 269,722 parameters); 'B': 1x1 projections (272,474).
    Names follow the torchvision pattern (conv1, bn1, layerK.i.conv1, ..., fc).
    """
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"resnet_cifar: depth must be 6n + 2 with n >= 1 (20, 32, 44, 56, 110), got {depth!r}")
    if shortcut not in SHORTCUTS:
        raise ValueError(f"resnet_cifar: shortcut must be 'A' or 'B', got {shortcut!r}")
    input_shape = check_input(input_shape, "resnet_cifar")
    n = (depth - 2) // 6
    layers: list = [
        nn.Conv2D(16, 3, padding=1, use_bias=False, name="conv1"),
        nn.BatchNorm(name="bn1"),
        nn.ReLU(name="relu"),
    ]
    channels = 16
    for i, filters in enumerate((16, 32, 64)):
        stage, channels = _stage(BasicBlock, channels, filters, n, 1 if i == 0 else 2, f"layer{i + 1}",
                                 shortcut=shortcut)
        layers.append(stage)
    _head(layers, num_classes, classifier_activation)
    return finish(nn.Sequential(*layers, name=f"resnet{depth}_cifar"), input_shape)
