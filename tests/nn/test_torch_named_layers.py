"""Layers under PyTorch's names: Dropout1D/2D/3D, FeatureAlphaDropout, InstanceNorm3D and
the UpsamplingNearest2D / UpsamplingBilinear2D layers, against torch where deterministic."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch, randn
from lamina import nn


@pytest.mark.parametrize("layer, spatial", [(nn.Dropout1D, 1), (nn.Dropout2D, 2), (nn.Dropout3D, 3)])
def test_channel_dropouts_drop_whole_channels_in_training_only(layer, spatial):
    x = np.ones((300,) + (3,) * spatial + (8,), dtype=np.float32)
    drop = layer(0.25)
    lamina.manual_seed(0)
    out = drop(lamina.tensor(x)).numpy()
    flat = out.reshape(300, -1, 8)
    assert np.all(flat == flat[:, :1])
    assert abs((flat[:, 0] == 0).mean() - 0.25) < 0.03
    assert set(np.unique(out)) <= {0.0, np.float32(1 / 0.75)}
    np.testing.assert_array_equal(drop.eval()(lamina.tensor(x)).numpy(), x)
    with pytest.raises(lamina.ShapeError, match=layer.__name__):
        drop.train()(lamina.tensor(np.ones((2,) * (spatial + 1), dtype=np.float32)))


def test_feature_alpha_dropout_keeps_the_moments_with_one_draw_per_channel():
    x = randn(400, 6, 40).astype(np.float32)
    layer = nn.FeatureAlphaDropout(0.2)
    lamina.manual_seed(1)
    out = layer(lamina.tensor(x)).numpy()
    assert abs(out.mean()) < 0.03 and abs(out.var() - 1) < 0.06
    dropped = np.isclose(out, out[:, :1]).all(axis=1)
    assert abs(dropped.mean() - 0.2) < 0.03
    np.testing.assert_array_equal(layer.eval()(lamina.tensor(x)).numpy(), x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_instance_norm_3d_matches_torch(dtype):
    ours = nn.InstanceNorm3D(eps=1e-3)
    theirs = torch.nn.InstanceNorm3d(3, eps=1e-3)
    compare_with_torch(ours, lambda x: theirs(x.movedim(-1, 1)).movedim(1, -1), randn(2, 3, 2, 4, 3, seed=3),
                       dtype=dtype, rtol=1e-4 if dtype == np.float32 else 1e-10)
    assert check_gradients(nn.InstanceNorm3D(), randn(2, 2, 3, 2, 3))


@pytest.mark.parametrize("ours, theirs", [
    (nn.UpsamplingNearest2D(scale_factor=2), torch.nn.UpsamplingNearest2d(scale_factor=2)),
    (nn.UpsamplingBilinear2D(size=(5, 7)), torch.nn.UpsamplingBilinear2d(size=(5, 7))),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_upsampling_layers_match_torch(ours, theirs, dtype):
    compare_with_torch(ours, lambda x: theirs(x.movedim(-1, 1)).movedim(1, -1), randn(2, 3, 4, 2), dtype=dtype)


@pytest.mark.parametrize("layer", [nn.Dropout3D(0.3), nn.FeatureAlphaDropout(0.1), nn.InstanceNorm3D(affine=True),
                                   nn.UpsamplingBilinear2D(scale_factor=3)])
def test_config_round_trip(layer):
    copy = nn.layer_from_config(nn.layer_to_config(layer))
    assert type(copy) is type(layer) and repr(copy) == repr(layer)
