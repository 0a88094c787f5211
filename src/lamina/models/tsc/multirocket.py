"""MultiRocket (Tan, Dempster, Bergmeir & Webb, 2022): MiniRocket's kernels on a series and on
its first difference, four pooling operators per (kernel, dilation, bias).

For the output z of a kernel and a bias b, with u_t = z_t - b over the T steps used:

    PPV  = (1 / T) sum_t [u_t > 0]                      proportion of positive values
    MPV  = (1 / m) sum_{t: u_t > 0} u_t                 mean of positive values (0 if m = 0)
    MIPV = (1 / m) sum_{t: u_t > 0} t                   mean index of positive values (-1 if m = 0)
    LSPV = the longest run of consecutive u_t > 0       longest stretch of positive values

(m the number of positive values), as defined in the paper. The kernels, dilations and
biases of each representation are MiniRocket's (:class:`MiniRocket`, fitted on the series and,
separately, on x_{t+1} - x_t), so that ``num_features`` ~ 2 representations x 4 pools x
MiniRocket's features.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lamina.errors import ShapeError
from lamina.models.tsc._panel import as_panel, check_fitted
from lamina.models.tsc.minirocket import MINIROCKET_KERNEL_INDICES, MiniRocket, proportion_of_positive_values

__all__ = ["MultiRocket", "longest_positive_stretch", "mean_index_of_positive_values", "mean_of_positive_values"]

POOLS = ("ppv", "lspv", "mpv", "mipv")


def mean_of_positive_values(z: np.ndarray, biases: np.ndarray) -> np.ndarray:
    """MPV for (kernels, N, steps) outputs and (kernels, B) biases: (kernels, N, B)."""
    u = z[:, :, None, :] - biases[:, None, :, None]
    positive = u > 0
    count = positive.sum(axis=-1)
    total = np.where(positive, u, 0.0).sum(axis=-1)
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0)


def mean_index_of_positive_values(z: np.ndarray, biases: np.ndarray) -> np.ndarray:
    """MIPV for (kernels, N, steps) outputs and (kernels, B) biases: (kernels, N, B)."""
    positive = z[:, :, None, :] > biases[:, None, :, None]
    count = positive.sum(axis=-1)
    total = (positive * np.arange(z.shape[-1])).sum(axis=-1).astype(np.float64)
    return np.divide(total, count, out=np.full(total.shape, -1.0), where=count > 0)


def longest_positive_stretch(z: np.ndarray, biases: np.ndarray) -> np.ndarray:
    """LSPV for (kernels, N, steps) outputs and (kernels, B) biases: (kernels, N, B). The run
    ending at step t has length t - (the last step <= t that is not positive)."""
    positive = z[:, :, None, :] > biases[:, None, :, None]
    steps = np.arange(z.shape[-1])
    last_stop = np.maximum.accumulate(np.where(positive, -1, steps), axis=-1)
    return (steps - last_stop).max(axis=-1).astype(np.float64)


_POOL_FUNCTIONS = {"ppv": proportion_of_positive_values, "lspv": longest_positive_stretch,
                   "mpv": mean_of_positive_values, "mipv": mean_index_of_positive_values}


class MultiRocket:
    """MultiRocket: ``fit(x)`` fits one :class:`MiniRocket` on the series (``base``) and one on
    their first differences (``difference``), each with num_features / 8 features;
    ``transform(x)`` gives (N, num_features_out) float64 features, in blocks: for the series,
    then the differences, the PPV, LSPV, MPV and MIPV of every (dilation, kernel, bias) in
    MiniRocket's order. Needs series of at least 10 steps."""

    def __init__(self, num_features: int = 50_000, max_dilations_per_kernel: int = 32, seed: int | None = None):
        per_representation = int(num_features) // (2 * len(POOLS))
        if per_representation < len(MINIROCKET_KERNEL_INDICES):
            raise ValueError(f"MultiRocket: num_features must be at least {8 * len(MINIROCKET_KERNEL_INDICES)} "
                             f"(2 representations x 4 pools x 84 kernels), got {num_features!r}")
        self.num_features = int(num_features)
        self.seed = seed
        rng = np.random.default_rng(seed)
        seeds = rng.integers(2**32, size=2)
        self.base = MiniRocket(per_representation, max_dilations_per_kernel, seed=int(seeds[0]))
        self.difference = MiniRocket(per_representation, max_dilations_per_kernel, seed=int(seeds[1]))
        self.fitted = False

    @property
    def num_features_out(self) -> int:
        return 2 * len(POOLS) * self.base.num_features_out

    def fit(self, x: Any, y: Any = None) -> MultiRocket:
        x = as_panel(x, "MultiRocket.fit")
        if x.shape[1] < 10:
            raise ShapeError(f"MultiRocket.fit: series of {x.shape[1]} steps (shape {x.shape}) are too short; "
                             "expected at least 10 steps (9 for the kernels on the first differences)")
        self.base.fit(x)
        self.difference.fit(np.diff(x, axis=1))
        self.fitted = True
        return self

    def transform(self, x: Any) -> np.ndarray:
        check_fitted(self, "MultiRocket.transform")
        x = as_panel(x, "MultiRocket.transform")
        pools = [_POOL_FUNCTIONS[name] for name in POOLS]
        blocks = self.base.pooled_features(x, pools, "MultiRocket.transform")
        blocks += self.difference.pooled_features(np.diff(x, axis=1), pools, "MultiRocket.transform")
        return np.concatenate(blocks, axis=1)

    def fit_transform(self, x: Any, y: Any = None) -> np.ndarray:
        return self.fit(x, y).transform(x)

    def __repr__(self) -> str:
        return f"MultiRocket(num_features={self.num_features}, seed={self.seed})"
