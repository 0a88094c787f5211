"""Time series for forecasting: windows, splits by time, scaling and synthetic series.

A forecaster reads the last L steps of a series and predicts the next H:

    x_i = s[i S : i S + L],   y_i = s[i S + L : i S + L + H],   i = 0 .. floor((T - L - H) / S)

for a series s of T steps (one channel, shape (T,), or several, (T, C)) and a stride S.
:func:`sliding_windows` returns x and y as read-only views of the series (no copy, however
many windows overlap).

:class:`TimeSeriesDataset` cuts one series by time into a training, a validation and a test
span, fits a per-channel :class:`~lamina.data.preprocessing.Standardizer` on the training span
only, and makes windows whose targets lie inside their own span: a validation or test window may
read the end of the previous span as its input (that past is known when forecasting), but no
training target lies after the training span, so nothing of the later spans leaks into fitting.

The synthetic generators (:func:`seasonal_series`, :func:`ar_process`) give series with known
structure for tests and examples.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lamina.data.dataset import ArrayDataset
from lamina.data.preprocessing import Standardizer
from lamina.errors import ShapeError

__all__ = ["TimeSeriesDataset", "ar_process", "seasonal_series", "sliding_windows"]

SPLITS = ("train", "val", "test")


def _positive(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{what} must be a positive int, got {value!r}")
    return int(value)


def _as_series(series: Any, who: str) -> np.ndarray:
    series = np.asarray(series)
    if series.ndim not in (1, 2):
        raise ShapeError(f"{who}: expected a series of shape (T,) or (T, channels), got shape {series.shape}")
    if not np.issubdtype(series.dtype, np.number):
        raise TypeError(f"{who}: expected a numeric series, got dtype {series.dtype}")
    return series


def sliding_windows(series: Any, input_length: int, horizon: int, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(x, y): inputs x_i = s[i S : i S + L] and targets y_i = s[i S + L : i S + L + H].

    ``series`` (T,) gives x of shape (N, L) and y (N, H); (T, C) gives (N, L, C) and (N, H, C),
    with N = floor((T - L - H) / S) + 1. Both are read-only views of ``series`` (strided, not
    copied); copy them before writing.
    """
    series = _as_series(series, "sliding_windows")
    length = _positive(input_length, "sliding_windows: input_length")
    horizon = _positive(horizon, "sliding_windows: horizon")
    stride = _positive(stride, "sliding_windows: stride")
    span = length + horizon
    steps = series.shape[0]
    if steps < span:
        raise ShapeError(f"sliding_windows: a series of {steps} steps (shape {series.shape}) is shorter than one "
                         f"window of input_length + horizon = {length} + {horizon} = {span} steps")
    windows = np.lib.stride_tricks.sliding_window_view(series, span, axis=0)[::stride]
    if series.ndim == 2:                      # (N, C, span) -> (N, span, C), still a view
        windows = np.moveaxis(windows, -1, 1)
    return windows[:, :length], windows[:, length:]


class TimeSeriesDataset:
    """One series cut by time into train / val / test spans, scaled, and windowed.

    ``series``: (T,) or (T, C); it is kept as (T, C) (one channel for a 1-D series), so the
    windows are (N, L, C) inputs and (N, H, C) targets. ``splits``: the fractions of the T steps
    given to the training and validation spans (the test span takes the rest), in time order.
    ``scale``: standardise every channel with the mean and standard deviation of the training
    span alone (:attr:`scaler`, a per-channel :class:`Standardizer`; its ``inverse_transform``
    maps forecasts back).

    The windows of a span have their targets inside it; their inputs may reach back up to
    L steps into the span before. :meth:`windows` gives (x, y) views, :meth:`split` an
    :class:`ArrayDataset` for the :class:`DataLoader` and the Trainer.
    """

    def __init__(self, series: Any, input_length: int, horizon: int, splits: tuple[float, float] = (0.7, 0.1),
                 stride: int = 1, scale: bool = True, dtype: Any = np.float32) -> None:
        series = _as_series(series, "TimeSeriesDataset")
        self.input_length = _positive(input_length, "TimeSeriesDataset: input_length")
        self.horizon = _positive(horizon, "TimeSeriesDataset: horizon")
        self.stride = _positive(stride, "TimeSeriesDataset: stride")
        train, val = (float(f) for f in splits)
        if not (0 < train < 1 and 0 <= val < 1 and train + val < 1):
            raise ValueError(f"TimeSeriesDataset: splits must be (train, val) fractions with train > 0, val >= 0 and "
                             f"train + val < 1 (the test span takes the rest), got {splits!r}")
        steps = series.shape[0]
        self.series = series.reshape(steps, -1).astype(dtype)
        train_end = int(round(train * steps))
        val_end = int(round((train + val) * steps))
        self.bounds = {"train": (0, train_end), "val": (train_end, val_end), "test": (val_end, steps)}
        if train_end < self.input_length + self.horizon:
            raise ShapeError(f"TimeSeriesDataset: the training span has {train_end} steps of {steps}; one window "
                             f"needs input_length + horizon = {self.input_length + self.horizon}")
        self.scaler: Standardizer | None = None
        self.scaled = self.series
        if scale:
            self.scaler = Standardizer(per="channel").fit(self.series[:train_end])
            self.scaled = self.scaler.transform(self.series).astype(dtype, copy=False)

    @property
    def channels(self) -> int:
        return self.series.shape[1]

    def target_steps(self, split: str) -> np.ndarray:
        """The time indices (N, H) of the targets of the windows of ``split``."""
        start, end = self._span(split)
        first = np.arange(max(start - self.input_length, 0), end - self.input_length - self.horizon + 1,
                          self.stride)
        first = first[first + self.input_length >= start]
        return first[:, None] + self.input_length + np.arange(self.horizon)

    def windows(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of ``split``: read-only views of the scaled series, (N, L, C) and (N, H, C).

        Targets lie inside the span; the first window's input starts L steps before the span
        (at 0 for the training span), so every target step of the span after the first L of
        the series is predicted once (stride 1)."""
        start, end = self._span(split)
        lead = min(self.input_length, start)
        piece = self.scaled[start - lead:end]
        if piece.shape[0] < self.input_length + self.horizon:
            empty = np.empty((0, self.input_length, self.channels), self.scaled.dtype)
            return empty, np.empty((0, self.horizon, self.channels), self.scaled.dtype)
        if split != "train" and lead < self.input_length:
            raise ShapeError(f"TimeSeriesDataset: the {split} span starts at step {start}, before one input "
                             f"length ({self.input_length})")
        return sliding_windows(piece, self.input_length, self.horizon, self.stride)

    def split(self, split: str) -> ArrayDataset:
        """An :class:`ArrayDataset` of the windows of ``split`` (inputs and targets)."""
        return ArrayDataset(*self.windows(split))

    def span(self, split: str, scaled: bool = True) -> np.ndarray:
        """The steps of ``split`` alone, (steps, C): for MASE's scale, take ``span('train')``."""
        start, end = self._span(split)
        return (self.scaled if scaled else self.series)[start:end]

    def inverse_transform(self, values: Any) -> np.ndarray:
        """Forecasts (..., C) in scaled units back in the series' units."""
        values = np.asarray(values)
        if self.scaler is None:
            return values
        flat = values.reshape(-1, self.channels)
        return self.scaler.inverse_transform(flat).reshape(values.shape)

    def _span(self, split: str) -> tuple[int, int]:
        if split not in SPLITS:
            raise ValueError(f"TimeSeriesDataset: split must be one of {SPLITS}, got {split!r}")
        return self.bounds[split]

    def __repr__(self) -> str:
        spans = ", ".join(f"{k}={b - a}" for k, (a, b) in self.bounds.items())
        return (f"TimeSeriesDataset(steps={self.series.shape[0]}, channels={self.channels}, "
                f"input_length={self.input_length}, horizon={self.horizon}, {spans})")


def seasonal_series(length: int, periods: tuple[int, ...] = (24,), amplitudes: tuple[float, ...] | None = None,
                    trend: float = 0.0, noise: float = 0.1, channels: int | None = None, level: float = 0.0,
                    seed: int | None = None, dtype: Any = np.float32) -> np.ndarray:
    """A trend plus several seasonalities plus Gaussian noise:

        s_t = level + trend * t + sum_k a_k sin(2 pi t / p_k + phi_k) + noise * e_t,   e_t ~ N(0, 1)

    for t = 0 .. length - 1, with periods p_k, amplitudes a_k (default 1, 1/2, 1/4, ...) and
    phases phi_k drawn uniformly (per channel). Shape (length,), or (length, channels) when
    ``channels`` is given (each channel with its own phases and noise).
    """
    length = _positive(length, "seasonal_series: length")
    periods = tuple(float(p) for p in periods)
    if any(p <= 0 for p in periods):
        raise ValueError(f"seasonal_series: periods must be positive, got {periods}")
    if amplitudes is None:
        amplitudes = tuple(0.5 ** k for k in range(len(periods)))
    if len(amplitudes) != len(periods):
        raise ValueError(f"seasonal_series: {len(amplitudes)} amplitudes for {len(periods)} periods")
    count = 1 if channels is None else _positive(channels, "seasonal_series: channels")
    rng = np.random.default_rng(seed)
    t = np.arange(length, dtype=np.float64)[:, None]
    values = level + trend * t + noise * rng.standard_normal((length, count))
    for period, amplitude in zip(periods, amplitudes):
        phase = rng.uniform(0, 2 * np.pi, count)
        values = values + amplitude * np.sin(2 * np.pi * t / period + phase)
    values = values.astype(dtype)
    return values[:, 0] if channels is None else values


def ar_process(length: int, coefficients: tuple[float, ...], noise: float = 1.0, constant: float = 0.0,
               burn_in: int = 200, seed: int | None = None, dtype: Any = np.float32) -> np.ndarray:
    """An autoregressive AR(p) series of shape (length,):

        y_t = c + sum_{i=1..p} phi_i y_{t-i} + noise * e_t,   e_t ~ N(0, 1)

    started at zero and run ``burn_in`` steps before the first returned one, so the series
    starts near its stationary distribution. The coefficients must give a stationary process
    (every root of 1 - phi_1 z - ... - phi_p z^p outside the unit circle).
    """
    length = _positive(length, "ar_process: length")
    phi = np.asarray(coefficients, dtype=np.float64).reshape(-1)
    if phi.size == 0:
        raise ValueError("ar_process: give at least one coefficient")
    roots = np.roots(np.concatenate([-phi[::-1], [1.0]]))
    if np.any(np.abs(roots) <= 1.0):
        raise ValueError(f"ar_process: coefficients {phi.tolist()} give a non-stationary process (a root of "
                         f"1 - sum phi_i z^i lies on or inside the unit circle: |z| = {np.abs(roots).min():.3g})")
    rng = np.random.default_rng(seed)
    order = phi.size
    total = length + burn_in
    shocks = noise * rng.standard_normal(total)
    y = np.zeros(total + order)
    for t in range(total):
        y[order + t] = constant + phi @ y[t:order + t][::-1] + shocks[t]
    return y[order + burn_in:].astype(dtype)
