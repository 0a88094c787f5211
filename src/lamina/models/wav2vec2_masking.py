"""The random masks of wav2vec 2.0 (SpecAugment spans) and the negatives of its contrastive
task, drawn by Hugging Face's rules (``_compute_mask_indices``, ``_sample_negative_indices``).

Mask spans. For a row of ``n`` real frames (the first ``n`` of ``length``), with one draw
epsilon ~ U[0, 1) shared by the whole batch,

    spans(n) = int(mask_prob * n / mask_length + epsilon)       (probabilistic rounding)
    spans(n) = max(spans(n), min_masks)
    spans(n) = length // mask_length         if spans(n) * mask_length > length
    spans(n) = max(n - mask_length + 1, 0)   if that is fewer

and ``spans(n)`` distinct starts are drawn uniformly from 0 .. n - mask_length, each masking
``mask_length`` frames (spans may overlap, so ``mask_prob`` is an upper bound on the masked
fraction). If no row of the full ``length`` would get a span, nothing is masked; a padded row too
short for any span masks its last frame instead (a padding frame), as Hugging Face does.

Negatives. For each frame of a row, ``num_negatives`` frames are drawn uniformly, with
replacement, from that row's masked frames (every frame when no mask is given) other than the
frame itself; they are returned as indices into the batch's frames flattened to
(batch * length). Frames outside the mask get index ``row * length`` (their loss is not used).

Draws come from ``rng`` (a NumPy Generator or a seed), by default lamina's generator
(:func:`lamina.manual_seed`); epsilon is a mask call's first draw.
"""

from __future__ import annotations

import numbers

import numpy as np

from lamina import backend
from lamina.errors import ShapeError

__all__ = ["compute_mask_indices", "masked_span_count", "sample_negative_indices"]


def _generator(rng) -> np.random.Generator:
    if rng is None:
        return backend.rng()
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def _shape(shape, who: str) -> tuple[int, int]:
    if len(shape) != 2 or any(isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1 for n in shape):
        raise ShapeError(f"{who}: expected a shape (batch, length) of two positive ints, got {tuple(shape)}")
    return int(shape[0]), int(shape[1])


def _row_lengths(attention_mask, batch: int, length: int, who: str) -> np.ndarray:
    """The real frames of each row: the sums of ``attention_mask`` (batch, length), or ``length``."""
    if attention_mask is None:
        return np.full(batch, length, dtype=np.int64)
    mask = np.asarray(getattr(attention_mask, "data", attention_mask))
    if mask.shape != (batch, length):
        raise ShapeError(f"{who}: attention_mask of shape {mask.shape} does not match the shape "
                         f"(batch, length) = {(batch, length)}")
    return mask.astype(bool).sum(axis=-1).astype(np.int64)


def masked_span_count(input_length: int, length: int, mask_prob: float, mask_length: int, min_masks: int,
                      epsilon: float) -> int:
    """The number of spans masked in a row of ``input_length`` real frames out of ``length``
    (the rule of the module docstring)."""
    count = max(int(mask_prob * input_length / mask_length + epsilon), min_masks)
    if count * mask_length > length:
        count = length // mask_length
    return min(count, max(input_length - (mask_length - 1), 0))


def compute_mask_indices(shape: tuple[int, int], mask_prob: float, mask_length: int, attention_mask=None,
                         min_masks: int = 0, rng=None) -> np.ndarray:
    """A boolean (batch, length) mask of random spans of ``mask_length`` frames (SpecAugment
    as wav2vec 2.0, Hugging Face's ``_compute_mask_indices``; see the module docstring).
    ``attention_mask`` (batch, length), 1 on the real frames of right-padded rows, shortens
    each row; ``min_masks`` is the fewest spans a row gets when it has room for them."""
    who = "compute_mask_indices"
    batch, length = _shape(shape, who)
    if isinstance(mask_length, bool) or not isinstance(mask_length, numbers.Integral) or mask_length < 1:
        raise ValueError(f"{who}: mask_length must be a positive int, got {mask_length!r}")
    if mask_length > length:
        raise ValueError(f"{who}: mask_length {mask_length} is longer than the axis of length {length}")
    if not 0.0 <= float(mask_prob) <= 1.0:
        raise ValueError(f"{who}: mask_prob must be in [0, 1], got {mask_prob!r}")
    if isinstance(min_masks, bool) or not isinstance(min_masks, numbers.Integral) or min_masks < 0:
        raise ValueError(f"{who}: min_masks must be a non-negative int, got {min_masks!r}")
    lengths = _row_lengths(attention_mask, batch, length, who)
    generator = _generator(rng)
    epsilon = generator.random()
    mask = np.zeros((batch, length), dtype=bool)
    if masked_span_count(length, length, mask_prob, mask_length, min_masks, epsilon) == 0:
        return mask
    for row, input_length in enumerate(lengths):
        count = masked_span_count(int(input_length), length, mask_prob, mask_length, min_masks, epsilon)
        starts = generator.choice(max(int(input_length) - mask_length + 1, 0), count, replace=False)
        if count == 0:
            mask[row, length - 1] = True
        for start in starts:
            mask[row, start:start + mask_length] = True
    return mask


def sample_negative_indices(features_shape: tuple[int, int], num_negatives: int, mask_time_indices=None,
                            rng=None) -> np.ndarray:
    """(batch, length, num_negatives) int64 indices into the (batch * length) frames: for each
    masked frame, ``num_negatives`` other masked frames of the same row drawn uniformly with
    replacement (Hugging Face's ``_sample_negative_indices``; see the module docstring)."""
    who = "sample_negative_indices"
    batch, length = _shape(features_shape, who)
    if isinstance(num_negatives, bool) or not isinstance(num_negatives, numbers.Integral) or num_negatives < 1:
        raise ValueError(f"{who}: num_negatives must be a positive int, got {num_negatives!r}")
    if mask_time_indices is None:
        candidates = np.ones((batch, length), dtype=bool)
    else:
        candidates = np.asarray(getattr(mask_time_indices, "data", mask_time_indices)).astype(bool)
        if candidates.shape != (batch, length):
            raise ShapeError(f"{who}: mask_time_indices of shape {candidates.shape} does not match "
                             f"features_shape {(batch, length)}")
    generator = _generator(rng)
    negatives = np.zeros((batch, length, num_negatives), dtype=np.int64)
    for row in range(batch):
        frames = np.flatnonzero(candidates[row])
        if frames.size < 2:
            raise ValueError(f"{who}: row {row} has {frames.size} masked frame(s); each row needs at least 2 "
                             f"to draw negatives other than the frame itself")
        drawn = generator.integers(0, frames.size - 1, size=(frames.size, num_negatives))
        drawn += drawn >= np.arange(frames.size)[:, None]          # skip the frame itself, uniformly
        negatives[row, frames] = frames[drawn]
        negatives[row] += row * length
    return negatives
