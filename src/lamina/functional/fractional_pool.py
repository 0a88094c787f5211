"""Fractional max pooling (Graham, 2014) on NHWC images, as PyTorch's ``fractional_max_pool2d``.

The output is smaller than the input by a factor that need not be an integer: along an axis of
n inputs, m outputs and windows of f, the windows start at the pseudo-random sequence

    alpha = (n - f) / (m - 1)
    start_i = floor((i + u) alpha) - floor(u alpha)   for i < m - 1,   start_{m-1} = n - f

for one sample u in [0, 1) per (sample, channel) and axis (PyTorch's formula, alpha and the
products computed in the input's precision, so that the windows agree with PyTorch's to the
bit). Each output is the maximum of its f_h x f_w window; with the windows fixed, the output
is x read at the first maximum of each window, so the gradient (and its own derivatives) is
that of a gather.
"""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.im2col import pair
from lamina.functional.indexing_parity import take_along_dim
from lamina.functional.shape import reshape

__all__ = ["fractional_max_pool2d", "fractional_max_pool2d_with_indices", "fractional_output_size"]


def _starts(u, n: int, m: int, f: int):
    """Window starts (..., m) along one axis for samples u (...)."""
    xp = backend.xp
    dtype = u.dtype
    starts = xp.empty(u.shape + (m,), dtype=xp.int64)
    if m > 1:
        alpha = dtype.type(n - f) / dtype.type(m - 1)
        i = xp.arange(m - 1, dtype=dtype)
        starts[..., :-1] = (((i + u[..., None]) * alpha).astype(xp.int64)
                            - (u[..., None] * alpha).astype(xp.int64))
    if m > 0:
        starts[..., -1] = n - f
    return starts


def fractional_output_size(input_hw, output_size=None, output_ratio=None, op: str = "fractional_max_pool2d"):
    """(h_out, w_out): ``output_size`` as given, or int(n * ratio) per axis for ``output_ratio``."""
    if (output_size is None) == (output_ratio is None):
        raise ValueError(f"{op}: give exactly one of output_size and output_ratio, got {output_size!r} and "
                         f"{output_ratio!r}")
    if output_size is not None:
        return pair(output_size, "output_size", op)
    ratio = tuple(output_ratio) if isinstance(output_ratio, (tuple, list)) else (output_ratio, output_ratio)
    if len(ratio) != 2 or not all(0 < float(r) < 1 for r in ratio):
        raise ValueError(f"{op}: output_ratio must be a number or a pair in (0, 1), got {output_ratio!r}")
    return tuple(int(n * float(r)) for n, r in zip(input_hw, ratio))


def fractional_max_pool2d_with_indices(x, kernel_size, output_size=None, output_ratio=None,
                                       _random_samples=None) -> tuple[Tensor, object]:
    """Fractional max pooling of the NHWC batch ``x`` (N, H, W, C) into (N, h_out, w_out, C) and
    the flat row * W + col position of each window's first maximum (int64).

    ``_random_samples`` (N, C, 2) in [0, 1), PyTorch's layout: [..., 0] is the width's sample,
    [..., 1] the height's; drawn from ``lamina.backend.rng()`` when not given.
    """
    op = "fractional_max_pool2d"
    xp = backend.xp
    x = x if isinstance(x, Tensor) else Tensor(x)
    if x.ndim != 4:
        raise ShapeError(f"{op}: expected an NHWC batch (N, H, W, C), got shape {tuple(x.shape)}")
    n, h, w, c = x.shape
    f = pair(kernel_size, "kernel_size", op)
    if min(f) < 1:
        raise ValueError(f"{op}: kernel_size must be positive, got {f}")
    outs = fractional_output_size((h, w), output_size, output_ratio, op)
    for axis, size, out, fi in (("height", h, outs[0], f[0]), ("width", w, outs[1], f[1])):
        if out < 1 or out + fi - 1 > size:
            raise ShapeError(f"{op}: an output {axis} of {out} with a pool of {fi} needs an input {axis} of at least "
                             f"{out + fi - 1} (and an output of at least 1), got x of shape {tuple(x.shape)}")
    dtype = x.data.dtype
    if _random_samples is None:
        samples = xp.asarray(backend.rng().random((n, c, 2)), dtype=dtype)
    else:
        samples = xp.asarray(_random_samples.data if isinstance(_random_samples, Tensor) else _random_samples,
                             dtype=dtype)
        if samples.shape != (n, c, 2):
            raise ShapeError(f"{op}: _random_samples must have shape (N, C, 2) = {(n, c, 2)}, got {samples.shape}")
        if samples.size and not (samples.min() >= 0 and samples.max() < 1):
            raise ValueError(f"{op}: _random_samples must lie in [0, 1), got {samples.min()}..{samples.max()}")
    rows = _starts(samples[..., 1], h, outs[0], f[0]).transpose(0, 2, 1)[:, :, None, :]   # (N, h_out, 1, C)
    cols = _starts(samples[..., 0], w, outs[1], f[1]).transpose(0, 2, 1)[:, None, :, :]   # (N, 1, w_out, C)
    batch = xp.arange(n)[:, None, None, None]
    channel = xp.arange(c)[None, None, None, :]
    best = xp.full((n,) + outs + (c,), -xp.inf, dtype=dtype)
    where = xp.zeros((n,) + outs + (c,), dtype=xp.int64)
    data = x.data
    for a in range(f[0]):
        for b in range(f[1]):
            value = data[batch, rows + a, cols + b, channel]
            better = (value > best) | xp.isnan(value)       # strictly greater: the first maximum wins
            best = xp.where(better, value, best)
            where = xp.where(better, (rows + a) * w + cols + b, where)
    picked = take_along_dim(reshape(x, (n, h * w, c)), where.reshape(n, -1, c), axis=1)
    return reshape(picked, (n,) + outs + (c,)), where


def fractional_max_pool2d(x, kernel_size, output_size=None, output_ratio=None, _random_samples=None) -> Tensor:
    """The output of :func:`fractional_max_pool2d_with_indices`."""
    return fractional_max_pool2d_with_indices(x, kernel_size, output_size, output_ratio, _random_samples)[0]
