"""MiniRocket (Dempster, Schmidt & Webb, 2021): ROCKET made (almost) deterministic.

The kernels are fixed: length 9, weights -1 except 2 at three of the nine positions, the
C(9, 3) = 84 ways to choose them (every kernel sums to 0). Each kernel is used at the
dilations D = unique(floor(2^e)), e on an even grid of up to 32 exponents from 0 to
log2((L - 1) / 8), with 'same' zero padding (p = 4 d):

    z_t = sum_{j=0}^{8} w_j x_{t + (j - 4) d},   t = 0 .. L - 1.

A (kernel, dilation) pair gives several features: PPV_i = mean_t [z_t > b_i] for biases b_i
that are quantiles of z computed on one random training series; the quantile levels are the
low-discrepancy sequence frac(i phi), phi the golden ratio. Half of the (kernel, dilation)
pairs (alternating) take the PPV over the unpadded middle z_p .. z_{L-p-1} only. About 10,000
features in all; only the choice of the training series (and, for C > 1 channels, the random
channel subsets z sums over, as the multivariate version) is random.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from lamina.errors import ShapeError
from lamina.models.tsc._panel import as_panel, batches, check_channels, check_fitted

__all__ = ["MINIROCKET_KERNEL_INDICES", "MiniRocket", "minirocket_dilations", "minirocket_kernels",
           "proportion_of_positive_values"]

KERNEL_LENGTH = 9
MINIROCKET_KERNEL_INDICES = np.array(list(itertools.combinations(range(KERNEL_LENGTH), 3)))


def minirocket_kernels() -> np.ndarray:
    """The 84 kernels (84, 9): -1 everywhere, 2 at each combination of three positions."""
    kernels = -np.ones((len(MINIROCKET_KERNEL_INDICES), KERNEL_LENGTH))
    np.put_along_axis(kernels, MINIROCKET_KERNEL_INDICES, 2.0, axis=1)
    return kernels


def minirocket_dilations(input_length: int, num_features: int = 10_000,
                         max_dilations_per_kernel: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(dilations, features per dilation) for series of ``input_length`` steps: the reference's
    exponentially spaced dilations, each given features in proportion to how many grid points
    round to it, the remainder handed out one by one from the smallest dilation."""
    per_kernel = num_features // len(MINIROCKET_KERNEL_INDICES)
    count = min(per_kernel, max_dilations_per_kernel)
    multiplier = per_kernel / count
    top = np.log2((input_length - 1) / (KERNEL_LENGTH - 1))
    dilations, repeats = np.unique(np.logspace(0, top, count, base=2).astype(np.int64), return_counts=True)
    per_dilation = (repeats * multiplier).astype(np.int64)
    for i in range(per_kernel - int(per_dilation.sum())):
        per_dilation[i % len(per_dilation)] += 1
    return dilations, per_dilation


def _quantile_levels(n: int) -> np.ndarray:
    """frac(i phi), i = 1 .. n, phi = (1 + sqrt 5) / 2."""
    return (np.arange(1, n + 1) * ((np.sqrt(5) + 1) / 2)) % 1


def _taps(x: np.ndarray, dilation: int) -> np.ndarray:
    """(9, N, L, C): x_{t + (j - 4) d} for j = 0 .. 8, zero outside the series."""
    padding = (KERNEL_LENGTH // 2) * dilation
    length = x.shape[1]
    padded = np.pad(x, ((0, 0), (padding, padding), (0, 0)))
    return np.stack([padded[:, j * dilation: j * dilation + length] for j in range(KERNEL_LENGTH)])


def proportion_of_positive_values(z: np.ndarray, biases: np.ndarray) -> np.ndarray:
    """PPV = mean_t [z_t > b] for (kernels, N, steps) outputs and (kernels, B) biases:
    (kernels, N, B)."""
    above = z[:, :, None, :] > biases[:, None, :, None]                # (kernels, N, B, steps)
    return above.view(np.uint8).sum(axis=-1, dtype=np.int64) / z.shape[-1]


class MiniRocket:
    """MiniRocket: ``fit(x)`` picks the dilations for the series' length and the biases from
    random training series; ``transform(x)`` gives (N, num_features_out) float64 PPV features,
    ordered by dilation, then kernel, then bias (as the reference). ``num_features`` is
    rounded down to a multiple of 84. Needs series of at least 9 steps."""

    def __init__(self, num_features: int = 10_000, max_dilations_per_kernel: int = 32, seed: int | None = None):
        kernels = len(MINIROCKET_KERNEL_INDICES)
        if isinstance(num_features, bool) or not isinstance(num_features, (int, np.integer)) or \
                num_features < kernels:
            raise ValueError(f"MiniRocket: num_features must be an int of at least {kernels}, got {num_features!r}")
        if int(max_dilations_per_kernel) < 1:
            raise ValueError(f"MiniRocket: max_dilations_per_kernel must be >= 1, got {max_dilations_per_kernel!r}")
        self.num_features = int(num_features)
        self.max_dilations_per_kernel = int(max_dilations_per_kernel)
        self.seed = seed
        self.fitted = False

    @property
    def num_features_out(self) -> int:
        return len(MINIROCKET_KERNEL_INDICES) * (self.num_features // len(MINIROCKET_KERNEL_INDICES))

    def _convolve_all(self, taps: np.ndarray, dilation_index: int) -> np.ndarray:
        """(84, N, L): every kernel's output at one dilation, summed over its channel subset,
        from :func:`_taps` (sum_j w_j x_(t+(j-4)d) = 3 (x_i + x_j + x_k) - sum_j x_(t+(j-4)d))."""
        first, second, third = MINIROCKET_KERNEL_INDICES.T
        per_channel = 3.0 * (taps[first] + taps[second] + taps[third]) - taps.sum(axis=0)
        if self.in_channels == 1:
            return per_channel[..., 0]
        kernels = len(MINIROCKET_KERNEL_INDICES)
        subsets = self.channel_subsets[dilation_index * kernels:(dilation_index + 1) * kernels]
        return np.stack([per_channel[k][..., subset].sum(axis=-1) for k, subset in enumerate(subsets)])

    def fit(self, x: Any, y: Any = None) -> MiniRocket:
        x = as_panel(x, "MiniRocket.fit")
        n, length, channels = x.shape
        if length < KERNEL_LENGTH:
            raise ShapeError(f"MiniRocket.fit: series of {length} steps (shape {x.shape}) are shorter than the "
                             f"kernels ({KERNEL_LENGTH} steps); expected at least {KERNEL_LENGTH} steps")
        rng = np.random.default_rng(self.seed)
        self.input_length, self.in_channels = length, channels
        self.dilations, self.features_per_dilation = minirocket_dilations(
            length, self.num_features, self.max_dilations_per_kernel)
        kernels = len(MINIROCKET_KERNEL_INDICES)
        pairs = len(self.dilations) * kernels
        most = np.log2(min(channels, KERNEL_LENGTH) + 1)
        counts = (2 ** rng.uniform(0, most, pairs)).astype(np.int64)
        self.channel_subsets = [np.sort(rng.choice(channels, c, replace=False)) for c in counts]
        levels = _quantile_levels(self.num_features_out)
        self.biases = np.empty(self.num_features_out)
        start = 0
        for d, dilation in enumerate(self.dilations):
            each = int(self.features_per_dilation[d])
            examples = x[rng.integers(n, size=kernels)]          # one random training series a kernel
            z = self._convolve_all(_taps(examples, int(dilation)), d)
            for kernel in range(kernels):
                self.biases[start:start + each] = np.quantile(z[kernel, kernel], levels[start:start + each])
                start += each
        self.fitted = True
        return self

    def transform(self, x: Any) -> np.ndarray:
        return self.pooled_features(x, [proportion_of_positive_values], "MiniRocket.transform")[0]

    def pooled_features(self, x: Any, pools, who: str = "MiniRocket.transform") -> list[np.ndarray]:
        """One (N, num_features_out) array for each pooling function of ``pools``:
        ``pool(z, biases)`` maps the kernels' outputs z (kernels, N, steps) and their biases
        (kernels, B) to (kernels, N, B) features (:func:`proportion_of_positive_values` is
        MiniRocket's)."""
        check_fitted(self, who)
        x = as_panel(x, who)
        check_channels(x, self.in_channels, who)
        n, length, _ = x.shape
        widest = 2 * (KERNEL_LENGTH // 2) * int(self.dilations.max()) + 1
        if length < widest:
            raise ShapeError(f"{who}: series of {length} steps (shape {x.shape}) are shorter than the widest "
                             f"dilated kernel ({widest} steps); it was fitted on {self.input_length} steps")
        kernels = len(MINIROCKET_KERNEL_INDICES)
        outputs = [np.empty((n, self.num_features_out)) for _ in pools]
        parity = np.arange(kernels) % 2
        rows = max(1, 1_000_000 // (kernels * length * self.in_channels))
        for part in batches(n, rows):
            start = 0
            for d, dilation in enumerate(self.dilations):
                z = self._convolve_all(_taps(x[part], int(dilation)), d)
                padding = (KERNEL_LENGTH // 2) * int(dilation)
                each = int(self.features_per_dilation[d])
                columns = slice(start, start + kernels * each)
                biases = self.biases[columns].reshape(kernels, each)
                blocks = [np.empty((z.shape[1], kernels, each)) for _ in pools]
                for middle_only in (0, 1):         # alternate pairs: features of the unpadded middle only
                    chosen = np.flatnonzero((parity + d) % 2 == middle_only)
                    steps = slice(padding, length - padding) if middle_only else slice(None)
                    for pool, block in zip(pools, blocks):
                        block[:, chosen] = pool(z[chosen, :, steps], biases[chosen]).transpose(1, 0, 2)
                for out, block in zip(outputs, blocks):
                    out[part, columns] = block.reshape(-1, kernels * each)
                start += kernels * each
        return outputs

    def fit_transform(self, x: Any, y: Any = None) -> np.ndarray:
        return self.fit(x, y).transform(x)

    def __repr__(self) -> str:
        return f"MiniRocket(num_features={self.num_features}, seed={self.seed})"
