"""PSNR, SSIM, MS-SSIM, Gram matrices and total variation against torch re-implementations of
torchmetrics' definitions (reflection padding then cropping, which must equal 'valid' filtering)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
import lamina.functional as F
from helpers import check_gradients, compare_double_backward_with_torch, compare_with_torch
from lamina.errors import ShapeError

MS_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def images(n, h, w, c, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (n, h, w, c))
    y = np.clip(x + 0.15 * rng.standard_normal(x.shape), 0, 1)
    return x, y


# -- torch references (NHWC inputs, permuted to torch's NCHW) -----------------------------------
def torch_gaussian(size, sigma, dtype):
    dist = torch.arange((1 - size) / 2, (1 + size) / 2, 1, dtype=dtype)
    g = torch.exp(-((dist / sigma) ** 2) / 2)
    return g / g.sum()


def torch_ssim_terms(x, y, data_range, size=11, sigma=1.5, k1=0.01, k2=0.03):
    """Per-image mean SSIM and contrast-structure, the way torchmetrics computes them."""
    x, y = x.permute(0, 3, 1, 2), y.permute(0, 3, 1, 2)
    c = x.shape[1]
    g = torch_gaussian(size, sigma, x.dtype)
    kernel = torch.outer(g, g).expand(c, 1, size, size)
    pad = (size - 1) // 2
    stacked = torch.cat([x, y, x * x, y * y, x * y])
    stacked = TF.pad(stacked, (pad, pad, pad, pad), mode="reflect")
    mu_x, mu_y, e_xx, e_yy, e_xy = TF.conv2d(stacked, kernel, groups=c).split(x.shape[0])
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    var_x, var_y, cov = e_xx - mu_x ** 2, e_yy - mu_y ** 2, e_xy - mu_x * mu_y
    upper, lower = 2 * cov + c2, var_x + var_y + c2
    ssim_map = ((2 * mu_x * mu_y + c1) * upper) / ((mu_x ** 2 + mu_y ** 2 + c1) * lower)
    cs_map = upper / lower
    crop = (slice(None), slice(None), slice(pad, -pad), slice(pad, -pad))
    return ssim_map[crop].mean(dim=(1, 2, 3)), cs_map[crop].mean(dim=(1, 2, 3))


def torch_ms_ssim(x, y, data_range, size=11):
    terms = []
    for j in range(len(MS_WEIGHTS)):
        sim, cs = torch_ssim_terms(x, y, data_range, size)
        terms.append(sim if j == len(MS_WEIGHTS) - 1 else cs)
        x = TF.avg_pool2d(x.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
        y = TF.avg_pool2d(y.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)
    stacked = torch.relu(torch.stack(terms))
    return torch.prod(stacked ** torch.tensor(MS_WEIGHTS, dtype=x.dtype).reshape(-1, 1), dim=0).mean()


def torch_psnr(x, y, data_range):
    mse = ((x - y) ** 2).mean(dim=(1, 2, 3))
    return (10 * torch.log10(data_range ** 2 / mse)).mean()


# -- values and gradients against torch ---------------------------------------------------------
@pytest.mark.parametrize("data_range", [1.0, 2.5])
def test_ssim_matches_torchmetrics_definition(data_range):
    x, y = images(2, 16, 15, 3)
    compare_with_torch(lambda a, b: F.ssim(a, b, data_range=data_range),
                       lambda a, b: torch_ssim_terms(a, b, data_range)[0].mean(),
                       x * data_range, y * data_range, dtype=np.float64)


def test_ssim_loss_and_per_image_values():
    x, y = images(3, 12, 12, 1, seed=1)
    compare_with_torch(lambda a, b: F.ssim_loss(a, b), lambda a, b: 1 - torch_ssim_terms(a, b, 1.0)[0].mean(),
                       x, y, dtype=np.float64)
    compare_with_torch(lambda a, b: F.ssim(a, b, reduction="none"), lambda a, b: torch_ssim_terms(a, b, 1.0)[0],
                       x, y, dtype=np.float64)


def test_ms_ssim_matches_torchmetrics_definition():
    x, y = images(1, 48, 52, 2, seed=2)
    compare_with_torch(lambda a, b: F.ms_ssim(a, b, kernel_size=3), lambda a, b: torch_ms_ssim(a, b, 1.0, size=3),
                       x, y, dtype=np.float64)


def test_ms_ssim_default_window_at_the_smallest_size():
    x, y = images(1, 176, 176, 1, seed=3)
    out = F.ms_ssim(lamina.tensor(x, dtype=np.float64), lamina.tensor(y, dtype=np.float64))
    expected = torch_ms_ssim(torch.tensor(x), torch.tensor(y), 1.0).item()
    assert abs(out.item() - expected) < 1e-12


def test_psnr_matches_torch():
    x, y = images(3, 5, 6, 2, seed=4)
    compare_with_torch(lambda a, b: F.psnr(a, b, data_range=255.0), lambda a, b: torch_psnr(a, b, 255.0),
                       x * 255, y * 255, dtype=np.float64)


def test_ssim_and_psnr_gradchecks():
    x, y = images(1, 11, 12, 1, seed=5)
    assert check_gradients(lambda a, b: F.ssim(a, b), x, y)
    assert check_gradients(lambda a, b: F.psnr(a, b), x, y)
    x, y = images(1, 12, 13, 1, seed=6)
    assert check_gradients(lambda a, b: F.ms_ssim(a, b, kernel_size=3, weights=MS_WEIGHTS[:3]), x, y,
                           grad=[True, False])


def test_ssim_second_derivatives_match_torch():
    x, y = images(1, 12, 12, 2, seed=10)
    compare_double_backward_with_torch(lambda a, b: F.ssim(a, b), lambda a, b: torch_ssim_terms(a, b, 1.0)[0].mean(),
                                       x, y)


# -- analytic cases -------------------------------------------------------------------------------
def test_identical_images_score_one():
    x, _ = images(2, 14, 14, 3, seed=7)
    t = lamina.tensor(x, dtype=np.float64)
    assert abs(F.ssim(t, t).item() - 1) < 1e-12
    assert abs(F.ms_ssim(t, t, kernel_size=1, weights=MS_WEIGHTS[:3]).item() - 1) < 1e-12
    with np.errstate(divide="ignore"):
        assert np.isinf(F.psnr(t, t).item())


@pytest.mark.parametrize("level, offset", [(0.2, 0.1), (0.5, -0.3)])
def test_constant_offsets(level, offset):
    """Flat images have no variance: SSIM is the luminance term alone, (2ab + C1) / (a^2 + b^2 + C1),
    and PSNR is 10 log10(1 / offset^2)."""
    a, b = level, level + offset
    x = lamina.tensor(np.full((1, 16, 16, 2), a), dtype=np.float64)
    y = lamina.tensor(np.full((1, 16, 16, 2), b), dtype=np.float64)
    c1 = 0.01 ** 2
    assert abs(F.ssim(x, y).item() - (2 * a * b + c1) / (a * a + b * b + c1)) < 1e-12
    assert abs(F.psnr(x, y).item() - 10 * np.log10(1 / offset ** 2)) < 1e-10


# -- Gram matrices and total variation -------------------------------------------------------------
@pytest.mark.parametrize("normalize, divisor", [("hwc", 4 * 5 * 3), ("hw", 4 * 5), ("none", 1)])
def test_gram_matrix(normalize, divisor):
    f = np.random.default_rng(8).standard_normal((2, 4, 5, 3))

    def reference(t):
        flat = t.reshape(2, 20, 3)
        return flat.transpose(1, 2) @ flat / divisor

    compare_with_torch(lambda t: F.gram_matrix(t, normalize), reference, f, dtype=np.float64)
    assert check_gradients(lambda t: F.gram_matrix(t, normalize), f)


@pytest.mark.parametrize("squared", [False, True])
def test_total_variation(squared):
    x = np.random.default_rng(9).standard_normal((2, 5, 4, 3))

    def reference(t):
        dh, dw = t[:, 1:] - t[:, :-1], t[:, :, 1:] - t[:, :, :-1]
        if squared:
            return (dh ** 2).sum() + (dw ** 2).sum()
        return dh.abs().sum() + dw.abs().sum()

    compare_with_torch(lambda t: F.total_variation(t, squared=squared), reference, x, dtype=np.float64)
    assert check_gradients(lambda t: F.total_variation(t, reduction="mean", squared=True), x)


# -- errors ------------------------------------------------------------------------------------------
def test_ms_ssim_refuses_small_images():
    x, y = images(1, 160, 200, 1)
    with pytest.raises(ShapeError, match=r"ms_ssim: images of 160x200 are too small for 5 scales.*176"):
        F.ms_ssim(x, y)


@pytest.mark.parametrize("fn", [F.psnr, F.ssim, F.ms_ssim, F.ssim_loss])
@pytest.mark.parametrize("data_range", [0.0, -1.0, float("nan")])
def test_data_range_must_be_positive(fn, data_range):
    x, y = images(1, 12, 12, 1)
    with pytest.raises(ValueError, match="data_range must be a positive number"):
        fn(x, y, data_range=data_range)


@pytest.mark.parametrize("fn", [F.psnr, F.ssim, F.ssim_loss])
@pytest.mark.parametrize("data_range", [np.float32(2.5), np.int64(2), np.float64(2.5)])
def test_data_range_may_be_a_numpy_scalar(fn, data_range):
    x, y = images(1, 12, 12, 1)
    np.testing.assert_allclose(fn(x, y, data_range=data_range).numpy(),
                               fn(x, y, data_range=float(data_range)).numpy(), rtol=1e-12)


def test_ms_ssim_data_range_may_be_a_numpy_scalar_but_not_a_bool():
    x, y = images(1, 32, 32, 1)
    np.testing.assert_allclose(F.ms_ssim(x, y, data_range=np.float32(2.0), kernel_size=3, weights=(0.5, 0.5)).numpy(),
                               F.ms_ssim(x, y, data_range=2.0, kernel_size=3, weights=(0.5, 0.5)).numpy(), rtol=1e-12)
    for flag in (True, np.bool_(True)):
        with pytest.raises(ValueError, match="data_range must be a positive number"):
            F.psnr(x, y, data_range=flag)


@pytest.mark.parametrize("fn", [F.ssim, F.ms_ssim])
def test_images_without_channels_are_refused_by_name(fn):
    x = np.zeros((1, 16, 16, 0))
    with pytest.raises(ShapeError, match=rf"{fn.__name__}: images need at least one channel.*\(1, 16, 16, 0\)"):
        fn(x, x)


@pytest.mark.parametrize("fn", [F.psnr, F.ssim, F.ms_ssim])
def test_shape_mismatch(fn):
    x, _ = images(1, 12, 12, 1)
    with pytest.raises(ShapeError, match=r"same shape.*\(1, 12, 12, 1\) and \(1, 12, 11, 1\)"):
        fn(x, x[:, :, :11])


def test_ssim_window_larger_than_image():
    x, y = images(1, 8, 20, 1)
    with pytest.raises(ShapeError, match="8x20 are smaller than the 11x11 window"):
        F.ssim(x, y)
