"""Packed sequences, as ``torch.nn.utils.rnn``: a batch of sequences of different lengths
stored without padding, and the conversions between padded batches, lists of sequences and
packed ones.

A batch of B sequences with lengths L_0 >= L_1 >= ... (sorted, longest first) is packed
time-major: ``batch_sizes[t]`` = #{i : L_i > t} sequences still run at step t, and ``data``
(sum_i L_i, *) holds step 0 of the first batch_sizes[0] sequences, then step 1 of the first
batch_sizes[1] ones, and so on: row sum_{s<t} batch_sizes[s] + r of ``data`` is step t of
the r-th longest sequence. A batch that is not sorted is packed in the order
``sorted_indices`` (the r-th longest sequence is sample ``sorted_indices[r]``, the stable
descending order of the lengths, ties kept in batch order) and ``unsorted_indices`` is the
inverse permutation; both are None for a batch packed as sorted (``enforce_sorted=True``).

lamina's recurrent layers (:mod:`lamina.nn.recurrent`) take a :class:`PackedSequence` as
their input: they read each sequence for its own length and return the output sequence
packed the same way. They run it as the padded batch and its lengths (``layer(x,
lengths=...)``), which lamina's layers also take directly.

Differences from PyTorch: lamina's recurrent layout is batch first (N, T, F), so
``batch_first`` defaults to True here (PyTorch's default is False); ``batch_sizes``, the
indices and the lengths :func:`pad_packed_sequence` returns are NumPy int64 arrays (PyTorch's
CPU int64 tensors); PyTorch's ``RuntimeError`` for bad lengths is a ``ValueError`` here, and
lengths longer than the padded batch (which PyTorch does not check) are refused. Every
conversion is differentiable: a packed ``data`` row's gradient goes to the padded step or
sequence step it was read from.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Sequence

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn.module import as_tensor
from lamina.nn.sequence_utils import host_ints, pad_sequence

__all__ = ["PackedSequence", "pack_padded_sequence", "pack_sequence", "pad_packed_sequence", "unpack_sequence"]

_UNSORTED = ("with enforce_sorted=True the lengths must not increase (longest sequence first); sort the batch "
             "or pass enforce_sorted=False, which packs it in length order and records the permutation.")


def _check_batch_sizes(data: Tensor, batch_sizes: np.ndarray) -> None:
    """batch_sizes (T,) positive, non-increasing, summing to the rows of data."""
    who = "PackedSequence"
    if data.ndim < 1:
        raise ShapeError(f"{who}: data must be (sum of lengths, *), got a 0-d tensor")
    if batch_sizes.ndim != 1 or batch_sizes.size == 0:
        raise ShapeError(f"{who}: batch_sizes must be a non-empty 1-D array (one count per step), got shape "
                         f"{batch_sizes.shape}")
    if batch_sizes.min() < 1 or np.any(np.diff(batch_sizes) > 0):
        raise ValueError(f"{who}: batch_sizes must be positive and non-increasing, got {batch_sizes.tolist()}")
    if int(batch_sizes.sum()) != data.shape[0]:
        raise ShapeError(f"{who}: batch_sizes {batch_sizes.tolist()} sum to {int(batch_sizes.sum())}, but data "
                         f"has shape {tuple(data.shape)} (expected that many rows)")


def _check_permutation(indices: np.ndarray, size: int, what: str) -> None:
    if indices.shape != (size,) or not np.array_equal(np.sort(indices), np.arange(size)):
        raise ValueError(f"PackedSequence: {what} must be a permutation of 0..{size - 1} (batch_sizes[0] = "
                         f"{size} sequences), got {indices.tolist()}")


def _invert(permutation: np.ndarray) -> np.ndarray:
    inverse = np.empty_like(permutation)
    inverse[permutation] = np.arange(permutation.size)
    inverse.flags.writeable = False
    return inverse


class PackedSequence(namedtuple("PackedSequence", ["data", "batch_sizes", "sorted_indices", "unsorted_indices"])):
    """A packed batch of B sequences (see the module notes), PyTorch's
    ``torch.nn.utils.rnn.PackedSequence``: an immutable named tuple of

    * ``data``: a tensor (sum of lengths, *), the steps in time-major packed order (it
      carries gradients);
    * ``batch_sizes``: int64 array (T,), the number of sequences still running at each step;
    * ``sorted_indices``: int64 array (B,) or None, the sample packed as the r-th longest;
    * ``unsorted_indices``: its inverse (computed when only ``sorted_indices`` is given).

    Build one with :func:`pack_padded_sequence` or :func:`pack_sequence` rather than by hand.
    """

    __slots__ = ()

    def __new__(cls, data, batch_sizes, sorted_indices=None, unsorted_indices=None):
        data = as_tensor(data)
        batch_sizes = host_ints(batch_sizes, "PackedSequence", "batch_sizes")
        _check_batch_sizes(data, batch_sizes)
        size = int(batch_sizes[0])
        if sorted_indices is None and unsorted_indices is not None:
            raise ValueError("PackedSequence: unsorted_indices given without sorted_indices")
        if sorted_indices is not None:
            sorted_indices = host_ints(sorted_indices, "PackedSequence", "sorted_indices")
            _check_permutation(sorted_indices, size, "sorted_indices")
            if unsorted_indices is None:
                unsorted_indices = _invert(sorted_indices)
            else:
                unsorted_indices = host_ints(unsorted_indices, "PackedSequence", "unsorted_indices")
                if not np.array_equal(unsorted_indices[sorted_indices], np.arange(size)):
                    raise ValueError(f"PackedSequence: unsorted_indices {unsorted_indices.tolist()} must be the "
                                     f"inverse of sorted_indices {sorted_indices.tolist()}")
        return super().__new__(cls, data, batch_sizes, sorted_indices, unsorted_indices)

    @property
    def padded_shape(self) -> tuple:
        """The shape (B, T, *) of the batch-first padded batch it unpacks to."""
        return (int(self.batch_sizes[0]), len(self.batch_sizes), *self.data.shape[1:])


# -- positions of the packed rows ------------------------------------------------------------
def _order(packed: PackedSequence) -> np.ndarray:
    """The sample packed as the r-th longest, r = 0..B-1."""
    if packed.sorted_indices is None:
        return np.arange(int(packed.batch_sizes[0]))
    return packed.sorted_indices


def _positions(batch_sizes: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sample, step) of each packed row: row offset_t + r is step t of sample order[r]."""
    starts = np.cumsum(batch_sizes) - batch_sizes
    times = np.repeat(np.arange(batch_sizes.size), batch_sizes)
    ranks = np.arange(int(batch_sizes.sum())) - np.repeat(starts, batch_sizes)
    return order[ranks], times


def _sorted_lengths(batch_sizes: np.ndarray) -> np.ndarray:
    """L_r = #{t : batch_sizes[t] > r}, the lengths longest first."""
    return (batch_sizes[None, :] > np.arange(int(batch_sizes[0]))[:, None]).sum(axis=1)


def _lengths(packed: PackedSequence) -> np.ndarray:
    """The lengths (B,) in the batch's own order."""
    lengths = _sorted_lengths(packed.batch_sizes)
    return lengths if packed.unsorted_indices is None else lengths[packed.unsorted_indices]


def _index(rows: np.ndarray, times: np.ndarray, batch_first: bool) -> tuple:
    xp = backend.xp
    return (xp.asarray(rows), xp.asarray(times)) if batch_first else (xp.asarray(times), xp.asarray(rows))


# -- padded <-> packed ---------------------------------------------------------------------------
def _check_pack_lengths(who: str, lengths, shape: tuple, batch_first: bool, enforce_sorted: bool) -> np.ndarray:
    """The lengths (B,) of a padded batch of ``shape`` as int64, in [1, T] (sorted longest first
    with ``enforce_sorted``); errors as PyTorch's, naming ``who`` and the shapes."""
    layout = "(B, T, *)" if batch_first else "(T, B, *)"
    if len(shape) < 2:
        raise ShapeError(f"{who}: input must be a padded batch {layout} (batch_first={batch_first}), got shape "
                         f"{shape}")
    batch, steps = (shape[0], shape[1]) if batch_first else (shape[1], shape[0])
    if batch == 0 or steps == 0:
        raise ValueError(f"{who}: nothing to pack: the padded batch of shape {shape} has no sequence or no step")
    lengths = host_ints(lengths, who, "lengths")
    if lengths.shape != (batch,):
        raise ShapeError(f"{who}: expected one length per sequence, (B,) = ({batch},) for an input of shape {shape} "
                         f"(layout {layout}), got lengths of shape {lengths.shape}")
    if lengths.min() < 1:
        raise ValueError(f"{who}: every sequence must have at least one step, got lengths {lengths.tolist()}")
    if lengths.max() > steps:
        raise ValueError(f"{who}: lengths must be at most the padded length T = {steps} of the input of shape "
                         f"{shape} (layout {layout}), got {lengths.tolist()}")
    if enforce_sorted and np.any(np.diff(lengths) > 0):
        raise ValueError(f"{who}: {_UNSORTED} Got lengths {lengths.tolist()}")
    return lengths


def _batch_sizes(sorted_lengths: np.ndarray) -> np.ndarray:
    """batch_sizes[t] = #{i : L_i > t}, t = 0..max(L)-1."""
    return (sorted_lengths[None, :] > np.arange(int(sorted_lengths[0]))[:, None]).sum(axis=1)


def _pack(who: str, padded, lengths, batch_first: bool, enforce_sorted: bool) -> PackedSequence:
    x = as_tensor(padded)
    lengths = _check_pack_lengths(who, lengths, tuple(x.shape), batch_first, enforce_sorted)
    sorted_indices = None if enforce_sorted else np.argsort(-lengths, kind="stable")
    order = np.arange(lengths.size) if sorted_indices is None else sorted_indices
    batch_sizes = _batch_sizes(lengths[order])
    data = F.getitem(x, _index(*_positions(batch_sizes, order), batch_first))
    return PackedSequence(data, batch_sizes, sorted_indices)


def pack_padded_sequence(input, lengths, batch_first: bool = True,  # noqa: A002 (PyTorch's name)
                         enforce_sorted: bool = True) -> PackedSequence:
    """Pack a right-padded batch, (B, T, *) with ``batch_first`` (lamina's recurrent layout and
    default; PyTorch's default is False) or (T, B, *), whose sample i has ``lengths[i]`` real
    steps, 1 <= lengths[i] <= T (a list or integer array (B,)): ``data`` row
    sum_{s<t} batch_sizes[s] + r = input[order[r], t], with order the samples longest first
    (see the module notes). ``enforce_sorted=True`` requires the lengths in decreasing order
    (and leaves ``sorted_indices`` None); False sorts them (stable). What the padding holds
    is not read; its gradient is zero."""
    return _pack("pack_padded_sequence", input, lengths, batch_first, enforce_sorted)


def pack_as(padded, template: PackedSequence) -> PackedSequence:
    """A batch-first padded batch (B, T', *), T' >= T, packed with the batch sizes and order of
    ``template`` (same lengths, same ``sorted_indices``): how a recurrent layer packs its output
    sequence like its packed input."""
    x = as_tensor(padded)
    expected = template.padded_shape[:2]
    if x.ndim < 2 or x.shape[0] != expected[0] or x.shape[1] < expected[1]:
        raise ShapeError(f"pack_as: padded must be (B, T, *) with B = {expected[0]} and T >= {expected[1]} to "
                         f"match the packed sequence, got shape {tuple(x.shape)}")
    data = F.getitem(x, _index(*_positions(template.batch_sizes, _order(template)), True))
    return PackedSequence(data, template.batch_sizes, template.sorted_indices, template.unsorted_indices)


def _check_total_length(total_length, steps: int) -> int:
    if total_length is None:
        return steps
    if isinstance(total_length, bool) or not isinstance(total_length, (int, np.integer)):
        raise TypeError(f"pad_packed_sequence: total_length must be an int or None, got {total_length!r}")
    if total_length < steps:
        raise ValueError(f"pad_packed_sequence: total_length={total_length} is shorter than the longest packed "
                         f"sequence, {steps} steps")
    return int(total_length)


def pad_packed_sequence(sequence: PackedSequence, batch_first: bool = True, padding_value: float = 0.0,
                        total_length: int | None = None) -> tuple[Tensor, np.ndarray]:
    """The inverse of :func:`pack_padded_sequence`: (padded, lengths), padded (B, T', *) with
    ``batch_first`` (lamina's default; PyTorch's is False) or (T', B, *), the samples in their
    original order, padded[i, t] = the packed step t of sample i for t < lengths[i] and
    ``padding_value`` after it; T' = ``total_length`` (at least the longest length; default
    that length). ``lengths`` is an int64 array (B,) in the original order, as a recurrent
    layer's ``lengths=`` takes it."""
    if not isinstance(sequence, PackedSequence):
        raise TypeError(f"pad_packed_sequence: expected a PackedSequence, got {type(sequence).__name__}")
    batch, steps = sequence.padded_shape[:2]
    total = _check_total_length(total_length, steps)
    data = sequence.data
    rows, times = _positions(sequence.batch_sizes, _order(sequence))
    slot = np.full((batch, total), data.shape[0], dtype=np.int64)     # the appended padding row
    slot[rows, times] = np.arange(data.shape[0])
    widths = ((0, 1),) + ((0, 0),) * (data.ndim - 1)
    extended = F.pad(data, widths, value=padding_value)
    padded = F.getitem(extended, backend.xp.asarray(slot if batch_first else slot.T))
    return padded, _lengths(sequence)


def pack_sequence(sequences: Sequence, enforce_sorted: bool = True) -> PackedSequence:
    """Pack a list of tensors (L_i, *), as :func:`pack_padded_sequence` of their padded batch
    with lengths L_i (``enforce_sorted`` as there: True requires L_0 >= L_1 >= ...)."""
    tensors = [as_tensor(s) for s in sequences]
    if not tensors:
        raise ValueError("pack_sequence: expected at least one sequence, got none")
    lengths = [t.shape[0] if t.ndim else 0 for t in tensors]
    if min(lengths) < 1:
        raise ValueError(f"pack_sequence: every sequence must have at least one step, got sequences of shapes "
                         f"{[tuple(t.shape) for t in tensors]}")
    padded = pad_sequence(tensors, batch_first=True)
    return _pack("pack_sequence", padded, np.asarray(lengths), True, enforce_sorted)


def unpack_sequence(packed_sequences: PackedSequence) -> list[Tensor]:
    """The inverse of :func:`pack_sequence`: the list of the B sequences (L_i, *) in their
    original order, each a differentiable view of ``data``'s rows."""
    if not isinstance(packed_sequences, PackedSequence):
        raise TypeError(f"unpack_sequence: expected a PackedSequence, got {type(packed_sequences).__name__}")
    rows, _ = _positions(packed_sequences.batch_sizes, _order(packed_sequences))
    xp = backend.xp
    sequences = []
    for i in range(packed_sequences.padded_shape[0]):
        mine = np.flatnonzero(rows == i)                  # packed rows are in time order
        sequences.append(F.getitem(packed_sequences.data, xp.asarray(mine)))
    return sequences
