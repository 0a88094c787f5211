"""``pad_sequence``: tensors of different lengths stacked into one padded batch, as
``torch.nn.utils.rnn.pad_sequence`` (for lists of token ids as arrays, see
:func:`lamina.text.pad_sequences`), and its inverse ``unpad_sequence``. Packed sequences
(``pack_padded_sequence``, ...) are in :mod:`lamina.nn.packed_sequence`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn.module import as_tensor

__all__ = ["pad_sequence", "unpad_sequence"]


def pad_sequence(sequences: Sequence, batch_first: bool = True, padding_value: float = 0.0,
                 padding_side: str = "right") -> Tensor:
    """Stack tensors (L_i, *) that differ only in length into (B, L_max, *) (``batch_first``,
    lamina's layout for recurrent layers; PyTorch's default is False) or (L_max, B, *), the
    missing steps filled with ``padding_value`` after each sequence (``padding_side='right'``)
    or before it ('left'). Differentiable: each sequence's gradient is its slice of the
    batch's gradient.

    PyTorch packs a padded batch (``pack_padded_sequence``) so that its recurrent layers skip
    the padding; lamina's recurrent layers take packed sequences
    (:mod:`lamina.nn.packed_sequence`) or the lengths directly::

        lengths = numpy.array([len(s) for s in sequences])
        outputs = lstm(pad_sequence(sequences), lengths=lengths)

    reads sample i for its first lengths[i] steps only (its state and last output are those of
    step lengths[i]; the outputs after it are zeros), as a packed sequence would, for padding
    on the right.
    """
    if padding_side not in ("right", "left"):
        raise ValueError(f"pad_sequence: padding_side must be 'right' or 'left', got {padding_side!r}")
    tensors = [as_tensor(s) for s in sequences]
    if not tensors:
        raise ValueError("pad_sequence: expected at least one sequence, got none")
    trailing = tuple(tensors[0].shape[1:])
    for i, t in enumerate(tensors):
        if t.ndim == 0 or tuple(t.shape[1:]) != trailing:
            raise ShapeError(f"pad_sequence: every sequence must have shape (length, *{trailing}) like the first, "
                             f"got {tuple(t.shape)} for sequence {i}")
    longest = max(t.shape[0] for t in tensors)
    padded = []
    for t in tensors:
        missing = longest - t.shape[0]
        steps = (missing, 0) if padding_side == "left" else (0, missing)
        padded.append(F.pad(t, (steps,) + ((0, 0),) * len(trailing), value=padding_value) if missing else t)
    return F.stack(padded, axis=0 if batch_first else 1)


def host_ints(values, who: str, what: str) -> numpy.ndarray:
    """``values`` (a list, array or tensor of integers) as a read-only NumPy int64 array; ``who``
    and ``what`` name the function and the argument in the error for other values."""
    raw = values.data if isinstance(values, Tensor) else values
    array = numpy.asarray(raw if isinstance(raw, (list, tuple)) else backend.to_numpy(raw))
    if array.size and array.dtype.kind not in "iu":
        raise TypeError(f"{who}: {what} must be integers, got an array of dtype {array.dtype} and shape "
                        f"{array.shape}; cast it with .astype(int)")
    array = array.astype(numpy.int64)
    array.flags.writeable = False
    return array


def _unpad_lengths(lengths, batch: int, steps: int, shape: tuple) -> list[int]:
    """The lengths as B ints in [0, T], checked."""
    data = host_ints(lengths, "unpad_sequence", "lengths")
    if data.shape != (batch,):
        raise ShapeError(f"unpad_sequence: lengths must have shape (B,) = ({batch},) for a padded batch of shape "
                         f"{shape}, got shape {data.shape}")
    if batch and (data.min() < 0 or data.max() > steps):
        raise ValueError(f"unpad_sequence: lengths must lie in [0, T] = [0, {steps}] for a padded batch of shape "
                         f"{shape}, got {data.tolist()}")
    return [int(n) for n in data]


def unpad_sequence(padded_sequences, lengths, batch_first: bool = True) -> list[Tensor]:
    """The inverse of :func:`pad_sequence` for padding on the right: the list of sequences
    padded[i, :lengths[i]] (L_i, *) from a padded batch (B, T, *) with ``batch_first``
    (lamina's default; PyTorch's is False) or (T, B, *), 0 <= lengths[i] <= T (a list or
    integer array (B,)), as ``torch.nn.utils.rnn.unpad_sequence``. Differentiable: each
    sequence's gradient goes to its slice of the batch."""
    x = as_tensor(padded_sequences)
    shape = tuple(x.shape)
    if x.ndim < 2:
        layout = "(B, T, *)" if batch_first else "(T, B, *)"
        raise ShapeError(f"unpad_sequence: expected a padded batch {layout} (batch_first={batch_first}), got shape "
                         f"{shape}")
    batch, steps = (shape[0], shape[1]) if batch_first else (shape[1], shape[0])
    sizes = _unpad_lengths(lengths, batch, steps, shape)
    if batch_first:
        return [F.getitem(x, (i, slice(0, n))) for i, n in enumerate(sizes)]
    return [F.getitem(x, (slice(0, n), i)) for i, n in enumerate(sizes)]
