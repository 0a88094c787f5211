"""T5 (Raffel et al., "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
Transformer", 2020) in the layout of Hugging Face's ``T5ForConditionalGeneration``, so that its
published weights load with :func:`load_hf_t5_state_dict`.

    encoder:  h = dropout(E[x]);  per block
              h = h + dropout(SelfAttention(layer_norm(h), bias = B_enc))
              h = h + dropout(FF(layer_norm(h)));   enc = dropout(final_layer_norm(h))
    decoder:  g = dropout(E[y]);  per block
              g = g + dropout(SelfAttention(layer_norm(g), bias = B_dec + causal mask))
              g = g + dropout(EncDecAttention(layer_norm(g), enc, enc))
              g = g + dropout(FF(layer_norm(g)));   dec = dropout(final_layer_norm(g))
    logits = (dec * d_model^-0.5) E^T   (tied)   or   lm_head(dec)   (untied, T5 v1.1)

``layer_norm`` is T5's, an RMS norm without mean subtraction nor bias:
y = x / sqrt(mean(x^2) + eps) * weight. Attention is softmax(q k^T + B) v over ``num_heads``
heads of ``d_kv`` features, with NO 1/sqrt(d_kv) scaling (T5 folds it into the initialisation)
and no projection biases. B is a learned relative position bias: the key-minus-query distance
is put in one of ``relative_attention_num_buckets`` buckets (:func:`relative_position_bucket`:
exact for small distances, logarithmic up to ``relative_attention_max_distance``, signed in
the encoder, only the past in the decoder) and each bucket holds one scalar per head. Only the
first block of each stack owns the table (``relative_attention_bias``); the others reuse it.
FF is ``DenseReluDense``: wo(dropout(relu(wi(x)))) for T5 v1.0, or
wo(dropout(gelu_tanh(wi_0(x)) * wi_1(x))) for ``feed_forward_proj="gated-gelu"`` (v1.1).

Generation (:meth:`T5.generate`; greedy, sampling and beam search as Hugging Face's, see
:mod:`lamina.models.t5_generation`) decodes all rows of the batch together: it encodes the
inputs once and caches each decoder block's self-attention keys and values and its
cross-attention keys and values, the relative bias of a new step being computed for the
query at the cached length.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.models.encoder_decoder_cache import cached_keys_values
from lamina.models.hf_weights import (
    HFWeight,
    build_children,
    copied,
    linear,
    load_hf_state_dict,
    main_input_shape,
    read_state_dict,
)
from lamina.models.t5_generation import generate_from_inputs
from lamina.nn import init as initializers
from lamina.nn.containers import ModuleList
from lamina.nn.dense import Dense
from lamina.nn.dropout import Dropout
from lamina.nn.embedding import Embedding
from lamina.nn.layer import dropout_rate as checked_rate
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module, as_tensor
from lamina.nn.rms_norm import RMSNorm

__all__ = ["T5", "T5_CONFIGS", "T5Attention", "T5Block", "T5DenseFF", "T5Stack", "load_hf_t5_state_dict",
           "relative_position_bucket", "t5"]

T5_CONFIGS = {
    "tiny": {"vocab_size": 64, "d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2, "num_heads": 4,
             "relative_attention_num_buckets": 8, "relative_attention_max_distance": 16},
    "small": {"vocab_size": 32128, "d_model": 512, "d_kv": 64, "d_ff": 2048, "num_layers": 6, "num_heads": 8},
    "base": {"vocab_size": 32128, "d_model": 768, "d_kv": 64, "d_ff": 3072, "num_layers": 12, "num_heads": 12},
    "v1_1_small": {"vocab_size": 32128, "d_model": 512, "d_kv": 64, "d_ff": 1024, "num_layers": 8, "num_heads": 6,
                   "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False},
    "flan_small": {"vocab_size": 32128, "d_model": 512, "d_kv": 64, "d_ff": 1024, "num_layers": 8,
                   "num_decoder_layers": 8, "num_heads": 6, "feed_forward_proj": "gated-gelu",
                   "tie_word_embeddings": False},
    "flan_base": {"vocab_size": 32128, "d_model": 768, "d_kv": 64, "d_ff": 2048, "num_layers": 12,
                  "num_decoder_layers": 12, "num_heads": 12, "feed_forward_proj": "gated-gelu",
                  "tie_word_embeddings": False},
}
"""Hugging Face configurations: 't5-small', 't5-base', 'google/t5-v1_1-small', 'google/flan-t5-small',
'google/flan-t5-base' and a 'tiny' one."""

_NEG = -1e9          # added to the scores of masked keys


def relative_position_bucket(relative_position, bidirectional: bool = True, num_buckets: int = 32,
                             max_distance: int = 128) -> np.ndarray:
    """T5's bucket of each key-minus-query distance r (an int array).

    Bidirectional: half the buckets for r > 0, half for r <= 0 on |r|; otherwise only the
    past counts, n = max(-r, 0). With m = (buckets left) / 2, distances n < m have their own
    bucket and larger ones share m + floor(log(n / m) / log(max_distance / m) * (buckets - m)),
    capped at the last bucket."""
    r = np.asarray(relative_position, dtype=np.int64)
    buckets = np.zeros_like(r)
    if bidirectional:
        num_buckets //= 2
        buckets += (r > 0).astype(np.int64) * num_buckets
        n = np.abs(r)
    else:
        n = -np.minimum(r, 0)
    max_exact = num_buckets // 2
    with np.errstate(divide="ignore"):
        large = max_exact + (np.log(np.maximum(n, 1) / max_exact) / math.log(max_distance / max_exact)
                             * (num_buckets - max_exact)).astype(np.int64)
    large = np.minimum(large, num_buckets - 1)
    return buckets + np.where(n < max_exact, n, large)


def _normal(std: float):
    return initializers.normal(std=std)


def _ids(x) -> np.ndarray:
    """Token ids (or a mask) as a NumPy array, from an array, a list or a Tensor."""
    return x.numpy() if isinstance(x, Tensor) else np.asarray(x)


@register_layer
class T5Attention(Module):
    """T5's multi-head attention, sub-layers ``q``, ``k``, ``v`` (d_model -> num_heads d_kv)
    and ``o`` (back to d_model), without biases nor score scaling:
    o(concat_h softmax(q_h k_h^T + bias_h + mask) v_h). With ``has_relative_attention_bias``
    it owns ``relative_attention_bias`` (num_buckets, num_heads) and :meth:`position_bias`
    makes the (1, heads, Tq, Tk) bias from it."""

    def __init__(self, d_model: int, d_kv: int, num_heads: int, has_relative_attention_bias: bool = False,
                 is_decoder: bool = False, relative_attention_num_buckets: int = 32,
                 relative_attention_max_distance: int = 128, dropout_rate: float = 0.0,
                 initializer_factor: float = 1.0, name: str | None = None):
        super().__init__(name=name)
        self.d_model = positive_int(d_model, "T5Attention: d_model")
        self.d_kv = positive_int(d_kv, "T5Attention: d_kv")
        self.num_heads = positive_int(num_heads, "T5Attention: num_heads")
        self.has_relative_attention_bias = bool(has_relative_attention_bias)
        self.is_decoder = bool(is_decoder)
        self.num_buckets = positive_int(relative_attention_num_buckets, "T5Attention: relative_attention_num_buckets")
        self.max_distance = positive_int(relative_attention_max_distance,
                                         "T5Attention: relative_attention_max_distance")
        self.dropout_rate = float(dropout_rate)
        self.initializer_factor = float(initializer_factor)
        inner, f = num_heads * d_kv, self.initializer_factor
        self.q = Dense(inner, use_bias=False, kernel_init=_normal(f * (d_model * d_kv) ** -0.5))
        self.k = Dense(inner, use_bias=False, kernel_init=_normal(f * d_model ** -0.5))
        self.v = Dense(inner, use_bias=False, kernel_init=_normal(f * d_model ** -0.5))
        self.o = Dense(d_model, use_bias=False, kernel_init=_normal(f * inner ** -0.5))
        self.dropout = Dropout(self.dropout_rate)
        if self.has_relative_attention_bias:
            self.relative_attention_bias = Embedding(self.num_buckets, num_heads,
                                                     embeddings_init=_normal(f * d_model ** -0.5))

    def build(self, input_shape) -> None:
        shape = main_input_shape(input_shape)
        inner = shape[:-1] + (self.num_heads * self.d_kv,)
        pairs = [(self.q, shape), (self.k, shape), (self.v, shape), (self.o, inner)]
        if self.has_relative_attention_bias:
            pairs.append((self.relative_attention_bias, (1, 1)))
        build_children(pairs)
        self.built = True

    def position_bias(self, query_length: int, key_length: int, offset: int = 0) -> Tensor:
        """The (1, heads, Tq, Tk) bias for queries at positions offset .. offset + Tq - 1 and
        keys at 0 .. Tk - 1."""
        query = np.arange(offset, offset + query_length)[:, None]
        key = np.arange(key_length)[None, :]
        buckets = relative_position_bucket(key - query, not self.is_decoder, self.num_buckets, self.max_distance)
        values = self.relative_attention_bias(buckets)                 # (Tq, Tk, heads)
        return F.reshape(F.transpose(values, 2, 0, 1), 1, self.num_heads, query_length, key_length)

    def _heads(self, x: Tensor) -> Tensor:
        n, t = x.shape[0], x.shape[1]
        return F.transpose(F.reshape(x, n, t, self.num_heads, self.d_kv), 0, 2, 1, 3)

    def _keys_values(self, source: Tensor) -> tuple[Tensor, Tensor]:
        return self._heads(self.k(source)), self._heads(self.v(source))

    def forward(self, x, bias, key_value=None, cache: dict | None = None, cache_key: str = "self") -> Tensor:
        """``x`` (N, Tq, d_model); ``bias`` broadcasting to (N, heads, Tq, Tk) (position bias
        plus masks); ``key_value`` the encoder output for cross-attention (None: self).
        ``cache`` (a dict) keeps the keys and values: self-attention appends the new steps,
        cross-attention computes them once."""
        x = as_tensor(x)
        q = self._heads(self.q(x))
        k, v = cached_keys_values(self._keys_values, x, key_value, cache, cache_key)
        scores = F.add(F.matmul(q, F.transpose(k, 0, 1, 3, 2)), bias)
        weights = self.dropout(F.softmax(scores, axis=-1))
        out = F.transpose(F.matmul(weights, v), 0, 2, 1, 3)
        return self.o(F.reshape(out, x.shape[0], x.shape[1], self.num_heads * self.d_kv))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {"d_model": self.d_model, "d_kv": self.d_kv, "num_heads": self.num_heads,
                "has_relative_attention_bias": self.has_relative_attention_bias, "is_decoder": self.is_decoder,
                "relative_attention_num_buckets": self.num_buckets,
                "relative_attention_max_distance": self.max_distance, "dropout_rate": self.dropout_rate,
                "initializer_factor": self.initializer_factor, "name": self.name}


@register_layer
class T5DenseFF(Module):
    """T5's ``DenseReluDense``: wo(dropout(relu(wi(x)))) ('relu'), or
    wo(dropout(gelu_tanh(wi_0(x)) * wi_1(x))) ('gated-gelu'); no biases."""

    def __init__(self, d_model: int, d_ff: int, feed_forward_proj: str = "relu", dropout_rate: float = 0.0,
                 initializer_factor: float = 1.0, name: str | None = None):
        super().__init__(name=name)
        if feed_forward_proj not in ("relu", "gated-gelu"):
            raise ValueError(f"T5DenseFF: feed_forward_proj must be 'relu' or 'gated-gelu', got {feed_forward_proj!r}")
        self.d_model = positive_int(d_model, "T5DenseFF: d_model")
        self.d_ff = positive_int(d_ff, "T5DenseFF: d_ff")
        self.feed_forward_proj = feed_forward_proj
        self.dropout_rate = float(dropout_rate)
        self.initializer_factor = float(initializer_factor)
        f = self.initializer_factor
        if feed_forward_proj == "relu":
            self.wi = Dense(d_ff, use_bias=False, kernel_init=_normal(f * d_model ** -0.5))
        else:
            self.wi_0 = Dense(d_ff, use_bias=False, kernel_init=_normal(f * d_model ** -0.5))
            self.wi_1 = Dense(d_ff, use_bias=False, kernel_init=_normal(f * d_model ** -0.5))
        self.wo = Dense(d_model, use_bias=False, kernel_init=_normal(f * d_ff ** -0.5))
        self.dropout = Dropout(self.dropout_rate)

    @property
    def gated(self) -> bool:
        return self.feed_forward_proj == "gated-gelu"

    def build(self, input_shape) -> None:
        shape = tuple(input_shape)
        hidden = shape[:-1] + (self.d_ff,)
        inputs = [self.wi_0, self.wi_1] if self.gated else [self.wi]
        build_children([*((layer, shape) for layer in inputs), (self.wo, hidden)])
        self.built = True

    def forward(self, x) -> Tensor:
        if self.gated:
            hidden = F.mul(F.gelu(self.wi_0(x), approximate="tanh"), self.wi_1(x))
        else:
            hidden = F.relu(self.wi(x))
        return self.wo(self.dropout(hidden))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {"d_model": self.d_model, "d_ff": self.d_ff, "feed_forward_proj": self.feed_forward_proj,
                "dropout_rate": self.dropout_rate, "initializer_factor": self.initializer_factor,
                "name": self.name}


class _Residual(Module):
    """One of HF's ``T5LayerSelfAttention`` / ``T5LayerCrossAttention`` / ``T5LayerFF``:
    x + dropout(sub(layer_norm(x), ...)); the sub-layer under HF's name."""

    def __init__(self, sub_name: str, sub: Module, d_model: int, eps: float, rate: float):
        super().__init__()
        self.sub_name = sub_name
        setattr(self, sub_name, sub)
        self.layer_norm = RMSNorm(d_model, eps=eps)
        self.dropout = Dropout(rate)

    def build(self, input_shape) -> None:
        shape = main_input_shape(input_shape)
        build_children([(self.layer_norm, shape), (getattr(self, self.sub_name), shape)])
        self.built = True

    def forward(self, x, *args, **kwargs) -> Tensor:
        x = as_tensor(x)
        return F.add(x, self.dropout(getattr(self, self.sub_name)(self.layer_norm(x), *args, **kwargs)))


@register_layer
class T5Block(Module):
    """One T5 block: ``layer`` = [self-attention, (cross-attention,) feed-forward], each a
    pre-norm residual sub-layer (HF's ``T5Block``)."""

    def __init__(self, d_model: int, d_kv: int, d_ff: int, num_heads: int, is_decoder: bool = False,
                 has_relative_attention_bias: bool = False, relative_attention_num_buckets: int = 32,
                 relative_attention_max_distance: int = 128, dropout_rate: float = 0.1,
                 layer_norm_epsilon: float = 1e-6, feed_forward_proj: str = "relu", initializer_factor: float = 1.0,
                 name: str | None = None):
        super().__init__(name=name)
        self.config = {"d_model": d_model, "d_kv": d_kv, "d_ff": d_ff, "num_heads": num_heads,
                       "is_decoder": bool(is_decoder), "has_relative_attention_bias": bool(has_relative_attention_bias),
                       "relative_attention_num_buckets": relative_attention_num_buckets,
                       "relative_attention_max_distance": relative_attention_max_distance,
                       "dropout_rate": float(dropout_rate), "layer_norm_epsilon": float(layer_norm_epsilon),
                       "feed_forward_proj": feed_forward_proj, "initializer_factor": float(initializer_factor)}
        self.is_decoder = bool(is_decoder)
        eps, rate = float(layer_norm_epsilon), float(dropout_rate)
        attention = {"d_model": d_model, "d_kv": d_kv, "num_heads": num_heads, "is_decoder": is_decoder,
                     "relative_attention_num_buckets": relative_attention_num_buckets,
                     "relative_attention_max_distance": relative_attention_max_distance, "dropout_rate": rate,
                     "initializer_factor": initializer_factor}
        layers = [_Residual("SelfAttention", T5Attention(has_relative_attention_bias=has_relative_attention_bias,
                                                         **attention), d_model, eps, rate)]
        if is_decoder:
            layers.append(_Residual("EncDecAttention", T5Attention(**attention), d_model, eps, rate))
        layers.append(_Residual("DenseReluDense", T5DenseFF(d_model, d_ff, feed_forward_proj, rate,
                                                            initializer_factor), d_model, eps, rate))
        self.layer = ModuleList(layers)

    def build(self, input_shape) -> None:
        build_children((sub, main_input_shape(input_shape)) for sub in self.layer)
        self.built = True

    def forward(self, x, bias, encoder_output=None, cross_bias=None, cache: dict | None = None) -> Tensor:
        x = self.layer[0](x, bias, cache=cache, cache_key="self")
        if self.is_decoder:
            x = self.layer[1](x, cross_bias, key_value=encoder_output, cache=cache, cache_key="cross")
        return self.layer[-1](x)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {**self.config, "name": self.name}


@register_layer
class T5Stack(Module):
    """The encoder or decoder of T5 (HF's ``T5Stack`` without its ``embed_tokens``, the shared
    table being passed in): ``block`` (the first with the relative bias table) and
    ``final_layer_norm``."""

    def __init__(self, num_layers: int, is_decoder: bool = False, **block_options):
        super().__init__()
        self.num_layers = positive_int(num_layers, "T5Stack: num_layers")
        self.is_decoder = bool(is_decoder)
        self.block_options = dict(block_options)
        self.block = ModuleList([T5Block(is_decoder=is_decoder, has_relative_attention_bias=i == 0, **block_options)
                                 for i in range(num_layers)])
        self.final_layer_norm = RMSNorm(block_options["d_model"], eps=block_options.get("layer_norm_epsilon", 1e-6))
        self.dropout = Dropout(block_options.get("dropout_rate", 0.1))

    def build(self, input_shape) -> None:
        shape = main_input_shape(input_shape)
        build_children([*((block, shape) for block in self.block), (self.final_layer_norm, shape)])
        self.built = True

    def forward(self, embedded, mask=None, encoder_output=None, encoder_mask=None, caches=None,
                offset: int = 0) -> Tensor:
        """``embedded`` (N, T, d_model); ``mask`` (N, T) False at padding (encoder), added
        with the causal mask in the decoder; ``caches`` one dict per block; ``offset`` the
        number of cached decoder steps."""
        x = self.dropout(as_tensor(embedded))
        t = x.shape[1]
        keys = offset + t
        bias = self.block[0].layer[0].SelfAttention.position_bias(t, keys, offset)
        additive = np.zeros((1, 1, t, keys), dtype=x.dtype)
        if self.is_decoder:
            additive = additive + np.where(np.arange(keys)[None, :] > np.arange(offset, keys)[:, None], _NEG, 0.0)
        if mask is not None:
            additive = additive + np.where(_ids(mask).astype(bool), 0.0, _NEG)[:, None, None, :]
        bias = F.add(bias, Tensor(additive.astype(x.dtype)))
        cross_bias = None
        if self.is_decoder:
            n_keys = encoder_output.shape[1]
            cross = np.zeros((1, 1, 1, n_keys)) if encoder_mask is None else \
                np.where(_ids(encoder_mask).astype(bool), 0.0, _NEG)[:, None, None, :]
            cross_bias = Tensor(cross.astype(x.dtype))
        for i, block in enumerate(self.block):
            cache = None if caches is None else caches[i]
            x = block(x, bias, encoder_output, cross_bias, cache=cache)
        return self.dropout(self.final_layer_norm(x))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


@register_layer
class T5(Module):
    """T5 encoder-decoder with a language-model head (HF's ``T5ForConditionalGeneration``).

    ``model(input_ids, decoder_input_ids, attention_mask=None)`` -> scores (N, Ty, vocab);
    ``model.loss(input_ids, labels, attention_mask=None)`` the mean cross-entropy over labels
    that are not -100, the decoder fed the labels shifted right (start token
    ``decoder_start_token_id`` = ``pad_token_id`` = 0, -100 read as padding), as HF.
    Sub-modules carry HF's names: ``shared``, ``encoder``, ``decoder``, ``lm_head`` (only
    when ``tie_word_embeddings`` is False). The arguments are ``T5Config``'s, with its
    defaults (t5-small's sizes); weights start as HF initializes them."""

    def __init__(self, vocab_size: int = 32128, d_model: int = 512, d_kv: int = 64, d_ff: int = 2048,
                 num_layers: int = 6, num_decoder_layers: int | None = None, num_heads: int = 8,
                 relative_attention_num_buckets: int = 32, relative_attention_max_distance: int = 128,
                 dropout_rate: float = 0.1, layer_norm_epsilon: float = 1e-6, initializer_factor: float = 1.0,
                 feed_forward_proj: str = "relu", tie_word_embeddings: bool = True, pad_token_id: int = 0,
                 eos_token_id: int = 1, decoder_start_token_id: int = 0, name: str | None = None):
        super().__init__(name=name)
        self.vocab_size = positive_int(vocab_size, "T5: vocab_size")
        self.d_model = positive_int(d_model, "T5: d_model")
        self.num_layers = positive_int(num_layers, "T5: num_layers")
        self.num_decoder_layers = positive_int(num_layers if num_decoder_layers is None else num_decoder_layers,
                                               "T5: num_decoder_layers")
        self.tie_word_embeddings = bool(tie_word_embeddings)
        self.pad_token_id, self.eos_token_id = int(pad_token_id), int(eos_token_id)
        self.decoder_start_token_id = int(decoder_start_token_id)
        self.dropout_rate = checked_rate(dropout_rate, "T5")
        self.block_options = {"d_model": d_model, "d_kv": positive_int(d_kv, "T5: d_kv"),
                              "d_ff": positive_int(d_ff, "T5: d_ff"),
                              "num_heads": positive_int(num_heads, "T5: num_heads"),
                              "relative_attention_num_buckets": relative_attention_num_buckets,
                              "relative_attention_max_distance": relative_attention_max_distance,
                              "dropout_rate": self.dropout_rate, "layer_norm_epsilon": float(layer_norm_epsilon),
                              "feed_forward_proj": feed_forward_proj, "initializer_factor": float(initializer_factor)}
        self.shared = Embedding(vocab_size, d_model, embeddings_init=_normal(float(initializer_factor)))
        self.encoder = T5Stack(self.num_layers, is_decoder=False, **self.block_options)
        self.decoder = T5Stack(self.num_decoder_layers, is_decoder=True, **self.block_options)
        if not self.tie_word_embeddings:
            self.lm_head = Dense(vocab_size, use_bias=False,
                                 kernel_init=_normal(float(initializer_factor) * d_model ** -0.5))

    def build(self, input_shape) -> None:
        ids = main_input_shape(input_shape)
        if len(ids) != 2:
            raise ValueError(f"{self._label()}: expected token ids of shape (batch, time), got input shape {ids}")
        hidden = ids + (self.d_model,)
        head = () if self.tie_word_embeddings else ((self.lm_head, hidden),)
        build_children([(self.shared, ids), (self.encoder, hidden), (self.decoder, hidden), *head])
        self.built = True

    def encode(self, input_ids, attention_mask=None) -> Tensor:
        """The encoder output (N, Tx, d_model)."""
        return self.encoder(self.shared(_ids(input_ids)), mask=attention_mask)

    def decode(self, decoder_input_ids, encoder_output, attention_mask=None, caches=None, offset: int = 0,
               decoder_attention_mask=None) -> Tensor:
        """Scores (N, Ty, vocab) of the decoder fed ``decoder_input_ids`` (after ``offset``
        cached steps when ``caches``, one dict per decoder block, is given).
        ``decoder_attention_mask`` (N, offset + Ty): False at decoder inputs no query may
        attend to (padding), on top of the causal mask, as Hugging Face's."""
        if decoder_attention_mask is not None:
            expected = (np.shape(decoder_input_ids)[0], offset + np.shape(decoder_input_ids)[1])
            if np.shape(decoder_attention_mask) != expected:
                raise ValueError(f"{self._label()}: decoder_attention_mask of shape "
                                 f"{np.shape(decoder_attention_mask)} for decoder inputs "
                                 f"{np.shape(decoder_input_ids)} after {offset} cached steps; expected {expected}")
        x = self.decoder(self.shared(_ids(decoder_input_ids)), mask=decoder_attention_mask,
                         encoder_output=encoder_output, encoder_mask=attention_mask, caches=caches, offset=offset)
        if self.tie_word_embeddings:
            x = F.mul(x, self.d_model ** -0.5)
            return F.matmul(x, F.transpose(self.shared.weight, 1, 0))
        return self.lm_head(x)

    def forward(self, input_ids, decoder_input_ids, attention_mask=None, decoder_attention_mask=None) -> Tensor:
        if not self.built:
            self.build(np.shape(input_ids))
        return self.decode(decoder_input_ids, self.encode(input_ids, attention_mask), attention_mask,
                           decoder_attention_mask=decoder_attention_mask)

    def shift_right(self, labels) -> np.ndarray:
        """The decoder input for ``labels``: the start token, then the labels but the last,
        -100 replaced by the pad id."""
        labels = _ids(labels)
        shifted = np.full_like(labels, self.decoder_start_token_id)
        shifted[:, 1:] = labels[:, :-1]
        return np.where(shifted == -100, self.pad_token_id, shifted)

    def loss(self, input_ids, labels, attention_mask=None, decoder_attention_mask=None) -> Tensor:
        """Mean cross-entropy of the scores against ``labels`` (N, Ty), -100 ignored."""
        logits = self(input_ids, self.shift_right(labels), attention_mask, decoder_attention_mask)
        return F.categorical_cross_entropy(logits, _ids(labels), from_logits=True,
                                           ignore_index=-100)

    def generate(self, input_ids, max_length: int = 20, beam_width: int = 1, attention_mask=None,
                 use_cache: bool = True, do_sample: bool = False, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, seed: int | None = None, length_penalty: float = 1.0,
                 early_stopping: bool | str = False, return_scores: bool = False):
        """Decode every input (Hugging Face's ``generate``; see
        :mod:`lamina.models.t5_generation`): ids (N, <= max_length) starting with the start
        token, each row ending with ``eos_token_id`` (then padded with the pad id) unless it
        reached ``max_length``. All rows decode together; the encoder runs once; with
        ``use_cache`` each step feeds only the new tokens (cached keys and values), otherwise
        the decoder reruns the prefixes.

        * ``beam_width`` 1, ``do_sample`` False: greedy search.
        * ``do_sample``: tokens drawn from softmax(scores / ``temperature``) kept to the
          ``top_k`` likeliest and the nucleus ``top_p`` (:func:`lamina.text.sample_token`),
          row i with ``numpy.random.default_rng(seed + i)`` (None: fresh draws).
        * ``beam_width`` > 1: beam search, hypotheses ranked by log P / L^``length_penalty``
          (L: tokens generated), stopping by ``early_stopping`` (True, False or 'never'), as
          Hugging Face's defaults (1.0, False).

        ``return_scores``: also the (N,) score of each beam-search result (its ranking score)."""
        who = "T5.generate"
        max_length = positive_int(max_length, f"{who}: max_length")
        beam_width = positive_int(beam_width, f"{who}: beam_width")
        if do_sample and beam_width > 1:
            raise ValueError(f"{who}: sampling draws one sequence per row; got do_sample=True with beam_width "
                             f"{beam_width} (beam sampling is not supported)")
        if early_stopping not in (True, False, "never"):
            raise ValueError(f"{who}: early_stopping must be True, False or 'never', got {early_stopping!r}")
        if return_scores and beam_width == 1:
            raise ValueError(f"{who}: return_scores gives beam-search scores; pass beam_width > 1")
        if not temperature > 0:
            raise ValueError(f"{who}: temperature must be > 0, got {temperature!r}")
        if top_k is not None and not 1 <= top_k <= self.vocab_size:
            raise ValueError(f"{who}: top_k must lie in [1, {self.vocab_size}], got {top_k!r}")
        if top_p is not None and not 0 < top_p <= 1:
            raise ValueError(f"{who}: top_p must lie in (0, 1], got {top_p!r}")
        input_ids = _ids(input_ids)
        if input_ids.ndim != 2:
            raise ValueError(f"{who}: expected input_ids of shape (batch, time), got {input_ids.shape}")
        mask = None if attention_mask is None else _ids(attention_mask).astype(bool)
        if mask is not None and mask.shape != input_ids.shape:
            raise ValueError(f"{who}: attention_mask of shape {mask.shape} for input_ids {input_ids.shape}")
        if not self.built:
            self.build(input_ids.shape)
        return generate_from_inputs(self, input_ids, mask, max_length, beam_width, use_cache, length_penalty,
                                    early_stopping, return_scores, do_sample, temperature, top_k, top_p, seed)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.vocab_size,)

    def get_config(self) -> dict:
        options = self.block_options
        return {"vocab_size": self.vocab_size, "d_model": self.d_model, "d_kv": options["d_kv"],
                "d_ff": options["d_ff"], "num_layers": self.num_layers, "num_decoder_layers": self.num_decoder_layers,
                "num_heads": options["num_heads"],
                "relative_attention_num_buckets": options["relative_attention_num_buckets"],
                "relative_attention_max_distance": options["relative_attention_max_distance"],
                "dropout_rate": self.dropout_rate, "layer_norm_epsilon": options["layer_norm_epsilon"],
                "initializer_factor": options["initializer_factor"], "feed_forward_proj": options["feed_forward_proj"],
                "tie_word_embeddings": self.tie_word_embeddings, "pad_token_id": self.pad_token_id,
                "eos_token_id": self.eos_token_id, "decoder_start_token_id": self.decoder_start_token_id,
                "name": self.name}


def t5(config: str = "small", **options) -> T5:
    """The T5 of Hugging Face configuration ``config`` (see :data:`T5_CONFIGS`): 'small'
    (t5-small, 60,506,624 parameters), 'base' (t5-base, 222,903,552), 'v1_1_small'
    (google/t5-v1_1-small, 76,961,152), 'flan_small' (google/flan-t5-small, 76,961,152),
    'flan_base' (google/flan-t5-base, 247,577,856) or 'tiny'; ``options`` override :class:`T5`'s
    arguments. Unbuilt: ``model.build((None, 1))`` makes the weights (shape-only inside
    :func:`lamina.nn.init.meta`)."""
    if config not in T5_CONFIGS:
        raise ValueError(f"t5: config must be one of {tuple(T5_CONFIGS)}, got {config!r}")
    return T5(**{**T5_CONFIGS[config], **options})


# -- Hugging Face weights -------------------------------------------------------------------
def hf_t5_table(model: T5) -> dict[str, HFWeight]:
    """:class:`T5`'s state-dict key -> Hugging Face's weight. The names are the same; the
    ``Linear`` weights are transposed."""
    table: dict[str, HFWeight] = {}
    for key in model.state_dict():
        is_linear = key.endswith((".q.weight", ".k.weight", ".v.weight", ".o.weight", ".wi.weight", ".wi_0.weight",
                                  ".wi_1.weight", ".wo.weight")) or key == "lm_head.weight"
        table[key] = linear(key) if is_linear else copied(key)
    return table


def _ignored_keys(model: T5):
    def ignored(key: str) -> bool:
        return key in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight") or (
            model.tie_word_embeddings and key == "lm_head.weight")
    return ignored


def load_hf_t5_state_dict(model: T5, state_dict, strict: bool = True) -> None:
    """Load Hugging Face ``T5ForConditionalGeneration`` weights into ``model`` (a mapping of
    arrays or torch tensors, or safetensors files, see
    :func:`lamina.models.hf_weights.read_state_dict`). The stacks' ``embed_tokens`` copies
    of ``shared`` and, when tied, ``lm_head.weight`` are ignored. ``strict``: every weight
    present and every key used, else a KeyError listing them; a mis-shaped value raises
    :class:`lamina.ShapeError` naming the weight."""
    who = "load_hf_t5_state_dict"
    if not isinstance(model, T5):
        raise TypeError(f"{who}: expected a T5 model, got {type(model).__name__}")
    arrays: Mapping = read_state_dict(state_dict, who)
    if not model.built:
        model.build((None, 1))
    load_hf_state_dict(model, arrays, hf_t5_table(model), _ignored_keys(model), strict, who)
