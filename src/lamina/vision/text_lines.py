"""Synthetic text lines for training a text recogniser in seconds: scikit-learn's 8x8
handwritten digits, enlarged and written left to right with random gaps, a random vertical
offset per glyph and pixel noise, each line labelled with its digit string.

Lines differ in width, so a batch pads them on the right with background (zeros) and keeps
every line's own width: a CTC recogniser reads each line for the frames its width gives.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lamina.vision.digit_captions import _enlarged_digit_glyphs

__all__ = ["TextLineDataset", "collate_text_lines", "synthetic_text_lines"]


def _range(value, who: str, what: str, low: int) -> tuple[int, int]:
    first, last = (int(v) for v in value)
    if not low <= first <= last:
        raise ValueError(f"{who}: {what} must be (low, high) with {low} <= low <= high, got {value!r}")
    return first, last


def synthetic_text_lines(count: int, digits: tuple[np.ndarray, np.ndarray] | None = None,
                         length_range: tuple[int, int] = (3, 5), spacing_range: tuple[int, int] = (0, 4),
                         height: int = 20, scale: int = 2, noise: float = 0.05, seed: int = 0,
                         ) -> tuple[list[np.ndarray], list[str]]:
    """``count`` lines of between length_range[0] and length_range[1] digits.

    ``digits``: (images (M, 8, 8) or (M, 8, 8, 1) with values 0-255, labels (M,)), scikit-learn's
    1797 digits by default (pass a split to keep training and test glyphs apart). Each glyph
    is enlarged ``scale`` times by pixel replication (8 scale pixels square) and placed at a
    random height in the line of ``height`` pixels, a random gap of ``spacing_range`` pixels
    before it (and a margin of as many after the last); Gaussian noise of standard deviation
    ``noise`` is added and the values clipped to [0, 1].

    Returns (images, texts): float32 NHWC lines (height, width_n, 1) of their own widths, and
    the digit strings."""
    who = "synthetic_text_lines"
    low, high = _range(length_range, who, "length_range", 1)
    gap_low, gap_high = _range(spacing_range, who, "spacing_range", 0)
    if count < 0 or scale < 1 or height < 8 * scale or noise < 0:
        raise ValueError(f"{who}: need count >= 0, scale >= 1, height >= 8 * scale and noise >= 0; got "
                         f"count={count}, scale={scale}, height={height}, noise={noise}")
    glyphs, labels = _enlarged_digit_glyphs(digits, scale, who)
    size = 8 * scale
    rng = np.random.default_rng(seed)
    lines, texts = [], []
    for _ in range(count):
        picks = rng.integers(0, len(glyphs), int(rng.integers(low, high + 1)))
        gaps = rng.integers(gap_low, gap_high + 1, len(picks) + 1)
        line = np.zeros((height, int(gaps.sum()) + size * len(picks)), dtype=np.float32)
        left = 0
        for pick, gap in zip(picks, gaps):
            left += int(gap)
            top = int(rng.integers(0, height - size + 1))
            line[top:top + size, left:left + size] = glyphs[pick]
            left += size
        if noise:
            line = np.clip(line + rng.normal(0.0, noise, line.shape).astype(np.float32), 0.0, 1.0)
        lines.append(line[..., None])
        texts.append("".join(str(int(labels[p])) for p in picks))
    return lines, texts


class TextLineDataset:
    """Lines (height, width_n, channels) of one height and channel count, with their texts;
    ``dataset[i]`` is ``(image, text)``. Batch with :func:`collate_text_lines`."""

    def __init__(self, images: Sequence[np.ndarray], texts: Sequence[str]):
        if len(images) != len(texts):
            raise ValueError(f"TextLineDataset: got {len(images)} images and {len(texts)} texts")
        shapes = {np.shape(image)[::2] for image in images}
        if any(np.ndim(image) != 3 for image in images) or len(shapes) > 1:
            raise ValueError(f"TextLineDataset: images must be (height, width, channels) of one height and channel "
                             f"count, got (height, channels) {sorted(shapes)}")
        self.images, self.texts = list(images), [str(t) for t in texts]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[np.ndarray, str]:
        return self.images[index], self.texts[index]


def collate_text_lines(samples: Sequence[tuple[np.ndarray, str]], pad_value: float = 0.0,
                       ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images, widths, texts) of a batch of ``(image, text)`` samples: the images padded on the
    right with ``pad_value`` to the widest, (N, height, max width, channels) float32, their own
    widths (N,) int64, and the texts."""
    if not samples:
        raise ValueError("collate_text_lines: got an empty batch")
    images = [np.asarray(image, dtype=np.float32) for image, _ in samples]
    if len({(i.shape[0], i.shape[2]) if i.ndim == 3 else None for i in images}) != 1 or images[0].ndim != 3:
        raise ValueError(f"collate_text_lines: images must be (height, width, channels) of one height and channel "
                         f"count, got shapes {[i.shape for i in images]}")
    widths = np.array([i.shape[1] for i in images], dtype=np.int64)
    height, channels = images[0].shape[0], images[0].shape[2]
    batch = np.full((len(images), height, int(widths.max()), channels), pad_value, dtype=np.float32)
    for n, image in enumerate(images):
        batch[n, :, :image.shape[1]] = image
    return batch, widths, [text for _, text in samples]
