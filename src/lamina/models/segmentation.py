"""Semantic segmentation networks in torchvision's layout: a dilated ResNet backbone, a per-pixel
classifier head, the scores resized to the input (bilinear, align_corners=False).

* FCN (Long, Shelhamer & Darrell 2015) with torchvision's ``FCNHead``: 3x3 conv (C/4, no bias)
  - BN - ReLU - Dropout(0.1) - 1x1 conv to the classes (keys ``classifier.0`` ... ``classifier.4``).
* DeepLabv3 (Chen et al. 2017, "Rethinking Atrous Convolution"): ``DeepLabHead`` = ASPP - 3x3
  conv 256 - BN - ReLU - 1x1 conv to the classes. ASPP runs five branches on the same map and
  joins them: a 1x1 conv, three 3x3 convs with dilations 12, 24, 36, and image pooling (global
  average, 1x1 conv, broadcast back); each conv has 256 filters, no bias, BN and ReLU; the
  1280 channels are projected to 256 (1x1 conv, BN, ReLU, Dropout(0.5)).

The backbone is the ResNet with ``replace_stride_with_dilation=(False, True, True)`` (output
stride 8) without its pooling and fc; an optional auxiliary FCN head reads layer3 (1024 channels).
Parameters with 21 classes (torchvision's figures count the aux head): fcn_resnet50 35,322,218
(32,957,013 without), fcn_resnet101 54,314,346 (51,949,141), deeplabv3_resnet50 42,004,074
(39,638,869), deeplabv3_resnet101 60,996,202 (58,630,997).

``forward`` gives the (N, H, W, classes) scores, or ``(out, aux)`` in training mode when the
aux head exists (the convention of the zoo's GoogLeNet); :meth:`SegmentationModel.segment`
returns torchvision's dict {'out': ..., 'aux': ...} in either mode. Weights load from
torchvision state dicts with :func:`lamina.models.load_torchvision_state_dict`.
"""

from __future__ import annotations

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor
from lamina.models.blocks import AdaptiveAvgPool2D, Block, check_input, concat_shapes, finish, nhwc
from lamina.models.resnet import resnet
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import register_layer

__all__ = [
    "ASPP", "SegmentationModel", "deeplabv3_resnet50", "deeplabv3_resnet101", "deeplabv3_head", "fcn_head",
    "fcn_resnet50", "fcn_resnet101",
]

ATROUS_RATES = (12, 24, 36)


def _conv_bn_relu(filters: int, kernel_size: int, dilation: int = 1, name: str | None = None) -> nn.Sequential:
    padding = dilation if kernel_size == 3 else 0
    return nn.Sequential(nn.Conv2D(filters, kernel_size, padding=padding, dilation=dilation, use_bias=False, name="0"),
                         nn.BatchNorm(name="1"), nn.ReLU(name="2"), name=name)


def fcn_head(in_channels: int, num_classes: int, name: str = "classifier") -> nn.Sequential:
    """torchvision's FCNHead: 3x3 conv (in/4) - BN - ReLU - Dropout(0.1) - 1x1 conv (num_classes)."""
    inter = in_channels // 4
    return nn.Sequential(nn.Conv2D(inter, 3, padding=1, use_bias=False, name="0"), nn.BatchNorm(name="1"),
                         nn.ReLU(name="2"), nn.Dropout(0.1, name="3"), nn.Conv2D(num_classes, 1, name="4"), name=name)


@register_layer
class ImagePooling(Block):
    """ASPP's image-level branch: global average pool - 1x1 conv - BN - ReLU, broadcast back to the
    map's size (torchvision's ASPPPooling, keys ``1.weight``, ``2.running_mean``)."""

    default_name = "aspp_pooling"

    def __init__(self, filters: int = 256, name: str | None = None):
        super().__init__(name=name)
        self.filters = int(filters)
        self._modules["0"] = AdaptiveAvgPool2D(1, name="0")
        self._modules["1"] = nn.Conv2D(filters, 1, use_bias=False, name="1")
        self._modules["2"] = nn.BatchNorm(name="2")

    def trace(self, shape, step):
        shape = nhwc(self, shape)
        out = step(self._modules["2"], step(self._modules["1"], step(self._modules["0"], shape)))
        return (shape[0], shape[1], shape[2], out[3])

    def forward(self, x) -> Tensor:
        pooled = F.relu(self._modules["2"](self._modules["1"](self._modules["0"](x))))
        return F.interpolate(pooled, size=tuple(x.shape[1:3]), mode="bilinear", align_corners=False)

    def get_config(self) -> dict:
        return {"filters": self.filters, "name": self.name}


@register_layer
class ASPP(Block):
    """Atrous spatial pyramid pooling (module docstring): ``convs.0`` 1x1, ``convs.1..3`` 3x3 with
    the ``rates``, ``convs.4`` image pooling, concatenated and projected by ``project``."""

    default_name = "aspp"

    def __init__(self, rates=ATROUS_RATES, filters: int = 256, name: str | None = None):
        super().__init__(name=name)
        self.rates, self.filters = tuple(int(r) for r in rates), int(filters)
        branches = [_conv_bn_relu(filters, 1, name="0")]
        branches += [_conv_bn_relu(filters, 3, rate, name=str(i + 1)) for i, rate in enumerate(self.rates)]
        branches.append(ImagePooling(filters, name=str(len(branches))))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(nn.Conv2D(filters, 1, use_bias=False, name="0"), nn.BatchNorm(name="1"),
                                     nn.ReLU(name="2"), nn.Dropout(0.5, name="3"), name="project")

    def trace(self, shape, step):
        shape = nhwc(self, shape)
        joined = concat_shapes(self, [step(branch, shape) for branch in self.convs])
        return step(self.project, joined)

    def forward(self, x) -> Tensor:
        return self.project(F.concat([branch(x) for branch in self.convs], axis=-1))

    def get_config(self) -> dict:
        return {"rates": list(self.rates), "filters": self.filters, "name": self.name}


def deeplabv3_head(in_channels: int, num_classes: int, name: str = "classifier") -> nn.Sequential:
    """torchvision's DeepLabHead: ASPP - 3x3 conv 256 (no bias) - BN - ReLU - 1x1 conv (num_classes).
    ``in_channels`` is implied by the input (kept for torchvision's signature)."""
    del in_channels
    return nn.Sequential(ASPP(name="0"), nn.Conv2D(256, 3, padding=1, use_bias=False, name="1"),
                         nn.BatchNorm(name="2"), nn.ReLU(name="3"), nn.Conv2D(num_classes, 1, name="4"), name=name)


@register_with_arguments(modules=("backbone", "classifier", "aux_classifier"))
class SegmentationModel(Block):
    """backbone -> classifier (and aux_classifier on the ``aux_layer`` features), the scores
    resized to the input's height and width (bilinear, align_corners=False)."""

    def __init__(self, backbone: nn.Sequential, classifier: nn.Sequential, aux_classifier: nn.Sequential | None = None,
                 aux_layer: str = "layer3", name: str | None = None):
        super().__init__(name=name)
        self.backbone, self.classifier = backbone, classifier
        self.aux_layer = aux_layer
        if aux_classifier is not None:
            self.aux_classifier = aux_classifier

    @property
    def has_aux(self) -> bool:
        return "aux_classifier" in self._modules

    def trace(self, shape, step):
        shape = nhwc(self, shape)
        size = shape[1:3]
        for layer_name, layer in self.backbone.named_children():
            shape = step(layer, shape)
            if layer_name == self.aux_layer and self.has_aux:
                step(self.aux_classifier, shape)
        out = step(self.classifier, shape)
        return (out[0], *size, out[3])

    def segment(self, x) -> dict[str, Tensor]:
        """torchvision's output: {'out': scores} and, with the aux head, 'aux' (both input-sized)."""
        x = x if isinstance(x, Tensor) else Tensor(x)
        size = tuple(x.shape[1:3])
        result = {}
        for layer_name, layer in self.backbone.named_children():
            x = layer(x)
            if layer_name == self.aux_layer and self.has_aux:
                result["aux"] = self._resize(self.aux_classifier(x), size)
        return {"out": self._resize(self.classifier(x), size), **result}

    @staticmethod
    def _resize(scores: Tensor, size) -> Tensor:
        return F.interpolate(scores, size=size, mode="bilinear", align_corners=False)

    def forward(self, x):
        found = self.segment(x)
        if "aux" in found and self.training:
            return found["out"], found["aux"]
        return found["out"]


def _dilated_backbone(depth: int, input_shape) -> nn.Sequential:
    """The ResNet with output stride 8, without its pooling and fc, named 'backbone'."""
    net = resnet(depth, replace_stride_with_dilation=(False, True, True), input_shape=input_shape)
    keep = [layer for layer in net if layer.name not in ("avgpool", "fc")]
    return nn.Sequential(*keep, name="backbone")


def _build(kind: str, depth: int, num_classes: int, aux_loss: bool, input_shape) -> SegmentationModel:
    name = f"{kind}_resnet{depth}"
    input_shape = check_input(input_shape, name)
    head = fcn_head if kind == "fcn" else deeplabv3_head
    aux = fcn_head(1024, num_classes, name="aux_classifier") if aux_loss else None
    model = SegmentationModel(_dilated_backbone(depth, input_shape), head(2048, num_classes), aux, name=name)
    return finish(model, input_shape)


def fcn_resnet50(num_classes: int = 21, aux_loss: bool = False,
                 input_shape: tuple[int, int, int] = (520, 520, 3)) -> SegmentationModel:
    """FCN with a dilated ResNet-50 backbone (module docstring); 32,957,013 parameters with 21
    classes, 35,322,218 with the aux head."""
    return _build("fcn", 50, num_classes, aux_loss, input_shape)


def fcn_resnet101(num_classes: int = 21, aux_loss: bool = False,
                  input_shape: tuple[int, int, int] = (520, 520, 3)) -> SegmentationModel:
    """FCN with a dilated ResNet-101 backbone; 51,949,141 parameters (54,314,346 with the aux head)."""
    return _build("fcn", 101, num_classes, aux_loss, input_shape)


def deeplabv3_resnet50(num_classes: int = 21, aux_loss: bool = False,
                       input_shape: tuple[int, int, int] = (520, 520, 3)) -> SegmentationModel:
    """DeepLabv3 with a dilated ResNet-50 backbone; 39,638,869 parameters (42,004,074 with the aux head)."""
    return _build("deeplabv3", 50, num_classes, aux_loss, input_shape)


def deeplabv3_resnet101(num_classes: int = 21, aux_loss: bool = False,
                        input_shape: tuple[int, int, int] = (520, 520, 3)) -> SegmentationModel:
    """DeepLabv3 with a dilated ResNet-101 backbone; 58,630,997 parameters (60,996,202 with the aux head)."""
    return _build("deeplabv3", 101, num_classes, aux_loss, input_shape)
