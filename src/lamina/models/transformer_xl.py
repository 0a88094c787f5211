"""Transformer-XL (Dai et al., "Transformer-XL: Attentive language models beyond a
fixed-length context", 2019): a causal language model that reads a long text segment by
segment, each layer attending to the cached hidden states of the previous segments.

Relative attention of query i over key j (distance i - j, R_k the sinusoidal encoding of
distance k, u and v learned per head):

    A_ij = q_i . k_j  +  q_i . W_R R_{i-j}  +  u . k_j  +  v . W_R R_{i-j}
           (a)           (b)                   (c)         (d)
         = (q_i + u) . k_j  +  (q_i + v) . W_R R_{i-j}

Segment-level recurrence: with h~ = [SG(m^{l-1}) ; h^{l-1}] (memory, a stop-gradient copy of
the previous segments' inputs of layer l, then the current segment),

    q = h^{l-1} W_q,   k = h~ W_k,   v = h~ W_v,   h^l = layer_l(q, k, v)

and each layer's new memory is the last ``mem_len`` steps of [m^{l-1} ; h^{l-1}].
"""

from __future__ import annotations

import math

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn import init as initializers
from lamina.nn.containers import ModuleList
from lamina.nn.dense import Dense
from lamina.nn.dropout import Dropout
from lamina.nn.embedding import Embedding
from lamina.nn.layer import dropout_rate, input_error, positive_int, register_layer
from lamina.nn.module import Module, as_tensor
from lamina.nn.sample_norm import LayerNorm

__all__ = ["RelativeMultiHeadAttention", "TransformerXL", "TransformerXLLayer", "relative_shift",
           "sinusoidal_relative_encoding"]


def sinusoidal_relative_encoding(klen: int, dim: int, dtype=None) -> Tensor:
    """R (klen, dim) for the distances klen - 1, ..., 1, 0 (row r: distance klen - 1 - r):
    [sin(k f_0) .. sin(k f_{dim/2-1}), cos(k f_0) .. cos(k f_{dim/2-1})], f_i = 10000^(-2i/dim)."""
    xp = backend.xp
    dtype = backend.get_default_dtype() if dtype is None else dtype
    distances = xp.arange(klen - 1, -1, -1, dtype="float64")
    inv_freq = 1.0 / (10000.0 ** (xp.arange(0, dim, 2, dtype="float64") / dim))
    angles = distances[:, None] * inv_freq[None, :]
    return Tensor(xp.concatenate([xp.sin(angles), xp.cos(angles)], axis=-1), dtype=dtype)


def relative_shift(scores: Tensor) -> Tensor:
    """The "relative shift" of scores (..., T, K) whose column c is distance K - 1 - c: the
    result's entry (i, j) is the input's (i, j + T - 1 - i), the score of distance
    (K - T) + i - j, for every j <= K - T + i (later columns, masked by causality, hold other
    entries). Pad a zero column in front, view (K + 1, T), drop the first row, view (T, K)."""
    *lead, t, k = scores.shape
    padded = F.pad(scores, [(0, 0)] * len(lead) + [(0, 0), (1, 0)])
    viewed = F.reshape(padded, *lead, k + 1, t)
    return F.reshape(F.getitem(viewed, (..., slice(1, None), slice(None))), *lead, t, k)


def _causal_mask(t: int, m: int):
    """(T, M + T) boolean, True = attend: query i sees keys j <= M + i."""
    xp = backend.xp
    return xp.arange(m + t)[None, :] <= (m + xp.arange(t))[:, None]


@register_layer
class RelativeMultiHeadAttention(Module):
    """Transformer-XL's multi-head attention with relative positions (module docstring).

    ``attention(x, memory=None, mask=None)``: ``x`` (N, T, ``d_model``) the current segment,
    ``memory`` (N, M, ``d_model``) cached states (read through a stop-gradient), -> (N, T,
    ``d_model``). Scores are scaled by 1 / sqrt(``d_head``) and masked causally over
    [memory ; x]; ``mask`` (T, M + T), True = attend, replaces that causal mask.

    Parameters: ``qkv_weight`` (d_model, 3 H d_head) = [W_q | W_k | W_v], ``r_weight``
    (d_model, H d_head) = W_R, ``out_weight`` (H d_head, d_model), the biases ``r_w_bias``
    (u) and ``r_r_bias`` (v), (H, d_head), no projection biases (as the paper's code).
    ``dropout`` acts on the attention weights.
    """

    def __init__(self, d_model: int, num_heads: int, d_head: int | None = None, dropout: float = 0.0,
                 name: str | None = None):
        super().__init__(name=name)
        self.d_model = positive_int(d_model, "RelativeMultiHeadAttention: d_model")
        self.num_heads = positive_int(num_heads, "RelativeMultiHeadAttention: num_heads")
        if d_head is None and d_model % num_heads:
            raise ValueError(f"RelativeMultiHeadAttention: d_model {d_model} is not divisible by num_heads "
                             f"{num_heads}; pass d_head")
        self.d_head = positive_int(d_model // num_heads if d_head is None else d_head,
                                   "RelativeMultiHeadAttention: d_head")
        self.dropout = dropout_rate(dropout, "RelativeMultiHeadAttention")
        self.attention_dropout = Dropout(self.dropout)

    def build(self, input_shape) -> None:
        shape = tuple(input_shape[0]) if isinstance(input_shape, list) else tuple(input_shape)
        if len(shape) != 3 or shape[-1] not in (None, self.d_model):
            raise ShapeError(f"{self._label()}: got an input shape {shape}; expected (batch, time, {self.d_model})")
        d, width = self.d_model, self.num_heads * self.d_head
        dtype = backend.get_default_dtype()
        kernel = initializers.xavier_uniform
        self.add_parameter("qkv_weight", kernel((d, 3 * width), d, 3 * width, dtype))
        self.add_parameter("r_weight", kernel((d, width), d, width, dtype))
        self.add_parameter("out_weight", kernel((width, d), width, d, dtype))
        self.add_parameter("r_w_bias", initializers.zeros((self.num_heads, self.d_head), dtype=dtype))
        self.add_parameter("r_r_bias", initializers.zeros((self.num_heads, self.d_head), dtype=dtype))
        self.attention_dropout.build(shape)
        self.attention_dropout.built = True
        self.built = True

    def _with_memory(self, x: Tensor, memory) -> Tensor:
        """[memory ; x] along time (N, M + T, ``d_model``), the memory read through a stop-gradient."""
        if memory is None:
            return x
        memory = as_tensor(memory).detach()
        if memory.ndim != 3 or memory.shape[0] != x.shape[0] or memory.shape[-1] != self.d_model:
            raise ShapeError(f"{self._label()}: memory {memory.shape} must be (batch {x.shape[0]}, steps, "
                             f"{self.d_model}) for the segment {x.shape}")
        return F.concat([memory, x], axis=1)

    def _heads(self, x: Tensor) -> Tensor:
        """(N, L, H d_head) -> (N, H, L, d_head)."""
        n, length, _ = x.shape
        return F.transpose(F.reshape(x, n, length, self.num_heads, self.d_head), 0, 2, 1, 3)

    def forward(self, x, memory=None, mask=None) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 3 or x.shape[-1] != self.d_model:
            raise input_error(self, x, f"a segment of shape (batch, time, {self.d_model})")
        n, t, _ = x.shape
        context = self._with_memory(x, memory)
        k_len = context.shape[1]
        width = self.num_heads * self.d_head
        w_q = F.getitem(self.qkv_weight, (slice(None), slice(0, width)))
        w_kv = F.getitem(self.qkv_weight, (slice(None), slice(width, None)))
        q = self._heads(F.matmul(x, w_q))                                    # (N, H, T, d)
        kv = F.matmul(context, w_kv)
        k = self._heads(F.getitem(kv, (..., slice(0, width))))               # (N, H, K, d)
        v = self._heads(F.getitem(kv, (..., slice(width, None))))
        encodings = sinusoidal_relative_encoding(k_len, self.d_model, dtype=x.dtype)
        r = F.transpose(F.reshape(F.matmul(encodings, self.r_weight), k_len, self.num_heads, self.d_head), 1, 0, 2)
        u = F.reshape(self.r_w_bias, self.num_heads, 1, self.d_head)
        v_bias = F.reshape(self.r_r_bias, self.num_heads, 1, self.d_head)
        content = F.matmul(F.add(q, u), F.transpose(k, 0, 1, 3, 2))          # (a) + (c)
        position = relative_shift(F.matmul(F.add(q, v_bias), F.transpose(r, 0, 2, 1)))  # (b) + (d)
        scores = F.mul(F.add(content, position), 1.0 / math.sqrt(self.d_head))
        if mask is None:
            allowed = _causal_mask(t, k_len - t)
        else:
            allowed = backend.xp.asarray(mask.data if isinstance(mask, Tensor) else mask, dtype=bool)
            if allowed.shape != (t, k_len):
                raise ShapeError(f"{self._label()}: mask {allowed.shape} must be (segment {t}, memory + segment "
                                 f"{k_len})")
        scores = F.masked_fill(scores, ~allowed, -1e30)
        weights = self.attention_dropout(F.softmax(scores, axis=-1))
        heads = F.matmul(weights, v)                                          # (N, H, T, d)
        merged = F.reshape(F.transpose(heads, 0, 2, 1, 3), n, t, width)
        return F.matmul(merged, self.out_weight)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0]) if isinstance(input_shape, list) else tuple(input_shape)

    def get_config(self) -> dict:
        return {"d_model": self.d_model, "num_heads": self.num_heads, "d_head": self.d_head,
                "dropout": self.dropout, "name": self.name}

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, num_heads={self.num_heads}, d_head={self.d_head}"


@register_layer
class TransformerXLLayer(Module):
    """One Transformer-XL layer (post-norm, as the paper's):
    y = LN(x + dropout(RelAttn(x, memory))),  out = LN(y + dropout(W_2 relu(W_1 y + b_1) + b_2)).
    ``layer(x, memory=None, mask=None)`` -> (N, T, ``d_model``)."""

    def __init__(self, d_model: int, num_heads: int, d_ff: int, d_head: int | None = None, dropout: float = 0.0,
                 layer_norm_eps: float = 1e-5, name: str | None = None):
        super().__init__(name=name)
        self.d_model = positive_int(d_model, "TransformerXLLayer: d_model")
        self.num_heads = positive_int(num_heads, "TransformerXLLayer: num_heads")
        self.d_ff = positive_int(d_ff, "TransformerXLLayer: d_ff")
        self.dropout = dropout_rate(dropout, "TransformerXLLayer")
        self.layer_norm_eps = float(layer_norm_eps)
        self.attention = RelativeMultiHeadAttention(d_model, num_heads, d_head=d_head, dropout=dropout)
        self.d_head = self.attention.d_head
        self.attention_norm = LayerNorm(eps=self.layer_norm_eps)
        self.linear1 = Dense(self.d_ff, activation="relu", kernel_init="xavier_uniform")
        self.linear2 = Dense(self.d_model, kernel_init="xavier_uniform")
        self.ff_norm = LayerNorm(eps=self.layer_norm_eps)
        self.residual_dropout = Dropout(self.dropout)

    def build(self, input_shape) -> None:
        shape = tuple(input_shape[0]) if isinstance(input_shape, list) else tuple(input_shape)
        for layer, layer_shape in ((self.attention, shape), (self.attention_norm, shape), (self.linear1, shape),
                                   (self.linear2, shape[:-1] + (self.d_ff,)), (self.ff_norm, shape),
                                   (self.residual_dropout, shape)):
            if not layer.built:
                layer.build(layer_shape)
                layer.built = True
        self.built = True

    def forward(self, x, memory=None, mask=None) -> Tensor:
        x = as_tensor(x)
        y = self.attention_norm(F.add(x, self.residual_dropout(self.attention(x, memory, mask=mask))))
        return self.ff_norm(F.add(y, self.residual_dropout(self.linear2(self.linear1(y)))))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0]) if isinstance(input_shape, list) else tuple(input_shape)

    def get_config(self) -> dict:
        return {"d_model": self.d_model, "num_heads": self.num_heads, "d_ff": self.d_ff, "d_head": self.d_head,
                "dropout": self.dropout, "layer_norm_eps": self.layer_norm_eps, "name": self.name}


@register_layer
class TransformerXL(Module):
    """Transformer-XL language model: ``model(ids, mems=None, mask=None)`` -> (logits, new_mems).

    ``ids`` (N, T) token ids, ``mems`` None or a list of ``num_layers`` arrays (N, M,
    ``d_model``), the memory of each layer (the ``new_mems`` of the previous call);
    ``logits`` (N, T, ``vocab_size``); ``new_mems`` the last ``mem_len`` steps of
    [mems ; inputs] of each layer, detached (an empty list when ``mem_len`` is 0). ``mask``
    (T, M + T), True = attend, replaces every layer's causal mask. Token embeddings are
    scaled by sqrt(d_model) (as the paper's code); the output layer is a Dense head.
    """

    layer_class = TransformerXLLayer

    def __init__(self, vocab_size: int, d_model: int = 64, num_heads: int = 2, num_layers: int = 2,
                 d_ff: int = 128, mem_len: int = 16, d_head: int | None = None, dropout: float = 0.0,
                 layer_norm_eps: float = 1e-5, name: str | None = None):
        super().__init__(name=name)
        label = type(self).__name__
        self.vocab_size = positive_int(vocab_size, f"{label}: vocab_size")
        self.d_model = positive_int(d_model, f"{label}: d_model")
        self.num_heads = positive_int(num_heads, f"{label}: num_heads")
        self.num_layers = positive_int(num_layers, f"{label}: num_layers")
        self.d_ff = positive_int(d_ff, f"{label}: d_ff")
        if int(mem_len) != mem_len or mem_len < 0:
            raise ValueError(f"{label}: mem_len must be a non-negative integer, got {mem_len!r}")
        self.mem_len = int(mem_len)
        self.dropout = dropout_rate(dropout, label)
        self.layer_norm_eps = float(layer_norm_eps)
        self.embeddings = Embedding(vocab_size, d_model, embeddings_init=initializers.normal(std=d_model ** -0.5))
        self.embedding_dropout = Dropout(self.dropout)
        self.layers = ModuleList([self.layer_class(d_model, num_heads, d_ff, d_head=d_head, dropout=dropout,
                                                   layer_norm_eps=layer_norm_eps) for _ in range(num_layers)])
        self.d_head = self.layers[0].d_head
        self.head = Dense(vocab_size, kernel_init="xavier_uniform")

    def build(self, input_shape) -> None:
        ids = tuple(input_shape[0]) if isinstance(input_shape, list) else tuple(input_shape)
        if len(ids) != 2:
            raise ValueError(f"{self._label()}: expected token ids of shape (batch, time), got input shape {ids}")
        hidden = ids + (self.d_model,)
        self._build_own_parameters()
        for layer, shape in ((self.embeddings, ids), (self.embedding_dropout, hidden),
                             *((layer, hidden) for layer in self.layers), (self.head, hidden)):
            if not layer.built:
                layer.build(shape)
                layer.built = True
        self.built = True

    def _build_own_parameters(self) -> None:
        """Parameters of the model itself, made before its layers' (none here)."""

    def forward(self, ids, mems=None, mask=None) -> tuple[Tensor, list[Tensor]]:
        if mems is not None and len(mems) != self.num_layers:
            raise ValueError(f"{self._label()}: expected {self.num_layers} memories (one per layer), got {len(mems)}")
        x = self.embedding_dropout(F.mul(self.embeddings(ids), math.sqrt(self.d_model)))
        new_mems = []
        for i, layer in enumerate(self.layers):
            memory = None if mems is None else as_tensor(mems[i])
            new_mems.append(self._new_memory(memory, x))
            x = layer(x, memory, mask=mask)
        return self.head(x), [m for m in new_mems if m is not None]

    def _new_memory(self, memory: Tensor | None, x: Tensor) -> Tensor | None:
        """The last ``mem_len`` steps of [memory ; x], detached (None when mem_len is 0)."""
        if self.mem_len == 0:
            return None
        states = x.detach() if memory is None else F.concat([memory.detach(), x.detach()], axis=1)
        return F.getitem(states, (slice(None), slice(-self.mem_len, None))).detach()

    def compute_output_shape(self, input_shape):
        ids = tuple(input_shape[0]) if isinstance(input_shape, list) else tuple(input_shape)
        return ids + (self.vocab_size,)

    def get_config(self) -> dict:
        return {"vocab_size": self.vocab_size, "d_model": self.d_model, "num_heads": self.num_heads,
                "num_layers": self.num_layers, "d_ff": self.d_ff, "mem_len": self.mem_len, "d_head": self.d_head,
                "dropout": self.dropout, "layer_norm_eps": self.layer_norm_eps, "name": self.name}

    def extra_repr(self) -> str:
        return (f"vocab_size={self.vocab_size}, d_model={self.d_model}, num_heads={self.num_heads}, "
                f"num_layers={self.num_layers}, mem_len={self.mem_len}")
