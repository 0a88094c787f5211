"""A toy video task for the video classifiers' learning tests: a bright square moving one pixel
a frame to the right, left, down or up (labels 0-3) over a noisy background. One frame, or the
mean of the frames, cannot tell right from left or down from up."""

from __future__ import annotations

import numpy as np

# (row, column) step per frame of each label: right, left, down, up
DIRECTIONS = ((0, 1), (0, -1), (1, 0), (-1, 0))


def moving_squares(count: int, frames: int = 8, size: int = 12, square: int = 3, noise: float = 0.1,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(clips (count, frames, size, size, 1) float32, labels (count,)): each clip a square of
    ``square`` pixels starting where its whole path stays inside the frame."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, count)
    clips = noise * rng.standard_normal((count, frames, size, size, 1))
    travel = frames - 1
    for clip, label in zip(clips, labels):
        dr, dc = DIRECTIONS[label]
        start = []
        for step in (dr, dc):
            low = travel if step < 0 else 0
            high = size - square - (travel if step > 0 else 0)
            start.append(rng.integers(low, high + 1))
        for t in range(frames):
            r, c = start[0] + dr * t, start[1] + dc * t
            clip[t, r:r + square, c:c + square, 0] += 1.0
    return clips.astype(np.float32), labels
