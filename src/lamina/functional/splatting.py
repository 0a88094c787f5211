"""Differentiable 2-D Gaussian splatting: an image drawn as a sum (or a front-to-back
composite) of N anisotropic Gaussians, as in GaussianImage (Zhang et al. 2024) and the 2-D
image-fitting experiments of the splatting literature. The 3-D projection of 3-D Gaussian
splatting is not part of it.

Gaussian n has a mean mu_n = (x, y) in pixel units (x along the width, y along the height;
pixel (i, j) is the point (j + 0.5, i + 0.5), its centre), a covariance Sigma_n, a colour c_n
(C values) and an opacity o_n. Its weight at pixel p is

    w_n(p) = exp(-0.5 d^T Sigma_n^-1 d),  d = p - mu_n.

The covariance is given either by a Cholesky factor, ``(N, 3)`` = (l11, l21, l22) with
Sigma = L L^T, L = [[l11, 0], [l21, l22]], or by ``(scales (N, 2), rotations (N,))`` with
Sigma = R S S^T R^T, S = diag(s1, s2), R the rotation by the angle (radians). A singular
covariance (l11 l22 = 0, or a scale <= 0) raises a ``ValueError``.

``mode="sum"``: the accumulated blending of GaussianImage, image(p) = sum_n o_n w_n(p) c_n (no
clamping, no normalisation). ``mode="alpha"``: front-to-back alpha compositing in the given
order (Gaussian 0 in front), alpha_n = min(o_n w_n(p), 0.99),

    image(p) = sum_n T_n alpha_n c_n,  T_n = prod_{m < n} (1 - alpha_m),

over all N Gaussians: the early termination of tile renderers (stopping once T is tiny) is not
done, so the result is the exact composite, and there is no background colour.

The covariance enters as its inverse, the conic (a, b, c) with Sigma^-1 = [[a, b], [b, c]], made
by :func:`covariance_to_conic` from tensor ops; the rest is one fused :class:`RasterizeGaussians2D`
that works on pixels in tiles of ``tile_size`` pixels (memory O(tile_size N)) and recomputes each
tile in the backward. Every Gaussian is evaluated at every pixel (no culling to a 3-sigma box):
the quadratic forms of a tile are one matrix product of the pixels' monomials (x^2, x y, y^2, x,
y, 1), taken from the image centre, with six coefficients per Gaussian, and the backward gathers
the gradients of those coefficients by one product too; both products are done in float64, as the
expansion cancels (float32 inputs keep float32 accuracy). Second derivatives run the same formula
written with tensor ops, untiled (memory O(H W N)).
"""

from __future__ import annotations

import numpy

from lamina import backend
from lamina.autograd import Tensor
from lamina.autograd.function import Function
from lamina.errors import ShapeError
from lamina.functional.elementwise import clip, exp
from lamina.functional.math_more import cos, sin
from lamina.functional.reduce_more import cumprod
from lamina.functional.shape import concat, stack

__all__ = ["RasterizeGaussians2D", "covariance_to_conic", "rasterize_gaussians_2d"]

ALPHA_MAX = 0.99
_WIDE = numpy.float64      # the quadratic forms' expansion cancels: it is always done in float64
_NAME = "rasterize_gaussians_2d"


def _pixel_centres(height: int, width: int, dtype) -> numpy.ndarray:
    rows, cols = numpy.meshgrid(numpy.arange(height), numpy.arange(width), indexing="ij")
    return numpy.stack([cols.ravel() + 0.5, rows.ravel() + 0.5], axis=1).astype(dtype)


def _quadratic_features(pixels, centre):
    """(P, 6) monomials (x^2, x y, y^2, x, y, 1) of the pixels (P, 2) taken from ``centre``."""
    xp = backend.xp
    x, y = pixels[:, 0] - centre[0], pixels[:, 1] - centre[1]
    return xp.stack([x * x, x * y, y * y, x, y, xp.ones_like(x)], axis=1)


def _quadratic_coefficients(means, conics, centre):
    """(6, N): the quadratic form q_n(p) = a dx^2 + 2 b dx dy + c dy^2, d = p - mu_n, as
    coefficients of :func:`_quadratic_features`, so that all q of a tile are one product."""
    xp = backend.xp
    a, b, c = conics[:, 0], conics[:, 1], conics[:, 2]
    mx, my = means[:, 0] - centre[0], means[:, 1] - centre[1]
    return xp.stack([a, 2.0 * b, c, -2.0 * (a * mx + b * my), -2.0 * (b * mx + c * my),
                     a * mx * mx + 2.0 * b * mx * my + c * my * my])


def _quadratic_coefficients_backward(d_coef, means, conics, centre):
    """The gradients (means (N, 2), conics (N, 3)) of a gradient ``d_coef`` (6, N) of
    :func:`_quadratic_coefficients`."""
    xp = backend.xp
    a, b, c = conics[:, 0], conics[:, 1], conics[:, 2]
    mx, my = means[:, 0] - centre[0], means[:, 1] - centre[1]
    g_xx, g_xy, g_yy, g_x, g_y, g_1 = d_coef
    d_conics = xp.stack([g_xx - 2.0 * mx * g_x + mx * mx * g_1,
                         2.0 * (g_xy - my * g_x - mx * g_y + mx * my * g_1),
                         g_yy - 2.0 * my * g_y + my * my * g_1], axis=1)
    d_means = xp.stack([-2.0 * (a * g_x + b * g_y) + 2.0 * (a * mx + b * my) * g_1,
                        -2.0 * (b * g_x + c * g_y) + 2.0 * (b * mx + c * my) * g_1], axis=1)
    return d_means, d_conics


def _exclusive_transmittance(alpha):
    """T_n = prod_{m < n} (1 - alpha_m) along axis 1."""
    xp = backend.xp
    kept = xp.cumprod(1.0 - alpha, axis=1)
    return xp.concatenate([xp.ones_like(kept[:, :1]), kept[:, :-1]], axis=1)


class RasterizeGaussians2D(Function):
    """The image (H W, C) of N Gaussians given by means (N, 2), conics (N, 3) = the entries
    (a, b, c) of Sigma^-1 = [[a, b], [b, c]], colours (N, C) and opacities (N,); ``height``,
    ``width``, ``mode`` and ``tile_size`` are keywords. The backward recomputes the weights tile
    by tile."""

    def forward(self, means, conics, colors, opacities):
        xp = backend.xp
        self.pixels = xp.asarray(_pixel_centres(self.height, self.width, means.dtype))
        self.centre = (0.5 * self.width, 0.5 * self.height)   # keeps the monomials small
        coefficients = _quadratic_coefficients(means.astype(_WIDE), conics.astype(_WIDE), self.centre)
        out = xp.empty((self.pixels.shape[0], colors.shape[1]), dtype=means.dtype)
        for start in range(0, self.pixels.shape[0], self.tile_size):
            tile = slice(start, start + self.tile_size)
            quadratic = _quadratic_features(self.pixels[tile].astype(_WIDE), self.centre) @ coefficients
            weights = xp.exp(quadratic.astype(means.dtype, copy=False) * -0.5)
            weights *= opacities
            if self.mode == "alpha":
                alpha = xp.minimum(weights, ALPHA_MAX)
                weights = _exclusive_transmittance(alpha) * alpha
            out[tile] = weights @ colors
        self.saved = (means, conics, colors, opacities)
        return out

    def backward(self, dy):
        xp = backend.xp
        means, conics, colors, opacities = self.saved
        coefficients = _quadratic_coefficients(means.astype(_WIDE), conics.astype(_WIDE), self.centre)
        d_coefficients = xp.zeros_like(coefficients)
        d_colors, d_opacities = xp.zeros_like(colors), xp.zeros_like(opacities)
        for start in range(0, self.pixels.shape[0], self.tile_size):
            tile = slice(start, start + self.tile_size)
            features = _quadratic_features(self.pixels[tile].astype(_WIDE), self.centre)
            w = xp.exp((features @ coefficients).astype(means.dtype, copy=False) * -0.5)
            g = dy[tile]
            g_dot_c = g @ colors.T                          # (P, N): dL/d(weight of colour n)
            if self.mode == "alpha":
                raw = w * opacities
                alpha = xp.minimum(raw, ALPHA_MAX)
                transmittance = _exclusive_transmittance(alpha)
                blend = transmittance * alpha
                behind = blend * g_dot_c                     # sum over m > n of T_m alpha_m (c_m . g)
                behind = xp.cumsum(behind[:, ::-1], axis=1)[:, ::-1] - behind
                d_raw = transmittance * g_dot_c - behind / (1.0 - alpha)
                d_raw[raw >= ALPHA_MAX] = 0.0
                d_colors += blend.T @ g
            else:
                d_raw = g_dot_c
                d_colors += (w * opacities).T @ g
            d_raw *= w                                       # now dL/d(opacity) per pixel
            d_opacities += d_raw.sum(axis=0)
            d_raw *= -0.5 * opacities                        # now dL/dq, q the quadratic form
            d_coefficients += features.T @ d_raw.astype(_WIDE, copy=False)
        d_means, d_conics = _quadratic_coefficients_backward(d_coefficients, means.astype(_WIDE),
                                                             conics.astype(_WIDE), self.centre)
        d_means, d_conics = d_means.astype(means.dtype), d_conics.astype(conics.dtype)
        return d_means, d_conics, d_colors, d_opacities

    def composite(self, means, conics, colors, opacities):
        pixels = Tensor._wrap(self.pixels)
        dx = pixels[:, 0:1] - means[:, 0].reshape(1, -1)
        dy = pixels[:, 1:2] - means[:, 1].reshape(1, -1)
        a, b, c = (conics[:, k].reshape(1, -1) for k in range(3))
        w = exp((a * dx * dx + 2.0 * b * dx * dy + c * dy * dy) * -0.5)
        weights = w * opacities.reshape(1, -1)
        if self.mode == "alpha":
            alpha = clip(weights, None, ALPHA_MAX)
            kept = cumprod(1.0 - alpha, axis=1)
            ones = Tensor._wrap(backend.xp.ones((kept.shape[0], 1), dtype=kept.dtype))
            weights = concat([ones, kept[:, :-1]], axis=1) * alpha
        return weights @ colors

    backward_graph = Function.composite_backward_graph


def covariance_to_conic(covariance) -> Tensor:
    """The conics (N, 3) = (a, b, c), Sigma^-1 = [[a, b], [b, c]], of a Cholesky factor (N, 3)
    or of ``(scales (N, 2), rotations (N,))`` (module docstring), by differentiable tensor ops."""
    if isinstance(covariance, (tuple, list)):
        scales, rotations = _as_tensors(*covariance)
        cos_t, sin_t = cos(rotations), sin(rotations)
        v1, v2 = scales[:, 0] * scales[:, 0], scales[:, 1] * scales[:, 1]
        s11 = cos_t * cos_t * v1 + sin_t * sin_t * v2
        s12 = cos_t * sin_t * (v1 - v2)
        s22 = sin_t * sin_t * v1 + cos_t * cos_t * v2
    else:
        (chol,) = _as_tensors(covariance)
        l11, l21, l22 = chol[:, 0], chol[:, 1], chol[:, 2]
        s11, s12, s22 = l11 * l11, l11 * l21, l21 * l21 + l22 * l22
    det = s11 * s22 - s12 * s12
    return stack([s22 / det, -s12 / det, s11 / det], axis=1)


def _check(means, covariance, colors, opacities, height, width, mode, tile_size) -> None:
    if mode not in ("sum", "alpha"):
        raise ValueError(f"{_NAME}: mode must be 'sum' or 'alpha', got {mode!r}")
    for what, size in (("height", height), ("width", width), ("tile_size", tile_size)):
        if isinstance(size, bool) or not isinstance(size, (int, numpy.integer)) or size < 1:
            raise ValueError(f"{_NAME}: {what} must be a positive int, got {size!r}")
    n = means.shape[0] if means.ndim == 2 else None
    if means.ndim != 2 or means.shape[1] != 2:
        raise ShapeError(f"{_NAME}: means must be (N, 2), got {tuple(means.shape)}")
    if colors.ndim != 2 or colors.shape[0] != n:
        raise ShapeError(f"{_NAME}: colors must be (N, C) with N = {n} (means {tuple(means.shape)}), "
                         f"got {tuple(colors.shape)}")
    if tuple(opacities.shape) != (n,):
        raise ShapeError(f"{_NAME}: opacities must be (N,) = ({n},), got {tuple(opacities.shape)}")
    if isinstance(covariance, (tuple, list)):
        if len(covariance) != 2:
            raise ValueError(f"{_NAME}: covariance must be a Cholesky factor (N, 3) or (scales, rotations), "
                             f"got a sequence of {len(covariance)}")
        scales, rotations = covariance
        if tuple(scales.shape) != (n, 2) or tuple(rotations.shape) != (n,):
            raise ShapeError(f"{_NAME}: scales must be (N, 2) and rotations (N,) with N = {n}, got "
                             f"{tuple(scales.shape)} and {tuple(rotations.shape)}")
        bad = numpy.flatnonzero((backend.to_numpy(_data(scales)) <= 0).any(axis=1))
        if bad.size:
            raise ValueError(f"{_NAME}: the covariance of Gaussian(s) {bad[:10].tolist()} is not positive definite: "
                             "scales must be > 0")
    else:
        if tuple(covariance.shape) != (n, 3):
            raise ShapeError(f"{_NAME}: the Cholesky factor must be (N, 3) = ({n}, 3) (l11, l21, l22), "
                             f"got {tuple(covariance.shape)}")
        chol = backend.to_numpy(_data(covariance))
        bad = numpy.flatnonzero(chol[:, 0] * chol[:, 2] == 0)
        if bad.size:
            raise ValueError(f"{_NAME}: the covariance of Gaussian(s) {bad[:10].tolist()} is not positive definite: "
                             "the Cholesky factor's diagonal l11, l22 must be nonzero")


def _as_tensors(*values) -> list[Tensor]:
    """``values`` as tensors: arrays take the dtype of the first tensor among them (the default
    float dtype when there is none)."""
    dtype = next((v.dtype for v in values if isinstance(v, Tensor)), None)
    return [v if isinstance(v, Tensor) else Tensor(v, dtype=dtype) for v in values]


def _data(x):
    return x.data if isinstance(x, Tensor) else numpy.asarray(x)


def rasterize_gaussians_2d(means, covariance, colors, opacities, height: int, width: int, mode: str = "sum",
                           tile_size: int = 4096) -> Tensor:
    """The (height, width, C) image of N 2-D Gaussians (module docstring): ``means`` (N, 2) in
    pixel units (x, y), ``covariance`` a Cholesky factor (N, 3) or ``(scales (N, 2), rotations
    (N,))``, ``colors`` (N, C), ``opacities`` (N,); ``mode`` "sum" (sum_n o_n w_n c_n) or "alpha"
    (front-to-back compositing, Gaussian 0 in front). Gradients reach every input; the result does
    not depend on ``tile_size`` (pixels per tile), which bounds the memory to O(tile_size N)."""
    pair = isinstance(covariance, (tuple, list))
    parts = tuple(covariance) if pair else (covariance,)
    means, colors, opacities, *parts = _as_tensors(means, colors, opacities, *parts)
    covariance = tuple(parts) if pair else parts[0]
    _check(means, covariance, colors, opacities, height, width, mode, tile_size)
    conics = covariance_to_conic(covariance)
    image = RasterizeGaussians2D.apply(means, conics, colors, opacities, height=int(height), width=int(width),
                                       mode=mode, tile_size=int(tile_size))
    return image.reshape(int(height), int(width), colors.shape[1])
