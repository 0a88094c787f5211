"""Packed sequences (``lamina.nn.packed_sequence``) and ``unpad_sequence`` against
``torch.nn.utils.rnn``: packed data, batch sizes and permutations, round trips, gradients
through pack and pad, and PyTorch's errors for bad lengths."""

import re

import numpy as np
import pytest
import torch
from torch.nn.utils import rnn

import lamina
from helpers import assert_close, check_gradients, compare_with_torch
from lamina.errors import ShapeError
from lamina.nn.packed_sequence import (
    PackedSequence,
    pack_as,
    pack_padded_sequence,
    pack_sequence,
    pad_packed_sequence,
    unpack_sequence,
)
from lamina.nn.sequence_utils import pad_sequence, unpad_sequence

# (seed, batch, steps, trailing shape, batch_first, enforce_sorted)
CONFIGS = [
    (0, 5, 4, (3,), True, False),
    (1, 6, 5, (2,), False, False),
    (2, 4, 6, (2, 3), True, True),
    (3, 7, 3, (), False, True),
    (4, 9, 4, (2,), True, False),        # lengths in 1..4 for 9 samples: ties
    (5, 1, 3, (2,), False, True),
]


def _lengths(rng, batch: int, steps: int, enforce_sorted: bool) -> np.ndarray:
    lengths = rng.integers(1, steps + 1, size=batch)
    lengths[rng.integers(batch)] = steps
    return np.sort(lengths)[::-1].copy() if enforce_sorted else lengths


def _padded(rng, batch, steps, trailing, batch_first) -> np.ndarray:
    shape = (batch, steps, *trailing) if batch_first else (steps, batch, *trailing)
    return rng.standard_normal(shape)


def _same_layout(ours: PackedSequence, theirs) -> None:
    np.testing.assert_array_equal(ours.batch_sizes, theirs.batch_sizes.numpy())
    for mine, ref in ((ours.sorted_indices, theirs.sorted_indices), (ours.unsorted_indices, theirs.unsorted_indices)):
        assert (mine is None) == (ref is None)
        if ref is not None:
            np.testing.assert_array_equal(mine, ref.numpy())


@pytest.mark.parametrize("config", CONFIGS)
def test_pack_padded_matches_torch(config):
    seed, batch, steps, trailing, batch_first, enforce_sorted = config
    rng = np.random.default_rng(seed)
    lengths = _lengths(rng, batch, steps, enforce_sorted)
    x = _padded(rng, batch, steps, trailing, batch_first)
    kwargs = {"batch_first": batch_first, "enforce_sorted": enforce_sorted}
    compare_with_torch(lambda a: pack_padded_sequence(a, lengths, **kwargs).data,
                       lambda a: rnn.pack_padded_sequence(a, torch.as_tensor(lengths), **kwargs).data,
                       x, dtype=np.float64)
    ours = pack_padded_sequence(lamina.tensor(x, dtype=np.float64), lengths, **kwargs)
    _same_layout(ours, rnn.pack_padded_sequence(torch.tensor(x), torch.as_tensor(lengths), **kwargs))
    assert isinstance(ours, tuple) and len(ours) == 4


@pytest.mark.parametrize("padding_value", [0.0, -2.5])
@pytest.mark.parametrize("config", CONFIGS)
def test_pad_packed_matches_torch(config, padding_value):
    """pack then pad, with a longer total_length, against torch: values, the lengths in the
    original order, and the gradient of the padded input through both."""
    seed, batch, steps, trailing, batch_first, enforce_sorted = config
    rng = np.random.default_rng(seed)
    lengths = _lengths(rng, batch, steps, enforce_sorted)
    x = _padded(rng, batch, steps, trailing, batch_first)
    total = steps + 2
    kwargs = {"batch_first": batch_first}

    def ours(a):
        packed = pack_padded_sequence(a, lengths, enforce_sorted=enforce_sorted, **kwargs)
        padded, back = pad_packed_sequence(packed, padding_value=padding_value, total_length=total, **kwargs)
        np.testing.assert_array_equal(back, lengths)
        return padded

    def theirs(a):
        packed = rnn.pack_padded_sequence(a, torch.as_tensor(lengths), enforce_sorted=enforce_sorted, **kwargs)
        return rnn.pad_packed_sequence(packed, padding_value=padding_value, total_length=total, **kwargs)[0]

    compare_with_torch(ours, theirs, x, dtype=np.float64)


@pytest.mark.parametrize("batch_first", [True, False])
def test_round_trip_keeps_real_steps(batch_first):
    """pad(pack(x)) = x at the real steps, the padding value after them; the padding's
    gradient is zero."""
    rng = np.random.default_rng(7)
    lengths = np.array([3, 1, 4, 4, 2])
    x = rng.standard_normal((5, 4, 2))
    xt = lamina.tensor(x if batch_first else x.transpose(1, 0, 2), requires_grad=True, dtype=np.float64)
    padded, back = pad_packed_sequence(pack_padded_sequence(xt, lengths, batch_first, enforce_sorted=False),
                                       batch_first, padding_value=9.0)
    got = padded.numpy() if batch_first else padded.numpy().transpose(1, 0, 2)
    real = np.arange(4)[None, :] < lengths[:, None]
    np.testing.assert_array_equal(got[real], x[real])
    assert np.all(got[~real] == 9.0)
    assert back.dtype == np.int64
    padded.sum().backward()
    grad = xt.grad if batch_first else xt.grad.transpose(1, 0, 2)
    np.testing.assert_array_equal(grad, real[..., None].astype(float).repeat(2, axis=2))


def test_gradcheck_pack_and_pad():
    lengths = np.array([2, 4, 1])

    def fn(x):
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        padded, _ = pad_packed_sequence(packed, padding_value=1.5, total_length=5)
        return (padded * padded).sum() + (packed.data ** 3).sum()

    assert check_gradients(fn, np.random.default_rng(0).standard_normal((3, 4, 2)))


@pytest.mark.parametrize("enforce_sorted", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pack_sequence_and_unpack_match_torch(seed, enforce_sorted):
    rng = np.random.default_rng(seed)
    lengths = _lengths(rng, 4, 5, enforce_sorted)
    arrays = [rng.standard_normal((n, 3)) for n in lengths]

    def ours(*seqs):
        packed = pack_sequence(seqs, enforce_sorted=enforce_sorted)
        return [packed.data, *unpack_sequence(packed)]

    def theirs(*seqs):
        packed = rnn.pack_sequence(seqs, enforce_sorted=enforce_sorted)
        return [packed.data, *rnn.unpack_sequence(packed)]

    compare_with_torch(ours, theirs, *arrays, dtype=np.float64)
    _same_layout(pack_sequence([lamina.tensor(a) for a in arrays], enforce_sorted),
                 rnn.pack_sequence([torch.tensor(a) for a in arrays], enforce_sorted))


@pytest.mark.parametrize("batch_first", [True, False])
def test_unpad_sequence_matches_torch(batch_first):
    rng = np.random.default_rng(3)
    lengths = np.array([2, 0, 4, 1])
    x = rng.standard_normal((4, 5, 3) if batch_first else (5, 4, 3))
    compare_with_torch(lambda a: unpad_sequence(a, lengths, batch_first),
                       # torch transposes its input in place: not on a leaf
                       lambda a: rnn.unpad_sequence(a * 1, torch.as_tensor(lengths), batch_first),
                       x, dtype=np.float64)
    pieces = unpad_sequence(lamina.tensor(x), list(lengths), batch_first)
    assert [p.shape[0] for p in pieces] == list(lengths)


def test_pack_as_follows_the_template():
    """pack_as packs another padded batch (a layer's outputs, longer padding allowed) in the
    template's order: the same as packing it with the template's lengths."""
    rng = np.random.default_rng(4)
    lengths = np.array([2, 5, 3, 5])
    template = pack_padded_sequence(lamina.tensor(rng.standard_normal((4, 5, 2))), lengths, enforce_sorted=False)
    other = rng.standard_normal((4, 6, 3))
    packed = pack_as(lamina.tensor(other), template)
    expected = pack_padded_sequence(lamina.tensor(other), lengths, enforce_sorted=False)
    np.testing.assert_array_equal(packed.data.numpy(), expected.data.numpy())
    np.testing.assert_array_equal(packed.sorted_indices, template.sorted_indices)
    with pytest.raises(ShapeError, match=r"pack_as: padded must be \(B, T, \*\) with B = 4 and T >= 5"):
        pack_as(lamina.tensor(other[:, :4]), template)


# -- the PackedSequence tuple -----------------------------------------------------------------
def test_packed_sequence_is_an_immutable_named_tuple():
    data = lamina.tensor(np.arange(6.0).reshape(6, 1))
    packed = PackedSequence(data, [3, 2, 1], sorted_indices=[2, 0, 1])
    values, batch_sizes, sorted_indices, unsorted_indices = packed
    assert values is data
    np.testing.assert_array_equal(unsorted_indices, [1, 2, 0])
    assert batch_sizes.dtype == np.int64 and packed.padded_shape == (3, 3, 1)
    with pytest.raises(AttributeError):
        packed.data = data
    with pytest.raises(ValueError):
        packed.batch_sizes[0] = 5
    padded, lengths = pad_packed_sequence(packed)
    np.testing.assert_array_equal(lengths, [2, 1, 3])
    np.testing.assert_array_equal(padded.numpy()[2, :, 0], [0, 3, 5])


@pytest.mark.parametrize("args, error, message", [
    (([3, 2], None), ShapeError, r"batch_sizes \[3, 2\] sum to 5, but data has shape \(6, 1\)"),
    (([2, 3, 1], None), ValueError, r"batch_sizes must be positive and non-increasing, got \[2, 3, 1\]"),
    (([3, 2, 1], [0, 0, 1]), ValueError, r"sorted_indices must be a permutation of 0..2"),
    (([3.0, 2.0, 1.0], None), TypeError, r"batch_sizes must be integers"),
])
def test_packed_sequence_checks_its_fields(args, error, message):
    with pytest.raises(error, match=f"PackedSequence: {message}"):
        PackedSequence(lamina.tensor(np.zeros((6, 1))), *args)


# -- errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize("lengths, kwargs, message", [
    ([2, 3, 1], {}, "with enforce_sorted=True the lengths must not increase"),
    ([2, 0, 1], {"enforce_sorted": False}, "every sequence must have at least one step"),
])
def test_bad_lengths_are_refused_where_torch_refuses_them(lengths, kwargs, message):
    x = np.zeros((3, 4, 2))
    with pytest.raises(RuntimeError):
        rnn.pack_padded_sequence(torch.tensor(x), torch.tensor(lengths), batch_first=True, **kwargs)
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        pack_padded_sequence(lamina.tensor(x), lengths, **kwargs)
    assert str(info.value).startswith("pack_padded_sequence: ") and str(lengths) in str(info.value)


def test_pack_sequence_refuses_unsorted_like_torch():
    seqs = [np.zeros((2, 3)), np.zeros((3, 3))]
    with pytest.raises(RuntimeError):
        rnn.pack_sequence([torch.tensor(s) for s in seqs])
    with pytest.raises(ValueError, match=r"pack_sequence: with enforce_sorted=True the lengths must not increase"):
        pack_sequence([lamina.tensor(s) for s in seqs])


def test_total_length_too_short_is_refused_like_torch():
    lengths = [4, 2]
    x = np.zeros((2, 4, 1))
    with pytest.raises(ValueError):
        rnn.pad_packed_sequence(rnn.pack_padded_sequence(torch.tensor(x), torch.tensor(lengths), batch_first=True),
                                total_length=3)
    with pytest.raises(ValueError, match=r"total_length=3 is shorter than the longest packed sequence, 4 steps"):
        pad_packed_sequence(pack_padded_sequence(lamina.tensor(x), lengths), total_length=3)


@pytest.mark.parametrize("call, error, message", [
    (lambda x: pack_padded_sequence(x, [5, 3, 2]), ValueError,
     r"pack_padded_sequence: lengths must be at most the padded length T = 4 .* got \[5, 3, 2\]"),
    (lambda x: pack_padded_sequence(x, [4, 3, 2, 1], batch_first=False), ValueError,
     r"lengths must be at most the padded length T = 3 of the input of shape \(3, 4, 2\) \(layout \(T, B, \*\)\)"),
    (lambda x: pack_padded_sequence(x, [4, 3]), ShapeError,
     r"expected one length per sequence, \(B,\) = \(3,\) .* got lengths of shape \(2,\)"),
    (lambda x: pack_padded_sequence(x, np.array([4.0, 3.0, 2.0])), TypeError, r"lengths must be integers"),
    (lambda x: pack_padded_sequence(x[0, 0], [1, 1]), ShapeError, r"input must be a padded batch \(B, T, \*\)"),
    (lambda x: pack_padded_sequence(x[:, :0], [1, 1, 1]), ValueError, r"nothing to pack: .* \(3, 0, 2\)"),
    (lambda x: pad_packed_sequence(x), TypeError, r"pad_packed_sequence: expected a PackedSequence, got Tensor"),
    (lambda x: unpack_sequence(x), TypeError, r"unpack_sequence: expected a PackedSequence"),
    (lambda x: pack_sequence([]), ValueError, r"pack_sequence: expected at least one sequence"),
    (lambda x: pack_sequence([x[0], x[0, :0]]), ValueError, r"pack_sequence: every sequence must have at least"),
    (lambda x: unpad_sequence(x, [1, 5, 2]), ValueError, r"unpad_sequence: lengths must lie in \[0, T\] = \[0, 4\]"),
    (lambda x: unpad_sequence(x, [1, 2]), ShapeError, r"unpad_sequence: lengths must have shape \(B,\) = \(3,\)"),
    (lambda x: unpad_sequence(x[0, 0], [1]), ShapeError, r"unpad_sequence: expected a padded batch"),
])
def test_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call(lamina.tensor(np.zeros((3, 4, 2))))


def test_pad_sequence_then_pack_equals_pack_sequence():
    rng = np.random.default_rng(9)
    seqs = [lamina.tensor(rng.standard_normal((n, 2))) for n in (3, 1, 2)]
    a = pack_sequence(seqs, enforce_sorted=False)
    b = pack_padded_sequence(pad_sequence(seqs), [3, 1, 2], enforce_sorted=False)
    np.testing.assert_array_equal(a.data.numpy(), b.data.numpy())
    assert_close(a.data.numpy(), b.data.numpy(), 0.0)
