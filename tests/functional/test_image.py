"""Per-sample image operations (the ops behind data augmentation) against PyTorch and NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
from helpers import check_gradients, compare_with_torch
from lamina import ShapeError
from lamina.functional import image


def _images(n=3, h=7, w=6, c=2, seed=0):
    return np.random.default_rng(seed).standard_normal((n, h, w, c))


def _nchw(x):
    return x.permute(0, 3, 1, 2)


def _nhwc(x):
    return x.permute(0, 2, 3, 1)


def test_flip_each_sample_its_own_way():
    x = _images(4)
    flip_w, flip_h = [True, False, True, False], [False, False, True, True]
    out = image.flip(lamina.tensor(x, dtype=np.float64), flip_w, flip_h).numpy()
    expected = [x[0, :, ::-1], x[1], x[2, ::-1, ::-1], x[3, ::-1]]
    np.testing.assert_array_equal(out, np.stack(expected))
    compare_with_torch(lambda t: image.flip(t, flip_w, flip_h),
                       lambda t: torch.stack([t[0].flip(1), t[1], t[2].flip(0, 1), t[3].flip(0)]), x)
    assert check_gradients(lambda t: image.flip(t, flip_w, flip_h), x)


def test_crop_windows_of_the_padded_images():
    x = _images(3, 6, 7)
    offsets = [(0, 0), (4, 1), (2, 5)]
    out = image.crop(lamina.tensor(x, dtype=np.float64), offsets, (5, 4), padding=(2, 1)).numpy()
    padded = np.pad(x, ((0, 0), (2, 2), (1, 1), (0, 0)))
    expected = np.stack([padded[i, r:r + 5, c:c + 4] for i, (r, c) in enumerate(offsets)])
    np.testing.assert_array_equal(out, expected)
    compare_with_torch(lambda t: image.crop(t, offsets, (5, 4), padding=(2, 1)),
                       lambda t: torch.stack([TF.pad(t[i], (0, 0, 1, 1, 2, 2))[r:r + 5, c:c + 4]
                                              for i, (r, c) in enumerate(offsets)]), x)
    assert check_gradients(lambda t: image.crop(t, offsets, (5, 4), padding=(2, 1)), x)


def _torch_rotate(angles, h, w):
    """PyTorch's affine_grid + grid_sample (bilinear, zeros, align_corners) for the same
    rotation: lamina's pixel formula in grid_sample's [-1, 1] coordinates."""
    a = np.deg2rad(np.asarray(angles, dtype=np.float64))
    theta = np.zeros((len(a), 2, 3))
    theta[:, 0, 0] = theta[:, 1, 1] = np.cos(a)
    theta[:, 0, 1] = -np.sin(a) * (h - 1) / (w - 1)
    theta[:, 1, 0] = np.sin(a) * (w - 1) / (h - 1)

    def fn(x):
        grid = TF.affine_grid(torch.tensor(theta, dtype=x.dtype), (x.shape[0], x.shape[3], h, w), align_corners=True)
        return _nhwc(TF.grid_sample(_nchw(x), grid, mode="bilinear", padding_mode="zeros", align_corners=True))
    return fn


@pytest.mark.parametrize("h, w", [(7, 7), (6, 9)])
def test_rotate_matches_torch_grid_sample(h, w):
    angles = [12.5, -40.0, 90.0]
    x = _images(3, h, w)
    compare_with_torch(lambda t: image.rotate(t, angles), _torch_rotate(angles, h, w), x)
    compare_with_torch(lambda t: image.rotate(t, angles), _torch_rotate(angles, h, w), x, dtype=np.float64)
    assert check_gradients(lambda t: image.rotate(t, angles), x[:, :5, :5])


def test_rotate_by_0_and_90_degrees():
    x = _images(2, 5, 5, 1)
    np.testing.assert_allclose(image.rotate(lamina.tensor(x, dtype=np.float64), [0, 0]).numpy(), x, atol=1e-15)
    turned = image.rotate(lamina.tensor(x, dtype=np.float64), [90, -90]).numpy()
    np.testing.assert_allclose(turned[0], np.rot90(x[0], 1), atol=1e-12)      # counterclockwise
    np.testing.assert_allclose(turned[1], np.rot90(x[1], -1), atol=1e-12)


def _torch_blur(sigmas, radius):
    taps = image.gaussian_kernels(sigmas, radius)

    def fn(x):
        c = x.shape[3]
        out = []
        for i in range(x.shape[0]):
            kernel = torch.tensor(np.outer(taps[i], taps[i]), dtype=x.dtype)[None, None].repeat(c, 1, 1, 1)
            padded = TF.pad(_nchw(x[i:i + 1]), (radius,) * 4, mode="reflect")
            out.append(_nhwc(TF.conv2d(padded, kernel, groups=c)))
        return torch.cat(out)
    return fn


def test_gaussian_blur_matches_torch_reflect_padded_convolution():
    x = _images(3, 9, 8, 3)
    sigmas = [0.7, 1.6, 0.0]
    compare_with_torch(lambda t: image.gaussian_blur(t, sigmas, 4), _torch_blur(sigmas, 4), x)
    assert check_gradients(lambda t: image.gaussian_blur(t, sigmas[:2], 2), x[:2, :6, :5])
    kernels = image.gaussian_kernels([0.0, 1.0], 3)
    np.testing.assert_allclose(kernels.sum(axis=1), 1.0)
    np.testing.assert_array_equal(kernels[0], [0, 0, 0, 1, 0, 0, 0])        # sigma 0: the identity
    blurred = image.gaussian_blur(lamina.tensor(x, dtype=np.float64), [0.0, 0.0, 0.0]).numpy()
    np.testing.assert_array_equal(blurred, x)


def test_colour_adjustments_follow_their_formulas():
    x = np.random.default_rng(1).random((3, 4, 5, 3))
    factors = [0.0, 1.0, 1.7]
    grey = (x * [0.299, 0.587, 0.114]).sum(axis=-1, keepdims=True)
    out = image.adjust_saturation(lamina.tensor(x, dtype=np.float64), factors).numpy()
    np.testing.assert_allclose(out[0], np.broadcast_to(grey[0], x[0].shape))
    np.testing.assert_allclose(out[1], x[1])
    np.testing.assert_allclose(out[2], grey[2] + 1.7 * (x[2] - grey[2]))
    mean = x.mean(axis=(1, 2), keepdims=True)
    out = image.adjust_contrast(lamina.tensor(x, dtype=np.float64), factors).numpy()
    np.testing.assert_allclose(out, mean + (x - mean) * np.reshape(factors, (3, 1, 1, 1)))
    out = image.adjust_brightness(lamina.tensor(x, dtype=np.float64), [0.1, -0.2, 0.0]).numpy()
    np.testing.assert_allclose(out, x + np.reshape([0.1, -0.2, 0.0], (3, 1, 1, 1)))
    for op in (image.adjust_saturation, image.adjust_contrast, image.adjust_brightness):
        assert check_gradients(lambda t, op=op: op(t, [0.5, 1.3, 2.0]), x)


def test_errors_name_the_op_and_the_shapes():
    x = np.zeros((2, 5, 5, 3))
    with pytest.raises(ShapeError, match=r"rotate: 3 angles for a batch of 2 images \(shape \(2, 5, 5, 3\)\)"):
        image.rotate(x, [1, 2, 3])
    with pytest.raises(ShapeError, match=r"flip: expected images of shape \(N, H, W, C\), got shape \(5, 5, 3\)"):
        image.flip(x[0], [True])
    with pytest.raises(ValueError, match="crop: offsets must keep the 4x4 window inside the 5x5 padded images"):
        image.crop(x, [(0, 0), (2, 0)], 4)
    with pytest.raises(ShapeError, match="crop: a 6x6 window does not fit images of 5x5"):
        image.crop(x, [(0, 0), (0, 0)], 6)
    with pytest.raises(ShapeError, match=r"adjust_saturation: expected RGB images \(3 channels\)"):
        image.adjust_saturation(x[..., :2], [1, 1])
    with pytest.raises(ShapeError, match="gaussian_blur: a radius of 6 pixels needs images larger than 5x5"):
        image.gaussian_blur(x, [2.0, 1.0])
    with pytest.raises(ValueError, match="gaussian_blur: sigmas must be >= 0"):
        image.gaussian_blur(x, [-1.0, 1.0])
