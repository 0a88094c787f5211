"""Checks shared by the random-convolution transforms: series as an (N, L, C) float64 panel."""

from __future__ import annotations

from typing import Any

import numpy as np

from lamina.data.preprocessing import NotFittedError
from lamina.errors import ShapeError


def as_panel(x: Any, who: str) -> np.ndarray:
    """``x`` ((N, L), (N, L, C) or a list of equal-length series) as an (N, L, C) float64 array."""
    if isinstance(x, (list, tuple)):
        shapes = {np.shape(s) for s in x}
        if len(shapes) > 1:
            raise ShapeError(f"{who}: got series of unequal shapes {sorted(shapes)[:4]}; pad them to one length "
                             "first (lamina.data.pad_series)")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim != 3 or x.shape[0] == 0:
        raise ShapeError(f"{who}: expected a non-empty batch of series of shape (N, L) or (N, L, C), "
                         f"got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{who}: the series contain NaN or inf values (missing values or padding); fill them first")
    return x


def check_fitted(transform, who: str) -> None:
    if not getattr(transform, "fitted", False):
        raise NotFittedError(f"{who}: call fit(x) before transform(x)")


def check_channels(x: np.ndarray, channels: int, who: str) -> None:
    if x.shape[2] != channels:
        raise ShapeError(f"{who}: got series of shape {x.shape} with {x.shape[2]} channels; the transform was "
                         f"fitted on {channels} channels")


def batches(n: int, rows: int):
    """Slices of at most ``rows`` of n rows."""
    for start in range(0, n, max(rows, 1)):
        yield slice(start, min(start + rows, n))
