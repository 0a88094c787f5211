"""VGGNet (Simonyan & Zisserman 2014, "Very Deep Convolutional Networks for Large-Scale Image
Recognition"; course notes, VGGNet) in torchvision's layout.

Every convolution is 3x3, stride 1, padding 1 ('same') followed by ReLU (and BN with
``batch_norm``); every pool is a 2x2/2 max pool; five stages, each doubling the channels
(64, 128, 256, 512, 512) after the pool halves the map. Configurations (numbers are
filters, M a pool):

    VGG11 (A): 64 M 128 M 256 256 M 512 512 M 512 512 M
    VGG13 (B): 64 64 M 128 128 M 256 256 M 512 512 M 512 512 M
    VGG16 (D): 64 64 M 128 128 M 256 256 256 M 512 512 512 M 512 512 512 M
    VGG19 (E): 64 64 M 128 128 M 256 256 256 256 M 512 x4 M 512 x4 M

Then an adaptive average pool to 7x7 (the identity for 224x224 inputs), flatten, and the
classifier FC 4096 - ReLU - dropout - FC 4096 - ReLU - dropout - FC num_classes.
Layers are named as torchvision indexes them ('features.0', ..., 'classifier.6') so that
its weights map directly. Parameters with 1000 classes: VGG11 132,863,336; VGG13
133,047,848; VGG16 138,357,544; VGG19 143,667,240.
"""

from __future__ import annotations

from lamina import nn
from lamina.models.blocks import AdaptiveAvgPool2D, check_input, classifier_layers, finish

__all__ = ["VGG_CONFIGS", "vgg", "vgg11", "vgg13", "vgg16", "vgg19"]

VGG_CONFIGS: dict[int, list] = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
         512, 512, 512, 512, "M"],
}


def vgg(depth: int, num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3),
        batch_norm: bool = False, dropout: float = 0.5, classifier_activation: str | None = None) -> nn.Sequential:
    """VGG-``depth`` (11, 13, 16 or 19), unbuilt; outputs logits unless ``classifier_activation``."""
    if depth not in VGG_CONFIGS:
        raise ValueError(f"vgg: depth must be one of {sorted(VGG_CONFIGS)}, got {depth!r}")
    input_shape = check_input(input_shape, f"vgg{depth}")
    features: list = []

    def add(layer):
        layer.name = str(len(features))
        features.append(layer)

    for v in VGG_CONFIGS[depth]:
        if v == "M":
            add(nn.MaxPool2D(2, stride=2))
            continue
        add(nn.Conv2D(v, 3, padding=1))
        if batch_norm:
            add(nn.BatchNorm())
        add(nn.ReLU())
    classifier = nn.Sequential(
        nn.Dense(4096, name="0"), nn.ReLU(name="1"), nn.Dropout(dropout, name="2"),
        nn.Dense(4096, name="3"), nn.ReLU(name="4"), nn.Dropout(dropout, name="5"),
        nn.Dense(num_classes, name="6"),
        name="classifier",
    )
    model = nn.Sequential(
        nn.Sequential(*features, name="features"),
        AdaptiveAvgPool2D(7, name="avgpool"),
        nn.Flatten(name="flatten"),
        classifier,
        *classifier_layers(classifier_activation),
        name=f"vgg{depth}{'_bn' if batch_norm else ''}",
    )
    return finish(model, input_shape)


def vgg11(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3), batch_norm: bool = False,
          classifier_activation: str | None = None) -> nn.Sequential:
    """VGG11 (configuration A): 8 conv + 3 FC layers; 132,863,336 parameters (1000 classes)."""
    return vgg(11, num_classes, input_shape, batch_norm, classifier_activation=classifier_activation)


def vgg13(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3), batch_norm: bool = False,
          classifier_activation: str | None = None) -> nn.Sequential:
    """VGG13 (configuration B): 10 conv + 3 FC layers; 133,047,848 parameters (1000 classes)."""
    return vgg(13, num_classes, input_shape, batch_norm, classifier_activation=classifier_activation)


def vgg16(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3), batch_norm: bool = False,
          classifier_activation: str | None = None) -> nn.Sequential:
    """VGG16 (configuration D, the course's 138 M): 13 conv + 3 FC; 138,357,544 parameters."""
    return vgg(16, num_classes, input_shape, batch_norm, classifier_activation=classifier_activation)


def vgg19(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3), batch_norm: bool = False,
          classifier_activation: str | None = None) -> nn.Sequential:
    """VGG19 (configuration E): 16 conv + 3 FC; 143,667,240 parameters (1000 classes)."""
    return vgg(19, num_classes, input_shape, batch_norm, classifier_activation=classifier_activation)
