"""The Riemann ("bar") distribution of prior-fitted networks (Müller et al. 2022).

The real line is cut by borders b_0 < b_1 < ... < b_K into K buckets of widths
w_k = b_{k+1} - b_k; a network's K logits give the bucket probabilities p = softmax(logits),
and the density is uniform within each bucket:

    p(y) = p_k / w_k   for b_k <= y < b_{k+1}   (0 outside [b_0, b_K])

With half-normal tails (``tails=True``, the paper's full-support variant) the two outer buckets
become half-normals that reach to -inf and +inf from the inner borders b_1 and b_{K-1}, their
scales s_0, s_{K-1} chosen so that half of each tail's mass lies within the original bucket
(s = w / Phi^-1(3/4)):

    p(y) = p_0 * 2 / (s_0 sqrt(2 pi)) exp(-(b_1 - y)^2 / (2 s_0^2))               for y < b_1
    p(y) = p_{K-1} * 2 / (s_{K-1} sqrt(2 pi)) exp(-(y - b_{K-1})^2 / (2 s_{K-1}^2))   for y >= b_{K-1}

The mean is sum_k p_k m_k with m_k the bucket midpoints, or for the tails
m_0 = b_1 - s_0 sqrt(2 / pi) and m_{K-1} = b_{K-1} + s_{K-1} sqrt(2 / pi). Quantiles invert the
piecewise-linear CDF (and the half-normal CDFs in the tails). :func:`bar_borders` places the
borders at quantiles of samples of y from the prior, so that every bucket is about equally
likely a priori.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import ndtri

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn.module import as_tensor

__all__ = ["BarPrediction", "bar_borders", "bar_log_density", "bar_mean", "bar_quantiles", "bar_tail_scales"]

HALF_NORMAL_MEDIAN = float(ndtri(0.75))        # the median of a unit half-normal
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _checked_borders(borders, who: str) -> np.ndarray:
    borders = np.asarray(borders, dtype=np.float64)
    if borders.ndim != 1 or borders.shape[0] < 3 or not np.all(np.diff(borders) > 0):
        raise ValueError(f"{who}: the borders must be a 1-D increasing array of at least 3 values (2 buckets), "
                         f"got shape {borders.shape}")
    return borders


def _check_logits(logits, borders: np.ndarray, who: str) -> None:
    if logits.ndim < 1 or logits.shape[-1] != borders.shape[0] - 1:
        raise ShapeError(f"{who}: got logits of shape {tuple(logits.shape)}; expected (..., {borders.shape[0] - 1}), "
                         f"one per bucket of the {borders.shape[0]} borders")


def bar_borders(samples, n_buckets: int) -> np.ndarray:
    """K + 1 borders at the quantiles 0, 1/K, ..., 1 of ``samples`` (the outer two at the
    smallest and largest sample), so that each bucket holds about as many samples."""
    samples = np.asarray(samples, dtype=np.float64).ravel()
    if isinstance(n_buckets, bool) or not isinstance(n_buckets, (int, np.integer)) or n_buckets < 2:
        raise ValueError(f"bar_borders: n_buckets must be an int >= 2, got {n_buckets!r}")
    borders = np.quantile(samples, np.linspace(0.0, 1.0, n_buckets + 1))
    if not np.all(np.diff(borders) > 0):
        raise ValueError(f"bar_borders: {samples.size} samples give repeated borders for {n_buckets} buckets; "
                         "draw more (continuous) samples or use fewer buckets")
    return borders


def bar_tail_scales(borders) -> tuple[float, float]:
    """(s_0, s_{K-1}): the half-normal scales of the left and right tails."""
    borders = _checked_borders(borders, "bar_tail_scales")
    return (borders[1] - borders[0]) / HALF_NORMAL_MEDIAN, (borders[-1] - borders[-2]) / HALF_NORMAL_MEDIAN


def _bucket_means(borders: np.ndarray, tails: bool) -> np.ndarray:
    means = 0.5 * (borders[1:] + borders[:-1])
    if tails:
        left, right = bar_tail_scales(borders)
        means[0], means[-1] = borders[1] - left * SQRT_2_OVER_PI, borders[-2] + right * SQRT_2_OVER_PI
    return means


def bar_log_density(logits, borders, y, tails: bool = True) -> Tensor:
    """log p(y) under the bar distribution (module docstring) of ``logits`` (..., K) over
    ``borders`` (K + 1,), at ``y`` of shape ``logits.shape[:-1]``. Differentiable in the logits
    and (in the tails) in y; without tails y outside [b_0, b_K] gets -inf."""
    borders = _checked_borders(borders, "bar_log_density")
    values = np.asarray(y.numpy() if isinstance(y, Tensor) else y, dtype=np.float64)   # before any rounding
    logits, y = as_tensor(logits), as_tensor(y)
    _check_logits(logits, borders, "bar_log_density")
    if tuple(y.shape) != tuple(logits.shape[:-1]):
        raise ShapeError(f"bar_log_density: got y of shape {tuple(y.shape)} for logits of shape "
                         f"{tuple(logits.shape)}; expected y of shape {tuple(logits.shape[:-1])}")
    n_buckets = borders.shape[0] - 1
    bucket = np.clip(np.searchsorted(borders, values, side="right") - 1, 0, n_buckets - 1)
    log_p = F.gather(F.log_softmax(logits, axis=-1), -1, bucket[..., None].astype(np.int64))[..., 0]
    log_width = -np.log(np.diff(borders))[bucket]
    if not tails:
        outside = (values < borders[0]) | (values > borders[-1])
        return log_p + np.where(outside, -np.inf, log_width).astype(log_p.dtype)
    left, right = bar_tail_scales(borders)
    in_left, in_right = bucket == 0, bucket == n_buckets - 1
    scale = np.where(in_left, left, right)
    distance = F.where(in_left, borders[1] - y, y - borders[-2])
    tail = (math.log(2.0) - 0.5 * math.log(2.0 * math.pi) - np.log(scale)
            - 0.5 * distance * distance / (scale * scale))
    outer = in_left | in_right
    return log_p + F.where(outer, tail, np.where(outer, 0.0, log_width).astype(log_p.dtype))


def bar_mean(logits, borders, tails: bool = True) -> Tensor:
    """The mean sum_k p_k m_k (module docstring) of each distribution of ``logits`` (..., K)."""
    borders = _checked_borders(borders, "bar_mean")
    logits = as_tensor(logits)
    _check_logits(logits, borders, "bar_mean")
    means = _bucket_means(borders, tails).astype(logits.dtype)
    return F.sum(F.softmax(logits, axis=-1) * means, axis=-1)


def bar_quantiles(probs, borders, q, tails: bool = True) -> np.ndarray:
    """The ``q``-quantiles (q in (0, 1); shape (..., len(q))) of the bar distributions with
    bucket probabilities ``probs`` (..., K), by inverting the CDF (module docstring)."""
    borders = _checked_borders(borders, "bar_quantiles")
    probs = np.asarray(probs, dtype=np.float64)
    _check_logits(probs, borders, "bar_quantiles")
    q = np.atleast_1d(np.asarray(q, dtype=np.float64))
    if q.ndim != 1 or not np.all((q > 0) & (q < 1)):
        raise ValueError(f"bar_quantiles: q must be levels strictly between 0 and 1, got {q}")
    n_buckets = probs.shape[-1]
    cdf = np.concatenate([np.zeros(probs.shape[:-1] + (1,)), np.cumsum(probs, axis=-1)], axis=-1)
    cdf /= cdf[..., -1:]
    levels = np.broadcast_to(q, probs.shape[:-1] + q.shape)
    bucket = np.clip((cdf[..., None, :] <= levels[..., None]).sum(-1) - 1, 0, n_buckets - 1)
    start = np.take_along_axis(cdf, bucket, -1)
    mass = np.maximum(np.take_along_axis(probs, bucket, -1), 1e-300)
    fraction = np.clip((levels - start) / mass, 0.0, 1.0)
    out = borders[bucket] + fraction * np.diff(borders)[bucket]
    if tails:
        left, right = bar_tail_scales(borders)
        with np.errstate(divide="ignore"):
            low = borders[1] - left * ndtri(np.clip(1.0 - 0.5 * fraction, 0.5, 1.0))
            high = borders[-2] + right * ndtri(np.clip(0.5 + 0.5 * fraction, 0.5, 1.0))
        out = np.where(bucket == 0, low, np.where(bucket == n_buckets - 1, high, out))
    return out


class BarPrediction:
    """A PFN's predictive distribution at the query points: bucket probabilities ``probs``
    (..., K) over ``borders``; ``mean``, ``quantiles(q)``, ``log_density(y)`` and
    ``median`` read it (module docstring)."""

    def __init__(self, logits: np.ndarray, borders: np.ndarray, tails: bool = True):
        self.logits = np.asarray(logits)
        self.borders, self.tails = _checked_borders(borders, "BarPrediction"), bool(tails)
        shifted = self.logits - self.logits.max(axis=-1, keepdims=True)
        self.probs = np.exp(shifted) / np.exp(shifted).sum(axis=-1, keepdims=True)

    @property
    def mean(self) -> np.ndarray:
        return (self.probs * _bucket_means(self.borders, self.tails)).sum(-1)

    @property
    def median(self) -> np.ndarray:
        return self.quantiles([0.5])[..., 0]

    def quantiles(self, q) -> np.ndarray:
        return bar_quantiles(self.probs, self.borders, q, self.tails)

    def log_density(self, y) -> np.ndarray:
        return bar_log_density(self.logits.astype(np.float64), self.borders, np.asarray(y, np.float64),
                               self.tails).numpy()

    def __repr__(self) -> str:
        return f"BarPrediction(shape={self.probs.shape[:-1]}, buckets={self.probs.shape[-1]}, tails={self.tails})"
