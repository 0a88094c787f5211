"""``pad_sequence``: tensors of different lengths stacked into one padded batch, as
``torch.nn.utils.rnn.pad_sequence`` (for lists of token ids as arrays, see
:func:`lamina.text.pad_sequences`)."""

from __future__ import annotations

from collections.abc import Sequence

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn.module import as_tensor

__all__ = ["pad_sequence"]


def pad_sequence(sequences: Sequence, batch_first: bool = True, padding_value: float = 0.0,
                 padding_side: str = "right") -> Tensor:
    """Stack tensors (L_i, *) that differ only in length into (B, L_max, *) (``batch_first``,
    lamina's layout for recurrent layers; PyTorch's default is False) or (L_max, B, *), the
    missing steps filled with ``padding_value`` after each sequence (``padding_side='right'``)
    or before it ('left'). Differentiable: each sequence's gradient is its slice of the
    batch's gradient.

    PyTorch packs a padded batch (``pack_padded_sequence``) so that its recurrent layers skip
    the padding; lamina's recurrent layers take the lengths instead::

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
