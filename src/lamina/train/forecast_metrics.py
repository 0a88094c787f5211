"""Point-forecast errors and the naive forecasts they are judged against.

For targets y and forecasts y_hat over the same steps (any shape, averaged over every entry):

    MAE   = mean |y - y_hat|
    RMSE  = sqrt(mean (y - y_hat)^2)
    MAPE  = 100 mean |y - y_hat| / |y|                       (percent; undefined where y = 0)
    sMAPE = 200 mean |y - y_hat| / (|y| + |y_hat|)           (percent, in [0, 200]; M4's)
    MASE  = mean_c [ mean |y_c - y_hat_c| / q_c ],  q_c = mean_{t > m} |s_t,c - s_{t-m},c|

MASE (Hyndman & Koehler, 2006) scales each channel's error by the in-sample error q_c of the
seasonal naive forecast of season m on the training series s (m = 1: the naive forecast), so a
value below 1 beats that baseline's one-step in-sample error, and values are comparable across
series of any scale.

The baselines read windows (N, L) or (N, L, C), time on ``axis`` 1 (0 for a single history):
the naive forecast repeats the last value, y_hat_{L+h} = x_L; the seasonal naive one repeats the
last season, y_hat_{L+h} = x_{L + h - m ceil(h / m)} (h = 1 .. H).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lamina.errors import ShapeError

__all__ = ["mae", "mape", "mase", "naive_forecast", "rmse", "seasonal_naive_forecast", "smape"]


def _pair(y_true: Any, y_pred: Any, who: str) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if y_true.shape != y_pred.shape:
        raise ShapeError(f"{who}: y_true has shape {y_true.shape} and y_pred {y_pred.shape}; expected equal shapes")
    if y_true.size == 0:
        raise ValueError(f"{who}: got no values")
    return y_true, y_pred


def mae(y_true: Any, y_pred: Any) -> float:
    """Mean absolute error, mean |y - y_hat|."""
    y_true, y_pred = _pair(y_true, y_pred, "mae")
    return float(np.mean(np.abs(y_true - y_pred)))


def rmse(y_true: Any, y_pred: Any) -> float:
    """Root mean squared error, sqrt(mean (y - y_hat)^2)."""
    y_true, y_pred = _pair(y_true, y_pred, "rmse")
    return float(np.sqrt(np.mean((y_true - y_pred) ** 2)))


def mape(y_true: Any, y_pred: Any) -> float:
    """Mean absolute percentage error, 100 mean |y - y_hat| / |y| (a ValueError when some y = 0)."""
    y_true, y_pred = _pair(y_true, y_pred, "mape")
    if np.any(y_true == 0):
        raise ValueError("mape: some targets are 0, where the percentage error is undefined; use smape or mase")
    return float(100.0 * np.mean(np.abs(y_true - y_pred) / np.abs(y_true)))


def smape(y_true: Any, y_pred: Any) -> float:
    """Symmetric MAPE, 200 mean |y - y_hat| / (|y| + |y_hat|), in [0, 200] (0 / 0 counts as 0)."""
    y_true, y_pred = _pair(y_true, y_pred, "smape")
    denominator = np.abs(y_true) + np.abs(y_pred)
    ratio = np.divide(np.abs(y_true - y_pred), denominator, out=np.zeros_like(denominator), where=denominator > 0)
    return float(200.0 * np.mean(ratio))


def mase(y_true: Any, y_pred: Any, y_train: Any, season: int = 1) -> float:
    """Mean absolute scaled error: each channel's absolute errors divided by the in-sample MAE q_c
    of the seasonal naive forecast of ``season`` m on ``y_train``, then averaged.

    ``y_train``: the training series, (T,) for one channel or (T, C); the channels are the last
    axis of ``y_true`` and ``y_pred`` when ``y_train`` is 2-D.
    """
    y_true, y_pred = _pair(y_true, y_pred, "mase")
    history = np.asarray(y_train, dtype=np.float64)
    if isinstance(season, bool) or not isinstance(season, (int, np.integer)) or season < 1:
        raise ValueError(f"mase: season must be a positive int, got {season!r}")
    if history.ndim not in (1, 2) or history.shape[0] <= season:
        raise ShapeError(f"mase: y_train must be a series (T,) or (T, C) longer than season={season}; "
                         f"got shape {history.shape}")
    scale = np.mean(np.abs(history[season:] - history[:-season]), axis=0)
    if history.ndim == 2 and y_true.shape[-1] != history.shape[1]:
        raise ShapeError(f"mase: y_train has {history.shape[1]} channels but y_true's last axis has "
                         f"{y_true.shape[-1]} (shape {y_true.shape})")
    if np.any(scale == 0):
        raise ValueError("mase: the seasonal naive forecast is exact on y_train (scale 0); MASE is undefined")
    return float(np.mean(np.abs(y_true - y_pred) / scale))


def _history(x: Any, horizon: int, axis: int, who: str) -> tuple[np.ndarray, int]:
    x = np.asarray(x)
    if x.ndim == 0:
        raise ShapeError(f"{who}: expected a history with a time axis, got a scalar")
    axis = axis % x.ndim
    if isinstance(horizon, bool) or not isinstance(horizon, (int, np.integer)) or horizon < 1:
        raise ValueError(f"{who}: horizon must be a positive int, got {horizon!r}")
    return x, axis


def naive_forecast(x: Any, horizon: int, axis: int = 1) -> np.ndarray:
    """The last value repeated: y_hat_{L+h} = x_L for h = 1 .. H, along ``axis``."""
    x, axis = _history(x, horizon, axis, "naive_forecast")
    last = np.take(x, [-1], axis=axis)
    return np.repeat(last, horizon, axis=axis)


def seasonal_naive_forecast(x: Any, horizon: int, season: int, axis: int = 1) -> np.ndarray:
    """The last season repeated: y_hat_{L+h} = x_{L + h - m ceil(h / m)} for h = 1 .. H."""
    x, axis = _history(x, horizon, axis, "seasonal_naive_forecast")
    length = x.shape[axis]
    if isinstance(season, bool) or not isinstance(season, (int, np.integer)) or not 1 <= season <= length:
        raise ValueError(f"seasonal_naive_forecast: season must be an int in [1, {length}] (the history's length "
                         f"on axis {axis}), got {season!r}")
    h = np.arange(1, horizon + 1)
    steps = length - 1 + h - season * -(-h // season)       # 0-based index of x_{L + h - m ceil(h/m)}
    return np.take(x, steps, axis=axis)
