"""T5's layers (Raffel et al. 2020) in Hugging Face's names: the relative position buckets
(:func:`relative_position_bucket`), the attention without 1/sqrt(d_kv) scaling and with the
learned relative bias (:class:`T5Attention`), the feed-forward ``DenseReluDense``
(:class:`T5DenseFF`, plain or gated), the pre-norm residual sub-layer, the block
(:class:`T5Block`) and the encoder or decoder stack (:class:`T5Stack`). The formulas are in
:mod:`lamina.models.t5`, which builds the model from these.
"""

from __future__ import annotations

import math

import numpy as np

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.models.encoder_decoder_cache import cached_keys_values
from lamina.models.hf_weights import build_children, main_input_shape
from lamina.nn import init as initializers
from lamina.nn.containers import ModuleList
from lamina.nn.dense import Dense
from lamina.nn.dropout import Dropout
from lamina.nn.embedding import Embedding
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module, as_tensor
from lamina.nn.rms_norm import RMSNorm

__all__ = ["T5Attention", "T5Block", "T5DenseFF", "T5Stack", "relative_position_bucket"]

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
