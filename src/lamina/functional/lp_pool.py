"""Power-average (LP) pooling, as PyTorch's ``F.lp_pool1d`` / ``F.lp_pool2d``: over each
window of k values,

    y = (sum over the window of x^p)^(1/p),

computed as PyTorch does, from the average pool of x^p times the kernel size k (so a
ceil-mode window that overhangs the input is scaled as PyTorch scales it: by k over the number
of inputs it covers). p = 1 is sum pooling; large p approaches max pooling. Channel-last:
(N, L, C) sequences, (N, H, W, C) images and (N, D, H, W, C) volumes. Built from power, padding
and average pooling, so its gradients of every order are theirs, but for a window whose sum of
x^p is 0 (all zero, common after a ReLU): there the root is taken of 1 and masked to 0, so the
gradient is 0 as in PyTorch rather than 0 * inf = NaN.
"""

from __future__ import annotations

import math

import numpy

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.elementwise import where
from lamina.functional.pool3d import avg_pool3d
from lamina.functional.pooling import avg_pool2d
from lamina.functional.shape import pad, reshape

__all__ = ["lp_pool1d", "lp_pool2d", "lp_pool3d"]


def _norm_type(norm_type, op: str) -> float:
    if isinstance(norm_type, bool) or not isinstance(norm_type, (int, float)) or not 0 < norm_type < math.inf:
        raise ValueError(f"{op}: norm_type must be a positive finite number, got {norm_type!r}")
    return float(norm_type)


def _pair(value, what: str, op: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else tuple(value)
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in pair):
        raise ValueError(f"{op}: {what} must be a positive int or a pair of them, got {value!r}")
    return pair


def _triple(value, what: str, op: str) -> tuple[int, int, int]:
    triple = (value,) * 3 if isinstance(value, int) and not isinstance(value, bool) else tuple(value)
    if len(triple) != 3 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in triple):
        raise ValueError(f"{op}: {what} must be a positive int or 3 of them (depth, height, width), got {value!r}")
    return triple


def _window_count(n: int, k: int, s: int, ceil_mode: bool) -> int:
    """The number of windows of k with stride s along n inputs: floor((n - k) / s) + 1, or with
    ``ceil_mode`` ceil((n - k) / s) + 1 less a last window that would start past the input."""
    if not ceil_mode:
        return (n - k) // s + 1
    out = -(-(n - k) // s) + 1
    return out - 1 if (out - 1) * s >= n else out


def _covered(n: int, k: int, s: int, out: int):
    """How many of the n inputs each of the ``out`` windows covers (k but at an overhanging end)."""
    starts = numpy.arange(out) * s
    return numpy.minimum(starts + k, n) - starts


def _root(total: Tensor, p: float) -> Tensor:
    """total^(1/p), with 0 (and a 0 gradient) where total is 0: the root's infinite slope there
    would otherwise meet the zero slope of x^p and make every input of the window NaN."""
    zero = total.data == 0
    if not zero.any():
        return total ** (1.0 / p)
    return where(zero, 0.0, where(zero, 1.0, total) ** (1.0 / p))


def lp_pool2d(x: Tensor, norm_type: float, kernel_size, stride=None, ceil_mode: bool = False) -> Tensor:
    """(sum of x^p over each f_h x f_w window)^(1/p) of NHWC images; ``stride`` defaults to
    the kernel size."""
    if x.ndim != 4:
        raise ShapeError(f"lp_pool2d: expected x of shape (N, H, W, C) (4-D, NHWC), got shape {tuple(x.shape)}")
    p = _norm_type(norm_type, "lp_pool2d")
    kernel = _pair(kernel_size, "kernel_size", "lp_pool2d")
    stride = kernel if stride is None else _pair(stride, "stride", "lp_pool2d")
    mean = avg_pool2d(x ** p, kernel, stride, 0, ceil_mode)
    return _root(mean * float(kernel[0] * kernel[1]), p)


def lp_pool1d(x: Tensor, norm_type: float, kernel_size: int, stride: int | None = None,
              ceil_mode: bool = False) -> Tensor:
    """(sum of x^p over each window of k steps)^(1/p) of (N, L, C) sequences."""
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1:
        raise ValueError(f"lp_pool1d: kernel_size must be a positive int, got {kernel_size!r}")
    if stride is not None and (isinstance(stride, bool) or not isinstance(stride, int) or stride < 1):
        raise ValueError(f"lp_pool1d: stride must be a positive int or None, got {stride!r}")
    if x.ndim != 3:
        raise ShapeError(f"lp_pool1d: expected x of shape (N, L, C) (3-D), got shape {tuple(x.shape)}")
    images = reshape(x, (x.shape[0], 1, *x.shape[1:]))
    y = lp_pool2d(images, norm_type, (1, kernel_size), (1, stride or kernel_size), ceil_mode)
    return reshape(y, (y.shape[0], *y.shape[2:]))


def lp_pool3d(x: Tensor, norm_type: float, kernel_size, stride=None, ceil_mode: bool = False) -> Tensor:
    """(sum of x^p over each f_d x f_h x f_w window)^(1/p) of NDHWC volumes (N, D, H, W, C);
    ``stride`` defaults to the kernel size. With ``ceil_mode`` a window overhanging the input
    gives (k / covered) (sum of x^p over the inputs it covers)^(1/p), k = f_d f_h f_w, as PyTorch."""
    op = "lp_pool3d"
    p = _norm_type(norm_type, op)
    kernel = _triple(kernel_size, "kernel_size", op)
    stride = kernel if stride is None else _triple(stride, "stride", op)
    if x.ndim != 5:
        raise ShapeError(f"{op}: expected x of shape (N, D, H, W, C) (5-D, NDHWC), got shape {tuple(x.shape)}")
    spatial = tuple(x.shape[1:4])
    if any(k > n for k, n in zip(kernel, spatial)):
        raise ShapeError(f"{op}: the window {kernel} is larger than the volume {spatial} of x of shape "
                         f"{tuple(x.shape)}")
    outs = [_window_count(n, k, s, ceil_mode) for n, k, s in zip(spatial, kernel, stride)]
    overhang = [max(0, (o - 1) * s + k - n) for o, s, k, n in zip(outs, stride, kernel, spatial)]
    k = float(math.prod(kernel))
    powered = x ** p
    if not any(overhang):
        return _root(avg_pool3d(powered, kernel, stride) * k, p)
    powered = pad(powered, ((0, 0), *((0, e) for e in overhang), (0, 0)))
    d, h, w = (_covered(n, f, s, o) for n, f, s, o in zip(spatial, kernel, stride, outs))
    covered = d[:, None, None] * h[None, :, None] * w[None, None, :]
    scale = backend.xp.asarray((k * k / covered)[None, ..., None], dtype=powered.dtype)
    return _root(avg_pool3d(powered, kernel, stride) * scale, p)
