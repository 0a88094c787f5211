"""Geometric and photometric operations on NHWC image batches, each sample with its own
parameters: the ops behind data augmentation (course notes, Data augmentation: mirror,
rotate, blur, saturation, cropping; :mod:`lamina.nn.augmentation` draws the parameters).

Every op is differentiable with respect to the images, so it may sit anywhere in a model.
"""

from __future__ import annotations

import math

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError
from lamina.functional.grid_sample import SamplingMatrix
from lamina.functional.im2col import pad_nhwc
from lamina.functional.shape import getitem

LUMA_WEIGHTS = (0.299, 0.587, 0.114)
"""Grey level of an RGB pixel, ITU-R BT.601 (as PIL and torchvision)."""


def _tensor(x) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(x)


def _check_batch(x, op: str, n_params: int | None = None, what: str = "") -> tuple[int, int, int, int]:
    if len(x.shape) != 4:
        raise ShapeError(f"{op}: expected images of shape (N, H, W, C), got shape {tuple(x.shape)}")
    if n_params is not None and n_params != x.shape[0]:
        raise ShapeError(f"{op}: {n_params} {what} for a batch of {x.shape[0]} images (shape {tuple(x.shape)})")
    return tuple(x.shape)


class FlipSamples(Function):
    """Mirror the images where ``flip_w`` (left-right) and/or ``flip_h`` (up-down) holds,
    one flag per sample. Flips are their own inverse, so backward flips dJ/dy the same way."""

    def _flip(self, a):
        out = a.copy()
        if self.flip_w.any():
            out[self.flip_w] = out[self.flip_w, :, ::-1]
        if self.flip_h.any():
            out[self.flip_h] = out[self.flip_h, ::-1]
        return out

    def forward(self, x):
        return self._flip(x)

    def backward(self, dy):
        return (self._flip(dy),)

    backward_graph = Function.linear_backward_graph


def flip(x, flip_w=None, flip_h=None) -> Tensor:
    """Each image mirrored left-right where ``flip_w[i]`` and up-down where ``flip_h[i]``."""
    xp = backend.xp
    n = _check_batch(x, "flip")[0]
    flags = [xp.zeros(n, dtype=bool) if f is None else xp.asarray(f, dtype=bool).reshape(-1) for f in (flip_w, flip_h)]
    for f, name in zip(flags, ("flip_w", "flip_h")):
        _check_batch(x, "flip", f.size, f"{name} flags")
    return FlipSamples.apply(x, flip_w=flags[0], flip_h=flags[1])


class CropSamples(Function):
    """Window (top_i, left_i) of size ``size`` from each image zero-padded by ``pads``
    (top, bottom, left, right). Backward puts dJ/dy back at the window (the windows of one
    image never overlap themselves) and drops the padding."""

    def forward(self, x):
        xp = backend.xp
        n = x.shape[0]
        (sh, sw), offsets = self.size, self.offsets
        self.in_shape = x.shape
        self.index = (xp.arange(n)[:, None, None], (offsets[:, 0, None] + xp.arange(sh))[:, :, None],
                      (offsets[:, 1, None] + xp.arange(sw))[:, None, :])
        return pad_nhwc(x, self.pads)[self.index]

    def backward(self, dy):
        n, h, w, c = self.in_shape
        pt, pb, pl, pr = self.pads
        grid = backend.xp.zeros((n, h + pt + pb, w + pl + pr, c), dtype=dy.dtype)
        grid[self.index] = dy
        return (grid[:, pt:pt + h, pl:pl + w],)

    backward_graph = Function.linear_backward_graph


def crop(x, offsets, size, padding=0) -> Tensor:
    """(N, s_h, s_w, C): from image i, zero-padded by ``padding`` (p or (p_h, p_w)) on each
    side, the window whose top-left corner is ``offsets[i]`` = (row, column)."""
    xp = backend.xp
    n, h, w, _ = _check_batch(x, "crop")
    ph, pw = (padding, padding) if isinstance(padding, int) else tuple(padding)
    sh, sw = (size, size) if isinstance(size, int) else tuple(size)
    offsets = xp.asarray(offsets, dtype=xp.intp).reshape(-1, 2)
    _check_batch(x, "crop", offsets.shape[0], "offsets")
    hp, wp = h + 2 * ph, w + 2 * pw
    if not (0 < sh <= hp and 0 < sw <= wp):
        raise ShapeError(f"crop: a {sh}x{sw} window does not fit images of {h}x{w} padded by {(ph, pw)}")
    if offsets.size and (offsets.min() < 0 or (offsets[:, 0] + sh).max() > hp or (offsets[:, 1] + sw).max() > wp):
        raise ValueError(f"crop: offsets must keep the {sh}x{sw} window inside the {hp}x{wp} padded images, "
                         f"got rows {int(offsets[:, 0].min())}..{int(offsets[:, 0].max())} and columns "
                         f"{int(offsets[:, 1].min())}..{int(offsets[:, 1].max())}")
    return CropSamples.apply(x, offsets=offsets, size=(sh, sw), pads=(ph, ph, pw, pw))


class RotateSamples(Function):
    """Each image turned by ``angles[i]`` radians about its centre, counterclockwise as
    displayed (row 0 at the top), by bilinear interpolation; pixels whose source falls
    outside the image are 0. Output pixel (y, x) reads the input at

        s_x = c_x + (x - c_x) cos a - (y - c_y) sin a
        s_y = c_y + (x - c_x) sin a + (y - c_y) cos a,     (c_y, c_x) = ((h - 1) / 2, (w - 1) / 2),

    a weighted sum of its four neighbours: out = S x with x viewed as (N H W, C) and S the
    sparse sampling matrix of :class:`~lamina.functional.grid_sample.SamplingMatrix`;
    backward hands dJ/dy back to the same neighbours with the same weights, S^T dJ/dy."""

    def forward(self, x):
        xp = backend.xp
        n, h, w, c = x.shape
        cos = xp.cos(self.angles)[:, None, None]
        sin = xp.sin(self.angles)[:, None, None]
        ys, xs = xp.meshgrid(xp.arange(h) - (h - 1) / 2, xp.arange(w) - (w - 1) / 2, indexing="ij")
        sx = (w - 1) / 2 + xs * cos - ys * sin
        sy = (h - 1) / 2 + xs * sin + ys * cos
        y0, x0 = xp.floor(sy), xp.floor(sx)
        fy, fx = sy - y0, sx - x0
        base = (xp.arange(n) * (h * w))[:, None, None]
        indices, weights = [], []
        for dy_, wy in ((0, 1 - fy), (1, fy)):
            for dx_, wx in ((0, 1 - fx), (1, fx)):
                yy, xx = y0 + dy_, x0 + dx_
                inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
                indices.append(base + xp.clip(yy, 0, h - 1).astype(xp.intp) * w + xp.clip(xx, 0, w - 1).astype(xp.intp))
                weights.append(wy * wx * inside)
        index = xp.stack([i.reshape(-1) for i in indices], axis=1)
        weight = xp.stack([wt.reshape(-1) for wt in weights], axis=1).astype(x.dtype)
        self.sampling = SamplingMatrix(index, weight, n * h * w)
        self.in_shape = x.shape
        return self.sampling.times(x.reshape(-1, c)).reshape(x.shape)

    def backward(self, dy):
        grad = self.sampling.transpose_times(dy.reshape(-1, dy.shape[-1]))
        return (grad.reshape(self.in_shape),)

    backward_graph = Function.linear_backward_graph


def rotate(x, angles) -> Tensor:
    """Image i turned counterclockwise by ``angles[i]`` degrees about its centre (bilinear,
    zeros outside); 90 degrees on a square image is ``numpy.rot90``."""
    xp = backend.xp
    _check_batch(x, "rotate")
    radians = xp.deg2rad(xp.asarray(angles, dtype=xp.float64).reshape(-1))
    _check_batch(x, "rotate", radians.size, "angles")
    return RotateSamples.apply(x, angles=radians)


def gaussian_kernels(sigmas, radius: int):
    """(N, 2 radius + 1) normalised 1-D Gaussian taps, one row per sigma; sigma 0 gives the
    identity (a single 1 in the middle)."""
    xp = backend.xp
    sigmas = xp.asarray(sigmas, dtype=xp.float64).reshape(-1, 1)
    offsets = xp.arange(-radius, radius + 1, dtype=xp.float64)
    safe = xp.where(sigmas > 0, sigmas, 1.0)
    taps = xp.where(sigmas > 0, xp.exp(-0.5 * (offsets / safe) ** 2), (offsets == 0).astype(xp.float64))
    return taps / taps.sum(axis=1, keepdims=True)


def _reflected(n: int, radius: int):
    """Indices -radius .. n + radius - 1 reflected into [0, n) about the edge pixels
    (``numpy.pad``'s 'reflect': d c b | a b c d | c b a)."""
    xp = backend.xp
    index = xp.abs(xp.arange(-radius, n + radius))
    return xp.where(index >= n, 2 * (n - 1) - index, index)


def gaussian_blur(x, sigmas, radius: int | None = None) -> Tensor:
    """Image i convolved with a Gaussian of standard deviation ``sigmas[i]`` pixels (0: left
    as it is), separably (rows, then columns), over ``radius`` pixels each side (default
    ceil(3 max sigma)) with the image reflected at its edges."""
    xp = backend.xp
    n, h, w, _ = _check_batch(x, "gaussian_blur")
    sigmas = xp.asarray(sigmas, dtype=xp.float64).reshape(-1)
    _check_batch(x, "gaussian_blur", sigmas.size, "sigmas")
    if sigmas.size and sigmas.min() < 0:
        raise ValueError(f"gaussian_blur: sigmas must be >= 0, got {float(sigmas.min())}")
    if radius is None:
        radius = math.ceil(3 * float(sigmas.max())) if sigmas.size else 0
    if radius >= min(h, w):
        raise ShapeError(f"gaussian_blur: a radius of {radius} pixels needs images larger than {h}x{w}")
    out = _tensor(x)
    if radius == 0:
        return out
    taps = gaussian_kernels(sigmas, radius).astype(out.dtype)
    for axis, size in ((1, h), (2, w)):
        index = [slice(None)] * 3
        index[axis] = _reflected(size, radius)
        padded = getitem(out, tuple(index))
        out = None
        for j in range(2 * radius + 1):
            window = [slice(None)] * 3
            window[axis] = slice(j, j + size)
            term = getitem(padded, tuple(window)) * taps[:, j].reshape(n, 1, 1, 1)
            out = term if out is None else out + term
    return out


def adjust_saturation(x, factors) -> Tensor:
    """RGB images moved away from (factor > 1) or towards (< 1) their grey levels:
    out = g + s_i (x - g), g = 0.299 R + 0.587 G + 0.114 B; factor 0 gives grey images."""
    xp = backend.xp
    x = _tensor(x)
    c = _check_batch(x, "adjust_saturation")[3]
    if c != 3:
        raise ShapeError(f"adjust_saturation: expected RGB images (3 channels), got shape {tuple(x.shape)}")
    factors = xp.asarray(factors, dtype=x.dtype).reshape(-1, 1, 1, 1)
    _check_batch(x, "adjust_saturation", factors.shape[0], "factors")
    grey = (x * xp.asarray(LUMA_WEIGHTS, dtype=x.dtype)).sum(axis=-1, keepdims=True)
    return grey + (x - grey) * factors


def adjust_contrast(x, factors) -> Tensor:
    """Each channel of image i scaled about its mean over the pixels by ``factors[i]``:
    out = m + s_i (x - m)."""
    xp = backend.xp
    x = _tensor(x)
    _check_batch(x, "adjust_contrast")
    factors = xp.asarray(factors, dtype=x.dtype).reshape(-1, 1, 1, 1)
    _check_batch(x, "adjust_contrast", factors.shape[0], "factors")
    mean = x.mean(axis=(1, 2), keepdims=True)
    return mean + (x - mean) * factors


def adjust_brightness(x, deltas) -> Tensor:
    """``deltas[i]`` added to every value of image i."""
    xp = backend.xp
    x = _tensor(x)
    _check_batch(x, "adjust_brightness")
    deltas = xp.asarray(deltas, dtype=x.dtype).reshape(-1, 1, 1, 1)
    _check_batch(x, "adjust_brightness", deltas.shape[0], "deltas")
    return x + deltas
