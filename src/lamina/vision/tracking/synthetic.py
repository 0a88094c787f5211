"""Synthetic tracking sequences: ground truth and noisy detections in MOTChallenge format.

Objects (upright boxes, taller than wide) move at a constant velocity plus Gaussian jitter,
bouncing off the image borders. An object further down the image is nearer the camera and hides
those behind it; its visibility is 1 - (area hidden by nearer objects) / area. Each frame, each
object is detected with a box jittered in proportion to its size, except

- with probability ``miss_rate``, or if less than ``min_visibility`` of it shows: no detection;
- if less than ``occlusion_threshold`` of it shows, or with probability ``low_score_rate``: a
  detection with a low score, uniform in ``low_scores`` (what a detector gives an occluded or
  blurred object);
- otherwise a score uniform in ``high_scores``;

and a Poisson number (mean ``false_positives``) of spurious boxes is added, scored in ``low_scores``
or ``high_scores`` with equal odds.
"""

from __future__ import annotations

import numpy as np

__all__ = ["synthetic_mot_scene"]


def _visibility(boxes: np.ndarray) -> np.ndarray:
    """1 - (area covered by boxes lower in the image) / area, at least 0, for corner boxes (N, 4)."""
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    width = np.minimum(boxes[:, None, 2], boxes[None, :, 2]) - np.maximum(boxes[:, None, 0], boxes[None, :, 0])
    height = np.minimum(boxes[:, None, 3], boxes[None, :, 3]) - np.maximum(boxes[:, None, 1], boxes[None, :, 1])
    overlap = np.clip(width, 0, None) * np.clip(height, 0, None)
    in_front = boxes[None, :, 3] > boxes[:, None, 3]
    return np.clip(1.0 - (overlap * in_front).sum(axis=1) / areas, 0.0, 1.0)


def synthetic_mot_scene(num_frames: int = 60, num_objects: int = 6, image_size: tuple[int, int] = (640, 480),
                        seed: int = 0, speed: float = 4.0, motion_noise: float = 0.5, box_noise: float = 0.03,
                        miss_rate: float = 0.05, false_positives: float = 0.3, occlusion_threshold: float = 0.5,
                        min_visibility: float = 0.1, low_score_rate: float = 0.0,
                        low_scores: tuple[float, float] = (0.15, 0.45),
                        high_scores: tuple[float, float] = (0.6, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """A seeded sequence (see the module docstring). Returns ``(ground_truth, detections)``:
    ground truth rows ``(N, 9)`` (frame, id, x, y, w, h, 1, 1, visibility) with ids from 1, and
    detection rows ``(K, 10)`` (frame, -1, x, y, w, h, score, -1, -1, -1); frames count from 1."""
    if num_frames < 1 or num_objects < 0:
        raise ValueError(f"synthetic_mot_scene: need num_frames >= 1 and num_objects >= 0, "
                         f"got {num_frames!r} and {num_objects!r}")
    for name, value in (("miss_rate", miss_rate), ("low_score_rate", low_score_rate)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"synthetic_mot_scene: {name} must lie in [0, 1], got {value!r}")
    rng = np.random.default_rng(seed)
    width, height = image_size
    sizes = np.stack([rng.uniform(0.05, 0.09, num_objects) * width, np.zeros(num_objects)], axis=1)
    sizes[:, 1] = sizes[:, 0] * rng.uniform(1.6, 2.4, num_objects)
    low_corner = rng.uniform(0, 1, (num_objects, 2)) * ([width, height] - sizes)
    velocity = rng.normal(0, speed, (num_objects, 2))
    truth, found = [], []
    for frame in range(1, num_frames + 1):
        if frame > 1:
            low_corner = low_corner + velocity + rng.normal(0, motion_noise, low_corner.shape)
            limit = np.array([width, height]) - sizes
            bounced = (low_corner < 0) | (low_corner > limit)
            velocity = np.where(bounced, -velocity, velocity)
            low_corner = np.clip(low_corner, 0, limit)
        boxes = np.concatenate([low_corner, low_corner + sizes], axis=1)
        visible = _visibility(boxes) if num_objects else np.empty(0)
        for i in range(num_objects):
            truth.append([frame, i + 1, *low_corner[i], *sizes[i], 1, 1, visible[i]])
            if visible[i] < min_visibility or rng.random() < miss_rate:
                continue
            low = visible[i] < occlusion_threshold or rng.random() < low_score_rate
            score = rng.uniform(*(low_scores if low else high_scores))
            jitter = rng.normal(0, box_noise, 4) * np.concatenate([sizes[i], sizes[i]])
            x1, y1, x2, y2 = boxes[i] + jitter
            x2, y2 = max(x2, x1 + 1.0), max(y2, y1 + 1.0)
            found.append([frame, -1, x1, y1, x2 - x1, y2 - y1, score, -1, -1, -1])
        for _ in range(rng.poisson(false_positives)):
            side = rng.uniform(0.04, 0.1) * width
            size = np.array([side, side * rng.uniform(1.5, 2.5)])
            corner = rng.uniform(0, 1, 2) * ([width, height] - size)
            score = rng.uniform(*(low_scores if rng.random() < 0.5 else high_scores))
            found.append([frame, -1, *corner, *size, score, -1, -1, -1])
    return np.array(truth).reshape(-1, 9), np.array(found).reshape(-1, 10)
