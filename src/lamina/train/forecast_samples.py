"""Scores of probabilistic forecasts given as sample paths or quantiles.

For targets y and forecasts of the same shape (every entry averaged or summed over):

    CRPS(F, y) = E|X - y| - E|X - X'| / 2        X, X' ~ F independent (Gneiting & Raftery, 2007)

estimated from S samples x_1 <= ... <= x_S of each entry by mean_s |x_s - y| - (1 / S^2)
sum_s (2 s - S - 1) x_s (the mean over all S^2 pairs of |x_s - x_r|, halved). The weighted
quantile loss of level q (DeepAR's rho-risk, normalised as in GluonTS) is

    wQL_q = 2 sum_i rho_q(y_i - y^_{i,q}) / sum_i |y_i|,    rho_q(r) = max(q r, (q - 1) r),

and :func:`mean_weighted_quantile_loss` averages it over the levels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lamina.errors import ShapeError

__all__ = ["mean_weighted_quantile_loss", "sample_crps", "weighted_quantile_loss"]


def sample_crps(samples: Any, y: Any) -> float:
    """The mean over the entries of y of the CRPS estimated from ``samples`` (S, *y.shape)."""
    samples = np.asarray(samples, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if samples.ndim != y.ndim + 1 or samples.shape[1:] != y.shape or samples.shape[0] < 1:
        raise ShapeError(f"sample_crps: samples have shape {samples.shape} and y {y.shape}; expected samples "
                         f"(num_samples, *y.shape)")
    s = samples.shape[0]
    ordered = np.sort(samples, axis=0)
    weights = (2.0 * np.arange(1, s + 1) - s - 1).reshape((s,) + (1,) * y.ndim)
    spread = np.sum(weights * ordered, axis=0) / s**2
    return float(np.mean(np.mean(np.abs(samples - y), axis=0) - spread))


def weighted_quantile_loss(y: Any, forecast: Any, level: float) -> float:
    """wQL_q = 2 sum rho_q(y - y^_q) / sum |y| of the level-``level`` quantile forecast (y's shape)."""
    y = np.asarray(y, dtype=np.float64)
    forecast = np.asarray(forecast, dtype=np.float64)
    if y.shape != forecast.shape:
        raise ShapeError(f"weighted_quantile_loss: y has shape {y.shape} and the forecast {forecast.shape}; "
                         f"expected equal shapes")
    if not 0.0 < level < 1.0:
        raise ValueError(f"weighted_quantile_loss: level must be in (0, 1), got {level!r}")
    total = np.sum(np.abs(y))
    if total == 0:
        raise ValueError("weighted_quantile_loss: sum |y| is 0, so the loss is undefined")
    r = y - forecast
    return float(2.0 * np.sum(np.maximum(level * r, (level - 1.0) * r)) / total)


def mean_weighted_quantile_loss(y: Any, quantiles: Any, levels: Sequence[float]) -> float:
    """The mean of :func:`weighted_quantile_loss` over ``levels``; ``quantiles`` (*y.shape, len(levels))."""
    quantiles = np.asarray(quantiles, dtype=np.float64)
    if quantiles.shape[-1:] != (len(levels),):
        raise ShapeError(f"mean_weighted_quantile_loss: quantiles have shape {quantiles.shape}; expected the "
                         f"{len(levels)} levels on the last axis")
    return float(np.mean([weighted_quantile_loss(y, quantiles[..., j], q) for j, q in enumerate(levels)]))
