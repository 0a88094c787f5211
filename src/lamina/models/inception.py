"""Inception-v3 (Szegedy et al. 2015, "Rethinking the Inception Architecture for Computer
Vision"; course notes, InceptionV3) in torchvision's layout, for 299x299 inputs.

The three kinds of module of the notes, and two grid reductions:

* InceptionA (35x35, ``Mixed_5b..5d``): a 1x1 branch, a 1x1 -> 5x5 branch, the 5x5 of
  GoogLeNet replaced by two stacked 3x3 (``branch3x3dbl``), and avg pool -> 1x1.
* InceptionB (``Mixed_6a``): grid reduction 35 -> 17 with stride-2 branches and a max pool.
* InceptionC (17x17, ``Mixed_6b..6e``): n x n convolutions factorised into 1x7 and 7x1
  (spatially separable convolutions).
* InceptionD (``Mixed_7a``): grid reduction 17 -> 8.
* InceptionE (8x8, ``Mixed_7b, 7c``): expanded filter banks, a 3x3 split into parallel
  1x3 and 3x1 outputs that are concatenated.

Stem: 3x3/2 32 - 3x3 32 - 3x3 64 (pad 1) - maxpool 3/2 - 1x1 80 - 3x3 192 - maxpool 3/2;
head: global average pooling, dropout 0.5, fc. Every convolution is a ``ConvBN``
(no bias, BatchNorm eps = 0.001, ReLU). The auxiliary classifier (``AuxLogits`` after
Mixed_6e: avg pool 5/3, 1x1 128, 5x5 768, global average, fc) is added with
``aux_logits``. Parameters with 1000 classes: 23,834,568 without it (27,161,264 with it).
"""

from __future__ import annotations

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor
from lamina.models.blocks import (
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

__all__ = ["InceptionA", "InceptionB", "InceptionC", "InceptionD", "InceptionE", "InceptionV3",
           "InceptionV3Aux", "inception_v3"]

EPS = 1e-3


def _conv(filters: int, kernel_size, name: str, **kwargs) -> ConvBN:
    return ConvBN(filters, kernel_size, eps=EPS, name=name, **kwargs)


class _Module(Block):
    """A module whose output is its branches joined along the channels. ``branches`` lists
    each branch as a chain of sub-layer names; a list inside a chain is a fork whose outputs
    are concatenated (InceptionE's 1x3 / 3x1 split)."""

    branches: tuple = ()

    def _run(self, chain, x, step=None):
        for item in chain:
            if isinstance(item, list):
                outs = [self._modules[name] for name in item]
                if step is None:
                    return F.concat([layer(x) for layer in outs], axis=-1)
                return concat_shapes(self, [step(layer, x) for layer in outs])
            layer = self._modules[item]
            x = layer(x) if step is None else step(layer, x)
        return x

    def trace(self, shape, step):
        shape = nhwc(self, shape)
        return concat_shapes(self, [self._run(chain, shape, step) for chain in self.branches])

    def forward(self, x) -> Tensor:
        return F.concat([self._run(chain, x) for chain in self.branches], axis=-1)

    def get_config(self) -> dict:
        return {"name": self.name}


@register_layer
class InceptionA(_Module):
    """35x35 module: 1x1 64 | 1x1 48 -> 5x5 64 | 1x1 64 -> 3x3 96 -> 3x3 96 | avg pool 3/1 -> 1x1
    ``pool_features``; 224 + pool_features output channels."""

    def __init__(self, pool_features: int, name: str | None = None):
        super().__init__(name=name)
        self.pool_features = int(pool_features)
        self.branch1x1 = _conv(64, 1, "branch1x1")
        self.branch5x5_1 = _conv(48, 1, "branch5x5_1")
        self.branch5x5_2 = _conv(64, 5, "branch5x5_2", padding=2)
        self.branch3x3dbl_1 = _conv(64, 1, "branch3x3dbl_1")
        self.branch3x3dbl_2 = _conv(96, 3, "branch3x3dbl_2", padding=1)
        self.branch3x3dbl_3 = _conv(96, 3, "branch3x3dbl_3", padding=1)
        self.pool = nn.AvgPool2D(3, stride=1, padding=1, name="pool")
        self.branch_pool = _conv(pool_features, 1, "branch_pool")
        self.branches = (("branch1x1",), ("branch5x5_1", "branch5x5_2"),
                         ("branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"), ("pool", "branch_pool"))

    def get_config(self) -> dict:
        return {"pool_features": self.pool_features, "name": self.name}


@register_layer
class InceptionB(_Module):
    """Grid reduction 35 -> 17: 3x3/2 384 | 1x1 64 -> 3x3 96 -> 3x3/2 96 | max pool 3/2."""

    def __init__(self, name: str | None = None):
        super().__init__(name=name)
        self.branch3x3 = _conv(384, 3, "branch3x3", stride=2)
        self.branch3x3dbl_1 = _conv(64, 1, "branch3x3dbl_1")
        self.branch3x3dbl_2 = _conv(96, 3, "branch3x3dbl_2", padding=1)
        self.branch3x3dbl_3 = _conv(96, 3, "branch3x3dbl_3", stride=2)
        self.pool = nn.MaxPool2D(3, stride=2, name="pool")
        self.branches = (("branch3x3",), ("branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"), ("pool",))


@register_layer
class InceptionC(_Module):
    """17x17 module with factorised 7x7 convolutions (c7 = ``channels_7x7``): 1x1 192 |
    1x1 c7 -> 1x7 c7 -> 7x1 192 | 1x1 c7 -> 7x1 c7 -> 1x7 c7 -> 7x1 c7 -> 1x7 192 |
    avg pool 3/1 -> 1x1 192; 768 output channels."""

    def __init__(self, channels_7x7: int, name: str | None = None):
        super().__init__(name=name)
        c7 = self.channels_7x7 = int(channels_7x7)
        self.branch1x1 = _conv(192, 1, "branch1x1")
        self.branch7x7_1 = _conv(c7, 1, "branch7x7_1")
        self.branch7x7_2 = _conv(c7, (1, 7), "branch7x7_2", padding=(0, 3))
        self.branch7x7_3 = _conv(192, (7, 1), "branch7x7_3", padding=(3, 0))
        self.branch7x7dbl_1 = _conv(c7, 1, "branch7x7dbl_1")
        self.branch7x7dbl_2 = _conv(c7, (7, 1), "branch7x7dbl_2", padding=(3, 0))
        self.branch7x7dbl_3 = _conv(c7, (1, 7), "branch7x7dbl_3", padding=(0, 3))
        self.branch7x7dbl_4 = _conv(c7, (7, 1), "branch7x7dbl_4", padding=(3, 0))
        self.branch7x7dbl_5 = _conv(192, (1, 7), "branch7x7dbl_5", padding=(0, 3))
        self.pool = nn.AvgPool2D(3, stride=1, padding=1, name="pool")
        self.branch_pool = _conv(192, 1, "branch_pool")
        self.branches = (("branch1x1",), ("branch7x7_1", "branch7x7_2", "branch7x7_3"),
                         tuple(f"branch7x7dbl_{i}" for i in range(1, 6)), ("pool", "branch_pool"))

    def get_config(self) -> dict:
        return {"channels_7x7": self.channels_7x7, "name": self.name}


@register_layer
class InceptionD(_Module):
    """Grid reduction 17 -> 8: 1x1 192 -> 3x3/2 320 | 1x1 192 -> 1x7 -> 7x1 -> 3x3/2 192 |
    max pool 3/2."""

    def __init__(self, name: str | None = None):
        super().__init__(name=name)
        self.branch3x3_1 = _conv(192, 1, "branch3x3_1")
        self.branch3x3_2 = _conv(320, 3, "branch3x3_2", stride=2)
        self.branch7x7x3_1 = _conv(192, 1, "branch7x7x3_1")
        self.branch7x7x3_2 = _conv(192, (1, 7), "branch7x7x3_2", padding=(0, 3))
        self.branch7x7x3_3 = _conv(192, (7, 1), "branch7x7x3_3", padding=(3, 0))
        self.branch7x7x3_4 = _conv(192, 3, "branch7x7x3_4", stride=2)
        self.pool = nn.MaxPool2D(3, stride=2, name="pool")
        self.branches = (("branch3x3_1", "branch3x3_2"), tuple(f"branch7x7x3_{i}" for i in range(1, 5)),
                         ("pool",))


@register_layer
class InceptionE(_Module):
    """8x8 module with expanded filter banks: 1x1 320 | 1x1 384 -> [1x3 384, 3x1 384] |
    1x1 448 -> 3x3 384 -> [1x3 384, 3x1 384] | avg pool 3/1 -> 1x1 192; 2048 output channels."""

    def __init__(self, name: str | None = None):
        super().__init__(name=name)
        self.branch1x1 = _conv(320, 1, "branch1x1")
        self.branch3x3_1 = _conv(384, 1, "branch3x3_1")
        self.branch3x3_2a = _conv(384, (1, 3), "branch3x3_2a", padding=(0, 1))
        self.branch3x3_2b = _conv(384, (3, 1), "branch3x3_2b", padding=(1, 0))
        self.branch3x3dbl_1 = _conv(448, 1, "branch3x3dbl_1")
        self.branch3x3dbl_2 = _conv(384, 3, "branch3x3dbl_2", padding=1)
        self.branch3x3dbl_3a = _conv(384, (1, 3), "branch3x3dbl_3a", padding=(0, 1))
        self.branch3x3dbl_3b = _conv(384, (3, 1), "branch3x3dbl_3b", padding=(1, 0))
        self.pool = nn.AvgPool2D(3, stride=1, padding=1, name="pool")
        self.branch_pool = _conv(192, 1, "branch_pool")
        self.branches = (("branch1x1",), ("branch3x3_1", ["branch3x3_2a", "branch3x3_2b"]),
                         ("branch3x3dbl_1", "branch3x3dbl_2", ["branch3x3dbl_3a", "branch3x3dbl_3b"]),
                         ("pool", "branch_pool"))


@register_layer
class InceptionV3Aux(PathBlock):
    """Inception-v3's auxiliary classifier (torchvision's ``InceptionAux``): avg pool 5/3,
    1x1 ConvBN 128 (``conv0``), 5x5 ConvBN 768 (``conv1``), global average pooling, fc."""

    default_name = "inception_v3_aux"

    def __init__(self, num_classes: int, name: str | None = None):
        super().__init__(name=name)
        self.num_classes = int(num_classes)
        self.pool = nn.AvgPool2D(5, stride=3, name="pool")
        self.conv0 = _conv(128, 1, "conv0")
        self.conv1 = _conv(768, 5, "conv1")
        self.avgpool = nn.GlobalAvgPool2D(name="avgpool")
        self.fc = nn.Dense(num_classes, name="fc")

    def _path(self):
        return (self.pool, self.conv0, self.conv1, self.avgpool, self.fc)


    def get_config(self) -> dict:
        return {"num_classes": self.num_classes, "name": self.name}


@register_layer
class InceptionV3(BranchingNetwork):
    """The whole Inception-v3 (see the module docstring), sub-layers named as torchvision's
    (Conv2d_1a_3x3, ..., Mixed_7c, AuxLogits, avgpool, dropout, fc). In training mode with
    ``aux_logits`` the forward pass returns (logits, aux)."""

    default_name = "inception_v3"

    def __init__(self, num_classes: int = 1000, aux_logits: bool = False, dropout: float = 0.5,
                 classifier_activation: str | None = None, name: str | None = None):
        super().__init__(name=name)
        self.num_classes, self.aux_logits = int(num_classes), bool(aux_logits)
        self.dropout_rate = float(dropout)
        self.classifier_activation = classifier_activation
        main: list = [
            _conv(32, 3, "Conv2d_1a_3x3", stride=2),
            _conv(32, 3, "Conv2d_2a_3x3"),
            _conv(64, 3, "Conv2d_2b_3x3", padding=1),
            nn.MaxPool2D(3, stride=2, name="maxpool1"),
            _conv(80, 1, "Conv2d_3b_1x1"),
            _conv(192, 3, "Conv2d_4a_3x3"),
            nn.MaxPool2D(3, stride=2, name="maxpool2"),
            InceptionA(32, name="Mixed_5b"),
            InceptionA(64, name="Mixed_5c"),
            InceptionA(64, name="Mixed_5d"),
            InceptionB(name="Mixed_6a"),
            InceptionC(128, name="Mixed_6b"),
            InceptionC(160, name="Mixed_6c"),
            InceptionC(160, name="Mixed_6d"),
            InceptionC(192, name="Mixed_6e"),
        ]
        rest: list = [
            InceptionD(name="Mixed_7a"),
            InceptionE(name="Mixed_7b"),
            InceptionE(name="Mixed_7c"),
            nn.GlobalAvgPool2D(name="avgpool"),
            nn.Dropout(dropout, name="dropout"),
            nn.Dense(num_classes, name="fc"),
            *classifier_layers(classifier_activation),
        ]
        for layer in main:
            setattr(self, layer.name, layer)
        if self.aux_logits:
            self.AuxLogits = InceptionV3Aux(num_classes, name="AuxLogits")
        for layer in rest:
            setattr(self, layer.name, layer)
        self.main_path = tuple(layer.name for layer in main + rest)
        self.taps = {"Mixed_6e": "AuxLogits"}

    def get_config(self) -> dict:
        return {"num_classes": self.num_classes, "aux_logits": self.aux_logits, "dropout": self.dropout_rate,
                "classifier_activation": self.classifier_activation, "name": self.name}

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, aux_logits={self.aux_logits}"


def inception_v3(num_classes: int = 1000, input_shape: tuple[int, int, int] = (299, 299, 3),
                 aux_logits: bool = False, dropout: float = 0.5,
                 classifier_activation: str | None = None) -> InceptionV3:
    """Inception-v3 in torchvision's layout (unbuilt): 23,834,568 parameters with 1000 classes
    and no auxiliary head; inputs of at least 75x75. Outputs logits unless
    ``classifier_activation`` (e.g. 'softmax')."""
    input_shape = check_input(input_shape, "inception_v3")
    model = InceptionV3(num_classes, aux_logits=aux_logits, dropout=dropout,
                        classifier_activation=classifier_activation, name="inception_v3")
    return finish(model, input_shape)
