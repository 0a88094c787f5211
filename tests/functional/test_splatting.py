"""2-D Gaussian splatting (rasterize_gaussians_2d): values against a NumPy loop over pixels
and Gaussians, values and gradients against a float64 torch rewrite of the same formulas
(autograd through them), float64 gradient checks, tile-size independence and its errors."""

import numpy as np
import pytest
import torch

import lamina
import lamina.functional as F
from helpers import check_gradients, check_second_derivatives, compare_with_torch
from lamina.errors import ShapeError

H, W = 5, 6


def gaussians(n=4, channels=3, seed=0, height=H, width=W):
    rng = np.random.default_rng(seed)
    means = np.c_[rng.uniform(0, width, n), rng.uniform(0, height, n)]
    chol = np.c_[rng.uniform(0.8, 2.0, n), rng.normal(0, 0.6, n), rng.uniform(0.8, 2.0, n)]
    scales, rotations = rng.uniform(0.7, 2.0, (n, 2)), rng.uniform(-np.pi, np.pi, n)
    colors, opacities = rng.uniform(0, 1, (n, channels)), rng.uniform(0.3, 1.0, n)
    opacities[0] = 1.0                                   # its alpha reaches the 0.99 clamp near its mean
    return means, chol, scales, rotations, colors, opacities


def covariance_from_cholesky(chol):
    lower = np.zeros((len(chol), 2, 2))
    lower[:, 0, 0], lower[:, 1, 0], lower[:, 1, 1] = chol[:, 0], chol[:, 1], chol[:, 2]
    return lower @ lower.transpose(0, 2, 1)


def covariance_from_scales(scales, rotations):
    cos, sin = np.cos(rotations), np.sin(rotations)
    rotation = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)
    scale = np.zeros((len(scales), 2, 2))
    scale[:, 0, 0], scale[:, 1, 1] = scales[:, 0], scales[:, 1]
    return rotation @ scale @ scale.transpose(0, 2, 1) @ rotation.transpose(0, 2, 1)


def numpy_loop(means, sigma, colors, opacities, height, width, mode):
    image = np.zeros((height, width, colors.shape[1]))
    for i in range(height):
        for j in range(width):
            transmittance = 1.0
            for n in range(len(means)):
                d = np.array([j + 0.5, i + 0.5]) - means[n]
                weight = np.exp(-0.5 * d @ np.linalg.inv(sigma[n]) @ d)
                if mode == "sum":
                    image[i, j] += opacities[n] * weight * colors[n]
                else:
                    alpha = min(opacities[n] * weight, 0.99)
                    image[i, j] += transmittance * alpha * colors[n]
                    transmittance *= 1.0 - alpha
    return image


def torch_rasterize(means, sigma, colors, opacities, height, width, mode):
    rows, cols = torch.meshgrid(torch.arange(height, dtype=means.dtype), torch.arange(width, dtype=means.dtype),
                                indexing="ij")
    pixels = torch.stack([cols.reshape(-1) + 0.5, rows.reshape(-1) + 0.5], -1)
    d = pixels[:, None, :] - means[None]                                     # (P, N, 2)
    weight = torch.exp(-0.5 * torch.einsum("pni,nij,pnj->pn", d, torch.linalg.inv(sigma), d))
    alpha = opacities * weight
    if mode == "alpha":
        alpha = alpha.clamp(max=0.99)
        kept = torch.cumprod(1 - alpha, dim=1)
        alpha = torch.cat([torch.ones_like(kept[:, :1]), kept[:, :-1]], 1) * alpha
    return (alpha @ colors).reshape(height, width, -1)


def torch_sigma_cholesky(chol):
    lower = torch.zeros(len(chol), 2, 2, dtype=chol.dtype)
    lower = lower.index_put((torch.arange(len(chol)), torch.tensor(0), torch.tensor(0)), chol[:, 0])
    lower = lower.index_put((torch.arange(len(chol)), torch.tensor(1), torch.tensor(0)), chol[:, 1])
    lower = lower.index_put((torch.arange(len(chol)), torch.tensor(1), torch.tensor(1)), chol[:, 2])
    return lower @ lower.transpose(1, 2)


def torch_sigma_scales(scales, rotations):
    cos, sin = torch.cos(rotations), torch.sin(rotations)
    rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    scale = torch.diag_embed(scales)
    return rotation @ scale @ scale.transpose(1, 2) @ rotation.transpose(1, 2)


@pytest.mark.parametrize("mode", ["sum", "alpha"])
def test_values_equal_a_numpy_loop_over_pixels_and_gaussians(mode):
    means, chol, scales, rotations, colors, opacities = gaussians()
    got = F.rasterize_gaussians_2d(lamina.tensor(means, dtype=np.float64), chol, colors, opacities, H, W, mode=mode,
                                   tile_size=7).numpy()
    expected = numpy_loop(means, covariance_from_cholesky(chol), colors, opacities, H, W, mode)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    got = F.rasterize_gaussians_2d(lamina.tensor(means, dtype=np.float64), (scales, rotations), colors, opacities,
                                   H, W, mode=mode).numpy()
    expected = numpy_loop(means, covariance_from_scales(scales, rotations), colors, opacities, H, W, mode)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["sum", "alpha"])
def test_values_and_gradients_equal_a_torch_rewrite_cholesky(mode):
    means, chol, _, _, colors, opacities = gaussians(seed=1)
    compare_with_torch(
        lambda m, l, c, o: F.rasterize_gaussians_2d(m, l, c, o, H, W, mode=mode, tile_size=8),
        lambda m, l, c, o: torch_rasterize(m, torch_sigma_cholesky(l), c, o, H, W, mode),
        means, chol, colors, opacities, dtype=np.float64, rtol=1e-10)


@pytest.mark.parametrize("mode", ["sum", "alpha"])
def test_values_and_gradients_equal_a_torch_rewrite_scales_rotations(mode):
    means, _, scales, rotations, colors, opacities = gaussians(seed=2, channels=2)
    compare_with_torch(
        lambda m, s, r, c, o: F.rasterize_gaussians_2d(m, (s, r), c, o, H, W, mode=mode),
        lambda m, s, r, c, o: torch_rasterize(m, torch_sigma_scales(s, r), c, o, H, W, mode),
        means, scales, rotations, colors, opacities, dtype=np.float64, rtol=1e-10)


def test_the_alpha_clamp_is_reached_and_stops_the_opacity_gradient():
    means = np.array([[2.5, 2.5]])
    chol, colors = np.array([[1.0, 0.0, 1.0]]), np.array([[1.0]])
    opacities = lamina.tensor(np.array([1.0]), requires_grad=True, dtype=np.float64)
    image = F.rasterize_gaussians_2d(means, chol, colors, opacities, 5, 5, mode="alpha")
    assert image.numpy()[2, 2, 0] == pytest.approx(0.99)
    image[2, 2, 0].backward()
    assert opacities.grad[0] == 0.0


@pytest.mark.parametrize("mode", ["sum", "alpha"])
def test_float64_gradient_check_on_a_tiny_image(mode):
    means, chol, scales, rotations, colors, opacities = gaussians(n=3, channels=2, seed=3, height=3, width=4)
    opacities[0] = 0.9
    assert check_gradients(lambda m, l, c, o: F.rasterize_gaussians_2d(m, l, c, o, 3, 4, mode=mode, tile_size=5),
                           means, chol, colors, opacities)
    assert check_gradients(lambda m, s, r, c, o: F.rasterize_gaussians_2d(m, (s, r), c, o, 3, 4, mode=mode),
                           means, scales, rotations, colors, opacities)


@pytest.mark.parametrize("mode", ["sum", "alpha"])
def test_second_derivatives(mode):
    means, chol, _, _, colors, opacities = gaussians(n=2, channels=1, seed=4, height=2, width=3)
    opacities[0] = 0.9
    assert check_second_derivatives(lambda m, l, c, o: F.rasterize_gaussians_2d(m, l, c, o, 2, 3, mode=mode),
                                    means, chol, colors, opacities)


@pytest.mark.parametrize("mode", ["sum", "alpha"])
def test_results_do_not_depend_on_the_tile_size(mode):
    arrays = gaussians(n=6, seed=5, height=7, width=9)
    means, chol, _, _, colors, opacities = (lamina.tensor(a, dtype=np.float64) for a in arrays)
    results = []
    for tile_size in (1, 5, 17, 63, 1000):
        inputs = [lamina.tensor(t.numpy(), requires_grad=True, dtype=np.float64)
                  for t in (means, chol, colors, opacities)]
        image = F.rasterize_gaussians_2d(*inputs, 7, 9, mode=mode, tile_size=tile_size)
        (image * image).sum().backward()
        results.append([image.numpy()] + [t.grad for t in inputs])
    for other in results[1:]:
        for a, b in zip(other, results[0]):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


def test_float32_in_float32_out_and_the_output_shape():
    means, chol, _, _, colors, opacities = (a.astype(np.float32) for a in gaussians(channels=2))
    image = F.rasterize_gaussians_2d(lamina.tensor(means), chol, colors, opacities, H, W)
    assert image.shape == (H, W, 2) and image.dtype == np.float32


@pytest.mark.parametrize("mode", ["sum", "alpha"])
def test_float32_keeps_float32_accuracy_far_from_the_image_centre(mode):
    """Small Gaussians on a 64 x 96 image: float32 values and gradients within 1e-5 (of the
    largest) of float64."""
    rng = np.random.default_rng(6)
    arrays = (np.c_[rng.uniform(0, 96, 40), rng.uniform(0, 64, 40)],
              np.c_[rng.uniform(0.5, 3, 40), rng.normal(0, 0.5, 40), rng.uniform(0.5, 3, 40)],
              rng.uniform(0, 1, (40, 3)), rng.uniform(0.2, 1, 40))
    results = []
    for dtype in (np.float64, np.float32):
        inputs = [lamina.tensor(a, requires_grad=True, dtype=dtype) for a in arrays]
        image = F.rasterize_gaussians_2d(*inputs, 64, 96, mode=mode)
        (image * image).sum().backward()
        results.append([image.numpy()] + [t.grad for t in inputs])
    for single, double in zip(results[1], results[0]):
        assert single.dtype == np.float32
        assert np.abs(single - double).max() < 1e-5 * np.abs(double).max()


def test_bad_shapes_are_reported_with_the_function_and_shapes():
    means, chol, scales, rotations, colors, opacities = gaussians()
    with pytest.raises(ShapeError, match=r"rasterize_gaussians_2d: means must be \(N, 2\), got \(4, 3\)"):
        F.rasterize_gaussians_2d(np.zeros((4, 3)), chol, colors, opacities, H, W)
    with pytest.raises(ShapeError, match=r"rasterize_gaussians_2d: colors .* N = 4 .* got \(3, 3\)"):
        F.rasterize_gaussians_2d(means, chol, colors[:3], opacities, H, W)
    with pytest.raises(ShapeError, match=r"rasterize_gaussians_2d: opacities must be \(N,\) = \(4,\), got \(4, 1\)"):
        F.rasterize_gaussians_2d(means, chol, colors, opacities[:, None], H, W)
    with pytest.raises(ShapeError, match=r"rasterize_gaussians_2d: the Cholesky factor .* got \(4, 2\)"):
        F.rasterize_gaussians_2d(means, chol[:, :2], colors, opacities, H, W)
    with pytest.raises(ShapeError, match=r"rasterize_gaussians_2d: scales must be \(N, 2\) .* \(4, 2\) and \(3,\)"):
        F.rasterize_gaussians_2d(means, (scales, rotations[:3]), colors, opacities, H, W)
    with pytest.raises(ValueError, match="rasterize_gaussians_2d: mode must be 'sum' or 'alpha'"):
        F.rasterize_gaussians_2d(means, chol, colors, opacities, H, W, mode="max")
    with pytest.raises(ValueError, match="rasterize_gaussians_2d: height must be a positive int"):
        F.rasterize_gaussians_2d(means, chol, colors, opacities, 0, W)


def test_singular_covariances_are_refused():
    means, chol, scales, rotations, colors, opacities = gaussians()
    chol[2, 2] = 0.0
    with pytest.raises(ValueError, match=r"rasterize_gaussians_2d: .*Gaussian\(s\) \[2\] is not positive definite"):
        F.rasterize_gaussians_2d(means, chol, colors, opacities, H, W)
    scales[1, 0] = -0.5
    with pytest.raises(ValueError, match=r"Gaussian\(s\) \[1\] is not positive definite: scales must be > 0"):
        F.rasterize_gaussians_2d(means, (scales, rotations), colors, opacities, H, W)
