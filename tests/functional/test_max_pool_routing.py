"""Max pooling's backward in blocks of images: the windows' own offsets set their part of
dJ/dx, the offsets of overlapping windows add to it, and what no window reaches is zeroed.
Checked against PyTorch with many blocks, ties (constant and 0/1 inputs), padding,
ceil mode and strides larger than the pool, on memory that starts out as garbage."""

from __future__ import annotations

import numpy as np
import pytest
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
