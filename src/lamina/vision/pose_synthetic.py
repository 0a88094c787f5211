"""Synthetic stick figures for pose estimation: one figure per image, nine joints joined by
eight limbs, drawn with anti-aliased strokes into an RGB canvas with Gaussian noise.

Joints: 0 head, 1 neck, 2 pelvis, 3 / 4 left / right hand, 5 / 6 left / right knee, 7 / 8 left /
right foot (:data:`STICK_FLIP_PAIRS` pairs the sides). The torso (length L, tilted by
N(0, 0.25) rad) goes up from the pelvis to the neck, the head 0.45 L further; each arm
(0.8 L) leaves the neck at a uniform angle, each thigh and shin (0.55 L each) hang down within
+-0.7 rad; the whole figure turns about the pelvis by a uniform angle within
+-``max_rotation`` degrees. Left limbs are drawn in the red channel, right limbs in green, the head and torso
in blue, so that the sides can be told apart. Every joint is visible.
"""

from __future__ import annotations

import numpy as np

__all__ = ["STICK_FLIP_PAIRS", "STICK_LIMBS", "stick_figures"]

STICK_LIMBS = ((0, 1), (1, 2), (1, 3), (1, 4), (2, 5), (2, 6), (5, 7), (6, 8))
STICK_FLIP_PAIRS = ((3, 4), (5, 6), (7, 8))
LIMB_CHANNELS = (2, 2, 0, 1, 0, 1, 0, 1)


def _pose(rng: np.random.Generator, length: float) -> np.ndarray:
    def step(start, angle, size):
        return start + size * np.array([np.sin(angle), np.cos(angle)])

    joints = np.zeros((9, 2))
    tilt = rng.normal(0.0, 0.25)
    joints[1] = step(joints[2], np.pi + tilt, length)
    joints[0] = step(joints[1], np.pi + tilt, 0.45 * length)
    for hand, knee, foot, side in ((3, 5, 7, -1.0), (4, 6, 8, 1.0)):
        joints[hand] = step(joints[1], side * rng.uniform(0.3, 2.8), 0.8 * length)
        thigh = side * rng.uniform(0.0, 0.7)
        joints[knee] = step(joints[2], thigh, 0.55 * length)
        joints[foot] = step(joints[knee], thigh + rng.uniform(-0.5, 0.5), 0.55 * length)
    return joints


def _draw(canvas: np.ndarray, joints: np.ndarray, width: float) -> None:
    size = canvas.shape[0]
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    pixels = np.stack([xs, ys], axis=-1)
    for (a, b), channel in zip(STICK_LIMBS, LIMB_CHANNELS):
        start, end = joints[a], joints[b]
        direction = end - start
        t = np.clip(((pixels - start) @ direction) / max(direction @ direction, 1e-12), 0.0, 1.0)
        distance = np.linalg.norm(pixels - (start + t[..., None] * direction), axis=-1)
        canvas[..., channel] = np.maximum(canvas[..., channel], np.clip(width / 2 + 0.5 - distance, 0.0, 1.0))
    head = np.linalg.norm(pixels - joints[0], axis=-1)
    canvas[..., 2] = np.maximum(canvas[..., 2], np.clip(1.8 * width - head, 0.0, 1.0))


def stick_figures(count: int, image_size: int = 48, noise: float = 0.05, stroke: float = 1.5,
                  max_rotation: float = 60.0, seed: int = 0) -> dict[str, np.ndarray]:
    """``count`` images (count, S, S, 3) of one stick figure each (module docstring), with
    'keypoints' (count, 9, 2) as (x, y) pixels, 'visible' (count, 9) and 'boxes' (count, 4),
    the keypoints' bounding box grown by the stroke width (x1, y1, x2, y2). float32 images in
    [0, 1]."""
    if count < 0 or image_size < 16:
        raise ValueError(f"stick_figures: need count >= 0 and image_size >= 16, got {count} and {image_size}")
    rng = np.random.default_rng(seed)
    images = np.zeros((count, image_size, image_size, 3))
    keypoints = np.zeros((count, 9, 2))
    margin = 2.0 + stroke
    for n in range(count):
        joints = _pose(rng, rng.uniform(0.22, 0.3) * image_size)
        angle = np.radians(rng.uniform(-max_rotation, max_rotation))
        turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        joints = joints @ turn.T
        low, high = joints.min(axis=0), joints.max(axis=0)
        shrink = min(1.0, (image_size - 2 * margin) / max((high - low).max(), 1e-9))
        joints = (joints - low) * shrink
        room = image_size - 2 * margin - joints.max(axis=0)
        joints += margin + rng.uniform(0.0, 1.0, 2) * room
        _draw(images[n], joints, stroke)
        keypoints[n] = joints
    images = np.clip(images + noise * rng.standard_normal(images.shape), 0.0, 1.0).astype(np.float32)
    boxes = np.concatenate([keypoints.min(axis=1) - stroke, keypoints.max(axis=1) + stroke], axis=1)
    return {"images": images, "keypoints": keypoints, "visible": np.ones((count, 9)), "boxes": boxes}
