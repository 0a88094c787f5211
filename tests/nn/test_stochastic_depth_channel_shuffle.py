"""StochasticDepth (torchvision.ops.stochastic_depth) and ChannelShuffle (ShuffleNet):
values, gradients by finite differences and against torch, statistics of the masks,
configs and bad arguments."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, check_second_derivatives, compare_with_torch, randn
from lamina.errors import ShapeError
from lamina.nn import (
    ChannelShuffle,
    StochasticDepth,
    channel_shuffle,
    layer_from_config,
    layer_to_config,
    stochastic_depth,
)


# -- channel shuffle ---------------------------------------------------------------------------------
def _torch_shuffle_nhwc(x, groups):
    """torchvision's channel_shuffle on the NCHW view of an NHWC tensor."""
    nchw = x.permute(0, 3, 1, 2)
    n, c, h, w = nchw.shape
    out = nchw.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)
    return out.permute(0, 2, 3, 1)


@pytest.mark.parametrize("groups", [2, 3])
def test_channel_shuffle_matches_torch_values_and_gradients(groups):
    x = randn(2, 3, 4, 6)
    compare_with_torch(lambda t: ChannelShuffle(groups)(t), lambda t: _torch_shuffle_nhwc(t, groups), x)
    compare_with_torch(lambda t: channel_shuffle(t, groups), lambda t: _torch_shuffle_nhwc(t, groups), x,
                       dtype=np.float64)


def test_channel_shuffle_interleaves_the_groups_and_checks_gradients():
    x = np.arange(6.0).reshape(1, 1, 1, 6)
    np.testing.assert_array_equal(channel_shuffle(x, 2).numpy().ravel(), [0, 3, 1, 4, 2, 5])
    np.testing.assert_array_equal(channel_shuffle(x, 3).numpy().ravel(), [0, 2, 4, 1, 3, 5])
    np.testing.assert_array_equal(channel_shuffle(x, 1).numpy(), x)
    assert check_gradients(lambda t: channel_shuffle(t, 2) * t, randn(2, 2, 2, 4))
    assert check_second_derivatives(lambda t: channel_shuffle(t, 2) * t, randn(1, 2, 2, 4))


def test_channel_shuffle_config_and_errors():
    layer = layer_from_config(layer_to_config(ChannelShuffle(4, name="shuffle")))
    assert (layer.groups, layer.name) == (4, "shuffle")
    assert layer.compute_output_shape((None, 5, 5, 8)) == (None, 5, 5, 8)
    with pytest.raises(ShapeError, match=r"6 channels.*4 equal groups"):
        ChannelShuffle(4).compute_output_shape((None, 5, 5, 6))
    with pytest.raises(ShapeError, match="ChannelShuffle"):
        ChannelShuffle(2)(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="groups"):
        ChannelShuffle(0)


# -- stochastic depth ------------------------------------------------------------------------------
def test_stochastic_depth_is_the_identity_in_evaluation_and_for_p_zero():
    x = randn(4, 3, 3, 2)
    layer = StochasticDepth(0.5).eval()
    np.testing.assert_array_equal(layer(x).numpy(), x.astype(np.float32))
    np.testing.assert_array_equal(stochastic_depth(x, 0.0, "row", training=True).numpy(), x.astype(np.float32))
    assert not stochastic_depth(x, 1.0, "batch").numpy().any()


def test_row_mode_shares_one_mask_value_per_sample_and_preserves_the_expectation():
    p, n = 0.3, 20000
    out = StochasticDepth(p, "row")(np.ones((n, 2, 2, 3), np.float32)).numpy()
    per_sample = out.reshape(n, -1)
    assert (per_sample == per_sample[:, :1]).all()       # one draw for the whole sample
    assert set(np.unique(per_sample)) <= {0.0, np.float32(1 / (1 - p))}
    kept = (per_sample[:, 0] > 0).mean()
    assert abs(kept - (1 - p)) < 4 * np.sqrt(p * (1 - p) / n)
    assert abs(out.mean() - 1.0) < 0.03                  # E[d] = x


def test_batch_mode_draws_once_for_the_batch():
    draws = [StochasticDepth(0.5, "batch")(np.ones((8, 3), np.float32)).numpy() for _ in range(200)]
    assert all((d == d.flat[0]).all() for d in draws)
    kept = np.mean([d.flat[0] > 0 for d in draws])
    assert 0.35 < kept < 0.65
    np.testing.assert_allclose(np.mean([d.mean() for d in draws]), 1.0, atol=0.2)


def test_stochastic_depth_gradients_and_torch_with_the_same_mask():
    """The same draw on both sides: lamina's mask recovered from its output, given to torch."""
    x = randn(6, 2, 2, 3, seed=1)
    lamina.manual_seed(3)
    scale = stochastic_depth(np.ones_like(x), 0.4).numpy()
    assert 0 < (scale[:, 0, 0, 0] > 0).sum() < 6

    def ours(t):
        lamina.manual_seed(3)
        return stochastic_depth(t, 0.4)

    compare_with_torch(ours, lambda t: t * torch.tensor(scale), x)
    assert check_gradients(lambda t: ours(t) * t, x)
    assert check_second_derivatives(lambda t: ours(t) * t, x)


def test_stochastic_depth_config_and_errors():
    layer = layer_from_config(layer_to_config(StochasticDepth(0.2, "batch", name="drop_path")))
    assert (layer.p, layer.mode, layer.name) == (0.2, "batch", "drop_path")
    assert layer.compute_output_shape((None, 4, 4, 8)) == (None, 4, 4, 8)
    with pytest.raises(ValueError, match=r"p must be a number in \[0, 1\], got 1.5"):
        StochasticDepth(1.5)
    with pytest.raises(ValueError, match="mode must be 'row'"):
        StochasticDepth(0.1, mode="col")
    with pytest.raises(ValueError, match="stochastic_depth"):
        stochastic_depth(np.ones(3), -0.1)
