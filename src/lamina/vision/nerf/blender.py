"""A loader for the original NeRF synthetic ("Blender") data format: a directory holding
``transforms_<split>.json`` with the horizontal field of view ``camera_angle_x`` (radians) and
``frames``, each a ``file_path`` (relative to the directory, ".png" added when missing) and a 4x4
camera-to-world ``transform_matrix`` (OpenGL axes, as :mod:`lamina.vision.nerf.rays`). Images
are RGBA; focal = W / (2 tan(camera_angle_x / 2)).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lamina.errors import ShapeError

from .rays import check_pose
from .scenes import NeRFScene

__all__ = ["load_blender_scene"]


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image  # optional dependency, only needed for this format

    with Image.open(path) as image:
        return np.asarray(image.convert("RGBA"), dtype=np.float64) / 255.0


def load_blender_scene(directory, split: str = "train", white_background: bool = True, near: float = 2.0,
                       far: float = 6.0, dtype=np.float32) -> NeRFScene:
    """The views of ``split`` in ``directory`` as a :class:`NeRFScene`, each RGBA image composited
    over white (``white_background``: rgb a + 1 - a) or black (rgb a); ``near`` and ``far``
    default to the original's bounds for these scenes."""
    who = "load_blender_scene"
    directory = Path(directory)
    path = directory / f"transforms_{split}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{who}: no {path.name} in {directory}")
    meta = json.loads(path.read_text())
    if "camera_angle_x" not in meta or not meta.get("frames"):
        raise ValueError(f"{who}: {path} needs 'camera_angle_x' and a non-empty list of 'frames'")
    if not near < far:
        raise ValueError(f"{who}: expected near < far, got near={near!r}, far={far!r}")
    images, poses = [], []
    for k, frame in enumerate(meta["frames"]):
        pose = check_pose(np.asarray(frame["transform_matrix"], dtype=np.float64), f"{who} (frame {k})")
        if pose.shape != (4, 4):
            pose = np.vstack([pose, [0.0, 0.0, 0.0, 1.0]])
        file = directory / frame["file_path"]
        file = file if file.suffix else file.with_suffix(".png")
        rgba = _read_image(file)
        if images and rgba.shape != images[0].shape:
            raise ShapeError(f"{who}: {file.name} is {rgba.shape[1]}x{rgba.shape[0]}, the first image "
                             f"{images[0].shape[1]}x{images[0].shape[0]}")
        images.append(rgba)
        poses.append(pose)
    rgba = np.stack(images)
    alpha = rgba[..., 3:]
    rgb = rgba[..., :3] * alpha + (1.0 - alpha if white_background else 0.0)
    width = rgba.shape[2]
    focal = 0.5 * width / np.tan(0.5 * float(meta["camera_angle_x"]))
    return NeRFScene(rgb.astype(dtype), np.stack(poses).astype(dtype), float(focal), float(near), float(far))
