"""Adaptive max pooling's indices (``return_indices`` and the ``*_with_indices`` names):
PyTorch's positions, ties and NaNs included, in 1, 2 and 3 dimensions."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
import lamina.nn.functional as F


def _values(shape, seed):
    """Small integers (many ties) with a few NaNs."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 4, shape).astype(np.float64)
    x.flat[rng.choice(x.size, 3, replace=False)] = np.nan
    return x


def _assert_same(ours, theirs):
    (out, idx), (t_out, t_idx) = ours, theirs
    channels_last = t_idx.movedim(1, -1).numpy()
    assert idx.dtype == np.int64 and not idx.requires_grad
    np.testing.assert_array_equal(idx.numpy(), channels_last)
    np.testing.assert_array_equal(out.numpy(), t_out.movedim(1, -1).numpy())


@pytest.mark.parametrize("outs", [(3, 2), (7, 5), (1, 1), (4, 4), (2, 5)])
def test_2d_positions_equal_torchs(outs):
    x = _values((2, 7, 5, 3), seed=sum(outs))
    ours = F.adaptive_max_pool2d(lamina.tensor(x, dtype=np.float64), outs, return_indices=True)
    _assert_same(ours, TF.adaptive_max_pool2d(torch.tensor(x).movedim(-1, 1), outs, return_indices=True))
    named = F.adaptive_max_pool2d_with_indices(lamina.tensor(x, dtype=np.float64), outs)
    np.testing.assert_array_equal(named[1].numpy(), ours[1].numpy())


@pytest.mark.parametrize("steps", [1, 3, 4, 9])
def test_1d_steps_equal_torchs(steps):
    x = _values((2, 9, 3), seed=steps)
    ours = F.adaptive_max_pool1d_with_indices(lamina.tensor(x, dtype=np.float64), steps)
    _assert_same(ours, TF.adaptive_max_pool1d(torch.tensor(x).movedim(-1, 1), steps, return_indices=True))


@pytest.mark.parametrize("outs", [(2, 3, 2), (5, 4, 3), (1, 1, 1), (3, 2, 3)])
def test_3d_positions_equal_torchs(outs):
    x = _values((2, 5, 4, 3, 2), seed=sum(outs))
    ours = F.adaptive_max_pool3d(lamina.tensor(x, dtype=np.float64), outs, return_indices=True)
    _assert_same(ours, TF.adaptive_max_pool3d(torch.tensor(x).movedim(-1, 1), outs, return_indices=True))
    assert F.adaptive_max_pool3d_with_indices(lamina.tensor(x, dtype=np.float64), outs)[1].shape == (2, *outs, 2)


def test_the_maxima_keep_their_gradient_beside_the_indices():
    x = lamina.tensor(np.random.default_rng(0).standard_normal((1, 5, 5, 2)), requires_grad=True, dtype=np.float64)
    out, idx = F.adaptive_max_pool2d(x, 3, return_indices=True)
    out.sum().backward()
    routed = np.zeros((1, 25, 2))
    for c in range(2):
        np.add.at(routed[0, :, c], idx.numpy()[0, ..., c].ravel(), 1.0)
    np.testing.assert_array_equal(x.grad, routed.reshape(1, 5, 5, 2))


def test_plain_arrays_give_indices_too():
    x = _values((1, 6, 4, 2), seed=11)
    for pool, shape, size in ((F.adaptive_max_pool2d, x.shape, 3), (F.adaptive_max_pool3d, (1, 2, 3, 4, 2), 2)):
        values = x.reshape(shape)
        from_array, from_tensor = pool(values, size, return_indices=True), pool(lamina.tensor(values), size,
                                                                                 return_indices=True)
        np.testing.assert_array_equal(from_array[1].numpy(), from_tensor[1].numpy())
