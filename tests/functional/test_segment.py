import numpy as np
import pytest
import torch

import lamina
from helpers import (
    check_gradients,
    check_second_derivatives,
    compare_double_backward_with_torch,
    compare_with_torch,
    randn,
)
from lamina import functional as F

# 9 rows into 5 segments: segment 3 gets nothing, segment 0 gets one row
INDEX = np.array([1, 0, 4, 1, 2, 4, 4, 2, 1])
N = 5


def _torch_sum(src):
    return torch.zeros((N,) + src.shape[1:], dtype=src.dtype).index_add_(0, torch.from_numpy(INDEX), src)


def _torch_mean(src):
    counts = torch.bincount(torch.from_numpy(INDEX), minlength=N).clamp(min=1).to(src.dtype)
    return _torch_sum(src) / counts.reshape((N,) + (1,) * (src.ndim - 1))


def _expanded_index(src):
    return torch.from_numpy(INDEX).reshape((-1,) + (1,) * (src.ndim - 1)).expand(src.shape)


def _torch_max(src):
    empty = torch.zeros((N,) + src.shape[1:], dtype=src.dtype)
    return empty.scatter_reduce(0, _expanded_index(src), src, "amax", include_self=False)


def _torch_softmax(src):
    peak = _torch_max(src).detach()[torch.from_numpy(INDEX)]
    e = torch.exp(src - peak)
    return e / _torch_sum(e)[torch.from_numpy(INDEX)]


CASES = {
    "sum": (F.segment_sum, _torch_sum),
    "mean": (F.segment_mean, _torch_mean),
    "max": (F.segment_max, _torch_max),
    "softmax": (F.segment_softmax, _torch_softmax),
}


@pytest.mark.parametrize("shape", [(9,), (9, 3), (9, 2, 3)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(CASES))
def test_segment_ops_match_torch(name, dtype, shape):
    ours, theirs = CASES[name]
    compare_with_torch(lambda s: ours(s, INDEX, N), theirs, randn(*shape), dtype=dtype)


@pytest.mark.parametrize("name", list(CASES))
def test_segment_ops_gradcheck(name):
    ours, _ = CASES[name]
    assert check_gradients(lambda s: ours(s, INDEX, N), randn(9, 3, seed=1))


@pytest.mark.parametrize("name", list(CASES))
def test_segment_ops_second_derivatives_match_torch(name):
    ours, theirs = CASES[name]
    compare_double_backward_with_torch(lambda s: ours(s, INDEX, N) ** 2, lambda s: theirs(s) ** 2,
                                       randn(9, 3, seed=2))
    assert check_second_derivatives(lambda s: ours(s, INDEX, N) ** 2, randn(9, 3, seed=2))


def test_take_rows_matches_index_select_with_double_backward():
    index = np.array([3, 0, 0, 2, 3, 3, 1])
    compare_with_torch(lambda x: F.take_rows(x, index), lambda x: x[torch.from_numpy(index)], randn(4, 3))
    compare_double_backward_with_torch(lambda x: F.take_rows(x, index) ** 3,
                                       lambda x: x[torch.from_numpy(index)] ** 3, randn(4, 3))


def test_empty_segments_are_zero_and_softmax_sums_to_one():
    src = lamina.tensor(randn(9, 2) * 50, dtype=np.float64)    # large: exp is kept finite by the shift
    for op in (F.segment_sum, F.segment_mean, F.segment_max):
        assert np.all(op(src, INDEX, N).numpy()[3] == 0)
    soft = F.segment_softmax(src, INDEX, N).numpy()
    assert np.all(np.isfinite(soft))
    np.testing.assert_allclose(F.segment_sum(soft, INDEX, N).numpy()[[0, 1, 2, 4]], 1.0, rtol=1e-12)


def test_segment_max_shares_the_gradient_of_ties():
    x = lamina.tensor(np.array([[2.0], [2.0], [1.0]]), requires_grad=True, dtype=np.float64)
    F.segment_max(x, np.array([0, 0, 0]), 1).sum().backward()
    np.testing.assert_allclose(x.grad, [[0.5], [0.5], [0.0]])


def test_segment_errors_name_the_op_and_shapes():
    with pytest.raises(ValueError, match=r"segment_sum: index of shape \(3,\).*src of shape \(9, 2\)"):
        F.segment_sum(randn(9, 2), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="segment_max: index value 5 is out of range for 5 segments"):
        F.segment_max(randn(9), INDEX + 1, N)
    with pytest.raises(ValueError, match="segment_softmax: index must hold integers"):
        F.segment_softmax(randn(9), INDEX.astype(float), N)


def test_take_rows_of_no_rows_gives_a_zero_gradient():
    """An empty index (no anchor matched, no edge) selects nothing; its backward adds nothing."""
    x = lamina.tensor(np.ones((5, 3)), requires_grad=True)
    picked = F.take_rows(x, np.zeros(0, dtype=np.int64))
    assert picked.shape == (0, 3)
    (picked.sum() + x.sum()).backward()
    np.testing.assert_array_equal(x.grad, np.ones((5, 3)))
