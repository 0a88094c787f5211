"""GoogLeNet / Inception v1 (Szegedy et al. 2014, "Going Deeper with Convolutions"; course
notes, GoogLeNet) in torchvision's layout.

Inception module: four parallel branches stacked along the channels, with 1x1
convolutions reducing the channels before the costly filters:

    branch1: 1x1 | branch2: 1x1 reduce - 3x3 | branch3: 1x1 reduce - 3x3 | branch4: 3x3/1 max pool - 1x1

(torchvision, whose layout this follows so that its weights map, uses a 3x3 where the
paper's third branch has a 5x5). Every convolution is a ``ConvBN`` (conv without bias,
BatchNorm eps = 0.001, ReLU). The network:

    conv1 7x7/2 64 - maxpool 3/2 - conv2 1x1 64 - conv3 3x3 192 - maxpool 3/2
    inception3a, 3b - maxpool 3/2 - inception4a..4e - maxpool 2/2 - inception5a, 5b
    global average pooling - dropout 0.2 - fc

with max pools rounding up (ceil mode). Two auxiliary classifiers (after 4a and 4d; 4x4
adaptive average pool, 1x1 conv 128, FC 1024 + ReLU, dropout 0.7, FC) are added with
``aux_logits`` to help gradients reach the early layers during training. Parameters with
1000 classes: 6,624,904 without the auxiliary heads (13,004,888 with them).
"""

from __future__ import annotations

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor
from lamina.models.blocks import (
    AdaptiveAvgPool2D,
    Block,
    BranchingNetwork,
    ConvBN,
    PathBlock,
    check_input,
    classifier_layers,
    concat_shapes,
    finish,
    nhwc,
)
from lamina.nn.layer import register_layer

__all__ = ["GoogLeNet", "InceptionAux", "InceptionModule", "googlenet"]

EPS = 1e-3


def _conv(filters: int, kernel_size, name: str, **kwargs) -> ConvBN:
    return ConvBN(filters, kernel_size, eps=EPS, name=name, **kwargs)


@register_layer
class InceptionModule(Block):
    """GoogLeNet's inception module: [1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 | maxpool -> 1x1] joined
    along the channels; output channels ch1x1 + ch3x3 + ch5x5 + pool_proj. Sub-layers
    ``branch1`` .. ``branch4`` (torchvision's ``Inception``)."""

    default_name = "inception"

    def __init__(self, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int, ch5x5: int, pool_proj: int,
                 name: str | None = None):
        super().__init__(name=name)
        self.channels = (ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj)
        self.branch1 = _conv(ch1x1, 1, "branch1")
        self.branch2 = nn.Sequential(_conv(ch3x3red, 1, "0"), _conv(ch3x3, 3, "1", padding=1), name="branch2")
        self.branch3 = nn.Sequential(_conv(ch5x5red, 1, "0"), _conv(ch5x5, 3, "1", padding=1), name="branch3")
        self.branch4 = nn.Sequential(nn.MaxPool2D(3, stride=1, padding=1, ceil_mode=True, name="0"),
                                     _conv(pool_proj, 1, "1"), name="branch4")

    def _branches(self):
        return (self.branch1, self.branch2, self.branch3, self.branch4)

    def trace(self, shape, step):
        shape = nhwc(self, shape)
        return concat_shapes(self, [step(b, shape) for b in self._branches()])

    def forward(self, x) -> Tensor:
        return F.concat([b(x) for b in self._branches()], axis=-1)

    def get_config(self) -> dict:
        keys = ("ch1x1", "ch3x3red", "ch3x3", "ch5x5red", "ch5x5", "pool_proj")
        return {**dict(zip(keys, self.channels)), "name": self.name}

    def extra_repr(self) -> str:
        return ", ".join(str(c) for c in self.channels)


@register_layer
class InceptionAux(PathBlock):
    """GoogLeNet's auxiliary classifier: 4x4 adaptive average pool, 1x1 ConvBN 128, flatten
    (2048), FC 1024 + ReLU (``fc1``), dropout 0.7, FC num_classes (``fc2``)."""

    default_name = "inception_aux"

    def __init__(self, num_classes: int, dropout: float = 0.7, name: str | None = None):
        super().__init__(name=name)
        self.num_classes, self.dropout_rate = int(num_classes), float(dropout)
        self.pool = AdaptiveAvgPool2D(4, name="pool")
        self.conv = _conv(128, 1, "conv")
        self.flatten = nn.Flatten(name="flatten")
        self.fc1 = nn.Dense(1024, activation="relu", name="fc1")
        self.dropout = nn.Dropout(dropout, name="dropout")
        self.fc2 = nn.Dense(num_classes, name="fc2")

    def _path(self):
        return (self.pool, self.conv, self.flatten, self.fc1, self.dropout, self.fc2)


    def get_config(self) -> dict:
        return {"num_classes": self.num_classes, "dropout": self.dropout_rate, "name": self.name}


INCEPTION_CONFIGS = {
    "inception3a": (64, 96, 128, 16, 32, 32),
    "inception3b": (128, 128, 192, 32, 96, 64),
    "inception4a": (192, 96, 208, 16, 48, 64),
    "inception4b": (160, 112, 224, 24, 64, 64),
    "inception4c": (128, 128, 256, 24, 64, 64),
    "inception4d": (112, 144, 288, 32, 64, 64),
    "inception4e": (256, 160, 320, 32, 128, 128),
    "inception5a": (256, 160, 320, 32, 128, 128),
    "inception5b": (384, 192, 384, 48, 128, 128),
}


@register_layer
class GoogLeNet(BranchingNetwork):
    """The whole GoogLeNet (see the module docstring); sub-layers named as torchvision's
    (conv1, maxpool1, ..., inception5b, aux1, aux2, avgpool, dropout, fc). In training mode
    with ``aux_logits`` the forward pass returns (logits, aux2, aux1)."""

    default_name = "googlenet"

    def __init__(self, num_classes: int = 1000, aux_logits: bool = False, dropout: float = 0.2,
                 dropout_aux: float = 0.7, classifier_activation: str | None = None, name: str | None = None):
        super().__init__(name=name)
        self.num_classes, self.aux_logits = int(num_classes), bool(aux_logits)
        self.dropout_rate, self.dropout_aux = float(dropout), float(dropout_aux)
        self.classifier_activation = classifier_activation
        main: list = [
            _conv(64, 7, "conv1", stride=2, padding=3),
            nn.MaxPool2D(3, stride=2, ceil_mode=True, name="maxpool1"),
            _conv(64, 1, "conv2"),
            _conv(192, 3, "conv3", padding=1),
            nn.MaxPool2D(3, stride=2, ceil_mode=True, name="maxpool2"),
        ]
        for key in ("inception3a", "inception3b"):
            main.append(InceptionModule(*INCEPTION_CONFIGS[key], name=key))
        main.append(nn.MaxPool2D(3, stride=2, ceil_mode=True, name="maxpool3"))
        for key in ("inception4a", "inception4b", "inception4c", "inception4d", "inception4e"):
            main.append(InceptionModule(*INCEPTION_CONFIGS[key], name=key))
        main.append(nn.MaxPool2D(2, stride=2, ceil_mode=True, name="maxpool4"))
        for key in ("inception5a", "inception5b"):
            main.append(InceptionModule(*INCEPTION_CONFIGS[key], name=key))
        tail = [nn.GlobalAvgPool2D(name="avgpool"), nn.Dropout(dropout, name="dropout"),
                nn.Dense(num_classes, name="fc"), *classifier_layers(classifier_activation)]
        for layer in main:
            setattr(self, layer.name, layer)
        if self.aux_logits:
            self.aux1 = InceptionAux(num_classes, dropout_aux, name="aux1")
            self.aux2 = InceptionAux(num_classes, dropout_aux, name="aux2")
        for layer in tail:
            setattr(self, layer.name, layer)
        self.main_path = tuple(layer.name for layer in main + tail)
        self.taps = {"inception4a": "aux1", "inception4d": "aux2"}

    def get_config(self) -> dict:
        return {"num_classes": self.num_classes, "aux_logits": self.aux_logits, "dropout": self.dropout_rate,
                "dropout_aux": self.dropout_aux, "classifier_activation": self.classifier_activation,
                "name": self.name}

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, aux_logits={self.aux_logits}"


def googlenet(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3), aux_logits: bool = False,
              dropout: float = 0.2, classifier_activation: str | None = None) -> GoogLeNet:
    """GoogLeNet in torchvision's layout (unbuilt): 6,624,904 parameters with 1000 classes and
    no auxiliary heads. Outputs logits unless ``classifier_activation`` (e.g. 'softmax')."""
    input_shape = check_input(input_shape, "googlenet")
    model = GoogLeNet(num_classes, aux_logits=aux_logits, dropout=dropout,
                      classifier_activation=classifier_activation, name="googlenet")
    return finish(model, input_shape)
