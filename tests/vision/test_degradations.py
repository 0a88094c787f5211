"""Real-ESRGAN's degradations: the blur kernels against hand-built Gaussians (sum 1, the
covariance they are made from), the sinc kernel's low-pass response, filtering against SciPy,
the noise statistics, resizing, and the second-order pipeline's shapes, range and seeding."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from lamina.errors import ShapeError
from lamina.vision import degradations as D


def _offsets(size):
    r = np.arange(size) - size // 2
    x, y = np.meshgrid(r, r)
    return x, y


def test_isotropic_gaussian_matches_the_hand_built_one():
    x, y = _offsets(7)
    hand = np.exp(-(x ** 2 + y ** 2) / (2 * 1.3 ** 2))
    kernel = D.isotropic_gaussian_kernel(7, 1.3)
    np.testing.assert_allclose(kernel, hand / hand.sum(), rtol=1e-6)
    np.testing.assert_allclose(kernel.sum(), 1.0, rtol=1e-6)


def test_anisotropic_gaussian_has_the_covariance_it_is_made_from():
    sigma_x, sigma_y, theta = 2.0, 0.8, 0.6
    kernel = D.anisotropic_gaussian_kernel(41, sigma_x, sigma_y, theta).astype(np.float64)
    x, y = _offsets(41)
    np.testing.assert_allclose(kernel.sum(), 1.0, rtol=1e-6)
    covariance = np.array([[np.sum(kernel * x * x), np.sum(kernel * x * y)],
                           [np.sum(kernel * x * y), np.sum(kernel * y * y)]])
    c, s = np.cos(theta), np.sin(theta)
    expected = np.array([[c, -s], [s, c]]) @ np.diag([sigma_x ** 2, sigma_y ** 2]) @ np.array([[c, s], [-s, c]])
    np.testing.assert_allclose(covariance, expected, atol=1e-5)
    np.testing.assert_allclose(D.kernel_covariance(sigma_x, sigma_y, theta), expected, rtol=1e-12)
    np.testing.assert_allclose(kernel, kernel[::-1, ::-1], rtol=1e-6)          # point-symmetric


def test_generalized_and_plateau_kernels():
    gauss = D.anisotropic_gaussian_kernel(21, 2.0, 1.0, 0.3)
    np.testing.assert_allclose(D.generalized_gaussian_kernel(21, 2.0, 1.0, 0.3, 1.0), gauss, rtol=1e-6)
    x, y = _offsets(21)
    q = (x / 2.0) ** 2 + y ** 2
    heavy = D.generalized_gaussian_kernel(21, 2.0, 1.0, 0.0, 0.5)
    np.testing.assert_allclose(heavy, np.exp(-0.5 * np.sqrt(q)) / np.exp(-0.5 * np.sqrt(q)).sum(), rtol=1e-5)
    plateau = D.plateau_kernel(21, 2.0, 1.0, 0.0, 1.5)
    np.testing.assert_allclose(plateau, (1 / (1 + q ** 1.5)) / (1 / (1 + q ** 1.5)).sum(), rtol=1e-5)
    for kernel in (heavy, plateau):
        np.testing.assert_allclose(kernel.sum(), 1.0, rtol=1e-6)
    assert heavy[10, 0] / heavy[10, 10] > gauss[10, 0] / gauss[10, 10]        # beta < 1: heavier tails


def test_sinc_kernel_is_a_low_pass_filter():
    kernel = D.sinc_kernel(21, np.pi / 3).astype(np.float64)
    np.testing.assert_allclose(kernel.sum(), 1.0, rtol=1e-6)
    assert kernel[10, 10] == kernel.max() and np.any(kernel < 0)             # ringing lobes
    response = np.abs(np.fft.fft2(kernel, (64, 64)))
    assert response[0, 0] == pytest.approx(1.0, rel=1e-6)
    assert response[0, 32] < 0.1 and response[32, 0] < 0.1                   # Nyquist removed
    with pytest.raises(ValueError, match=r"sinc_kernel: cutoff must be in \(0, pi\]"):
        D.sinc_kernel(7, 4.0)


def test_filter2d_matches_scipy_with_reflection():
    rng = np.random.default_rng(0)
    images = rng.random((2, 9, 11, 3))
    kernel = D.anisotropic_gaussian_kernel(5, 1.5, 0.7, 0.4).astype(np.float64)
    out = D.filter2d(images, kernel)
    expected = np.stack([np.stack([ndimage.correlate(images[n, :, :, c], kernel, mode="mirror")
                                   for c in range(3)], -1) for n in range(2)])
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    np.testing.assert_allclose(D.filter2d(images[0], kernel), expected[0], rtol=1e-12)
    with pytest.raises(ShapeError, match=r"filter2d: expected an odd square 2-D kernel, got shape \(4, 4\)"):
        D.filter2d(images, np.ones((4, 4)))


def test_noise_statistics():
    clean = np.full((4, 64, 64, 3), 0.5)
    noisy = D.gaussian_noise(clean, 0.1, rng=0) - clean
    assert abs(noisy.mean()) < 3e-3 and noisy.std() == pytest.approx(0.1, rel=0.02)
    grey = D.gaussian_noise(clean, 0.1, gray=True, rng=0) - clean
    np.testing.assert_array_equal(grey[..., 0], grey[..., 2])
    shot = D.poisson_noise(clean, 1.0, rng=1) - clean                        # var of Poisson(255 x) / 255
    assert abs(shot.mean()) < 2e-3 and shot.var() == pytest.approx(0.5 / 255, rel=0.03)
    np.testing.assert_allclose((D.poisson_noise(clean, 2.0, rng=1) - clean), 2 * shot, rtol=1e-12)
    luma = D.poisson_noise(clean, 1.0, gray=True, rng=1) - clean
    np.testing.assert_array_equal(luma[..., 0], luma[..., 1])


def test_pipeline_shapes_range_and_seeding():
    rng = np.random.default_rng(3)
    hr = rng.random((2, 32, 24, 3)).astype(np.float32)
    degrade = D.RealESRGANDegradation(scale=4)
    lr = degrade(hr, seed=7)
    assert lr.shape == (2, 8, 6, 3) and lr.dtype == np.float32
    assert lr.min() >= 0 and lr.max() <= 1
    np.testing.assert_array_equal(degrade(hr, seed=7), lr)
    assert not np.array_equal(degrade(hr, seed=8), lr)
    assert degrade(hr[0], seed=1).shape == (8, 6, 3)
    # blurred and resized: the low-resolution images are smoother than a plain subsampling
    assert np.abs(np.diff(lr, axis=1)).mean() < np.abs(np.diff(hr[:, ::4, ::4], axis=1)).mean()
    with pytest.raises(ShapeError, match="RealESRGANDegradation: images of 30x24 are not multiples of the scale 4"):
        degrade(hr[:, :30], seed=0)


def test_no_degradation_is_a_plain_resize():
    hr = np.random.default_rng(4).random((1, 16, 16, 1)).astype(np.float32)
    plain = D.RealESRGANDegradation(scale=2, blur_prob=0.0, second_blur_prob=0.0, resize_prob=(0, 0, 1),
                                    second_resize_prob=(0, 0, 1), final_sinc_prob=0.0, noise_range=(0, 0),
                                    second_noise_range=(0, 0), gaussian_noise_prob=1.0)
    out = plain(hr, seed=0)
    assert out.shape == (1, 8, 8, 1)
    choices = [np.clip(D.resize(D.resize(hr, (8, 8), m1), (8, 8), m2), 0, 1) for m1 in D.RESIZE_MODES
               for m2 in D.RESIZE_MODES]
    assert any(np.allclose(out, c, atol=1e-6) for c in choices)
