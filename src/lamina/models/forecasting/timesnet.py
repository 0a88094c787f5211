"""TimesNet (Wu et al., 2023): a series folded into 2-D by its main periods and mixed by 2-D convolutions."""

from __future__ import annotations

import math

import numpy as np

from lamina import fft, nn
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.forecasting._common import check_rate, check_window, constant_tensor
from lamina.models.forecasting._embedding import CircularConv, built
from lamina.models.forecasting.informer import _sinusoid_positions
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import input_error, positive_int
from lamina.nn.module import Module, as_tensor

__all__ = ["InceptionBlock2D", "TimesBlock", "TimesNet", "fft_periods", "fold_periods", "timesnet",
           "unfold_periods"]

_ALONG_TIME = (0, 2, 1)


def channel_amplitudes(x) -> Tensor:
    """|rfft(x)| along time averaged over the channels: (batch, T, C) -> (batch, T // 2 + 1)."""
    return F.mean(fft.abs(fft.rfft(as_tensor(x), dim=1)), axis=-1)


def top_frequencies(amplitudes: np.ndarray, k: int) -> np.ndarray:
    """The k frequencies (bins > 0) of largest amplitude averaged over the batch, largest first."""
    score = np.asarray(amplitudes, dtype=np.float64).mean(axis=0)
    if not 1 <= k < len(score):
        raise ValueError(f"fft_periods: k must be in [1, {len(score) - 1}] (the non-zero frequencies of "
                         f"the series), got {k}")
    score[0] = -np.inf    # the mean (frequency 0) is no period
    return np.argsort(-score, kind="stable")[:k]


def fft_periods(x, k: int) -> tuple[np.ndarray, Tensor]:
    """The k main periods of (batch, T, C) series and their amplitudes:

        A = mean_c |rfft(x)|                (batch, T // 2 + 1)
        f_1 .. f_k = argtopk_{f > 0} mean_batch A[:, f],    p_i = ceil(T / f_i)

    Returns the periods (k,) and the amplitudes A[:, f_i] (batch, k), differentiable in x."""
    x = as_tensor(x)
    amplitudes = channel_amplitudes(x)
    frequencies = top_frequencies(amplitudes.numpy(), k)
    return periods_of(frequencies, x.shape[1]), amplitudes[:, frequencies]


def periods_of(frequencies, length: int) -> np.ndarray:
    return np.array([math.ceil(length / int(f)) for f in frequencies], dtype=np.int64)


def fold_periods(x, period: int) -> Tensor:
    """(batch, T, C) -> (batch, ceil(T / p), p, C): row r holds steps r p .. r p + p - 1, the last
    row zero-padded at its end (an NHWC image whose columns are the phases of the period)."""
    x = as_tensor(x)
    period = positive_int(int(period) if isinstance(period, np.integer) else period, "fold_periods: period")
    batch, length, channels = x.shape
    rows = -(-length // period)
    if rows * period > length:
        x = F.pad(x, ((0, 0), (0, rows * period - length), (0, 0)))
    return F.reshape(x, (batch, rows, period, channels))


def unfold_periods(image, length: int) -> Tensor:
    """Inverse of :func:`fold_periods`: (batch, rows, p, C) -> (batch, length, C), the padding cut."""
    image = as_tensor(image)
    batch, rows, period, channels = image.shape
    if length > rows * period:
        raise ShapeError(f"unfold_periods: an image of {rows} x {period} steps holds fewer than {length}")
    return F.reshape(image, (batch, rows * period, channels))[:, :length]


@register_with_arguments
class InceptionBlock2D(Module):
    """The mean of ``num_kernels`` 'same' 2-D convolutions of kernel sizes 1, 3, .., 2 num_kernels - 1,
    NHWC (N, H, W, c_in) -> (N, H, W, filters) (TimesNet's Inception block V1)."""

    def __init__(self, in_channels: int, filters: int, num_kernels: int = 6, name: str | None = None):
        super().__init__(name=name)
        in_channels = positive_int(in_channels, "InceptionBlock2D: in_channels")
        filters = positive_int(filters, "InceptionBlock2D: filters")
        self.convs = nn.ModuleList([built(nn.Conv2D(filters, 2 * i + 1, padding=i), (None, None, None, in_channels))
                                    for i in range(positive_int(num_kernels, "InceptionBlock2D: num_kernels"))])
        self.built = True

    def forward(self, x) -> Tensor:
        outputs = [conv(x) for conv in self.convs]
        return F.mean(F.stack(outputs, axis=-1), axis=-1)


@register_with_arguments
class TimesBlock(Module):
    """One TimesBlock, (batch, length, d_model) -> same:

        p_1 .. p_k, A = fft_periods(x, k)
        z_i = unfold(Inception_out(GELU(Inception_in(fold(x, p_i)))))    (shared by the periods)
        y = x + sum_i softmax_i(A)[:, i] z_i

    ``block(x, frequencies)`` takes the frequencies f_i (periods ceil(length / f_i)) instead of
    finding them. Sub-layers ``inception_in`` (d_model -> d_ff), ``inception_out`` (d_ff -> d_model)."""

    def __init__(self, length: int, d_model: int, d_ff: int, top_k: int = 5, num_kernels: int = 6,
                 name: str | None = None):
        super().__init__(name=name)
        self.length = positive_int(length, "TimesBlock: length")
        self.d_model = positive_int(d_model, "TimesBlock: d_model")
        self.top_k = positive_int(top_k, "TimesBlock: top_k")
        if self.top_k > self.length // 2:
            raise ValueError(f"TimesBlock: top_k {top_k} exceeds the {self.length // 2} non-zero frequencies "
                             f"of a series of {length} steps")
        self.inception_in = InceptionBlock2D(self.d_model, d_ff, num_kernels, name="inception_in")
        self.inception_out = InceptionBlock2D(d_ff, self.d_model, num_kernels, name="inception_out")
        self.built = True

    def forward(self, x, frequencies=None) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 3 or x.shape[1] != self.length or x.shape[2] != self.d_model:
            raise input_error(self, x, f"(batch, {self.length}, {self.d_model})")
        amplitudes = channel_amplitudes(x)
        if frequencies is None:
            frequencies = top_frequencies(amplitudes.numpy(), self.top_k)
        frequencies = np.asarray(frequencies, dtype=np.int64)
        mixed = [unfold_periods(self.inception_out(F.gelu(self.inception_in(fold_periods(x, period)))), self.length)
                 for period in periods_of(frequencies, self.length)]
        weights = F.softmax(amplitudes[:, frequencies], axis=-1)
        weights = F.reshape(weights, (x.shape[0], 1, 1, len(frequencies)))
        return F.add(x, F.sum(F.mul(F.stack(mixed, axis=-1), weights), axis=-1))


@register_with_arguments
class TimesNet(Module):
    """TimesNet: (batch, input_length, channels) -> forecasts (batch, horizon, channels), or
    logits (batch, num_classes) when ``num_classes`` is given (then ``horizon`` must be 0).

    Forecasting::

        z = RevIN(x)                               (``revin``; no affine: per window and channel)
        e = Dropout(CircularConv(z) + positions)   (batch, input_length, d_model)
        e = Linear_time(e)                         input_length -> input_length + horizon steps
        e = LayerNorm(TimesBlock(e)) x ``blocks``  (one LayerNorm shared by the blocks)
        y = RevIN^-1(Dense_channels(e))[:, -horizon:]

    Classification: e from x (no RevIN, no time Linear), the blocks, then
    Dense_classes(flatten(Dropout(GELU(e))))."""

    def __init__(self, input_length: int, horizon: int, channels: int = 1, d_model: int = 32, d_ff: int = 32,
                 blocks: int = 2, top_k: int = 5, num_kernels: int = 6, dropout: float = 0.1,
                 num_classes: int | None = None, revin: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.input_length = positive_int(input_length, "TimesNet: input_length")
        self.channels = positive_int(channels, "TimesNet: channels")
        self.d_model = positive_int(d_model, "TimesNet: d_model")
        self.num_classes = None if num_classes is None else positive_int(num_classes, "TimesNet: num_classes")
        if self.num_classes is not None and horizon != 0:
            raise ValueError(f"TimesNet: a classifier (num_classes={num_classes}) takes horizon=0, got {horizon}")
        self.horizon = 0 if self.num_classes is not None else positive_int(horizon, "TimesNet: horizon")
        rate = check_rate(dropout, "TimesNet: dropout")
        length = self.input_length + self.horizon
        self.embedding = CircularConv(self.channels, self.d_model, use_bias=False, name="embedding")
        self.dropout = nn.Dropout(rate, name="dropout")
        self.blocks = nn.ModuleList([TimesBlock(length, self.d_model, d_ff, top_k, num_kernels)
                                     for _ in range(positive_int(blocks, "TimesNet: blocks"))])
        self.norm = built(nn.LayerNorm(-1, name="norm"), (None, length, self.d_model))
        if self.num_classes is None:
            self.revin = built(nn.RevIN(self.channels, affine=False, name="revin"),
                               (None, self.input_length, self.channels)) if revin else None
            self.extend = built(nn.Dense(length, name="extend"), (None, self.d_model, self.input_length))
            self.projection = built(nn.Dense(self.channels, name="projection"), (None, length, self.d_model))
        else:
            self.head = built(nn.Dense(self.num_classes, name="head"), (None, length * self.d_model))
        self.built = True

    def embed(self, x: Tensor) -> Tensor:
        positions = constant_tensor(_sinusoid_positions(x.shape[1], self.d_model), x.dtype)
        return self.dropout(F.add(self.embedding(x), positions))

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        check_window(self, x, self.input_length, self.channels)
        if self.num_classes is not None:
            e = self.embed(x)
            for block in self.blocks:
                e = self.norm(block(e))
            e = self.dropout(F.gelu(e))
            return self.head(F.reshape(e, (e.shape[0], self.input_length * self.d_model)))
        e = self.embed(self.revin(x, "norm") if self.revin is not None else x)
        e = F.transpose(self.extend(F.transpose(e, _ALONG_TIME)), _ALONG_TIME)
        for block in self.blocks:
            e = self.norm(block(e))
        y = self.projection(e)
        y = self.revin(y, "denorm") if self.revin is not None else y
        return y[:, self.input_length:]



def timesnet(input_length: int = 96, horizon: int = 24, channels: int = 1, **options) -> TimesNet:
    """A :class:`TimesNet` forecaster (defaults: d_model 32, 2 TimesBlocks of the top 5 periods,
    6 Inception kernels, reversible instance normalisation)."""
    return TimesNet(input_length, horizon, channels, **options)
