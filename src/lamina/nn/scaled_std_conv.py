"""Scaled weight standardization (Brock, De, Smith 2021, "Characterizing signal propagation to
close the performance gap in unnormalized ResNets"; the convolution of the normalizer-free
networks).

Each output filter W_k of shape (f_h, f_w, c_in), N = f_h f_w c_in values, is standardized
over those N values before the convolution:

    W_hat_k = g_k · gamma · (W_k - mean(W_k)) / (sqrt(N) · sqrt(var(W_k) + eps))

so that W_hat_k has zero mean and squared norm gamma^2 g_k^2 (for eps -> 0): a unit-variance
input gives an output of variance about gamma^2 g_k^2 whatever the weights. ``gamma`` is the
gain of the activation before the layer (1.7139 for ReLU, see :mod:`lamina.models.nfnet`),
``g`` a learnable per-filter gain (started at 1). The standardization is part of the graph,
so the gradients reach W through it.
"""

from __future__ import annotations

import math

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.nn.conv import _Conv, _set_conv_options
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import read_parameter

__all__ = ["ScaledStdConv2D", "scaled_standardized_weight"]


def scaled_standardized_weight(weight, gain, gamma: float = 1.0, eps: float = 1e-6) -> Tensor:
    """W_hat of a (K, f_h, f_w, c_in) ``weight`` with per-filter ``gain`` (K,) (module docstring)."""
    fan_in = math.prod(weight.shape[1:])
    axes = tuple(range(1, len(weight.shape)))
    centred = F.sub(weight, F.mean(weight, axis=axes, keepdims=True))
    inv_std = F.rsqrt(F.add(F.var(weight, axis=axes, keepdims=True), eps))
    scale = F.mul(F.reshape(gain, (-1,) + (1,) * len(axes)), gamma / math.sqrt(fan_in))
    return F.mul(F.mul(centred, inv_std), scale)


@register_layer
class ScaledStdConv2D(_Conv):
    """A convolution (as :class:`lamina.nn.Conv2D`) whose filters are standardized at every call (module docstring):
    parameters ``weight`` (K, f_h, f_w, c_in / groups), ``gain`` (K,) started at 1 and ``bias``
    (K,); ``gamma`` the fixed gain of the preceding activation, ``eps`` added to each filter's
    variance. Defaults: no padding, bias on (timm's ``ScaledStdConv2d``)."""

    def __init__(self, filters: int, kernel_size, stride=1, padding="valid", use_bias: bool = True,
                 groups: int = 1, gamma: float = 1.0, eps: float = 1e-6, activation=None,
                 kernel_init="he_uniform", bias_init="zeros", dilation=1, name: str | None = None):
        super().__init__(name=name)
        positive_int(filters, "ScaledStdConv2D: filters")
        positive_int(groups, "ScaledStdConv2D: groups")
        if filters % groups:
            raise ValueError(f"ScaledStdConv2D: groups={groups} must divide filters={filters}")
        self.filters, self.groups = filters, groups
        _set_conv_options(self, kernel_size, stride, padding, use_bias, activation, kernel_init, bias_init,
                          "im2col", dilation)
        if not (gamma > 0 and math.isfinite(gamma)):
            raise ValueError(f"ScaledStdConv2D: gamma must be a positive finite number, got {gamma!r}")
        if not eps >= 0:
            raise ValueError(f"ScaledStdConv2D: eps must be >= 0, got {eps!r}")
        self.gamma, self.eps = float(gamma), float(eps)

    def _filters_for(self, c_in: int) -> int:
        return self.filters

    def _groups_for(self, c_in: int) -> int:
        return self.groups

    @property
    def in_channels(self) -> int:
        return self.weight.shape[-1] * self.groups

    def build(self, input_shape) -> None:
        super().build(input_shape)
        self.add_parameter("gain", backend.xp.ones((self.filters,), dtype=self.weight.dtype))

    def standardized_weight(self) -> Tensor:
        """The filters the convolution uses, W_hat."""
        return scaled_standardized_weight(read_parameter(self, "weight"), read_parameter(self, "gain"),
                                          self.gamma, self.eps)

    def forward(self, x) -> Tensor:
        return self.apply_weights(x, self.standardized_weight())

    def get_config(self) -> dict:
        config = self._common_config()
        del config["algorithm"]
        return {"filters": self.filters, **config, "groups": self.groups, "gamma": self.gamma, "eps": self.eps}

    def extra_repr(self) -> str:
        groups = f", groups={self.groups}" if self.groups != 1 else ""
        return f"{self.filters}, {super().extra_repr()}{groups}, gamma={self.gamma:.4g}"
