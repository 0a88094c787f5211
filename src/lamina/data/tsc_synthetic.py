"""Synthetic time-series classification tasks for tests and examples.

* :func:`cylinder_bell_funnel` (Saito, 1994; the UCR archive's CBF): on t = 1 .. L (L = 128 in
  the original),

      cylinder(t) = (6 + eta) chi_[a, b](t)                   + eps(t)
      bell(t)     = (6 + eta) chi_[a, b](t) (t - a) / (b - a) + eps(t)
      funnel(t)   = (6 + eta) chi_[a, b](t) (b - t) / (b - a) + eps(t)

  with eta, eps(t) ~ N(0, 1), a ~ U[16, 32], b - a ~ U[32, 96] and chi_[a, b] the indicator of
  a <= t <= b (the ranges scale with L / 128 for other lengths). Classes 0, 1, 2.
* :func:`synthetic_waveforms`: sine (class 0), square (1) and sawtooth (2) waves with random
  phase, frequency and amplitude, plus Gaussian noise.

Both return x of shape (N, L, 1) (channels last) and integer labels y (N,).
"""

from __future__ import annotations

import numpy as np

__all__ = ["CBF_CLASSES", "WAVEFORM_CLASSES", "cylinder_bell_funnel", "synthetic_waveforms"]

CBF_CLASSES = ("cylinder", "bell", "funnel")
WAVEFORM_CLASSES = ("sine", "square", "sawtooth")


def _check_sizes(n: int, length: int, minimum: int, who: str) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{who}: n must be a positive int, got {n!r}")
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < minimum:
        raise ValueError(f"{who}: length must be an int of at least {minimum}, got {length!r}")


def cylinder_bell_funnel(n: int, length: int = 128, seed: int | None = None,
                         dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """n CBF series (Saito, 1994) of ``length`` steps, classes balanced in turn (0, 1, 2, 0 ...)
    then shuffled: x (n, length, 1), y (n,) in {0: cylinder, 1: bell, 2: funnel}."""
    _check_sizes(n, length, 8, "cylinder_bell_funnel")
    rng = np.random.default_rng(seed)
    scale = length / 128.0
    y = rng.permutation(np.arange(n) % 3)
    a = rng.uniform(16, 32, n) * scale
    b = a + rng.uniform(32, 96, n) * scale
    eta = rng.standard_normal(n)
    t = np.arange(1, length + 1, dtype=np.float64)[None, :]
    a, b = a[:, None], b[:, None]
    inside = (t >= a) & (t <= b)
    shape = np.where(y[:, None] == 0, 1.0, np.where(y[:, None] == 1, (t - a) / (b - a), (b - t) / (b - a)))
    x = (6.0 + eta[:, None]) * inside * shape + rng.standard_normal((n, length))
    return x[:, :, None].astype(dtype), y.astype(np.int64)


def synthetic_waveforms(n: int, length: int = 64, noise: float = 0.3, seed: int | None = None,
                        dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """n series of ``length`` steps: a sine (class 0), square (1) or sawtooth (2) wave of
    1.5 to 4 periods over the series, random phase, amplitude in [0.5, 2], plus N(0, noise^2)
    noise: x (n, length, 1), y (n,)."""
    _check_sizes(n, length, 4, "synthetic_waveforms")
    if noise < 0:
        raise ValueError(f"synthetic_waveforms: noise must be >= 0, got {noise!r}")
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % 3)
    periods = rng.uniform(1.5, 4.0, (n, 1))
    phase = rng.uniform(0.0, 1.0, (n, 1))
    amplitude = rng.uniform(0.5, 2.0, (n, 1))
    cycle = (np.arange(length)[None, :] / length * periods + phase) % 1.0   # position in the period, [0, 1)
    waves = np.where(y[:, None] == 0, np.sin(2 * np.pi * cycle),
                     np.where(y[:, None] == 1, np.where(cycle < 0.5, 1.0, -1.0), 2.0 * cycle - 1.0))
    x = amplitude * waves + noise * rng.standard_normal((n, length))
    return x[:, :, None].astype(dtype), y.astype(np.int64)
