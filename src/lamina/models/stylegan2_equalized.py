"""StyleGAN2's equalized-learning-rate layers (Karras et al. 2020): weights stored as
N(0, 1) / lr_mul and scaled by lr_mul / sqrt(fan_in) at every call (:class:`EqualizedDense`,
:class:`EqualizedConv2D`), the pixel norm and the mapping network z -> w
(:class:`MappingNetwork`). The formulas are in :mod:`lamina.models.stylegan2`.
"""

from __future__ import annotations

import math

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn import Module
from lamina.nn.layer import input_error, positive_int, register_layer
from lamina.nn.module import as_tensor

__all__ = ["EqualizedConv2D", "EqualizedDense", "MappingNetwork", "pixel_norm"]

SLOPE = 0.2
GAIN = math.sqrt(2.0)
ACTIVATIONS = (None, "lrelu")


def _randn(shape) -> object:
    return backend.xp.asarray(backend.rng().standard_normal(shape), dtype=backend.get_default_dtype())


def _check_lr_multiplier(value, who: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{who}: lr_multiplier must be a positive number, got {value!r}")
    return float(value)


def _check_activation(value, who: str) -> str | None:
    if value not in ACTIVATIONS:
        raise ValueError(f"{who}: activation must be one of {ACTIVATIONS}, got {value!r}")
    return value


def _activate(z: Tensor, activation: str | None) -> Tensor:
    return F.leaky_relu(z, SLOPE) * GAIN if activation == "lrelu" else z


def pixel_norm(z, eps: float = 1e-8) -> Tensor:
    """z / sqrt(mean(z^2 over the last axis) + eps): every code scaled to a unit second moment."""
    z = as_tensor(z)
    return z * ((z * z).mean(axis=-1, keepdims=True) + eps).rsqrt()


@register_layer
class EqualizedDense(Module):
    """y = x (W lr_mul / sqrt(n_in)) + b lr_mul, then (``activation='lrelu'``) the leaky ReLU
    times sqrt(2). ``weight`` (n_in, units) starts N(0, 1) / lr_mul, ``bias`` (units,) at
    ``bias_init`` / lr_mul (so the bias used starts at ``bias_init``)."""

    default_name = "equalized_dense"
    streamable = True

    def __init__(self, units: int, lr_multiplier: float = 1.0, bias_init: float = 0.0, use_bias: bool = True,
                 activation: str | None = None, name: str | None = None):
        super().__init__(name=name)
        self.units = positive_int(units, "EqualizedDense: units")
        self.lr_multiplier = _check_lr_multiplier(lr_multiplier, "EqualizedDense")
        self.bias_init, self.use_bias = float(bias_init), bool(use_bias)
        self.activation = _check_activation(activation, "EqualizedDense")

    def build(self, input_shape) -> None:
        n_in = tuple(input_shape)[-1]
        if n_in is None:
            raise ShapeError(f"{self._label()}: the feature (last) axis of {tuple(input_shape)} must be known")
        self.add_parameter("weight", _randn((n_in, self.units)) / self.lr_multiplier)
        if self.use_bias:
            dtype = backend.get_default_dtype()
            self.add_parameter("bias", backend.xp.full((self.units,), self.bias_init / self.lr_multiplier,
                                                       dtype=dtype))
        self.built = True

    @property
    def weight_gain(self) -> float:
        return self.lr_multiplier / math.sqrt(self.weight.shape[0])

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim < 1 or x.shape[-1] != self.weight.shape[0]:
            raise input_error(self, x, f"(..., {self.weight.shape[0]}) features on the last axis")
        z = x @ (self.weight * self.weight_gain)
        if self.use_bias:
            z = z + self.bias * self.lr_multiplier
        return _activate(z, self.activation)

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape)[:-1], self.units)

    def get_config(self) -> dict:
        return {"units": self.units, "lr_multiplier": self.lr_multiplier, "bias_init": self.bias_init,
                "use_bias": self.use_bias, "activation": self.activation, "name": self.name}


@register_layer
class EqualizedConv2D(Module):
    """A 'same' convolution (zero padding f // 2, odd ``kernel_size`` f) with the weight used
    as W lr_mul / sqrt(f^2 c_in) and the bias as b lr_mul, then (``activation='lrelu'``) the
    leaky ReLU times sqrt(2). ``weight`` (K, f, f, c_in) starts N(0, 1) / lr_mul."""

    default_name = "equalized_conv2d"

    def __init__(self, filters: int, kernel_size: int = 3, lr_multiplier: float = 1.0, bias_init: float = 0.0,
                 use_bias: bool = True, activation: str | None = None, name: str | None = None):
        super().__init__(name=name)
        self.filters = positive_int(filters, "EqualizedConv2D: filters")
        self.kernel_size = positive_int(kernel_size, "EqualizedConv2D: kernel_size")
        if kernel_size % 2 == 0:
            raise ValueError(f"EqualizedConv2D: kernel_size must be odd (a centred 'same' window), got {kernel_size}")
        self.lr_multiplier = _check_lr_multiplier(lr_multiplier, "EqualizedConv2D")
        self.bias_init, self.use_bias = float(bias_init), bool(use_bias)
        self.activation = _check_activation(activation, "EqualizedConv2D")

    def build(self, input_shape) -> None:
        shape = tuple(input_shape)
        if len(shape) != 4 or shape[-1] is None:
            raise ShapeError(f"{self._label()}: expected an NHWC input shape with known channels, got {shape}")
        f = self.kernel_size
        self.add_parameter("weight", _randn((self.filters, f, f, shape[-1])) / self.lr_multiplier)
        if self.use_bias:
            dtype = backend.get_default_dtype()
            self.add_parameter("bias", backend.xp.full((self.filters,), self.bias_init / self.lr_multiplier,
                                                       dtype=dtype))
        self.built = True

    @property
    def weight_gain(self) -> float:
        _, f, _, c_in = self.weight.shape
        return self.lr_multiplier / math.sqrt(f * f * c_in)

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        c_in = self.weight.shape[-1]
        if x.ndim != 4 or x.shape[-1] != c_in:
            raise input_error(self, x, f"a 4-D NHWC batch with {c_in} channels")
        bias = self.bias * self.lr_multiplier if self.use_bias else None
        z = F.conv2d(x, self.weight * self.weight_gain, bias, padding=self.kernel_size // 2)
        return _activate(z, self.activation)

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape)[:3], self.filters)

    def get_config(self) -> dict:
        return {"filters": self.filters, "kernel_size": self.kernel_size, "lr_multiplier": self.lr_multiplier,
                "bias_init": self.bias_init, "use_bias": self.use_bias, "activation": self.activation,
                "name": self.name}


@register_layer
class MappingNetwork(Module):
    """z (N, z_dim) -> w (N, ``w_dim``): pixel norm, then ``num_layers`` equalized dense layers
    of ``w_dim`` units with leaky ReLU (times sqrt(2)) and ``lr_multiplier`` (0.01).

    In training it follows the mean w in the buffer ``w_avg`` (w_avg <- beta w_avg + (1 - beta)
    batch mean, beta = ``w_avg_beta``); ``truncation_psi`` < 1 pulls w towards it:
    w_avg + psi (w - w_avg) (the truncation trick)."""

    default_name = "mapping_network"

    def __init__(self, w_dim: int = 512, num_layers: int = 8, lr_multiplier: float = 0.01,
                 w_avg_beta: float = 0.995, name: str | None = None):
        super().__init__(name=name)
        self.w_dim = positive_int(w_dim, "MappingNetwork: w_dim")
        self.num_layers = positive_int(num_layers, "MappingNetwork: num_layers")
        self.lr_multiplier = _check_lr_multiplier(lr_multiplier, "MappingNetwork")
        if not 0 <= w_avg_beta < 1:
            raise ValueError(f"MappingNetwork: w_avg_beta must be in [0, 1), got {w_avg_beta!r}")
        self.w_avg_beta = float(w_avg_beta)
        for k in range(num_layers):
            setattr(self, f"fc{k}", EqualizedDense(w_dim, lr_multiplier=lr_multiplier, activation="lrelu",
                                                   name=f"fc{k}"))

    def build(self, input_shape) -> None:
        shape = tuple(input_shape)
        if len(shape) != 2 or shape[1] is None:
            raise ShapeError(f"{self._label()}: expected codes of shape (batch, z_dim), got {shape}")
        self.register_buffer("w_avg", backend.xp.zeros((self.w_dim,), dtype=backend.get_default_dtype()))
        self.built = True

    def forward(self, z, truncation_psi: float = 1.0) -> Tensor:
        z = as_tensor(z)
        if z.ndim != 2:
            raise input_error(self, z, "codes of shape (batch, z_dim)")
        w = pixel_norm(z)
        for k in range(self.num_layers):
            w = self._modules[f"fc{k}"](w)
        if self.training:
            mean = w.data.mean(axis=0).astype(self.w_avg.dtype)
            self.w_avg = self.w_avg * self.w_avg_beta + mean * (1 - self.w_avg_beta)
        if truncation_psi != 1:
            avg = Tensor(self.w_avg.astype(w.dtype, copy=False))
            w = avg + (w - avg) * truncation_psi
        return w

    def compute_output_shape(self, input_shape):
        return (tuple(input_shape)[0], self.w_dim)

    def get_config(self) -> dict:
        return {"w_dim": self.w_dim, "num_layers": self.num_layers, "lr_multiplier": self.lr_multiplier,
                "w_avg_beta": self.w_avg_beta, "name": self.name}
