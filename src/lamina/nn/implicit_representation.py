"""Layers for implicit neural representations: networks that map coordinates to values
(an image's pixel position to its colour).

* :class:`SineLayer` and :class:`Siren` (Sitzmann et al. 2020): y = sin(w0 (x W + b)), with the
  initialisation that keeps activations well spread through depth: the first layer's W ~
  U(-1/n_in, 1/n_in), every later one's W ~ U(-sqrt(6/n_in)/w0, sqrt(6/n_in)/w0); biases as a
  PyTorch linear layer's, U(-1/sqrt(n_in), 1/sqrt(n_in)).
* :class:`FourierFeatures` (Tancik et al. 2020): gamma(v) = [cos(2 pi B v), sin(2 pi B v)], B a
  Gaussian matrix of scale sigma (``kind='gaussian'``), the log-spaced axis-aligned frequencies
  sigma^(j/m) of the positional variant (``'positional'``), or the identity (``'basic'``).
  NeRF's encoding (:func:`lamina.vision.positional_encoding`) is a positional variant with
  frequencies 2^k, no 2 pi, sin before cos and the input itself kept.
"""

from __future__ import annotations

import math

import numpy

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.autograd.function import cast
from lamina.errors import ShapeError
from lamina.nn.containers import ModuleList
from lamina.nn.dense import linear
from lamina.nn.layer import register_layer
from lamina.nn.module import Module, as_tensor, read_parameter
from lamina.nn.parameter import Parameter

__all__ = ["FOURIER_KINDS", "FourierFeatures", "SineLayer", "Siren"]

FOURIER_KINDS = ("gaussian", "positional", "basic")


def _positive_int(value, what: str, who: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, numpy.integer)) or value < 1:
        raise ValueError(f"{who}: {what} must be a positive int, got {value!r}")
    return int(value)


def _uniform(limit: float, shape: tuple[int, ...]) -> numpy.ndarray:
    dtype = backend.get_default_dtype()
    return backend.xp.asarray(backend.rng().uniform(-limit, limit, shape).astype(dtype))


def _check_features(layer: Module, x: Tensor, n_in: int) -> None:
    if x.ndim < 1 or x.shape[-1] != n_in:
        raise ShapeError(f"{layer._label()}: expected inputs (..., {n_in}) with {n_in} features on the last axis, "
                         f"got shape {tuple(x.shape)}")


@register_layer
class SineLayer(Module):
    """y = sin(w0 (x W + b)), W (in_features, out_features), with SIREN's initialisation
    (module docstring; ``is_first`` for the layer that reads the coordinates). ``linear=True``
    leaves out the sine (SIREN's last layer: x W + b with the hidden layers' initialisation)."""

    streamable = True

    def __init__(self, in_features: int, out_features: int, w0: float = 30.0, is_first: bool = False,
                 use_bias: bool = True, linear: bool = False, name: str | None = None):
        super().__init__(name=name)
        who = "SineLayer"
        self.in_features = _positive_int(in_features, "in_features", who)
        self.out_features = _positive_int(out_features, "out_features", who)
        if not w0 > 0:
            raise ValueError(f"{who}: w0 must be positive, got {w0!r}")
        self.w0, self.is_first, self.use_bias, self.linear = float(w0), bool(is_first), bool(use_bias), bool(linear)
        limit = 1.0 / self.in_features if self.is_first else math.sqrt(6.0 / self.in_features) / self.w0
        self.add_parameter("weight", _uniform(limit, (self.in_features, self.out_features)))
        if self.use_bias:
            self.add_parameter("bias", _uniform(1.0 / math.sqrt(self.in_features), (self.out_features,)))
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        _check_features(self, x, self.in_features)
        weight = read_parameter(self, "weight")
        z = linear(x, weight, read_parameter(self, "bias")) if self.use_bias else linear(x, weight)
        return z if self.linear else F.sin(z * self.w0)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (self.out_features,)

    def get_config(self) -> dict:
        return {"in_features": self.in_features, "out_features": self.out_features, "w0": self.w0,
                "is_first": self.is_first, "use_bias": self.use_bias, "linear": self.linear, "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.out_features}, w0={self.w0}" + (", first" if self.is_first else "") + (
            ", linear" if self.linear else "")


@register_layer
class Siren(Module):
    """SIREN: a first :class:`SineLayer` (``w0_initial``) from ``in_features`` to ``hidden_features``,
    ``hidden_layers`` more sine layers (``w0``), and a last layer to ``out_features``: linear
    (``outermost_linear=True``, the default, for values of any range) or a sine layer."""

    def __init__(self, in_features: int, hidden_features: int, hidden_layers: int, out_features: int,
                 w0: float = 30.0, w0_initial: float = 30.0, outermost_linear: bool = True, name: str | None = None):
        super().__init__(name=name)
        if isinstance(hidden_layers, bool) or not isinstance(hidden_layers, int) or hidden_layers < 0:
            raise ValueError(f"Siren: hidden_layers must be an int >= 0, got {hidden_layers!r}")
        self.in_features, self.hidden_features, self.hidden_layers = in_features, hidden_features, hidden_layers
        self.out_features, self.w0, self.w0_initial = out_features, float(w0), float(w0_initial)
        self.outermost_linear = bool(outermost_linear)
        layers = [SineLayer(in_features, hidden_features, w0=w0_initial, is_first=True)]
        layers += [SineLayer(hidden_features, hidden_features, w0=w0) for _ in range(hidden_layers)]
        layers.append(SineLayer(hidden_features, out_features, w0=w0, linear=self.outermost_linear))
        self.layers = ModuleList(layers)
        self.built = True

    def forward(self, x) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (self.out_features,)

    def get_config(self) -> dict:
        return {"in_features": self.in_features, "hidden_features": self.hidden_features,
                "hidden_layers": self.hidden_layers, "out_features": self.out_features, "w0": self.w0,
                "w0_initial": self.w0_initial, "outermost_linear": self.outermost_linear, "name": self.name}


@register_layer
class FourierFeatures(Module):
    """gamma(v) = [cos(2 pi v B^T), sin(2 pi v B^T)] on the last axis of v (..., in_features),
    giving (..., 2 r) for B of shape (r, in_features) (module docstring):

    * ``'gaussian'``: B ~ N(0, scale^2), r = ``mapping_size``;
    * ``'positional'``: rows scale^(j/m) e_d for j < m = ``mapping_size`` and each axis d
      (r = m in_features, grouped by frequency);
    * ``'basic'``: B = I (r = in_features).

    B is a buffer (saved in the state dict), or a trainable parameter with ``trainable=True``.
    """

    streamable = True

    def __init__(self, in_features: int, mapping_size: int = 256, scale: float = 10.0, kind: str = "gaussian",
                 trainable: bool = False, name: str | None = None):
        super().__init__(name=name)
        who = "FourierFeatures"
        self.in_features = _positive_int(in_features, "in_features", who)
        self.mapping_size = _positive_int(mapping_size, "mapping_size", who)
        if kind not in FOURIER_KINDS:
            raise ValueError(f"{who}: kind must be one of {FOURIER_KINDS}, got {kind!r}")
        if not scale > 0:
            raise ValueError(f"{who}: scale must be positive, got {scale!r}")
        self.scale, self.kind, self.trainable = float(scale), kind, bool(trainable)
        matrix = self._frequencies().astype(backend.get_default_dtype())
        if self.trainable:
            self.B = Parameter(matrix, dtype=matrix.dtype)
        else:
            self.register_buffer("B", backend.xp.asarray(matrix))
        self.built = True

    def _frequencies(self) -> numpy.ndarray:
        d, m = self.in_features, self.mapping_size
        if self.kind == "gaussian":
            return self.scale * backend.rng().standard_normal((m, d))
        if self.kind == "positional":
            levels = self.scale ** (numpy.arange(m) / m)                       # (m,)
            return (levels[:, None, None] * numpy.eye(d)[None]).reshape(m * d, d)
        return numpy.eye(d)

    @property
    def out_features(self) -> int:
        return 2 * self.B.shape[0]

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        _check_features(self, x, self.in_features)
        matrix = self.B if isinstance(self.B, Tensor) else Tensor._wrap(self.B)
        if matrix.dtype != x.dtype:
            matrix = cast(matrix, x.dtype)
        projected = (x @ matrix.T) * (2.0 * math.pi)
        return F.concat([F.cos(projected), F.sin(projected)], axis=-1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (self.out_features,)

    def get_config(self) -> dict:
        return {"in_features": self.in_features, "mapping_size": self.mapping_size, "scale": self.scale,
                "kind": self.kind, "trainable": self.trainable, "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.out_features}, kind={self.kind!r}, scale={self.scale}"
