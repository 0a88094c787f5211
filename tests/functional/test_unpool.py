"""max_pool2d_with_indices and max_unpool2d against torch (NCHW at the boundary), and the layers."""

import numpy as np
import pytest
import torch
from tests.helpers import assert_close, check_gradients, randn

import lamina
from lamina import functional as F
from lamina import nn
from lamina.errors import ShapeError

CASES = [
    dict(pool_size=2),
    dict(pool_size=3, stride=2),
    dict(pool_size=3, stride=2, padding=1),
    dict(pool_size=(2, 3), stride=(1, 2)),
]


def _torch_pool(case):
    return dict(kernel_size=case["pool_size"], stride=case.get("stride"), padding=case.get("padding", 0))


def _nchw(a):
    return torch.tensor(np.ascontiguousarray(np.asarray(a).transpose(0, 3, 1, 2)))


def _nhwc(t):
    return t.detach().permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("case", CASES)
def test_indices_and_unpooling_match_torch(case):
    x = randn(2, 7, 8, 3, seed=1)
    values, indices = F.max_pool2d_with_indices(lamina.tensor(x, dtype=np.float64), **case)
    t_values, t_indices = torch.nn.functional.max_pool2d(_nchw(x), return_indices=True, **_torch_pool(case))
    assert_close(values.numpy(), _nhwc(t_values), 1e-12)
    np.testing.assert_array_equal(indices, _nhwc(t_indices))
    v = lamina.tensor(values.numpy(), requires_grad=True, dtype=np.float64)
    tv = _nchw(values.numpy()).requires_grad_()
    out = F.max_unpool2d(v, indices, output_size=(7, 8), **case)
    t_out = torch.nn.functional.max_unpool2d(tv, t_indices, output_size=(7, 8), **_torch_pool(case))
    assert_close(out.numpy(), _nhwc(t_out), 1e-12)
    upstream = randn(2, 7, 8, 3, seed=2)
    out.backward(upstream)
    t_out.backward(_nchw(upstream))
    assert_close(v.grad, _nhwc(tv.grad), 1e-12, "gradient")


def test_indices_point_at_the_first_maximum_of_a_tied_window():
    x = np.ones((1, 2, 2, 1))
    _, indices = F.max_pool2d_with_indices(x, 2)
    assert indices.item() == 0


def test_a_window_of_only_neg_inf_points_inside_the_input_as_torch():
    # the -inf padding ties with such a window's values: the index must still name an input position
    x = np.full((1, 4, 4, 1), -np.inf)
    x[0, 0, 0, 0] = 1.0
    _, indices = nn.MaxPool2D(3, 2, 1, return_indices=True)(lamina.tensor(x))
    _, expected = torch.nn.functional.max_pool2d(torch.tensor(x.transpose(0, 3, 1, 2)), 3, 2, 1, return_indices=True)
    np.testing.assert_array_equal(np.asarray(indices).ravel(), expected.numpy().ravel())
    x1 = np.full((1, 5, 1), -np.inf)
    x1[0, 0, 0] = 2.0
    _, indices = nn.MaxPool1D(3, 2, 1, return_indices=True)(lamina.tensor(x1))
    _, expected = torch.nn.functional.max_pool1d(torch.tensor(x1.transpose(0, 2, 1)), 3, 2, 1, return_indices=True)
    np.testing.assert_array_equal(np.asarray(indices).ravel(), expected.numpy().ravel())
    x3 = np.full((1, 3, 3, 3, 1), -np.inf)
    _, indices = F.max_pool3d_with_indices(lamina.tensor(x3), 2, 2, 1)
    assert np.asarray(indices).min() >= 0       # every window's first position inside the input
    assert np.asarray(indices).ravel()[[0, -1]].tolist() == [0, 13]  # window (1, 1, 1) starts at 1, 1, 1


def test_unpooling_gradient_and_default_size():
    x = randn(1, 6, 6, 2, seed=3)
    _, indices = F.max_pool2d_with_indices(x, 2)
    assert F.max_unpool2d(np.ones((1, 3, 3, 2)), indices, 2).shape == (1, 6, 6, 2)
    assert check_gradients(lambda v: F.max_unpool2d(v, indices, 2), randn(1, 3, 3, 2, seed=4))


def test_layers_pool_and_unpool_back_to_the_maxima():
    x = randn(2, 6, 6, 4, seed=5).astype(np.float32)
    pool, unpool = nn.MaxPool2D(2, return_indices=True), nn.MaxUnpool2D(2)
    values, indices = pool(x)
    restored = unpool(values, indices).numpy()
    block_max = x.reshape(2, 3, 2, 3, 2, 4).max(axis=(2, 4))
    at_maximum = x == block_max.repeat(2, axis=1).repeat(2, axis=2)
    assert_close(restored, np.where(at_maximum, x, 0), 0)
    assert np.count_nonzero(restored) == values.numpy().size
    for layer in (pool, unpool):
        copy = nn.layer_from_config(nn.layer_to_config(layer))
        assert repr(copy) == repr(layer)
    assert "return_indices=True" in repr(pool)
    assert nn.MaxPool2D(2).get_config().get("return_indices") is None


def test_bad_input_names_the_op_and_shapes():
    _, indices = F.max_pool2d_with_indices(np.zeros((1, 4, 4, 1)), 2)
    with pytest.raises(ShapeError, match=r"max_unpool2d: .*x \(1, 3, 3, 1\) and indices \(1, 2, 2, 1\)"):
        F.max_unpool2d(np.zeros((1, 3, 3, 1)), indices, 2)
    with pytest.raises(ValueError, match=r"max_unpool2d: indices must lie in \[0, 4\)"):
        F.max_unpool2d(np.zeros((1, 2, 2, 1)), indices + 10, 2, output_size=(2, 2))
    with pytest.raises(ShapeError, match="MaxUnpool2D"):
        nn.MaxUnpool2D(2)(np.zeros((2, 2, 1)), indices)
