"""nGPT, the normalized Transformer (Loshchilov, Hsieh, Sun and Ginsburg, "nGPT: Normalized
Transformer with Representation Learning on the Hypersphere", 2024).

Every vector along the embedding axis has unit norm: the token embeddings, the output
(unembedding) rows, the columns of the matrices that read the hidden state and the rows of
those that write it, and the hidden states themselves. With Norm(x) = x / ||x||, a block
moves h along the sphere towards each branch's (normalised) suggestion::

    h_A = Norm(attention(h))                  h <- Norm(h + alpha_A (h_A - h))
    h_M = Norm(mlp(h))                        h <- Norm(h + alpha_M (h_M - h))

with learnable per-dimension "eigen learning rates" alpha_A and alpha_M. In the attention,
q and k are rotated (RoPE), normalised per head and scaled by s_qk, so that
q.k = s_qk^2 cos(q, k); the softmax scale is sqrt(d_k) instead of 1 / sqrt(d_k). The MLP is
a SwiGLU, u * SiLU(v), with u scaled by s_u and v by s_v sqrt(d_model). The logits
z = E_out h are scaled by s_z per token.

Every scaling factor s is stored as a parameter p initialised to s_scale and used as
p * s_init / s_scale: so that an optimizer's step moves it as fast as the other weights
(the paper's trick). Initial values and scales, as the paper: alpha_A = alpha_M = 0.05 with
scale 1 / sqrt(d_model); s_qk = 1 with scale 1 / sqrt(d_model); s_u = s_v = 1 with scale 1;
s_z = 1 with scale 1 / sqrt(d_model). The model is trained without weight decay or warmup;
call :func:`normalize_ngpt_weights` after every optimizer step to put the matrices back on
the sphere (they start there).
"""

from __future__ import annotations

import math

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.nn import init as initializers
from lamina.nn.containers import ModuleList
from lamina.nn.embedding import Embedding
from lamina.nn.layer import input_error, positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["NGPT", "NGPTBlock", "normalize_ngpt_weights"]


def unit(x, axis: int = -1) -> Tensor:
    """Norm(x) = x / ||x||_2 along ``axis`` (a floor of 1e-12 on the norm)."""
    return F.normalize(x, axis=axis)


def _unit_array(a, axis: int):
    """The array ``a`` with unit 2-norm vectors along ``axis`` (for the weights, in place of a step)."""
    xp = backend.xp
    return a / xp.maximum(xp.sqrt((a * a).sum(axis=axis, keepdims=True)), 1e-12)


def _positive_float(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
        raise ValueError(f"{what} must be a positive finite number, got {value!r}")
    return float(value)


def _used(module: Module, name: str, init: float, scale: float) -> Tensor:
    """A factor as used: its stored parameter times init / scale."""
    return module._parameters[name] * (init / scale)


def _sphere_matrix(rows: int, cols: int, axis: int, dtype):
    """A (rows, cols) random normal matrix with unit vectors along ``axis``."""
    std = 1.0 / math.sqrt(rows if axis == 0 else cols)
    a = initializers.normal(std=std)((rows, cols), rows, cols, dtype)
    return _unit_array(a, axis)


@register_layer
class NGPTBlock(Module):
    """One nGPT block on hidden states (N, T, ``d_model``) of unit norm (module docstring).

    Parameters (lamina's (in, out) layout): ``w_q``, ``w_k``, ``w_v`` (d, d) and ``w_up``,
    ``w_gate`` (d, d_ff), unit columns (axis 0, the embedding axis); ``w_o`` (d, d) and
    ``w_down`` (d_ff, d), unit rows (axis 1, the embedding axis); ``alpha_attn``,
    ``alpha_mlp``, ``s_qk`` (d,), ``s_u``, ``s_v`` (d_ff,), each stored scaled (see the
    module docstring). ``d_ff`` defaults to 4 d_model; ``rope_base`` is RoPE's base.
    """

    default_name = "ngpt_block"

    def __init__(self, d_model: int, n_head: int, d_ff: int | None = None, alpha_attn_init: float = 0.05,
                 alpha_mlp_init: float = 0.05, rope_base: float = 10000.0, name: str | None = None):
        super().__init__(name=name)
        self.d_model = positive_int(d_model, "NGPTBlock: d_model")
        self.n_head = positive_int(n_head, "NGPTBlock: n_head")
        if d_model % n_head or (d_model // n_head) % 2:
            raise ValueError(f"NGPTBlock: d_model {d_model} must split into n_head {n_head} heads of an even "
                             "size (RoPE turns pairs of features)")
        self.d_ff = 4 * d_model if d_ff is None else positive_int(d_ff, "NGPTBlock: d_ff")
        self.alpha_attn_init = _positive_float(alpha_attn_init, "NGPTBlock: alpha_attn_init")
        self.alpha_mlp_init = _positive_float(alpha_mlp_init, "NGPTBlock: alpha_mlp_init")
        self.rope_base = _positive_float(rope_base, "NGPTBlock: rope_base")
        self.base_scale = 1.0 / math.sqrt(d_model)

    def build(self, input_shape) -> None:
        shape = tuple(input_shape)
        if len(shape) != 3 or shape[-1] not in (None, self.d_model):
            raise ShapeError(f"{self._label()}: got an input shape {shape}; expected (batch, time, {self.d_model})")
        d, f, dtype, xp = self.d_model, self.d_ff, backend.get_default_dtype(), backend.xp
        for key in ("w_q", "w_k", "w_v"):
            self.add_parameter(key, _sphere_matrix(d, d, 0, dtype))
        self.add_parameter("w_o", _sphere_matrix(d, d, 1, dtype))
        self.add_parameter("w_up", _sphere_matrix(d, f, 0, dtype))
        self.add_parameter("w_gate", _sphere_matrix(d, f, 0, dtype))
        self.add_parameter("w_down", _sphere_matrix(f, d, 1, dtype))
        self.add_parameter("alpha_attn", xp.full((d,), self.base_scale, dtype=dtype))
        self.add_parameter("alpha_mlp", xp.full((d,), self.base_scale, dtype=dtype))
        self.add_parameter("s_qk", xp.full((d,), self.base_scale, dtype=dtype))
        self.add_parameter("s_u", xp.ones((f,), dtype=dtype))
        self.add_parameter("s_v", xp.ones((f,), dtype=dtype))
        self.built = True

    # the factors in use (stored value * init / scale)
    def alpha_a(self) -> Tensor:
        return _used(self, "alpha_attn", self.alpha_attn_init, self.base_scale)

    def alpha_m(self) -> Tensor:
        return _used(self, "alpha_mlp", self.alpha_mlp_init, self.base_scale)

    def scale_qk(self) -> Tensor:
        return _used(self, "s_qk", 1.0, self.base_scale)

    def attention(self, h) -> Tensor:
        """W_o applied to the heads of softmax(sqrt(d_k) q k^T) v, q and k rotated, normalised and scaled by s_qk."""
        n, t, d = h.shape
        heads, d_k = self.n_head, d // self.n_head

        def split(x):                                   # (N, T, d) -> (N, heads, T, d_k)
            return F.swapaxes(F.reshape(x, (n, t, heads, d_k)), 1, 2)

        s_qk = F.reshape(self.scale_qk(), (heads, 1, d_k))
        q = s_qk * unit(F.rotary_embedding(split(F.matmul(h, self.w_q)), base=self.rope_base))
        k = s_qk * unit(F.rotary_embedding(split(F.matmul(h, self.w_k)), base=self.rope_base))
        v = split(F.matmul(h, self.w_v))
        y = F.scaled_dot_product_attention(q, k, v, causal=True, scale=math.sqrt(d_k))
        return F.matmul(F.reshape(F.swapaxes(y, 1, 2), (n, t, d)), self.w_o)

    def mlp(self, h) -> Tensor:
        """W_down (u * SiLU(v)), u = s_u (h W_up), v = s_v sqrt(d_model) (h W_gate)."""
        u = F.matmul(h, self.w_up) * self.s_u
        v = F.matmul(h, self.w_gate) * (self.s_v * math.sqrt(self.d_model))
        return F.matmul(u * F.silu(v), self.w_down)

    def forward(self, h) -> Tensor:
        h = as_tensor(h)
        if h.ndim != 3 or h.shape[-1] != self.d_model:
            raise input_error(self, h, f"(batch, time, {self.d_model})")
        h = unit(h + self.alpha_a() * (unit(self.attention(h)) - h))
        return unit(h + self.alpha_m() * (unit(self.mlp(h)) - h))

    def normalize_weights(self) -> None:
        """Put every matrix back on the sphere along its embedding axis."""
        for key in ("w_q", "w_k", "w_v", "w_up", "w_gate"):
            self._parameters[key].data = _unit_array(self._parameters[key].data, 0)
        for key in ("w_o", "w_down"):
            self._parameters[key].data = _unit_array(self._parameters[key].data, 1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {"d_model": self.d_model, "n_head": self.n_head, "d_ff": self.d_ff,
                "alpha_attn_init": self.alpha_attn_init, "alpha_mlp_init": self.alpha_mlp_init,
                "rope_base": self.rope_base, "name": self.name}

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_head={self.n_head}, d_ff={self.d_ff}"


@register_layer
class NGPT(Module):
    """The nGPT language model: token ids (N, T) -> next-token scores (N, T, ``vocab_size``).

    h_0 = E_in[ids] (unit rows), ``n_layer`` :class:`NGPTBlock`, logits = s_z * (h_L E_out^T)
    with unit rows of E_out. Sub-modules ``embed`` (an Embedding, E_in) and ``blocks``;
    parameters ``unembed`` (vocab_size, d_model) and ``s_z`` (vocab_size,), stored scaled.
    Positions enter only through RoPE, so any length is read. Train with no weight decay and
    call :func:`normalize_ngpt_weights` after each optimizer step.
    """

    default_name = "ngpt"

    def __init__(self, vocab_size: int, d_model: int, n_layer: int, n_head: int, d_ff: int | None = None,
                 alpha_attn_init: float = 0.05, alpha_mlp_init: float = 0.05, rope_base: float = 10000.0,
                 name: str | None = None):
        super().__init__(name=name)
        self.vocab_size = positive_int(vocab_size, "NGPT: vocab_size")
        self.d_model = positive_int(d_model, "NGPT: d_model")
        self.n_layer = positive_int(n_layer, "NGPT: n_layer")
        self.n_head = positive_int(n_head, "NGPT: n_head")
        self.embed = Embedding(vocab_size, d_model, embeddings_init=initializers.normal(std=d_model ** -0.5))
        self.blocks = ModuleList([NGPTBlock(d_model, n_head, d_ff, alpha_attn_init, alpha_mlp_init, rope_base)
                                  for _ in range(n_layer)])
        self.d_ff = self.blocks[0].d_ff
        self.alpha_attn_init, self.alpha_mlp_init = float(alpha_attn_init), float(alpha_mlp_init)
        self.rope_base = float(rope_base)
        self.base_scale = 1.0 / math.sqrt(d_model)

    def build(self, input_shape) -> None:
        ids = tuple(input_shape)
        if len(ids) != 2:
            raise ValueError(f"{self._label()}: expected token ids of shape (batch, time), got input shape {ids}")
        v, d, dtype = self.vocab_size, self.d_model, backend.get_default_dtype()
        if not self.embed.built:
            self.embed.build(ids)
            self.embed.built = True
        self.embed.weight.data = _unit_array(self.embed.weight.data, 1)
        self.add_parameter("unembed", _sphere_matrix(v, d, 1, dtype))
        self.add_parameter("s_z", backend.xp.full((v,), self.base_scale, dtype=dtype))
        for block in self.blocks:
            if not block.built:
                block.build(ids + (d,))
        self.built = True

    def scale_z(self) -> Tensor:
        return _used(self, "s_z", 1.0, self.base_scale)

    def hidden_states(self, ids) -> Tensor:
        """The final hidden states h_L (N, T, d_model), each of unit norm."""
        h = self.embed(ids)
        for block in self.blocks:
            h = block(h)
        return h

    def forward(self, ids) -> Tensor:
        ids_shape = np.shape(ids.data if isinstance(ids, Tensor) else ids)
        if len(ids_shape) != 2:
            raise input_error(self, as_tensor(ids), "token ids (batch, time)")
        h = self.hidden_states(ids)
        return F.matmul(h, F.transpose(self.unembed, 1, 0)) * self.scale_z()

    def normalize_weights(self) -> None:
        """Put the embedding and unembedding rows back on the sphere (the blocks do their own)."""
        for param in (self.embed.weight, self.unembed):
            param.data = _unit_array(param.data, 1)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.vocab_size,)

    def get_config(self) -> dict:
        return {"vocab_size": self.vocab_size, "d_model": self.d_model, "n_layer": self.n_layer,
                "n_head": self.n_head, "d_ff": self.d_ff, "alpha_attn_init": self.alpha_attn_init,
                "alpha_mlp_init": self.alpha_mlp_init, "rope_base": self.rope_base, "name": self.name}

    def extra_repr(self) -> str:
        return (f"vocab_size={self.vocab_size}, d_model={self.d_model}, n_layer={self.n_layer}, "
                f"n_head={self.n_head}")


def normalize_ngpt_weights(model: Module) -> Module:
    """Renormalise every nGPT matrix of ``model`` (an :class:`NGPT`, an :class:`NGPTBlock` or
    a model holding them) along its embedding axis, in place; call it after each optimizer
    step. Returns ``model``."""
    if not isinstance(model, Module):
        raise TypeError(f"normalize_ngpt_weights: expected a Module, got {type(model).__name__}")
    found = [m for m in model.modules() if isinstance(m, (NGPT, NGPTBlock))]
    if not found:
        raise ValueError(f"normalize_ngpt_weights: {model._label()} holds no NGPT or NGPTBlock")
    with no_grad():
        for module in found:
            if module.built:
                module.normalize_weights()
    return model
