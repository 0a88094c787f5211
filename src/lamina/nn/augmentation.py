"""Data augmentation as layers (course notes, Data augmentation: "generate new training data
from existing training data": mirror, rotate, blur, saturation, cropping).

Put them at the front of a model over NHWC images. In training mode each draws new random
parameters for every sample on every call, from :func:`lamina.backend.rng` (so
:func:`lamina.manual_seed` makes a run reproducible and a training checkpoint, which saves
that generator, resumes it exactly); in evaluation mode they pass the images through
unchanged, except :class:`RandomCrop`, which takes the centre window. They have no
weights, are saved with the model like any layer, and are differentiable.

The images are taken as they come (scaled to [0, 1], standardised, ...): nothing is clipped.
"""

from __future__ import annotations

import math

import numpy

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional import image
from lamina.nn.layer import check_shape_ndim, input_error, pair, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["RandomBrightness", "RandomContrast", "RandomCrop", "RandomFlip", "RandomGaussianBlur",
           "RandomRotation", "RandomSaturation"]


def _non_negative(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise ValueError(f"{what} must be a finite number >= 0, got {value!r}")
    return float(value)


class _Augmentation(Module):
    """Checks the NHWC input; subclasses implement ``augment`` (training) and may change
    ``evaluate`` (the identity here) and the output shape."""

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 4:
            raise input_error(self, x, "a 4-D NHWC batch of images (batch, height, width, channels)")
        return self.augment(x, x.shape[0]) if self.training and x.shape[0] else self.evaluate(x)

    def augment(self, x: Tensor, n: int) -> Tensor:
        raise NotImplementedError

    def evaluate(self, x: Tensor) -> Tensor:
        return x

    def compute_output_shape(self, input_shape):
        return check_shape_ndim(self, input_shape, 4, "a 4-D NHWC shape (batch, height, width, channels)")


@register_layer
class RandomFlip(_Augmentation):
    """Mirror each image with probability 1/2: ``mode`` 'horizontal' (left-right),
    'vertical' (up-down) or 'horizontal_and_vertical' (each, independently)."""

    MODES = ("horizontal", "vertical", "horizontal_and_vertical")

    def __init__(self, mode: str = "horizontal", name: str | None = None):
        super().__init__(name=name)
        if mode not in self.MODES:
            raise ValueError(f"RandomFlip: mode must be one of {self.MODES}, got {mode!r}")
        self.mode = mode

    def augment(self, x, n):
        rng = backend.rng()
        flip_w = rng.random(n) < 0.5 if self.mode != "vertical" else None
        flip_h = rng.random(n) < 0.5 if self.mode != "horizontal" else None
        return image.flip(x, flip_w, flip_h)

    def get_config(self) -> dict:
        return {"mode": self.mode, "name": self.name}

    def extra_repr(self) -> str:
        return repr(self.mode)


@register_layer
class RandomCrop(_Augmentation):
    """A random ``size`` window of each image zero-padded by ``padding`` on every side (the
    CIFAR recipe: ``RandomCrop(32, padding=4)`` on 32x32 images shifts them by up to 4
    pixels); in evaluation the centre ``size`` window of the unpadded image."""

    def __init__(self, size, padding=0, name: str | None = None):
        super().__init__(name=name)
        self.size = pair(size, "RandomCrop size")
        self.padding = pair(padding, "RandomCrop padding")
        if min(self.size) < 1 or min(self.padding) < 0:
            raise ValueError(f"RandomCrop: size must be positive and padding >= 0, got {size!r}, {padding!r}")

    def _check_fits(self, shape) -> None:
        (sh, sw), (h, w) = self.size, shape[1:3]
        if h is not None and w is not None and (sh > h or sw > w):
            raise ShapeError(f"{self._label()}: got images of {h}x{w} (input shape {tuple(shape)}); expected "
                             f"at least the {sh}x{sw} crop size")

    def augment(self, x, n):
        self._check_fits(x.shape)
        (sh, sw), (ph, pw) = self.size, self.padding
        rng = backend.rng()
        rows = rng.integers(0, x.shape[1] + 2 * ph - sh + 1, n)
        cols = rng.integers(0, x.shape[2] + 2 * pw - sw + 1, n)
        return image.crop(x, numpy.stack([rows, cols], axis=1), self.size, self.padding)

    def evaluate(self, x):
        self._check_fits(x.shape)
        (sh, sw), (h, w) = self.size, x.shape[1:3]
        if (sh, sw) == (h, w):
            return x
        top, left = (h - sh) // 2, (w - sw) // 2
        return x[:, top:top + sh, left:left + sw]

    def compute_output_shape(self, input_shape):
        shape = super().compute_output_shape(input_shape)
        self._check_fits(shape)
        return (shape[0], *self.size, shape[3])

    def get_config(self) -> dict:
        return {"size": list(self.size), "padding": list(self.padding), "name": self.name}

    def extra_repr(self) -> str:
        return f"size={self.size}, padding={self.padding}"


@register_layer
class RandomRotation(_Augmentation):
    """Turn each image about its centre by an angle drawn uniformly from [-degrees, degrees]
    (counterclockwise for positive angles), with bilinear interpolation; the corners that
    come from outside the image are 0."""

    def __init__(self, degrees: float, name: str | None = None):
        super().__init__(name=name)
        self.degrees = _non_negative(degrees, "RandomRotation: degrees")

    def augment(self, x, n):
        if self.degrees == 0:
            return x
        return image.rotate(x, backend.rng().uniform(-self.degrees, self.degrees, n))

    def get_config(self) -> dict:
        return {"degrees": self.degrees, "name": self.name}

    def extra_repr(self) -> str:
        return f"degrees={self.degrees}"


@register_layer
class RandomGaussianBlur(_Augmentation):
    """Blur each image, with probability ``probability``, by a Gaussian whose standard
    deviation is drawn uniformly from ``sigma`` = (low, high) pixels (reflected edges)."""

    def __init__(self, sigma=(0.1, 2.0), probability: float = 0.5, name: str | None = None):
        super().__init__(name=name)
        low, high = (sigma, sigma) if isinstance(sigma, (int, float)) else tuple(sigma)
        low, high = _non_negative(low, "RandomGaussianBlur: sigma"), _non_negative(high, "RandomGaussianBlur: sigma")
        if low > high:
            raise ValueError(f"RandomGaussianBlur: sigma must be (low, high) with low <= high, got {sigma!r}")
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"RandomGaussianBlur: probability must lie in [0, 1], got {probability!r}")
        self.sigma, self.probability = (low, high), float(probability)

    def augment(self, x, n):
        rng = backend.rng()
        sigmas = rng.uniform(*self.sigma, n) * (rng.random(n) < self.probability)
        radius = math.ceil(3 * self.sigma[1])
        return image.gaussian_blur(x, sigmas, min(radius, min(x.shape[1:3]) - 1))

    def get_config(self) -> dict:
        return {"sigma": list(self.sigma), "probability": self.probability, "name": self.name}

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, probability={self.probability}"


class _RandomFactor(_Augmentation):
    """A photometric change by one factor per image, drawn uniformly from
    [max(0, 1 - factor), 1 + factor] and applied by ``adjust(images, factors)``."""

    def __init__(self, factor: float = 0.5, name: str | None = None):
        super().__init__(name=name)
        self.factor = _non_negative(factor, f"{type(self).__name__}: factor")

    def augment(self, x, n):
        return self.adjust(x, backend.rng().uniform(max(0.0, 1.0 - self.factor), 1.0 + self.factor, n))

    def get_config(self) -> dict:
        return {"factor": self.factor, "name": self.name}

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


@register_layer
class RandomSaturation(_RandomFactor):
    """Scale each RGB image's colourfulness by its factor: out = g + s (x - g) about the grey
    level g (0.299 R + 0.587 G + 0.114 B)."""

    def adjust(self, x, factors):
        if x.shape[3] != 3:
            raise input_error(self, x, "RGB images (3 channels on the last axis)")
        return image.adjust_saturation(x, factors)


@register_layer
class RandomContrast(_RandomFactor):
    """Scale each channel of each image about its mean by the image's factor."""

    def adjust(self, x, factors):
        return image.adjust_contrast(x, factors)


@register_layer
class RandomBrightness(_Augmentation):
    """Add to each image one value drawn uniformly from [-delta, delta]."""

    def __init__(self, delta: float, name: str | None = None):
        super().__init__(name=name)
        self.delta = _non_negative(delta, "RandomBrightness: delta")

    def augment(self, x, n):
        return image.adjust_brightness(x, backend.rng().uniform(-self.delta, self.delta, n))

    def get_config(self) -> dict:
        return {"delta": self.delta, "name": self.name}

    def extra_repr(self) -> str:
        return f"delta={self.delta}"
