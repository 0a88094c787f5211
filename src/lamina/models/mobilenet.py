"""MobileNet v1 (Howard et al. 2017, "MobileNets: Efficient Convolutional Neural Networks for
Mobile Vision Applications"; course notes, MobileNet) in Keras's layout and naming.

Depthwise separable convolutions: a depthwise 3x3 convolution (one filter per channel)
then a pointwise 1x1 convolution mixing the channels, each followed by batch normalization
and ReLU6:

    conv1: 3x3/2, 32 alpha filters, no bias - conv1_bn - conv1_relu
    13 blocks conv_dw_i (3x3 depthwise, stride s) - _bn - _relu - conv_pw_i (1x1, no bias) - _bn - _relu
        pointwise filters / stride: 64/1, 128/2, 128/1, 256/2, 256/1, 512/2, 5 x 512/1, 1024/2, 1024/1
    global average pooling - dropout (1e-3) - logits (FC, with bias) - softmax ('predictions')

Strided layers pad like Keras ('same': the extra pixel of padding goes bottom/right).
The width multiplier ``alpha`` thins every layer to int(alpha · filters) channels and the
resolution multiplier ``rho`` scales the input to round(rho · 224) (cost ~ alpha^2 rho^2).
BatchNorm: Keras's epsilon 1e-3 and momentum 0.99. With alpha = 1 and 1000 classes:
4,231,976 trainable parameters (the BN gammas and betas included) and 21,888 moving
statistics.
"""

from __future__ import annotations

from lamina import nn
from lamina.models.blocks import check_input, classifier_layers, finish

__all__ = ["MOBILENET_BLOCKS", "mobilenet"]

MOBILENET_BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)

BN_EPS, BN_MOMENTUM = 1e-3, 0.99


def _bn(name: str) -> nn.BatchNorm:
    return nn.BatchNorm(momentum=BN_MOMENTUM, eps=BN_EPS, name=name)


def mobilenet(num_classes: int = 1000, input_shape: tuple[int, int, int] = (224, 224, 3), alpha: float = 1.0,
              rho: float = 1.0, depth_multiplier: int = 1, dropout: float = 1e-3,
              classifier_activation: str | None = "softmax") -> nn.Sequential:
    """MobileNet v1 (unbuilt) for ``input_shape`` scaled by ``rho`` (height and width
    round(rho · h)); ``alpha`` in (0, 1] is the width multiplier. Ends with a softmax layer
    as Keras's model; ``classifier_activation=None`` gives logits."""
    if not alpha > 0:
        raise ValueError(f"mobilenet: alpha must be positive, got {alpha!r}")
    if not rho > 0:
        raise ValueError(f"mobilenet: rho must be positive, got {rho!r}")
    h, w, c = check_input(input_shape, "mobilenet")
    input_shape = (int(round(h * rho)), int(round(w * rho)), c)
    layers: list = [
        nn.Conv2D(int(32 * alpha), 3, stride=2, padding="same", use_bias=False, name="conv1"),
        _bn("conv1_bn"),
        nn.ReLU6(name="conv1_relu"),
    ]
    for i, (filters, stride) in enumerate(MOBILENET_BLOCKS, start=1):
        layers += [
            nn.DepthwiseConv2D(3, depth_multiplier=depth_multiplier, stride=stride, padding="same",
                               use_bias=False, name=f"conv_dw_{i}"),
            _bn(f"conv_dw_{i}_bn"),
            nn.ReLU6(name=f"conv_dw_{i}_relu"),
            nn.Conv2D(int(filters * alpha), 1, use_bias=False, name=f"conv_pw_{i}"),
            _bn(f"conv_pw_{i}_bn"),
            nn.ReLU6(name=f"conv_pw_{i}_relu"),
        ]
    layers += [
        nn.GlobalAvgPool2D(name="global_average_pooling2d"),
        nn.Dropout(dropout, name="dropout"),
        nn.Dense(num_classes, name="logits"),
        *classifier_layers(classifier_activation),
    ]
    name = f"mobilenet_{alpha:g}_{input_shape[0]}"
    return finish(nn.Sequential(*layers, name=name), input_shape)
