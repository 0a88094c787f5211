"""Small DCGAN-style networks for a generative adversarial network (Goodfellow et al., 2014;
Radford et al., 2016), sized for small images such as the 8x8 digits.

A GAN trains two networks against each other. The generator G maps a code z ~ N(0, I) of
``code_size`` values to an image; the discriminator D maps an image to one logit, the
evidence that it is real rather than made by G. D learns to tell the data from G's samples,
G learns to make samples that D takes for real (:func:`lamina.train.generative.train_gan`
alternates their steps). Following DCGAN, both are convolutional without pooling: the
generator grows a small volume by transposed convolutions of stride 2 (ReLU), the
discriminator shrinks the image by convolutions of stride 2 (leaky ReLU, slope 0.2).

Both builders return built :class:`~lamina.nn.Sequential` models with ``input_shape`` set.
"""

from __future__ import annotations

import math

from lamina.nn import Conv2D, Conv2DTranspose, Cropping2D, Dense, Flatten, LeakyReLU, Reshape, Sequential
from lamina.nn.layer import positive_int

__all__ = ["dcgan_discriminator", "dcgan_generator"]


def _image_shape(value, what: str) -> tuple[int, int, int]:
    try:
        shape = tuple(value)
    except TypeError:
        shape = ()
    if len(shape) != 3 or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in shape):
        raise ValueError(f"{what} must be (height, width, channels), three positive ints; got {value!r}")
    return shape  # type: ignore[return-value]


def _filter_counts(values, what: str) -> tuple[int, ...]:
    try:
        counts = tuple(values)
    except TypeError:
        counts = ()
    if not counts:
        raise ValueError(f"{what} must be a non-empty sequence of positive ints, got {values!r}")
    for n in counts:
        positive_int(n, what)
    return counts


def dcgan_generator(code_size: int = 16, out_shape=(8, 8, 1), filters=(32, 16), kernel_size: int = 3,
                    output_activation: str | None = "sigmoid") -> Sequential:
    """z (batch, code_size) -> images (batch, *out_shape).

    With k = len(filters) upsampling steps: Dense to (h / 2^k, w / 2^k, filters[0])
    (rounded up) with ReLU, then per entry f of ``filters`` a Conv2DTranspose of f filters,
    stride 2 and ReLU (doubling height and width), then a Conv2D of the image's channels
    ('same' padding) with ``output_activation``: sigmoid for images in [0, 1], tanh for
    images in [-1, 1]. A crop at the bottom and right removes the rows and columns of the
    rounding up. For (8, 8, 1): 16 -> (2, 2, 32) -> (4, 4, 32) -> (8, 8, 16) -> (8, 8, 1).
    """
    positive_int(code_size, "dcgan_generator: code_size")
    height, width, channels = _image_shape(out_shape, "dcgan_generator: out_shape")
    filters = _filter_counts(filters, "dcgan_generator: filters")
    scale = 2 ** len(filters)
    h0, w0 = math.ceil(height / scale), math.ceil(width / scale)
    layers = [Dense(h0 * w0 * filters[0], activation="relu"), Reshape((h0, w0, filters[0]))]
    layers += [Conv2DTranspose(f, kernel_size, stride=2, padding="same", activation="relu") for f in filters]
    layers.append(Conv2D(channels, kernel_size, padding="same", activation=output_activation))
    extra_h, extra_w = h0 * scale - height, w0 * scale - width
    if extra_h or extra_w:
        layers.append(Cropping2D(((0, extra_h), (0, extra_w))))
    model = Sequential(*layers)
    model.build((None, code_size))
    model.input_shape = (None, code_size)
    return model


def dcgan_discriminator(in_shape=(8, 8, 1), filters=(16, 32), kernel_size: int = 3,
                        alpha: float = 0.2) -> Sequential:
    """Images (batch, *in_shape) -> one logit per image (batch, 1), positive for "real".

    Per entry f of ``filters`` a Conv2D of f filters, stride 2 and 'same' padding, followed by
    a leaky ReLU of slope ``alpha``; then Flatten and a linear Dense of one unit. The logit
    goes to binary cross-entropy with ``from_logits=True``.
    """
    height, width, channels = _image_shape(in_shape, "dcgan_discriminator: in_shape")
    filters = _filter_counts(filters, "dcgan_discriminator: filters")
    layers = []
    for f in filters:
        layers += [Conv2D(f, kernel_size, stride=2, padding="same"), LeakyReLU(alpha)]
    model = Sequential(*layers, Flatten(), Dense(1))
    model.build((None, height, width, channels))
    model.input_shape = (None, height, width, channels)
    return model
