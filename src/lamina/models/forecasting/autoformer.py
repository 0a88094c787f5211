"""Autoformer (Wu et al., 2021): series decomposition blocks and Auto-Correlation in an
encoder-decoder that separates the seasonal part from the trend step by step."""

from __future__ import annotations

import math

import numpy as np

from lamina import fft, nn
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.models.forecasting._common import check_rate, check_window, constant_tensor
from lamina.models.forecasting._embedding import CircularConv, built
from lamina.models.forecasting.dlinear import moving_average_matrix
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int
from lamina.nn.module import Module, as_tensor

__all__ = ["Autoformer", "auto_correlation", "autoformer", "series_decomposition", "time_delay_correlation"]


def series_decomposition(x, kernel_size: int) -> tuple[Tensor, Tensor]:
    """(seasonal, trend) of series x (batch, length, features), both of x's shape:

        trend = AvgPool(Padding(x)),   seasonal = x - trend

    the centred moving average of ``kernel_size`` (odd) steps, the series padded at each end by
    (kernel_size - 1) / 2 copies of its first and last value (Autoformer's series_decomp)."""
    x = as_tensor(x)
    if kernel_size % 2 == 0:
        raise ValueError(f"series_decomposition: kernel_size must be odd (a centred moving average), "
                         f"got {kernel_size}")
    trend = F.matmul(constant_tensor(moving_average_matrix(x.shape[1], kernel_size), x.dtype), x)
    return F.sub(x, trend), trend


def time_delay_correlation(queries, keys) -> Tensor:
    """The autocorrelation of every feature by the Wiener-Khinchin theorem, (batch, L, d):

        R(tau) = sum_t q_{(t + tau) mod L} k_t = irfft(rfft(q) conj(rfft(k)))(tau)

    with q, k (batch, L, d) along axis 1."""
    length = queries.shape[1]
    spectrum = fft.mul(fft.rfft(queries, dim=1), fft.conj(fft.rfft(keys, dim=1)))
    return fft.irfft(spectrum, n=length, dim=1)


def auto_correlation(queries, keys, values, factor: float = 1.0) -> Tensor:
    """Auto-Correlation with time-delay aggregation, (batch, L, d) queries -> (batch, L, d):

        R = :func:`time_delay_correlation` (q, k) averaged over the d features   (batch, L)
        tau_1 .. tau_k = argTopk(R),   k = max(1, floor(factor ln L))
        w = softmax(R(tau_1), .., R(tau_k)),   y_t = sum_i w_i v_{(t + tau_i) mod L}

    each series taking its own delays (the paper's inference form). Keys and values longer than
    the queries are cut to L steps, shorter ones padded with zeros."""
    queries, keys, values = as_tensor(queries), as_tensor(keys), as_tensor(values)
    length, source = queries.shape[1], keys.shape[1]
    if source < length:
        padding = constant_tensor(np.zeros((keys.shape[0], length - source, keys.shape[2])), keys.dtype)
        keys, values = F.concat([keys, padding], axis=1), F.concat([values, padding], axis=1)
    else:
        keys, values = keys[:, :length], values[:, :length]
    mean_correlation = F.mean(time_delay_correlation(queries, keys), axis=2)
    top = max(1, int(factor * math.log(length)))
    weights, delays = F.topk(mean_correlation, top, axis=-1)
    delays = np.asarray(delays.numpy() if isinstance(delays, Tensor) else delays)
    steps = (np.arange(length)[None, None, :] + delays[:, :, None]) % length           # (batch, k, L)
    rolled = F.take_along_dim(F.expand_dims(values, 1), steps[..., None], axis=2)     # (batch, k, L, d)
    weights = F.reshape(F.softmax(weights, axis=-1), (queries.shape[0], top, 1, 1))
    return F.sum(F.mul(rolled, weights), axis=1)


class _AutoCorrelationLayer(Module):
    """Projections around :func:`auto_correlation`: out(AutoCorrelation(q(x), k(c), v(c))). The
    paper splits d_model into heads, which changes nothing: the delays come from the average
    over every head and feature and all of them share the weights."""

    def __init__(self, d_model: int, factor: float, name: str | None = None):
        super().__init__(name=name)
        self.factor = factor
        for part in ("query", "key", "value", "out"):
            setattr(self, part, built(nn.Dense(d_model, name=part), (None, None, d_model)))

    def forward(self, x, context) -> Tensor:
        return self.out(auto_correlation(self.query(x), self.key(context), self.value(context), self.factor))


class _SeriesLayerNorm(Module):
    """LayerNorm over features, then the mean over time removed (Autoformer's my_Layernorm)."""

    def __init__(self, d_model: int, name: str | None = None):
        super().__init__(name=name)
        self.norm = built(nn.LayerNorm(name="norm"), (None, None, d_model))

    def forward(self, x) -> Tensor:
        x = self.norm(x)
        return F.sub(x, F.mean(x, axis=1, keepdims=True))


class _FeedForward(Module):
    def __init__(self, d_model: int, dim_feedforward: int, dropout: float, name: str | None = None):
        super().__init__(name=name)
        self.inner = built(nn.Dense(dim_feedforward, use_bias=False, name="inner"), (None, None, d_model))
        self.outer = built(nn.Dense(d_model, use_bias=False, name="outer"), (None, None, dim_feedforward))
        self.dropout = nn.Dropout(dropout, name="dropout")

    def forward(self, x) -> Tensor:
        return self.dropout(self.outer(self.dropout(F.gelu(self.inner(x)))))


class _EncoderLayer(Module):
    """x, _ = decomp(x + AutoCorrelation(x));  x, _ = decomp(x + FeedForward(x))."""

    def __init__(self, d_model, dim_feedforward, moving_average, factor, dropout, name=None):
        super().__init__(name=name)
        self.moving_average = moving_average
        self.attention = _AutoCorrelationLayer(d_model, factor, name="attention")
        self.feed_forward = _FeedForward(d_model, dim_feedforward, dropout, name="feed_forward")
        self.dropout = nn.Dropout(dropout, name="dropout")

    def forward(self, x) -> Tensor:
        x, _ = series_decomposition(F.add(x, self.dropout(self.attention(x, x))), self.moving_average)
        x, _ = series_decomposition(F.add(x, self.feed_forward(x)), self.moving_average)
        return x


class _DecoderLayer(Module):
    """Self and cross Auto-Correlation and a feed-forward part, each followed by a decomposition
    whose trend is kept: the three trends, summed and projected to the channels by a circular
    convolution, are this layer's share of the trend."""

    def __init__(self, d_model, channels, dim_feedforward, moving_average, factor, dropout, name=None):
        super().__init__(name=name)
        self.moving_average = moving_average
        self.self_attention = _AutoCorrelationLayer(d_model, factor, name="self_attention")
        self.cross_attention = _AutoCorrelationLayer(d_model, factor, name="cross_attention")
        self.feed_forward = _FeedForward(d_model, dim_feedforward, dropout, name="feed_forward")
        self.trend_projection = CircularConv(d_model, channels, use_bias=False, name="trend_projection")
        self.dropout = nn.Dropout(dropout, name="dropout")

    def forward(self, x, memory) -> tuple[Tensor, Tensor]:
        x, trend1 = series_decomposition(F.add(x, self.dropout(self.self_attention(x, x))), self.moving_average)
        x, trend2 = series_decomposition(F.add(x, self.dropout(self.cross_attention(x, memory))),
                                         self.moving_average)
        x, trend3 = series_decomposition(F.add(x, self.feed_forward(x)), self.moving_average)
        return x, self.trend_projection(F.add(F.add(trend1, trend2), trend3))


@register_with_arguments
class Autoformer(Module):
    """Autoformer: (batch, input_length, channels) -> (batch, horizon, channels).

        seasonal, trend = decomp(x)
        seasonal_init = [seasonal of the last label_length steps; zeros (horizon)]
        trend_init    = [trend of the last label_length steps; mean of x over time (horizon)]
        memory = Encoder(Embed(x))
        s, t = Decoder(Embed(seasonal_init), memory, trend_init)
        y = (t + Projection(s)) of the last horizon steps

    Embed is a circular convolution of kernel 3 (the token embedding; no positions, as the
    paper) and dropout; encoder layers drop the trend of each decomposition, decoder layers
    add theirs to the trend (progressive decomposition). ``moving_average`` is the kernel of
    every decomposition, ``factor`` c of the k = c ln L delays. Without time-stamp features
    (the calendar embedding of the paper's data sets)."""

    def __init__(self, input_length: int, horizon: int, channels: int = 1, label_length: int | None = None,
                 d_model: int = 64, encoder_layers: int = 2, decoder_layers: int = 1, dim_feedforward: int = 128,
                 moving_average: int = 25, factor: float = 1.0, dropout: float = 0.05, name: str | None = None):
        super().__init__(name=name)
        self.input_length = positive_int(input_length, "Autoformer: input_length")
        self.horizon = positive_int(horizon, "Autoformer: horizon")
        self.channels = positive_int(channels, "Autoformer: channels")
        self.label_length = self.input_length // 2 if label_length is None else label_length
        if isinstance(self.label_length, bool) or not isinstance(self.label_length, int) or \
                not 0 <= self.label_length <= self.input_length:
            raise ValueError(f"Autoformer: label_length must be an int in [0, {input_length}], got {label_length!r}")
        self.moving_average = positive_int(moving_average, "Autoformer: moving_average")
        if self.moving_average % 2 == 0:
            raise ValueError(f"Autoformer: moving_average must be odd (a centred moving average), got {moving_average}")
        if not factor > 0:
            raise ValueError(f"Autoformer: factor must be positive, got {factor!r}")
        d_model = positive_int(d_model, "Autoformer: d_model")
        dim_feedforward = positive_int(dim_feedforward, "Autoformer: dim_feedforward")
        rate = check_rate(dropout, "Autoformer: dropout")
        self.encoder_embedding = CircularConv(self.channels, d_model, use_bias=False, name="encoder_embedding")
        self.decoder_embedding = CircularConv(self.channels, d_model, use_bias=False, name="decoder_embedding")
        self.dropout = nn.Dropout(rate, name="dropout")
        self.encoder = nn.ModuleList([_EncoderLayer(d_model, dim_feedforward, self.moving_average, factor, rate)
                                      for _ in range(positive_int(encoder_layers, "Autoformer: encoder_layers"))])
        self.encoder_norm = _SeriesLayerNorm(d_model, name="encoder_norm")
        self.decoder = nn.ModuleList([
            _DecoderLayer(d_model, self.channels, dim_feedforward, self.moving_average, factor, rate)
            for _ in range(positive_int(decoder_layers, "Autoformer: decoder_layers"))])
        self.decoder_norm = _SeriesLayerNorm(d_model, name="decoder_norm")
        self.projection = built(nn.Dense(self.channels, name="projection"), (None, None, d_model))
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        check_window(self, x, self.input_length, self.channels)
        batch, start = x.shape[0], self.input_length - self.label_length
        seasonal, trend = series_decomposition(x, self.moving_average)
        zeros = constant_tensor(np.zeros((batch, self.horizon, self.channels)), x.dtype)
        mean = F.add(F.mean(x, axis=1, keepdims=True), zeros)
        seasonal_init = F.concat([seasonal[:, start:], zeros], axis=1)
        trend = F.concat([trend[:, start:], mean], axis=1)
        memory = self.dropout(self.encoder_embedding(x))
        for layer in self.encoder:
            memory = layer(memory)
        memory = self.encoder_norm(memory)
        h = self.dropout(self.decoder_embedding(seasonal_init))
        for layer in self.decoder:
            h, layer_trend = layer(h, memory)
            trend = F.add(trend, layer_trend)
        y = F.add(trend, self.projection(self.decoder_norm(h)))
        return y[:, -self.horizon:]


def autoformer(input_length: int = 96, horizon: int = 24, channels: int = 1, **options) -> Autoformer:
    """An :class:`Autoformer` forecaster (defaults: d_model 64, 2 encoder and 1 decoder layers, moving average 25)."""
    return Autoformer(input_length, horizon, channels, **options)
