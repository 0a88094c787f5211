"""RAFT's all-pairs correlation (Teed & Deng 2020): the correlation volume of two feature maps,
its average-pooled pyramid, the bilinear lookup around the current coordinates
(:func:`index_pyramid`) and :class:`CorrBlock`, which keeps the pyramid between lookups.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.raft_blocks import _constant, _tensor
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.module import Module

__all__ = ["CorrBlock", "correlation_pyramid", "correlation_volume", "index_pyramid"]


def correlation_volume(fmap1, fmap2) -> Tensor:
    """C[n, i, j, k, l] = <f1[n, i, j], f2[n, k, l]> / sqrt(D) of two (N, h, w, D) maps, as
    (N h w, h, w, 1): one single-channel 'image' over (k, l) per source pixel (n, i, j)."""
    fmap1, fmap2 = _tensor(fmap1), _tensor(fmap2)
    if fmap1.ndim != 4 or tuple(fmap1.shape) != tuple(fmap2.shape):
        raise ShapeError(f"correlation_volume: expected two (N, h, w, D) feature maps of one shape, got "
                         f"{tuple(fmap1.shape)} and {tuple(fmap2.shape)}")
    n, h, w, d = fmap1.shape
    rows1 = F.reshape(fmap1, n, h * w, d)
    rows2 = F.reshape(fmap2, n, h * w, d)
    corr = F.matmul(rows1, F.transpose(rows2, 0, 2, 1)) * (1.0 / float(np.sqrt(d)))
    return F.reshape(corr, n * h * w, h, w, 1)


def correlation_pyramid(volume, num_levels: int) -> list[Tensor]:
    """The volume and its 2 x 2 average-pooled versions over the target pixels: ``num_levels``
    levels, level l of size (h / 2^l, w / 2^l), each at least 2 x 2 (the lookup's aligned
    corners divide by size - 1)."""
    levels = [_tensor(volume)]
    for _ in range(num_levels - 1):
        if min(levels[-1].shape[1:3]) < 4:
            raise ShapeError(f"correlation_pyramid: level {len(levels) - 1} of shape {tuple(levels[-1].shape)} is "
                             f"too small to pool into a level of at least 2 x 2 (num_levels={num_levels}); use "
                             "fewer levels or larger images")
        levels.append(F.avg_pool2d(levels[-1], 2, 2))
    return levels


def _offsets(radius: int, dtype) -> np.ndarray:
    """(1, 2r + 1, 2r + 1, 2) with [0, a, b] = (a - r, b - r): the x offset runs along the
    first window axis and the y offset along the second, as torchvision orders them."""
    side = np.arange(-radius, radius + 1, dtype=dtype)
    dx, dy = np.meshgrid(side, side, indexing="ij")
    return np.stack([dx, dy], axis=-1)[None]


def index_pyramid(pyramid: Sequence[Tensor], coords, radius: int) -> Tensor:
    """The correlation features at the (N, h, w, 2) pixel coordinates ``coords`` (x, y):
    every level l read bilinearly (zeros outside) at coords / 2^l + d for the (2r + 1)^2
    offsets |d|_inf <= r, as (N, h, w, levels (2r + 1)^2), levels outermost."""
    coords = _tensor(coords)
    n, h, w, _ = coords.shape
    if pyramid[0].shape[0] != n * h * w:
        raise ShapeError(f"index_pyramid: coordinates of shape {tuple(coords.shape)} do not match a pyramid with "
                         f"{pyramid[0].shape[0]} source pixels (expected N h w)")
    side = 2 * radius + 1
    offsets = _constant(_offsets(radius, coords.dtype))
    centres = F.reshape(coords, n * h * w, 1, 1, 2)
    features = []
    for level, volume in enumerate(pyramid):
        rows, cols = volume.shape[1:3]
        if min(rows, cols) < 2:
            raise ShapeError(f"index_pyramid: level {level} has shape {tuple(volume.shape)}; bilinear lookup with "
                             "aligned corners needs at least 2 x 2 target pixels (use fewer levels)")
        # absolute pixels -> grid_sample's [-1, 1] with aligned corners: 2 x / (size - 1) - 1
        scale = np.array([2.0 / (cols - 1), 2.0 / (rows - 1)], dtype=coords.dtype) / 2.0 ** level
        grid = (centres * _constant(scale) + offsets * _constant(scale * 2.0 ** level)) - 1.0
        sampled = F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        features.append(F.reshape(sampled, n, h, w, side * side))
    return F.concat(features, axis=-1)


@register_with_arguments
class CorrBlock(Module):
    """The correlation block: ``build_pyramid(fmap1, fmap2)`` keeps the pyramid of
    ``num_levels`` levels, ``index_pyramid(coords)`` reads it around the coordinates with
    radius ``radius``; ``out_channels`` = levels (2r + 1)^2. No weights."""

    def __init__(self, num_levels: int = 4, radius: int = 4, name: str | None = None):
        super().__init__(name=name)
        self.num_levels, self.radius = int(num_levels), int(radius)
        self.out_channels = self.num_levels * (2 * self.radius + 1) ** 2
        self.corr_pyramid: list[Tensor] = []

    def build(self, input_shape=None) -> None:
        self.built = True

    def build_pyramid(self, fmap1, fmap2) -> list[Tensor]:
        self.corr_pyramid = correlation_pyramid(correlation_volume(fmap1, fmap2), self.num_levels)
        return self.corr_pyramid

    def index_pyramid(self, centroids_coords) -> Tensor:
        if not self.corr_pyramid:
            raise RuntimeError(f"{self._label()}: call build_pyramid before index_pyramid")
        return index_pyramid(self.corr_pyramid, centroids_coords, self.radius)

    def forward(self, fmap1, fmap2, centroids_coords) -> Tensor:
        self.build_pyramid(fmap1, fmap2)
        return self.index_pyramid(centroids_coords)
