"""DeltaNet (Yang et al. 2024, "Parallelizing Linear Transformers with the Delta Rule over
Sequence Length") and Gated DeltaNet (Yang et al. 2025, "Gated Delta Networks"): token mixers
on (N, T, embed_dim) -> (N, T, embed_dim) whose heads write to a fast weight memory with the
delta rule (:mod:`lamina.functional.delta_rule`):

    q, k, v = silu(conv(x W_q)), silu(conv(x W_k)), silu(conv(x W_v))    (short causal depthwise
                                                                           convolutions, optional)
    q, k = q / |q|, k / |k|                        (per head, L2; d = embed_dim / H features)
    beta = sigmoid(x W_beta)                       (one writing strength per head and step)
    o_h = delta rule(q_h, k_h, v_h, beta_h, alpha_h) with scale d^(-1/2)
    y = RMSNorm_d(o_h) (* silu(x W_g))             (norm per head; output gate optional)
    out = concat(y_1 .. y_H) W_o

DeltaNet has alpha = 1 and no output gate by default; Gated DeltaNet decays the memory by
alpha_t = exp(-exp(A_log) softplus(x W_a + dt_bias)) (Mamba-2's gate, one per head) and always
gates the output. ``layer(x, state, return_state=True)`` continues from and returns the state
(the last conv_size - 1 projected inputs (N, conv_size - 1, 3 embed_dim), the memory
(N, H, d, d)), so a sequence read piece by piece gives the outputs of one call. A ``stateful``
layer carries that state between calls itself (``streamable``, as lamina's recurrent layers:
:func:`lamina.text.carrying_states` reads a prompt once, then one token per call).
"""

from __future__ import annotations

import math

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.delta_rule import delta_rule_chunkwise, delta_rule_recurrent
from lamina.nn import init as initializers
from lamina.nn.cache_rows import carried_state_rows
from lamina.nn.dense import Dense
from lamina.nn.layer import describe, head_split, input_error, positive_int, register_layer
from lamina.nn.linear_attention import merge_heads, split_heads
from lamina.nn.mamba import inverse_softplus_time_steps
from lamina.nn.module import Module, as_tensor

__all__ = ["FAST_WEIGHT_FORMS", "DeltaNet", "FastWeightMixer", "GatedDeltaNet"]

FAST_WEIGHT_FORMS = ("chunkwise", "recurrent")


class FastWeightMixer(Module):
    """What DeltaNet, Gated DeltaNet and gated linear attention share: bias-free q, k, v, output
    (and gate) projections over ``embed_dim`` features in ``num_heads`` heads, the optional
    short causal convolutions (kernel ``conv_size``, then SiLU), the per-head RMSNorm (``eps``)
    with an optional SiLU output gate, and the state. ``form``: 'chunkwise' (``chunk_size``
    steps at a time) or 'recurrent' (one step at a time), the same values. Subclasses give
    :meth:`_mix` (the heads' recurrence) and :meth:`_build_gates`.

    ``stateful`` (an attribute, off at first; :func:`lamina.text.carrying_states` sets it):
    a call given no ``state`` continues from the one the previous call ended with (the
    convolutions' last inputs and the memory), so a sequence fed a step at a time gives the
    outputs of one call; :meth:`reset_states` starts afresh, :meth:`reorder_states` keeps and
    reorders the rows of the carried state (beam search)."""

    activate_without_conv = True
    streamable = True           # causal: step t's output depends on steps 1..t only

    def __init__(self, embed_dim: int, num_heads: int, use_short_conv: bool, conv_size: int, use_gate: bool,
                 form: str, chunk_size: int, eps: float, name: str | None):
        super().__init__(name=name)
        who = type(self).__name__
        self.embed_dim, self.num_heads, self.head_dim = head_split(embed_dim, num_heads, who)
        self.use_short_conv, self.use_gate = bool(use_short_conv), bool(use_gate)
        self.conv_size = positive_int(conv_size, f"{who}: conv_size")
        if form not in FAST_WEIGHT_FORMS:
            raise ValueError(f"{who}: form must be one of {FAST_WEIGHT_FORMS}, got {form!r}")
        self.form = form
        self.chunk_size = positive_int(chunk_size, f"{who}: chunk_size")
        self.eps = float(eps)
        self.history = self.conv_size - 1 if self.use_short_conv else 0
        self.stateful = False
        self._carried = None
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (
            Dense(embed_dim, use_bias=False, kernel_init="xavier_uniform") for _ in range(4))
        if self.use_gate:
            self.g_proj = Dense(embed_dim, use_bias=False, kernel_init="xavier_uniform")

    def _projections(self) -> list[Module]:
        return [self.q_proj, self.k_proj, self.v_proj, self.out_proj] + ([self.g_proj] if self.use_gate else [])

    def build(self, input_shape) -> None:
        shape = tuple(input_shape)
        if len(shape) != 3 or shape[-1] != self.embed_dim:
            raise ShapeError(f"{self._label()}: expected an input shape (batch, time, {self.embed_dim}), got {shape}")
        for layer in self._projections():
            if not layer.built:
                layer.build(shape)
                layer.built = True
        dtype = backend.get_default_dtype()
        if self.use_short_conv:
            conv_init = initializers.uniform(1 / math.sqrt(self.conv_size))
            self.add_parameter("conv_weight", conv_init((3 * self.embed_dim, self.conv_size), dtype=dtype))
        self.add_parameter("norm_weight", backend.xp.ones(self.head_dim, dtype=dtype))
        self._build_gates(shape, dtype)
        self.built = True

    def _build_gates(self, shape: tuple, dtype) -> None:
        raise NotImplementedError

    def initial_state(self, batch: int, dtype=None) -> tuple[Tensor, Tensor]:
        """The zero state of ``batch`` sequences at their start: (conv history, memory)."""
        xp = backend.xp
        dtype = backend.get_default_dtype() if dtype is None else dtype
        return (Tensor._wrap(xp.zeros((batch, self.history, 3 * self.embed_dim), dtype=dtype)),
                Tensor._wrap(xp.zeros((batch, self.num_heads, self.head_dim, self.head_dim), dtype=dtype)))

    def _check_state(self, state, x: Tensor):
        if state is None:
            return self.initial_state(x.shape[0], x.dtype)[0], None
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            raise TypeError(f"{self._label()}: state must be a pair (conv history, memory), got "
                            f"{type(state).__name__}")
        history, memory = as_tensor(state[0]), as_tensor(state[1])
        n, d = x.shape[0], self.head_dim
        expected = ((n, self.history, 3 * self.embed_dim), (n, self.num_heads, d, d))
        if (tuple(history.shape), tuple(memory.shape)) != expected:
            raise ShapeError(f"{self._label()}: state of shapes {tuple(history.shape)} and {tuple(memory.shape)} "
                             f"for a batch of {n}; expected (N, conv_size - 1, 3 embed_dim) = {expected[0]} and "
                             f"(N, H, d, d) = {expected[1]}")
        return history, memory

    def forward(self, x, state=None, return_state: bool = False):
        """(N, T, embed_dim) -> (N, T, embed_dim), continuing from ``state`` (default: the start
        of the sequences); with ``return_state`` the pair (output, the state after the call)."""
        x = as_tensor(x)
        if x.ndim != 3 or x.shape[-1] != self.embed_dim or x.shape[1] < 1:
            raise input_error(self, x, f"(batch, time, {self.embed_dim}) with at least one step")
        if state is None and self.stateful and self._carried is not None:
            if self._carried[0].shape[0] != x.shape[0]:
                raise ShapeError(f"{self._label()}: stateful layer carries states for a batch of "
                                 f"{self._carried[0].shape[0]}, got an input of {describe(x)}; call reset_states() "
                                 "before changing the batch size")
            state = tuple(Tensor._wrap(s.astype(x.dtype, copy=False)) for s in self._carried)
        history, memory = self._check_state(state, x)
        qkv = F.concat([self.q_proj(x), self.k_proj(x), self.v_proj(x)], axis=-1)
        kept = history
        if self.use_short_conv:
            padded = F.concat([history, qkv], axis=1)
            steps = x.shape[1]
            qkv = None
            for i in range(self.conv_size):
                term = padded[:, i:i + steps] * self.conv_weight[:, i]
                qkv = term if qkv is None else qkv + term
            kept = padded[:, padded.shape[1] - self.history:]
        if self.use_short_conv or self.activate_without_conv:
            qkv = F.silu(qkv)
        e = self.embed_dim
        q, k, v = (split_heads(qkv[..., i * e:(i + 1) * e], self.num_heads) for i in range(3))
        mixed, last = self._mix(x, q, k, v, memory)
        y = merge_heads(F.rms_norm(mixed, self.head_dim, self.norm_weight, self.eps))
        if self.use_gate:
            y = y * F.silu(self.g_proj(x))
        out = self.out_proj(y)
        if self.stateful:
            self._carried = (kept.data, last.data)
        return (out, (kept, last)) if return_state else out

    def reset_states(self) -> None:
        """Forget the carried state: the next call starts a new sequence."""
        self._carried = None

    def reorder_states(self, rows) -> None:
        """Keep the carried states of the rows ``rows`` (R,), in that order (row i becomes the
        old row ``rows[i]``; rows may repeat or be left out). Refused for a layer that is not
        stateful; nothing to do before its first call."""
        index = carried_state_rows(self, rows, self._carried)
        if self._carried is not None:
            self._carried = tuple(array[index] for array in self._carried)

    def _mix(self, x: Tensor, q: Tensor, k: Tensor, v: Tensor, memory):
        raise NotImplementedError

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def _common_config(self) -> dict:
        return {"embed_dim": self.embed_dim, "num_heads": self.num_heads, "use_short_conv": self.use_short_conv,
                "conv_size": self.conv_size, "form": self.form, "chunk_size": self.chunk_size, "eps": self.eps,
                "name": self.name}

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, use_short_conv={self.use_short_conv}, "
                f"form={self.form!r}")


def l2_normalize(x: Tensor, eps: float = 1e-6) -> Tensor:
    """x / sqrt(|x|^2 + eps) over the last axis."""
    return x * F.rsqrt(F.sum(x * x, axis=-1, keepdims=True) + eps)


class _DeltaRuleMixer(FastWeightMixer):
    """The delta-rule heads of DeltaNet and Gated DeltaNet (module docstring)."""

    def _log_alpha(self, x: Tensor) -> Tensor | None:
        return None

    def _mix(self, x, q, k, v, memory):
        beta = F.swapaxes(F.sigmoid(self.b_proj(x)), 1, 2)                    # (N, H, T)
        log_alpha = self._log_alpha(x)
        q, k = l2_normalize(q), l2_normalize(k)
        scale = self.head_dim ** -0.5
        if self.form == "recurrent":
            return delta_rule_recurrent(q, k, v, beta, log_alpha, scale, memory, return_state=True)
        return delta_rule_chunkwise(q, k, v, beta, log_alpha, self.chunk_size, scale, memory, return_state=True)

    def _build_gates(self, shape, dtype) -> None:
        if not self.b_proj.built:
            self.b_proj.build(shape)
            self.b_proj.built = True

    def _projections(self) -> list[Module]:
        return super()._projections() + [self.b_proj]


@register_layer
class DeltaNet(_DeltaRuleMixer):
    """DeltaNet's token mixer (module docstring): ``num_heads`` delta-rule heads over
    ``embed_dim`` features, beta = sigmoid(x W_beta), short convolutions of kernel
    ``conv_size`` when ``use_short_conv``, an output gate silu(x W_g) when ``use_gate``."""

    def __init__(self, embed_dim: int, num_heads: int = 1, use_short_conv: bool = True, conv_size: int = 4,
                 use_gate: bool = False, form: str = "chunkwise", chunk_size: int = 64, eps: float = 1e-5,
                 name: str | None = None):
        super().__init__(embed_dim, num_heads, use_short_conv, conv_size, use_gate, form, chunk_size, eps, name)
        self.b_proj = Dense(self.num_heads, use_bias=False, kernel_init="xavier_uniform")

    def get_config(self) -> dict:
        return {**self._common_config(), "use_gate": self.use_gate}


@register_layer
class GatedDeltaNet(_DeltaRuleMixer):
    """Gated DeltaNet's token mixer (module docstring): the delta rule with the decay
    alpha_t = exp(-exp(A_log) softplus(x W_a + dt_bias)) per head and the output gate.
    Initialisation as the authors' code: A = exp(A_log) uniform in [0, 16], dt_bias
    softplus^-1 of a log-uniform step in [``dt_min``, ``dt_max``]."""

    def __init__(self, embed_dim: int, num_heads: int = 1, use_short_conv: bool = True, conv_size: int = 4,
                 form: str = "chunkwise", chunk_size: int = 64, eps: float = 1e-5, dt_min: float = 0.001,
                 dt_max: float = 0.1, name: str | None = None):
        super().__init__(embed_dim, num_heads, use_short_conv, conv_size, True, form, chunk_size, eps, name)
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"GatedDeltaNet: expected 0 < dt_min <= dt_max, got {dt_min!r} and {dt_max!r}")
        self.dt_min, self.dt_max = float(dt_min), float(dt_max)
        self.b_proj, self.a_proj = (Dense(self.num_heads, use_bias=False, kernel_init="xavier_uniform")
                                    for _ in range(2))

    def _projections(self) -> list[Module]:
        return super()._projections() + [self.a_proj]

    def _build_gates(self, shape, dtype) -> None:
        super()._build_gates(shape, dtype)
        if initializers.is_meta():
            for name in ("A_log", "dt_bias"):
                self.add_parameter(name, initializers.meta_array((self.num_heads,), dtype))
            return
        rates = 16.0 * backend.xp.asarray(backend.rng().random(self.num_heads))
        self.add_parameter("A_log", backend.xp.log(backend.xp.maximum(rates, 1e-4)).astype(dtype))
        self.add_parameter("dt_bias", inverse_softplus_time_steps(self.num_heads, self.dt_min, self.dt_max, 1e-4,
                                                                  dtype))

    def _log_alpha(self, x: Tensor) -> Tensor:
        return F.swapaxes(-F.exp(self.A_log) * F.softplus(self.a_proj(x) + self.dt_bias), 1, 2)

    def get_config(self) -> dict:
        return {**self._common_config(), "dt_min": self.dt_min, "dt_max": self.dt_max}
