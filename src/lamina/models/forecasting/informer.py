"""Informer (Zhou et al., 2021): ProbSparse self-attention, self-attention distilling and a
generative decoder that forecasts the whole horizon in one pass."""

from __future__ import annotations

import math

import numpy as np

from lamina import backend, nn
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.models.forecasting._common import check_rate, check_window, constant_tensor
from lamina.models.forecasting._embedding import CircularConv, built
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int
from lamina.nn.module import Module, as_tensor

__all__ = ["Informer", "full_attention", "informer", "prob_sparse_attention", "query_sparsity"]


def _to_numpy(x) -> np.ndarray:
    return backend.to_numpy(x.data if isinstance(x, Tensor) else x)


def _causal_scores(scores: Tensor, query_steps: np.ndarray, keys: int) -> Tensor:
    """``scores`` (..., rows, keys) with -inf where the key comes after the row's query step."""
    future = np.arange(keys) > query_steps[..., None]
    return F.where(future, float("-inf"), scores)


def full_attention(queries, keys, values, causal: bool = False) -> Tensor:
    """softmax(q k^T / sqrt(E)) v over (batch, heads, L, E) tensors (keys after the query's
    step masked when ``causal``)."""
    scores = F.mul(F.matmul(queries, F.swapaxes(keys, -1, -2)), 1.0 / math.sqrt(queries.shape[-1]))
    if causal:
        scores = _causal_scores(scores, np.arange(queries.shape[2]), keys.shape[2])
    return F.matmul(F.softmax(scores, axis=-1), values)


def query_sparsity(queries, keys, sample_index: np.ndarray) -> np.ndarray:
    """The max-mean measurement of every query on sampled keys, (batch, heads, L_Q):

        M(q_i, K) = max_j q_i k_j^T - (1 / L_K) sum_j q_i k_j^T,   j over the keys sample_index[i]

    (Informer's M-bar; sample_index (L_Q, samples) of key steps)."""
    q, k = _to_numpy(queries), _to_numpy(keys)
    sampled = np.einsum("nhle,nhlse->nhls", q, k[:, :, sample_index])
    return sampled.max(-1) - sampled.sum(-1) / k.shape[2]


def _sampled(factor: float, steps: int) -> int:
    """min(steps, ceil(factor ceil(ln steps))): the keys sampled per query, or the active queries."""
    return min(steps, int(math.ceil(factor * math.ceil(math.log(steps)))))


def prob_sparse_attention(queries, keys, values, factor: float = 5.0, causal: bool = False,
                          sample_index: np.ndarray | None = None) -> Tensor:
    """ProbSparse self-attention over (batch, heads, L, E) tensors:

        U = min(L_K, ceil(factor ceil(ln L_K))) keys sampled per query (``sample_index``
        (L_Q, U), drawn with replacement from lamina's generator when not given),
        the u = min(L_Q, ceil(factor ceil(ln L_Q))) queries of largest :func:`query_sparsity`
        attend fully: softmax(q k^T / sqrt(E)) v (causally masked when ``causal``);
        every other query takes the mean of V (the running sum of V up to its step when
        ``causal``, as the paper's code).

    With u = L_Q it is full attention. The selection is not differentiated."""
    queries, keys, values = as_tensor(queries), as_tensor(keys), as_tensor(values)
    batch, heads, length, _ = queries.shape
    source = keys.shape[2]
    if causal and source != length:
        raise ValueError(f"prob_sparse_attention: causal attention needs as many keys as queries, got "
                         f"{length} queries and {source} keys")
    samples, top = _sampled(factor, source), _sampled(factor, length)
    if sample_index is None:
        sample_index = backend.rng().integers(0, source, (length, samples))
    sparsity = query_sparsity(queries, keys, np.asarray(sample_index))
    chosen = np.argsort(-sparsity, axis=-1, kind="stable")[..., :top]                 # (batch, heads, u)
    picked = F.take_along_dim(queries, chosen[..., None], axis=2)
    scores = F.mul(F.matmul(picked, F.swapaxes(keys, -1, -2)), 1.0 / math.sqrt(queries.shape[-1]))
    if causal:
        scores = _causal_scores(scores, chosen, source)
    attended = F.matmul(F.softmax(scores, axis=-1), values)                           # (batch, heads, u, E)
    placement = np.zeros((batch, heads, length, top))
    np.put_along_axis(placement, chosen[:, :, None, :], 1.0, axis=2)
    selected = placement.sum(-1, keepdims=True)                                        # 1 on the chosen rows
    base = F.cumsum(values, axis=2) if causal else F.mean(values, axis=2, keepdims=True)
    rest = F.mul(base, constant_tensor(1.0 - selected, values.dtype))
    return F.add(rest, F.matmul(constant_tensor(placement, values.dtype), attended))


class _AttentionLayer(Module):
    """Multi-head projections around ProbSparse (``sparse``) or full attention; in evaluation a
    ``sample_seed`` (an int or a tuple of ints, or None) fixes ProbSparse's key sample."""

    def __init__(self, d_model: int, num_heads: int, factor: float, sparse: bool, causal: bool,
                 sample_seed=None, name: str | None = None):
        super().__init__(name=name)
        if d_model % num_heads:
            raise ValueError(f"Informer: d_model {d_model} is not a multiple of num_heads {num_heads}")
        self.num_heads, self.factor, self.sparse, self.causal = num_heads, factor, sparse, causal
        self.sample_seed = sample_seed
        for part in ("query", "key", "value", "out"):
            setattr(self, part, built(nn.Dense(d_model, name=part), (None, None, d_model)))

    def _heads(self, x: Tensor) -> Tensor:
        batch, length, d = x.shape
        return F.transpose(F.reshape(x, (batch, length, self.num_heads, d // self.num_heads)), (0, 2, 1, 3))

    def _sample_index(self, queries: int, keys: int) -> np.ndarray | None:
        """The fixed key sample of evaluation mode; None (a fresh draw) when training or unseeded."""
        if self.training or self.sample_seed is None:
            return None
        return np.random.default_rng(self.sample_seed).integers(0, keys, (queries, _sampled(self.factor, keys)))

    def forward(self, x, context) -> Tensor:
        q, k, v = self._heads(self.query(x)), self._heads(self.key(context)), self._heads(self.value(context))
        if self.sparse:
            y = prob_sparse_attention(q, k, v, self.factor, self.causal, self._sample_index(q.shape[2], k.shape[2]))
        else:
            y = full_attention(q, k, v, self.causal)
        batch, _, length, _ = y.shape
        return self.out(F.reshape(F.transpose(y, (0, 2, 1, 3)), (batch, length, -1)))


class _FeedForwardNorm(Module):
    """LayerNorm(x + Dense(GELU(Dense(x))))."""

    def __init__(self, d_model: int, dim_feedforward: int, dropout: float, name: str | None = None):
        super().__init__(name=name)
        self.inner = built(nn.Dense(dim_feedforward, name="inner"), (None, None, d_model))
        self.outer = built(nn.Dense(d_model, name="outer"), (None, None, dim_feedforward))
        self.norm = built(nn.LayerNorm(name="norm"), (None, None, d_model))
        self.dropout = nn.Dropout(dropout, name="dropout")

    def forward(self, x) -> Tensor:
        y = self.dropout(self.outer(self.dropout(F.gelu(self.inner(x)))))
        return self.norm(F.add(x, y))


class _EncoderLayer(Module):
    def __init__(self, d_model, num_heads, dim_feedforward, factor, dropout, sample_seed=None, name=None):
        super().__init__(name=name)
        self.attention = _AttentionLayer(d_model, num_heads, factor, sparse=True, causal=False,
                                         sample_seed=sample_seed, name="attention")
        self.norm = built(nn.LayerNorm(name="norm"), (None, None, d_model))
        self.feed_forward = _FeedForwardNorm(d_model, dim_feedforward, dropout, name="feed_forward")
        self.dropout = nn.Dropout(dropout, name="dropout")

    def forward(self, x) -> Tensor:
        return self.feed_forward(self.norm(F.add(x, self.dropout(self.attention(x, x)))))


class _Distilling(Module):
    """Self-attention distilling: MaxPool(ELU(BatchNorm(Conv1d_circular(x)))), kernel 3, pooling
    stride 2 (padding 1): L -> ceil(L / 2) steps."""

    def __init__(self, d_model: int, name: str | None = None):
        super().__init__(name=name)
        self.conv = CircularConv(d_model, d_model, name="conv")
        self.norm = built(nn.BatchNorm(name="norm"), (None, None, d_model))

    def forward(self, x) -> Tensor:
        return F.max_pool1d(F.elu(self.norm(self.conv(x))), 3, 2, padding=1)


class _DecoderLayer(Module):
    def __init__(self, d_model, num_heads, dim_feedforward, factor, dropout, sample_seed=None, name=None):
        super().__init__(name=name)
        self.self_attention = _AttentionLayer(d_model, num_heads, factor, sparse=True, causal=True,
                                              sample_seed=sample_seed, name="self_attention")
        self.cross_attention = _AttentionLayer(d_model, num_heads, factor, sparse=False, causal=False,
                                               name="cross_attention")
        self.norm1 = built(nn.LayerNorm(name="norm1"), (None, None, d_model))
        self.norm2 = built(nn.LayerNorm(name="norm2"), (None, None, d_model))
        self.feed_forward = _FeedForwardNorm(d_model, dim_feedforward, dropout, name="feed_forward")
        self.dropout = nn.Dropout(dropout, name="dropout")

    def forward(self, x, memory) -> Tensor:
        x = self.norm1(F.add(x, self.dropout(self.self_attention(x, x))))
        x = self.norm2(F.add(x, self.dropout(self.cross_attention(x, memory))))
        return self.feed_forward(x)


def _sinusoid_positions(length: int, d_model: int) -> np.ndarray:
    """PE(t, 2i) = sin(t / 10000^(2i/d)), PE(t, 2i + 1) = cos(t / 10000^(2i/d))."""
    angles = np.arange(length)[:, None] * np.exp(-math.log(10000.0) * np.arange(0, d_model, 2) / d_model)
    table = np.zeros((length, d_model))
    table[:, 0::2], table[:, 1::2] = np.sin(angles), np.cos(angles[:, : d_model // 2])
    return table


@register_with_arguments
class Informer(Module):
    """Informer: (batch, input_length, channels) -> (batch, horizon, channels).

        memory = Encoder(Embed(x)):  [ProbSparse self-attention layer, distilling] x (layers - 1),
                                     a last attention layer, LayerNorm
        decoder input = [x of the last label_length steps (start tokens); zeros (horizon)]
        h = Decoder(Embed(decoder input), memory): causal ProbSparse self-attention, full
            cross-attention, feed-forward (post-norm)
        y = Dense(LayerNorm(h)) of the last horizon steps

    Embed = circular convolution of kernel 3 (token embedding) + sinusoidal positions, then
    dropout. ``factor`` is c of the c ln L sampled keys and active queries; without
    ``distil`` the encoder keeps its length. Without time-stamp features, and the decoder's
    self-attention output is not "mixed" (the reshape quirk of the paper's code). In training
    the ProbSparse layers draw their sampled keys from lamina's generator on every call; in
    evaluation each layer uses one fixed sample drawn from ``sample_seed`` (and its place in
    the model), so the same window always gives the same forecast. ``sample_seed=None`` draws
    in evaluation too, as the paper's code does."""

    def __init__(self, input_length: int, horizon: int, channels: int = 1, label_length: int | None = None,
                 d_model: int = 64, num_heads: int = 4, encoder_layers: int = 2, decoder_layers: int = 1,
                 dim_feedforward: int = 128, factor: float = 5.0, distil: bool = True, dropout: float = 0.05,
                 sample_seed: int | None = 0, name: str | None = None):
        super().__init__(name=name)
        self.input_length = positive_int(input_length, "Informer: input_length")
        self.horizon = positive_int(horizon, "Informer: horizon")
        self.channels = positive_int(channels, "Informer: channels")
        self.label_length = self.input_length // 2 if label_length is None else label_length
        if isinstance(self.label_length, bool) or not isinstance(self.label_length, int) or \
                not 0 <= self.label_length <= self.input_length:
            raise ValueError(f"Informer: label_length must be an int in [0, {input_length}], got {label_length!r}")
        if not factor > 0:
            raise ValueError(f"Informer: factor must be positive, got {factor!r}")
        self.d_model = d_model = positive_int(d_model, "Informer: d_model")
        num_heads = positive_int(num_heads, "Informer: num_heads")
        dim_feedforward = positive_int(dim_feedforward, "Informer: dim_feedforward")
        encoder_layers = positive_int(encoder_layers, "Informer: encoder_layers")
        rate = check_rate(dropout, "Informer: dropout")
        if sample_seed is not None and (isinstance(sample_seed, bool) or not isinstance(sample_seed, int)
                                        or sample_seed < 0):
            raise ValueError(f"Informer: sample_seed must be a non-negative int or None, got {sample_seed!r}")
        self.sample_seed = sample_seed
        decoder_layers = positive_int(decoder_layers, "Informer: decoder_layers")

        def layer_seed(place: int):
            return None if sample_seed is None else (sample_seed, place)
        self.encoder_embedding = CircularConv(self.channels, d_model, name="encoder_embedding")
        self.decoder_embedding = CircularConv(self.channels, d_model, name="decoder_embedding")
        self.dropout = nn.Dropout(rate, name="dropout")
        self.encoder = nn.ModuleList([_EncoderLayer(d_model, num_heads, dim_feedforward, factor, rate, layer_seed(i))
                                      for i in range(encoder_layers)])
        self.distilling = nn.ModuleList([_Distilling(d_model) for _ in range(encoder_layers - 1)] if distil else [])
        self.encoder_norm = built(nn.LayerNorm(name="encoder_norm"), (None, None, d_model))
        self.decoder = nn.ModuleList([_DecoderLayer(d_model, num_heads, dim_feedforward, factor, rate,
                                                    layer_seed(encoder_layers + i))
                                      for i in range(decoder_layers)])
        self.decoder_norm = built(nn.LayerNorm(name="decoder_norm"), (None, None, d_model))
        self.projection = built(nn.Dense(self.channels, name="projection"), (None, None, d_model))
        self.built = True

    def _embed(self, embedding: Module, x: Tensor) -> Tensor:
        positions = constant_tensor(_sinusoid_positions(x.shape[1], self.d_model), x.dtype)
        return self.dropout(F.add(embedding(x), positions))

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        check_window(self, x, self.input_length, self.channels)
        memory = self._embed(self.encoder_embedding, x)
        for i, layer in enumerate(self.encoder):
            memory = layer(memory)
            if i < len(self.distilling):
                memory = self.distilling[i](memory)
        memory = self.encoder_norm(memory)
        zeros = constant_tensor(np.zeros((x.shape[0], self.horizon, self.channels)), x.dtype)
        h = self._embed(self.decoder_embedding, F.concat([x[:, self.input_length - self.label_length:], zeros], axis=1))
        for layer in self.decoder:
            h = layer(h, memory)
        return self.projection(self.decoder_norm(h))[:, -self.horizon:]


def informer(input_length: int = 96, horizon: int = 24, channels: int = 1, **options) -> Informer:
    """An :class:`Informer` forecaster (defaults: d_model 64, 4 heads, 2 distilled encoder layers, factor 5)."""
    return Informer(input_length, horizon, channels, **options)
