"""F.interpolate and nn.Upsample against torch.nn.functional.interpolate (NCHW at the boundary)."""

import numpy as np
import pytest
import torch
from tests.helpers import check_gradients, compare_with_torch, randn

import lamina
from lamina import functional as F
from lamina import nn
from lamina.errors import ShapeError

CASES = [
    dict(size=(9, 4), mode="nearest"),
    dict(scale_factor=2, mode="nearest"),
    dict(scale_factor=1.7, mode="nearest"),
    dict(size=(3, 11), mode="nearest-exact"),
    dict(size=(9, 4), mode="bilinear"),
    dict(size=(9, 4), mode="bilinear", align_corners=True),
    dict(scale_factor=(0.5, 2.5), mode="bilinear"),
    dict(size=(12, 3), mode="bicubic"),
    dict(size=(12, 3), mode="bicubic", align_corners=True),
    dict(scale_factor=0.6, mode="bicubic"),
    dict(size=(3, 2), mode="area"),
    dict(size=(4, 7), mode="area"),
]


def _theirs(case):
    return lambda t: torch.nn.functional.interpolate(t.permute(0, 3, 1, 2), **case).permute(0, 2, 3, 1)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_torch(case, dtype):
    compare_with_torch(lambda t: F.interpolate(t, **case), _theirs(case), randn(2, 6, 5, 3, seed=1), dtype=dtype)


@pytest.mark.parametrize("case", CASES[::3])
def test_gradcheck(case):
    assert check_gradients(lambda t: F.interpolate(t, **case), randn(1, 4, 5, 2, seed=2))


def test_same_size_is_the_identity_and_upsample_layer_matches():
    x = randn(2, 5, 5, 3, seed=3).astype(np.float32)
    for mode in ("nearest", "bilinear", "bicubic", "area"):
        np.testing.assert_allclose(F.interpolate(x, size=5, mode=mode).numpy(), x, atol=1e-6)
    layer = nn.Upsample(scale_factor=2, mode="bilinear")
    expected = torch.nn.Upsample(scale_factor=2, mode="bilinear")(torch.tensor(x).permute(0, 3, 1, 2))
    np.testing.assert_allclose(layer(x).numpy(), expected.permute(0, 2, 3, 1).numpy(), atol=1e-6)
    copy = nn.layer_from_config(nn.layer_to_config(layer))
    assert repr(copy) == repr(layer) and "mode='bilinear'" in repr(layer)


def test_bad_arguments_name_the_op():
    x = np.zeros((1, 4, 4, 1))
    with pytest.raises(ValueError, match="interpolate: give exactly one of size and scale_factor"):
        F.interpolate(x)
    with pytest.raises(ValueError, match="interpolate: mode must be one of"):
        F.interpolate(x, size=3, mode="trilinear")
    with pytest.raises(ValueError, match="align_corners applies to 'bilinear' and 'bicubic' only"):
        F.interpolate(x, size=3, align_corners=True)
    with pytest.raises(ShapeError, match=r"interpolate: expected x of shape \(N, H, W, C\).*\(4, 4\)"):
        F.interpolate(np.zeros((4, 4)), size=3)
    with pytest.raises(ShapeError, match="leaves no pixel"):
        F.interpolate(x, scale_factor=0.1)
    with pytest.raises(ValueError, match="Upsample: give exactly one of size and scale_factor"):
        nn.Upsample()


def _sources(n_in: int, mode: str, **resize) -> tuple[np.ndarray, np.ndarray]:
    """The input row each output row copies, in lamina and in torch, for a column of 0..n_in-1."""
    x = np.arange(float(n_in)).reshape(1, n_in, 1, 1)
    ours = F.interpolate(x.astype(np.float64), mode=mode, **resize).numpy().ravel()
    theirs = torch.nn.functional.interpolate(torch.tensor(x.transpose(0, 3, 1, 2)), mode=mode, **resize)
    return ours, theirs.numpy().ravel()


@pytest.mark.parametrize("mode", ["nearest", "nearest-exact"])
def test_nearest_sources_on_exact_boundaries(mode):
    # with a size: floor(i n_in / n_out) in integers, 49 * 2 / 98 = 1 exactly (float64 gives 0.99...)
    ours, theirs = _sources(2, mode, size=(98, 1))
    np.testing.assert_array_equal(ours, np.minimum(((2 * np.arange(98) + (mode != "nearest")) * 2) // 196, 1))
    np.testing.assert_array_equal(ours, theirs)
    for n_in, n_out in ((3, 7), (5, 15), (31, 93), (12, 36)):
        ours, _ = _sources(n_in, mode, size=(n_out, 1))
        rows = np.arange(n_out)
        expected = (rows * n_in) // n_out if mode == "nearest" else ((2 * rows + 1) * n_in) // (2 * n_out)
        np.testing.assert_array_equal(ours, expected)
    # with a scale factor: torch's float32 1 / scale
    for n_in, scale in ((31, 1.3), (40, 2.2), (17, 0.7), (3, 1.3), (25, 1 / 3), (11, 2.0)):
        ours, theirs = _sources(n_in, mode, scale_factor=(scale, 1.0))
        np.testing.assert_array_equal(ours, theirs, err_msg=f"n_in={n_in}, scale_factor={scale}")


def _with_bad_pixels(shape, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal(shape)
    x[0, 1, 2, 0] = np.nan
    x[-1, -1, 0, -1] = np.inf
    x[-1, 2, 3, 0] = -np.inf
    return x


@pytest.mark.parametrize("case", CASES + [dict(size=(5, 4), mode="bicubic")],
                         ids=lambda c: "-".join(str(v) for v in c.values()))
def test_a_non_finite_pixel_reaches_only_the_outputs_that_read_it(case):
    x = _with_bad_pixels((2, 6, 5, 3))
    ours = F.interpolate(lamina.tensor(x, dtype=np.float64), **case).numpy()
    theirs = _theirs(case)(torch.tensor(x)).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)
    assert np.isfinite(ours).sum() > ours.size // 2
