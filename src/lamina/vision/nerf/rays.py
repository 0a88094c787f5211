"""Camera rays of a pinhole camera and camera poses looking at a point.

Cameras follow the OpenGL convention of the original NeRF code: in camera coordinates x points
right, y up and the camera looks along -z. A camera-to-world matrix ``c2w`` (3x4 or 4x4) holds
the camera's axes as its first three columns and its centre as the fourth.

The ray of pixel (i, j) (column i, row j) has, in camera coordinates, the direction

    d_cam = ((i + s - W/2) / f, -(j + s - H/2) / f, -1),

with s = 0 (the original code: the integer pixel coordinates, i.e. the pixels' top-left corners)
or s = 1/2 (``pixel_centers=True``: through the pixels' centres). In world coordinates the ray
starts at the camera centre o = c2w[:3, 3] and runs along d = c2w[:3, :3] d_cam. The direction
is *not* normalised: its camera-z component is -1, so a sample at depth t along it lies at
distance t in front of the camera plane (and volume rendering scales its steps by |d|).
"""

from __future__ import annotations

import numpy as np

from lamina.errors import ShapeError

__all__ = ["get_rays", "look_at", "spherical_pose"]


def _float_dtype(array: np.ndarray):
    return array.dtype if array.dtype.kind == "f" else np.dtype(np.float32)


def check_pose(c2w, who: str) -> np.ndarray:
    """``c2w`` as an array, checked to be a 3x4 or 4x4 camera-to-world matrix."""
    c2w = np.asarray(c2w)
    if c2w.ndim != 2 or c2w.shape[1] != 4 or c2w.shape[0] not in (3, 4):
        raise ShapeError(f"{who}: expected a camera-to-world matrix c2w of shape (3, 4) or (4, 4), "
                         f"got {c2w.shape}")
    if not np.isfinite(c2w).all():
        raise ValueError(f"{who}: the camera-to-world matrix c2w has values that are not finite")
    return c2w


def _positive_int(value, what: str, who: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{who}: {what} must be a positive int, got {value!r}")
    return int(value)


def get_rays(height: int, width: int, focal: float, c2w, pixel_centers: bool = False
             ) -> tuple[np.ndarray, np.ndarray]:
    """The rays (origins, directions), each of shape (height, width, 3), of a pinhole camera
    with focal length ``focal`` (pixels) and pose ``c2w`` (module docstring for the formula;
    ``pixel_centers`` moves the rays from the pixels' corners to their centres)."""
    who = "get_rays"
    height, width = _positive_int(height, "height", who), _positive_int(width, "width", who)
    if not np.isfinite(focal) or focal <= 0:
        raise ValueError(f"{who}: focal must be a positive number (pixels), got {focal!r}")
    c2w = check_pose(c2w, who)
    dtype = _float_dtype(c2w)
    shift = 0.5 if pixel_centers else 0.0
    i, j = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64), indexing="xy")
    camera_dirs = np.stack([(i + shift - 0.5 * width) / focal, -(j + shift - 0.5 * height) / focal,
                            -np.ones_like(i)], axis=-1)
    rotation = c2w[:3, :3].astype(np.float64)
    directions = camera_dirs @ rotation.T
    origins = np.broadcast_to(c2w[:3, 3].astype(np.float64), directions.shape)
    return origins.astype(dtype), directions.astype(dtype)


def _unit(v: np.ndarray, what: str, who: str) -> np.ndarray:
    length = np.linalg.norm(v)
    if length < 1e-12:
        raise ValueError(f"{who}: {what} has zero length")
    return v / length


def look_at(eye, target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """The 4x4 float64 camera-to-world matrix of a camera at ``eye`` looking at ``target``
    (OpenGL axes: back = (eye - target)/|.|, right = up x back/|.|, camera up = back x right)."""
    who = "look_at"
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    for v, what in ((eye, "eye"), (target, "target"), (up, "up")):
        if v.shape != (3,):
            raise ShapeError(f"{who}: expected {what} of shape (3,), got {v.shape}")
    back = _unit(eye - target, "eye - target", who)
    right = _unit(np.cross(up, back), "up x (eye - target) (up is parallel to the view direction)", who)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, np.cross(back, right), back, eye
    return c2w


def spherical_pose(azimuth: float, elevation: float, radius: float) -> np.ndarray:
    """The camera-to-world matrix of a camera on the sphere of ``radius`` about the origin, at
    ``azimuth`` and ``elevation`` (degrees), looking at the origin with the world z axis up."""
    if not radius > 0:
        raise ValueError(f"spherical_pose: radius must be positive, got {radius!r}")
    if abs(elevation) >= 90:
        raise ValueError(f"spherical_pose: elevation must lie in (-90, 90) degrees, got {elevation!r}")
    az, el = np.deg2rad(azimuth), np.deg2rad(elevation)
    eye = radius * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    return look_at(eye)
