"""SAGAN's self-attention (non-local) block on NHWC feature maps (Zhang et al. 2019), with
BigGAN's pooled keys and values (Brock et al. 2019).

For x of shape (N, H, W, C), with 1x1 projections (linear maps of the channel axis, no bias)
f (C -> C/r, queries), g (C -> C/r, keys), h (C -> C/2, values) and o (C/2 -> C):

    q = f(x) flattened to (N, HW, C/r)
    k = g(x), v = h(x), each max-pooled 2x2 when ``pooled`` (HW/4 positions) and flattened
    beta = softmax(q k^T) over the key positions                 (N, HW, HW/4)
    y = x + gamma * o(beta v)                                     gamma a scalar, initially 0

so that a fresh block is the identity and learns how much non-local evidence to mix in.
With ``spectral_norm=True`` each projection is a :class:`~lamina.nn.SpectralNorm`-wrapped
:class:`~lamina.nn.Dense`, as in both papers.
"""

from __future__ import annotations

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.nn.dense import Dense
from lamina.nn.layer import input_error, positive_int, register_layer
from lamina.nn.module import Module, as_tensor
from lamina.nn.weight_norms import SpectralNorm

__all__ = ["SelfAttention2D"]


@register_layer
class SelfAttention2D(Module):
    """``SelfAttention2D(channels, reduction=8, pooled=True, spectral_norm=False)(x)`` with x of
    shape (N, H, W, channels); H and W must be even when ``pooled``. Sub-layers ``query``,
    ``key``, ``value``, ``output`` (module docstring); parameter ``gamma`` (1,), starting at 0."""

    default_name = "self_attention2d"

    def __init__(self, channels: int, reduction: int = 8, pooled: bool = True, spectral_norm: bool = False,
                 name: str | None = None):
        super().__init__(name=name)
        self.channels = positive_int(channels, "SelfAttention2D: channels")
        self.reduction = positive_int(reduction, "SelfAttention2D: reduction")
        if channels < 2 or channels < reduction:
            raise ValueError(f"SelfAttention2D: channels ({channels}) must be at least 2 and at least "
                             f"reduction ({reduction})")
        self.pooled, self.spectral_norm = bool(pooled), bool(spectral_norm)
        key_width, value_width = channels // reduction, channels // 2
        self.query = self._projection(key_width, "query")
        self.key = self._projection(key_width, "key")
        self.value = self._projection(value_width, "value")
        self.output = self._projection(channels, "output")

    def _projection(self, units: int, name: str) -> Module:
        dense = Dense(units, use_bias=False, kernel_init="orthogonal", name=name)
        return SpectralNorm(dense, name=name) if self.spectral_norm else dense

    def build(self, input_shape) -> None:
        shape = tuple(input_shape)
        if len(shape) != 4 or shape[-1] != self.channels:
            raise ValueError(f"{self._label()}: expected inputs (batch, h, w, {self.channels}), got {shape}")
        self.add_parameter("gamma", backend.xp.zeros((1,), dtype=backend.get_default_dtype()))
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 4 or x.shape[-1] != self.channels:
            raise input_error(self, x, f"(batch, h, w, {self.channels})")
        n, h, w, _ = x.shape
        if self.pooled and (h % 2 or w % 2):
            raise input_error(self, x, "an even height and width for the 2x2 pooling of keys and values")
        queries = self.query(x).reshape(n, h * w, -1)
        keys, values = self.key(x), self.value(x)
        if self.pooled:
            keys, values = F.max_pool2d(keys, 2), F.max_pool2d(values, 2)
        keys = keys.reshape(n, keys.shape[1] * keys.shape[2], -1)
        values = values.reshape(n, values.shape[1] * values.shape[2], -1)
        weights = F.softmax(F.matmul(queries, F.transpose(keys, (0, 2, 1))), axis=-1)
        attended = F.matmul(weights, values).reshape(n, h, w, -1)
        return x + self.gamma * self.output(attended)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {"channels": self.channels, "reduction": self.reduction, "pooled": self.pooled,
                "spectral_norm": self.spectral_norm, "name": self.name}

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}, pooled={self.pooled}"
