"""The Mamba-2 block (Dao and Gu 2024, "Transformers are SSMs"): a gated mixer over sequences
(N, T, d_model) built on state-space duality (:func:`lamina.functional.ssd`).

    [z, xBC, dt] = in_proj(u)                      (I, I + 2 G S, H features; I = expand d_model)
    [x, B, C] = silu(conv1d(xBC))                  (causal depthwise, kernel d_conv, with bias)
    y = ssd(x, softplus(dt + dt_bias), -exp(A_log), B, C) + D x
    out = out_proj(rmsnorm(y silu(z)) weight)      (the norm over groups of I / G features)

with H = I / headdim heads of headdim P features, G = ngroups groups of B and C (each shared by
H / G heads), state size S, scalar decay A per head. ``block(u, state)`` continues from a
``state`` = (the last d_conv - 1 inputs of the convolution (N, d_conv - 1, I + 2 G S), the
SSM state (N, H, P, S)); ``return_state=True`` also returns the state after the call, and
:meth:`Mamba2Block.step` reads one token (N, d_model) in O(1) work with the plain recurrence.
"""

from __future__ import annotations

import math

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.ssd import ssd, ssd_reference
from lamina.nn import init as initializers
from lamina.nn.dense import Dense
from lamina.nn.layer import input_error, positive_int, register_layer
from lamina.nn.mamba import inverse_softplus_time_steps
from lamina.nn.module import Module, as_tensor

__all__ = ["Mamba2Block"]


@register_layer
class Mamba2Block(Module):
    """Mamba-2's mixer on (N, T, ``d_model``) -> (N, T, ``d_model``) (formulas in the module
    docstring). ``d_state`` S, ``d_conv`` the convolution kernel, ``expand`` (I = expand
    d_model), ``headdim`` P (dividing I), ``ngroups`` G (dividing the heads), ``chunk_size``
    of the chunked SSD algorithm, ``eps`` of the gated RMSNorm.

    Initialisation as mamba_ssm's: in/out projections and the convolution U(+-1/sqrt(fan_in))
    (no projection biases), dt_bias softplus^-1 of a log-uniform step in [``dt_min``,
    ``dt_max``], A_log = log of U(1, 16) per head, D = 1, norm weight 1."""

    def __init__(self, d_model: int, d_state: int = 64, d_conv: int = 4, expand: int = 2, headdim: int = 64,
                 ngroups: int = 1, chunk_size: int = 256, eps: float = 1e-5, dt_min: float = 0.001,
                 dt_max: float = 0.1, name: str | None = None):
        super().__init__(name=name)
        who = "Mamba2Block"
        self.d_model = positive_int(d_model, f"{who}: d_model")
        self.d_state = positive_int(d_state, f"{who}: d_state")
        self.d_conv = positive_int(d_conv, f"{who}: d_conv")
        self.expand = positive_int(expand, f"{who}: expand")
        self.headdim = positive_int(headdim, f"{who}: headdim")
        self.ngroups = positive_int(ngroups, f"{who}: ngroups")
        self.chunk_size = positive_int(chunk_size, f"{who}: chunk_size")
        self.d_inner = self.expand * self.d_model
        if self.d_inner % self.headdim:
            raise ValueError(f"{who}: headdim {self.headdim} does not divide expand * d_model = {self.d_inner}")
        self.nheads = self.d_inner // self.headdim
        if self.nheads % self.ngroups:
            raise ValueError(f"{who}: ngroups {self.ngroups} does not divide the {self.nheads} heads")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"{who}: expected 0 < dt_min <= dt_max, got {dt_min!r} and {dt_max!r}")
        self.eps, self.dt_min, self.dt_max = float(eps), float(dt_min), float(dt_max)
        self.conv_dim = self.d_inner + 2 * self.ngroups * self.d_state
        self.in_proj = Dense(self.d_inner + self.conv_dim + self.nheads, use_bias=False,
                             kernel_init=initializers.uniform(1 / math.sqrt(self.d_model)))
        self.out_proj = Dense(self.d_model, use_bias=False,
                              kernel_init=initializers.uniform(1 / math.sqrt(self.d_inner)))

    def build(self, input_shape) -> None:
        shape = tuple(input_shape)
        if len(shape) != 3 or shape[-1] != self.d_model:
            raise ShapeError(f"{self._label()}: expected an input shape (batch, time, {self.d_model}), got {shape}")
        for layer, layer_shape in ((self.in_proj, shape), (self.out_proj, shape[:-1] + (self.d_inner,))):
            if not layer.built:
                layer.build(layer_shape)
                layer.built = True
        dtype = backend.get_default_dtype()
        xp = backend.xp
        conv_init = initializers.uniform(1 / math.sqrt(self.d_conv))
        self.add_parameter("conv_weight", conv_init((self.conv_dim, self.d_conv), dtype=dtype))
        self.add_parameter("conv_bias", conv_init((self.conv_dim,), dtype=dtype))
        if initializers.is_meta():
            for name, size in (("dt_bias", self.nheads), ("A_log", self.nheads), ("D", self.nheads),
                               ("norm_weight", self.d_inner)):
                self.add_parameter(name, initializers.meta_array((size,), dtype))
        else:
            self.add_parameter("dt_bias", inverse_softplus_time_steps(self.nheads, self.dt_min, self.dt_max, 1e-4,
                                                                      dtype))
            rates = 1.0 + 15.0 * xp.asarray(backend.rng().random(self.nheads))
            self.add_parameter("A_log", xp.log(rates).astype(dtype))
            self.add_parameter("D", xp.ones(self.nheads, dtype=dtype))
            self.add_parameter("norm_weight", xp.ones(self.d_inner, dtype=dtype))
        self.built = True

    def forward(self, x, state=None, return_state: bool = False):
        x = as_tensor(x)
        if x.ndim != 3 or x.shape[-1] != self.d_model or x.shape[1] < 1:
            raise input_error(self, x, f"(batch, time, {self.d_model}) with at least one step")
        out, new_state = self._mix(x, state, chunked=True)
        return (out, new_state) if return_state else out

    def step(self, x, state=None):
        """One token x (N, d_model) -> (output (N, d_model), new state), from ``state`` (None:
        the start of a sequence): the same values as the full call read step by step."""
        x = as_tensor(x)
        if x.ndim != 2 or x.shape[-1] != self.d_model:
            raise input_error(self, x, f"(batch, {self.d_model}) for one step")
        out, new_state = self._mix(F.reshape(x, x.shape[0], 1, self.d_model), state, chunked=False)
        return F.reshape(out, x.shape[0], self.d_model), new_state

    def initial_state(self, batch: int, dtype=None) -> tuple[Tensor, Tensor]:
        """The zero state of ``batch`` sequences at their start."""
        xp = backend.xp
        dtype = backend.get_default_dtype() if dtype is None else dtype
        return (Tensor._wrap(xp.zeros((batch, self.d_conv - 1, self.conv_dim), dtype=dtype)),
                Tensor._wrap(xp.zeros((batch, self.nheads, self.headdim, self.d_state), dtype=dtype)))

    def _mix(self, x: Tensor, state, chunked: bool):
        n, t = x.shape[0], x.shape[1]
        inner, groups, states, heads = self.d_inner, self.ngroups, self.d_state, self.nheads
        history, ssm_state = self._check_state(state, x)
        projected = self.in_proj(x)
        gate = projected[..., :inner]
        xbc = projected[..., inner:inner + self.conv_dim]
        dt = projected[..., inner + self.conv_dim:]
        padded = F.concat([history, xbc], axis=1)
        conv = None
        for i in range(self.d_conv):
            term = padded[:, i:i + t] * self.conv_weight[:, i]
            conv = term if conv is None else conv + term
        xbc = F.silu(conv + self.conv_bias)
        xs = F.reshape(xbc[..., :inner], n, t, heads, self.headdim)
        b = F.reshape(xbc[..., inner:inner + groups * states], n, t, groups, states)
        c = F.reshape(xbc[..., inner + groups * states:], n, t, groups, states)
        dt = F.softplus(dt + self.dt_bias)
        a = -F.exp(self.A_log)
        if chunked:
            y, last = ssd(xs, dt, a, b, c, self.chunk_size, initial_state=ssm_state, return_final_state=True)
        else:
            y, last = ssd_reference(xs, dt, a, b, c, initial_state=ssm_state, return_final_state=True)
        y = y + xs * F.reshape(self.D, heads, 1)
        y = F.reshape(y, n, t, inner) * F.silu(gate)
        grouped = F.reshape(y, n, t, groups, inner // groups)
        grouped = grouped * F.rsqrt(F.mean(F.square(grouped), axis=-1, keepdims=True) + self.eps)
        y = F.reshape(grouped, n, t, inner) * self.norm_weight
        kept = padded[:, padded.shape[1] - (self.d_conv - 1):]
        return self.out_proj(y), (kept, last)

    def _check_state(self, state, x: Tensor):
        """(conv history, SSM state) as tensors of x's dtype: zeros, or ``state`` checked."""
        if state is None:
            return self.initial_state(x.shape[0], x.dtype)[0], None
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            raise TypeError(f"{self._label()}: state must be a pair (conv history, ssm state), got "
                            f"{type(state).__name__}")
        history, ssm_state = as_tensor(state[0]), as_tensor(state[1])
        n = x.shape[0]
        expected = ((n, self.d_conv - 1, self.conv_dim), (n, self.nheads, self.headdim, self.d_state))
        if (tuple(history.shape), tuple(ssm_state.shape)) != expected:
            raise ShapeError(f"{self._label()}: state of shapes {tuple(history.shape)} and "
                             f"{tuple(ssm_state.shape)} for a batch of {n}; expected {expected[0]} and {expected[1]}")
        return history, ssm_state

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {"d_model": self.d_model, "d_state": self.d_state, "d_conv": self.d_conv, "expand": self.expand,
                "headdim": self.headdim, "ngroups": self.ngroups, "chunk_size": self.chunk_size, "eps": self.eps,
                "dt_min": self.dt_min, "dt_max": self.dt_max, "name": self.name}

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, d_state={self.d_state}, nheads={self.nheads}, headdim={self.headdim}, "
                f"ngroups={self.ngroups}, chunk_size={self.chunk_size}")
