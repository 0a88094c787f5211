"""A small single-shot grid detector (course notes, You only look once): a convolutional
network whose output volume has one vector per grid cell and anchor,

    (S, S, A, 5 + C):   objectness logit, t_x, t_y, t_w, t_h, C class logits,

laid out as :mod:`lamina.vision.detection` encodes targets, decodes detections and computes
the cost. Each 2x2 max pool halves the map until it is S x S; a 1x1 convolution then predicts
every cell's A (5 + C) numbers at once, the sliding window done as a convolution.
"""

from __future__ import annotations

from lamina import nn
from lamina.nn.layer import positive_int


def grid_detector(num_classes: int, grid_size: int, input_shape: tuple[int, int, int] = (32, 32, 1),
                  anchors: int = 1, width: int = 16) -> nn.Sequential:
    """Conv 3x3 (``width`` filters, doubling up to 4 ``width``) + ReLU + MaxPool 2/2, repeated
    until the map is ``grid_size`` square; Conv 3x3 (4 ``width``) + ReLU; Conv 1x1 with
    anchors (5 + num_classes) filters; Reshape to (S, S, A, 5 + C). The input's height and
    width must be ``grid_size`` times a power of two."""
    positive_int(num_classes, "grid_detector: num_classes")
    positive_int(grid_size, "grid_detector: grid_size")
    positive_int(anchors, "grid_detector: anchors")
    positive_int(width, "grid_detector: width")
    height, image_width, _ = input_shape
    factor = height // grid_size
    if height != image_width or height % grid_size or factor & (factor - 1):
        raise ValueError(f"grid_detector: the input {height}x{image_width} must be square and grid_size={grid_size} "
                         "times a power of two")
    layers: list = []
    for halving in range(factor.bit_length() - 1):
        layers += [nn.Conv2D(width * 2 ** min(halving, 2), 3, padding="same", activation="relu"), nn.MaxPool2D(2)]
    layers += [nn.Conv2D(4 * width, 3, padding="same", activation="relu"),
               nn.Conv2D(anchors * (5 + num_classes), 1, kernel_init="xavier_uniform"),
               nn.Reshape((grid_size, grid_size, anchors, 5 + num_classes))]
    model = nn.Sequential(*layers)
    model.build((None, *input_shape))
    return model
