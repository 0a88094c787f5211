"""Dropout and DropConnect (course notes, Dropout), both *inverted*: the kept values are
scaled by 1 / keep_prob during training so that evaluation needs no rescaling.

    training:   mask = rand(shape) >= rate  (P(kept) = keep_prob = 1 - rate)
                d = x * mask / keep_prob,   dJ/dx = dJ/dd * mask / keep_prob
    evaluation: d = x

A new mask is drawn on every forward pass from :func:`lamina.backend.rng` (seed it with
:func:`lamina.manual_seed`); the backward pass reuses the forward's mask.
"""

from __future__ import annotations

import numpy

from lamina import backend
from lamina import functional as F
from lamina.autograd import Function, Tensor
from lamina.nn.layer import layer_from_config, layer_to_config, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["DropConnect", "Dropout", "DropoutFunction", "dropout_mask"]


def dropout_mask(shape, rate: float, dtype):
    """mask / keep_prob: 0 where dropped, 1 / keep_prob where kept (P(kept) = 1 - rate);
    all zeros at rate 1, where nothing is kept."""
    dtype = numpy.dtype(dtype)
    if rate >= 1.0:
        return backend.xp.zeros(tuple(shape), dtype=dtype)
    draw_dtype = dtype if dtype in (numpy.float32, numpy.float64) else numpy.float64
    keep = backend.rng().random(tuple(shape), dtype=draw_dtype) >= rate
    scaled = keep.astype(dtype)
    scaled *= dtype.type(1.0 / (1.0 - rate))
    return backend.xp.asarray(scaled)


class DropoutFunction(Function):
    """d = x * s with s = mask / keep_prob drawn in forward; dJ/dx = dJ/dd * s."""

    def forward(self, x):
        dtype = x.dtype if x.dtype.kind == "f" else backend.get_default_dtype()
        self.scale = dropout_mask(x.shape, self.rate, dtype)
        return x * self.scale

    def backward(self, dy):
        return (dy * self.scale,)

    def backward_graph(self, dy):
        return (dy * self.scale,)          # the mask is a constant drawn in forward


def _check_rate(rate: float, what: str) -> float:
    rate = float(rate)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"{what}: rate is the fraction dropped and must be in [0, 1], got {rate!r}")
    return rate


class _RateDropout(Module):
    """What dropout layers with one ``rate`` share: the rate's check, keep_prob, the output
    shape (the input's), the config {rate, name}, and :meth:`_dropping` (false in evaluation
    or at rate 0, where the layer is the identity)."""

    def __init__(self, rate: float = 0.5, name: str | None = None):
        super().__init__(name=name)
        self.rate = _check_rate(rate, type(self).__name__)

    @property
    def keep_prob(self) -> float:
        return 1.0 - self.rate

    def _dropping(self) -> bool:
        return self.training and self.rate != 0.0

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {"rate": self.rate, "name": self.name}

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


@register_layer
class Dropout(_RateDropout):
    """Inverted dropout: in training each unit is zeroed with probability ``rate`` and the
    survivors scaled by 1 / keep_prob (keep_prob = 1 - rate); the identity in evaluation."""

    streamable = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if not self._dropping():
            return x
        return DropoutFunction.apply(x, rate=self.rate)


class _WeightDropout(Module):
    """What DropConnect and WeightDrop share: the wrapped ``layer`` (a config is rebuilt first;
    :meth:`_accepts` checks it, ``_expected`` says what it must be), the ``rate``, a weight
    times a fresh mask / keep_prob (:meth:`_dropped`), the wrapped layer's output shape, and
    the config {layer, rate, name}."""

    _expected = ""

    def __init__(self, layer: Module, rate: float = 0.5, name: str | None = None):
        super().__init__(name=name)
        if isinstance(layer, dict):
            layer = layer_from_config(layer)
        if not self._accepts(layer):
            raise TypeError(f"{type(self).__name__}: expected {self._expected}, got {type(layer).__name__}")
        self.layer = layer
        self.rate = _check_rate(rate, type(self).__name__)

    def _accepts(self, layer) -> bool:
        raise NotImplementedError

    def _dropped(self, weight: Tensor) -> Tensor:
        return F.mul(weight, Tensor._wrap(dropout_mask(weight.shape, self.rate, weight.dtype)))

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self) -> dict:
        return {"layer": layer_to_config(self.layer), "rate": self.rate, "name": self.name}

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


@register_layer
class DropConnect(_WeightDropout):
    """DropConnect: drops *connections* instead of units. In training the wrapped layer
    (a Dense or Conv2D, anything with ``apply_weights(x, weight)``) runs with
    W * mask / keep_prob, a new mask of W's shape on every forward pass; its bias is not
    dropped. In evaluation it is the wrapped layer unchanged. The wrapped layer's
    parameters appear under ``layer.`` (e.g. ``drop_connect.layer.weight``)."""

    _expected = "a Dense or Conv2D layer (with apply_weights)"

    def _accepts(self, layer) -> bool:
        return isinstance(layer, Module) and hasattr(layer, "apply_weights")

    def build(self, input_shape) -> None:
        if not self.layer.built:
            self.layer.build(input_shape)
            self.layer.built = True
        self.built = True

    def forward(self, x) -> Tensor:
        if not self.training or self.rate == 0.0:
            return self.layer(x)
        return self.layer.apply_weights(x, self._dropped(self.layer.weight))
