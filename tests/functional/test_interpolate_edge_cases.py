"""F.interpolate against torch at the edges: axes a scale factor leaves the same size, the
rounding of nearest sources in float64, and NumPy scalars for size and scale_factor."""

import json

import numpy as np
import pytest
import torch

import lamina
from helpers import compare_with_torch, randn
from lamina import functional as F
from lamina import nn
from lamina.nn.layer import layer_from_config, layer_to_config


def _theirs(**resize):
    return lambda t: torch.nn.functional.interpolate(t.permute(0, 3, 1, 2), **resize).permute(0, 2, 3, 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("resize", [dict(scale_factor=1.2), dict(scale_factor=(1.2, 2.5)),
                                    dict(scale_factor=(0.7, 1.25)), dict(scale_factor=1.2, align_corners=True)],
                         ids=["both-axes", "height-kept", "width-kept", "corners"])
def test_bilinear_copies_an_axis_a_scale_factor_leaves_the_same_size(resize, dtype):
    # (4, 5) * 1.2 -> (4, 6): the rows are copied, not resampled with the ratio 1 / 1.2
    x = randn(2, 4, 5, 3, seed=4)
    compare_with_torch(lambda t: F.interpolate(t, mode="bilinear", **resize), _theirs(mode="bilinear", **resize),
                       x, dtype=dtype)
    same = F.interpolate(lamina.tensor(x, dtype=dtype), scale_factor=(1.2, 1.1), mode="bilinear").numpy()
    np.testing.assert_array_equal(same, x.astype(dtype))


def test_bilinear_copied_axis_reads_each_pixel_alone_as_torch():
    # row i reads pixel i with weight 1 and pixel i again with weight 0: an inf gives NaN on its row only
    x = randn(1, 4, 5, 2, seed=5)
    x[0, 2, 3, 0] = np.inf
    x[0, 0, 0, 1] = np.nan
    ours = F.interpolate(lamina.tensor(x, dtype=np.float64), scale_factor=(1.2, 1.0), mode="bilinear").numpy()
    theirs = _theirs(scale_factor=(1.2, 1.0), mode="bilinear")(torch.tensor(x)).numpy()
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=0)
    assert np.isnan(ours).sum() == 2


def _rows_read(h: int, dtype, mode: str, scale: float, width: int = 1, channels: int = 1):
    """The input row each output row reads, in lamina and in torch, for rows valued 0..h-1."""
    x = np.broadcast_to(np.arange(float(h))[None, :, None, None], (1, h, width, channels)).astype(dtype)
    ours = F.interpolate(lamina.tensor(x, dtype=dtype), scale_factor=(scale, 1.0), mode=mode).numpy()
    theirs = _theirs(scale_factor=(scale, 1.0), mode=mode)(torch.tensor(x)).numpy()
    return ours[0, :, 0, 0], theirs[0, :, 0, 0]


@pytest.mark.parametrize("mode, h, scale, row", [("nearest", 30, 4.6, 69), ("nearest-exact", 51, 2.7, 40)])
def test_nearest_sources_in_float64_round_as_torch(mode, h, scale, row):
    # torch's generic kernel (H_out + W_out > 128, C <= 3) computes 1 / scale and the source in float64
    ours, theirs = _rows_read(h, np.float64, mode, scale)
    assert theirs[row] == 15
    np.testing.assert_array_equal(ours, theirs)
    # in float32, and with a small output or C > 3 (torch's channels-last kernel), in float32
    for dtype, width, channels in ((np.float32, 1, 1), (np.float64, 1, 4)):
        ours, theirs = _rows_read(h, dtype, mode, scale, width, channels)
        np.testing.assert_array_equal(ours, theirs)
        assert theirs[row] == 14
    ours, theirs = _rows_read(25, np.float64, mode, scale)
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", ["nearest", "nearest-exact"])
def test_nearest_sources_match_torch_over_many_shapes(mode, dtype):
    rng = np.random.default_rng(7)
    for _ in range(25):
        h, w = (int(v) for v in rng.integers(2, 60, size=2))
        scales = tuple(round(float(v), 2) for v in rng.uniform(0.4, 4.5, size=2))
        channels = int(rng.choice([1, 3, 4]))
        x = rng.standard_normal((1, h, w, channels)).astype(dtype)
        ours = F.interpolate(lamina.tensor(x, dtype=dtype), scale_factor=scales, mode=mode).numpy()
        theirs = _theirs(scale_factor=scales, mode=mode)(torch.tensor(x)).numpy()
        np.testing.assert_array_equal(ours, theirs, err_msg=f"{(h, w, channels)} scale_factor={scales}")


@pytest.mark.parametrize("resize", [dict(size=np.int64(3)), dict(size=(np.int32(3), 7)),
                                    dict(scale_factor=np.float32(1.5)), dict(scale_factor=np.int64(2)),
                                    dict(scale_factor=(np.float32(0.7), np.float64(1.3)))],
                         ids=["size", "size-pair", "float32-scale", "int64-scale", "scale-pair"])
def test_numpy_scalars_as_size_and_scale_factor(resize):
    x = randn(1, 5, 6, 2, seed=8)
    compare_with_torch(lambda t: F.interpolate(t, mode="bilinear", **resize), _theirs(mode="bilinear", **resize), x,
                       dtype=np.float64)
    layer, x32 = nn.Upsample(mode="nearest", **resize), x.astype(np.float32)
    np.testing.assert_array_equal(layer(x32).numpy(), _theirs(mode="nearest", **resize)(torch.tensor(x32)).numpy())
    copy = layer_from_config(json.loads(json.dumps(layer_to_config(layer))))     # plain JSON numbers
    np.testing.assert_array_equal(copy(x32).numpy(), layer(x32).numpy())


@pytest.mark.parametrize("resize", [dict(size=True), dict(size=(3, False)), dict(scale_factor=True),
                                    dict(scale_factor="2")])
def test_bools_and_strings_are_refused(resize):
    with pytest.raises(ValueError, match="interpolate: (size|scale_factor) must be"):
        F.interpolate(np.zeros((1, 4, 4, 1)), **resize)
