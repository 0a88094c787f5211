"""Video classifiers on 3-D convolutions (Tran et al. 2018, "A Closer Look at Spatiotemporal
Convolutions for Action Recognition"), in torchvision's ``models.video`` layout and names.

Inputs are NDHWC clips (batch, frames, height, width, channels); torchvision's NCDHW
weights load with :func:`lamina.models.load_torchvision_state_dict`. The three ResNet-18
variants share one skeleton and differ in the convolution of their residual blocks:

* R3D ('3d', torchvision's ``Conv3DSimple``): a full 3x3x3 convolution, stride s on every axis;
* MC3 ('no_temporal', ``Conv3DNoTemporal``): a 1x3x3 convolution, stride (1, s, s) (mixed
  convolutions: 3-D in layer1, 2-D in layers 2-4);
* R(2+1)D ('2plus1d', :class:`Conv2Plus1D`): a 1x3x3 spatial convolution to m channels,
  BN, ReLU, then a 3x1x1 temporal one, with m chosen so that the pair has about the
  parameters of the full 3x3x3 convolution it replaces:

      m = floor(27 c_in c_out / (9 c_in + 3 c_out))

  (c_in, c_out: the block's input and output channels; both convolutions of a block use
  the m of its first).

    stem: R3D / MC3 3x7x7 conv (64, stride (1, 2, 2)) - BN - ReLU;
          R(2+1)D 1x7x7 conv (45, stride (1, 2, 2)) - BN - ReLU - 3x1x1 conv (64) - BN - ReLU
    layer1..layer4: 2 residual blocks each with 64, 128, 256, 512 filters, the first block
          of layers 2-4 with stride 2 and a 1x1x1 projection shortcut (``downsample``)
    avgpool (global) - fc

Parameters with 400 (Kinetics) classes: r3d_18 33,371,472; mc3_18 11,695,440;
r2plus1d_18 31,505,325. Multiply-adds at 16x112x112: 40.70, 43.34 and 40.52 G.
"""

from __future__ import annotations

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.blocks import Block, PathBlock, classifier_layers, identity_shortcut, residual_sum
from lamina.nn.layer import check_shape_ndim, register_layer
from lamina.nn.module import Module

__all__ = [
    "CONV_TYPES", "Conv2Plus1D", "VideoBasicBlock", "check_clip_shape", "mc3_18", "midplanes", "r2plus1d_18",
    "r3d_18", "video_resnet",
]

CONV_TYPES = ("3d", "no_temporal", "2plus1d")
NDHWC = "a 5-D NDHWC shape (batch, frames, height, width, channels)"
DEFAULT_CLIP = (16, 112, 112, 3)


def ndhwc(layer: Module, input_shape) -> tuple:
    return check_shape_ndim(layer, input_shape, 5, NDHWC)


def check_clip_shape(input_shape, what: str) -> tuple[int, int, int, int]:
    """A video builder's ``input_shape`` (frames, height, width, channels) as a tuple of ints."""
    try:
        shape = tuple(int(n) for n in input_shape)
    except (TypeError, ValueError):
        shape = ()
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError(f"{what}: input_shape must be (frames, height, width, channels), got {input_shape!r}")
    return shape  # type: ignore[return-value]


def midplanes(in_channels: int, out_channels: int) -> int:
    """The width m of an R(2+1)D block: floor(27 c_in c_out / (9 c_in + 3 c_out)), so that a
    1x3x3 (c_in -> m) plus a 3x1x1 (m -> c_out) convolution has about the 27 c_in c_out
    weights of a 3x3x3 one."""
    return (in_channels * out_channels * 27) // (in_channels * 9 + 3 * out_channels)


def _check_conv_type(conv_type, what: str) -> str:
    if conv_type not in CONV_TYPES:
        raise ValueError(f"{what}: conv_type must be one of {CONV_TYPES}, got {conv_type!r}")
    return conv_type


@register_layer
class Conv2Plus1D(PathBlock):
    """A 3x3x3 convolution factored into space and time (torchvision's ``Conv2Plus1D``):

        conv 1x3x3 (``midplanes``, stride (1, s, s), padding (0, 1, 1)) - BN - ReLU
        - conv 3x1x1 (``filters``, stride (s, 1, 1), padding (1, 0, 0))

    both without bias; sub-layers '0', '1', '2', '3' as torchvision's.
    """

    default_name = "conv2plus1d"

    def __init__(self, filters: int, midplanes: int, stride: int = 1, name: str | None = None):
        super().__init__(name=name)
        self.filters, self.midplanes, self.stride = int(filters), int(midplanes), int(stride)
        s = self.stride
        layers = (
            nn.Conv3D(self.midplanes, (1, 3, 3), stride=(1, s, s), padding=(0, 1, 1), use_bias=False, name="0"),
            nn.BatchNorm(name="1"),
            nn.ReLU(name="2"),
            nn.Conv3D(self.filters, (3, 1, 1), stride=(s, 1, 1), padding=(1, 0, 0), use_bias=False, name="3"),
        )
        for layer in layers:  # torchvision's keys: '0.weight', '1.running_mean', '3.weight'
            setattr(self, layer.name, layer)

    def _path(self) -> list[Module]:
        return [self._modules[key] for key in ("0", "1", "2", "3")]

    def _input_shape(self, shape):
        return ndhwc(self, shape)

    def get_config(self) -> dict:
        return {"filters": self.filters, "midplanes": self.midplanes, "stride": self.stride, "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.filters}, midplanes={self.midplanes}, stride={self.stride}"


def _block_conv(conv_type: str, filters: int, mid: int, stride: int) -> Module:
    """The convolution of a residual block, named '0' inside its ``convN`` sequence."""
    if conv_type == "3d":
        return nn.Conv3D(filters, 3, stride=stride, padding=1, use_bias=False, name="0")
    if conv_type == "no_temporal":
        return nn.Conv3D(filters, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), use_bias=False, name="0")
    return Conv2Plus1D(filters, mid, stride, name="0")


def _downsample_stride(conv_type: str, stride: int) -> tuple[int, int, int]:
    """The shortcut's stride follows the block's convolution: no temporal stride for MC3."""
    return (1, stride, stride) if conv_type == "no_temporal" else (stride, stride, stride)


@register_layer
class VideoBasicBlock(Block):
    """The two-convolution residual block of the video ResNets (torchvision's video
    ``BasicBlock``):

        out = ReLU(conv2(ReLU(conv1(x))) + shortcut(x)),  convN = conv - BN

    with the convolution of ``conv_type`` ('3d', 'no_temporal' or '2plus1d', see the module
    docstring), ``filters`` output channels and ``stride`` in conv1. ``in_channels`` fixes
    the width of the R(2+1)D convolutions (:func:`midplanes`). ``downsample``: the shortcut
    is a 1x1x1 convolution (no bias, the block's stride, none in time for 'no_temporal') + BN.
    Sub-layers ``conv1`` ('0' conv, '1' BN, '2' ReLU), ``conv2`` ('0', '1'), ``downsample``.
    """

    default_name = "video_basic_block"

    def __init__(self, in_channels: int, filters: int, conv_type: str = "3d", stride: int = 1,
                 downsample: bool = False, name: str | None = None):
        super().__init__(name=name)
        self.in_channels, self.filters, self.stride = int(in_channels), int(filters), int(stride)
        self.conv_type = _check_conv_type(conv_type, "VideoBasicBlock")
        self.has_downsample = bool(downsample)
        mid = midplanes(self.in_channels, self.filters)
        self.conv1 = nn.Sequential(_block_conv(conv_type, self.filters, mid, self.stride), nn.BatchNorm(name="1"),
                                   nn.ReLU(name="2"), name="conv1")
        self.conv2 = nn.Sequential(_block_conv(conv_type, self.filters, mid, 1), nn.BatchNorm(name="1"),
                                   name="conv2")
        if self.has_downsample:
            self.downsample = nn.Sequential(
                nn.Conv3D(self.filters, 1, stride=_downsample_stride(conv_type, self.stride), use_bias=False,
                          name="0"),
                nn.BatchNorm(name="1"), name="downsample")

    def trace(self, shape, step):
        shape = ndhwc(self, shape)
        if shape[4] is not None and shape[4] != self.in_channels:
            raise ShapeError(f"{self._label()}: got an input of shape {tuple(shape)}; expected {self.in_channels} "
                             f"channels (the block was made for in_channels={self.in_channels})")
        out = step(self.conv2, step(self.conv1, shape))
        if self.has_downsample:
            short = step(self.downsample, shape)
        else:
            short = identity_shortcut(self, shape, self.in_channels, self.filters, self.stride)
        return residual_sum(self, out, short)

    def forward(self, x) -> Tensor:
        out = self.conv2(self.conv1(x))
        shortcut = self.downsample(x) if self.has_downsample else x
        return F.relu(F.add(out, shortcut))

    def get_config(self) -> dict:
        return {"in_channels": self.in_channels, "filters": self.filters, "conv_type": self.conv_type,
                "stride": self.stride, "downsample": self.has_downsample, "name": self.name}

    def extra_repr(self) -> str:
        text = f"{self.in_channels} -> {self.filters}, {self.conv_type}, stride={self.stride}"
        return text + (", downsample" if self.has_downsample else "")


def _stem(kind: str, channels: int, stem_midplanes: int) -> nn.Sequential:
    if kind == "basic":  # torchvision's BasicStem
        layers = [nn.Conv3D(channels, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), use_bias=False, name="0"),
                  nn.BatchNorm(name="1"), nn.ReLU(name="2")]
    else:  # R2Plus1dStem: the 3x7x7 convolution factored into space and time
        layers = [nn.Conv3D(stem_midplanes, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), use_bias=False, name="0"),
                  nn.BatchNorm(name="1"), nn.ReLU(name="2"),
                  nn.Conv3D(channels, (3, 1, 1), padding=(1, 0, 0), use_bias=False, name="3"),
                  nn.BatchNorm(name="4"), nn.ReLU(name="5")]
    return nn.Sequential(*layers, name="stem")


def _positive_ints(values, what: str, name: str) -> tuple[int, ...]:
    values = tuple(values)
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise ValueError(f"{name}: {what} must be positive ints, got {values!r}")
    return values


def video_resnet(conv_types=("3d",) * 4, stem: str = "basic", blocks=(2, 2, 2, 2), widths=(64, 128, 256, 512),
                 num_classes: int = 400, input_shape=DEFAULT_CLIP, classifier_activation: str | None = None,
                 stem_midplanes: int = 45, name: str = "video_resnet") -> nn.Sequential:
    """A video ResNet of basic blocks (torchvision's ``VideoResNet``; unbuilt).

    ``conv_types``: one block convolution per stage ('3d', 'no_temporal', '2plus1d');
    ``stem``: 'basic' (3x7x7) or 'r2plus1d' (1x7x7 to ``stem_midplanes`` channels, then
    3x1x1); ``blocks`` and ``widths``: blocks and filters per stage (the first stage keeps
    stride 1, the others halve time, height and width, but for 'no_temporal' which keeps the
    frames). The stem gives ``widths[0]`` channels. Outputs are logits unless
    ``classifier_activation`` names an activation; ``model.input_shape`` is (None, frames,
    height, width, channels).
    """
    conv_types = tuple(_check_conv_type(t, name) for t in conv_types)
    blocks = _positive_ints(blocks, "blocks", name)
    widths = _positive_ints(widths, "widths", name)
    if not len(conv_types) == len(blocks) == len(widths):
        raise ValueError(f"{name}: conv_types, blocks and widths need one entry per stage, got {len(conv_types)}, "
                         f"{len(blocks)} and {len(widths)}")
    if stem not in ("basic", "r2plus1d"):
        raise ValueError(f"{name}: stem must be 'basic' or 'r2plus1d', got {stem!r}")
    input_shape = check_clip_shape(input_shape, name)
    layers: list[Module] = [_stem(stem, widths[0], int(stem_midplanes))]
    channels = widths[0]
    for i, (conv_type, count, filters) in enumerate(zip(conv_types, blocks, widths)):
        stride = 1 if i == 0 else 2
        first = VideoBasicBlock(channels, filters, conv_type, stride, downsample=stride != 1 or channels != filters,
                                name="0")
        rest = [VideoBasicBlock(filters, filters, conv_type, name=str(k)) for k in range(1, count)]
        layers.append(nn.Sequential(first, *rest, name=f"layer{i + 1}"))
        channels = filters
    layers += [nn.GlobalAvgPool3D(name="avgpool"), nn.Dense(num_classes, name="fc")]
    layers += classifier_layers(classifier_activation)
    model = nn.Sequential(*layers, name=name)
    model.input_shape = (None, *input_shape)
    return model


def r3d_18(num_classes: int = 400, input_shape=DEFAULT_CLIP, classifier_activation: str | None = None) -> nn.Sequential:
    """R3D-18: full 3x3x3 convolutions in every block; 33,371,472 parameters with 400 classes."""
    return video_resnet(("3d",) * 4, "basic", num_classes=num_classes, input_shape=input_shape,
                        classifier_activation=classifier_activation, name="r3d_18")


def mc3_18(num_classes: int = 400, input_shape=DEFAULT_CLIP, classifier_activation: str | None = None) -> nn.Sequential:
    """MC3-18: 3x3x3 convolutions in layer1, 1x3x3 ones in layers 2-4; 11,695,440 parameters."""
    return video_resnet(("3d",) + ("no_temporal",) * 3, "basic", num_classes=num_classes, input_shape=input_shape,
                        classifier_activation=classifier_activation, name="mc3_18")


def r2plus1d_18(num_classes: int = 400, input_shape=DEFAULT_CLIP,
                classifier_activation: str | None = None) -> nn.Sequential:
    """R(2+1)D-18: every 3-D convolution factored into 1x3x3 and 3x1x1 ones; 31,505,325 parameters."""
    return video_resnet(("2plus1d",) * 4, "r2plus1d", num_classes=num_classes, input_shape=input_shape,
                        classifier_activation=classifier_activation, name="r2plus1d_18")
