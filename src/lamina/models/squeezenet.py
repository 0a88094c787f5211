"""SqueezeNet (Iandola et al. 2016, "SqueezeNet: AlexNet-level accuracy with 50x fewer
parameters and <0.5MB model size") 1.0 and 1.1 in torchvision's layout and names.

Its Fire module squeezes the volume with 1x1 convolutions, then expands it again with a mix
of 1x1 and 3x3 filters side by side:

    s = ReLU(squeeze(x))                                  (1x1, s_1x1 filters)
    out = [ReLU(expand1x1(s)), ReLU(expand3x3(s))]        (1x1 e_1x1 and 3x3 e_3x3 filters,
                                                           joined along the channels)

With s_1x1 < e_1x1 + e_3x3 the costly 3x3 filters see few input channels, and half of the
expanding filters are 1x1 (9 times cheaper). There is no fully connected layer: the
classifier is dropout - a 1x1 convolution to one map per class - ReLU - global average
pooling. Max pools use ceil_mode (3x3/2). Version 1.1 starts with a 3x3 conv of 64 filters
instead of 7x7 of 96 and pools earlier, for 2.4 times less computation at the same accuracy.
Parameters with 1000 classes: 1.0 1,248,424; 1.1 1,235,496.
"""

from __future__ import annotations

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor
from lamina.models.blocks import Block, check_input, classifier_layers, concat_shapes, finish, nhwc
from lamina.nn.layer import register_layer

__all__ = ["Fire", "SQUEEZENET_VERSIONS", "squeezenet", "squeezenet1_0", "squeezenet1_1"]

# version -> (stem filters, stem kernel, features after the stem: "pool" or (s_1x1, e_1x1, e_3x3) of a Fire)
SQUEEZENET_VERSIONS: dict[str, tuple[int, int, tuple]] = {
    "1_0": (96, 7, ("pool", (16, 64, 64), (16, 64, 64), (32, 128, 128), "pool", (32, 128, 128), (48, 192, 192),
                    (48, 192, 192), (64, 256, 256), "pool", (64, 256, 256))),
    "1_1": (64, 3, ("pool", (16, 64, 64), (16, 64, 64), "pool", (32, 128, 128), (32, 128, 128), "pool",
                    (48, 192, 192), (48, 192, 192), (64, 256, 256), (64, 256, 256))),
}


def _positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive int, got {value!r}")
    return value


@register_layer
class Fire(Block):
    """The Fire module (see the module docstring): sub-layers ``squeeze`` (1x1,
    ``squeeze_planes``), ``expand1x1`` (1x1, ``expand1x1_planes``) and ``expand3x3`` (3x3,
    padding 1, ``expand3x3_planes``), each with a bias and followed by a ReLU; outputs
    expand1x1_planes + expand3x3_planes channels."""

    default_name = "fire"

    def __init__(self, squeeze_planes: int, expand1x1_planes: int, expand3x3_planes: int, name: str | None = None):
        super().__init__(name=name)
        self.squeeze_planes = _positive_int(squeeze_planes, "Fire: squeeze_planes")
        self.expand1x1_planes = _positive_int(expand1x1_planes, "Fire: expand1x1_planes")
        self.expand3x3_planes = _positive_int(expand3x3_planes, "Fire: expand3x3_planes")
        self.squeeze = nn.Conv2D(squeeze_planes, 1, name="squeeze")
        self.squeeze_activation = nn.ReLU(name="squeeze_activation")
        self.expand1x1 = nn.Conv2D(expand1x1_planes, 1, name="expand1x1")
        self.expand1x1_activation = nn.ReLU(name="expand1x1_activation")
        self.expand3x3 = nn.Conv2D(expand3x3_planes, 3, padding=1, name="expand3x3")
        self.expand3x3_activation = nn.ReLU(name="expand3x3_activation")

    def trace(self, shape, step):
        squeezed = step(self.squeeze, nhwc(self, shape))
        return concat_shapes(self, [step(self.expand1x1, squeezed), step(self.expand3x3, squeezed)])

    def forward(self, x) -> Tensor:
        s = self.squeeze_activation(self.squeeze(x))
        return F.concat([self.expand1x1_activation(self.expand1x1(s)),
                         self.expand3x3_activation(self.expand3x3(s))], axis=-1)

    def get_config(self) -> dict:
        return {"squeeze_planes": self.squeeze_planes, "expand1x1_planes": self.expand1x1_planes,
                "expand3x3_planes": self.expand3x3_planes, "name": self.name}

    def extra_repr(self) -> str:
        return f"squeeze {self.squeeze_planes}, expand {self.expand1x1_planes} + {self.expand3x3_planes}"


def squeezenet(version: str = "1_0", num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
               dropout: float = 0.5, classifier_activation: str | None = None) -> nn.Sequential:
    """SqueezeNet ``version`` '1_0' or '1_1' (unbuilt) in torchvision's layout: ``features``
    (stem conv - ReLU, then max pools and Fire modules as :data:`SQUEEZENET_VERSIONS` lists) and
    ``classifier`` (dropout '0', 1x1 conv '1' to ``num_classes`` maps, ReLU '2', global average
    pool '3'). Outputs the pooled class scores unless ``classifier_activation``."""
    if version not in SQUEEZENET_VERSIONS:
        raise ValueError(f"squeezenet: version must be '1_0' or '1_1', got {version!r}")
    if not 0 <= dropout < 1:
        raise ValueError(f"squeezenet: dropout must be in [0, 1), got {dropout!r}")
    name = f"squeezenet{version}"
    input_shape = check_input(input_shape, name)
    stem_filters, stem_kernel, plan = SQUEEZENET_VERSIONS[version]
    features: list = [nn.Conv2D(stem_filters, stem_kernel, stride=2), nn.ReLU()]
    for item in plan:
        features.append(nn.MaxPool2D(3, stride=2, ceil_mode=True) if item == "pool" else Fire(*item))
    for i, layer in enumerate(features):
        layer.name = str(i)
    model = nn.Sequential(
        nn.Sequential(*features, name="features"),
        nn.Sequential(nn.Dropout(dropout, name="0"), nn.Conv2D(num_classes, 1, name="1"), nn.ReLU(name="2"),
                      nn.GlobalAvgPool2D(name="3"), name="classifier"),
        *classifier_layers(classifier_activation),
        name=name,
    )
    return finish(model, input_shape)


def squeezenet1_0(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3), dropout: float = 0.5,
                  classifier_activation: str | None = None) -> nn.Sequential:
    """SqueezeNet 1.0: 7x7/2 stem of 96 filters, 8 Fire modules; 1,248,424 parameters with 1000
    classes (about 0.82 G multiply-adds at 224x224)."""
    return squeezenet("1_0", num_classes, input_shape, dropout, classifier_activation)


def squeezenet1_1(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3), dropout: float = 0.5,
                  classifier_activation: str | None = None) -> nn.Sequential:
    """SqueezeNet 1.1: 3x3/2 stem of 64 filters, pools after Fire 2 and 4; 1,235,496 parameters
    (about 0.35 G multiply-adds at 224x224)."""
    return squeezenet("1_1", num_classes, input_shape, dropout, classifier_activation)
