"""Max pooling's backward in blocks of images: the windows' own offsets set their part of
dJ/dx, the offsets of overlapping windows add to it, and what no window reaches is zeroed.
Checked against PyTorch with many blocks, ties (constant and 0/1 inputs), padding,
ceil mode and strides larger than the pool, on memory that starts out as garbage."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
import lamina.functional as F
import lamina.functional.pooling as pooling
from helpers import check_gradients, compare_double_backward_with_torch, compare_with_torch, nonzero


def torch_max_pool(f, s, p, ceil_mode):
    def fn(x):
        return TF.max_pool2d(x.permute(0, 3, 1, 2), f, s, p, ceil_mode=ceil_mode).permute(0, 2, 3, 1)

    return fn


# (shape, pool, stride, padding, ceil_mode)
CASES = [
    ((5, 8, 8, 3), 2, None, 0, False),             # disjoint windows tiling the input
    ((5, 9, 7, 3), 2, None, 0, False),             # the last row and column belong to no window
    ((5, 9, 9, 3), 3, 2, 0, False),                # overlapping (AlexNet's 3, stride 2)
    ((5, 10, 10, 2), 3, 2, 1, True),               # overlapping, padding, ceil mode
    ((5, 10, 11, 2), 2, 3, 1, True),               # stride past the pool: gaps no window covers
    ((5, 9, 10, 2), (3, 2), (2, 3), (1, 0), False),  # overlapping rows, gaps between columns
    ((5, 7, 7, 2), 3, 1, 1, False),                # stride 1: nine windows share each input
]


def _id(case):
    shape, f, s, p, ceil = case
    return f"{shape[1]}x{shape[2]}-f{f}-s{s}-p{p}{'-ceil' if ceil else ''}"


@pytest.fixture
def one_image_blocks(monkeypatch):
    """Blocks of one image each, so that every thread's share runs in several blocks."""
    monkeypatch.setattr(pooling, "_BLOCK_BYTES", 1)


@pytest.fixture
def garbage_empty(monkeypatch):
    """``empty`` arrays start out as NaN (True for booleans, 255 for bytes), so that a part of
    dJ/dx left unwritten shows up."""
    empty = np.empty

    def poisoned(shape, dtype=float, *args, **kwargs):
        a = empty(shape, dtype, *args, **kwargs)
        kind = a.dtype.kind
        if kind in "fc":
            a.fill(np.nan)
        elif kind in "biu":
            a.fill(True if kind == "b" else np.iinfo(a.dtype).max)
        return a

    monkeypatch.setattr(pooling.backend.xp, "empty", poisoned)


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_blocked_backward_matches_torch(case, one_image_blocks, garbage_empty):
    shape, f, s, p, ceil = case
    x = np.random.default_rng(0).standard_normal(shape)
    compare_with_torch(lambda x: F.max_pool2d(x, f, s, p, ceil_mode=ceil), torch_max_pool(f, s, p, ceil), x)


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_ties_go_to_each_windows_first_maximum(case, one_image_blocks):
    """0/1 inputs (as after a ReLU): PyTorch also routes each window's gradient to its
    first maximum in row-major order; overlapping windows add up at shared inputs."""
    shape, f, s, p, ceil = case
    x = np.random.default_rng(1).integers(0, 2, shape).astype(np.float32)
    compare_with_torch(lambda x: F.max_pool2d(x, f, s, p, ceil_mode=ceil), torch_max_pool(f, s, p, ceil), x)


@pytest.mark.parametrize("case", [CASES[0], CASES[2], CASES[3], CASES[6]], ids=_id)
def test_constant_input_routes_to_the_window_starts(case):
    """Every value ties: each window's gradient goes to its top-left input (its first one
    inside the image, where padding covers the corner), as in PyTorch."""
    shape, f, s, p, ceil = case
    x = np.full(shape, 0.5, np.float32)
    compare_with_torch(lambda x: F.max_pool2d(x, f, s, p, ceil_mode=ceil), torch_max_pool(f, s, p, ceil), x)
    tensor = lamina.tensor(x, requires_grad=True)
    y = F.max_pool2d(tensor, f, s, p, ceil_mode=ceil)
    y.backward(np.ones(y.shape, np.float32))
    assert tensor.grad.sum() == y.size                      # one input per window, nothing lost
    if p == 0:
        stride = f if s is None else s
        assert np.all(tensor.grad[:, ::stride, ::stride][:, :y.shape[1], :y.shape[2]] >= 1)


@pytest.mark.parametrize("case", [CASES[1], CASES[4], CASES[5]], ids=_id)
def test_gradcheck_float64(case, one_image_blocks):
    shape, f, s, p, ceil = case
    x = np.random.default_rng(2).standard_normal((2,) + shape[1:])
    assert check_gradients(lambda x: F.max_pool2d(x, f, s, p, ceil_mode=ceil), x)


@pytest.mark.parametrize("case", [CASES[3], CASES[5]], ids=_id)
def test_double_backward_matches_torch(case, one_image_blocks):
    shape, f, s, p, ceil = case
    theirs = torch_max_pool(f, s, p, ceil)
    compare_double_backward_with_torch(lambda x: F.max_pool2d(x, f, s, p, ceil_mode=ceil) ** 2,
                                       lambda x: theirs(x) ** 2, nonzero(2, *shape[1:], seed=3))


def _grads_where_every_value_is_neg_inf(ours, theirs, x):
    """dJ/dx of lamina's and torch's pooling for one upstream gradient, in float64."""
    tensor, reference = lamina.tensor(x, requires_grad=True, dtype=np.float64), torch.tensor(x, requires_grad=True)
    y, expected = ours(tensor), theirs(reference)
    np.testing.assert_array_equal(y.numpy(), expected.detach().numpy())
    up = np.random.default_rng(5).standard_normal(y.shape)
    y.backward(up)
    expected.backward(torch.tensor(up))
    return tensor.grad, reference.grad.numpy()


@pytest.mark.parametrize("case", [case for case in CASES if case[3]], ids=_id)
def test_windows_of_only_neg_inf_route_to_their_first_input_not_the_padding(case, one_image_blocks, garbage_empty):
    """-inf inputs tie with the -inf padding: PyTorch routes such a window's gradient to its
    first value inside the input."""
    shape, f, s, p, ceil = case
    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape)
    x[rng.random(shape) < 0.8] = -np.inf
    ours, theirs = _grads_where_every_value_is_neg_inf(lambda x: F.max_pool2d(x, f, s, p, ceil_mode=ceil),
                                                       torch_max_pool(f, s, p, ceil), x)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)


def test_an_all_neg_inf_input_gives_each_window_its_first_input_in_1d_and_2d():
    x = np.full((1, 4, 4, 1), -np.inf)
    x[0, 0, 0, 0] = 1.0
    ours, theirs = _grads_where_every_value_is_neg_inf(lambda x: F.max_pool2d(x, 3, 2, 1),
                                                       torch_max_pool(3, 2, 1, False), x)
    np.testing.assert_array_equal(ours, theirs)
    line = np.full((2, 7, 3), -np.inf)
    ours, theirs = _grads_where_every_value_is_neg_inf(
        lambda x: F.max_pool1d(x, 3, 2, 1), lambda x: TF.max_pool1d(x.permute(0, 2, 1), 3, 2, 1).permute(0, 2, 1), line)
    np.testing.assert_array_equal(ours, theirs)
