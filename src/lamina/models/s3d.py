"""S3D (Xie et al. 2018, "Rethinking Spatiotemporal Feature Learning"): an Inception
network whose 3-D convolutions are separable, a 1xkxk spatial convolution followed by a
kx1x1 temporal one, each with BN and ReLU. torchvision's ``models.video.s3d`` layout and
names; NDHWC clips (batch, frames, height, width, channels).

    features: 0 separable 7x7x7 conv (64, stride 2) - 1 max pool 1x3x3/(1, 2, 2)
              - 2 1x1x1 conv (64) - 3 separable 3x3x3 conv (192) - 4 max pool 1x3x3/(1, 2, 2)
              - 5, 6 inception blocks (Mixed_3b, 3c) - 7 max pool 3x3x3/2
              - 8..12 inception blocks (4b..4f) - 13 max pool 2x2x2/2 - 14, 15 (5b, 5c)
    avgpool 2x7x7 (stride 1) - classifier (0 dropout, 1 1x1x1 conv with bias) - mean over
    frames, height and width

Every convolution is bias-free and followed by BN (eps 0.001, PyTorch momentum 0.001) and
ReLU. 8,320,048 parameters with 400 classes. The 2x7x7 pool needs 16 frames of 224x224
(the default ``input_shape``); larger clips give a map of scores averaged at the end.
"""

from __future__ import annotations

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.blocks import Block, PathBlock, classifier_layers
from lamina.models.video import check_clip_shape, ndhwc
from lamina.nn.layer import register_layer
from lamina.nn.module import Module

__all__ = ["ConvBN3D", "SepInceptionBlock3D", "TemporalSeparableConv", "s3d"]

BN_EPS = 1e-3
BN_MOMENTUM = 0.999  # lamina's convention: PyTorch's momentum 0.001


def _triple(value) -> tuple[int, int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * 3


class _NumberedPath(PathBlock):
    """Sub-layers named '0', '1', ... run in order (torchvision's ``nn.Sequential`` keys)."""

    def _set_path(self, *layers: Module) -> None:
        for k, layer in enumerate(layers):
            setattr(self, str(k), layer)
        self._length = len(layers)

    def _path(self) -> list[Module]:
        return [self._modules[str(k)] for k in range(self._length)]

    def _input_shape(self, shape):
        return ndhwc(self, shape)


@register_layer
class ConvBN3D(_NumberedPath):
    """Conv3D (no bias, 'same'-style padding (f - 1) / 2 unless given) -> BatchNorm (eps
    0.001) -> ReLU, sub-layers '0', '1', '2' (torchvision's ``Conv3dNormActivation``)."""

    default_name = "conv_bn_3d"

    def __init__(self, filters: int, kernel_size=1, stride=1, padding=None, name: str | None = None):
        super().__init__(name=name)
        self.filters = int(filters)
        self.kernel_size, self.stride = _triple(kernel_size), _triple(stride)
        self.padding = tuple(f // 2 for f in self.kernel_size) if padding is None else _triple(padding)
        self._set_path(nn.Conv3D(self.filters, self.kernel_size, stride=self.stride, padding=self.padding,
                                 use_bias=False, name="0"),
                       nn.BatchNorm(momentum=BN_MOMENTUM, eps=BN_EPS, name="1"), nn.ReLU(name="2"))

    def get_config(self) -> dict:
        return {"filters": self.filters, "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": list(self.padding), "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.filters}, kernel_size={self.kernel_size}, stride={self.stride}"


@register_layer
class TemporalSeparableConv(_NumberedPath):
    """A kxkxk convolution factored as '0' ConvBN3D 1xkxk (stride (1, s, s), padding
    (0, p, p)) then '1' ConvBN3D kx1x1 (stride (s, 1, 1), padding (p, 0, 0))."""

    default_name = "temporal_separable_conv"

    def __init__(self, filters: int, kernel_size: int, stride: int = 1, padding: int = 0, name: str | None = None):
        super().__init__(name=name)
        self.filters, self.kernel_size, self.stride, self.padding = (int(filters), int(kernel_size), int(stride),
                                                                     int(padding))
        k, s, p = self.kernel_size, self.stride, self.padding
        self._set_path(ConvBN3D(self.filters, (1, k, k), (1, s, s), (0, p, p), name="0"),
                       ConvBN3D(self.filters, (k, 1, 1), (s, 1, 1), (p, 0, 0), name="1"))

    def get_config(self) -> dict:
        return {"filters": self.filters, "kernel_size": self.kernel_size, "stride": self.stride,
                "padding": self.padding, "name": self.name}


@register_layer
class SepInceptionBlock3D(Block):
    """An inception block with separable 3x3x3 convolutions; the four branches are joined
    along the channels:

        branch0: 1x1x1 ConvBN3D (b0)
        branch1: 1x1x1 ConvBN3D (b1_mid) - TemporalSeparableConv 3 (b1, padding 1)
        branch2: 1x1x1 ConvBN3D (b2_mid) - TemporalSeparableConv 3 (b2, padding 1)
        branch3: max pool 3x3x3 (stride 1, padding 1) - 1x1x1 ConvBN3D (b3)
    """

    default_name = "sep_inception_3d"

    def __init__(self, b0: int, b1_mid: int, b1: int, b2_mid: int, b2: int, b3: int, name: str | None = None):
        super().__init__(name=name)
        self.widths = tuple(int(v) for v in (b0, b1_mid, b1, b2_mid, b2, b3))
        self.branch0 = ConvBN3D(b0, name="branch0")
        self.branch1 = nn.Sequential(ConvBN3D(b1_mid, name="0"), TemporalSeparableConv(b1, 3, 1, 1, name="1"),
                                     name="branch1")
        self.branch2 = nn.Sequential(ConvBN3D(b2_mid, name="0"), TemporalSeparableConv(b2, 3, 1, 1, name="1"),
                                     name="branch2")
        self.branch3 = nn.Sequential(nn.MaxPool3D(3, stride=1, padding=1, name="0"), ConvBN3D(b3, name="1"),
                                     name="branch3")

    def _branches(self) -> tuple:
        return (self.branch0, self.branch1, self.branch2, self.branch3)

    def trace(self, shape, step):
        shape = ndhwc(self, shape)
        shapes = [step(branch, shape) for branch in self._branches()]
        if any(tuple(s[1:4]) != tuple(shapes[0][1:4]) for s in shapes):
            raise ShapeError(f"{self._label()}: the branches give volumes of shapes {shapes}; expected equal "
                             "frames, heights and widths to concatenate along the channels")
        return (*shapes[0][:4], sum(s[4] for s in shapes))

    def forward(self, x) -> Tensor:
        return F.concat([branch(x) for branch in self._branches()], axis=-1)

    def get_config(self) -> dict:
        names = ("b0", "b1_mid", "b1", "b2_mid", "b2", "b3")
        return {**dict(zip(names, self.widths)), "name": self.name}

    def extra_repr(self) -> str:
        return ", ".join(str(w) for w in self.widths)


# (b0, b1_mid, b1, b2_mid, b2, b3) of Mixed_3b .. Mixed_5c, with the max pools between them
INCEPTION = [
    (64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64), "pool3",
    (192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),
    (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128), "pool2",
    (256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128),
]


def s3d(num_classes: int = 400, input_shape=(16, 224, 224, 3), classifier_activation: str | None = None,
        dropout: float = 0.2) -> nn.Sequential:
    """S3D (see the module docstring; unbuilt): 8,320,048 parameters with 400 classes.

    Outputs are logits (the mean over the clip of the 1x1x1 classifier's scores) unless
    ``classifier_activation`` names an activation; ``dropout`` is the rate before the
    classifier. ``model.input_shape`` is (None, frames, height, width, channels).
    """
    input_shape = check_clip_shape(input_shape, "s3d")
    features: list[Module] = [
        TemporalSeparableConv(64, 7, 2, 3),
        nn.MaxPool3D((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        ConvBN3D(64),
        TemporalSeparableConv(192, 3, 1, 1),
        nn.MaxPool3D((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
    ]
    for spec in INCEPTION:
        if spec == "pool3":
            features.append(nn.MaxPool3D(3, stride=2, padding=1))
        elif spec == "pool2":
            features.append(nn.MaxPool3D(2, stride=2))
        else:
            features.append(SepInceptionBlock3D(*spec))
    for k, layer in enumerate(features):
        layer.name = str(k)
    layers: list[Module] = [
        nn.Sequential(*features, name="features"),
        nn.AvgPool3D((2, 7, 7), stride=1, name="avgpool"),
        nn.Sequential(nn.Dropout(dropout, name="0"), nn.Conv3D(num_classes, 1, name="1"), name="classifier"),
        nn.GlobalAvgPool3D(name="mean"),
    ]
    layers += classifier_layers(classifier_activation)
    model = nn.Sequential(*layers, name="s3d")
    model.input_shape = (None, *input_shape)
    return model
