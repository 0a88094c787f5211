"""Fractional max pooling of NDHWC volumes, as PyTorch's ``fractional_max_pool3d``: along each
of depth, height and width the windows start at the pseudo-random sequence of
:mod:`lamina.functional.fractional_pool`,

    alpha = (n - f) / (m - 1)
    start_i = floor((i + u) alpha) - floor(u alpha)   for i < m - 1,   start_{m-1} = n - f,

for one sample u in [0, 1) per (sample, channel) and axis. Each output is the maximum of its
f_d x f_h x f_w window; with the windows fixed it is x read at the window's first maximum, so
the gradient (and its own derivatives) is that of a gather.
"""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.conv3d import triple
from lamina.functional.fractional_pool import _starts
from lamina.functional.indexing_parity import take_along_dim
from lamina.functional.shape import reshape

__all__ = ["fractional_max_pool3d", "fractional_max_pool3d_with_indices", "fractional_output_size3d"]

AXES = ("depth", "height", "width")


def fractional_output_size3d(input_dhw, output_size=None, output_ratio=None, op: str = "fractional_max_pool3d"):
    """(d_out, h_out, w_out): ``output_size`` as given, or int(n * ratio) per axis for
    ``output_ratio`` (a number or three in (0, 1))."""
    if (output_size is None) == (output_ratio is None):
        raise ValueError(f"{op}: give exactly one of output_size and output_ratio, got {output_size!r} and "
                         f"{output_ratio!r}")
    if output_size is not None:
        return triple(output_size, "output_size", op)
    ratio = tuple(output_ratio) if isinstance(output_ratio, (tuple, list)) else (output_ratio,) * 3
    if len(ratio) != 3 or not all(0 < float(r) < 1 for r in ratio):
        raise ValueError(f"{op}: output_ratio must be a number or 3 numbers in (0, 1), got {output_ratio!r}")
    return tuple(int(n * float(r)) for n, r in zip(input_dhw, ratio))


def _samples(given, n: int, c: int, dtype, op: str):
    """The (N, C, 3) samples in [0, 1): ``given`` checked, or drawn from lamina's generator."""
    xp = backend.xp
    if given is None:
        return xp.asarray(backend.rng().random((n, c, 3)), dtype=dtype)
    samples = xp.asarray(given.data if isinstance(given, Tensor) else given, dtype=dtype)
    if samples.shape != (n, c, 3):
        raise ShapeError(f"{op}: _random_samples must have shape (N, C, 3) = {(n, c, 3)}, got {samples.shape}")
    if samples.size and not (samples.min() >= 0 and samples.max() < 1):
        raise ValueError(f"{op}: _random_samples must lie in [0, 1), got {samples.min()}..{samples.max()}")
    return samples


def fractional_max_pool3d_with_indices(x, kernel_size, output_size=None, output_ratio=None,
                                       _random_samples=None) -> tuple[Tensor, object]:
    """Fractional max pooling of the NDHWC batch ``x`` (N, D, H, W, C) into (N, d_out, h_out,
    w_out, C) and the flat (depth * H + row) * W + col position of each window's first maximum
    (int64).

    ``_random_samples`` (N, C, 3) in [0, 1), PyTorch's layout: [..., 0] the depth's sample,
    [..., 1] the height's, [..., 2] the width's; drawn from ``lamina.backend.rng()`` when not
    given.
    """
    op = "fractional_max_pool3d"
    xp = backend.xp
    x = x if isinstance(x, Tensor) else Tensor(x)
    if x.ndim != 5:
        raise ShapeError(f"{op}: expected an NDHWC batch (N, D, H, W, C), got shape {tuple(x.shape)}")
    n, d, h, w, c = x.shape
    f = triple(kernel_size, "kernel_size", op)
    if min(f) < 1:
        raise ValueError(f"{op}: kernel_size must be positive, got {f}")
    outs = fractional_output_size3d((d, h, w), output_size, output_ratio, op)
    for axis, size, out, fi in zip(AXES, (d, h, w), outs, f):
        if out < 1 or out + fi - 1 > size:
            raise ShapeError(f"{op}: an output {axis} of {out} with a pool of {fi} needs an input {axis} of at least "
                             f"{out + fi - 1} (and an output of at least 1), got x of shape {tuple(x.shape)}")
    dtype = x.data.dtype
    samples = _samples(_random_samples, n, c, dtype, op)
    # window starts laid along their own output axis: (N, d_out, 1, 1, C), (N, 1, h_out, 1, C), ...
    starts = []
    for axis, (size, out, fi) in enumerate(zip((d, h, w), outs, f)):
        shape = [n, 1, 1, 1, c]
        shape[axis + 1] = out
        starts.append(_starts(samples[..., axis], size, out, fi).transpose(0, 2, 1).reshape(shape))
    depths, rows, cols = starts
    batch = xp.arange(n)[:, None, None, None, None]
    channel = xp.arange(c)[None, None, None, None, :]
    best = xp.full((n,) + outs + (c,), -xp.inf, dtype=dtype)
    where = xp.zeros((n,) + outs + (c,), dtype=xp.int64)
    data = x.data
    for a in range(f[0]):
        for b in range(f[1]):
            for e in range(f[2]):
                value = data[batch, depths + a, rows + b, cols + e, channel]
                better = (value > best) | xp.isnan(value)       # strictly greater: the first maximum wins
                best = xp.where(better, value, best)
                where = xp.where(better, ((depths + a) * h + rows + b) * w + cols + e, where)
    picked = take_along_dim(reshape(x, (n, d * h * w, c)), where.reshape(n, -1, c), axis=1)
    return reshape(picked, (n,) + outs + (c,)), where


def fractional_max_pool3d(x, kernel_size, output_size=None, output_ratio=None, _random_samples=None) -> Tensor:
    """The output of :func:`fractional_max_pool3d_with_indices`."""
    return fractional_max_pool3d_with_indices(x, kernel_size, output_size, output_ratio, _random_samples)[0]
