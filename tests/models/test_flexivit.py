"""FlexiViT's PI-resize of patch embeddings and position-embedding resizing."""

import numpy as np
import pytest
import torch

from helpers import randn, run_readme_section
from lamina import models
from lamina.errors import ShapeError


def torch_resize(patches, size):
    """Bilinear resize (align_corners False, no antialias) of (n, h, w) patches."""
    x = torch.tensor(patches)[:, None]
    return torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)[:, 0].numpy()


def inner_products(patches, weight):
    """<x, w_k> for patches (n, h, w, c) and kernels (K, h, w, c): (n, K)."""
    return np.einsum("nhwc,khwc->nk", patches, weight)


def test_the_patch_resize_matrix_is_torchs_bilinear_resize():
    patches = randn(5, 4, 3, seed=1).astype(np.float64)
    b = models.patch_resize_matrix((4, 3), (7, 5))
    np.testing.assert_allclose((patches.reshape(5, 12) @ b.T).reshape(5, 7, 5), torch_resize(patches, (7, 5)),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("new", [6, 8, (5, 7)])
def test_pi_resize_keeps_inner_products_exactly_when_upsampling(new):
    weight = randn(3, 4, 4, 2, seed=2).astype(np.float64)
    patches = randn(6, 4, 4, 2, seed=3).astype(np.float64)
    resized = models.resize_patch_embedding(weight, new)
    h, w = (new, new) if isinstance(new, int) else new
    assert resized.shape == (3, h, w, 2)
    big = np.stack([torch_resize(patches[..., c], (h, w)) for c in range(2)], axis=-1)
    np.testing.assert_allclose(inner_products(big, resized), inner_products(patches, weight), rtol=1e-6, atol=1e-6)
    # a plain bilinear resize of the kernel does not keep them
    plain = np.stack([torch_resize(weight[..., c], (h, w)) for c in range(2)], axis=-1)
    assert not np.allclose(inner_products(big, plain), inner_products(patches, weight), atol=1e-2)


def test_pi_resize_is_the_least_squares_solution_when_downsampling():
    weight = randn(3, 8, 8, 2, seed=4).astype(np.float64)
    resized = models.resize_patch_embedding(weight, 5)
    b = models.patch_resize_matrix(8, 5)                    # (25, 64)
    for k in range(3):
        for c in range(2):
            target = weight[k, ..., c].ravel()
            solution, *_ = np.linalg.lstsq(b.T, target, rcond=None)
            np.testing.assert_allclose(resized[k, ..., c].ravel(), solution, rtol=1e-9, atol=1e-10)
            residual = b.T @ resized[k, ..., c].ravel() - target
            np.testing.assert_allclose(b @ residual, 0, atol=1e-10)   # normal equations
    assert models.resize_patch_embedding(weight.astype(np.float32), 5).dtype == np.float32


@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
def test_position_embedding_resize_equals_torch_interpolate(mode):
    pos = randn(1, 1 + 4 * 6, 8, seed=5).astype(np.float64)
    out = models.resize_position_embedding(pos, (7, 3), old_grid=(4, 6), mode=mode).numpy()
    grid = torch.tensor(pos[:, 1:]).reshape(1, 4, 6, 8).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(grid, size=(7, 3), mode=mode, align_corners=False)
    expected = torch.cat([torch.tensor(pos[:, :1]), expected.permute(0, 2, 3, 1).reshape(1, 21, 8)], dim=1)
    np.testing.assert_allclose(out, expected.numpy(), rtol=1e-5, atol=1e-5)


def test_errors_name_the_function():
    with pytest.raises(ShapeError, match="resize_patch_embedding"):
        models.resize_patch_embedding(np.zeros((3, 4, 4)), 6)
    with pytest.raises(ShapeError, match="resize_position_embedding"):
        models.resize_position_embedding(np.zeros((1, 1 + 10, 4)), (3, 3), old_grid=(3, 4))


def test_readme_example_runs():
    printed, _ = run_readme_section("ViT add-ons")
    assert printed.splitlines() == ["(2, 10)", "[17, 15, 13, 11]", "(16, 8, 8, 1)", "(1, 65, 16)"]
