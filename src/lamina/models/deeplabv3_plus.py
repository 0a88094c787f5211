"""DeepLabv3+ (Chen et al. 2018, "Encoder-Decoder with Atrous Separable Convolution for Semantic
Image Segmentation"): DeepLabv3's encoder with a light decoder that restores object boundaries.

    encoder:  y = ASPP(backbone(x))             at output stride 16 (ASPP rates 6, 12, 18) or 8
                                                 (12, 24, 36); 256 channels
    decoder:  l = ReLU(BN(W_1x1 f_low))          the low-level features f_low of an early stage
                                                 (stride 4), reduced to 48 channels
              z = [up_4(y); l]                   y bilinearly upsampled to f_low's size, joined
              z = ReLU(BN(conv3x3_256(z))) twice, s = W_cls z   (per-pixel class scores)
    output:   up_4(s)                            bilinear, to the input's height and width

``separable=True`` uses atrous depthwise-separable convolutions (a depthwise 3x3 with the
dilation, then a 1x1 across channels) for the three atrous ASPP branches
(:class:`SeparableASPP`) and the decoder's two 3x3 convolutions. Upsampling uses
align_corners=False, as torchvision's segmentation models.

:func:`deeplabv3_plus_resnet50` takes ResNet-50 (output stride 16 by default; the stem and the
four stages ``conv1`` ... ``layer4``, ``layer1`` giving the low-level features) and the
standard ASPP of :mod:`lamina.models.segmentation`; with 21 classes it has 40,354,069
parameters: torchvision's deeplabv3_resnet50 (39,638,869 without the aux head), whose head's
3x3 conv 256 -> 256 becomes the decoder's second, plus the decoder's 1x1 conv to 48 (12,288 +
96 BN) and first 3x3 conv (304 -> 256: 700,416 + 512 BN). With separable convolutions:
26,682,725. :func:`deeplabv3_plus_tiny` is a four-stage convolutional backbone
of a few thousand weights for CPU experiments.
"""

from __future__ import annotations

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.blocks import Block, ConvBN, check_input, finish, nhwc
from lamina.models.resnet import resnet
from lamina.models.segmentation import ASPP, ImagePooling, _conv_bn_relu
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import check_shape_ndim, input_error, positive_int, register_layer
from lamina.nn.module import as_tensor

__all__ = ["DeepLabV3Plus", "DeepLabV3PlusDecoder", "SeparableASPP", "deeplabv3_plus", "deeplabv3_plus_resnet50",
           "deeplabv3_plus_tiny"]

RATES = {16: (6, 12, 18), 8: (12, 24, 36)}


def _separable_bn_relu(filters: int, dilation: int = 1, name: str | None = None) -> nn.Sequential:
    """A 3x3 atrous depthwise-separable convolution (no bias) - BN - ReLU."""
    return nn.Sequential(nn.SeparableConv2D(filters, 3, padding=dilation, dilation=dilation, use_bias=False, name="0"),
                         nn.BatchNorm(name="1"), nn.ReLU(name="2"), name=name)


def _conv3x3(filters: int, separable: bool, name: str) -> nn.Sequential:
    return _separable_bn_relu(filters, name=name) if separable else _conv_bn_relu(filters, 3, name=name)


@register_layer
class SeparableASPP(ASPP):
    """:class:`~lamina.models.segmentation.ASPP` whose three atrous branches ``convs.1..3`` are
    depthwise-separable (3x3 depthwise with the rate, 1x1 pointwise, BN, ReLU)."""

    default_name = "aspp"

    def __init__(self, rates=RATES[16], filters: int = 256, name: str | None = None):
        super().__init__(rates, filters, name=name)
        branches = [_conv_bn_relu(self.filters, 1, name="0")]
        branches += [_separable_bn_relu(self.filters, rate, name=str(i + 1)) for i, rate in enumerate(self.rates)]
        branches.append(ImagePooling(self.filters, name=str(len(branches))))
        self.convs = nn.ModuleList(branches)


def _two_maps(layer, shapes) -> tuple[tuple, tuple]:
    if not isinstance(shapes, (list, tuple)) or len(shapes) != 2 or not all(isinstance(s, (list, tuple))
                                                                         for s in shapes):
        raise ShapeError(f"{layer._label()}: got input shapes {shapes!r}; expected two NHWC maps "
                         "(low-level features, encoder output)")
    low = check_shape_ndim(layer, shapes[0], 4, "low-level features (batch, height, width, channels)")
    high = check_shape_ndim(layer, shapes[1], 4, "encoder output (batch, height, width, channels)")
    return tuple(low), tuple(high)


@register_with_arguments
class DeepLabV3PlusDecoder(Block):
    """The decoder of the module docstring, called as ``decoder(low, high)`` on the low-level
    features (N, h, w, C_l) and the encoder output (N, h', w', C_e), returning scores (N, h, w,
    ``num_classes``): ``project`` (1x1 conv to ``low_level_filters``, BN, ReLU), the encoder
    output bilinearly resized to (h, w) and put before it, ``fuse`` (two 3x3 convs of
    ``filters``, separable when ``separable``, each with BN and ReLU), ``classifier`` (1x1 conv)."""

    default_name = "decoder"

    def __init__(self, num_classes: int, low_level_filters: int = 48, filters: int = 256, separable: bool = False,
                 name: str | None = None):
        super().__init__(name=name)
        self.num_classes = positive_int(num_classes, "DeepLabV3PlusDecoder: num_classes")
        low_level_filters = positive_int(low_level_filters, "DeepLabV3PlusDecoder: low_level_filters")
        filters = positive_int(filters, "DeepLabV3PlusDecoder: filters")
        self.project = _conv_bn_relu(low_level_filters, 1, name="project")
        self.fuse = nn.Sequential(_conv3x3(filters, separable, "0"), _conv3x3(filters, separable, "1"), name="fuse")
        self.classifier = nn.Conv2D(self.num_classes, 1, name="classifier")

    def trace(self, shape, step):
        low, high = _two_maps(self, shape)
        reduced = step(self.project, low)
        joined = (low[0], low[1], low[2], None if high[3] is None else high[3] + reduced[3])
        return step(self.classifier, step(self.fuse, joined))

    def forward(self, low, high) -> Tensor:
        low, high = as_tensor(low), as_tensor(high)
        if low.ndim != 4 or high.ndim != 4 or low.shape[0] != high.shape[0]:
            raise ShapeError(f"{self._label()}: got low-level features of shape {tuple(low.shape)} and an encoder "
                             f"output of shape {tuple(high.shape)}; expected two NHWC maps of the same batch")
        up = F.interpolate(high, size=tuple(low.shape[1:3]), mode="bilinear", align_corners=False)
        return self.classifier(self.fuse(F.concat([up, self.project(low)], axis=-1)))


@register_with_arguments(modules=("backbone", "aspp", "decoder"))
class DeepLabV3Plus(Block):
    """backbone -> ``aspp`` -> ``decoder`` (with the output of the backbone's ``low_level_layer``)
    -> scores resized to the input's height and width (bilinear, align_corners=False). The
    backbone is an ``nn.Sequential`` of named stages run in order."""

    default_name = "deeplabv3_plus"

    def __init__(self, backbone: nn.Sequential, aspp: ASPP, decoder: DeepLabV3PlusDecoder,
                 low_level_layer: str = "layer1", name: str | None = None):
        super().__init__(name=name)
        names = [child_name for child_name, _ in backbone.named_children()]
        if low_level_layer not in names:
            raise ValueError(f"DeepLabV3Plus: low_level_layer {low_level_layer!r} is not a backbone stage; "
                             f"expected one of {names}")
        self.backbone, self.aspp, self.decoder = backbone, aspp, decoder
        self.low_level_layer = low_level_layer

    def trace(self, shape, step):
        shape = nhwc(self, shape)
        size, low = shape[1:3], None
        for layer_name, layer in self.backbone.named_children():
            shape = step(layer, shape)
            if layer_name == self.low_level_layer:
                low = shape
        out = step(self.decoder, [low, step(self.aspp, shape)])
        return (out[0], *size, out[3])

    def encode(self, x) -> tuple[Tensor, Tensor]:
        """(low-level features, ASPP output) of NHWC images ``x``."""
        x = as_tensor(x)
        if x.ndim != 4:
            raise input_error(self, x, "a 4-D NHWC batch of images (batch, height, width, channels)")
        low = None
        for layer_name, layer in self.backbone.named_children():
            x = layer(x)
            if layer_name == self.low_level_layer:
                low = x
        return low, self.aspp(x)

    def forward(self, x) -> Tensor:
        size = tuple(as_tensor(x).shape[1:3])
        scores = self.decoder(*self.encode(x))
        return F.interpolate(scores, size=size, mode="bilinear", align_corners=False)


def deeplabv3_plus(backbone: nn.Sequential, num_classes: int = 21, output_stride: int = 16,
                   separable: bool = False, low_level_layer: str = "layer1", filters: int = 256,
                   low_level_filters: int = 48, input_shape: tuple[int, int, int] = (512, 512, 3),
                   name: str = "deeplabv3_plus") -> DeepLabV3Plus:
    """A DeepLabv3+ (unbuilt) on ``backbone``, whose stages must reach ``output_stride`` (16 or 8:
    ASPP rates 6, 12, 18 or 12, 24, 36); ``filters`` for ASPP and the decoder's 3x3 convolutions."""
    input_shape = check_input(input_shape, name)
    if output_stride not in RATES:
        raise ValueError(f"{name}: output_stride must be 16 or 8, got {output_stride!r}")
    aspp = (SeparableASPP if separable else ASPP)(RATES[output_stride], filters, name="aspp")
    decoder = DeepLabV3PlusDecoder(num_classes, low_level_filters, filters, separable, name="decoder")
    return finish(DeepLabV3Plus(backbone, aspp, decoder, low_level_layer, name=name), input_shape)


def deeplabv3_plus_resnet50(num_classes: int = 21, output_stride: int = 16, separable: bool = False,
                            input_shape: tuple[int, int, int] = (512, 512, 3)) -> DeepLabV3Plus:
    """DeepLabv3+ on ResNet-50 (the last stage, or the last two at output stride 8, dilated
    instead of strided); 40,352,181 parameters with 21 classes (26,682,725 separable)."""
    if output_stride not in RATES:
        raise ValueError(f"deeplabv3_plus_resnet50: output_stride must be 16 or 8, got {output_stride!r}")
    dilate = (False, output_stride == 8, True)
    net = resnet(50, replace_stride_with_dilation=dilate, input_shape=check_input(input_shape, "deeplabv3_plus"))
    backbone = nn.Sequential(*[layer for layer in net if layer.name not in ("avgpool", "fc")], name="backbone")
    return deeplabv3_plus(backbone, num_classes, output_stride, separable, input_shape=input_shape,
                          name="deeplabv3_plus_resnet50")


def tiny_backbone(width: int = 8) -> nn.Sequential:
    """Four stride-2 stages of 3x3 ConvBN-ReLU, ``stem`` (width), ``layer1`` (2 width, stride 4:
    the low-level features), ``layer2`` (4 width), ``layer3`` (4 width, output stride 16)."""
    width = positive_int(width, "tiny_backbone: width")
    stages = [("stem", width), ("layer1", 2 * width), ("layer2", 4 * width), ("layer3", 4 * width)]
    return nn.Sequential(*[ConvBN(filters, 3, stride=2, padding=1, name=stage) for stage, filters in stages],
                         name="backbone")


def deeplabv3_plus_tiny(num_classes: int = 3, width: int = 8, separable: bool = False,
                        input_shape: tuple[int, int, int] = (32, 32, 1)) -> DeepLabV3Plus:
    """A DeepLabv3+ for CPU experiments: :func:`tiny_backbone`, output stride 16, ASPP and
    decoder of 4 ``width`` channels, low-level features reduced to ``width``."""
    return deeplabv3_plus(tiny_backbone(width), num_classes, 16, separable, filters=4 * width,
                          low_level_filters=width, input_shape=input_shape, name="deeplabv3_plus_tiny")
