"""Irregularly sampled time series: batches on the union of their sequences' times, and a
generator of irregularly observed sine waves (the periodic toy data of Rubanova, Chen and
Duvenaud 2019, "Latent ODEs for irregularly-sampled time series").

A batch of sequences observed at different times is laid on one grid, the sorted union of
all their times t_1 < .. < t_T, with values (N, T, D) and a mask (N, T, D) that is 1 where
sequence n observed feature d at t_i and 0 elsewhere (the value there is 0 and means nothing):
:func:`union_grid`. Models such as :class:`lamina.models.LatentODE` read that form.

:func:`irregular_sines` draws N signals x_d(t) = a sin(w t + phi_d) (one frequency and
amplitude per sequence, one phase per feature) on a regular grid of ``grid_size`` times in
[0, ``t_max``], and observes each sequence at ``num_observed`` random times of the grid, each
feature of an observed time kept with probability ``feature_prob`` (at least one kept).
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np

from lamina.errors import ShapeError

__all__ = ["IrregularBatch", "IrregularSines", "irregular_sines", "union_grid"]


class IrregularBatch(NamedTuple):
    """Sequences on a shared grid: values (N, T, D), times (T,) increasing, mask (N, T, D)."""

    values: np.ndarray
    times: np.ndarray
    mask: np.ndarray


class IrregularSines(NamedTuple):
    """The sine data on the full grid: ``values`` (N, G, D) (with noise), ``clean`` (N, G, D)
    (without), ``times`` (G,), ``mask`` (N, G, D) (1: observed), and each sequence's
    ``frequency`` w (N,), ``amplitude`` a (N,) and ``phase`` phi (N, D)."""

    values: np.ndarray
    clean: np.ndarray
    times: np.ndarray
    mask: np.ndarray
    frequency: np.ndarray
    amplitude: np.ndarray
    phase: np.ndarray


def union_grid(times, values, masks=None, dtype=np.float32) -> IrregularBatch:
    """Lay sequence n, observed at ``times[n]`` (T_n,) with ``values[n]`` (T_n, D) and
    optionally ``masks[n]`` (T_n, D) (default: all observed), on the union of all the times.

    The times of one sequence must be strictly increasing; the union is sorted, and an entry
    no sequence observed at a time is 0 with mask 0."""
    if len(times) != len(values) or (masks is not None and len(masks) != len(values)):
        raise ValueError(f"union_grid: got {len(times)} time arrays, {len(values)} value arrays"
                         + ("" if masks is None else f" and {len(masks)} masks") + "; expected one each per sequence")
    if not len(values):
        raise ValueError("union_grid: no sequences given")
    seqs = [np.asarray(v, dtype=np.float64) for v in values]
    stamps = [np.asarray(t, dtype=np.float64) for t in times]
    features = seqs[0].shape[-1] if seqs[0].ndim == 2 else None
    for n, (t, v) in enumerate(zip(stamps, seqs)):
        if v.ndim != 2 or v.shape[-1] != features or t.shape != (v.shape[0],):
            raise ShapeError(f"union_grid: sequence {n} has times of shape {t.shape} and values of shape {v.shape}; "
                             f"expected (T_n,) and (T_n, {features}) with the features of sequence 0")
        if not np.isfinite(t).all() or (t.size > 1 and not np.all(np.diff(t) > 0)):
            raise ValueError(f"union_grid: the times of sequence {n} must be finite and strictly increasing, "
                             f"got {t.tolist()}")
    grid = np.unique(np.concatenate(stamps))
    out = np.zeros((len(seqs), grid.size, features), dtype=dtype)
    mask = np.zeros(out.shape, dtype=dtype)
    for n, (t, v) in enumerate(zip(stamps, seqs)):
        m = np.ones(v.shape) if masks is None else np.asarray(masks[n])
        if m.shape != v.shape:
            raise ShapeError(f"union_grid: mask {n} has shape {m.shape}; expected its values' shape {v.shape}")
        rows = np.searchsorted(grid, t)
        out[n, rows] = v * (m != 0)
        mask[n, rows] = m != 0
    return IrregularBatch(out, grid, mask)


def _pair(value, name: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"irregular_sines: {name} must be a pair (low, high) of numbers, got {value!r}") from None
    if not 0 <= low <= high:
        raise ValueError(f"irregular_sines: {name} must have 0 <= low <= high, got {value!r}")
    return low, high


def _count(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"irregular_sines: {name} must be an integer >= 1, got {value!r}")
    return int(value)


def irregular_sines(num_sequences: int, grid_size: int = 50, num_observed: int = 10, features: int = 1,
                    t_max: float = 5.0, frequency=(1.0, 2.0), amplitude=(0.5, 1.5), feature_prob: float = 1.0,
                    noise_std: float = 0.0, seed: int | None = None, dtype=np.float32) -> IrregularSines:
    """N = ``num_sequences`` sine signals x_d(t) = a sin(w t + phi_d) on ``grid_size`` regular
    times in [0, ``t_max``], w uniform in ``frequency`` (radians per unit time), a uniform in
    ``amplitude``, phi_d uniform in [0, 2 pi); ``values`` add N(0, ``noise_std``^2) noise.
    The mask observes ``num_observed`` distinct random times per sequence, each feature kept
    there with probability ``feature_prob`` (at least one per observed time). Seeded by ``seed``."""
    n, size = _count(num_sequences, "num_sequences"), _count(grid_size, "grid_size")
    observed, d = _count(num_observed, "num_observed"), _count(features, "features")
    if observed > size:
        raise ValueError(f"irregular_sines: num_observed={observed} exceeds grid_size={size}")
    if not float(t_max) > 0:
        raise ValueError(f"irregular_sines: t_max must be positive, got {t_max!r}")
    if not 0 < float(feature_prob) <= 1:
        raise ValueError(f"irregular_sines: feature_prob must be in (0, 1], got {feature_prob!r}")
    if not float(noise_std) >= 0:
        raise ValueError(f"irregular_sines: noise_std must be >= 0, got {noise_std!r}")
    rng = np.random.default_rng(seed)
    times = np.linspace(0.0, float(t_max), size)
    w = rng.uniform(*_pair(frequency, "frequency"), size=n)
    a = rng.uniform(*_pair(amplitude, "amplitude"), size=n)
    phi = rng.uniform(0.0, 2 * np.pi, size=(n, d))
    clean = a[:, None, None] * np.sin(w[:, None, None] * times[None, :, None] + phi[:, None, :])
    values = clean + float(noise_std) * rng.standard_normal(clean.shape)
    mask = np.zeros((n, size, d))
    for i in range(n):
        rows = rng.choice(size, observed, replace=False)
        keep = rng.random((observed, d)) < float(feature_prob)
        keep[np.arange(observed), rng.integers(0, d, observed)] = True
        mask[i, rows] = keep
    return IrregularSines(values.astype(dtype), clean.astype(dtype), times, mask.astype(dtype), w, a, phi)
