"""DenseNet (Huang et al. 2017, "Densely Connected Convolutional Networks") in torchvision's
layout and names.

Inside a dense block every layer receives the feature maps of all the layers before it,
joined along the channels, and adds k new ones (the growth rate k):

    a^[l] = H_l([a^[0], a^[1], ..., a^[l-1]])     (a^[0] the block's input, [..] a concatenation)
    H_l: BN - ReLU - 1x1 conv (bn_size k filters) - BN - ReLU - 3x3 conv (k filters, padding 1)

so a block of L layers on c_0 channels outputs c_0 + L k channels. The 1x1 bottleneck
keeps the 3x3 convolution's input at bn_size k = 4k channels however wide the
concatenation grows. Between blocks a transition halves the map and compresses the
channels by theta = 0.5: BN - ReLU - 1x1 conv (floor(theta c) filters) - 2x2/2 average pool.
The network:

    features: conv0 7x7/2 (no bias) - norm0 - relu0 - pool0 3x3/2 max pool, padding 1
              denseblock1 - transition1 - ... - denseblockB - norm5
    ReLU - global average pooling - classifier (FC)

Convolutions have no bias; BatchNorm uses PyTorch's eps 1e-5 and momentum 0.1. Keys follow
torchvision (``features.conv0.weight``, ``features.denseblock1.denselayer1.norm1.weight``,
``features.transition1.conv.weight``, ``features.norm5.running_var``, ``classifier.weight``)
so :func:`lamina.models.load_torchvision_state_dict` loads its weights. Parameters with
1000 classes: DenseNet-121 7,978,856; -169 14,149,480; -201 20,013,928.
"""

from __future__ import annotations

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor
from lamina.models.blocks import Block, PathBlock, check_input, classifier_layers, finish, nhwc
from lamina.nn.layer import register_layer
from lamina.nn.module import Module

__all__ = ["DENSENET_CONFIGS", "DenseBlock", "DenseLayer", "densenet", "densenet121", "densenet169", "densenet201",
           "transition"]

# depth -> (growth rate k, layers per dense block, channels of conv0)
DENSENET_CONFIGS: dict[int, tuple[int, tuple[int, ...], int]] = {
    121: (32, (6, 12, 24, 16), 64),
    169: (32, (6, 12, 32, 32), 64),
    201: (32, (6, 12, 48, 32), 64),
}


def _positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive int, got {value!r}")
    return value


@register_layer
class DenseLayer(PathBlock):
    """H_l of a dense block: norm1 (BN) - relu1 - conv1 (1x1, ``bn_size`` k filters) - norm2 -
    relu2 - conv2 (3x3, k = ``growth_rate`` filters, padding 1), then dropout of rate
    ``drop_rate`` when it is positive. Outputs the k new channels only; the
    :class:`DenseBlock` joins them to its running concatenation."""

    default_name = "dense_layer"

    def __init__(self, growth_rate: int, bn_size: int = 4, drop_rate: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        self.growth_rate = _positive_int(growth_rate, "DenseLayer: growth_rate")
        self.bn_size = _positive_int(bn_size, "DenseLayer: bn_size")
        if not 0 <= drop_rate < 1:
            raise ValueError(f"DenseLayer: drop_rate must be in [0, 1), got {drop_rate!r}")
        self.drop_rate = float(drop_rate)
        self.norm1 = nn.BatchNorm(name="norm1")
        self.relu1 = nn.ReLU(name="relu1")
        self.conv1 = nn.Conv2D(bn_size * growth_rate, 1, use_bias=False, name="conv1")
        self.norm2 = nn.BatchNorm(name="norm2")
        self.relu2 = nn.ReLU(name="relu2")
        self.conv2 = nn.Conv2D(growth_rate, 3, padding=1, use_bias=False, name="conv2")
        if self.drop_rate > 0:
            self.dropout = nn.Dropout(self.drop_rate, name="dropout")

    def _path(self):
        path = (self.norm1, self.relu1, self.conv1, self.norm2, self.relu2, self.conv2)
        return path + (self.dropout,) if self.drop_rate > 0 else path

    def get_config(self) -> dict:
        return {"growth_rate": self.growth_rate, "bn_size": self.bn_size, "drop_rate": self.drop_rate,
                "name": self.name}

    def extra_repr(self) -> str:
        return f"k={self.growth_rate}, bn_size={self.bn_size}" + (f", drop_rate={self.drop_rate:g}"
                                                                  if self.drop_rate else "")


@register_layer
class DenseBlock(Block):
    """``num_layers`` dense layers named denselayer1, denselayer2, ...: layer l gets the
    concatenation [a^[0], ..., a^[l-1]] of the block's input and every earlier layer's
    output; the block outputs the concatenation of all of them, c_0 + L k channels."""

    default_name = "dense_block"

    def __init__(self, num_layers: int, growth_rate: int, bn_size: int = 4, drop_rate: float = 0.0,
                 name: str | None = None):
        super().__init__(name=name)
        self.num_layers = _positive_int(num_layers, "DenseBlock: num_layers")
        self.growth_rate, self.bn_size, self.drop_rate = growth_rate, bn_size, float(drop_rate)
        for i in range(1, num_layers + 1):
            setattr(self, f"denselayer{i}", DenseLayer(growth_rate, bn_size, drop_rate, name=f"denselayer{i}"))

    def _layers(self) -> list[Module]:
        return [self._modules[f"denselayer{i}"] for i in range(1, self.num_layers + 1)]

    def trace(self, shape, step):
        shape = nhwc(self, shape)
        for layer in self._layers():
            new = step(layer, shape)
            shape = (*shape[:3], None if shape[3] is None else shape[3] + new[3])
        return shape

    def forward(self, x) -> Tensor:
        features = [x]
        for layer in self._layers():
            joined = features[0] if len(features) == 1 else F.concat(features, axis=-1)
            features.append(layer(joined))
        return F.concat(features, axis=-1)

    def get_config(self) -> dict:
        return {"num_layers": self.num_layers, "growth_rate": self.growth_rate, "bn_size": self.bn_size,
                "drop_rate": self.drop_rate, "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.num_layers} layers, k={self.growth_rate}"


def transition(filters: int, name: str) -> nn.Sequential:
    """A transition between dense blocks: norm (BN) - relu - conv (1x1, ``filters``, no bias) -
    pool (2x2/2 average), as torchvision's ``_Transition``."""
    return nn.Sequential(nn.BatchNorm(name="norm"), nn.ReLU(name="relu"),
                         nn.Conv2D(filters, 1, use_bias=False, name="conv"), nn.AvgPool2D(2, stride=2, name="pool"),
                         name=name)


def densenet(growth_rate: int = 32, block_config: tuple[int, ...] = (6, 12, 24, 16), num_init_features: int = 64,
             bn_size: int = 4, drop_rate: float = 0.0, num_classes: int = 1000,
             input_shape: tuple[int, int, int] = (224, 224, 3), classifier_activation: str | None = None,
             name: str = "densenet") -> nn.Sequential:
    """A DenseNet (unbuilt) in torchvision's layout: growth rate k = ``growth_rate``, one dense
    block per entry of ``block_config`` (its number of layers), ``num_init_features`` filters
    in conv0, bottlenecks of ``bn_size`` k channels, dropout of rate ``drop_rate`` after each
    dense layer. Every transition keeps floor(c / 2) of the c channels it receives. Outputs
    logits unless ``classifier_activation``."""
    _positive_int(growth_rate, "densenet: growth_rate")
    _positive_int(num_init_features, "densenet: num_init_features")
    _positive_int(bn_size, "densenet: bn_size")
    blocks = tuple(block_config) if isinstance(block_config, (tuple, list)) else ()
    if not blocks or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in blocks):
        raise ValueError(f"densenet: block_config must be a non-empty sequence of positive ints, got {block_config!r}")
    input_shape = check_input(input_shape, name)
    features: list = [
        nn.Conv2D(num_init_features, 7, stride=2, padding=3, use_bias=False, name="conv0"),
        nn.BatchNorm(name="norm0"),
        nn.ReLU(name="relu0"),
        nn.MaxPool2D(3, stride=2, padding=1, name="pool0"),
    ]
    channels = num_init_features
    for i, num_layers in enumerate(blocks, start=1):
        features.append(DenseBlock(num_layers, growth_rate, bn_size, drop_rate, name=f"denseblock{i}"))
        channels += num_layers * growth_rate
        if i < len(blocks):
            channels //= 2
            features.append(transition(channels, f"transition{i}"))
    features.append(nn.BatchNorm(name="norm5"))
    model = nn.Sequential(
        nn.Sequential(*features, name="features"),
        nn.ReLU(name="relu"),
        nn.GlobalAvgPool2D(name="avgpool"),
        nn.Dense(num_classes, name="classifier"),
        *classifier_layers(classifier_activation),
        name=name,
    )
    return finish(model, input_shape)


def _densenet(depth: int, num_classes: int, input_shape, drop_rate: float, classifier_activation) -> nn.Sequential:
    growth_rate, block_config, num_init_features = DENSENET_CONFIGS[depth]
    return densenet(growth_rate, block_config, num_init_features, drop_rate=drop_rate, num_classes=num_classes,
                    input_shape=input_shape, classifier_activation=classifier_activation, name=f"densenet{depth}")


def densenet121(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3), drop_rate: float = 0.0,
                classifier_activation: str | None = None) -> nn.Sequential:
    """DenseNet-121: k = 32, blocks (6, 12, 24, 16), 64 initial filters; 7,978,856 parameters."""
    return _densenet(121, num_classes, input_shape, drop_rate, classifier_activation)


def densenet169(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3), drop_rate: float = 0.0,
                classifier_activation: str | None = None) -> nn.Sequential:
    """DenseNet-169: k = 32, blocks (6, 12, 32, 32), 64 initial filters; 14,149,480 parameters."""
    return _densenet(169, num_classes, input_shape, drop_rate, classifier_activation)


def densenet201(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3), drop_rate: float = 0.0,
                classifier_activation: str | None = None) -> nn.Sequential:
    """DenseNet-201: k = 32, blocks (6, 12, 48, 32), 64 initial filters; 20,013,928 parameters."""
    return _densenet(201, num_classes, input_shape, drop_rate, classifier_activation)
