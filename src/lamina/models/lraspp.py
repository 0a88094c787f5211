"""Lite R-ASPP (Howard et al. 2019, "Searching for MobileNetV3", section 6.4) in torchvision's
layout: a light segmentation head on two maps of a dilated MobileNet v3.

With ``low`` the map at output stride 8 (C2, after features.4, 40 channels) and ``high`` the
last map (output stride 16 thanks to the dilated last blocks, 960 channels):

    x = ReLU(BN(conv1x1(high)))                       ('cbr', 128 channels, no bias)
    s = sigmoid(conv1x1(global average of high))      ('scale', 128 channels, no bias)
    scores = conv1x1(low) + conv1x1(upsample(x s))    ('low_classifier', 'high_classifier')

the product x s resized bilinearly to the low map's size, the scores to the input's (both
align_corners=False). ``lraspp_mobilenet_v3_large``: 3,221,538 parameters with 21 classes,
as torchvision's. ``forward`` gives the (N, H, W, classes) scores and :meth:`LRASPP.segment`
torchvision's dict {'out': scores}, as lamina's FCN and DeepLabv3.
"""

from __future__ import annotations

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.blocks import AdaptiveAvgPool2D, Block, check_input, finish, nhwc
from lamina.models.mobilenet_v3 import mobilenet_v3
from lamina.nn.layer import layer_from_config, layer_to_config, register_layer

__all__ = ["LRASPP", "LRASPPHead", "lraspp_mobilenet_v3_large"]


@register_layer
class LRASPPHead(Block):
    """The LR-ASPP head (module docstring): ``forward(low, high)`` gives scores at the low
    map's size. Sub-layers ``cbr`` ('0' conv, '1' BN, '2' ReLU), ``scale`` ('0' pool, '1'
    conv, '2' sigmoid), ``low_classifier`` and ``high_classifier``."""

    default_name = "classifier"

    def __init__(self, low_channels: int, high_channels: int, num_classes: int, inter_channels: int = 128,
                 name: str | None = "classifier"):
        super().__init__(name=name)
        self.low_channels, self.high_channels = int(low_channels), int(high_channels)
        self.num_classes, self.inter_channels = int(num_classes), int(inter_channels)
        self.cbr = nn.Sequential(nn.Conv2D(inter_channels, 1, use_bias=False, name="0"), nn.BatchNorm(name="1"),
                                 nn.ReLU(name="2"), name="cbr")
        self.scale = nn.Sequential(AdaptiveAvgPool2D(1, name="0"), nn.Conv2D(inter_channels, 1, use_bias=False,
                                                                             name="1"),
                                   nn.Sigmoid(name="2"), name="scale")
        self.low_classifier = nn.Conv2D(num_classes, 1, name="low_classifier")
        self.high_classifier = nn.Conv2D(num_classes, 1, name="high_classifier")

    def _shapes(self, shapes) -> tuple[tuple, tuple]:
        if not isinstance(shapes, (list, tuple)) or len(shapes) != 2 or not isinstance(shapes[0], (list, tuple)):
            raise ShapeError(f"{self._label()}: expected two inputs (low, high), got shapes {shapes}")
        low, high = (nhwc(self, s) for s in shapes)
        for shape, channels, what in ((low, self.low_channels, "low"), (high, self.high_channels, "high")):
            if shape[3] is not None and shape[3] != channels:
                raise ShapeError(f"{self._label()}: the {what} map has shape {tuple(shape)}; expected {channels} "
                                 "channels")
        return low, high

    def trace(self, shape, step):
        low, high = self._shapes(shape)
        step(self.scale, high)
        step(self.high_classifier, step(self.cbr, high))
        return step(self.low_classifier, low)

    def forward(self, low, high) -> Tensor:
        self._shapes([tuple(low.shape), tuple(high.shape)])
        x = self.cbr(high) * self.scale(high)
        x = F.interpolate(x, size=tuple(low.shape[1:3]), mode="bilinear", align_corners=False)
        return self.low_classifier(low) + self.high_classifier(x)

    def get_config(self) -> dict:
        return {"low_channels": self.low_channels, "high_channels": self.high_channels,
                "num_classes": self.num_classes, "inter_channels": self.inter_channels, "name": self.name}


@register_layer
class LRASPP(Block):
    """``backbone`` (a Sequential whose children ``low_layer`` and ``high_layer`` give the two
    maps; torchvision's IntermediateLayerGetter keeps the children up to the high one) and
    ``classifier`` (an :class:`LRASPPHead`); the scores resized to the input."""

    default_name = "lraspp"

    def __init__(self, backbone: nn.Sequential, low_channels: int, high_channels: int, num_classes: int,
                 inter_channels: int = 128, low_layer: str = "4", high_layer: str = "16",
                 name: str | None = "lraspp"):
        super().__init__(name=name)
        names = [layer_name for layer_name, _ in backbone.named_children()]
        if low_layer not in names or high_layer not in names or names.index(low_layer) > names.index(high_layer):
            raise ValueError(f"LRASPP: low_layer {low_layer!r} and high_layer {high_layer!r} must be children of "
                             f"the backbone in that order, got children {names}")
        self.low_layer, self.high_layer = str(low_layer), str(high_layer)
        self.backbone = backbone
        self.classifier = LRASPPHead(low_channels, high_channels, num_classes, inter_channels)

    @property
    def num_classes(self) -> int:
        return self.classifier.num_classes

    def trace(self, shape, step):
        shape = nhwc(self, shape)
        size, low = shape[1:3], None
        for layer_name, layer in self.backbone.named_children():
            shape = step(layer, shape)
            if layer_name == self.low_layer:
                low = shape
        out = step(self.classifier, [low, shape])
        return (out[0], *size, out[3])

    def segment(self, x) -> dict[str, Tensor]:
        """torchvision's output: {'out': the input-sized scores}."""
        x = x if isinstance(x, Tensor) else Tensor(x)
        size, low = tuple(x.shape[1:3]), None
        for layer_name, layer in self.backbone.named_children():
            x = layer(x)
            if layer_name == self.low_layer:
                low = x
        scores = self.classifier(low, x)
        return {"out": F.interpolate(scores, size=size, mode="bilinear", align_corners=False)}

    def forward(self, x) -> Tensor:
        return self.segment(x)["out"]

    def get_config(self) -> dict:
        head = self.classifier
        return {"backbone": layer_to_config(self.backbone), "low_channels": head.low_channels,
                "high_channels": head.high_channels, "num_classes": head.num_classes,
                "inter_channels": head.inter_channels, "low_layer": self.low_layer, "high_layer": self.high_layer,
                "name": self.name}

    @classmethod
    def from_config(cls, config: dict) -> LRASPP:
        config = dict(config)
        return cls(layer_from_config(config.pop("backbone")), **config)


def lraspp_mobilenet_v3_large(num_classes: int = 21, input_shape: tuple[int, int, int] = (520, 520, 3),
                              width_mult: float = 1.0, inter_channels: int = 128) -> LRASPP:
    """torchvision's LR-ASPP on a dilated MobileNet v3 large (module docstring; unbuilt):
    3,221,538 parameters with 21 classes."""
    input_shape = check_input(input_shape, "lraspp_mobilenet_v3_large")
    features = mobilenet_v3("large", width_mult=width_mult, dilated=True)["features"]
    layers = list(features)
    backbone = nn.Sequential(*layers, name="backbone")
    low, high = layers[4], layers[-1]
    model = LRASPP(backbone, low.out_channels, high["0"].filters, num_classes, inter_channels)
    return finish(model, input_shape)
