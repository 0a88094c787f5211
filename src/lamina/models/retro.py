"""RETRO (Borgeaud et al., "Improving language models by retrieving from trillions of tokens",
2022): a decoder whose layers at the positions P attend, chunk by chunk, to retrieved text.

A sequence of n tokens is cut into chunks C_1 .. C_l of m tokens. For each complete chunk
C_u a database (:class:`~lamina.models.RetroDatabase`) gives k neighbours, each a retrieved
chunk followed by its continuation (r = 2m tokens). The model:

    H = E[X]
    for layer p:  H = H + ATTN(norm(H))                     (causal, rotary)
                  if p == min(P):  E_u = ENCODER(RET(C_u), H_u)  for every complete chunk u
                  if p in P:       H = H + CCA(norm(H), E)
                  H = H + FFW(norm(H))
    logits = lm_head(norm(H))

The neighbour encoder is a bidirectional transformer (rotary self-attention over the r tokens
of each neighbour, then cross-attention to the decoder's activations H_u of the m tokens of
chunk u, then a feed-forward layer), on the decoder's token embedding.

Chunked cross-attention shifts the hidden states by m - 1: token i attends to the neighbours
of chunk c(i) = floor((i + 1) / m) - 1, the last chunk it has seen whole, and the first m - 1
tokens attend to nothing (their CCA output is 0), so no token sees neighbours retrieved with
tokens after it:

    CCA(H, E)_i = W_o softmax(q_i K_c(i)^T / sqrt(d)) V_c(i)        (per head, for i >= m - 1)

with K_u, V_u the projections of the k * r encoded neighbour tokens of chunk u. Rotary
positions put the query of token i at i - u m (m - 1 .. 2m - 2 within its attending chunk)
and neighbour token j at j (0 .. r - 1), so the score depends on where token i sits relative
to the neighbour tokens (the paper's relative encoding; the continuation of the neighbour
starts at m).
"""

from __future__ import annotations

import numpy as np

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.id_inputs import token_ids
from lamina.models.llama import LlamaMLP
from lamina.nn import init as initializers
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.containers import ModuleList
from lamina.nn.dense import Dense
from lamina.nn.embedding import Embedding
from lamina.nn.layer import positive_int
from lamina.nn.module import Module, as_tensor
from lamina.nn.multi_head_attention import MultiHeadAttention
from lamina.nn.rms_norm import RMSNorm

__all__ = ["RETRO", "RETRO_CONFIGS", "ChunkedCrossAttention", "retro", "retro_loss"]

RETRO_CONFIGS = {
    "tiny": {"vocab_size": 256, "hidden_size": 64, "num_layers": 4, "num_heads": 4, "intermediate_size": 128,
             "chunk_size": 8, "cca_layers": (1, 3), "encoder_layers": 2},
}
"""A 'tiny' configuration for experiments (m = 8; the paper's models use m = 64, CCA every
third layer from the sixth and a 2-layer encoder)."""


def _built(module: Module, shape: tuple) -> Module:
    module.build(shape)
    module.built = True
    return module


@register_with_arguments
class ChunkedCrossAttention(Module):
    """RETRO's chunked cross-attention: (hidden states (N, T, D), encoded neighbours
    (N, L, k, r, D)) -> (N, T, D), with L = T // m the number of complete chunks of
    ``chunk_size`` m tokens; token i >= m - 1 attends (``num_heads`` heads, rotary positions
    of base ``rope_theta``) to the k * r neighbour tokens of chunk floor((i + 1) / m) - 1, the
    first m - 1 tokens get 0. Projections ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``
    (no bias)."""

    def __init__(self, hidden_size: int, num_heads: int, chunk_size: int, rope_theta: float = 10000.0,
                 initializer_range: float = 0.02, name: str | None = None):
        super().__init__(name=name)
        self.hidden_size = positive_int(hidden_size, "ChunkedCrossAttention: hidden_size")
        self.num_heads = positive_int(num_heads, "ChunkedCrossAttention: num_heads")
        self.chunk_size = positive_int(chunk_size, "ChunkedCrossAttention: chunk_size")
        if hidden_size % num_heads or (hidden_size // num_heads) % 2:
            raise ValueError(f"ChunkedCrossAttention: hidden_size {hidden_size} must split into {num_heads} heads "
                             "of an even size (rotary positions)")
        self.rope_theta = float(rope_theta)
        self.initializer_range = float(initializer_range)
        init = initializers.normal(std=self.initializer_range)
        for part in ("q_proj", "k_proj", "v_proj", "o_proj"):
            setattr(self, part, _built(Dense(hidden_size, use_bias=False, kernel_init=init), (None, hidden_size)))
        self.built = True

    def _heads(self, x, shape: tuple) -> Tensor:
        """(..., D) -> ``shape`` + (heads, D / heads)."""
        return F.reshape(x, *shape, self.num_heads, self.hidden_size // self.num_heads)

    def forward(self, x, neighbours) -> Tensor:
        x, neighbours = as_tensor(x), as_tensor(neighbours)
        m, d = self.chunk_size, self.hidden_size
        if x.ndim != 3 or x.shape[2] != d:
            raise ShapeError(f"{self._label()}: expected hidden states (N, T, {d}), got shape {tuple(x.shape)}")
        n, t, _ = x.shape
        chunks = t // m
        if neighbours.ndim != 5 or neighbours.shape[:2] != (n, chunks) or neighbours.shape[4] != d:
            raise ShapeError(f"{self._label()}: for hidden states {tuple(x.shape)} and chunk_size {m}, expected "
                             f"encoded neighbours (N, T // m, k, r, D) = ({n}, {chunks}, k, r, {d}), got shape "
                             f"{tuple(neighbours.shape)}")
        if chunks == 0:
            return F.mul(x, 0.0)
        k, r = neighbours.shape[2], neighbours.shape[3]
        # attending chunk u holds tokens u m + m - 1 .. u m + 2m - 2 (the tail past T is padding)
        shifted = F.getitem(x, (slice(None), slice(m - 1, None)))
        shifted = F.pad(shifted, ((0, 0), (0, chunks * m - (t - m + 1)), (0, 0)))
        q = F.transpose(self._heads(self.q_proj(shifted), (n, chunks, m)), 0, 1, 3, 2, 4)   # (N, L, h, m, dh)
        q = F.rotary_embedding(q, offset=m - 1, base=self.rope_theta)

        def keys(projection) -> Tensor:                                          # (N, L, h, k, r, dh)
            return F.transpose(self._heads(projection(neighbours), (n, chunks, k, r)), 0, 1, 4, 2, 3, 5)

        key = F.rotary_embedding(keys(self.k_proj), base=self.rope_theta)
        flat = (n, chunks, self.num_heads, k * r, d // self.num_heads)
        attended = F.scaled_dot_product_attention(q, F.reshape(key, *flat), F.reshape(keys(self.v_proj), *flat))
        out = self.o_proj(F.reshape(F.transpose(attended, 0, 1, 3, 2, 4), n, chunks * m, d))
        return F.pad(F.getitem(out, (slice(None), slice(0, t - m + 1))), ((0, 0), (m - 1, 0), (0, 0)))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])


class _DecoderBlock(Module):
    """x = x + ATTN(norm(x)); [x = x + CCA(norm(x), E)]; x = x + FFW(norm(x))."""

    def __init__(self, hidden_size: int, num_heads: int, intermediate_size: int, chunk_size: int | None,
                 rope_theta: float, rms_norm_eps: float, initializer_range: float, name: str | None = None):
        super().__init__(name=name)
        shape, init = (None, None, hidden_size), initializers.normal(std=initializer_range)
        self.attention_norm = _built(RMSNorm(hidden_size, eps=rms_norm_eps), shape)
        self.self_attn = _built(MultiHeadAttention(hidden_size, num_heads, use_bias=False, kernel_init=init,
                                                   rotary=True, rotary_base=rope_theta), shape)
        self.cross = chunk_size is not None
        if self.cross:
            self.cca_norm = _built(RMSNorm(hidden_size, eps=rms_norm_eps), shape)
            self.cca = ChunkedCrossAttention(hidden_size, num_heads, chunk_size, rope_theta, initializer_range)
        self.mlp_norm = _built(RMSNorm(hidden_size, eps=rms_norm_eps), shape)
        self.mlp = _built(LlamaMLP(hidden_size, intermediate_size, initializer_range=initializer_range), shape)
        self.built = True

    def attend(self, x) -> Tensor:
        return F.add(x, self.self_attn(self.attention_norm(x), causal=True))

    def cross_attend(self, x, encoded) -> Tensor:
        return F.add(x, self.cca(self.cca_norm(x), encoded))

    def feed_forward(self, x) -> Tensor:
        return F.add(x, self.mlp(self.mlp_norm(x)))


class _EncoderBlock(Module):
    """y = y + ATTN(norm(y)) (bidirectional, rotary); y = y + CA(norm(y), H_u); y = y + FFW(norm(y))."""

    def __init__(self, hidden_size: int, num_heads: int, intermediate_size: int, rope_theta: float,
                 rms_norm_eps: float, initializer_range: float, name: str | None = None):
        super().__init__(name=name)
        shape, init = (None, None, hidden_size), initializers.normal(std=initializer_range)
        self.attention_norm = _built(RMSNorm(hidden_size, eps=rms_norm_eps), shape)
        self.self_attn = _built(MultiHeadAttention(hidden_size, num_heads, use_bias=False, kernel_init=init,
                                                   rotary=True, rotary_base=rope_theta), shape)
        self.cross_norm = _built(RMSNorm(hidden_size, eps=rms_norm_eps), shape)
        self.cross_attn = _built(MultiHeadAttention(hidden_size, num_heads, use_bias=False, kernel_init=init), shape)
        self.mlp_norm = _built(RMSNorm(hidden_size, eps=rms_norm_eps), shape)
        self.mlp = _built(LlamaMLP(hidden_size, intermediate_size, initializer_range=initializer_range), shape)
        self.built = True

    def forward(self, y, context) -> Tensor:
        y = F.add(y, self.self_attn(self.attention_norm(y)))
        y = F.add(y, self.cross_attn(self.cross_norm(y), context, context))
        return F.add(y, self.mlp(self.mlp_norm(y)))


@register_with_arguments
class RETRO(Module):
    """RETRO: (ids (N, T), neighbours (N, T // m, k, r) token ids or None) -> next-token scores
    (N, T, ``vocab_size``), m = ``chunk_size``. ``num_layers`` decoder blocks, those at the
    0-based indices ``cca_layers`` (default: every third from the sixth, as in the paper, or
    the last when there are fewer) with chunked cross-attention; ``encoder_layers`` blocks in
    the neighbour encoder. Without neighbours (or with T < m) the CCA layers are skipped and
    the model is the plain decoder."""

    def __init__(self, vocab_size: int, hidden_size: int, num_layers: int, num_heads: int, intermediate_size: int,
                 chunk_size: int, cca_layers=None, encoder_layers: int = 2, rope_theta: float = 10000.0,
                 rms_norm_eps: float = 1e-6, initializer_range: float = 0.02, name: str | None = None):
        super().__init__(name=name)
        self.vocab_size = positive_int(vocab_size, "RETRO: vocab_size")
        self.hidden_size = positive_int(hidden_size, "RETRO: hidden_size")
        self.num_layers = positive_int(num_layers, "RETRO: num_layers")
        self.chunk_size = positive_int(chunk_size, "RETRO: chunk_size")
        if cca_layers is None:
            cca_layers = tuple(range(min(5, num_layers - 1), num_layers, 3))
        self.cca_layers = tuple(sorted(int(p) for p in cca_layers))
        if not self.cca_layers or not all(0 <= p < num_layers for p in self.cca_layers):
            raise ValueError(f"RETRO: cca_layers must be indices in 0 .. {num_layers - 1}, got {cca_layers!r}")
        init = initializers.normal(std=initializer_range)
        shape = (None, None, hidden_size)
        self.embed_tokens = _built(Embedding(vocab_size, hidden_size, embeddings_init=init), (None, None))
        options = (rope_theta, rms_norm_eps, initializer_range)
        self.layers = ModuleList([_DecoderBlock(hidden_size, num_heads, intermediate_size,
                                                chunk_size if p in self.cca_layers else None, *options)
                                  for p in range(num_layers)])
        self.encoder = ModuleList([_EncoderBlock(hidden_size, num_heads, intermediate_size, *options)
                                   for _ in range(positive_int(encoder_layers, "RETRO: encoder_layers"))])
        self.encoder_norm = _built(RMSNorm(hidden_size, eps=rms_norm_eps), shape)
        self.norm = _built(RMSNorm(hidden_size, eps=rms_norm_eps), shape)
        self.lm_head = _built(Dense(vocab_size, use_bias=False, kernel_init=init), shape)
        self.built = True

    def _neighbour_ids(self, neighbours, n: int, t: int) -> np.ndarray:
        neighbours = np.asarray(neighbours.numpy() if isinstance(neighbours, Tensor) else neighbours)
        if neighbours.ndim != 4 or neighbours.shape[:2] != (n, t // self.chunk_size):
            raise ShapeError(f"{self._label()}: for ids ({n}, {t}) and chunk_size {self.chunk_size}, expected "
                             f"neighbour ids (N, T // m, k, r) = ({n}, {t // self.chunk_size}, k, r), got shape "
                             f"{neighbours.shape}")
        return neighbours

    def encode_neighbours(self, neighbours, hidden) -> Tensor:
        """E: neighbour ids (N, L, k, r) encoded (N, L, k, r, D), each attending to the
        decoder's activations ``hidden`` (N, T, D) of its chunk (tokens u m .. u m + m - 1)."""
        n, chunks, k, r = neighbours.shape
        m, d = self.chunk_size, self.hidden_size
        context = F.reshape(F.getitem(hidden, (slice(None), slice(0, chunks * m))), n * chunks, 1, m, d)
        context = F.reshape(F.broadcast_to(context, (n * chunks, k, m, d)), n * chunks * k, m, d)
        y = self.embed_tokens(neighbours.reshape(n * chunks * k, r))
        for block in self.encoder:
            y = block(y, context)
        return F.reshape(self.encoder_norm(y), n, chunks, k, r, d)

    def forward(self, ids, neighbours=None) -> Tensor:
        ids = token_ids(ids, self._label())
        n, t = ids.shape
        retrieving = neighbours is not None and t >= self.chunk_size
        if neighbours is not None:
            neighbours = self._neighbour_ids(neighbours, n, t)
        x, encoded = self.embed_tokens(ids), None
        for block in self.layers:
            x = block.attend(x)
            if retrieving and block.cross:
                if encoded is None:
                    encoded = self.encode_neighbours(neighbours, x)
                x = block.cross_attend(x, encoded)
            x = block.feed_forward(x)
        return self.lm_head(self.norm(x))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0]) + (self.vocab_size,)


def retro(config: str = "tiny", **overrides) -> RETRO:
    """A :class:`RETRO` of the preset ``config`` (:data:`RETRO_CONFIGS`) with ``overrides``."""
    if config not in RETRO_CONFIGS:
        raise ValueError(f"retro: unknown config {config!r}; expected one of {sorted(RETRO_CONFIGS)}")
    return RETRO(**{**RETRO_CONFIGS[config], **overrides})


def retro_loss(model: RETRO, ids, neighbours=None) -> Tensor:
    """The mean next-token cross-entropy -(1 / N(T - 1)) sum_i log p(x_{i+1} | x_<=i, RET(C_<c(i)))."""
    ids = token_ids(ids, "retro_loss")
    if ids.shape[1] < 2:
        raise ShapeError(f"retro_loss: expected at least 2 tokens per sequence, got ids of shape {ids.shape}")
    scores = F.getitem(model(ids, neighbours), (slice(None), slice(0, -1)))
    return F.categorical_cross_entropy(F.reshape(scores, -1, model.vocab_size), ids[:, 1:].reshape(-1),
                                       from_logits=True)
