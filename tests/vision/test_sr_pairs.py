"""Low/high-resolution pairs for super-resolution."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from lamina.errors import ShapeError
from lamina.vision import sr_pairs


@pytest.mark.parametrize("degradation", ["bicubic", "bilinear", "area", "nearest"])
def test_pairs_match_torch_interpolate(degradation):
    images = np.random.default_rng(0).uniform(size=(2, 13, 11, 3))
    lr, hr = sr_pairs(images, 3, degradation)
    assert hr.shape == (2, 12, 9, 3) and np.array_equal(hr, images[:, :12, :9])
    expected = TF.interpolate(torch.tensor(hr).permute(0, 3, 1, 2), size=(4, 3), mode=degradation)
    np.testing.assert_allclose(lr, expected.permute(0, 2, 3, 1).numpy(), rtol=1e-12, atol=1e-12)


def test_grey_bytes_and_clipping():
    images = np.random.default_rng(1).integers(0, 256, (3, 8, 8)).astype(np.uint8)
    lr, hr = sr_pairs(images, 2, clip=(0, 255))
    assert lr.shape == (3, 4, 4, 1) and hr.shape == (3, 8, 8, 1)
    assert lr.dtype == hr.dtype == np.float32 and lr.min() >= 0 and lr.max() <= 255


def test_errors():
    with pytest.raises(ValueError, match="scale must be a positive integer"):
        sr_pairs(np.zeros((1, 8, 8, 1)), 0)
    with pytest.raises(ValueError, match="degradation must be one of"):
        sr_pairs(np.zeros((1, 8, 8, 1)), 2, "lanczos")
    with pytest.raises(ShapeError, match="smaller than the scale 4"):
        sr_pairs(np.zeros((1, 3, 8, 1)), 4)
