"""DeBERTa (He et al., "DeBERTa: decoding-enhanced BERT with disentangled attention", 2021).

Each token carries a content vector H_i; positions enter only as relative distances, bucketed
and clipped to [0, 2k) (k = ``max_relative_positions``):

    delta(i, j) = 0 if i - j <= -k,  2k - 1 if i - j >= k,  else i - j + k

With Q_c = H W_q, K_c = H W_k, V = H W_v from the contents and Q_r = P W_qr, K_r = P W_kr from
the table P (2k, d_model) of relative-position embeddings, the disentangled attention scores are

    A_ij = (Q_c,i . K_c,j  +  Q_c,i . K_r,delta(i,j)  +  K_c,j . Q_r,delta(j,i)) / sqrt(3 d)

(content-to-content, content-to-position, position-to-content; d the head width), and each head
gives softmax_j(A) V. The blocks are post-norm as BERT's. The enhanced mask decoder adds the
absolute position embeddings just before the masked-LM head: the last block is run again with
queries I = H + P_abs over the keys and values H of the block's input (twice by default, the
weights shared), and the scores come from LayerNorm(gelu(I W_t + b_t)) W_word^T + b.
"""

from __future__ import annotations

import math

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.bert import _key_mask, _normal
from lamina.models.id_inputs import token_ids
from lamina.nn.containers import ModuleList
from lamina.nn.dense import Dense
from lamina.nn.embedding import Embedding
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module
from lamina.nn.sample_norm import LayerNorm

__all__ = ["DebertaEncoder", "DebertaForMaskedLM", "DebertaLayer", "disentangled_attention",
           "relative_position_buckets"]


def relative_position_buckets(query_length: int, key_length: int, span: int) -> np.ndarray:
    """delta(i, j) = clip(i - j + k, 0, 2k - 1) for queries i < ``query_length`` and keys
    j < ``key_length``, k = ``span``: an int array (query_length, key_length)."""
    span = positive_int(span, "relative_position_buckets: span")
    distance = np.arange(query_length)[:, None] - np.arange(key_length)[None, :]
    return np.clip(distance + span, 0, 2 * span - 1)


def disentangled_attention(query, key, value, position_query, position_key, span: int, key_mask=None) -> Tensor:
    """softmax_j((Q_c K_c^T + c2p + p2c) / sqrt(3 d)) V per head, with
    c2p_ij = Q_c,i . K_r,delta(i,j) and p2c_ij = K_c,j . Q_r,delta(j,i) (module notes).

    ``query``, ``key``, ``value``: (N, H, T, d); ``position_query``, ``position_key``: the
    projected relative-position embeddings Q_r, K_r of shape (H, 2k, d), k = ``span``;
    ``key_mask`` (N, T), True on the keys that may be attended to. Returns (N, H, T, d).
    """
    query, key, value = (x if isinstance(x, Tensor) else Tensor._wrap(backend.xp.asarray(x))
                         for x in (query, key, value))
    span = positive_int(span, "disentangled_attention: span")
    if query.ndim != 4 or key.shape != query.shape or value.shape != query.shape:
        raise ShapeError(f"disentangled_attention: query, key and value must share one shape (N, H, T, d), got "
                         f"{tuple(query.shape)}, {tuple(key.shape)} and {tuple(value.shape)}")
    heads, length, width = query.shape[1], query.shape[2], query.shape[3]
    expected = (heads, 2 * span, width)
    if tuple(position_query.shape) != expected or tuple(position_key.shape) != expected:
        raise ShapeError(f"disentangled_attention: position_query and position_key must have shape (H, 2k, d) = "
                         f"{expected}, got {tuple(position_query.shape)} and {tuple(position_key.shape)}")
    buckets = relative_position_buckets(length, length, span)
    content = F.matmul(query, F.swapaxes(key, -1, -2))
    # (Q_c K_r^T)[i, r] read at r = delta(i, j), and (K_c Q_r^T)[j, r] read at r = delta(j, i)
    to_position = F.take_along_dim(F.matmul(query, F.swapaxes(position_key, -1, -2)),
                                   backend.xp.asarray(buckets[None, None]), axis=-1)
    from_position = F.take_along_dim(F.matmul(key, F.swapaxes(position_query, -1, -2)),
                                     backend.xp.asarray(buckets[None, None]), axis=-1)
    scores = F.mul(F.add(F.add(content, to_position), F.swapaxes(from_position, -1, -2)),
                   1.0 / math.sqrt(3 * width))
    if key_mask is not None:
        blocked = ~backend.xp.asarray(key_mask, dtype=bool)[:, None, None, :]
        scores = F.masked_fill(scores, blocked, -1e9)
    return F.matmul(F.softmax(scores, axis=-1), value)


@register_layer
class DebertaLayer(Module):
    """One post-norm DeBERTa block: a = LayerNorm(x + W_o attn(x)) with the disentangled
    attention of :func:`disentangled_attention`, then LayerNorm(a + W_2 gelu(W_1 a + b_1) + b_2).

    ``layer(x, relative_embeddings, key_mask=None, query_states=None)``: x (N, T, d_model), the
    relative-position table (2k, d_model); ``query_states`` (N, T, d_model), when given, makes
    the content queries and the residual branch (the enhanced mask decoder's use), x still
    giving the keys and values. Weights start N(0, 0.02), no dropout.
    """

    def __init__(self, hidden_size: int, num_attention_heads: int, intermediate_size: int,
                 max_relative_positions: int, layer_norm_eps: float = 1e-7, name: str | None = None):
        super().__init__(name=name)
        self.hidden_size = positive_int(hidden_size, "DebertaLayer: hidden_size")
        self.num_attention_heads = positive_int(num_attention_heads, "DebertaLayer: num_attention_heads")
        self.intermediate_size = positive_int(intermediate_size, "DebertaLayer: intermediate_size")
        self.max_relative_positions = positive_int(max_relative_positions, "DebertaLayer: max_relative_positions")
        if hidden_size % num_attention_heads:
            raise ValueError(f"DebertaLayer: hidden_size {hidden_size} is not divisible by num_attention_heads "
                             f"{num_attention_heads}")
        self.layer_norm_eps = float(layer_norm_eps)
        for part in ("query", "key", "value", "position_query", "position_key", "attention_output"):
            setattr(self, part, Dense(hidden_size, kernel_init=_normal()))
        self.attention_norm = LayerNorm(-1, eps=self.layer_norm_eps)
        self.intermediate = Dense(intermediate_size, activation="gelu", kernel_init=_normal())
        self.output = Dense(hidden_size, kernel_init=_normal())
        self.output_norm = LayerNorm(-1, eps=self.layer_norm_eps)

    def _heads(self, x) -> Tensor:
        """(..., T, d_model) -> (..., H, T, d)."""
        *lead, length, _ = x.shape
        split = F.reshape(x, *lead, length, self.num_attention_heads, self.hidden_size // self.num_attention_heads)
        return F.swapaxes(split, -2, -3)

    def forward(self, x, relative_embeddings, key_mask=None, query_states=None) -> Tensor:
        if x.ndim != 3 or x.shape[-1] != self.hidden_size:
            raise ShapeError(f"{self._label()}: expected hidden states (N, T, {self.hidden_size}), got shape "
                             f"{tuple(x.shape)}")
        expected = (2 * self.max_relative_positions, self.hidden_size)
        if tuple(relative_embeddings.shape) != expected:
            raise ShapeError(f"{self._label()}: relative_embeddings must have shape (2k, d_model) = {expected}, "
                             f"got {tuple(relative_embeddings.shape)}")
        queries = x if query_states is None else query_states
        if tuple(queries.shape) != tuple(x.shape):
            raise ShapeError(f"{self._label()}: query_states of shape {tuple(queries.shape)} must match the hidden "
                             f"states' shape {tuple(x.shape)}")
        attended = disentangled_attention(
            self._heads(self.query(queries)), self._heads(self.key(x)), self._heads(self.value(x)),
            self._heads(self.position_query(relative_embeddings)), self._heads(self.position_key(relative_embeddings)),
            self.max_relative_positions, key_mask)
        n, _, length, _ = attended.shape
        merged = F.reshape(F.swapaxes(attended, 1, 2), n, length, self.hidden_size)
        a = self.attention_norm(F.add(queries, self.attention_output(merged)))
        return self.output_norm(F.add(a, self.output(self.intermediate(a))))

    def get_config(self) -> dict:
        return {"hidden_size": self.hidden_size, "num_attention_heads": self.num_attention_heads,
                "intermediate_size": self.intermediate_size, "max_relative_positions": self.max_relative_positions,
                "layer_norm_eps": self.layer_norm_eps, "name": self.name}


@register_layer
class DebertaEncoder(Module):
    """DeBERTa's encoder: ids (N, T) -> hidden states (N, T, ``hidden_size``).

    h_0 = LayerNorm(W_word[x]) (no absolute positions), then ``num_hidden_layers``
    :class:`DebertaLayer` blocks sharing one table of 2k relative-position embeddings
    (k = ``max_relative_positions``). ``attention_mask`` (N, T): 1 on tokens, 0 on padding,
    which no query attends to. :meth:`hidden_states` gives every block's input and output.
    """

    def __init__(self, vocab_size: int, hidden_size: int = 768, num_hidden_layers: int = 12,
                 num_attention_heads: int = 12, intermediate_size: int = 3072, max_relative_positions: int = 256,
                 layer_norm_eps: float = 1e-7, name: str | None = None):
        super().__init__(name=name)
        self.vocab_size = positive_int(vocab_size, "DebertaEncoder: vocab_size")
        self.hidden_size = positive_int(hidden_size, "DebertaEncoder: hidden_size")
        self.num_hidden_layers = positive_int(num_hidden_layers, "DebertaEncoder: num_hidden_layers")
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.max_relative_positions = positive_int(max_relative_positions, "DebertaEncoder: max_relative_positions")
        self.layer_norm_eps = float(layer_norm_eps)
        self.word_embeddings = Embedding(vocab_size, hidden_size, embeddings_init=_normal())
        self.embedding_norm = LayerNorm(-1, eps=self.layer_norm_eps)
        self.relative_embeddings = Embedding(2 * self.max_relative_positions, hidden_size, embeddings_init=_normal())
        self.layer = ModuleList([DebertaLayer(hidden_size, num_attention_heads, intermediate_size,
                                              self.max_relative_positions, self.layer_norm_eps)
                                 for _ in range(num_hidden_layers)])

    def relative_table(self) -> Tensor:
        """The relative-position embeddings (2k, hidden_size)."""
        return self.relative_embeddings(np.arange(2 * self.max_relative_positions))

    def hidden_states(self, ids, attention_mask=None) -> list[Tensor]:
        """[h_0, h_1, .., h_L]: the embeddings and every block's output."""
        ids = token_ids(ids, self._label())
        key_mask = _key_mask(attention_mask, ids.shape, self._label())
        table = self.relative_table()
        states = [self.embedding_norm(self.word_embeddings(ids))]
        for block in self.layer:
            states.append(block(states[-1], table, key_mask=key_mask))
        return states

    def forward(self, ids, attention_mask=None) -> Tensor:
        return self.hidden_states(ids, attention_mask)[-1]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.hidden_size,)

    def get_config(self) -> dict:
        return {"vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
                "num_hidden_layers": self.num_hidden_layers, "num_attention_heads": self.num_attention_heads,
                "intermediate_size": self.intermediate_size, "max_relative_positions": self.max_relative_positions,
                "layer_norm_eps": self.layer_norm_eps, "name": self.name}


@register_layer
class DebertaForMaskedLM(Module):
    """A :class:`DebertaEncoder` with the enhanced mask decoder and a masked-LM head:
    ids (N, T) -> scores (N, T, V) of the token at every position (module notes).

    With h the input of the last block and P_abs[0 .. T - 1] the absolute position embeddings
    (``max_position_embeddings`` of them), I = h + P_abs is refined ``decoder_steps`` times by
    the last block (queries I, keys and values h); the head is LayerNorm(gelu(I W_t + b_t))
    W_word^T + b, the decoder tied to the word table. Other keyword arguments are
    :class:`DebertaEncoder`'s.
    """

    def __init__(self, vocab_size: int, max_position_embeddings: int = 512, decoder_steps: int = 2,
                 name: str | None = None, **config):
        super().__init__(name=name)
        self.deberta = DebertaEncoder(vocab_size, **config)
        self.max_position_embeddings = positive_int(max_position_embeddings,
                                                    "DebertaForMaskedLM: max_position_embeddings")
        self.decoder_steps = positive_int(decoder_steps, "DebertaForMaskedLM: decoder_steps")
        hidden = self.deberta.hidden_size
        self.position_embeddings = Embedding(self.max_position_embeddings, hidden, embeddings_init=_normal())
        self.transform = Dense(hidden, activation="gelu", kernel_init=_normal())
        self.transform_norm = LayerNorm(-1, eps=self.deberta.layer_norm_eps)

    def build(self, input_shape) -> None:
        self.add_parameter("decoder_bias", backend.xp.zeros(self.deberta.vocab_size,
                                                            dtype=backend.get_default_dtype()))
        self.built = True

    def decode(self, ids, attention_mask=None) -> Tensor:
        """The enhanced mask decoder's output I (N, T, hidden_size)."""
        ids = token_ids(ids, self._label())
        n, length = ids.shape
        if length > self.max_position_embeddings:
            raise ShapeError(f"{self._label()}: the ids of shape {ids.shape} have {length} tokens, more than "
                             f"max_position_embeddings={self.max_position_embeddings}")
        states = self.deberta.hidden_states(ids, attention_mask)
        keys = states[-2]
        key_mask = _key_mask(attention_mask, ids.shape, self._label())
        table, last = self.deberta.relative_table(), self.deberta.layer[-1]
        queries = F.add(keys, self.position_embeddings(np.broadcast_to(np.arange(length), (n, length))))
        for _ in range(self.decoder_steps):
            queries = last(keys, table, key_mask=key_mask, query_states=queries)
        return queries

    def forward(self, ids, attention_mask=None) -> Tensor:
        h = self.transform_norm(self.transform(self.decode(ids, attention_mask)))
        return F.add(F.matmul(h, F.swapaxes(self.deberta.word_embeddings.weight, 0, 1)), self.decoder_bias)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.deberta.vocab_size,)

    def get_config(self) -> dict:
        config = self.deberta.get_config()
        return {**config, "max_position_embeddings": self.max_position_embeddings,
                "decoder_steps": self.decoder_steps, "name": self.name}
