"""RetNet's multi-scale retention (Sun et al. 2023) on (N, T, embed_dim) -> (N, T, embed_dim):

    Q = rot(x W_Q), K = rot(x W_K) / sqrt(d), V = x W_V        (H heads; d = embed_dim / H,
                                                                  d_v = value_factor d)
    head_h = Retention_gamma_h(Q_h, K_h, V_h),  gamma_h = 1 - 2^(-5 - h)
    Y = GroupNorm_H(concat(head_1 .. head_H))                   (each head normalised alone)
    out = (swish(x W_G) * Y) W_O

``rot`` turns each pair of features of position n by n theta_j (the paper's Theta_n = e^{i n
theta}, theta_j = 10000^(-2j/d), :func:`lamina.functional.rotary_embedding`); the decay of
distant positions comes from gamma. Retention has three equivalent forms
(:mod:`lamina.functional.retention`): ``form`` 'parallel' (training), 'recurrent' (one step at a
time), 'chunkwise' (``chunk_size`` steps at a time).

Step by step: with ``stateful=True`` (or within :func:`lamina.text.carrying_states`) each call
continues the sequence of the previous one from the carried state S (N, H, d, d_v) and
position, detached from the graph: O(1) work per new token.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional import silu
from lamina.functional.elementwise import sqrt
from lamina.functional.retention import retention_chunkwise, retention_parallel, retention_recurrent
from lamina.functional.rotary import rotary_embedding
from lamina.nn.cache_rows import carried_state_rows
from lamina.nn.dense import Dense
from lamina.nn.layer import describe, input_error, positive_int, register_layer
from lamina.nn.linear_attention import merge_heads, split_heads
from lamina.nn.module import Module, as_tensor

__all__ = ["RETENTION_FORMS", "MultiScaleRetention", "retention_decays"]

RETENTION_FORMS = ("parallel", "recurrent", "chunkwise")


def retention_decays(num_heads: int) -> np.ndarray:
    """The paper's decays gamma_h = 1 - 2^(-5 - h), h = 0 .. num_heads - 1 (float64)."""
    return 1.0 - 2.0 ** (-5.0 - np.arange(num_heads))


def check_form(who: str, form: str) -> str:
    if form not in RETENTION_FORMS:
        raise ValueError(f"{who}: form must be one of {RETENTION_FORMS}, got {form!r}")
    return form


@register_layer
class MultiScaleRetention(Module):
    """Multi-scale retention (formulas in the module docstring): ``embed_dim`` split into
    ``num_heads`` heads of an even number d of features, values of ``value_factor`` d features
    per head (the paper's 2), projections without bias unless ``use_bias``, the group norm's
    ``eps``. ``form`` and ``chunk_size`` choose how retention is computed (the same values);
    ``forward(x, form=...)`` overrides the form for one call.

    ``stateful``: calls continue one another's sequence (see the module docstring);
    :meth:`reset_states` starts again, :meth:`reorder_states` keeps and reorders the rows of
    the carried state (beam search)."""

    streamable = True

    def __init__(self, embed_dim: int, num_heads: int = 1, value_factor: int = 2, form: str = "parallel",
                 chunk_size: int = 64, use_bias: bool = False, eps: float = 1e-6, stateful: bool = False,
                 name: str | None = None):
        super().__init__(name=name)
        who = "MultiScaleRetention"
        self.embed_dim = positive_int(embed_dim, f"{who}: embed_dim")
        self.num_heads = positive_int(num_heads, f"{who}: num_heads")
        self.value_factor = positive_int(value_factor, f"{who}: value_factor")
        if embed_dim % num_heads or (embed_dim // num_heads) % 2:
            raise ValueError(f"{who}: embed_dim {embed_dim} must split into num_heads {num_heads} heads of an even "
                             f"number of features (the rotation turns pairs of them), got "
                             f"{embed_dim / num_heads:g} per head")
        self.head_dim = embed_dim // num_heads
        self.value_dim = self.value_factor * embed_dim
        self.form = check_form(who, form)
        self.chunk_size = positive_int(chunk_size, f"{who}: chunk_size")
        self.use_bias, self.eps, self.stateful = bool(use_bias), float(eps), bool(stateful)
        self.decays = retention_decays(self.num_heads)
        self._carried = None
        self.q_proj, self.k_proj, self.g_proj = (Dense(units, use_bias=self.use_bias, kernel_init="xavier_uniform")
                                                 for units in (embed_dim, embed_dim, self.value_dim))
        self.v_proj = Dense(self.value_dim, use_bias=self.use_bias, kernel_init="xavier_uniform")
        self.out_proj = Dense(embed_dim, use_bias=self.use_bias, kernel_init="xavier_uniform")

    def build(self, input_shape) -> None:
        shape = tuple(input_shape)
        if len(shape) != 3 or shape[-1] != self.embed_dim:
            raise ShapeError(f"{self._label()}: expected an input shape (batch, time, {self.embed_dim}), got {shape}")
        for layer in (self.q_proj, self.k_proj, self.v_proj, self.g_proj):
            if not layer.built:
                layer.build(shape)
                layer.built = True
        if not self.out_proj.built:
            self.out_proj.build(shape[:-1] + (self.value_dim,))
            self.out_proj.built = True
        dtype = backend.get_default_dtype()
        self.add_parameter("norm_weight", backend.xp.ones(self.value_dim, dtype=dtype))
        self.add_parameter("norm_bias", backend.xp.zeros(self.value_dim, dtype=dtype))
        self.built = True

    def forward(self, x, form: str | None = None) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 3 or x.shape[-1] != self.embed_dim or x.shape[1] < 1:
            raise input_error(self, x, f"(batch, time, {self.embed_dim}) with at least one step")
        form = self.form if form is None else check_form(self._label(), form)
        state, offset = self._state(x)
        heads = self.num_heads
        q = rotary_embedding(split_heads(self.q_proj(x), heads), offset=offset)
        k = rotary_embedding(split_heads(self.k_proj(x), heads), offset=offset) * self.head_dim ** -0.5
        v = split_heads(self.v_proj(x), heads)
        if form == "recurrent":
            retained, last = retention_recurrent(q, k, v, self.decays, state)
        elif form == "chunkwise" or self.stateful:
            chunk = self.chunk_size if form == "chunkwise" else x.shape[1]
            retained, last = retention_chunkwise(q, k, v, self.decays, chunk, state)
        else:
            retained, last = retention_parallel(q, k, v, self.decays), None
        if self.stateful:
            self._carried = (last.data, offset + x.shape[1])
        y = merge_heads(self._group_norm(retained)) * self.norm_weight + self.norm_bias
        return self.out_proj(silu(self.g_proj(x)) * y)

    def _group_norm(self, heads: Tensor) -> Tensor:
        """Each head's values (N, H, T, d_v) normalised over their d_v features."""
        centred = heads - heads.mean(axis=-1, keepdims=True)
        return centred / sqrt((centred * centred).mean(axis=-1, keepdims=True) + self.eps)

    def _state(self, x: Tensor) -> tuple[Tensor | None, int]:
        """(state, position) carried from the previous call, or (None, 0)."""
        if not self.stateful or self._carried is None:
            return None, 0
        state, offset = self._carried
        if state.shape[0] != x.shape[0]:
            raise ShapeError(f"{self._label()}: stateful layer carries states for a batch of {state.shape[0]}, got "
                             f"an input of {describe(x)}; call reset_states() before changing the batch size")
        return Tensor._wrap(state.astype(x.dtype, copy=False)), offset

    def reset_states(self) -> None:
        """Forget the carried state: the next call starts at position 0."""
        self._carried = None

    def reorder_states(self, rows) -> None:
        """Keep the carried states of the rows ``rows``, in that order (beam search)."""
        index = carried_state_rows(self, rows, self._carried)
        if self._carried is not None:
            self._carried = (self._carried[0][index], self._carried[1])

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {"embed_dim": self.embed_dim, "num_heads": self.num_heads, "value_factor": self.value_factor,
                "form": self.form, "chunk_size": self.chunk_size, "use_bias": self.use_bias, "eps": self.eps,
                "stateful": self.stateful, "name": self.name}

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, value_dim={self.value_dim}, "
                f"form={self.form!r}")
