"""Indexing, reshape, transpose, broadcast, concat, stack and pad: gradients that move values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
import lamina.functional as F
from helpers import op_table_tests, randn

MASK = np.random.default_rng(5).random((3, 4)) > 0.5
ROWS = np.array([True, False, True])
REPEATED = np.array([0, 2, 0, 0, 1])

# name: (lamina function, torch function, inputs)
CASES = {
    "int_index": (lambda x: x[1], lambda x: x[1], [randn(3, 4)]),
    "negative_int_index": (lambda x: x[-1, 2], lambda x: x[-1, 2], [randn(3, 4)]),
    "slice": (lambda x: x[1:3], lambda x: x[1:3], [randn(4, 3)]),
    "step_slice": (lambda x: x[:, ::2], lambda x: x[:, ::2], [randn(3, 5)]),
    "ellipsis": (lambda x: x[..., 1:], lambda x: x[..., 1:], [randn(2, 3, 4)]),
    "newaxis_and_slices": (lambda x: x[None, 1:, -1], lambda x: x[None, 1:, -1], [randn(3, 4)]),
    "repeated_int_array": (lambda x: x[REPEATED], lambda x: x[torch.tensor(REPEATED)], [randn(3, 4)]),
    "repeated_int_list": (lambda x: x[[0, 0, 1, 0]], lambda x: x[[0, 0, 1, 0]], [randn(3, 2)]),
    "repeated_int_array_axis1": (lambda x: x[:, [1, 1, 3, 1]], lambda x: x[:, [1, 1, 3, 1]], [randn(3, 4)]),
    "repeated_index_pairs": (lambda x: x[np.array([0, 1, 1, 1]), np.array([2, 3, 3, 3])],
                             lambda x: x[torch.tensor([0, 1, 1, 1]), torch.tensor([2, 3, 3, 3])], [randn(3, 4)]),
    "index_tensor": (lambda x: x[lamina.tensor(np.array([2, 2, 0]))],
                     lambda x: x[torch.tensor([2, 2, 0])], [randn(4)]),
    "boolean_mask": (lambda x: x[MASK], lambda x: x[torch.tensor(MASK)], [randn(3, 4)]),
    "boolean_mask_tensor": (lambda x: x[lamina.tensor(MASK)], lambda x: x[torch.tensor(MASK)], [randn(3, 4)]),
    "boolean_row_mask": (lambda x: x[ROWS], lambda x: x[torch.tensor(ROWS)], [randn(3, 4)]),
    "boolean_from_comparison": (lambda x: x[x > 0.1], lambda x: x[x > 0.1], [randn(3, 4)]),
    "reshape": (lambda x: x.reshape(4, 3), lambda x: x.reshape(4, 3), [randn(3, 4)]),
    "reshape_tuple_infer": (lambda x: x.reshape((2, -1)), lambda x: x.reshape((2, -1)), [randn(3, 4)]),
    "reshape_functional": (lambda x: F.reshape(x, 6, 2), lambda x: x.reshape(6, 2), [randn(3, 4)]),
    "T_2d": (lambda x: x.T, lambda x: x.T, [randn(3, 4)]),
    "T_3d": (lambda x: x.T, lambda x: x.permute(2, 1, 0), [randn(2, 3, 4)]),
    "transpose_axes": (lambda x: x.transpose(1, 0, 2), lambda x: x.permute(1, 0, 2), [randn(2, 3, 4)]),
    "transpose_functional": (lambda x: F.transpose(x, (2, 0, 1)), lambda x: x.permute(2, 0, 1), [randn(2, 3, 4)]),
    "swapaxes": (lambda x: x.swapaxes(0, 2), lambda x: x.swapaxes(0, 2), [randn(2, 3, 4)]),
    "swapaxes_negative": (lambda x: F.swapaxes(x, -1, 0), lambda x: x.swapaxes(-1, 0), [randn(2, 3, 4)]),
    "flatten": (lambda x: x.flatten(), lambda x: x.flatten(), [randn(2, 3, 4)]),
    "flatten_start_dim": (lambda x: F.flatten(x, 1), lambda x: x.flatten(1), [randn(2, 3, 4)]),
    "expand_dims_0": (lambda x: x.expand_dims(0), lambda x: x.unsqueeze(0), [randn(3, 4)]),
    "expand_dims_1": (lambda x: F.expand_dims(x, 1), lambda x: x.unsqueeze(1), [randn(3, 4)]),
    "expand_dims_negative": (lambda x: x.expand_dims(-1), lambda x: x.unsqueeze(-1), [randn(3, 4)]),
    "squeeze_all": (lambda x: x.squeeze(), lambda x: x.squeeze(), [randn(1, 3, 1, 4)]),
    "squeeze_axis": (lambda x: F.squeeze(x, 2), lambda x: x.squeeze(2), [randn(1, 3, 1, 4)]),
    "squeeze_axes": (lambda x: x.squeeze((0, -2)), lambda x: x.squeeze((0, 2)), [randn(1, 3, 1, 4)]),
    "broadcast_to": (lambda x: x.broadcast_to((2, 3, 4)), lambda x: x.broadcast_to((2, 3, 4)), [randn(3, 1)]),
    "broadcast_to_functional": (lambda x: F.broadcast_to(x, (3, 2, 4)), lambda x: x.broadcast_to((3, 2, 4)),
                                [randn(4)]),
    "concat_axis0": (lambda a, b, c: lamina.concat([a, b, c]), lambda a, b, c: torch.cat([a, b, c]),
                     [randn(2, 3), randn(1, 3, seed=1), randn(4, 3, seed=2)]),
    "concat_axis1": (lambda a, b: lamina.concat([a, b], axis=1), lambda a, b: torch.cat([a, b], 1),
                     [randn(2, 3), randn(2, 2, seed=1)]),
    "concat_axis_negative": (lambda a, b: F.concat((a, b), axis=-1), lambda a, b: torch.cat([a, b], -1),
                             [randn(2, 2, 3), randn(2, 2, 1, seed=1)]),
    "stack_axis0": (lambda a, b, c: lamina.stack([a, b, c]), lambda a, b, c: torch.stack([a, b, c]),
                    [randn(2, 3), randn(2, 3, seed=1), randn(2, 3, seed=2)]),
    "stack_axis1": (lambda a, b: lamina.stack([a, b], axis=1), lambda a, b: torch.stack([a, b], 1),
                    [randn(2, 3), randn(2, 3, seed=1)]),
    "stack_axis_negative": (lambda a, b: F.stack([a, b], axis=-1), lambda a, b: torch.stack([a, b], -1),
                            [randn(4), randn(4, seed=1)]),
    "pad_int": (lambda x: lamina.pad(x, 1), lambda x: TF.pad(x, (1, 1, 1, 1)), [randn(2, 3)]),
    "pad_pairs": (lambda x: lamina.pad(x, ((1, 2), (0, 1))), lambda x: TF.pad(x, (0, 1, 1, 2)), [randn(2, 3)]),
    "pad_value": (lambda x: F.pad(x, ((0, 0), (2, 1), (1, 0)), value=2.5),
                  lambda x: TF.pad(x, (1, 0, 2, 1, 0, 0), value=2.5), [randn(2, 2, 3)]),
    "chained": (lambda x: x.T.reshape(6, 2)[::2].flatten().expand_dims(0),
                lambda x: x.T.reshape(6, 2)[::2].flatten().unsqueeze(0), [randn(3, 4)]),
}


test_matches_torch, test_gradcheck = op_table_tests(CASES)


def test_repeated_indices_accumulate():
    x = lamina.tensor(np.arange(4.0), requires_grad=True)
    x[np.array([1, 1, 1, 3, 1])].sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 4.0, 0.0, 1.0])


def test_repeated_index_pairs_accumulate():
    x = lamina.tensor(np.zeros((2, 3)), requires_grad=True)
    y = x[[0, 1, 0, 0], [2, 0, 2, 2]]
    y.backward(np.array([1.0, 2.0, 3.0, 4.0]))
    np.testing.assert_array_equal(x.grad, [[0.0, 0.0, 8.0], [2.0, 0.0, 0.0]])


def test_boolean_mask_gradient_is_the_mask():
    x = lamina.tensor(randn(3, 4), requires_grad=True)
    x[MASK].sum().backward()
    np.testing.assert_array_equal(x.grad, MASK.astype(np.float32))


def test_getitem_out_of_range_raises_index_error():
    x = lamina.tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(IndexError, match="getitem"):
        x[5]


def test_reshape_mismatch_raises_shape_error():
    x = lamina.tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(lamina.ShapeError) as info:
        x.reshape(4, 2)
    message = str(info.value)
    assert message.startswith("reshape:")
    assert "(2, 3)" in message and "(4, 2)" in message


@pytest.mark.parametrize("axis", [0, 1])
def test_concat_mismatch_raises_shape_error(axis):
    a, b = lamina.tensor(np.ones((2, 3))), lamina.tensor(np.ones((3, 4)))
    with pytest.raises(lamina.ShapeError) as info:
        lamina.concat([a, b], axis=axis)
    message = str(info.value)
    assert message.startswith("concat:")
    assert "(2, 3)" in message and "(3, 4)" in message


def test_concat_bad_axis_raises_shape_error():
    with pytest.raises(lamina.ShapeError, match="concat"):
        lamina.concat([lamina.tensor(np.ones(2)), lamina.tensor(np.ones(2))], axis=3)


def test_stack_mismatch_raises_shape_error():
    with pytest.raises(lamina.ShapeError, match=r"stack: .*\(2,\).*\(3,\)"):
        lamina.stack([lamina.tensor(np.ones(2)), lamina.tensor(np.ones(3))])


def test_broadcast_to_incompatible_raises_shape_error():
    with pytest.raises(lamina.ShapeError, match=r"broadcast_to: .*\(3,\).*\(2, 4\)"):
        lamina.tensor(np.ones(3)).broadcast_to((2, 4))


def test_squeeze_non_unit_axis_raises_shape_error():
    with pytest.raises(lamina.ShapeError, match="squeeze"):
        lamina.tensor(np.ones((1, 3))).squeeze(1)


def test_transpose_bad_axes_raises_shape_error():
    with pytest.raises(lamina.ShapeError, match="transpose"):
        lamina.tensor(np.ones((2, 3))).transpose(0, 0)


def test_pad_wrong_number_of_pairs_raises_shape_error():
    with pytest.raises(lamina.ShapeError, match="pad"):
        lamina.pad(lamina.tensor(np.ones((2, 3))), ((1, 1), (1, 1), (1, 1)))


@pytest.mark.parametrize("width, shape", [(1, (4, 5, 6)), ((1, 2), (5, 6, 7)), (np.int64(2), (6, 7, 8)),
                                          (((0, 0), (1, 1), (2, 0)), (2, 5, 6)), ((2,), (6, 7, 8)),
                                          (((1, 2),), (5, 6, 7)), (np.array([[1, 0], [0, 2], [1, 1]]), (3, 5, 6))])
def test_pad_takes_numpys_three_forms_of_pad_width(width, shape):
    x = randn(2, 3, 4, seed=3).astype(np.float32)
    out = lamina.pad(lamina.tensor(x), width, value=0.5)
    assert out.shape == shape
    np.testing.assert_array_equal(out.numpy(), np.pad(x, width, constant_values=0.5))


@pytest.mark.parametrize("width", [(1, 2, 3, 4), ((1, 2), (3, 4)), -1, (1.5, 2), ((1, 2), (1, 2), (1, -1)),
                                   ((1, 2), (3,))])
def test_pad_refuses_other_widths_naming_torchs_flat_form(width):
    message = r"pad: pad_width must be .* for the input of shape \(2, 3, 4\) .* use pad1d, pad2d or pad3d"
    with pytest.raises(lamina.ShapeError, match=message):
        lamina.pad(lamina.tensor(np.ones((2, 3, 4))), width)


def test_pad_of_a_0d_input_is_the_input():
    np.testing.assert_array_equal(lamina.pad(lamina.tensor(np.float32(3)), 2).numpy(), np.pad(np.float32(3), 2))
