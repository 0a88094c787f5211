"""The layers of Whisper (:mod:`lamina.models.whisper`, whose docstring gives the model's
formulas), with Hugging Face's names so that its weights load: :class:`WhisperAttention`
(heads, no key bias, the key/value cache of generation), :class:`WhisperEncoderLayer` and
:class:`WhisperDecoderLayer` (pre-norm, GELU feed-forward), :class:`WhisperEncoder` (two
convolutions, fixed sinusoidal positions, the layers) and :class:`WhisperDecoder` (token and
learned position embeddings, causal layers with cross-attention), and the container
:class:`WhisperModel` that holds the two.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.encoder_decoder_cache import HeadProjections, cached_keys_values
from lamina.models.hf_weights import build_children, main_input_shape
from lamina.models.whisper_features import whisper_sinusoids
from lamina.nn import init as initializers
from lamina.nn.containers import ModuleList
from lamina.nn.conv1d import Conv1D
from lamina.nn.dense import Dense
from lamina.nn.dropout import Dropout
from lamina.nn.embedding import Embedding
from lamina.nn.layer import dropout_rate as checked_rate
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module, as_tensor
from lamina.nn.sample_norm import LayerNorm

__all__ = ["WhisperAttention", "WhisperDecoder", "WhisperDecoderLayer", "WhisperEncoder", "WhisperEncoderLayer",
           "WhisperModel"]

INIT_STD = 0.02
"""The standard deviation of Hugging Face's normal initialization of Whisper's weights."""

_NEG = -1e9          # added to the scores of masked keys


def _normal():
    return initializers.normal(std=INIT_STD)


def _ids(x) -> np.ndarray:
    return x.numpy() if isinstance(x, Tensor) else np.asarray(x)


@register_layer
class WhisperAttention(HeadProjections):
    """Multi-head attention with Hugging Face's names: ``q_proj``, ``k_proj`` (no bias),
    ``v_proj`` and ``out_proj``, scores scaled by d_head^-0.5."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        self.embed_dim = positive_int(embed_dim, "WhisperAttention: embed_dim")
        self.num_heads = positive_int(num_heads, "WhisperAttention: num_heads")
        if embed_dim % num_heads:
            raise ValueError(f"WhisperAttention: embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.head_dim = embed_dim // num_heads
        self.dropout_rate = checked_rate(dropout, "WhisperAttention")
        self.q_proj = Dense(embed_dim, kernel_init=_normal())
        self.k_proj = Dense(embed_dim, use_bias=False, kernel_init=_normal())
        self.v_proj = Dense(embed_dim, kernel_init=_normal())
        self.out_proj = Dense(embed_dim, kernel_init=_normal())
        self.dropout = Dropout(self.dropout_rate)

    def forward(self, x, key_value=None, mask=None, cache: dict | None = None, cache_key: str = "self",
                scores_out: list | None = None) -> Tensor:
        """``x`` (N, Tq, d); ``key_value`` the encoder output for cross-attention (None: self);
        ``mask`` an additive array broadcasting to (N, heads, Tq, Tk). ``cache`` (a dict)
        keeps the keys and values: self-attention appends the new steps, cross-attention
        computes them once. ``scores_out`` (a list) receives the scores q k^T / sqrt(d_head)
        (N, heads, Tq, Tk) before the mask and softmax, as a NumPy array."""
        x = as_tensor(x)
        q = self._heads(F.mul(self.q_proj(x), self.head_dim ** -0.5))
        k, v = cached_keys_values(self._keys_values, x, key_value, cache, cache_key)
        scores = F.matmul(q, F.transpose(k, 0, 1, 3, 2))
        if scores_out is not None:
            scores_out.append(scores.numpy())
        if mask is not None:
            scores = F.add(scores, Tensor(np.asarray(mask, dtype=scores.dtype)))
        weights = self.dropout(F.softmax(scores, axis=-1))
        out = F.transpose(F.matmul(weights, v), 0, 2, 1, 3)
        return self.out_proj(F.reshape(out, x.shape[0], x.shape[1], self.embed_dim))

    def compute_output_shape(self, input_shape):
        return main_input_shape(input_shape)

    def get_config(self) -> dict:
        return {"embed_dim": self.embed_dim, "num_heads": self.num_heads, "dropout": self.dropout_rate,
                "name": self.name}


class _FeedForward(Module):
    """The GELU feed-forward half of a layer, HF's ``fc1`` and ``fc2`` held by the layer."""

    def feed_forward(self, x: Tensor) -> Tensor:
        hidden = self.activation_drop(F.gelu(self.fc1(self.final_layer_norm(x))))
        return F.add(x, self.drop(self.fc2(hidden)))


@register_layer
class WhisperEncoderLayer(_FeedForward):
    """h + SelfAttn(LN(h)), then h + fc2(gelu(fc1(LN(h)))) (HF's ``WhisperEncoderLayer``)."""

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, dropout: float = 0.0,
                 attention_dropout: float = 0.0, activation_dropout: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        self.config = {"d_model": positive_int(d_model, "WhisperEncoderLayer: d_model"), "num_heads": num_heads,
                       "ffn_dim": positive_int(ffn_dim, "WhisperEncoderLayer: ffn_dim"), "dropout": dropout,
                       "attention_dropout": attention_dropout, "activation_dropout": activation_dropout}
        self.self_attn = WhisperAttention(d_model, num_heads, attention_dropout)
        self.self_attn_layer_norm = LayerNorm(-1, eps=1e-5)
        self.fc1 = Dense(ffn_dim, kernel_init=_normal())
        self.fc2 = Dense(d_model, kernel_init=_normal())
        self.final_layer_norm = LayerNorm(-1, eps=1e-5)
        self.drop = Dropout(checked_rate(dropout, "WhisperEncoderLayer"))
        self.activation_drop = Dropout(checked_rate(activation_dropout, "WhisperEncoderLayer"))

    def build(self, input_shape) -> None:
        shape = main_input_shape(input_shape)
        hidden = shape[:-1] + (self.config["ffn_dim"],)
        build_children([(self.self_attn, shape), (self.self_attn_layer_norm, shape), (self.fc1, shape),
                        (self.fc2, hidden), (self.final_layer_norm, shape)])
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        x = F.add(x, self.drop(self.self_attn(self.self_attn_layer_norm(x))))
        return self.feed_forward(x)

    def compute_output_shape(self, input_shape):
        return main_input_shape(input_shape)

    def get_config(self) -> dict:
        return {**self.config, "name": self.name}


@register_layer
class WhisperDecoderLayer(_FeedForward):
    """g + CausalSelfAttn(LN(g)), g + CrossAttn(LN(g), enc), g + fc2(gelu(fc1(LN(g))))
    (HF's ``WhisperDecoderLayer``)."""

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, dropout: float = 0.0,
                 attention_dropout: float = 0.0, activation_dropout: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        self.config = {"d_model": positive_int(d_model, "WhisperDecoderLayer: d_model"), "num_heads": num_heads,
                       "ffn_dim": positive_int(ffn_dim, "WhisperDecoderLayer: ffn_dim"), "dropout": dropout,
                       "attention_dropout": attention_dropout, "activation_dropout": activation_dropout}
        self.self_attn = WhisperAttention(d_model, num_heads, attention_dropout)
        self.self_attn_layer_norm = LayerNorm(-1, eps=1e-5)
        self.encoder_attn = WhisperAttention(d_model, num_heads, attention_dropout)
        self.encoder_attn_layer_norm = LayerNorm(-1, eps=1e-5)
        self.fc1 = Dense(ffn_dim, kernel_init=_normal())
        self.fc2 = Dense(d_model, kernel_init=_normal())
        self.final_layer_norm = LayerNorm(-1, eps=1e-5)
        self.drop = Dropout(checked_rate(dropout, "WhisperDecoderLayer"))
        self.activation_drop = Dropout(checked_rate(activation_dropout, "WhisperDecoderLayer"))

    def build(self, input_shape) -> None:
        shape = main_input_shape(input_shape)
        hidden = shape[:-1] + (self.config["ffn_dim"],)
        build_children([(self.self_attn, shape), (self.self_attn_layer_norm, shape), (self.encoder_attn, shape),
                        (self.encoder_attn_layer_norm, shape), (self.fc1, shape), (self.fc2, hidden),
                        (self.final_layer_norm, shape)])
        self.built = True

    def forward(self, x, encoder_output, causal_mask=None, cache: dict | None = None,
                cross_scores: list | None = None) -> Tensor:
        """``cross_scores`` (a list) receives the cross-attention scores (see :class:`WhisperAttention`)."""
        x = as_tensor(x)
        x = F.add(x, self.drop(self.self_attn(self.self_attn_layer_norm(x), mask=causal_mask, cache=cache)))
        x = F.add(x, self.drop(self.encoder_attn(self.encoder_attn_layer_norm(x), encoder_output, cache=cache,
                                                 cache_key="cross", scores_out=cross_scores)))
        return self.feed_forward(x)

    def compute_output_shape(self, input_shape):
        return main_input_shape(input_shape)

    def get_config(self) -> dict:
        return {**self.config, "name": self.name}


class _FixedPositions(Module):
    """The encoder's ``embed_positions``: a frozen ``weight`` (length, channels) of
    :func:`whisper_sinusoids` (a parameter, as Hugging Face counts and saves it)."""

    def __init__(self, length: int, channels: int):
        super().__init__()
        self.length, self.channels = length, channels

    def build(self, input_shape) -> None:
        shape = (self.length, self.channels)
        dtype = backend.get_default_dtype()
        table = initializers.meta_array(shape, dtype) if initializers.is_meta() else \
            whisper_sinusoids(*shape, dtype=dtype)
        self.add_parameter("weight", table, trainable=False)
        self.built = True


@register_layer
class WhisperEncoder(Module):
    """Log-mel features (N, num_mel_bins, frames), frames <= 2 ``max_source_positions``, ->
    encoder states (N, ceil(frames / 2), d_model). Sub-modules ``conv1``, ``conv2``,
    ``embed_positions``, ``layers``, ``layer_norm``."""

    def __init__(self, num_mel_bins: int, d_model: int, num_layers: int, num_heads: int, ffn_dim: int,
                 max_source_positions: int, dropout: float = 0.0, attention_dropout: float = 0.0,
                 activation_dropout: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        self.num_mel_bins = positive_int(num_mel_bins, "WhisperEncoder: num_mel_bins")
        self.d_model = positive_int(d_model, "WhisperEncoder: d_model")
        self.max_source_positions = positive_int(max_source_positions, "WhisperEncoder: max_source_positions")
        self.conv1 = Conv1D(d_model, 3, padding=1, kernel_init=_normal())
        self.conv2 = Conv1D(d_model, 3, stride=2, padding=1, kernel_init=_normal())
        self.embed_positions = _FixedPositions(self.max_source_positions, d_model)
        self.layers = ModuleList([WhisperEncoderLayer(d_model, num_heads, ffn_dim, dropout, attention_dropout,
                                                      activation_dropout) for _ in range(num_layers)])
        self.layer_norm = LayerNorm(-1, eps=1e-5)
        self.drop = Dropout(checked_rate(dropout, "WhisperEncoder"))

    def build(self, input_shape) -> None:
        batch = main_input_shape(input_shape)[:1] or (None,)
        frames = (*batch, 2 * self.max_source_positions, self.num_mel_bins)
        hidden = (*batch, self.max_source_positions, self.d_model)
        build_children([(self.conv1, frames), (self.conv2, frames[:-1] + (self.d_model,)), (self.embed_positions, None),
                        *((layer, hidden) for layer in self.layers), (self.layer_norm, hidden)])
        self.built = True

    def forward(self, input_features) -> Tensor:
        x = as_tensor(input_features)
        limit = 2 * self.max_source_positions
        if x.ndim != 3 or x.shape[1] != self.num_mel_bins or x.shape[2] > limit:
            raise ShapeError(f"{self._label()}: expected log-mel features (batch, {self.num_mel_bins}, frames) with "
                             f"at most {limit} frames (2 max_source_positions), got shape {tuple(x.shape)}")
        x = F.gelu(self.conv1(F.transpose(x, 0, 2, 1)))
        x = F.gelu(self.conv2(x))
        x = self.drop(F.add(x, F.index_select(self.embed_positions.weight, 0, np.arange(x.shape[1]))))
        for layer in self.layers:
            x = layer(x)
        return self.layer_norm(x)

    def compute_output_shape(self, input_shape):
        shape = main_input_shape(input_shape)
        return (shape[0], (shape[2] + 1) // 2, self.d_model)


@register_layer
class WhisperDecoder(Module):
    """Token ids (N, U) and encoder states -> decoder states (N, U, d_model). Sub-modules
    ``embed_tokens``, ``embed_positions`` (learned, ``max_target_positions`` rows), ``layers``,
    ``layer_norm``."""

    def __init__(self, vocab_size: int, d_model: int, num_layers: int, num_heads: int, ffn_dim: int,
                 max_target_positions: int, pad_token_id: int | None = None, dropout: float = 0.0,
                 attention_dropout: float = 0.0, activation_dropout: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        self.d_model = positive_int(d_model, "WhisperDecoder: d_model")
        self.max_target_positions = positive_int(max_target_positions, "WhisperDecoder: max_target_positions")
        self.embed_tokens = Embedding(vocab_size, d_model, embeddings_init=_normal(), padding_idx=pad_token_id)
        self.embed_positions = Embedding(self.max_target_positions, d_model, embeddings_init=_normal())
        self.layers = ModuleList([WhisperDecoderLayer(d_model, num_heads, ffn_dim, dropout, attention_dropout,
                                                      activation_dropout) for _ in range(num_layers)])
        self.layer_norm = LayerNorm(-1, eps=1e-5)
        self.drop = Dropout(checked_rate(dropout, "WhisperDecoder"))

    def build(self, input_shape) -> None:
        ids = main_input_shape(input_shape)[:2] or (None, 1)
        hidden = (*ids, self.d_model)
        build_children([(self.embed_tokens, ids), (self.embed_positions, ids),
                        *((layer, hidden) for layer in self.layers), (self.layer_norm, hidden)])
        self.built = True

    def forward(self, input_ids, encoder_output, caches=None, offset: int = 0,
                cross_attention_scores: list | None = None) -> Tensor:
        """``caches``: one dict per layer (see :class:`WhisperAttention`); ``offset`` the number
        of tokens already cached; ``cross_attention_scores`` (a list) receives each layer's
        cross-attention scores (N, heads, U, encoder positions) before the softmax."""
        ids = _ids(input_ids)
        t = ids.shape[1]
        if offset + t > self.max_target_positions:
            raise ValueError(f"{self._label()}: {offset + t} tokens exceed max_target_positions "
                             f"{self.max_target_positions}")
        x = F.add(self.embed_tokens(ids), self.embed_positions(np.arange(offset, offset + t)))
        x = self.drop(x)
        keys = offset + t
        causal = np.where(np.arange(keys)[None, :] > np.arange(offset, keys)[:, None], _NEG, 0.0)
        for i, layer in enumerate(self.layers):
            x = layer(x, encoder_output, causal, cache=None if caches is None else caches[i],
                      cross_scores=cross_attention_scores)
        return self.layer_norm(x)

    def compute_output_shape(self, input_shape):
        return main_input_shape(input_shape)[:2] + (self.d_model,)


class WhisperModel(Module):
    """The ``encoder`` and ``decoder`` (HF's ``WhisperModel``, the ``model`` of :class:`Whisper`)."""

    def __init__(self, encoder: WhisperEncoder, decoder: WhisperDecoder):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def build(self, input_shape) -> None:
        build_children([(self.encoder, input_shape), (self.decoder, None)])
        self.built = True
