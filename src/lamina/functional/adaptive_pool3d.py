"""Adaptive average and max pooling of (N, D, H, W, C) volumes, as PyTorch's
adaptive_avg_pool3d / adaptive_max_pool3d: o_d x o_h x o_w windows spread evenly over the
volume (PyTorch's windows, :func:`lamina.functional.adaptive_pool.adaptive_windows`).

Each window is a product of one interval per axis, and the mean (or maximum) over such a
product is the mean (maximum) over one axis of the means (maxima) over the others, so the
volume is pooled over (H, W) as images, then over D: two 2-D adaptive pools, whose gradients
(of every order) are the 3-D pool's.
"""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.adaptive_pool import adaptive_avg_pool2d, adaptive_max_pool2d, maxima_positions
from lamina.functional.shape import reshape

__all__ = ["adaptive_avg_pool3d", "adaptive_max_pool3d", "adaptive_max_pool3d_with_indices"]


def _sizes(x: Tensor, output_size, op: str) -> tuple[int, int, int]:
    if x.ndim != 5 or min(x.shape[1:4]) < 1:
        raise ShapeError(f"{op}: expected x of shape (N, D, H, W, C) (5-D, each spatial axis non-empty), got shape "
                         f"{tuple(x.shape)}")
    sizes = (output_size,) * 3 if not isinstance(output_size, (tuple, list)) else tuple(output_size)
    if len(sizes) != 3 or any(s is not None and (isinstance(s, bool) or not isinstance(s, int) or s < 1)
                              for s in sizes):
        raise ValueError(f"{op}: output_size must be a positive int or 3 of them (None keeps an axis), got "
                         f"{output_size!r}")
    return tuple(n if s is None else s for s, n in zip(sizes, x.shape[1:4]))


def _pool3d(pool2d, x: Tensor, output_size, op: str) -> Tensor:
    od, oh, ow = _sizes(x, output_size, op)
    n, d, h, w, c = x.shape
    planes = pool2d(reshape(x, (n * d, h, w, c)), (oh, ow))             # (N D, o_h, o_w, C)
    depth = pool2d(reshape(planes, (n, d, oh * ow, c)), (od, oh * ow))   # over D, the planes' pixels kept
    return reshape(depth, (n, od, oh, ow, c))


def adaptive_avg_pool3d(x: Tensor, output_size) -> Tensor:
    """The mean over each of o_d x o_h x o_w windows: (N, D, H, W, C) -> (N, o_d, o_h, o_w, C)."""
    return _pool3d(adaptive_avg_pool2d, x, output_size, "adaptive_avg_pool3d")


def adaptive_max_pool3d(x: Tensor, output_size, return_indices: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """The maximum over each of o_d x o_h x o_w windows: (N, D, H, W, C) -> (N, o_d, o_h, o_w, C).
    ``return_indices``: also the int64 positions (d H + i) W + j of the maxima in each channel's
    volume (PyTorch's indices): the plane each window's maximum lies in, then its place there."""
    out = _pool3d(adaptive_max_pool2d, x, output_size, "adaptive_max_pool3d")
    if not return_indices:
        return out
    xp = backend.xp
    od, oh, ow = _sizes(x, output_size, "adaptive_max_pool3d")
    n, d, h, w, c = x.shape
    values = (x.data if isinstance(x, Tensor) else xp.asarray(x)).reshape(n * d, h, w, c)
    planes = maxima_positions(values, (oh, ow)).reshape(n * d, oh * ow, c)      # each plane's own maxima
    plane_maxima = xp.take_along_axis(values.reshape(n * d, h * w, c), planes, axis=1)
    planes, plane_maxima = planes.reshape(n, d, oh * ow, c), plane_maxima.reshape(n, d, oh * ow, c)
    depth = maxima_positions(plane_maxima, (od, oh * ow)) // (oh * ow)          # (N, o_d, o_h o_w, C)
    within = xp.take_along_axis(planes, depth, axis=1)
    return out, Tensor((depth * (h * w) + within).reshape(n, od, oh, ow, c))


def adaptive_max_pool3d_with_indices(x: Tensor, output_size, return_indices: bool = False) -> tuple[Tensor, Tensor]:
    """PyTorch's name: :func:`adaptive_max_pool3d` with its indices, (maxima, positions)."""
    return adaptive_max_pool3d(x, output_size, return_indices=True)
