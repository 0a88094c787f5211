"""BART (Lewis et al., "BART: Denoising Sequence-to-Sequence Pre-training for Natural Language
Generation, Translation, and Comprehension", 2020) in the layout and names of Hugging Face's
``BartModel`` and ``BartForConditionalGeneration``.

    encoder:  h = dropout(layernorm_embedding(E[x] * s + P[t + 2]));   per layer (post-norm)
              h = self_attn_layer_norm(h + dropout(SelfAttention(h, padding mask)))
              h = final_layer_norm(h + dropout(fc2(dropout(gelu(fc1(h))))))
    decoder:  g = dropout(layernorm_embedding(E[y] * s + P[t + 2]));   per layer
              g = self_attn_layer_norm(g + dropout(SelfAttention(g, causal mask)))
              g = encoder_attn_layer_norm(g + dropout(CrossAttention(g, enc)))
              g = final_layer_norm(g + dropout(fc2(dropout(gelu(fc1(g))))))
    logits = g E^T + final_logits_bias          (the LM head tied to the shared table E)

P is a learned table of ``max_position_embeddings + 2`` rows read at position + 2 (BART's
offset of 2); s = sqrt(d_model) with ``scale_embedding``, else 1 (bart-base). Attention is
out_proj(concat_h softmax(q_h k_h^T / sqrt(d_head) + mask) v_h) with biased projections
``q_proj``, ``k_proj``, ``v_proj``; GELU is the exact one. ``final_logits_bias`` is a buffer
(zeros unless loaded).

Training (:meth:`BartForConditionalGeneration.loss`) is teacher-forced cross-entropy, the
decoder fed the labels shifted right after ``decoder_start_token_id`` (-100 read as padding).
Generation (:meth:`BartForConditionalGeneration.generate`) reuses T5's greedy and beam search
(:mod:`lamina.models.t5_generation`), each decoder layer caching its self-attention keys and
values and the cross-attention keys and values of the encoder output.
"""

from __future__ import annotations

import numpy as np

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.models.encoder_decoder_cache import HeadProjections, cached_keys_values
from lamina.models.hf_weights import build_children, main_input_shape
from lamina.models.t5_generation import generate_from_inputs
from lamina.nn import init as initializers
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.containers import ModuleList
from lamina.nn.dense import Dense
from lamina.nn.dropout import Dropout
from lamina.nn.embedding import Embedding
from lamina.nn.layer import dropout_rate as checked_rate
from lamina.nn.layer import positive_int
from lamina.nn.module import Module, as_tensor
from lamina.nn.sample_norm import LayerNorm

__all__ = ["BART_CONFIGS", "BartAttention", "BartDecoder", "BartDecoderLayer", "BartEncoder", "BartEncoderLayer",
           "BartForConditionalGeneration", "BartModel", "bart", "shift_tokens_right"]

BART_CONFIGS = {
    "tiny": {"vocab_size": 64, "d_model": 32, "encoder_layers": 2, "decoder_layers": 2,
             "encoder_attention_heads": 4, "decoder_attention_heads": 4, "encoder_ffn_dim": 64,
             "decoder_ffn_dim": 64, "max_position_embeddings": 64},
    "base": {"vocab_size": 50265, "d_model": 768, "encoder_layers": 6, "decoder_layers": 6,
             "encoder_attention_heads": 12, "decoder_attention_heads": 12, "encoder_ffn_dim": 3072,
             "decoder_ffn_dim": 3072, "max_position_embeddings": 1024},
    "large": {"vocab_size": 50265, "d_model": 1024, "encoder_layers": 12, "decoder_layers": 12,
              "encoder_attention_heads": 16, "decoder_attention_heads": 16, "encoder_ffn_dim": 4096,
              "decoder_ffn_dim": 4096, "max_position_embeddings": 1024},
}
"""Hugging Face configurations: 'facebook/bart-base', 'facebook/bart-large' and a 'tiny' one."""

POSITION_OFFSET = 2      # BART reads its position table at position + 2
_NEG = -1e9              # added to the scores of masked keys
INIT_STD = 0.02          # BartConfig.init_std


def _normal():
    return initializers.normal(std=INIT_STD)


def _ids(x) -> np.ndarray:
    return x.numpy() if isinstance(x, Tensor) else np.asarray(x)


def _padding_bias(mask, dtype) -> np.ndarray:
    """(N, 1, 1, Tk): 0 where ``mask`` is True, a large negative number at padding."""
    return np.where(_ids(mask).astype(bool), 0.0, _NEG)[:, None, None, :].astype(dtype)


def shift_tokens_right(labels, pad_token_id: int, decoder_start_token_id: int) -> np.ndarray:
    """The decoder input for ``labels`` (N, T): the start token, then the labels but the last,
    -100 replaced by the pad id (Hugging Face's ``shift_tokens_right``)."""
    labels = _ids(labels)
    shifted = np.full_like(labels, decoder_start_token_id)
    shifted[:, 1:] = labels[:, :-1]
    return np.where(shifted == -100, pad_token_id, shifted)


@register_with_arguments
class BartAttention(HeadProjections):
    """Multi-head attention with biased projections ``q_proj``, ``k_proj``, ``v_proj``,
    ``out_proj``: out_proj(concat_h softmax(q_h k_h^T / sqrt(d_head) + bias) v_h)."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        self.embed_dim = positive_int(embed_dim, "BartAttention: embed_dim")
        self.num_heads = positive_int(num_heads, "BartAttention: num_heads")
        if embed_dim % num_heads:
            raise ValueError(f"BartAttention: embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.head_dim = embed_dim // num_heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (
            Dense(embed_dim, kernel_init=_normal()) for _ in range(4))
        self.dropout = Dropout(checked_rate(dropout, "BartAttention"))

    def forward(self, x, bias=None, key_value=None, cache: dict | None = None, cache_key: str = "self") -> Tensor:
        """``x`` (N, Tq, d); ``bias`` None or broadcasting to (N, heads, Tq, Tk) (masks);
        ``key_value`` the encoder output for cross-attention (None: self-attention); ``cache``
        a dict keeping the keys and values between decoding steps."""
        x = as_tensor(x)
        q = self._heads(F.mul(self.q_proj(x), self.head_dim ** -0.5))
        k, v = cached_keys_values(self._keys_values, x, key_value, cache, cache_key)
        scores = F.matmul(q, F.transpose(k, 0, 1, 3, 2))
        if bias is not None:
            scores = F.add(scores, bias)
        weights = self.dropout(F.softmax(scores, axis=-1))
        out = F.transpose(F.matmul(weights, v), 0, 2, 1, 3)
        return self.out_proj(F.reshape(out, x.shape[0], x.shape[1], self.embed_dim))

    def compute_output_shape(self, input_shape):
        return main_input_shape(input_shape)


class _FeedForward(Module):
    """fc2(dropout(gelu(fc1(x)))) under HF's names (an attribute of the layers, not public)."""

    def _init_feed_forward(self, d_model: int, ffn_dim: int, activation_dropout: float) -> None:
        self.fc1 = Dense(ffn_dim, kernel_init=_normal())
        self.fc2 = Dense(d_model, kernel_init=_normal())
        self.activation_dropout = Dropout(checked_rate(activation_dropout, self._label()))

    def _feed_forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.activation_dropout(F.gelu(self.fc1(x))))

    def compute_output_shape(self, input_shape):
        return main_input_shape(input_shape)


@register_with_arguments
class BartEncoderLayer(_FeedForward):
    """A post-norm encoder layer: h = self_attn_layer_norm(x + dropout(self_attn(x))), then
    final_layer_norm(h + dropout(fc2(dropout(gelu(fc1(h))))))."""

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, dropout: float = 0.1,
                 attention_dropout: float = 0.0, activation_dropout: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        self.self_attn = BartAttention(d_model, num_heads, attention_dropout)
        self.self_attn_layer_norm = LayerNorm(-1, eps=1e-5)
        self._init_feed_forward(d_model, positive_int(ffn_dim, "BartEncoderLayer: ffn_dim"), activation_dropout)
        self.final_layer_norm = LayerNorm(-1, eps=1e-5)
        self.dropout = Dropout(checked_rate(dropout, "BartEncoderLayer"))

    def build(self, input_shape) -> None:
        shape = main_input_shape(input_shape)
        build_children([(self.self_attn, shape), (self.self_attn_layer_norm, shape), (self.fc1, shape),
                        (self.fc2, shape[:-1] + (self.fc1.units,)), (self.final_layer_norm, shape)])
        self.built = True

    def forward(self, x, bias=None) -> Tensor:
        x = as_tensor(x)
        h = self.self_attn_layer_norm(F.add(x, self.dropout(self.self_attn(x, bias))))
        return self.final_layer_norm(F.add(h, self.dropout(self._feed_forward(h))))


@register_with_arguments
class BartDecoderLayer(_FeedForward):
    """A post-norm decoder layer: self-attention (causal) -> ``self_attn_layer_norm``,
    cross-attention on the encoder output -> ``encoder_attn_layer_norm``, feed-forward ->
    ``final_layer_norm``, each x <- norm(x + dropout(sub(x)))."""

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, dropout: float = 0.1,
                 attention_dropout: float = 0.0, activation_dropout: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        self.self_attn = BartAttention(d_model, num_heads, attention_dropout)
        self.self_attn_layer_norm = LayerNorm(-1, eps=1e-5)
        self.encoder_attn = BartAttention(d_model, num_heads, attention_dropout)
        self.encoder_attn_layer_norm = LayerNorm(-1, eps=1e-5)
        self._init_feed_forward(d_model, positive_int(ffn_dim, "BartDecoderLayer: ffn_dim"), activation_dropout)
        self.final_layer_norm = LayerNorm(-1, eps=1e-5)
        self.dropout = Dropout(checked_rate(dropout, "BartDecoderLayer"))

    def build(self, input_shape) -> None:
        shape = main_input_shape(input_shape)
        build_children([(self.self_attn, shape), (self.self_attn_layer_norm, shape), (self.encoder_attn, shape),
                        (self.encoder_attn_layer_norm, shape), (self.fc1, shape),
                        (self.fc2, shape[:-1] + (self.fc1.units,)), (self.final_layer_norm, shape)])
        self.built = True

    def forward(self, x, encoder_output, bias=None, cross_bias=None, cache: dict | None = None) -> Tensor:
        """``bias``: the causal (and padding) mask of the self-attention; ``cross_bias`` the
        encoder padding mask; ``cache`` a dict of this layer's keys and values."""
        x = as_tensor(x)
        h = self.self_attn_layer_norm(F.add(x, self.dropout(self.self_attn(x, bias, cache=cache, cache_key="self"))))
        cross = self.encoder_attn(h, cross_bias, key_value=encoder_output, cache=cache, cache_key="cross")
        h = self.encoder_attn_layer_norm(F.add(h, self.dropout(cross)))
        return self.final_layer_norm(F.add(h, self.dropout(self._feed_forward(h))))


class _Stack(Module):
    """What the encoder and the decoder share: the position table (``embed_positions``,
    offset 2), ``layernorm_embedding``, dropout and the ``layers``."""

    def _init_stack(self, d_model: int, max_position_embeddings: int, dropout: float, layers: list) -> None:
        self.d_model = positive_int(d_model, f"{self._label()}: d_model")
        self.max_position_embeddings = positive_int(max_position_embeddings,
                                                    f"{self._label()}: max_position_embeddings")
        self.embed_positions = Embedding(max_position_embeddings + POSITION_OFFSET, d_model,
                                         embeddings_init=_normal())
        self.layernorm_embedding = LayerNorm(-1, eps=1e-5)
        self.dropout = Dropout(checked_rate(dropout, self._label()))
        self.layers = ModuleList(layers)

    def build(self, input_shape) -> None:
        shape = main_input_shape(input_shape)
        build_children([(self.embed_positions, (1, 1)), (self.layernorm_embedding, shape),
                        *((layer, shape) for layer in self.layers)])
        self.built = True

    def _embedded(self, inputs_embeds, offset: int = 0) -> Tensor:
        x = as_tensor(inputs_embeds)
        if x.ndim != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"{self._label()}: expected embeddings of shape (batch, time, {self.d_model}), "
                             f"got {x.shape}")
        t = x.shape[1]
        if offset + t > self.max_position_embeddings:
            raise ValueError(f"{self._label()}: {offset + t} positions exceed max_position_embeddings "
                             f"{self.max_position_embeddings}")
        positions = self.embed_positions(np.arange(offset, offset + t)[None, :] + POSITION_OFFSET)
        return self.dropout(self.layernorm_embedding(F.add(x, positions)))

    def compute_output_shape(self, input_shape):
        return main_input_shape(input_shape)


@register_with_arguments
class BartEncoder(_Stack):
    """BART's encoder (HF's ``BartEncoder`` without its ``embed_tokens``, the shared table
    being applied by :class:`BartModel`): ``forward(inputs_embeds, attention_mask=None)``."""

    def __init__(self, d_model: int, layers: int, num_heads: int, ffn_dim: int, max_position_embeddings: int = 1024,
                 dropout: float = 0.1, attention_dropout: float = 0.0, activation_dropout: float = 0.0,
                 name: str | None = None):
        super().__init__(name=name)
        options = (dropout, attention_dropout, activation_dropout)
        self._init_stack(d_model, max_position_embeddings, dropout,
                         [BartEncoderLayer(d_model, num_heads, ffn_dim, *options)
                          for _ in range(positive_int(layers, "BartEncoder: layers"))])

    def forward(self, inputs_embeds, attention_mask=None) -> Tensor:
        """``inputs_embeds`` (N, T, d_model), the scaled token embeddings; ``attention_mask``
        (N, T) False (0) at padding."""
        x = self._embedded(inputs_embeds)
        bias = None if attention_mask is None else Tensor(_padding_bias(attention_mask, x.dtype))
        for layer in self.layers:
            x = layer(x, bias)
        return x


@register_with_arguments
class BartDecoder(_Stack):
    """BART's decoder (HF's ``BartDecoder`` without its ``embed_tokens``):
    ``forward(inputs_embeds, encoder_output, encoder_mask=None, attention_mask=None,
    caches=None, offset=0)``."""

    def __init__(self, d_model: int, layers: int, num_heads: int, ffn_dim: int, max_position_embeddings: int = 1024,
                 dropout: float = 0.1, attention_dropout: float = 0.0, activation_dropout: float = 0.0,
                 name: str | None = None):
        super().__init__(name=name)
        options = (dropout, attention_dropout, activation_dropout)
        self._init_stack(d_model, max_position_embeddings, dropout,
                         [BartDecoderLayer(d_model, num_heads, ffn_dim, *options)
                          for _ in range(positive_int(layers, "BartDecoder: layers"))])

    def forward(self, inputs_embeds, encoder_output, encoder_mask=None, attention_mask=None, caches=None,
                offset: int = 0) -> Tensor:
        """``caches``: one dict per layer (keys and values of the ``offset`` earlier steps);
        ``attention_mask`` (N, offset + T) False at decoder inputs no query may attend to."""
        x = self._embedded(inputs_embeds, offset)
        t = x.shape[1]
        keys = offset + t
        causal = np.where(np.arange(keys)[None, :] > np.arange(offset, keys)[:, None], _NEG, 0.0)
        bias = causal[None, None].astype(x.dtype)
        if attention_mask is not None:
            bias = bias + _padding_bias(attention_mask, x.dtype)
        cross_bias = None if encoder_mask is None else Tensor(_padding_bias(encoder_mask, x.dtype))
        for i, layer in enumerate(self.layers):
            x = layer(x, encoder_output, Tensor(bias), cross_bias, cache=None if caches is None else caches[i])
        return x


@register_with_arguments
class BartModel(Module):
    """BART's encoder-decoder (HF's ``BartModel``): ``shared`` (the token table), ``encoder``,
    ``decoder``. ``model(input_ids, decoder_input_ids=None, attention_mask=None,
    decoder_attention_mask=None)`` -> the last decoder states (N, Ty, d_model); without
    ``decoder_input_ids`` the decoder reads ``input_ids`` shifted right, as HF's. The arguments
    are ``BartConfig``'s, with its defaults (bart-large's sizes)."""

    def __init__(self, vocab_size: int = 50265, d_model: int = 1024, encoder_layers: int = 12,
                 decoder_layers: int = 12, encoder_attention_heads: int = 16, decoder_attention_heads: int = 16,
                 encoder_ffn_dim: int = 4096, decoder_ffn_dim: int = 4096, max_position_embeddings: int = 1024,
                 dropout: float = 0.1, attention_dropout: float = 0.0, activation_dropout: float = 0.0,
                 scale_embedding: bool = False, pad_token_id: int = 1, bos_token_id: int = 0, eos_token_id: int = 2,
                 decoder_start_token_id: int = 2, name: str | None = None):
        super().__init__(name=name)
        self.vocab_size = positive_int(vocab_size, "BartModel: vocab_size")
        self.d_model = positive_int(d_model, "BartModel: d_model")
        self.embed_scale = float(np.sqrt(d_model)) if scale_embedding else 1.0
        self.pad_token_id, self.bos_token_id, self.eos_token_id = int(pad_token_id), int(bos_token_id), int(
            eos_token_id)
        self.decoder_start_token_id = int(decoder_start_token_id)
        self.num_decoder_layers = positive_int(decoder_layers, "BartModel: decoder_layers")
        rates = (dropout, attention_dropout, activation_dropout)
        self.shared = Embedding(vocab_size, d_model, embeddings_init=_normal())
        self.encoder = BartEncoder(d_model, encoder_layers, encoder_attention_heads, encoder_ffn_dim,
                                   max_position_embeddings, *rates)
        self.decoder = BartDecoder(d_model, decoder_layers, decoder_attention_heads, decoder_ffn_dim,
                                   max_position_embeddings, *rates)

    def build(self, input_shape) -> None:
        ids = main_input_shape(input_shape)
        if len(ids) != 2:
            raise ValueError(f"{self._label()}: expected token ids of shape (batch, time), got input shape {ids}")
        hidden = ids + (self.d_model,)
        build_children([(self.shared, ids), (self.encoder, hidden), (self.decoder, hidden)])
        self.built = True

    def _embed(self, ids) -> Tensor:
        x = self.shared(_ids(ids))
        return x if self.embed_scale == 1.0 else F.mul(x, self.embed_scale)

    def encode(self, input_ids, attention_mask=None) -> Tensor:
        """The encoder output (N, Tx, d_model)."""
        if not self.built:
            self.build(np.shape(input_ids))
        return self.encoder(self._embed(input_ids), attention_mask)

    def decode_states(self, decoder_input_ids, encoder_output, attention_mask=None, caches=None, offset: int = 0,
                      decoder_attention_mask=None) -> Tensor:
        """The decoder states (N, Ty, d_model) for ``decoder_input_ids`` after ``offset``
        cached steps (``caches``: one dict per decoder layer)."""
        return self.decoder(self._embed(decoder_input_ids), encoder_output, attention_mask, decoder_attention_mask,
                            caches, offset)

    def forward(self, input_ids, decoder_input_ids=None, attention_mask=None, decoder_attention_mask=None) -> Tensor:
        if decoder_input_ids is None:
            decoder_input_ids = shift_tokens_right(input_ids, self.pad_token_id, self.decoder_start_token_id)
        encoded = self.encode(input_ids, attention_mask)
        return self.decode_states(decoder_input_ids, encoded, attention_mask,
                                  decoder_attention_mask=decoder_attention_mask)

    def compute_output_shape(self, input_shape):
        return main_input_shape(input_shape) + (self.d_model,)


@register_with_arguments
class BartForConditionalGeneration(Module):
    """BART with its language-model head (HF's ``BartForConditionalGeneration``): ``model``
    (a :class:`BartModel`) and the buffer ``final_logits_bias`` (1, vocab); the head is the
    shared token table, logits = states E^T + final_logits_bias.

    ``lm(input_ids, decoder_input_ids=None, attention_mask=None, decoder_attention_mask=None)``
    -> logits (N, Ty, vocab); ``lm.loss(input_ids, labels, attention_mask=None)`` the mean
    cross-entropy over labels that are not -100, the decoder fed ``shift_right(labels)``;
    ``lm.generate(...)`` greedy or beam decoding with the cache. ``options``: :class:`BartModel`'s."""

    def __init__(self, name: str | None = None, **options):
        super().__init__(name=name)
        self.model = BartModel(**options)
        self.register_buffer("final_logits_bias", np.zeros((1, self.model.vocab_size), dtype=np.float32))

    vocab_size = property(lambda self: self.model.vocab_size)
    pad_token_id = property(lambda self: self.model.pad_token_id)
    eos_token_id = property(lambda self: self.model.eos_token_id)
    decoder_start_token_id = property(lambda self: self.model.decoder_start_token_id)
    num_decoder_layers = property(lambda self: self.model.num_decoder_layers)

    def build(self, input_shape) -> None:
        build_children([(self.model, main_input_shape(input_shape))])
        self.built = True

    def encode(self, input_ids, attention_mask=None) -> Tensor:
        if not self.built:
            self.build(np.shape(input_ids))
        return self.model.encode(input_ids, attention_mask)

    def decode(self, decoder_input_ids, encoder_output, attention_mask=None, caches=None, offset: int = 0,
               decoder_attention_mask=None) -> Tensor:
        """Logits (N, Ty, vocab) of the decoder fed ``decoder_input_ids`` after ``offset``
        cached steps (``caches``: one dict per decoder layer, or None)."""
        states = self.model.decode_states(decoder_input_ids, encoder_output, attention_mask, caches, offset,
                                          decoder_attention_mask)
        table = self.model.shared.weight
        bias = self.final_logits_bias.astype(states.dtype)
        return F.add(F.matmul(states, F.transpose(table, 1, 0)), Tensor(bias))

    def shift_right(self, labels) -> np.ndarray:
        """The decoder input for ``labels`` (see :func:`shift_tokens_right`)."""
        return shift_tokens_right(labels, self.pad_token_id, self.decoder_start_token_id)

    def forward(self, input_ids, decoder_input_ids=None, attention_mask=None, decoder_attention_mask=None) -> Tensor:
        if decoder_input_ids is None:
            decoder_input_ids = self.shift_right(input_ids)
        return self.decode(decoder_input_ids, self.encode(input_ids, attention_mask), attention_mask,
                           decoder_attention_mask=decoder_attention_mask)

    def loss(self, input_ids, labels, attention_mask=None, decoder_attention_mask=None) -> Tensor:
        """Teacher-forced mean cross-entropy of the logits against ``labels`` (N, Ty), -100 ignored."""
        logits = self(input_ids, self.shift_right(labels), attention_mask, decoder_attention_mask)
        return F.categorical_cross_entropy(logits, _ids(labels), from_logits=True, ignore_index=-100)

    def generate(self, input_ids, max_length: int = 20, beam_width: int = 1, attention_mask=None,
                 use_cache: bool = True, length_penalty: float = 1.0, early_stopping: bool | str = False,
                 return_scores: bool = False):
        """Greedy (``beam_width`` 1) or beam search decoding of every input, all rows together
        (:mod:`lamina.models.t5_generation`): ids (N, <= max_length) starting with
        ``decoder_start_token_id``, each row ending with ``eos_token_id`` then padding unless
        it reached ``max_length``. ``use_cache``: feed the decoder only the new token each
        step (cached keys and values); otherwise rerun the prefixes."""
        who = "BartForConditionalGeneration.generate"
        max_length = positive_int(max_length, f"{who}: max_length")
        beam_width = positive_int(beam_width, f"{who}: beam_width")
        if return_scores and beam_width == 1:
            raise ValueError(f"{who}: return_scores gives beam-search scores; pass beam_width > 1")
        input_ids = _ids(input_ids)
        if input_ids.ndim != 2:
            raise ValueError(f"{who}: expected input_ids of shape (batch, time), got {input_ids.shape}")
        mask = None if attention_mask is None else _ids(attention_mask).astype(bool)
        if mask is not None and mask.shape != input_ids.shape:
            raise ValueError(f"{who}: attention_mask of shape {mask.shape} for input_ids {input_ids.shape}")
        return generate_from_inputs(self, input_ids, mask, max_length, beam_width, use_cache, length_penalty,
                                    early_stopping, return_scores)

    def compute_output_shape(self, input_shape):
        return main_input_shape(input_shape) + (self.vocab_size,)


def bart(config: str = "base", **options) -> BartForConditionalGeneration:
    """The :class:`BartForConditionalGeneration` of configuration ``config`` (see
    :data:`BART_CONFIGS`): 'base' (facebook/bart-base: 139,420,416 parameters, the shared table
    counted once, the ``final_logits_bias`` buffer not counted), 'large' (facebook/bart-large:
    406,291,456) or 'tiny'; ``options`` override :class:`BartModel`'s arguments. Unbuilt:
    ``lm.build((None, 1))`` makes the weights (shape-only inside :func:`lamina.nn.init.meta`)."""
    if config not in BART_CONFIGS:
        raise ValueError(f"bart: config must be one of {tuple(BART_CONFIGS)}, got {config!r}")
    return BartForConditionalGeneration(**{**BART_CONFIGS[config], **options})
