"""Where along the rays the radiance field is queried.

Stratified sampling (coarse pass): [near, far] is split into n bins by the n evenly spaced depths
t_k = near + (far - near) k/(n - 1) (or evenly spaced in disparity 1/t with ``lindisp``); without
perturbation the samples are the t_k, with it each sample is drawn uniformly in its bin, the
bins bounded by the midpoints between neighbours (the first and last bins end at near and far).

Hierarchical sampling (fine pass, :func:`sample_pdf`): the coarse weights w_k over the bins of
edges b_0 < ... < b_m define a piecewise-constant density; inverse transform sampling maps
u in [0, 1] to the depth where the cumulative distribution reaches u:

    p_k = (w_k + 1e-5) / sum_j (w_j + 1e-5),   c_0 = 0,  c_k = p_0 + ... + p_(k-1),
    k: c_k <= u < c_(k+1),   t = b_k + (u - c_k) / (c_(k+1) - c_k) (b_(k+1) - b_k),

with u evenly spaced over [0, 1] (``deterministic``) or uniform random. The samples carry no
gradient (as in the original code: they only say where to look).
"""

from __future__ import annotations

import numpy as np

from lamina.autograd import Tensor
from lamina.errors import ShapeError

__all__ = ["sample_pdf", "stratified_samples"]


def _array(x) -> np.ndarray:
    return np.asarray(x.numpy()) if isinstance(x, Tensor) else np.asarray(x)


def _count(value, what: str, who: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{who}: {what} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _rng(rng) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def stratified_samples(near, far, n_rays: int, n_samples: int, perturb: bool = False, lindisp: bool = False,
                       rng=None, dtype=np.float32) -> np.ndarray:
    """Depths of shape (n_rays, n_samples), increasing along each ray from ``near`` to ``far``
    (scalars or one per ray); ``perturb`` draws one uniform sample in each bin (module docstring)."""
    who = "stratified_samples"
    n_rays, n_samples = _count(n_rays, "n_rays", who), _count(n_samples, "n_samples", who)
    near = np.broadcast_to(np.asarray(near, dtype=np.float64), (n_rays,)) if np.ndim(near) < 2 else None
    far = np.broadcast_to(np.asarray(far, dtype=np.float64), (n_rays,)) if np.ndim(far) < 2 else None
    if near is None or far is None:
        raise ShapeError(f"{who}: near and far must be scalars or of shape ({n_rays},)")
    if not (near < far).all():
        raise ValueError(f"{who}: expected near < far on every ray, got near={near.min()!r} and far={far.min()!r} "
                         "at the smallest")
    if lindisp and not (near > 0).all():
        raise ValueError(f"{who}: sampling linearly in disparity (lindisp) needs near > 0, got {near.min()!r}")
    fractions = np.linspace(0.0, 1.0, n_samples)
    if lindisp:
        z = 1.0 / (1.0 / near[:, None] * (1.0 - fractions) + 1.0 / far[:, None] * fractions)
    else:
        z = near[:, None] * (1.0 - fractions) + far[:, None] * fractions
    if perturb:
        mids = 0.5 * (z[:, 1:] + z[:, :-1])
        lower = np.concatenate([z[:, :1], mids], axis=-1)
        upper = np.concatenate([mids, z[:, -1:]], axis=-1)
        z = lower + (upper - lower) * _rng(rng).random(z.shape)
    return z.astype(dtype)


def sample_pdf(bins, weights, n_samples: int, deterministic: bool = False, rng=None) -> np.ndarray:
    """``n_samples`` depths per ray, of shape (n_rays, n_samples), drawn from the
    piecewise-constant density of ``weights`` (n_rays, m) over the bins of edges ``bins``
    (n_rays, m + 1) by inverse transform sampling (module docstring)."""
    who = "sample_pdf"
    n_samples = _count(n_samples, "n_samples", who)
    bins, weights = _array(bins), _array(weights)
    if bins.ndim != 2 or weights.ndim != 2 or bins.shape != (weights.shape[0], weights.shape[1] + 1):
        raise ShapeError(f"{who}: expected bins of shape (n_rays, m + 1) and weights of shape (n_rays, m), "
                         f"got {bins.shape} and {weights.shape}")
    if weights.shape[1] < 1:
        raise ShapeError(f"{who}: expected at least one bin, got weights of shape {weights.shape}")
    if (weights < 0).any() or not np.isfinite(weights).all():
        raise ValueError(f"{who}: weights must be finite and >= 0")
    dtype = bins.dtype if bins.dtype.kind == "f" else np.dtype(np.float32)
    weights = weights.astype(np.float64) + 1e-5
    pdf = weights / weights.sum(axis=-1, keepdims=True)
    cdf = np.concatenate([np.zeros((pdf.shape[0], 1)), np.cumsum(pdf, axis=-1)], axis=-1)
    if deterministic:
        u = np.broadcast_to(np.linspace(0.0, 1.0, n_samples), (cdf.shape[0], n_samples))
    else:
        u = _rng(rng).random((cdf.shape[0], n_samples))
    above = (cdf[:, None, :] <= u[:, :, None]).sum(axis=-1)     # searchsorted(cdf, u, side="right") per ray
    upper = np.minimum(above, cdf.shape[-1] - 1)
    lower = np.maximum(above - 1, 0)
    cdf_lower, cdf_upper = np.take_along_axis(cdf, lower, -1), np.take_along_axis(cdf, upper, -1)
    bins = bins.astype(np.float64)
    bin_lower, bin_upper = np.take_along_axis(bins, lower, -1), np.take_along_axis(bins, upper, -1)
    span = cdf_upper - cdf_lower
    span = np.where(span < 1e-5, 1.0, span)
    return (bin_lower + (u - cdf_lower) / span * (bin_upper - bin_lower)).astype(dtype)
