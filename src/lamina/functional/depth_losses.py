"""Losses of monocular depth estimation, on depth (or disparity) maps in NHWC layout.

``pred`` and ``target`` are (N, H, W, 1) or (N, H, W); ``mask`` (optional, the same shape)
marks the valid pixels (missing lidar returns, sky). With d_i the residuals over the M valid
pixels:

    scale_invariant_log_loss   d = log pred - log target (Eigen, Puhrsch & Fergus 2014):
        mean(d^2) - lam mean(d)^2; with ``root=True`` (BTS's SILog) alpha sqrt(mean(d^2) - lam mean(d)^2)
    scale_shift_invariant_loss (Ranftl et al. 2020, MiDaS): per image, the prediction aligned to
        the target by the least-squares scale s and shift t (closed form, below), then
        sum_images sum (s p + t - d)^2 / (2 sum_images M); or ``mode='trim'``: both maps
        normalised by t(x) = median(x), s(x) = mean|x - t(x)|, and per image
        (1 / 2M) sum of the smallest (1 - trim) M absolute residuals, averaged over the images
    gradient_matching_loss     (MiDaS) sum over scales k of sum |grad_x R| + |grad_y R| / M_k, R the
        masked residual map of every 2^k-th pixel
    berhu_loss                 (Laina et al. 2016) |x| for |x| <= c, (x^2 + c^2) / 2c above,
        c = 0.2 max|x| over the batch (a constant: no gradient flows through it) or given
    edge_aware_smoothness      (Godard et al. 2019) mean |d_x D| e^(-|d_x I|) + mean |d_y D| e^(-|d_y I|),
        D = disparity / its per-image mean, |d I| the image gradient averaged over the channels

The least-squares alignment of p to d over the valid pixels solves the 2 x 2 normal equations

    [sum p^2  sum p] [s]   [sum p d]
    [sum p    M    ] [t] = [sum d  ]

in closed form; gradients flow through s and t, as in MiDaS. :func:`depth_to_normals`
back-projects a depth map through pinhole intrinsics and takes the normals of the surface.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional import reduce as R
from lamina.functional.elementwise import abs as absolute
from lamina.functional.elementwise import exp, log, sqrt, where
from lamina.functional.indexing import index_select
from lamina.functional.padding_nd import pad_axes
from lamina.functional.shape import reshape, stack
from lamina.functional.shape_parity import cross
from lamina.functional.stats_parity import median

__all__ = [
    "berhu_loss", "depth_to_normals", "edge_aware_smoothness", "gradient_matching_loss", "scale_and_shift",
    "scale_invariant_log_loss", "scale_shift_invariant_loss",
]


def _maps(pred, target, mask, fn: str):
    """(p, t, m): prediction and target as (N, H, W) tensors (the target may be an array or a
    tensor) and the mask as a (N, H, W) float array of 0/1 in the prediction's dtype."""
    p = pred if isinstance(pred, Tensor) else Tensor(np.asarray(pred))
    if p.ndim == 4 and p.shape[-1] == 1:
        p = reshape(p, p.shape[:3])
    if p.ndim != 3:
        raise ShapeError(f"{fn}: expected a prediction of shape (N, H, W, 1) or (N, H, W), got {tuple(p.shape)}")
    t = target if isinstance(target, Tensor) else Tensor(target, dtype=p.dtype)
    if t.size != p.size:
        raise ShapeError(f"{fn}: target of shape {tuple(t.shape)} does not match the prediction of shape "
                         f"{tuple(p.shape)}")
    t = reshape(t, p.shape)
    if mask is None:
        m = backend.xp.ones(p.shape, dtype=p.dtype)
    else:
        m = backend.xp.asarray(mask.data if isinstance(mask, Tensor) else mask)
        if m.size != p.size:
            raise ShapeError(f"{fn}: mask of shape {m.shape} does not match the prediction of shape {tuple(p.shape)}")
        m = (m.reshape(p.shape) != 0).astype(p.dtype)
    if not m.any():
        raise ValueError(f"{fn}: the mask leaves no valid pixel")
    return p, t, m


def _safe_log(x: Tensor, m) -> Tensor:
    """log x on the valid pixels, 0 elsewhere (invalid pixels may hold 0 or negative depths)."""
    return log(where(m > 0, x, 1.0)) * m


def scale_invariant_log_loss(pred, target, mask=None, lam: float = 0.85, alpha: float = 10.0,
                             root: bool = True, per_image: bool = False) -> Tensor:
    """The scale-invariant log error of positive depths, d = log pred - log target over the valid
    pixels: alpha sqrt(mean d^2 - lam mean(d)^2) (BTS's defaults, lam = 0.85, alpha = 10), or
    without the root ``root=False`` (Eigen et al.'s loss with lam = 0.5, alpha = 1). The
    means pool the batch's pixels, or per image averaged over the images (``per_image=True``)."""
    fn = "scale_invariant_log_loss"
    if not 0 <= lam <= 1:
        raise ValueError(f"{fn}: lam must lie in [0, 1], got {lam!r}")
    p, t, m = _maps(pred, target, mask, fn)
    d = _safe_log(p, m) - _safe_log(t, m)
    axes = (1, 2) if per_image else None
    count = m.sum(axis=axes)
    if per_image and not (count > 0).all():
        raise ValueError(f"{fn}: per_image=True needs a valid pixel in every image")
    value = R.sum(d * d, axis=axes) / count - lam * (R.sum(d, axis=axes) / count) ** 2
    value = alpha * sqrt(value) if root else alpha * value
    return R.mean(value) if per_image else value


def scale_and_shift(pred, target, mask=None) -> tuple[Tensor, Tensor]:
    """The per-image least-squares (scale, shift), each (N,), minimising sum m (s p + t - d)^2
    (module docstring; differentiable in ``pred`` and ``target``)."""
    p, d, m = _maps(pred, target, mask, "scale_and_shift")
    return _scale_and_shift(p, d, m, "scale_and_shift")


def _scale_and_shift(p, d, m, fn):
    a00, a01 = R.sum(p * p * m, axis=(1, 2)), R.sum(p * m, axis=(1, 2))
    a11 = m.sum(axis=(1, 2))
    b0, b1 = R.sum(p * d * m, axis=(1, 2)), R.sum(d * m, axis=(1, 2))
    det = a00 * a11 - a01 * a01
    if not (det.data > 0).all():
        raise ValueError(f"{fn}: an image's valid prediction is constant (or has fewer than 2 pixels); the scale "
                         "and shift are not determined")
    return (a11 * b0 - a01 * b1) / det, (a00 * b1 - a01 * b0) / det


def _median_normalised(x: Tensor, m, fn: str) -> Tensor:
    """Per image (x - median) / mean|x - median| over the valid pixels, as (N, H, W)."""
    rows = []
    for i in range(x.shape[0]):
        kept = backend.xp.flatnonzero(m[i].reshape(-1))
        values = index_select(reshape(x[i], (-1,)), 0, kept)
        centre = median(values)
        spread = R.mean(absolute(values - centre))
        if not spread.data > 0:
            raise ValueError(f"{fn}: image {i} has a constant valid map; it cannot be normalised")
        rows.append((x[i] - centre) / spread)
    return stack(rows, axis=0)


def _trimmed_l1(r: Tensor, m, trim: float) -> Tensor:
    """Per image (1 / 2M) sum of the smallest M - floor(trim M) absolute residuals, averaged."""
    losses = []
    for i in range(r.shape[0]):
        kept = backend.xp.flatnonzero(m[i].reshape(-1))
        errors = absolute(index_select(reshape(r[i], (-1,)), 0, kept))
        smallest = backend.xp.argsort(errors.data, kind="stable")[: kept.size - int(trim * kept.size)]
        losses.append(R.sum(index_select(errors, 0, smallest)) / (2 * kept.size))
    return R.mean(stack(losses, axis=0))


def scale_shift_invariant_loss(pred, target, mask=None, mode: str = "least_squares", trim: float = 0.2,
                               gradient_weight: float = 0.0, scales: int = 4) -> Tensor:
    """MiDaS's scale- and shift-invariant loss (module docstring): ``mode='least_squares'`` aligns
    the prediction to the target per image in closed form (the MSE over 2M), ``mode='trim'`` is
    ssitrim (median/MAD normalisation, the ``trim`` fraction of largest residuals left out).
    ``gradient_weight`` > 0 adds that times the gradient matching loss of the aligned maps."""
    fn = "scale_shift_invariant_loss"
    if mode not in ("least_squares", "trim"):
        raise ValueError(f"{fn}: mode must be 'least_squares' or 'trim', got {mode!r}")
    if not 0 <= trim < 1:
        raise ValueError(f"{fn}: trim must lie in [0, 1), got {trim!r}")
    p, d, m = _maps(pred, target, mask, fn)
    if mode == "least_squares":
        scale, shift = _scale_and_shift(p, d, m, fn)
        aligned, reference = p * reshape(scale, (-1, 1, 1)) + reshape(shift, (-1, 1, 1)), d
        residual = (aligned - reference) * m
        loss = R.sum(residual * residual) / (2 * m.sum())
    else:
        aligned, reference = _median_normalised(p, m, fn), _median_normalised(d, m, fn)
        loss = _trimmed_l1(aligned - reference, m, trim)
    if gradient_weight:
        loss = loss + gradient_weight * _gradient_matching(aligned, reference, m, scales)
    return loss


def _gradient_matching(p, d, m, scales: int) -> Tensor:
    total = 0.0
    for k in range(scales):
        step = 2 ** k
        ps, ds, ms = p[:, ::step, ::step], d[:, ::step, ::step], m[:, ::step, ::step]
        r = (ps - ds) * ms
        gx = absolute(r[:, :, 1:] - r[:, :, :-1]) * (ms[:, :, 1:] * ms[:, :, :-1])
        gy = absolute(r[:, 1:, :] - r[:, :-1, :]) * (ms[:, 1:, :] * ms[:, :-1, :])
        count = ms.sum()
        if count > 0:
            total = total + (R.sum(gx) + R.sum(gy)) / count
    return total if isinstance(total, Tensor) else R.sum(p * 0.0)


def gradient_matching_loss(pred, target, mask=None, scales: int = 4) -> Tensor:
    """MiDaS's multi-scale gradient matching term: for k = 0 .. scales - 1, on every 2^k-th
    pixel, the summed |x| and |y| differences of the masked residual (pairs of valid pixels
    only) over the scale's valid-pixel count, added up over the scales."""
    fn = "gradient_matching_loss"
    if scales < 1:
        raise ValueError(f"{fn}: scales must be >= 1, got {scales!r}")
    p, d, m = _maps(pred, target, mask, fn)
    return _gradient_matching(p, d, m, scales)


def berhu_loss(pred, target, mask=None, threshold: float = 0.2, c: float | None = None) -> Tensor:
    """The reverse Huber loss, averaged over the valid pixels: |x| where |x| <= c, else
    (x^2 + c^2) / (2c), for x = pred - target and c = threshold * max|x| (a constant), or the
    given ``c``."""
    fn = "berhu_loss"
    if not threshold > 0 or (c is not None and c < 0):
        raise ValueError(f"{fn}: threshold must be > 0 and c >= 0, got threshold={threshold!r}, c={c!r}")
    p, t, m = _maps(pred, target, mask, fn)
    x = absolute(p - t) * m
    c = threshold * float(x.data.max()) if c is None else float(c)
    if c == 0:
        return R.sum(x) / m.sum()
    value = where(x.data <= c, x, (x * x + c * c) / (2 * c))
    return R.sum(value * m) / m.sum()


def edge_aware_smoothness(disparity, image) -> Tensor:
    """monodepth2's edge-aware smoothness of a disparity map (N, H, W, 1) next to its image
    (N, H, W, C): the disparity divided by its per-image mean (+ 1e-7), then
    mean |d_x D| exp(-mean_c |d_x I|) + the same along y."""
    fn = "edge_aware_smoothness"
    disp = disparity if isinstance(disparity, Tensor) else Tensor(np.asarray(disparity))
    img = image if isinstance(image, Tensor) else Tensor(image, dtype=disp.dtype)
    if disp.ndim != 4 or disp.shape[-1] != 1 or img.ndim != 4 or img.shape[:3] != disp.shape[:3]:
        raise ShapeError(f"{fn}: expected a disparity (N, H, W, 1) and an image (N, H, W, C) of the same size, got "
                         f"{tuple(disp.shape)} and {tuple(img.shape)}")
    disp = disp / (R.mean(disp, axis=(1, 2), keepdims=True) + 1e-7)
    dx = absolute(disp[:, :, 1:] - disp[:, :, :-1])
    dy = absolute(disp[:, 1:] - disp[:, :-1])
    ix = R.mean(absolute(img[:, :, 1:] - img[:, :, :-1]), axis=-1, keepdims=True)
    iy = R.mean(absolute(img[:, 1:] - img[:, :-1]), axis=-1, keepdims=True)
    return R.mean(dx * exp(-ix)) + R.mean(dy * exp(-iy))


def _intrinsics(intrinsics, batch: int, fn: str):
    k = np.asarray(backend.to_numpy(intrinsics), dtype=np.float64)
    if k.shape == (3, 3):
        k = np.broadcast_to(k, (batch, 3, 3))
    if k.shape != (batch, 3, 3):
        raise ShapeError(f"{fn}: intrinsics must be (3, 3) or ({batch}, 3, 3), got shape {k.shape}")
    return k


def depth_to_normals(depth, intrinsics) -> Tensor:
    """Unit surface normals (N, H, W, 3) of a depth map (N, H, W, 1) seen by a pinhole camera
    with ``intrinsics`` K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] ((3, 3) or one per image).

    Pixel (row v, column u) back-projects to P = z ((u - cx) / fx, (v - cy) / fy, 1) (pixel
    centres at integer coordinates, camera looking along +z, y down). With central differences
    P_u, P_v (one-sided at the borders) the normal is P_v x P_u normalised, facing the camera
    (negative z for a surface in front of it). The differences of points of a plane lie in the
    plane, so a plane's normals are exact."""
    fn = "depth_to_normals"
    z = depth if isinstance(depth, Tensor) else Tensor(np.asarray(depth))
    if z.ndim != 4 or z.shape[-1] != 1:
        raise ShapeError(f"{fn}: expected a depth map of shape (N, H, W, 1), got {tuple(z.shape)}")
    n, h, w, _ = z.shape
    if h < 2 or w < 2:
        raise ShapeError(f"{fn}: the depth map needs at least 2 x 2 pixels, got {h} x {w}")
    k = _intrinsics(intrinsics, n, fn)
    v, u = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    ray_x = (u[None] - k[:, 0, 2, None, None]) / k[:, 0, 0, None, None]
    ray_y = (v[None] - k[:, 1, 2, None, None]) / k[:, 1, 1, None, None]
    rays = np.stack([ray_x, ray_y, np.ones_like(ray_x)], axis=-1).astype(z.dtype)
    points = z * backend.xp.asarray(rays)
    padded = pad_axes(points, ((1, 1), (1, 1)), mode="replicate")
    along_u = padded[:, 1:-1, 2:] - padded[:, 1:-1, :-2]
    along_v = padded[:, 2:, 1:-1] - padded[:, :-2, 1:-1]
    normal = cross(along_v, along_u, axis=-1)
    return normal / sqrt(R.sum(normal * normal, axis=-1, keepdims=True) + 1e-20)
