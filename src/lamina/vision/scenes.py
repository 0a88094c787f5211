"""A small detection dataset made from real handwriting: scikit-learn's 8x8 digits, each
enlarged and dropped at random, non-overlapping places on a blank canvas, with the tight
bounding box and the class of every digit as its ground truth. Small enough to train a
detector on in seconds, real enough that the boxes differ in width (a '1' is narrow).
"""

from __future__ import annotations

import numpy as np

from lamina.data import load_digits

__all__ = ["digit_scenes"]


def _tight_box(glyph: np.ndarray) -> tuple[int, int, int, int]:
    """(x1, y1, x2, y2) of the nonzero pixels of a 2-D glyph, x2 and y2 exclusive."""
    rows, cols = np.nonzero(glyph.any(axis=1))[0], np.nonzero(glyph.any(axis=0))[0]
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _place_squares(wanted: int, cell: int, canvas: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """(top, left) of ``wanted`` non-overlapping cell x cell squares, by rejection sampling;
    a layout that leaves no room for the next square is dropped and started again."""
    placed: list[tuple[int, int]] = []
    misses = 0
    while len(placed) < wanted:
        top, left = (int(v) for v in rng.integers(0, canvas - cell + 1, 2))
        if all(abs(top - t) >= cell or abs(left - l) >= cell for t, l in placed):
            placed.append((top, left))
        else:
            misses += 1
            if misses > 100:
                placed, misses = [], 0
    return placed


def digit_scenes(count: int, canvas: int = 48, scale: int = 2, objects: tuple[int, int] = (1, 3),
                 seed: int = 0) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """``count`` scenes of ``canvas`` x ``canvas`` pixels, each holding between objects[0] and
    objects[1] digits (8 * scale pixels square, pixel-replicated) whose squares do not
    overlap.

    Returns ``(images, boxes, labels)``: uint8 images (count, canvas, canvas, 1); for each
    scene a float32 array (k, 4) of corner boxes (x1, y1, x2, y2) in pixels, tight around
    the ink, and an int64 array (k,) of digit classes.
    """
    low, high = objects
    cell = 8 * scale
    if not 1 <= low <= high or count < 0 or scale < 1 or canvas < cell:
        raise ValueError(f"digit_scenes: need count >= 0, scale >= 1, canvas >= {cell} and 1 <= objects[0] "
                         f"<= objects[1]; got count={count}, canvas={canvas}, scale={scale}, objects={objects}")
    if high * cell * cell > canvas * canvas // 2:
        raise ValueError(f"digit_scenes: {high} digits of {cell}x{cell} pixels do not fit loosely on a "
                         f"{canvas}x{canvas} canvas; lower objects[1] or scale, or enlarge the canvas")
    digits, classes = load_digits(size=8)
    glyphs = np.kron(digits[..., 0], np.ones((1, scale, scale), dtype=np.uint8))
    rng = np.random.default_rng(seed)
    images = np.zeros((count, canvas, canvas, 1), dtype=np.uint8)
    all_boxes, all_labels = [], []
    for image in images:
        wanted = int(rng.integers(low, high + 1))
        placed = _place_squares(wanted, cell, canvas, rng)
        picks = rng.integers(0, len(glyphs), wanted)
        boxes = []
        for (top, left), pick in zip(placed, picks):
            image[top:top + cell, left:left + cell, 0] = glyphs[pick]
            x1, y1, x2, y2 = _tight_box(glyphs[pick])
            boxes.append((left + x1, top + y1, left + x2, top + y2))
        all_boxes.append(np.asarray(boxes, dtype=np.float32))
        all_labels.append(classes[picks].astype(np.int64))
    return images, all_boxes, all_labels
