"""A scene of coloured spheres ray-traced exactly in NumPy, and views of it from cameras on a
sphere looking at the origin: NeRF training data with known geometry and no downloads.

A ray o + t d meets the sphere |p - c| = r where |o - c + t d|^2 = r^2, a quadratic in t whose
smallest root t > 0 is the visible hit. A hit pixel shows the sphere's colour shaded by a fixed
light, k (ambient + (1 - ambient) max(0, n . l)) with n the unit normal (view independent, as a
Lambertian surface); a missed pixel shows the background.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from lamina.errors import ShapeError

from .rays import get_rays, spherical_pose

__all__ = ["NeRFScene", "SphereScene", "synthetic_nerf_scene"]


class NeRFScene(NamedTuple):
    """Views of a scene: images (N, H, W, 3) in [0, 1], camera-to-world poses (N, 4, 4), the focal
    length in pixels and the depth range [near, far] to sample."""

    images: np.ndarray
    poses: np.ndarray
    focal: float
    near: float
    far: float

    @property
    def height(self) -> int:
        return int(self.images.shape[1])

    @property
    def width(self) -> int:
        return int(self.images.shape[2])


@dataclass(frozen=True)
class SphereScene:
    """Spheres of ``centers`` (K, 3), ``radii`` (K,) and RGB ``colors`` (K, 3) before a uniform
    ``background`` colour, lit from the direction ``light``."""

    centers: tuple = ((0.0, 0.0, 0.0), (0.55, 0.45, 0.2), (-0.4, 0.5, -0.35))
    radii: tuple = (0.5, 0.3, 0.25)
    colors: tuple = ((0.9, 0.2, 0.15), (0.15, 0.75, 0.25), (0.2, 0.3, 0.95))
    background: tuple = (1.0, 1.0, 1.0)
    light: tuple = (0.4, 0.3, 1.0)
    ambient: float = 0.35

    def trace(self, rays_o, rays_d) -> tuple[np.ndarray, np.ndarray]:
        """(colours (..., 3), depths (..., ) with inf where nothing is hit) of rays (..., 3)."""
        rays_o, rays_d = np.asarray(rays_o, dtype=np.float64), np.asarray(rays_d, dtype=np.float64)
        if rays_o.shape[-1:] != (3,) or rays_o.shape != rays_d.shape:
            raise ShapeError(f"SphereScene.trace: expected origins and directions of one shape (..., 3), "
                             f"got {rays_o.shape} and {rays_d.shape}")
        depth = np.full(rays_o.shape[:-1], np.inf)
        color = np.broadcast_to(np.asarray(self.background, dtype=np.float64), rays_o.shape).copy()
        light = np.asarray(self.light, dtype=np.float64)
        light = light / np.linalg.norm(light)
        a = (rays_d * rays_d).sum(-1)
        for center, radius, rgb in zip(np.asarray(self.centers, dtype=np.float64), self.radii, self.colors):
            offset = rays_o - center
            b = 2.0 * (offset * rays_d).sum(-1)
            c = (offset * offset).sum(-1) - radius ** 2
            disc = b * b - 4.0 * a * c
            root = np.sqrt(np.maximum(disc, 0.0))
            near_root, far_root = (-b - root) / (2.0 * a), (-b + root) / (2.0 * a)
            t = np.where(near_root > 0, near_root, far_root)
            hit = (disc >= 0) & (t > 0) & (t < depth)
            normal = (offset + t[..., None] * rays_d) / radius
            shade = self.ambient + (1.0 - self.ambient) * np.maximum((normal * light).sum(-1), 0.0)
            color = np.where(hit[..., None], shade[..., None] * np.asarray(rgb), color)
            depth = np.where(hit, t, depth)
        return color, depth


def synthetic_nerf_scene(n_views: int = 8, size: int = 16, radius: float = 3.0, fov_degrees: float = 40.0,
                         elevations=(15.0, 40.0), azimuth_offset: float = 0.0, scene: SphereScene | None = None,
                         dtype=np.float32) -> NeRFScene:
    """``n_views`` square images of ``size`` pixels of ``scene`` (the default spheres) from
    cameras at distance ``radius`` from the origin looking at it, at evenly spaced azimuths
    (starting at ``azimuth_offset`` degrees) and elevations cycling through ``elevations``;
    near and far bound the unit ball about the origin (radius -/+ 1.5)."""
    if isinstance(n_views, bool) or not isinstance(n_views, int) or n_views < 1:
        raise ValueError(f"synthetic_nerf_scene: n_views must be a positive int, got {n_views!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"synthetic_nerf_scene: size must be a positive int, got {size!r}")
    if not radius > 1.5:
        raise ValueError(f"synthetic_nerf_scene: radius must exceed 1.5 (the scene's extent), got {radius!r}")
    scene = SphereScene() if scene is None else scene
    focal = 0.5 * size / np.tan(0.5 * np.deg2rad(fov_degrees))
    poses, images = [], []
    for k in range(n_views):
        pose = spherical_pose(azimuth_offset + 360.0 * k / n_views, elevations[k % len(elevations)], radius)
        rays_o, rays_d = get_rays(size, size, focal, pose, pixel_centers=True)
        images.append(scene.trace(rays_o, rays_d)[0])
        poses.append(pose)
    return NeRFScene(np.stack(images).astype(dtype), np.stack(poses).astype(dtype), float(focal),
                     radius - 1.5, radius + 1.5)
