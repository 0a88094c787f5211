"""SSDlite (Sandler et al. 2018, MobileNetV2 section 6.2; Howard et al. 2019, MobileNetV3
section 6.3) in torchvision's layout: :class:`~lamina.models.SSD` with depthwise-separable
convolutions everywhere after the backbone.

* Heads (``SSDLiteHead``): per map a 3x3 depthwise conv - BN - ReLU6 then a 1x1 conv to the
  A C logits (or A 4 offsets); every conv weight N(0, 0.03^2), biases 0.
* Backbone (``SSDLiteFeatureExtractorMobileNet``): MobileNet v3 large whose last three blocks
  have half the channels ("reduced tail", as torchvision's COCO model), cut at C4, the
  expansion 1x1 conv of the last strided block (output stride 16, 672 channels): map 0 ends
  there, map 1 is the rest of the network (output stride 32, 480 channels); then four extra
  blocks, each 1x1 conv (C/2) - 3x3 depthwise stride 2 - 1x1 conv (C), all with BN and ReLU6,
  of 512, 256, 256 and 128 channels. BatchNorm: eps 0.001, PyTorch's momentum 0.03.

``ssdlite320_mobilenet_v3_large``: six maps with 6 default boxes per location (ratios 2 and
3, scales 0.2 .. 0.95), score threshold 0.001, NMS 0.55, 300 candidates per class and 300
detections, images scaled to [-1, 1]; 3,440,060 parameters with 91 classes, as torchvision's.
"""

from __future__ import annotations

from collections.abc import Sequence

from lamina import nn
from lamina.autograd import Tensor
from lamina.models.blocks import Block, check_input, finish, nhwc
from lamina.models.mobilenet_v3 import MOBILENET_V3_LARGE, MobileNetV3Block, mobilenet_v3
from lamina.models.squeeze_excitation import conv_norm_activation
from lamina.models.ssd import SSD, DefaultBoxGenerator, SSDClassificationHead, SSDHead, SSDRegressionHead
from lamina.nn import init
from lamina.nn.layer import register_layer
from lamina.nn.module import Module, as_tensor

__all__ = [
    "SSDLiteClassificationHead", "SSDLiteFeatureExtractorMobileNet", "SSDLiteHead", "SSDLiteRegressionHead",
    "ssdlite320_mobilenet_v3_large",
]

BN_EPS, BN_MOMENTUM = 1e-3, 0.97          # PyTorch's momentum 0.03
HEAD_STD = 0.03


def _normal_init(module: Module) -> Module:
    """Every conv below ``module`` starts with weights N(0, 0.03^2) and zero biases."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2D):
            layer.kernel_init, layer.bias_init = init.normal(HEAD_STD), init.zeros
    return module


def _norm_options(module: Module) -> Module:
    for layer in module.modules():
        if isinstance(layer, nn.BatchNorm):
            layer.eps, layer.momentum = BN_EPS, BN_MOMENTUM
    return module


def prediction_block(in_channels: int, outputs: int) -> nn.Sequential:
    """3x3 depthwise conv - BN - ReLU6 ('0'), then a 1x1 conv with bias to ``outputs`` ('1')."""
    depthwise = conv_norm_activation(in_channels, 3, groups=in_channels, activation="relu6", eps=BN_EPS,
                                     momentum=BN_MOMENTUM, name="0")
    return _normal_init(nn.Sequential(depthwise, nn.Conv2D(outputs, 1, name="1")))


def extra_block(out_channels: int, name: str | None = None) -> nn.Sequential:
    """1x1 conv to C/2, 3x3 depthwise stride 2, 1x1 conv to C ('0', '1', '2'), each with BN and ReLU6."""
    half = out_channels // 2
    norm = {"eps": BN_EPS, "momentum": BN_MOMENTUM, "activation": "relu6"}
    return _normal_init(nn.Sequential(conv_norm_activation(half, 1, name="0", **norm),
                                      conv_norm_activation(half, 3, stride=2, groups=half, name="1", **norm),
                                      conv_norm_activation(out_channels, 1, name="2", **norm), name=name))


@register_layer
class SSDLiteClassificationHead(SSDClassificationHead):
    """:class:`SSDClassificationHead` with a :func:`prediction_block` per map to A_k C logits."""

    def level_module(self, in_channels: int, outputs: int) -> Module:
        return prediction_block(in_channels, outputs)


@register_layer
class SSDLiteRegressionHead(SSDRegressionHead):
    """:class:`SSDRegressionHead` with a :func:`prediction_block` per map to A_k 4 box offsets."""

    def level_module(self, in_channels: int, outputs: int) -> Module:
        return prediction_block(in_channels, outputs)


@register_layer
class SSDLiteHead(SSDHead):
    """:class:`SSDHead` with SSDlite's depthwise-separable prediction blocks."""

    heads = (SSDLiteClassificationHead, SSDLiteRegressionHead)


def reduced_tail(rows: Sequence[Sequence]) -> tuple[tuple, ...]:
    """MobileNet v3's table with the output channels of the last three blocks halved, and so the
    input and expanded channels of the last two (torchvision's ``reduced_tail``)."""
    rows = [list(row) for row in rows]
    rows[-3][3] //= 2
    for row in rows[-2:]:
        row[0], row[2], row[3] = row[0] // 2, row[2] // 2, row[3] // 2
    return tuple(tuple(row) for row in rows)


@register_layer
class SSDLiteFeatureExtractorMobileNet(Block):
    """SSDlite's MobileNet v3 large backbone (module docstring): ``features.0`` (the network up
    to the C4 block's expansion conv), ``features.1`` (the rest: that block's depthwise conv,
    squeeze-excitation and projection under keys '1', '2', '3', then the later blocks and the
    last conv) and ``extra.0`` .. ``extra.3``. The call gives {'0' .. '5'}. ``width_mult``
    scales MobileNet's channels and the extra blocks' (at least ``min_depth``).
    ``trainable_layers`` (0 to 6) leaves that many of MobileNet's last stages (the stem, the
    strided blocks' stages, the last conv) trainable and freezes the earlier layers
    (torchvision's ``trainable_backbone_layers``)."""

    default_name = "backbone"

    def __init__(self, width_mult: float = 1.0, reduce_tail: bool = True, min_depth: int = 16,
                 trainable_layers: int = 6, name: str | None = "backbone"):
        super().__init__(name=name)
        if not 0 <= int(trainable_layers) <= 6:
            raise ValueError(f"SSDLiteFeatureExtractorMobileNet: trainable_layers must lie in 0..6, got "
                             f"{trainable_layers!r}")
        self.width_mult, self.reduce_tail, self.min_depth = float(width_mult), bool(reduce_tail), int(min_depth)
        self.trainable_layers = int(trainable_layers)
        rows = reduced_tail(MOBILENET_V3_LARGE) if self.reduce_tail else MOBILENET_V3_LARGE
        layers = list(mobilenet_v3("large", width_mult=self.width_mult, setting=rows)["features"])
        c4 = max(i for i, layer in enumerate(layers) if isinstance(layer, MobileNetV3Block) and layer.stride > 1)
        split = layers[c4]
        strided = [i for i, layer in enumerate(layers) if isinstance(layer, MobileNetV3Block) and layer.stride > 1]
        stage_starts = [0, *strided, len(layers) - 1]
        self._frozen_before = (stage_starts[len(stage_starts) - self.trainable_layers] if self.trainable_layers
                               else len(layers))
        self._c4 = c4
        expansion, *rest = list(split.block)
        expansion.name = str(c4)
        for i, layer in enumerate(layers[c4 + 1:]):
            layer.name = str(i + 1)
        tail = nn.Sequential(nn.Sequential(*rest, name="0"), *layers[c4 + 1:], name="1")
        self.features = nn.Sequential(nn.Sequential(*layers[:c4], expansion, name="0"), tail, name="features")

        def depth(channels: int) -> int:
            return max(self.min_depth, int(channels * self.width_mult))

        extras = [depth(512), depth(256), depth(256), depth(128)]
        self.extra = nn.ModuleList([extra_block(c) for c in extras])
        last_conv = layers[-1]["0"]
        self.out_channels = [split.expanded_channels, last_conv.filters, *extras]
        _normal_init(self)
        _norm_options(self)

    def trace(self, shape, step):
        shape = nhwc(self, shape)
        shapes = []
        for block in [*self.features, *self.extra]:
            shape = step(block, shape)
            shapes.append(shape)
        return shapes

    def build(self, input_shape) -> None:
        super().build(input_shape)
        head, tail = self.features
        for index in range(self._frozen_before):
            if index <= self._c4:
                head[str(index)].freeze()
            if index >= self._c4:
                tail[str(index - self._c4)].freeze()

    def forward(self, x) -> dict[str, Tensor]:
        x = as_tensor(x)
        outputs = []
        for block in [*self.features, *self.extra]:
            x = block(x)
            outputs.append(x)
        return {str(i): out for i, out in enumerate(outputs)}

    def get_config(self) -> dict:
        return {"width_mult": self.width_mult, "reduce_tail": self.reduce_tail, "min_depth": self.min_depth,
                "trainable_layers": self.trainable_layers, "name": self.name}


def ssdlite320_mobilenet_v3_large(num_classes: int = 91, input_shape: tuple[int, int, int] = (320, 320, 3),
                                  width_mult: float = 1.0, trainable_backbone_layers: int = 6, **kwargs) -> SSD:
    """torchvision's SSDlite320 MobileNet v3 large (module docstring; unbuilt,
    ``model.input_shape`` = (None, *input_shape)): 3,440,060 parameters with 91 classes.
    ``trainable_backbone_layers``: see :class:`SSDLiteFeatureExtractorMobileNet`; ``kwargs``
    go to :class:`~lamina.models.SSD` (thresholds, image_mean / image_std, ...)."""
    input_shape = check_input(input_shape, "ssdlite320_mobilenet_v3_large")
    backbone = SSDLiteFeatureExtractorMobileNet(width_mult, trainable_layers=trainable_backbone_layers)
    anchors = DefaultBoxGenerator([[2, 3]] * 6, min_ratio=0.2, max_ratio=0.95)
    head = SSDLiteHead(backbone.out_channels, anchors.num_anchors_per_location(), num_classes)
    options = {"score_thresh": 0.001, "nms_thresh": 0.55, "detections_per_img": 300, "topk_candidates": 300,
               "image_mean": (0.5, 0.5, 0.5), "image_std": (0.5, 0.5, 0.5), **kwargs}
    return finish(SSD(backbone, anchors, num_classes, head=head, **options), input_shape)
