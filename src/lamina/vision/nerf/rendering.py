"""Volume rendering of the samples along each ray (Mildenhall et al. 2020, equation 3, as
discretised by the original code).

With densities sigma_i >= 0 and colours c_i at depths t_1 < ... < t_S of a ray with direction d,

    delta_i = (t_(i+1) - t_i) |d|   (delta_S = 1e10 |d|: the last sample runs to infinity),
    alpha_i = 1 - exp(-sigma_i delta_i),
    T_i     = prod_(j<i) (1 - alpha_j + 1e-10),      T_1 = 1,
    w_i     = T_i alpha_i,

    colour = sum_i w_i c_i,  depth = sum_i w_i t_i,  opacity = sum_i w_i  (<= 1),
    disparity = 1 / max(1e-10, depth / max(opacity, 1e-10)),

and with a white background colour + (1 - opacity). (The original code divides by the opacity
itself, giving NaN disparities on rays where every density is 0.) :func:`raw_to_outputs` first maps a
network's raw output (r, g, b, s) to c = sigmoid(r, g, b) and sigma = relu(s + noise).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError

__all__ = ["RenderOutputs", "raw_to_outputs", "sample_distances", "volume_render"]

LAST_DISTANCE = 1e10
TRANSMITTANCE_EPS = 1e-10


class RenderOutputs(NamedTuple):
    """What volume rendering gives per ray: rgb (R, 3), depth, disparity and opacity (R,), and
    the weights w_i (R, S)."""

    rgb: Tensor
    depth: Tensor
    disparity: Tensor
    opacity: Tensor
    weights: Tensor


def _array(x) -> np.ndarray:
    return np.asarray(x.numpy()) if isinstance(x, Tensor) else np.asarray(x)


def _tensor(x) -> Tensor:
    """``x`` as a tensor, keeping the floating-point dtype of an array."""
    if isinstance(x, Tensor):
        return x
    x = np.asarray(x)
    return Tensor(x, dtype=x.dtype) if x.dtype.kind == "f" else Tensor(x)


def sample_distances(z_vals, rays_d) -> np.ndarray:
    """delta_i = (t_(i+1) - t_i) |d|, with delta_S = 1e10 |d|: shape (R, S)."""
    z_vals, rays_d = _array(z_vals), _array(rays_d)
    gaps = np.concatenate([np.diff(z_vals, axis=-1), np.full(z_vals.shape[:-1] + (1,), LAST_DISTANCE)], axis=-1)
    return (gaps * np.linalg.norm(rays_d, axis=-1, keepdims=True)).astype(z_vals.dtype)


def _check(sigma: Tensor, colors: Tensor, z_vals: np.ndarray, rays_d: np.ndarray, who: str) -> None:
    if sigma.ndim != 2:
        raise ShapeError(f"{who}: expected densities sigma of shape (n_rays, n_samples), got {tuple(sigma.shape)}")
    rays, samples = sigma.shape
    if tuple(colors.shape) != (rays, samples, 3):
        raise ShapeError(f"{who}: expected colors of shape ({rays}, {samples}, 3) to match sigma "
                         f"{tuple(sigma.shape)}, got {tuple(colors.shape)}")
    if z_vals.shape != (rays, samples):
        raise ShapeError(f"{who}: expected sample depths z_vals of shape ({rays}, {samples}), got {z_vals.shape}")
    if rays_d.shape != (rays, 3):
        raise ShapeError(f"{who}: expected ray directions of shape ({rays}, 3), got {rays_d.shape}")
    if samples > 1 and (np.diff(z_vals, axis=-1) < 0).any():
        raise ValueError(f"{who}: sample depths z_vals must increase along each ray")


def volume_render(sigma, colors, z_vals, rays_d, white_background: bool = False) -> RenderOutputs:
    """Colour, depth, disparity, opacity and weights of rays from densities ``sigma`` (R, S) >= 0
    and colours ``colors`` (R, S, 3) at depths ``z_vals`` (R, S) along directions ``rays_d`` (R, 3)
    (module docstring); differentiable in ``sigma`` and ``colors``."""
    who = "volume_render"
    sigma = _tensor(sigma)
    colors = _tensor(colors)
    z_vals, rays_d = _array(z_vals), _array(rays_d)
    _check(sigma, colors, z_vals, rays_d, who)
    dtype = sigma.dtype
    deltas = _tensor(sample_distances(z_vals, rays_d).astype(dtype))
    alpha = 1.0 - F.exp(-(sigma * deltas))
    kept = F.concat([_tensor(np.ones((sigma.shape[0], 1), dtype=dtype)), 1.0 - alpha + TRANSMITTANCE_EPS], axis=-1)
    transmittance = F.cumprod(kept, axis=-1)[:, :-1]
    weights = alpha * transmittance
    rgb = (F.expand_dims(weights, -1) * colors).sum(axis=-2)
    depth = (weights * _tensor(z_vals.astype(dtype))).sum(axis=-1)
    opacity = weights.sum(axis=-1)
    tiny = _tensor(np.full(depth.shape, 1e-10, dtype=dtype))
    disparity = 1.0 / F.maximum(tiny, depth / F.maximum(tiny, opacity))      # no 0/0 on empty rays
    if white_background:
        rgb = rgb + (1.0 - F.expand_dims(opacity, -1))
    return RenderOutputs(rgb, depth, disparity, opacity, weights)


def raw_to_outputs(raw, z_vals, rays_d, raw_noise_std: float = 0.0, white_background: bool = False,
                   rng=None) -> RenderOutputs:
    """Volume rendering of a network's raw output ``raw`` (R, S, 4): colours sigmoid(raw[..., :3])
    and densities relu(raw[..., 3] + noise), the noise normal with std ``raw_noise_std`` (the
    original's regulariser in training; 0 for none)."""
    who = "raw_to_outputs"
    raw = _tensor(raw)
    if raw.ndim != 3 or raw.shape[-1] != 4:
        raise ShapeError(f"{who}: expected raw network outputs of shape (n_rays, n_samples, 4), got {tuple(raw.shape)}")
    if raw_noise_std < 0:
        raise ValueError(f"{who}: raw_noise_std must be >= 0, got {raw_noise_std!r}")
    density = raw[:, :, 3]
    if raw_noise_std > 0:
        generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        density = density + _tensor((generator.standard_normal(density.shape) * raw_noise_std).astype(raw.dtype))
    return volume_render(F.relu(density), F.sigmoid(raw[:, :, :3]), z_vals, rays_d, white_background)
