"""Indexing and ordering ops: values and gradients against PyTorch, gradient checks, the
indices of sort/topk/argmax/argmin, tie order, and the errors on bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch, op_table_tests, randn
from lamina.functional.indexing import (
    argmax,
    argmin,
    chunk,
    flip,
    gather,
    index_select,
    masked_fill,
    repeat_interleave,
    roll,
    scatter_add,
    sort,
    split,
    tile,
    topk,
)

# Index arrays, each with a repeated entry so gradients must add up.
GATHER_ROWS = np.array([[2, 0, 1, 1], [0, 0, 2, 1]])                  # for (3, 4) along axis 0
GATHER_COLS = np.array([[3, 3, 0], [1, 0, 1], [2, 2, 2]])             # for (3, 4) along axis 1
GATHER_3D = np.random.default_rng(1).integers(0, 3, size=(2, 3, 2))   # for (2, 3, 4) along axis 1
GATHER_SHORT = np.array([[1, 1], [0, 2]])                             # shorter than (3, 4) on axis 1
GATHER_NEGATIVE = np.array([[-1, 0, -3, -1]])                         # counts from the end
SELECT = np.array([2, 0, 2, 2])
SCATTER_ROWS = np.array([[0, 2, 2, 0], [2, 2, 1, 0]])                 # into (3, 4) along axis 0
SCATTER_SHORT = np.array([[1, 1], [0, 1]])                            # covers part of a (3, 4) src
MASK = np.random.default_rng(2).random((3, 4)) > 0.5
ROW_MASK = np.array([True, False, False, True])
COLUMN_MASK = np.array([[False], [True], [False]])


def _t(index):
    return torch.tensor(index)


# name: (lamina function, torch function, inputs); randn inputs hold no ties.
CASES = {
    "gather_axis0": (lambda x: gather(x, 0, GATHER_ROWS), lambda x: torch.gather(x, 0, _t(GATHER_ROWS)),
                     [randn(3, 4)]),
    "gather_axis1": (lambda x: gather(x, 1, GATHER_COLS), lambda x: torch.gather(x, 1, _t(GATHER_COLS)),
                     [randn(3, 4)]),
    "gather_axis_negative_3d": (lambda x: gather(x, -2, GATHER_3D), lambda x: torch.gather(x, -2, _t(GATHER_3D)),
                                [randn(2, 3, 4)]),
    "gather_shorter_index": (lambda x: gather(x, 0, GATHER_SHORT), lambda x: torch.gather(x, 0, _t(GATHER_SHORT)),
                             [randn(3, 4)]),
    "gather_negative_indices": (lambda x: gather(x, 0, GATHER_NEGATIVE),
                                lambda x: torch.gather(x, 0, _t(GATHER_NEGATIVE % 3)), [randn(3, 4)]),
    "index_select_axis0": (lambda x: index_select(x, 0, SELECT), lambda x: torch.index_select(x, 0, _t(SELECT)),
                           [randn(3, 4)]),
    "index_select_axis_negative": (lambda x: index_select(x, -1, SELECT),
                                   lambda x: torch.index_select(x, -1, _t(SELECT)), [randn(2, 3, 4)]),
    "index_select_axis1_3d": (lambda x: index_select(x, 1, SELECT[:3]),
                              lambda x: torch.index_select(x, 1, _t(SELECT[:3])), [randn(2, 3, 2)]),
    "scatter_add_axis0": (lambda x, s: scatter_add(x, 0, SCATTER_ROWS, s),
                          lambda x, s: x.scatter_add(0, _t(SCATTER_ROWS), s), [randn(3, 4), randn(2, 4, seed=1)]),
    "scatter_add_axis_negative": (lambda x, s: scatter_add(x, -1, GATHER_COLS, s),
                                  lambda x, s: x.scatter_add(-1, _t(GATHER_COLS), s),
                                  [randn(3, 4), randn(3, 3, seed=1)]),
    "scatter_add_part_of_src": (lambda x, s: scatter_add(x, 1, SCATTER_SHORT, s),
                                # torch's backward rejects a src larger than index, so it gets the covered part
                                lambda x, s: x.scatter_add(1, _t(SCATTER_SHORT), s[:2, :2]),
                                [randn(3, 4), randn(3, 4, seed=1)]),
    "scatter_add_3d": (lambda x, s: scatter_add(x, 1, GATHER_3D, s), lambda x, s: x.scatter_add(1, _t(GATHER_3D), s),
                       [randn(2, 3, 4), randn(2, 3, 2, seed=1)]),
    "masked_fill": (lambda x: masked_fill(x, MASK, -1.5), lambda x: x.masked_fill(_t(MASK), -1.5), [randn(3, 4)]),
    "masked_fill_row_mask": (lambda x: masked_fill(x, ROW_MASK, 0.0), lambda x: x.masked_fill(_t(ROW_MASK), 0.0),
                             [randn(2, 3, 4)]),
    "masked_fill_column_mask": (lambda x: masked_fill(x, COLUMN_MASK, 7.0),
                                lambda x: x.masked_fill(_t(COLUMN_MASK), 7.0), [randn(3, 4)]),
    "masked_fill_tensor_value": (lambda x, v: masked_fill(x, MASK, v), lambda x, v: x.masked_fill(_t(MASK), v),
                                 [randn(3, 4), np.array(2.5)]),
    "sort_last_axis": (lambda x: sort(x)[0], lambda x: torch.sort(x)[0], [randn(3, 5)]),
    "sort_axis0_descending": (lambda x: sort(x, 0, descending=True)[0],
                              lambda x: torch.sort(x, 0, descending=True)[0], [randn(4, 3)]),
    "sort_axis_negative_3d": (lambda x: sort(x, -2)[0], lambda x: torch.sort(x, -2)[0], [randn(2, 4, 3)]),
    "topk_largest": (lambda x: topk(x, 2)[0], lambda x: torch.topk(x, 2)[0], [randn(3, 5)]),
    "topk_smallest_axis0": (lambda x: topk(x, 3, axis=0, largest=False)[0],
                            lambda x: torch.topk(x, 3, dim=0, largest=False)[0], [randn(4, 3)]),
    "topk_axis_negative_3d": (lambda x: topk(x, 1, axis=-2)[0], lambda x: torch.topk(x, 1, dim=-2)[0],
                              [randn(2, 4, 3)]),
    "flip_axis": (lambda x: flip(x, 1), lambda x: torch.flip(x, (1,)), [randn(3, 4)]),
    "flip_axes": (lambda x: flip(x, (0, -1)), lambda x: torch.flip(x, (0, -1)), [randn(2, 3, 4)]),
    "roll_axis": (lambda x: roll(x, 1, 0), lambda x: torch.roll(x, 1, 0), [randn(3, 4)]),
    "roll_negative": (lambda x: roll(x, -3, axis=-1), lambda x: torch.roll(x, -3, -1), [randn(3, 4)]),
    "roll_flat": (lambda x: roll(x, 5), lambda x: torch.roll(x, 5), [randn(3, 4)]),
    "roll_axes": (lambda x: roll(x, (1, -2), (2, 0)), lambda x: torch.roll(x, (1, -2), (2, 0)), [randn(2, 3, 4)]),
    "tile_same_length": (lambda x: tile(x, (2, 3)), lambda x: torch.tile(x, (2, 3)), [randn(2, 3)]),
    "tile_short_reps": (lambda x: tile(x, 2), lambda x: torch.tile(x, (2,)), [randn(2, 3)]),
    "tile_long_reps": (lambda x: tile(x, (2, 1, 3)), lambda x: torch.tile(x, (2, 1, 3)), [randn(2, 3)]),
    "repeat_interleave_axis0": (lambda x: repeat_interleave(x, 3, 0),
                                lambda x: torch.repeat_interleave(x, 3, dim=0), [randn(2, 3)]),
    "repeat_interleave_axis_negative": (lambda x: repeat_interleave(x, 2, -1),
                                        lambda x: torch.repeat_interleave(x, 2, dim=-1), [randn(2, 3, 2)]),
    "repeat_interleave_flat": (lambda x: repeat_interleave(x, 2), lambda x: torch.repeat_interleave(x, 2),
                               [randn(2, 3)]),
    "repeat_interleave_zero": (lambda x: repeat_interleave(x, 0, 1),
                               lambda x: torch.repeat_interleave(x, 0, dim=1), [randn(2, 3)]),
}

test_matches_torch, test_gradcheck = op_table_tests(CASES)

# Ops that return a list of pieces: name: (lamina function, torch function, input shape).
PIECES = {
    "split_size": (lambda x: split(x, 2), lambda x: torch.split(x, 2), (5, 3)),
    "split_sizes_axis_negative": (lambda x: split(x, [1, 0, 3], axis=-1),
                                  lambda x: torch.split(x, [1, 0, 3], dim=-1), (2, 4)),
    "chunk": (lambda x: chunk(x, 3, axis=1), lambda x: torch.chunk(x, 3, dim=1), (2, 7)),
    "chunk_fewer_pieces": (lambda x: chunk(x, 4), lambda x: torch.chunk(x, 4), (6, 2)),
}


@pytest.mark.parametrize("name", list(PIECES))
def test_pieces_match_torch(name):
    ours, theirs, shape = PIECES[name]
    compare_with_torch(ours, theirs, randn(*shape))


@pytest.mark.parametrize("name", list(PIECES))
def test_pieces_gradcheck(name):
    ours, _, shape = PIECES[name]
    assert check_gradients(lambda x: lamina.concat([piece.reshape(-1) for piece in ours(x)]), randn(*shape))


# -- indices ------------------------------------------------------------------------------
@pytest.mark.parametrize("axis", [0, 1, -1, None])
@pytest.mark.parametrize("keepdims", [False, True])
def test_argmax_argmin_match_torch(axis, keepdims):
    x = randn(3, 4, 5, seed=3).astype(np.float32)
    for ours, theirs in ((argmax, torch.argmax), (argmin, torch.argmin)):
        got = ours(lamina.tensor(x), axis=axis, keepdims=keepdims)
        if axis is None and keepdims:
            expected = np.unravel_index(theirs(torch.tensor(x)).item(), x.shape)
            assert got.shape == (1, 1, 1)
            assert np.unravel_index(int(got.item()), x.shape) == expected
        else:
            np.testing.assert_array_equal(got, theirs(torch.tensor(x), dim=axis, keepdim=keepdims).numpy())


def test_argmax_and_argmin_along_a_full_axis_of_an_empty_input_are_empty_as_torch():
    x = np.zeros((0, 3))
    for ours, theirs in ((argmax, torch.argmax), (argmin, torch.argmin)):
        assert ours(x, axis=1).shape == tuple(theirs(torch.tensor(x), dim=1).shape) == (0,)
        with pytest.raises(lamina.ShapeError, match="no elements along axis 0"):
            ours(x, axis=0)


def test_argmax_takes_the_first_of_equal_values():
    x = np.array([[1.0, 4.0, 4.0, 0.0], [2.0, 2.0, 2.0, 2.0]])
    np.testing.assert_array_equal(argmax(x, axis=1), [1, 0])
    np.testing.assert_array_equal(argmin(x, axis=1), [3, 0])


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("descending", [False, True])
def test_sort_indices_match_torch(axis, descending):
    x = randn(4, 5, 3, seed=4).astype(np.float32)
    values, indices = sort(lamina.tensor(x), axis, descending)
    expected_values, expected_indices = torch.sort(torch.tensor(x), axis, descending=descending)
    np.testing.assert_array_equal(indices, expected_indices.numpy())
    np.testing.assert_array_equal(values.numpy(), expected_values.numpy())


@pytest.mark.parametrize("descending", [False, True])
def test_sort_keeps_equal_values_in_order(descending):
    x = np.array([[3.0, 1.0, 3.0, 2.0, 1.0, 3.0], [0.0, 0.0, 5.0, 5.0, 1.0, 0.0]])
    _, indices = sort(x, 1, descending)
    expected = torch.sort(torch.tensor(x), dim=1, descending=descending, stable=True)[1]
    np.testing.assert_array_equal(indices, expected.numpy())



@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("x", [np.array([2.0, np.nan, -1.0, 0.5]), np.array([3, 0, 255, 7], dtype=np.uint8)],
                         ids=["nan", "uint8"])
def test_sort_orders_nan_and_unsigned_like_torch(x, descending):
    values, indices = sort(x, descending=descending)
    expected_values, expected_indices = torch.sort(torch.tensor(x), descending=descending, stable=True)
    np.testing.assert_array_equal(indices, expected_indices.numpy())
    np.testing.assert_array_equal(values.numpy(), expected_values.numpy())

@pytest.mark.parametrize("axis", [0, -1])
@pytest.mark.parametrize("largest", [True, False])
def test_topk_indices_match_torch(axis, largest):
    x = randn(5, 6, seed=5).astype(np.float32)
    _, indices = topk(lamina.tensor(x), 3, axis=axis, largest=largest)
    np.testing.assert_array_equal(indices, torch.topk(torch.tensor(x), 3, dim=axis, largest=largest)[1].numpy())


def test_topk_ties_go_to_the_earlier_element():
    _, indices = topk(np.array([1.0, 3.0, 3.0, 2.0, 3.0]), 2)
    np.testing.assert_array_equal(indices, [1, 2])
    _, indices = topk(np.array([2.0, 0.0, 5.0, 0.0]), 2, largest=False)
    np.testing.assert_array_equal(indices, [1, 3])


def test_topk_unsorted_keeps_the_order_along_the_axis():
    x = randn(3, 7, seed=6)
    values, indices = topk(x, 4, sorted=False)
    _, sorted_indices = topk(x, 4)
    np.testing.assert_array_equal(indices, np.sort(sorted_indices, axis=1))
    np.testing.assert_array_equal(values.numpy(), np.take_along_axis(x.astype(np.float32), indices, axis=1))


def test_sorted_values_send_gradients_to_their_sources():
    x = lamina.tensor(np.array([[0.3, -1.0, 2.0]]), requires_grad=True)
    values, indices = topk(x, 2)
    values.backward(np.array([[10.0, 1.0]]))
    np.testing.assert_array_equal(indices, [[2, 0]])
    np.testing.assert_array_equal(x.grad, [[1.0, 0.0, 10.0]])


# -- gradients that add up ----------------------------------------------------------------
def test_gather_adds_the_gradients_of_a_repeated_index():
    x = lamina.tensor(np.zeros((2, 3)), requires_grad=True)
    gather(x, 1, np.array([[2, 2, 0, 2], [1, 1, 1, 1]])).backward(np.arange(8.0).reshape(2, 4))
    np.testing.assert_array_equal(x.grad, [[2.0, 0.0, 0.0 + 1.0 + 3.0], [0.0, 4.0 + 5.0 + 6.0 + 7.0, 0.0]])


def test_scatter_add_adds_values_sent_to_one_place():
    out = scatter_add(np.zeros(3), 0, np.array([2, 0, 2, 2]), np.array([1.0, 2.0, 3.0, 4.0]))
    np.testing.assert_array_equal(out.numpy(), [2.0, 0.0, 8.0])


def test_ops_take_plain_arrays():
    x = np.arange(6.0).reshape(2, 3)
    assert isinstance(flip(x, 0), lamina.Tensor)
    np.testing.assert_array_equal(index_select(x, 1, [2, 0]).numpy(), x[:, [2, 0]])
    np.testing.assert_array_equal(tile(x, (1, 2)).numpy(), np.tile(x, (1, 2)))


@pytest.mark.parametrize("chunks", [1, 3])
def test_chunk_of_an_empty_axis_matches_torch(chunks):
    pieces = chunk(np.zeros((0, 2)), chunks)
    assert [p.shape for p in pieces] == [tuple(p.shape) for p in torch.chunk(torch.zeros(0, 2), chunks)]


# -- bad input ----------------------------------------------------------------------------
X = np.zeros((3, 4))


@pytest.mark.parametrize("index, bad", [(np.array([[0, 3, 1, 0]]), "3"), (np.array([[0, -4, 1, 0]]), "-4")])
def test_gather_rejects_out_of_range_indices(index, bad):
    with pytest.raises(ValueError, match=rf"gather: index {bad} is out of range .*\(3, 4\).*\[-3, 3\)"):
        gather(X, 0, index)


def test_gather_rejects_float_index():
    with pytest.raises(ValueError, match="gather: index must hold integers, got dtype float64"):
        gather(X, 0, np.array([[0.0, 1.0, 0.0, 0.0]]))


def test_gather_rejects_index_of_other_rank_or_longer_shape():
    with pytest.raises(lamina.ShapeError, match=r"gather: index of shape \(4,\) .* x of shape \(3, 4\)"):
        gather(X, 0, np.array([0, 1, 0, 0]))
    with pytest.raises(lamina.ShapeError, match=r"gather: index of shape \(1, 5\) is longer .* on axis 1"):
        gather(X, 0, np.zeros((1, 5), dtype=int))


def test_index_select_rejects_bad_index():
    with pytest.raises(lamina.ShapeError, match=r"index_select: index must be 1-D, got shape \(1, 2\)"):
        index_select(X, 0, np.array([[0, 1]]))
    with pytest.raises(ValueError, match=r"index_select: index 4 is out of range for axis 1 .*\[-4, 4\)"):
        index_select(X, 1, np.array([0, 4]))


def test_scatter_add_rejects_bad_index_or_src():
    with pytest.raises(ValueError, match=r"scatter_add: index 5 is out of range"):
        scatter_add(X, 1, np.array([[5]]), np.ones((1, 1)))
    with pytest.raises(lamina.ShapeError, match=r"scatter_add: index of shape \(2, 2\) is longer than src .*\(1, 2\)"):
        scatter_add(X, 1, np.zeros((2, 2), dtype=int), np.ones((1, 2)))
    with pytest.raises(lamina.ShapeError, match=r"scatter_add: src of shape \(2,\)"):
        scatter_add(X, 1, np.zeros((1, 1), dtype=int), np.ones(2))


def test_masked_fill_rejects_bad_mask():
    with pytest.raises(lamina.ShapeError, match=r"masked_fill: mask of shape \(3,\) .* x of shape \(3, 4\)"):
        masked_fill(X, np.array([True, False, True]), 0.0)
    with pytest.raises(lamina.ShapeError, match=r"masked_fill: mask of shape \(2, 3, 4\)"):
        masked_fill(X, np.zeros((2, 3, 4), dtype=bool), 0.0)
    with pytest.raises(ValueError, match="masked_fill: mask must be boolean, got dtype int64"):
        masked_fill(X, np.ones((3, 4), dtype=np.int64), 0.0)


@pytest.mark.parametrize("k", [5, -1, 2.0])
def test_topk_rejects_bad_k(k):
    with pytest.raises(ValueError, match=r"topk: k must be an int in \[0, 4\] .*\(3, 4\)"):
        topk(X, k)


@pytest.mark.parametrize("op", [lambda x: sort(x, 2), lambda x: flip(x, (0, -3)), lambda x: argmax(x, axis=-3),
                                lambda x: roll(x, 1, 2), lambda x: split(x, 1, axis=5)])
def test_axis_out_of_range_raises_shape_error(op):
    with pytest.raises(lamina.ShapeError, match="out of range for an input of 2 dimensions"):
        op(X)


def test_split_rejects_bad_sizes():
    with pytest.raises(ValueError, match=r"split: sizes \[1, 1\] sum to 2, but axis 1 .*\(3, 4\) has length 4"):
        split(X, [1, 1], axis=1)
    with pytest.raises(ValueError, match=r"split: every size in \[5, -1\] must be an int >= 0"):
        split(X, [5, -1], axis=1)
    with pytest.raises(ValueError, match="split: the piece length must be an int >= 1, got 0"):
        split(X, 0)


def test_other_bad_arguments_are_named():
    with pytest.raises(ValueError, match="chunk: chunks must be an int >= 1, got 0"):
        chunk(X, 0)
    with pytest.raises(ValueError, match=r"roll: shift \(1, 2\) and axis 0 must be tuples of the same length"):
        roll(X, (1, 2), 0)
    with pytest.raises(ValueError, match="repeat_interleave: repeats must be an int >= 0, got -1"):
        repeat_interleave(X, -1, 0)
    with pytest.raises(ValueError, match=r"tile: every entry of reps \(2, -1\) must be an int >= 0"):
        tile(X, (2, -1))
    with pytest.raises(lamina.ShapeError, match="argmax: x of shape"):
        argmax(np.zeros((2, 0)), axis=1)


def test_the_ops_are_public_and_tensor_methods():
    x = lamina.tensor(np.arange(12.0).reshape(3, 4))
    index = np.array([[2, 0, 1, 1]])
    np.testing.assert_array_equal(x.gather(0, index).numpy(), lamina.functional.gather(x, 0, index).numpy())
    np.testing.assert_array_equal(x.flip(1).numpy(), x.numpy()[:, ::-1])
    np.testing.assert_array_equal(x.argmax(axis=0), [2, 2, 2, 2])
    values, indices = x.topk(2, axis=1)
    np.testing.assert_array_equal(indices, [[3, 2]] * 3)
    assert [part.shape for part in x.chunk(2, axis=1)] == [(3, 2), (3, 2)]


@pytest.mark.parametrize("seed", range(4))
def test_topk_by_partition_keeps_the_earlier_of_tied_values_as_a_full_stable_sort(seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 4, (5, 7, 9)).astype(np.float32)          # many ties at the k-th value
    for axis in (0, 1, -1):
        n = a.shape[axis]
        for k in (1, n // 2, n - 1):
            for largest in (True, False):
                stable = np.argsort(-a if largest else a, axis=axis, kind="stable")
                expected = np.take(stable, range(k), axis=axis)
                _, indices = topk(a, k, axis=axis, largest=largest)
                np.testing.assert_array_equal(indices, expected)
                _, unsorted = topk(a, k, axis=axis, largest=largest, sorted=False)
                np.testing.assert_array_equal(unsorted, np.sort(expected, axis=axis))


def test_masked_fill_refuses_a_value_tensor_with_axes():
    with pytest.raises(lamina.ShapeError, match=r"masked_fill: value must be a number or a 0-d tensor.*\(2,\)"):
        masked_fill(lamina.tensor(randn(3, 2)), MASK[:, :2], lamina.tensor(randn(2)))
