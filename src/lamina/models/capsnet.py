"""CapsNet (Sabour, Frosst & Hinton 2017, "Dynamic Routing Between Capsules").

    conv1:   Conv2D(256, 9x9, stride 1, ReLU)              28x28x1 -> 20x20x256
    primary: PrimaryCapsules(32 x 8-D, 9x9, stride 2)      -> 6x6x32 = 1152 capsules of 8 values
    digits:  DigitCapsules(10 x 16-D, 3 routing iterations) -> (batch, 10, 16)
    decoder: the class capsules masked to the true one (the longest at test time), flattened,
             then Dense 512 ReLU, Dense 1024 ReLU, Dense 784 sigmoid: the reconstruction

The loss is the margin loss of the capsule lengths plus 0.0005 times the sum of squared
reconstruction errors (:meth:`CapsNet.loss`). :func:`capsnet_mnist` builds the paper's network:
8,215,568 parameters, 6,804,224 without the decoder, the paper's "8.2M" and "6.8M" (the
routing logits are no parameters; the paper's code adds a bias to each class capsule, which
this layout leaves out). :func:`capsnet_digits` is a small variant for 8x8 digits.
"""

from __future__ import annotations

import math

import numpy

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.capsules import capsule_margin_loss
from lamina.nn import Conv2D, Dense, Sequential
from lamina.nn.capsules import DigitCapsules, PrimaryCapsules, capsule_lengths
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int
from lamina.nn.module import Module, as_tensor

__all__ = ["CapsNet", "CapsNetOutput", "capsnet_digits", "capsnet_mnist"]


class CapsNetOutput(tuple):
    """(lengths (batch, classes), capsules (batch, classes, dim), reconstructions (batch, h, w, c))."""

    __slots__ = ()

    def __new__(cls, lengths, capsules, reconstructions):
        return super().__new__(cls, (lengths, capsules, reconstructions))

    lengths = property(lambda self: self[0])
    capsules = property(lambda self: self[1])
    reconstructions = property(lambda self: self[2])


@register_with_arguments
class CapsNet(Module):
    """A capsule network with a reconstruction decoder, for NHWC images of ``input_shape``.

    Called as ``model(images, labels=None)``: returns a :class:`CapsNetOutput`; the decoder reads
    the capsule of ``labels`` (class indices), or of the longest capsule without them. Sub-layers
    ``conv1``, ``primary_capsules``, ``digit_capsules`` and ``decoder``."""

    def __init__(self, input_shape=(28, 28, 1), num_classes: int = 10, conv_filters: int = 256,
                 conv_kernel: int = 9, primary_capsules: int = 32, primary_dim: int = 8, primary_kernel: int = 9,
                 primary_stride: int = 2, class_dim: int = 16, routing_iterations: int = 3,
                 decoder_units=(512, 1024), reconstruction_weight: float = 0.0005, name: str | None = None):
        super().__init__(name=name)
        if len(tuple(input_shape)) != 3:
            raise ValueError(f"CapsNet: input_shape must be (height, width, channels), got {input_shape!r}")
        self.input_shape = tuple(int(v) for v in input_shape)
        self.num_classes = positive_int(num_classes, "CapsNet: num_classes")
        self.reconstruction_weight = float(reconstruction_weight)
        self.conv1 = Conv2D(conv_filters, conv_kernel, activation="relu")
        self.primary_capsules = PrimaryCapsules(primary_capsules, primary_dim, primary_kernel, primary_stride)
        self.digit_capsules = DigitCapsules(self.num_classes, class_dim, routing_iterations)
        layers = [Dense(units, activation="relu") for units in decoder_units]
        self.decoder = Sequential(*layers, Dense(math.prod(self.input_shape), activation="sigmoid"))

    def _check(self, images) -> Tensor:
        images = as_tensor(images)
        if images.ndim != 4 or tuple(images.shape[1:]) != self.input_shape:
            raise ShapeError(f"CapsNet: images of shape {tuple(images.shape)}; expected (batch, "
                             f"{', '.join(map(str, self.input_shape))}) NHWC images")
        return images

    def forward(self, images, labels=None) -> CapsNetOutput:
        images = self._check(images)
        capsules = self.digit_capsules(self.primary_capsules(self.conv1(images)))
        lengths = capsule_lengths(capsules)
        if labels is None:
            chosen = numpy.argmax(lengths.numpy(), axis=1)
        else:
            chosen = numpy.asarray(labels.data if isinstance(labels, Tensor) else labels)
            if chosen.shape != (images.shape[0],):
                raise ShapeError(f"CapsNet: labels of shape {chosen.shape}; expected ({images.shape[0]},), "
                                 "one class index per image")
        mask = numpy.eye(self.num_classes, dtype=capsules.dtype)[chosen]
        masked = F.reshape(capsules * mask[:, :, None], images.shape[0], -1)
        reconstructions = F.reshape(self.decoder(masked), images.shape[0], *self.input_shape)
        return CapsNetOutput(lengths, capsules, reconstructions)

    def loss(self, images, labels, output: CapsNetOutput | None = None) -> Tensor:
        """margin loss + ``reconstruction_weight`` * sum of squared pixel errors, both averaged
        over the batch; ``output`` reuses a forward pass made with these labels."""
        images = self._check(images)
        output = self(images, labels) if output is None else output
        error = output.reconstructions - images
        squared = F.sum(F.reshape(error * error, images.shape[0], -1), axis=1)
        return capsule_margin_loss(output.lengths, labels) + F.mean(squared) * self.reconstruction_weight

    def predict(self, images) -> numpy.ndarray:
        """The class of the longest capsule of each image."""
        return numpy.argmax(capsule_lengths(self.digit_capsules(self.primary_capsules(
            self.conv1(self._check(images))))).numpy(), axis=1)

    def extra_repr(self) -> str:
        return f"input_shape={self.input_shape}, num_classes={self.num_classes}"


def capsnet_mnist(num_classes: int = 10, routing_iterations: int = 3) -> CapsNet:
    """The paper's CapsNet for 28x28 MNIST digits (module docstring)."""
    return CapsNet((28, 28, 1), num_classes, routing_iterations=routing_iterations)


def capsnet_digits(num_classes: int = 10, routing_iterations: int = 3) -> CapsNet:
    """A small CapsNet for 8x8 digits: Conv2D(32, 3x3) -> 6x6x32, PrimaryCapsules(8 x 8-D, 3x3,
    stride 2) -> 32 capsules, DigitCapsules(10 x 8-D), decoder Dense 64, 128 -> 64 pixels."""
    return CapsNet((8, 8, 1), num_classes, conv_filters=32, conv_kernel=3, primary_capsules=8, primary_dim=8,
                   primary_kernel=3, class_dim=8, routing_iterations=routing_iterations, decoder_units=(64, 128))
