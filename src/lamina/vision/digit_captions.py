"""A captioning task that trains in seconds: scikit-learn's 8x8 handwritten digits side by
side, captioned with their names, "three seven one" (``style='names'``), or for two digits
"a three left of a seven" (``style='relation'``). Each caption word belongs to one region
of the image, so a model with attention should learn to look left to right.
"""

from __future__ import annotations

import numpy as np

from lamina.data import load_digits
from lamina.text.vocabulary import Vocabulary

__all__ = ["DIGIT_WORDS", "digit_caption_vocabulary", "digit_captions"]

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_STYLES = ("names", "relation")


def digit_caption_vocabulary() -> Vocabulary:
    """Word ids for every caption :func:`digit_captions` writes, with ``<pad>``, ``<unk>``,
    ``<s>`` (bos) and ``</s>`` (eos)."""
    return Vocabulary(DIGIT_WORDS + ("a", "left", "of"), level="word", bos="<s>", eos="</s>")


def _enlarged_digit_glyphs(digits: tuple[np.ndarray, np.ndarray] | None, scale: int, who: str,
                           ) -> tuple[np.ndarray, np.ndarray]:
    """(glyphs (M, 8 scale, 8 scale) in [0, 1], labels (M,)) from ``digits`` (images (M, 8, 8) or
    (M, 8, 8, 1) with values 0-255, labels (M,); scikit-learn's 1797 when None), each glyph
    enlarged ``scale`` times by pixel replication; ``who`` names the caller in errors."""
    images, labels = load_digits(size=8) if digits is None else digits
    images = np.asarray(images, dtype=np.float32).reshape(len(images), 8, 8) / 255.0
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != len(images) or not len(images):
        raise ValueError(f"{who}: digits must be non-empty (images, labels) of one length, got {len(images)} "
                         f"images and {len(labels)} labels")
    return images.repeat(scale, axis=1).repeat(scale, axis=2), labels


def digit_captions(count: int, digits_per_image: int = 3, digits: tuple[np.ndarray, np.ndarray] | None = None,
                   style: str = "names", scale: int = 1, noise: float = 0.0, seed: int = 0,
                   ) -> tuple[np.ndarray, list[str]]:
    """``count`` images of ``digits_per_image`` random digits in a row and their captions.

    ``digits``: (images (M, 8, 8) or (M, 8, 8, 1) with values 0-255, labels (M,)), all 1797 of
    scikit-learn's by default (pass disjoint splits for training and held-out images). Glyphs
    are enlarged ``scale`` times by pixel replication; Gaussian noise of standard deviation
    ``noise`` is added and values clipped to [0, 1]. Returns float32 NHWC images
    (count, 8 scale, 8 scale digits_per_image, 1) and the captions."""
    who = "digit_captions"
    if style not in _STYLES:
        raise ValueError(f"{who}: style must be one of {_STYLES}, got {style!r}")
    if style == "relation" and digits_per_image != 2:
        raise ValueError(f"{who}: style='relation' describes two digits; got digits_per_image={digits_per_image}")
    if count < 0 or digits_per_image < 1 or scale < 1 or noise < 0:
        raise ValueError(f"{who}: need count >= 0, digits_per_image >= 1, scale >= 1 and noise >= 0; got "
                         f"count={count}, digits_per_image={digits_per_image}, scale={scale}, noise={noise}")
    glyphs, labels = _enlarged_digit_glyphs(digits, scale, who)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(glyphs), (count, digits_per_image))
    out = np.concatenate([glyphs[picks[:, k]] for k in range(digits_per_image)], axis=2)[..., None]
    if noise:
        out = np.clip(out + rng.normal(0.0, noise, out.shape).astype(np.float32), 0.0, 1.0)
    captions = []
    for row in picks:
        names = [DIGIT_WORDS[int(labels[p])] for p in row]
        captions.append(" ".join(names) if style == "names" else f"a {names[0]} left of a {names[1]}")
    return out.astype(np.float32), captions
