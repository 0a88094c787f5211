r"""BitLinear: the ternary fully connected layer of BitNet b1.58 (Ma et al. 2024, "The Era of
1-bit LLMs: All Large Language Models are in 1.58 Bits").

Weights are quantized per tensor to {-1, 0, +1} times their absolute mean, activations per
token (per row of the last axis) to 8 bits by their absolute maximum:

    beta = max(mean|W|, 1e-5),            W_q = clamp(round(W / beta), -1, 1) * beta
    gamma = max(max_j |x_j|, 1e-5),       x_q = clamp(round(x * 127 / gamma), -128, 127) * gamma / 127
    y = x_q W_q (+ b)

(round half to even), with ``x`` first normalised by a parameter-free RMSNorm
x / sqrt(mean(x^2) + eps) when ``norm=True``, as in the paper's BitLinear. Training uses the
straight-through estimator: the forward pass sees the quantized values, the backward pass
treats both quantizers as the identity (x + (q(x) - x) with the difference held constant).

:meth:`BitLinear.pack` gives a :class:`PackedBitLinear`: the int8 ternary weights and beta,
whose forward runs the 8-bit activations through an integer matrix product and rescales once,
y = (x_int W_int) * gamma beta / 127, the same values as the layer's forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.functional.rms_norm import rms_norm
from lamina.nn import init as initializers
from lamina.nn.activation import activation_config, get_activation
from lamina.nn.dense import LinearFunction, add_dense_weights
from lamina.nn.layer import check_shape_ndim, input_error, register_layer
from lamina.nn.module import Module, as_tensor, read_parameter

__all__ = ["BitLinear", "PackedBitLinear", "absmax_quantize", "absmean_ternary"]

_FLOOR = 1e-5
_Q_MAX = 127


def absmean_ternary(w) -> tuple[np.ndarray, float]:
    """(W_int, beta): W_int = clamp(round(W / beta), -1, 1) as int8, beta = max(mean|W|, 1e-5)."""
    xp = backend.xp
    beta = max(float(xp.abs(w).mean()), _FLOOR)
    inverse = np.asarray(1.0 / beta, dtype=w.dtype)
    return xp.clip(xp.rint(w * inverse), -1, 1).astype(np.int8), beta


def absmax_quantize(x) -> tuple[np.ndarray, np.ndarray]:
    """(x_int, gamma) per row of the last axis: x_int = clamp(round(x * 127 / gamma), -128, 127)
    (int8 values held in x's dtype), gamma = max(max|x|, 1e-5) with the last axis kept."""
    xp = backend.xp
    gamma = xp.maximum(xp.abs(x).max(axis=-1, keepdims=True), np.asarray(_FLOOR, dtype=x.dtype))
    return xp.clip(xp.rint(x * (_Q_MAX / gamma)), -128, _Q_MAX), gamma


@register_layer
class BitLinear(Module):
    """A fully connected layer (W of shape (n_in, units), as :class:`~lamina.nn.Dense`) with
    ternary weights and 8-bit activations (see the module docstring). ``norm``: the
    parameter-free RMSNorm of the input before its quantization; ``eps``: its epsilon.
    ``use_bias`` defaults to False, as in BitNet. Not a Dense subclass, so that nothing made
    for Dense layers (ONNX export, LoRA wrapping, pruning) takes it for a float layer."""

    def __init__(self, units: int, activation=None, use_bias: bool = False, norm: bool = True, eps: float = 1e-6,
                 kernel_init="xavier_uniform", bias_init="zeros", name: str | None = None):
        super().__init__(name=name)
        if isinstance(units, bool) or not isinstance(units, int) or units < 1:
            raise ValueError(f"BitLinear: units must be a positive int, got {units!r}")
        if not float(eps) > 0:
            raise ValueError(f"BitLinear: eps must be positive, got {eps!r}")
        self.units = units
        self.use_bias = bool(use_bias)
        self.activation = get_activation(activation)
        self.activation_spec = None if isinstance(self.activation, Module) else activation
        self.norm = bool(norm)
        self.eps = float(eps)
        self.kernel_init = kernel_init
        self.bias_init = bias_init
        initializers.get(kernel_init)
        initializers.get(bias_init)

    def build(self, input_shape) -> None:
        add_dense_weights(self, input_shape)
        self.built = True

    def compute_output_shape(self, input_shape):
        shape = check_shape_ndim(self, input_shape, tuple(range(1, 9)), "(batch, ..., features)")
        return shape[:-1] + (self.units,)

    def _normalised(self, x: Tensor) -> Tensor:
        return rms_norm(x, x.shape[-1], eps=self.eps) if self.norm else x

    def forward(self, x) -> Tensor:
        if type(x) is not Tensor:
            x = as_tensor(x)
        weight = read_parameter(self, "weight")
        n_in = weight.shape[0]
        if not x.data.shape or x.data.shape[-1] != n_in:
            raise input_error(self, x, f"(batch, ..., {n_in}): the last axis must have the {n_in} "
                                       "features the layer was built for")
        x = self._normalised(x)
        x_int, gamma = absmax_quantize(x.data)
        x_q = x + Tensor._wrap((x_int / (_Q_MAX / gamma) - x.data).astype(x.dtype, copy=False))
        w_int, beta = absmean_ternary(weight.data)
        w_q = weight + Tensor._wrap((w_int.astype(weight.dtype) / (1.0 / beta) - weight.data).astype(weight.dtype))
        z = LinearFunction.apply(x_q, w_q, read_parameter(self, "bias")) if self.use_bias else \
            LinearFunction.apply(x_q, w_q)
        return self.activation(z) if self.activation is not None else z

    def pack(self) -> PackedBitLinear:
        """The inference form: int8 ternary weights, beta, the bias and the input's treatment."""
        if not self.built:
            raise RuntimeError(f"{self._label()}: pack() needs built weights; call the layer on an input first")
        w_int, beta = absmean_ternary(self.weight.data)
        bias = backend.to_numpy(self.bias.data).copy() if self.use_bias else None
        return PackedBitLinear(backend.to_numpy(w_int), beta, bias, self.norm, self.eps, self.activation)

    def get_config(self) -> dict:
        return {"units": self.units, "activation": activation_config(self), "use_bias": self.use_bias,
                "norm": self.norm, "eps": self.eps, "kernel_init": initializers.serialize(self.kernel_init),
                "bias_init": initializers.serialize(self.bias_init), "name": self.name}

    def extra_repr(self) -> str:
        n_in = self.weight.shape[0] if self.built else "?"
        act = self.activation_spec if isinstance(self.activation_spec, str) else None
        return f"{n_in} -> {self.units}" + (f", activation={act!r}" if act else "") + (
            ", use_bias=True" if self.use_bias else "") + ("" if self.norm else ", norm=False")


@dataclass(frozen=True, eq=False)
class PackedBitLinear:
    """A packed :class:`BitLinear` for inference on arrays: ``weight`` int8 in {-1, 0, 1} of shape
    (n_in, units), ``scale`` = beta, ``bias`` (or None); ``forward(x)`` gives the layer's output."""

    weight: np.ndarray
    scale: float
    bias: np.ndarray | None
    norm: bool
    eps: float
    activation: object = None

    def forward(self, x) -> np.ndarray:
        """y = (x_int W_int) * gamma beta / 127 (+ b), the integer product accumulated in int32."""
        x = np.asarray(x.data if isinstance(x, Tensor) else x)
        if x.ndim < 1 or x.shape[-1] != self.weight.shape[0]:
            raise ValueError(f"PackedBitLinear: expected an input of shape (..., {self.weight.shape[0]}), "
                             f"got {x.shape}")
        if self.norm:
            x = x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + np.asarray(self.eps, dtype=x.dtype))
        x_int, gamma = absmax_quantize(x)
        acc = np.matmul(x_int.astype(np.int32), self.weight.astype(np.int32))
        y = (acc * (gamma / _Q_MAX) * self.scale).astype(x.dtype)
        if self.bias is not None:
            y = y + self.bias
        if self.activation is not None:
            y = self.activation(Tensor._wrap(y)).data
        return y

    __call__ = forward
