import numpy as np
import pytest
import torch

import lamina
from helpers import compare_with_torch
from lamina import nn


def test_add_matches_torch_and_gradcheck():
    rng = np.random.default_rng(0)
    a, b, c = (rng.standard_normal((2, 3, 3, 4)) for _ in range(3))
    compare_with_torch(lambda x, y, z: nn.Add()([x, y, z]), lambda x, y, z: x + y + z, a, b, c,
                       dtype=np.float64)
    compare_with_torch(lambda x, y: nn.Add()(x, y), torch.add, a, b, dtype=np.float64)
    ta, tb = (lamina.tensor(v, requires_grad=True, dtype=np.float64) for v in (a, b))
    assert lamina.gradcheck(lambda x, y: nn.Add()([x, y]), ta, tb)


@pytest.mark.parametrize("axis", [-1, 1])
def test_concatenate_matches_torch(axis):
    rng = np.random.default_rng(1)
    if axis == -1:
        arrays = [rng.standard_normal((2, 3, 3, c)) for c in (2, 4, 1)]
    else:
        arrays = [rng.standard_normal((2, h, 3, 2)) for h in (1, 3)]
    compare_with_torch(lambda *xs: nn.Concatenate(axis)(list(xs)), lambda *xs: torch.cat(xs, dim=axis),
                       *arrays, dtype=np.float64)
    ts = [lamina.tensor(v, requires_grad=True, dtype=np.float64) for v in arrays]
    assert lamina.gradcheck(lambda *xs: nn.Concatenate(axis)(list(xs)), *ts)


def test_merge_shapes_and_errors():
    add = nn.Add(name="res")
    assert add.compute_output_shape([(None, 4, 4, 8), (None, 4, 4, 8)]) == (None, 4, 4, 8)
    with pytest.raises(lamina.ShapeError, match=r"Add 'res'.*\(2, 4, 4, 8\).*\(2, 4, 4, 16\).*equal shapes"):
        add([np.zeros((2, 4, 4, 8)), np.zeros((2, 4, 4, 16))])
    cat = nn.Concatenate()
    assert cat.compute_output_shape([(None, 4, 4, 8), (None, 4, 4, 16)]) == (None, 4, 4, 24)
    with pytest.raises(lamina.ShapeError, match="every axis but the concatenation axis"):
        cat([np.zeros((2, 4, 4, 8)), np.zeros((2, 3, 4, 8))])
    with pytest.raises(lamina.ShapeError, match="list of input shapes"):
        cat.compute_output_shape((None, 3))
    y = cat([np.zeros((2, 4, 4, 8), np.float32), np.ones((2, 4, 4, 2), np.float32)])
    assert y.shape == (2, 4, 4, 10)


def test_flatten_reshape_identity():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    f = nn.Flatten()
    y = f(x)
    assert y.shape == (2, 60) and f.compute_output_shape((None, 3, 4, 5)) == (None, 60)
    np.testing.assert_array_equal(y.numpy(), x.reshape(2, -1))  # (h, w, c) order, channel fastest
    r = nn.Reshape((4, -1))
    assert r(x).shape == (2, 4, 15) and r.compute_output_shape((None, 3, 4, 5)) == (None, 4, 15)
    with pytest.raises(lamina.ShapeError, match=r"Reshape.*\(2, 3, 4, 5\)"):
        nn.Reshape((7, -1))(x)
    t = lamina.tensor(x)
    assert nn.Identity()(t) is t
    xt = lamina.tensor(x.astype(np.float64), requires_grad=True, dtype=np.float64)
    assert lamina.gradcheck(lambda v: nn.Flatten()(v), xt)
