"""ROCKET (Dempster, Petitjean & Webb, 2020): features from many random convolution kernels.

Each kernel k has a length l_k drawn from {7, 9, 11}, weights w ~ N(0, 1) centred to mean 0
(per channel), a bias b ~ U(-1, 1), a dilation d = floor(2^u) with u ~ U(0, log2((L - 1) /
(l - 1))) for series of L steps, and with probability 1/2 a zero padding of p = floor((l - 1)
d / 2) steps at both ends. Its convolution of a series x is

    z_t = b + sum_{c in channels_k} sum_{j=0}^{l-1} w_{j,c} x_{t - p + j d, c},   t = 0 .. L + 2p - (l - 1) d - 1

(x is 0 outside 0 .. L - 1), and it gives two features: the proportion of positive values
PPV = mean_t [z_t > 0] and the maximum max_t z_t. For multivariate series (as the reference's
multivariate version) each kernel reads a random subset of floor(2^v) channels, v ~
U(0, log2(min(C, l) + 1)).

The transform is vectorised: the kernels sharing a (length, dilation, padding) are applied at
once as one matrix product of the (N, steps, l C) windows with their (l C, kernels) weights.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lamina.errors import ShapeError
from lamina.models.tsc._panel import as_panel, batches, check_channels, check_fitted

__all__ = ["Rocket"]

_WINDOW_BUDGET = 4_000_000          # floats of windows held at once


class Rocket:
    """ROCKET: ``num_kernels`` random kernels, 2 features each (PPV, max), interleaved as the
    reference: column 2k is kernel k's PPV, column 2k + 1 its max.

    ``fit(x)`` draws the kernels for the length and channels of x ((N, L) or (N, L, C));
    ``transform(x)`` gives (N, 2 num_kernels) float64 features. After fitting, ``lengths``,
    ``weights`` (one (l_k, C) array a kernel, zero on the channels it does not read),
    ``channels`` (the channel indices it reads), ``biases``, ``dilations`` and ``paddings``
    describe the kernels."""

    def __init__(self, num_kernels: int = 10_000, seed: int | None = None, kernel_lengths=(7, 9, 11)):
        if isinstance(num_kernels, bool) or not isinstance(num_kernels, (int, np.integer)) or num_kernels < 1:
            raise ValueError(f"Rocket: num_kernels must be a positive int, got {num_kernels!r}")
        lengths = tuple(int(v) for v in kernel_lengths)
        if not lengths or min(lengths) < 2:
            raise ValueError(f"Rocket: kernel_lengths must be ints >= 2, got {kernel_lengths!r}")
        self.num_kernels = int(num_kernels)
        self.seed = seed
        self.kernel_lengths = lengths
        self.fitted = False

    @property
    def num_features(self) -> int:
        return 2 * self.num_kernels

    def fit(self, x: Any, y: Any = None) -> Rocket:
        x = as_panel(x, "Rocket.fit")
        _, length, channels = x.shape
        longest = max(self.kernel_lengths)
        if length < longest:
            raise ShapeError(f"Rocket.fit: series of {length} steps (shape {x.shape}) are shorter than the longest "
                             f"kernel ({longest} steps); expected at least {longest} steps")
        rng = np.random.default_rng(self.seed)
        self.input_length, self.in_channels = length, channels
        self.lengths = rng.choice(self.kernel_lengths, self.num_kernels).astype(np.int64)
        self.weights, self.channels = [], []
        self.biases = np.empty(self.num_kernels)
        self.dilations = np.empty(self.num_kernels, dtype=np.int64)
        self.paddings = np.empty(self.num_kernels, dtype=np.int64)
        for k, size in enumerate(self.lengths):
            used = int(2 ** rng.uniform(0, np.log2(min(channels, size) + 1)))
            chosen = np.sort(rng.choice(channels, used, replace=False))
            w = rng.standard_normal((size, used))
            weights = np.zeros((size, channels))
            weights[:, chosen] = w - w.mean(axis=0)
            self.weights.append(weights)
            self.channels.append(chosen)
            self.biases[k] = rng.uniform(-1, 1)
            dilation = int(2 ** rng.uniform(0, np.log2((length - 1) / (size - 1))))
            self.dilations[k] = dilation
            self.paddings[k] = (size - 1) * dilation // 2 if rng.integers(2) == 1 else 0
        self._groups = self._group_kernels()
        self.fitted = True
        return self

    def _group_kernels(self) -> list[tuple[int, int, int, np.ndarray, np.ndarray]]:
        """(length, dilation, padding, kernel indices, stacked (l C, kernels) weights) per group."""
        keys = np.stack([self.lengths, self.dilations, self.paddings], axis=1)
        groups = []
        for key in np.unique(keys, axis=0):
            index = np.flatnonzero((keys == key).all(axis=1))
            stacked = np.stack([self.weights[k].reshape(-1) for k in index], axis=1)
            groups.append((int(key[0]), int(key[1]), int(key[2]), index, stacked))
        return groups

    def transform(self, x: Any) -> np.ndarray:
        check_fitted(self, "Rocket.transform")
        x = as_panel(x, "Rocket.transform")
        check_channels(x, self.in_channels, "Rocket.transform")
        n, length, channels = x.shape
        spans = (self.lengths - 1) * self.dilations + 1 - 2 * self.paddings
        if length < spans.max():
            raise ShapeError(f"Rocket.transform: series of {length} steps (shape {x.shape}) are shorter than the "
                             f"span of some kernels ({int(spans.max())} steps with their dilation and padding); "
                             f"the kernels were drawn for {self.input_length} steps")
        features = np.empty((n, 2 * self.num_kernels))
        for size, dilation, padding, index, stacked in self._groups:
            steps = length + 2 * padding - (size - 1) * dilation
            padded = np.pad(x, ((0, 0), (padding, padding), (0, 0))) if padding else x
            rows = _WINDOW_BUDGET // (steps * size * channels + 1) + 1
            for part in batches(n, rows):
                taps = [padded[part, j * dilation: j * dilation + steps] for j in range(size)]
                windows = np.stack(taps, axis=2).reshape(-1, steps, size * channels)
                z = windows @ stacked + self.biases[index]
                features[part, 2 * index] = (z > 0).mean(axis=1)
                features[part, 2 * index + 1] = z.max(axis=1)
        return features

    def fit_transform(self, x: Any, y: Any = None) -> np.ndarray:
        return self.fit(x, y).transform(x)

    def __repr__(self) -> str:
        return f"Rocket(num_kernels={self.num_kernels}, seed={self.seed})"
