"""Batches of token ids: padding sequences of different lengths to one length, and the
input/target windows of a language model (predict token t + 1 from tokens up to t)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["language_model_windows", "pad_sequences", "shifted_pairs"]

_SIDES = ("pre", "post")


def pad_sequences(sequences: Sequence[Sequence[int]], maxlen: int | None = None, padding: str = "pre",
                  truncating: str = "pre", value: int = 0, dtype=np.int64) -> np.ndarray:
    """An (m, maxlen) array of the sequences, padded with ``value`` and cut to ``maxlen``
    (default: the longest). ``padding``/``truncating`` 'pre' pads or cuts at the start, so
    the last steps, those a many-to-one RNN reads last, are the sequence's own (Keras's
    defaults); 'post' at the end. Sequences of feature vectors (arrays of shape (length,
    *features), the same features for all) give an (m, maxlen, *features) array, padded and
    cut along the steps, as in Keras."""
    for what, side in (("padding", padding), ("truncating", truncating)):
        if side not in _SIDES:
            raise ValueError(f"pad_sequences: {what} must be one of {_SIDES}, got {side!r}")
    lengths = [len(s) for s in sequences]
    if maxlen is None:
        maxlen = max(lengths, default=0)
    if isinstance(maxlen, bool) or not isinstance(maxlen, int) or maxlen < 0:
        raise ValueError(f"pad_sequences: maxlen must be an int >= 0, got {maxlen!r}")
    steps = [np.asarray(seq, dtype=dtype) for seq in sequences]
    features = next((seq.shape[1:] for seq in steps if len(seq)), ())
    out = np.full((len(sequences), maxlen, *features), value, dtype=dtype)
    for i, seq in enumerate(steps):
        if not len(seq):
            continue
        if seq.shape[1:] != features:
            first = next(j for j, s in enumerate(steps) if len(s))
            raise ValueError(f"pad_sequences: sequence {i} has steps of shape {seq.shape[1:]}, sequence {first} "
                             f"of shape {features}; all steps must have the same shape")
        if len(seq) > maxlen:
            seq = seq[len(seq) - maxlen:] if truncating == "pre" else seq[:maxlen]
        if len(seq):
            if padding == "pre":
                out[i, maxlen - len(seq):] = seq
            else:
                out[i, :len(seq)] = seq
    return out


def shifted_pairs(sequences: Sequence[Sequence[int]], pad: int, ignore_index: int = -100,
                  maxlen: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Language-model pairs of whole sequences (each already framed by its bos/eos ids):
    inputs x = s[:-1] and targets y = s[1:], padded at the end, x with ``pad`` and y with
    ``ignore_index`` (for ``categorical_cross_entropy(..., ignore_index=...)``)."""
    short = [i for i, s in enumerate(sequences) if len(s) < 2]
    if short:
        raise ValueError(f"shifted_pairs: sequence {short[0]} has {len(sequences[short[0]])} ids; each needs at "
                         "least 2 (an input and its target)")
    x = pad_sequences([s[:-1] for s in sequences], maxlen, padding="post", truncating="post", value=pad)
    y = pad_sequences([s[1:] for s in sequences], maxlen, padding="post", truncating="post", value=ignore_index)
    return x, y


def language_model_windows(ids: Sequence[int], length: int, stride: int | None = None) -> tuple[np.ndarray,
                                                                                                 np.ndarray]:
    """Windows over one long id stream (a corpus): x[i] = ids[s_i : s_i + length] and its
    targets y[i] = ids[s_i + 1 : s_i + length + 1], s_i = i * stride (default: ``length``,
    windows that do not overlap). Views of one array, so windows cost no copy."""
    ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
    stride = length if stride is None else stride
    for what, v in (("length", length), ("stride", stride)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"language_model_windows: {what} must be a positive int, got {v!r}")
    if len(ids) < length + 1:
        raise ValueError(f"language_model_windows: a window of {length} inputs and its shifted targets need "
                         f"{length + 1} ids, got {len(ids)}")
    count = (len(ids) - length - 1) // stride + 1
    windows = np.lib.stride_tricks.as_strided(ids, (count, length + 1), (stride * ids.strides[0], ids.strides[0]),
                                              writeable=False)
    return windows[:, :-1], windows[:, 1:]
