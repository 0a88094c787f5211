"""Noise layers: regularizers that perturb activations in training and are the identity in
evaluation, like :class:`lamina.nn.Dropout` (course notes, Dropout).

    GaussianNoise(stddev)   d = x + n,         n ~ N(0, stddev^2)         (additive)
    GaussianDropout(rate)   d = x n,           n ~ N(1, rate / (1 - rate)) (multiplicative)
    AlphaDropout(rate)      d = a (x mask + alpha' (1 - mask)) + b          (for SELU networks)
    SpatialDropout1D/2D     d = x mask / keep_prob, one mask value per sample and channel

GaussianDropout's noise has the mean and variance of inverted dropout's mask / keep_prob,
so both keep E[d] = x. AlphaDropout (Klambauer et al., 2017) sets dropped units to SELU's
negative saturation value alpha' = -lambda alpha (about -1.7581) instead of 0, then applies
the affine map that brings inputs of mean 0 and variance 1 back to mean 0 and variance 1.
With q = 1 - rate the probability of keeping a unit, z = x mask + alpha' (1 - mask) has
E[z] = (1 - q) alpha' and Var[z] = q + alpha'^2 q (1 - q), hence

    a = ((1 - rate) (1 + rate alpha'^2))^(-1/2),   b = -a rate alpha'

(the map of ``torch.nn.AlphaDropout``). The spatial variants drop whole feature maps (one
draw for every (sample, channel) pair, broadcast over the steps or pixels), since
neighbouring activations in a map are strongly correlated and dropping single units
barely regularizes a convolutional network (``torch.nn.Dropout1d``/``Dropout2d`` on
channels-last inputs).

Every forward pass in training draws new noise from :func:`lamina.backend.rng` (seed it
with :func:`lamina.manual_seed`); the backward pass reuses the forward's draw:
dJ/dx = dJ/dd * s, with s the multiplicative factor (1 for GaussianNoise).
"""

from __future__ import annotations

import math
import numbers

import numpy

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError
from lamina.functional.activation import SELU_ALPHA, SELU_SCALE
from lamina.nn.dropout import dropout_mask
from lamina.nn.layer import check_shape_ndim, input_error, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["AlphaDropout", "Dropout1D", "Dropout2D", "Dropout3D", "FeatureAlphaDropout", "GaussianDropout",
           "GaussianNoise", "NoiseFunction", "SpatialDropout1D", "SpatialDropout2D", "alpha_dropout_affine"]

SELU_SATURATION = -SELU_SCALE * SELU_ALPHA
"""alpha' = -lambda alpha: the value SELU tends to for very negative inputs."""


class NoiseFunction(Function):
    """d = x * scale + shift with ``scale`` and ``shift`` drawn by the layer (either may be
    None; ``scale`` broadcasts against x without enlarging it); dJ/dx = dJ/dd * scale."""

    def forward(self, x):
        dtype = (self.scale if self.scale is not None else self.shift).dtype
        x = x.astype(dtype, copy=False)
        out = x * self.scale if self.scale is not None else x
        return out + self.shift if self.shift is not None else out

    def backward(self, dy):
        return (dy * self.scale if self.scale is not None else dy,)

    def backward_graph(self, dy):
        return (dy * self.scale if self.scale is not None else dy,)     # the drawn noise is a constant


def alpha_dropout_affine(rate: float) -> tuple[float, float]:
    """(a, b) of AlphaDropout: a = ((1 - rate)(1 + rate alpha'^2))^(-1/2), b = -a rate alpha'."""
    a = 1.0 / math.sqrt((1.0 - rate) * (1.0 + rate * SELU_SATURATION**2))
    return a, -a * rate * SELU_SATURATION


def _float_dtype(x: Tensor) -> numpy.dtype:
    """The dtype of the noise: the input's if floating, else the default."""
    return x.dtype if x.dtype.kind == "f" else backend.get_default_dtype()


def _draw_normal(shape, mean: float, stddev: float, dtype) -> object:
    """mean + stddev * N(0, 1) of ``shape`` from lamina's generator, in ``dtype``."""
    dtype = numpy.dtype(dtype)
    draw_dtype = dtype if dtype in (numpy.float32, numpy.float64) else numpy.float64
    values = backend.rng().standard_normal(tuple(shape), dtype=draw_dtype)
    values *= draw_dtype.type(stddev)
    values += draw_dtype.type(mean)
    return backend.xp.asarray(values.astype(dtype, copy=False))


def _check_fraction(layer: Module, what: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= value < 1.0:
        raise ValueError(f"{layer._label()}: {what} must be a number in [0, 1), got {value!r}")
    return float(value)


class _NoiseLayer(Module):
    """The identity in evaluation (or when the noise is off); in training, one
    :class:`NoiseFunction` with the factors :meth:`draw` returns."""

    streamable = True

    # the input rank the layer requires (None: any) and how to describe it in errors
    ndim: int | None = None
    expected_input = ""

    def active(self) -> bool:
        raise NotImplementedError

    def draw(self, shape: tuple, dtype) -> dict:
        """``{"scale": ..., "shift": ...}`` for an input of ``shape`` (either may be None)."""
        raise NotImplementedError

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if self.ndim is not None and x.ndim != self.ndim:
            raise input_error(self, x, self.expected_input)
        if not self.training or not self.active():
            return x
        return NoiseFunction.apply(x, **self.draw(x.shape, _float_dtype(x)))

    def compute_output_shape(self, input_shape):
        if self.ndim is None:
            return tuple(input_shape)
        return check_shape_ndim(self, input_shape, self.ndim, self.expected_input)


class _RateLayer(_NoiseLayer):
    """A layer with one hyperparameter, the fraction of units ``rate`` it drops."""

    def __init__(self, rate: float = 0.5, name: str | None = None):
        super().__init__(name=name)
        self.rate = _check_fraction(self, "rate (the fraction of units dropped)", rate)

    def active(self) -> bool:
        return self.rate > 0.0

    def get_config(self) -> dict:
        return {"rate": self.rate, "name": self.name}

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


@register_layer
class GaussianNoise(_NoiseLayer):
    """Additive zero-centred Gaussian noise in training, d = x + N(0, stddev^2); the identity
    in evaluation. A regularizer and a cheap form of data augmentation for real-valued inputs."""

    def __init__(self, stddev: float, name: str | None = None):
        super().__init__(name=name)
        if isinstance(stddev, bool) or not isinstance(stddev, numbers.Real) or not 0.0 <= stddev < math.inf:
            raise ValueError(f"{self._label()}: stddev must be a finite number >= 0, got {stddev!r}")
        self.stddev = float(stddev)

    def active(self) -> bool:
        return self.stddev > 0.0

    def draw(self, shape, dtype) -> dict:
        return {"scale": None, "shift": _draw_normal(shape, 0.0, self.stddev, dtype)}

    def get_config(self) -> dict:
        return {"stddev": self.stddev, "name": self.name}

    def extra_repr(self) -> str:
        return f"stddev={self.stddev}"


@register_layer
class GaussianDropout(_RateLayer):
    """Multiplicative Gaussian noise in training, d = x N(1, rate / (1 - rate)): the mean and
    variance of inverted dropout's factor mask / keep_prob, without zeros. The identity in
    evaluation."""

    def draw(self, shape, dtype) -> dict:
        stddev = math.sqrt(self.rate / (1.0 - self.rate))
        return {"scale": _draw_normal(shape, 1.0, stddev, dtype), "shift": None}


@register_layer
class AlphaDropout(_RateLayer):
    """Dropout for self-normalizing (SELU) networks: dropped units take SELU's saturation
    value alpha' = -lambda alpha, then d = a z + b restores mean 0 and variance 1 for inputs
    of mean 0 and variance 1 (see the module docstring for a and b). The identity in
    evaluation."""

    def draw(self, shape, dtype) -> dict:
        a, b = alpha_dropout_affine(self.rate)
        keep = backend.rng().random(tuple(shape)) >= self.rate
        dtype = numpy.dtype(dtype)
        # d = a x mask + (a alpha' (1 - mask) + b): a scale and a shift per unit
        scale = keep * dtype.type(a)
        shift = numpy.where(keep, dtype.type(b), dtype.type(a * SELU_SATURATION + b))
        return {"scale": backend.xp.asarray(scale.astype(dtype, copy=False)),
                "shift": backend.xp.asarray(shift.astype(dtype, copy=False))}


class _SpatialDropout(_RateLayer):
    """Inverted dropout of whole channels: one mask value per (sample, channel), broadcast
    over every other axis, scaled by 1 / keep_prob where kept."""

    def draw(self, shape, dtype) -> dict:
        mask_shape = (shape[0],) + (1,) * (len(shape) - 2) + (shape[-1],)
        return {"scale": dropout_mask(mask_shape, self.rate, dtype), "shift": None}


@register_layer
class SpatialDropout1D(_SpatialDropout):
    """Drops whole channels of a sequence (N, T, C) in training: each sample's channel c is
    zeroed at every step with probability ``rate``, the kept ones scaled by 1 / (1 - rate).
    The identity in evaluation."""

    ndim = 3
    expected_input = "a 3-D input (batch, steps, channels); whole channels are dropped"


@register_layer
class SpatialDropout2D(_SpatialDropout):
    """Drops whole feature maps of an NHWC batch in training: each sample's channel c is
    zeroed at every pixel with probability ``rate``, the kept ones scaled by 1 / (1 - rate).
    The identity in evaluation."""

    ndim = 4
    expected_input = "a 4-D NHWC input (batch, height, width, channels); whole channels are dropped"


# PyTorch's names for channel dropout (Dropout1d/2d/3d) and its channel-wise alpha dropout


@register_layer
class Dropout1D(SpatialDropout1D):
    """PyTorch's ``Dropout1d`` on (N, L, C) sequences: :class:`SpatialDropout1D`."""


@register_layer
class Dropout2D(SpatialDropout2D):
    """PyTorch's ``Dropout2d`` on NHWC images: :class:`SpatialDropout2D`."""


@register_layer
class Dropout3D(_SpatialDropout):
    """PyTorch's ``Dropout3d``: drops whole channels of an NDHWC batch in training, each
    sample's channel c zeroed at every voxel with probability ``rate``, the kept ones scaled by
    1 / (1 - rate). The identity in evaluation."""

    ndim = 5
    expected_input = "a 5-D NDHWC input (batch, depth, height, width, channels); whole channels are dropped"


@register_layer
class FeatureAlphaDropout(AlphaDropout):
    """:class:`AlphaDropout` of whole channels (PyTorch's ``FeatureAlphaDropout``): one draw
    per sample and channel (the last axis), shared by every position of (N, ..., C)."""

    def draw(self, shape, dtype) -> dict:
        if len(shape) < 2:
            raise ShapeError(f"{self._label()}: expected an input (batch, ..., channels), got shape {tuple(shape)}")
        return super().draw((shape[0],) + (1,) * (len(shape) - 2) + (shape[-1],), dtype)
