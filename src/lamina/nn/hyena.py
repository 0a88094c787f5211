"""The Hyena operator (Poli et al. 2023, "Hyena Hierarchy: Towards Larger Convolutional
Language Models"), an attention-free causal sequence mixer on (N, T, d) -> (N, T, d):

    (x^1 .. x^N, v) = split(short_conv(x W_in + b_in))        N + 1 streams of d features
    z^1 = v,   z^{n+1} = x^n * (h^n ** z^n + b^n * z^n)       n = 1 .. N (the order)
    out = z^{N+1} W_out + b_out

``short_conv`` is a depthwise causal convolution of ``short_filter_order`` taps per channel,
``*`` the element-wise product and ``**`` the causal long convolution along time,
(h ** z)_t = sum_{s <= t} h_{t - s} z_s, computed by FFT with both signals zero-padded to
2T (so the circular convolution equals the linear one on its first T steps). b^n (d,) is
the filter's skip term. The long filters are implicit: a small FFN of sines reads a
positional encoding of each step and a decay window fades them,

    h_t = FFN(pe(t)) * (exp(-alpha t) + shift),   pe(t) = (t, cos(f_k w_t), -sin(f_k w_t)),

with t = 0 .. 1 over ``l_max`` steps, w_t = 2 pi step / l_max, f_k spread over the
(emb_dim - 1) / 2 bands, FFN = Dense, sin(freq * .), Dense, sin, Dense, sin, Dense (no bias
at the end), and each channel's decay alpha spread between |ln target| / slow_decay_pct and
|ln target| / fast_decay_pct. The encoding is laid out for ``l_max`` steps and cut to T, so
the filter of a step never depends on the length of the input.
"""

from __future__ import annotations

import math

import numpy as np

from lamina import backend
from lamina import fft as lfft
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn.dense import Dense
from lamina.nn.layer import input_error, positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["HyenaOperator", "causal_fft_convolution", "hyena_positional_encoding"]


def causal_fft_convolution(u, h) -> Tensor:
    """(h ** u)_t = sum_{s <= t} h_{t - s} u_s for u (N, T, C) and h (T, C), by FFT over 2T
    points (the zero padding keeps the wrap-around of the circular convolution out of the
    first T steps)."""
    u, h = as_tensor(u), as_tensor(h)
    length = u.shape[1]
    if u.ndim != 3 or tuple(h.shape) != (length, u.shape[2]):
        raise ShapeError(f"causal_fft_convolution: expected u (batch, time, channels) and h (time, channels) "
                         f"of the same time and channels, got shapes {tuple(u.shape)} and {tuple(h.shape)}")
    u_f = lfft.rfft(u, n=2 * length, dim=1)
    h_f = lfft.rfft(h, n=2 * length, dim=0)
    return lfft.irfft(lfft.mul(u_f, h_f), n=2 * length, dim=1)[:, :length]


def hyena_positional_encoding(l_max: int, emb_dim: int) -> np.ndarray:
    """pe (l_max, emb_dim) in float64: the time t = 0 .. 1, then cos(f_k w) and -sin(f_k w)
    of w = 2 pi (0 .. l_max - 1) / l_max for the (emb_dim - 1) / 2 bands f_k spread over
    [1e-4, bands - 1]."""
    bands = (emb_dim - 1) // 2
    t = np.linspace(0.0, 1.0, l_max)[:, None]
    w = 2 * math.pi * np.arange(l_max)[:, None] / l_max
    angles = w * np.linspace(1e-4, bands - 1, bands)
    return np.concatenate([t, np.cos(angles), -np.sin(angles)], axis=1)


@register_layer
class HyenaOperator(Module):
    """Hyena operator of ``order`` N on (batch, time <= ``l_max``, ``d_model``) (formulas in the
    module docstring). ``filter_order``: the width of the filters' FFN; ``emb_dim`` (odd, >= 3)
    the size of its positional encoding; ``w`` the initial frequency of its sines;
    ``short_filter_order`` the taps of the short convolution; ``modulate``, ``fast_decay_pct``,
    ``slow_decay_pct``, ``target`` and ``shift`` the decay window.

    :meth:`long_filters` gives the filters h^n for a length T (order, T, d_model)."""

    def __init__(self, d_model: int, l_max: int, order: int = 2, filter_order: int = 64, emb_dim: int = 3,
                 short_filter_order: int = 3, w: float = 1.0, modulate: bool = True, fast_decay_pct: float = 0.3,
                 slow_decay_pct: float = 1.5, target: float = 1e-2, shift: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        who = "HyenaOperator"
        self.d_model = positive_int(d_model, f"{who}: d_model")
        self.l_max = positive_int(l_max, f"{who}: l_max")
        self.order = positive_int(order, f"{who}: order")
        self.filter_order = positive_int(filter_order, f"{who}: filter_order")
        self.short_filter_order = positive_int(short_filter_order, f"{who}: short_filter_order")
        if isinstance(emb_dim, bool) or not isinstance(emb_dim, int) or emb_dim < 3 or emb_dim % 2 == 0:
            raise ValueError(f"{who}: emb_dim must be an odd int >= 3 (the time and (emb_dim - 1) / 2 pairs of "
                             f"cos and sin), got {emb_dim!r}")
        if not 0 < target < 1 or not 0 < fast_decay_pct < slow_decay_pct:
            raise ValueError(f"{who}: expected 0 < target < 1 and 0 < fast_decay_pct < slow_decay_pct, got "
                             f"target={target}, fast_decay_pct={fast_decay_pct}, slow_decay_pct={slow_decay_pct}")
        self.emb_dim, self.w, self.modulate = emb_dim, float(w), bool(modulate)
        self.fast_decay_pct, self.slow_decay_pct = float(fast_decay_pct), float(slow_decay_pct)
        self.target, self.shift = float(target), float(shift)
        self.positional_encoding = hyena_positional_encoding(self.l_max, emb_dim)
        self.decay_window = self._decay_window()
        self._build_weights()

    def _decay_window(self) -> np.ndarray:
        """exp(-alpha_c t) + shift, (l_max, order * d_model) in float64."""
        channels = self.order * self.d_model
        rates = np.linspace(abs(math.log(self.target)) / self.slow_decay_pct,
                            abs(math.log(self.target)) / self.fast_decay_pct, channels)
        t = np.linspace(0.0, 1.0, self.l_max)[:, None]
        return np.exp(-t * rates) + self.shift

    def _build_weights(self) -> None:
        xp, rng, dtype = backend.xp, backend.rng(), backend.get_default_dtype()
        streams = (self.order + 1) * self.d_model
        self.in_proj = Dense(streams, kernel_init="xavier_uniform")
        self.in_proj.build((None, self.d_model))
        bound = 1.0 / math.sqrt(self.short_filter_order)
        self.add_parameter("short_filter_weight",
                           xp.asarray(rng.uniform(-bound, bound, (self.short_filter_order, streams)), dtype=dtype))
        self.add_parameter("short_filter_bias", xp.asarray(rng.uniform(-bound, bound, streams), dtype=dtype))
        self.filter_in = Dense(self.filter_order, kernel_init="xavier_uniform")
        self.filter_in.build((None, self.emb_dim))
        self.filter_hidden_1, self.filter_hidden_2 = (Dense(self.filter_order, kernel_init="xavier_uniform")
                                                      for _ in range(2))
        self.filter_out = Dense(self.order * self.d_model, use_bias=False, kernel_init="xavier_uniform")
        for layer in (self.filter_hidden_1, self.filter_hidden_2, self.filter_out):
            layer.build((None, self.filter_order))
        self.add_parameter("filter_frequencies", xp.full((3, self.filter_order), self.w, dtype=dtype))
        self.add_parameter("filter_bias", xp.asarray(rng.standard_normal((self.order, self.d_model)), dtype=dtype))
        self.out_proj = Dense(self.d_model, kernel_init="xavier_uniform")
        self.out_proj.build((None, self.d_model))
        self.built = True

    def long_filters(self, length: int) -> Tensor:
        """h^1 .. h^N for ``length`` <= l_max steps, (order, length, d_model)."""
        if not 1 <= length <= self.l_max:
            raise ShapeError(f"{self._label()}: the long filters cover 1 .. l_max={self.l_max} steps, got a "
                             f"sequence of {length}; build the layer with a larger l_max")
        dtype = self.filter_bias.dtype
        h = Tensor(backend.xp.asarray(self.positional_encoding[:length], dtype=dtype))
        for i, layer in enumerate((self.filter_in, self.filter_hidden_1, self.filter_hidden_2)):
            h = F.sin(self.filter_frequencies[i] * layer(h))
        h = self.filter_out(h)
        if self.modulate:
            h = h * Tensor(backend.xp.asarray(self.decay_window[:length], dtype=dtype))
        return h.reshape(length, self.order, self.d_model).transpose(1, 0, 2)

    def short_convolution(self, u: Tensor) -> Tensor:
        """The depthwise causal convolution y_t = b + sum_j w_j u_{t + j - (k - 1)} (N, T, C)."""
        taps, length = self.short_filter_order, u.shape[1]
        padded = F.pad(u, ((0, 0), (taps - 1, 0), (0, 0)))
        y = self.short_filter_bias
        for j in range(taps):
            y = y + padded[:, j:j + length] * self.short_filter_weight[j]
        return y

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 3 or x.shape[-1] != self.d_model or x.shape[1] < 1:
            raise input_error(self, x, f"(batch, time, {self.d_model}) with at least one step")
        length = x.shape[1]
        if length > self.l_max:
            raise ShapeError(f"{self._label()}: the input {tuple(x.shape)} has {length} steps, more than "
                             f"l_max={self.l_max} the long filters were laid out for")
        streams = F.split(self.short_convolution(self.in_proj(x)), self.d_model, axis=-1)
        *gates, z = streams
        filters = self.long_filters(length)
        for n, gate in enumerate(gates):
            z = gate * (causal_fft_convolution(z, filters[n]) + z * self.filter_bias[n])
        return self.out_proj(z)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {"d_model": self.d_model, "l_max": self.l_max, "order": self.order, "filter_order": self.filter_order,
                "emb_dim": self.emb_dim, "short_filter_order": self.short_filter_order, "w": self.w,
                "modulate": self.modulate, "fast_decay_pct": self.fast_decay_pct,
                "slow_decay_pct": self.slow_decay_pct, "target": self.target, "shift": self.shift, "name": self.name}

    def extra_repr(self) -> str:
        return f"{self.d_model}, l_max={self.l_max}, order={self.order}, filter_order={self.filter_order}"
