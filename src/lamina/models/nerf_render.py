"""Rendering rays through NeRF networks, coarse then fine (Mildenhall et al. 2020, section 5.2),
and one training step on the photometric loss.

For each ray: ``n_samples`` stratified depths in [near, far] are queried in the coarse network
and volume rendered; with ``n_importance`` > 0, that many more depths are drawn from the coarse
weights (:func:`lamina.vision.nerf.sample_pdf`), and all n_samples + n_importance sorted depths are
queried in the fine network (the coarse one when there is none) and rendered again. Training
minimises the squared error of both renderings against the pixels,

    L = mean |C_coarse(r) - C(r)|^2 + mean |C_fine(r) - C(r)|^2,

and reports PSNR = -10 log10(MSE) of the final rendering. Rays are rendered ``chunk`` at a time
and points queried ``net_chunk`` at a time, to bound memory.
"""

from __future__ import annotations

import math

import numpy as np

import lamina
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn.module import Module
from lamina.vision.nerf.encoding import encoding_size, positional_encoding
from lamina.vision.nerf.rays import get_rays
from lamina.vision.nerf.rendering import raw_to_outputs
from lamina.vision.nerf.sampling import sample_pdf, stratified_samples

__all__ = ["NeRFRenderer", "mse_to_psnr", "nerf_train_step"]

OUTPUTS = ("rgb", "depth", "disparity", "opacity")


def mse_to_psnr(mse: float) -> float:
    """Peak signal-to-noise ratio of images in [0, 1]: -10 log10(mse) (dB)."""
    return -10.0 * math.log10(max(float(mse), 1e-12))


def _positive(value, what: str, who: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{who}: {what} must be an int >= {minimum}, got {value!r}")
    return int(value)


class NeRFRenderer:
    """Renders rays through a ``coarse`` and an optional ``fine`` NeRF network (module docstring).

    Points are encoded with ``pos_freqs`` frequencies and view directions (unit vectors, when the
    networks take them) with ``dir_freqs``, as :func:`lamina.vision.nerf.positional_encoding`
    with ``include_pi``. In training, depths are perturbed within their bins (``perturb``), the
    fine depths drawn at random and densities get normal noise of std ``raw_noise_std``; in
    evaluation all three are deterministic."""

    def __init__(self, coarse: Module, fine: Module | None = None, *, near: float, far: float,
                 pos_freqs: int = 10, dir_freqs: int = 4, include_pi: bool = False, n_samples: int = 64,
                 n_importance: int = 0, perturb: bool = True, raw_noise_std: float = 0.0,
                 white_background: bool = False, lindisp: bool = False, chunk: int = 1024 * 32,
                 net_chunk: int = 1024 * 64):
        who = "NeRFRenderer"
        if not near < far:
            raise ValueError(f"{who}: expected near < far, got near={near!r}, far={far!r}")
        self.near, self.far = float(near), float(far)
        self.pos_freqs, self.dir_freqs, self.include_pi = pos_freqs, dir_freqs, bool(include_pi)
        self.n_samples = _positive(n_samples, "n_samples", who, 3 if n_importance else 1)
        self.n_importance = _positive(n_importance, "n_importance", who, 0)
        self.chunk, self.net_chunk = _positive(chunk, "chunk", who), _positive(net_chunk, "net_chunk", who)
        if raw_noise_std < 0:
            raise ValueError(f"{who}: raw_noise_std must be >= 0, got {raw_noise_std!r}")
        self.perturb, self.raw_noise_std = bool(perturb), float(raw_noise_std)
        self.white_background, self.lindisp = bool(white_background), bool(lindisp)
        self.coarse, self.fine = coarse, fine
        for network in (coarse, fine):
            if network is not None:
                self._check_network(network)

    def _check_network(self, network: Module) -> None:
        use_viewdirs = getattr(network, "use_viewdirs", False)
        expected = encoding_size(3, self.pos_freqs), encoding_size(3, self.dir_freqs) if use_viewdirs else 0
        found = network.input_ch, (network.input_ch_views if use_viewdirs else 0)
        if found != expected:
            raise ShapeError(f"NeRFRenderer: with pos_freqs={self.pos_freqs} and dir_freqs={self.dir_freqs} "
                             f"the network needs input_ch={expected[0]} and input_ch_views={expected[1]}, but "
                             f"{type(network).__name__} has {found[0]} and {found[1]}")

    def parameters(self) -> list:
        """The parameters of both networks (once each when they are the same network)."""
        params = list(self.coarse.parameters())
        if self.fine is not None and self.fine is not self.coarse:
            params += self.fine.parameters()
        return params

    def _query(self, network: Module, rays_o: np.ndarray, rays_d: np.ndarray, z_vals: np.ndarray) -> Tensor:
        """Raw outputs (R, S, 4) of ``network`` at the points o + t d of depths ``z_vals`` (R, S)."""
        rays, samples = z_vals.shape
        points = (rays_o[:, None, :] + rays_d[:, None, :] * z_vals[..., None]).reshape(-1, 3)
        inputs = positional_encoding(Tensor(points, dtype=points.dtype), self.pos_freqs, include_pi=self.include_pi)
        if getattr(network, "use_viewdirs", False):
            unit = rays_d / np.linalg.norm(rays_d, axis=-1, keepdims=True)
            views = np.broadcast_to(unit[:, None, :], (rays, samples, 3)).reshape(-1, 3)
            views = Tensor(np.ascontiguousarray(views), dtype=views.dtype)
            views = positional_encoding(views, self.dir_freqs, include_pi=self.include_pi)
            inputs = F.concat([inputs, views], axis=-1)
        parts = [network(inputs[start:start + self.net_chunk]) for start in range(0, inputs.shape[0], self.net_chunk)]
        raw = parts[0] if len(parts) == 1 else F.concat(parts, axis=0)
        return raw.reshape(rays, samples, raw.shape[-1])

    def _render_chunk(self, rays_o, rays_d, training: bool, rng) -> dict:
        perturb = training and self.perturb
        noise = self.raw_noise_std if training else 0.0
        z_vals = stratified_samples(self.near, self.far, rays_o.shape[0], self.n_samples, perturb, self.lindisp,
                                    rng, dtype=rays_o.dtype)
        coarse = raw_to_outputs(self._query(self.coarse, rays_o, rays_d, z_vals), z_vals, rays_d, noise,
                                self.white_background, rng)
        if not self.n_importance:
            return {**coarse._asdict(), "z_vals": z_vals}
        mids = 0.5 * (z_vals[:, 1:] + z_vals[:, :-1])
        fine_z = sample_pdf(mids, coarse.weights.numpy()[:, 1:-1], self.n_importance, deterministic=not perturb,
                            rng=rng)
        z_all = np.sort(np.concatenate([z_vals, fine_z.astype(z_vals.dtype)], axis=-1), axis=-1)
        network = self.coarse if self.fine is None else self.fine
        fine = raw_to_outputs(self._query(network, rays_o, rays_d, z_all), z_all, rays_d, noise,
                              self.white_background, rng)
        result = {**fine._asdict(), "z_vals": z_all}
        result.update({f"{key}_coarse": getattr(coarse, key) for key in OUTPUTS})
        return result

    def render_rays(self, rays_o, rays_d, training: bool = False, rng=None) -> dict:
        """Renderings of rays (R, 3): 'rgb' (R, 3), 'depth', 'disparity', 'opacity' (R,) tensors
        (and, with a fine pass, the coarse pass's as 'rgb_coarse', ...), the final 'weights' and
        'z_vals' of each ray (chunks of rays are rendered one after the other)."""
        rays_o, rays_d = np.asarray(rays_o), np.asarray(rays_d)
        if rays_o.ndim != 2 or rays_o.shape[-1] != 3 or rays_o.shape != rays_d.shape:
            raise ShapeError(f"NeRFRenderer.render_rays: expected origins and directions of shape (R, 3), "
                             f"got {rays_o.shape} and {rays_d.shape}")
        if rays_o.dtype.kind != "f":
            rays_o, rays_d = rays_o.astype(np.float32), rays_d.astype(np.float32)
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        chunks = [self._render_chunk(rays_o[s:s + self.chunk], rays_d[s:s + self.chunk], training, rng)
                  for s in range(0, rays_o.shape[0], self.chunk)]
        if len(chunks) == 1:
            return chunks[0]
        return {key: (np.concatenate([c[key] for c in chunks]) if key == "z_vals"
                      else F.concat([c[key] for c in chunks], axis=0)) for key in chunks[0]}

    def render_image(self, height: int, width: int, focal: float, c2w) -> dict:
        """The rendering of a whole view (no gradients, deterministic): arrays 'rgb' (H, W, 3),
        'depth', 'disparity' and 'opacity' (H, W)."""
        rays_o, rays_d = get_rays(height, width, focal, c2w, pixel_centers=True)
        with lamina.no_grad():
            out = self.render_rays(rays_o.reshape(-1, 3), rays_d.reshape(-1, 3))
        return {key: out[key].numpy().reshape(height, width, *out[key].shape[1:]) for key in OUTPUTS}


def nerf_train_step(renderer: NeRFRenderer, optimizer, rays_o, rays_d, target_rgb, rng=None) -> dict:
    """One optimiser step on the photometric loss of a batch of rays (R, 3) with pixel colours
    ``target_rgb`` (R, 3): returns the floats 'loss', 'mse' and 'psnr' of the final rendering."""
    target = np.asarray(target_rgb)
    if target.shape != np.shape(rays_o):
        raise ShapeError(f"nerf_train_step: expected target colours of shape {np.shape(rays_o)} (one per ray), "
                         f"got {target.shape}")
    optimizer.zero_grad()
    out = renderer.render_rays(rays_o, rays_d, training=True, rng=rng)
    target = Tensor(target, dtype=out["rgb"].dtype)
    mse = F.mse_loss(out["rgb"], target)
    loss = mse + F.mse_loss(out["rgb_coarse"], target) if "rgb_coarse" in out else mse
    loss.backward()
    optimizer.step()
    return {"loss": float(loss.item()), "mse": float(mse.item()), "psnr": mse_to_psnr(mse.item())}
