"""AlexNet (Krizhevsky, Sutskever & Hinton 2012) and ZFNet (Zeiler & Fergus 2013) as in the
course notes' tables (section "CNN architectures & applications").

AlexNet, (227, 227, 3) input, single tower (no groups):

    conv1  96 11x11/4 ReLU      (55, 55, 96)     34,944
    pool1  max 3x3/2 (overlapping)  (27, 27, 96)
    norm1  local response normalization (n=5, alpha=1e-4, beta=0.75, k=2)
    conv2  256 5x5 same ReLU    (27, 27, 256)   614,656
    pool2, norm2                (13, 13, 256)
    conv3  384 3x3 same ReLU    (13, 13, 384)   885,120
    conv4  384 3x3 same ReLU    (13, 13, 384) 1,327,488
    conv5  256 3x3 same ReLU    (13, 13, 256)   884,992
    pool5  max 3x3/2            (6, 6, 256)
    flatten (9216), fc6 4096 ReLU + dropout 0.5 (37,752,832), fc7 4096 ReLU + dropout
    (16,781,312), fc8 1000 (4,097,000), softmax

62,378,344 parameters with 1000 classes. (The notes' table prints 34,857 for conv1; the
formula K (f f c_in + 1) gives 96 · 364 = 34,944.)

ZFNet, (224, 224, 3) input: the table's output volumes (110, 110, 96) - (55, 55, 96) -
(26, 26, 256) - (13, 13, 256) - (13, 13, 512) - (13, 13, 1024) - (13, 13, 512) -
(6, 6, 512) - 18,432 - 4096 - 4096 - 1000, obtained as in the paper (Fig. 3): conv1 7x7/2
with 1 pixel of padding, conv2 5x5 with stride 2 (the table's row says stride 1, same,
but its 26x26 output from 55x55 needs stride 2), 3x3/2 max pools rounding up (Caffe's
ceil mode), LRN after the first two pools as in AlexNet. 107,627,624 parameters with 1000
classes (the table's conv5 and fc6 rows repeat conv4's count and use (n + 1)(n_prev)
instead of n (n_prev + 1); the comparison table rounds to 108 M).
"""

from __future__ import annotations

from lamina import nn
from lamina.models.blocks import check_input, classifier_layers, finish

__all__ = ["alexnet", "zfnet"]


def _lrn(name: str) -> nn.LocalResponseNorm:
    return nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0, name=name)


def _classifier(num_classes: int, dropout: float, classifier_activation: str | None) -> list:
    return [
        nn.Flatten(name="flatten"),
        nn.Dense(4096, activation="relu", name="fc6"),
        nn.Dropout(dropout, name="drop6"),
        nn.Dense(4096, activation="relu", name="fc7"),
        nn.Dropout(dropout, name="drop7"),
        nn.Dense(num_classes, name="fc8"),
        *classifier_layers(classifier_activation),
    ]


def alexnet(num_classes: int = 1000, input_shape: tuple[int, int, int] = (227, 227, 3), dropout: float = 0.5,
            classifier_activation: str | None = "softmax") -> nn.Sequential:
    """AlexNet as in the course notes' table (unbuilt; 62,378,344 parameters for 1000 classes).

    Ends with a softmax layer ('predictions') as in the table; ``classifier_activation=None``
    leaves the fc8 scores (logits).
    """
    input_shape = check_input(input_shape, "alexnet")
    model = nn.Sequential(
        nn.Conv2D(96, 11, stride=4, activation="relu", name="conv1"),
        nn.MaxPool2D(3, stride=2, name="pool1"),
        _lrn("norm1"),
        nn.Conv2D(256, 5, padding="same", activation="relu", name="conv2"),
        nn.MaxPool2D(3, stride=2, name="pool2"),
        _lrn("norm2"),
        nn.Conv2D(384, 3, padding="same", activation="relu", name="conv3"),
        nn.Conv2D(384, 3, padding="same", activation="relu", name="conv4"),
        nn.Conv2D(256, 3, padding="same", activation="relu", name="conv5"),
        nn.MaxPool2D(3, stride=2, name="pool5"),
        *_classifier(num_classes, dropout, classifier_activation),
        name="alexnet",
    )
    return finish(model, input_shape)


def zfnet(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3), dropout: float = 0.5,
          classifier_activation: str | None = "softmax") -> nn.Sequential:
    """ZFNet as in the course notes' table (unbuilt; 107,627,624 parameters for 1000 classes):
    conv1 96 7x7/2, conv2 256 5x5/2, conv3 512, conv4 1024, conv5 512 (3x3 same), 3x3/2 max
    pools, FC 4096 - 4096 - num_classes (softmax)."""
    input_shape = check_input(input_shape, "zfnet")
    model = nn.Sequential(
        nn.Conv2D(96, 7, stride=2, padding=1, activation="relu", name="conv1"),
        nn.MaxPool2D(3, stride=2, ceil_mode=True, name="pool1"),
        _lrn("norm1"),
        nn.Conv2D(256, 5, stride=2, activation="relu", name="conv2"),
        nn.MaxPool2D(3, stride=2, ceil_mode=True, name="pool2"),
        _lrn("norm2"),
        nn.Conv2D(512, 3, padding="same", activation="relu", name="conv3"),
        nn.Conv2D(1024, 3, padding="same", activation="relu", name="conv4"),
        nn.Conv2D(512, 3, padding="same", activation="relu", name="conv5"),
        nn.MaxPool2D(3, stride=2, ceil_mode=True, name="pool5"),
        *_classifier(num_classes, dropout, classifier_activation),
        name="zfnet",
    )
    return finish(model, input_shape)
