"""The rest of ``torch.nn.functional``'s names in ``lamina.nn.functional``: ``conv_tbc``, the
``upsample`` family, ``native_channel_shuffle`` and ``embedding_bag``, against torch (channel
axis moved to the end at the boundary), with gradient checks and errors."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
import lamina.nn.functional as F
from helpers import check_gradients, compare_with_torch, randn
from lamina.errors import ShapeError


def channels_last(fn):
    return lambda x, *rest: fn(x.movedim(-1, 1).contiguous(), *rest).movedim(1, -1)


@pytest.mark.parametrize("pad, f", [(0, 3), (1, 3), (2, 2), (0, 1)])
def test_conv_tbc_equals_torchs(pad, f):
    x, w, b = randn(9, 2, 4), randn(f, 4, 5, seed=1), randn(5, seed=2)
    out = compare_with_torch(lambda x, w, b: F.conv_tbc(x, w, b, pad), lambda x, w, b: torch.conv_tbc(x, w, b, pad),
                             x, w, b, dtype=np.float64, rtol=1e-10)
    assert out[0].shape == (9 + 2 * pad - f + 1, 2, 5)
    assert check_gradients(lambda x, w, b: F.conv_tbc(x, w, b, pad), x, w, b)


def test_conv_tbc_errors_name_the_shapes():
    x, w, b = randn(9, 2, 4), randn(3, 4, 5), randn(5)
    with pytest.raises(ShapeError, match=r"conv_tbc: input must be \(T, B, C_in\).*\(9, 2, 3\) and weight \(3, 4, 5\)"):
        F.conv_tbc(x[..., :3], w, b)
    with pytest.raises(ValueError, match="conv_tbc: pad must be >= 0, got -1"):
        F.conv_tbc(x, w, b, -1)


@pytest.mark.parametrize("name, kwargs", [
    ("upsample", {"scale_factor": 2}),
    ("upsample", {"size": (5, 7), "mode": "bilinear", "align_corners": False}),
    ("upsample_nearest", {"size": (6, 9)}),
    ("upsample_bilinear", {"scale_factor": 2}),
    ("upsample_bilinear", {"size": (7, 5)}),
])
def test_upsample_names_equal_torchs(name, kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)          # torch: these names are deprecated
        compare_with_torch(lambda x: getattr(F, name)(x, **kwargs),
                           channels_last(lambda x: getattr(TF, name)(x, **kwargs)),
                           randn(2, 3, 4, 3), dtype=np.float64, rtol=1e-10)


def test_native_channel_shuffle_and_embedding_bag_are_the_layers_functions():
    x = randn(2, 3, 3, 6)           # torch's native kernel has no derivative: its values, and the layer's gradient
    compare_with_torch(lambda x: F.native_channel_shuffle(x, 3),
                       channels_last(lambda x: torch.native_channel_shuffle(x, 3)), x, dtype=np.float64, rtol=0,
                       grad=False)
    compare_with_torch(lambda x: F.native_channel_shuffle(x, 3), channels_last(lambda x: TF.channel_shuffle(x, 3)),
                       x, dtype=np.float64, rtol=0)
    ids, offsets, table = np.array([1, 2, 4, 5, 4, 3, 2, 9]), np.array([0, 4]), randn(10, 3)
    compare_with_torch(lambda t: F.embedding_bag(ids, t, offsets, mode="max"),
                       lambda t: TF.embedding_bag(torch.tensor(ids), t, torch.tensor(offsets), mode="max"),
                       table, dtype=np.float64, rtol=1e-12)
    assert F.embedding_bag is lamina.nn.embedding_bag and "native_channel_shuffle" in F.__all__


@pytest.mark.parametrize("x_shape, w_shape", [((3, 2, 4), (2, 4, 0)), ((3, 2, 0), (2, 0, 5)), ((3, 2, 4), (0, 4, 5)),
                                              ((0, 2, 4), (1, 4, 5)), ((3, 2, 4), (4, 4, 5))])
def test_conv_tbc_with_nothing_to_sum_gives_the_bias_as_torch(x_shape, w_shape):
    compare_with_torch(lambda x, w, b: F.conv_tbc(x, w, b), lambda x, w, b: torch.conv_tbc(x, w, b),
                       randn(*x_shape), randn(*w_shape, seed=1), randn(w_shape[2], seed=2), dtype=np.float64,
                       rtol=1e-12)
