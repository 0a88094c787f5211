"""Image-quality metrics and the losses of image restoration and style transfer, on NHWC
batches: PSNR, SSIM (Wang et al. 2004), multi-scale SSIM (Wang et al. 2003), Gram matrices
(Gatys et al. 2016) and total variation.

SSIM follows torchmetrics' ``structural_similarity_index_measure`` (Gaussian window) and
scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False)``, which agree: local statistics are Gaussian-weighted means
over an 11x11 window (sigma 1.5, weights normalised to sum 1), variances are the
population ones E[x^2] - E[x]^2, and only the 'valid' positions (the window wholly inside
the image) are averaged; both libraries pad and then crop those borders away. Channels are
filtered separately and averaged with the pixels.

All are composites of differentiable ops, so gradients (and their derivatives) come for free.
"""

from __future__ import annotations

import math
import numbers

import numpy

from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.activation import relu
from lamina.functional.conv import conv2d

__all__ = ["MS_SSIM_WEIGHTS", "gaussian_window", "gram_matrix", "ms_ssim", "psnr", "ssim", "ssim_loss",
           "total_variation"]

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
"""The exponents of the five scales of MS-SSIM (Wang, Simoncelli & Bovik 2003), finest first."""


def _tensor(x) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(x)


def _check_pair(x: Tensor, y: Tensor, op: str) -> None:
    if len(x.shape) != 4 or tuple(x.shape) != tuple(y.shape):
        raise ShapeError(f"{op}: expected two image batches of the same shape (N, H, W, C), got shapes "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")


def _check_range(data_range: float, op: str) -> float:
    """``data_range`` as a float: any finite positive real number (NumPy scalars too; not a bool)."""
    ok = isinstance(data_range, numbers.Real) and not isinstance(data_range, (bool, numpy.bool_))
    if not (ok and math.isfinite(data_range) and data_range > 0):
        raise ValueError(f"{op}: data_range must be a positive number (the span of pixel values, 1.0 for "
                         f"[0, 1] images, 255 for bytes), got {data_range!r} of type {type(data_range).__name__}")
    return float(data_range)


def _reduce(per_image: Tensor, reduction: str, op: str) -> Tensor:
    if reduction == "mean":
        return per_image.mean()
    if reduction == "none":
        return per_image
    raise ValueError(f"{op}: reduction must be 'mean' or 'none', got {reduction!r}")


def psnr(x, y, data_range: float = 1.0, reduction: str = "mean") -> Tensor:
    """Peak signal-to-noise ratio in dB of each image of ``x`` against ``y`` (N, H, W, C):
    PSNR = 10 log10(data_range^2 / MSE), the MSE over the image's pixels and channels
    (torchmetrics' ``peak_signal_noise_ratio`` with ``dim=(1, 2, 3)``); averaged over the
    batch (``reduction='mean'``) or one per image (``'none'``). Identical images give +inf."""
    x, y = _tensor(x), _tensor(y)
    _check_pair(x, y, "psnr")
    data_range = _check_range(data_range, "psnr")
    mse = ((x - y) ** 2).mean(axis=(1, 2, 3))
    return _reduce(10.0 * (data_range ** 2 / mse).log10(), reduction, "psnr")


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype=numpy.float64) -> numpy.ndarray:
    """The 1-D Gaussian weights exp(-d^2 / (2 sigma^2)) at offsets d = -(size-1)/2 ..
    (size-1)/2 from the centre, normalised to sum 1; SSIM's window is its outer product."""
    if not (isinstance(size, int) and size >= 1 and size % 2 == 1):
        raise ValueError(f"gaussian_window: size must be a positive odd integer, got {size!r}")
    if not sigma > 0:
        raise ValueError(f"gaussian_window: sigma must be positive, got {sigma!r}")
    d = numpy.arange(size, dtype=numpy.float64) - (size - 1) / 2
    g = numpy.exp(-(d / sigma) ** 2 / 2)
    return (g / g.sum()).astype(dtype)


def _filter(x: Tensor, window: numpy.ndarray) -> Tensor:
    """The Gaussian-weighted local mean at each 'valid' position, channel by channel
    (separable: a vertical then a horizontal depthwise pass)."""
    c, k = x.shape[-1], len(window)
    vertical = numpy.ascontiguousarray(numpy.broadcast_to(window.reshape(1, k, 1, 1), (c, k, 1, 1)))
    horizontal = numpy.ascontiguousarray(numpy.broadcast_to(window.reshape(1, 1, k, 1), (c, 1, k, 1)))
    return conv2d(conv2d(x, vertical, groups=c), horizontal, groups=c)


def _ssim_maps(x: Tensor, y: Tensor, data_range: float, window: numpy.ndarray, k1: float, k2: float):
    """The SSIM map l * cs and the contrast-structure map cs at every valid position."""
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mu_x, mu_y = _filter(x, window), _filter(y, window)
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    var_x = _filter(x * x, window) - mu_xx
    var_y = _filter(y * y, window) - mu_yy
    cov = _filter(x * y, window) - mu_xy
    cs = (2.0 * cov + c2) / (var_x + var_y + c2)
    luminance = (2.0 * mu_xy + c1) / (mu_xx + mu_yy + c1)
    return luminance * cs, cs


def _check_window_fits(shape, kernel_size: int, op: str, detail: str = "") -> None:
    if shape[1] < kernel_size or shape[2] < kernel_size:
        raise ShapeError(f"{op}: images of {shape[1]}x{shape[2]}{detail} are smaller than the "
                         f"{kernel_size}x{kernel_size} window")


def _setup(x, y, data_range, kernel_size, sigma, op):
    """The images as tensors, the window and ``data_range`` as a float, once checked."""
    x, y = _tensor(x), _tensor(y)
    _check_pair(x, y, op)
    if x.shape[-1] == 0:
        raise ShapeError(f"{op}: images need at least one channel, got shape {tuple(x.shape)}")
    data_range = _check_range(data_range, op)
    window = gaussian_window(kernel_size, sigma, numpy.result_type(x.dtype, y.dtype))
    return x, y, window, data_range


def ssim(x, y, data_range: float = 1.0, kernel_size: int = 11, sigma: float = 1.5, k1: float = 0.01,
         k2: float = 0.03, reduction: str = "mean") -> Tensor:
    """Structural similarity (Wang, Bovik, Sheikh & Simoncelli 2004) of ``x`` and ``y`` (N, H, W, C).

    With Gaussian-weighted local means mu, variances sigma^2 and covariance sigma_xy
    (window ``kernel_size`` square, std ``sigma``), C1 = (k1 L)^2, C2 = (k2 L)^2, L = data_range:

        SSIM = (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2))

    averaged over the valid positions and the channels of each image (conventions in the
    module docstring), then over the batch (``reduction='mean'``) or not (``'none'``).
    1 for identical images."""
    x, y, window, data_range = _setup(x, y, data_range, kernel_size, sigma, "ssim")
    _check_window_fits(x.shape, kernel_size, "ssim")
    ssim_map, _ = _ssim_maps(x, y, data_range, window, k1, k2)
    return _reduce(ssim_map.mean(axis=(1, 2, 3)), reduction, "ssim")


def ssim_loss(x, y, data_range: float = 1.0, kernel_size: int = 11, sigma: float = 1.5, k1: float = 0.01,
              k2: float = 0.03, reduction: str = "mean") -> Tensor:
    """1 - :func:`ssim`, a loss for restoration models (0 when the images are equal)."""
    return 1.0 - ssim(x, y, data_range, kernel_size, sigma, k1, k2, reduction)


def _halve(x: Tensor) -> Tensor:
    """2x2 average pooling, stride 2, the odd last row/column dropped (PyTorch's avg_pool2d(2))."""
    n, h, w, c = x.shape
    h2, w2 = h // 2, w // 2
    return x[:, :2 * h2, :2 * w2, :].reshape(n, h2, 2, w2, 2, c).mean(axis=(2, 4))


def ms_ssim(x, y, data_range: float = 1.0, kernel_size: int = 11, sigma: float = 1.5, k1: float = 0.01,
            k2: float = 0.03, weights=MS_SSIM_WEIGHTS, reduction: str = "mean") -> Tensor:
    """Multi-scale SSIM (Wang, Simoncelli & Bovik 2003), as torchmetrics'
    ``multiscale_structural_similarity_index_measure`` (``normalize='relu'``).

    Scale j = 1..M (M = len(weights)) sees the images 2x2-average-pooled j - 1 times. Per image,
    cs_j is the mean contrast-structure term (2 sigma_xy + C2) / (sigma_x^2 + sigma_y^2 + C2) at
    scales 1..M-1 and s_M the full SSIM at the coarsest one; with negatives clipped to 0:

        MS-SSIM = s_M^{w_M} prod_{j<M} cs_j^{w_j}

    The coarsest scale must still hold a window: H // 2^(M-1) and W // 2^(M-1) >= kernel_size
    (176 pixels for the default 11x11 window and 5 scales)."""
    x, y, window, data_range = _setup(x, y, data_range, kernel_size, sigma, "ms_ssim")
    scales = len(weights)
    if scales < 1:
        raise ValueError("ms_ssim: weights must hold one exponent per scale, got none")
    factor = 2 ** (scales - 1)
    if x.shape[1] // factor < kernel_size or x.shape[2] // factor < kernel_size:
        raise ShapeError(f"ms_ssim: images of {x.shape[1]}x{x.shape[2]} are too small for {scales} scales with a "
                         f"{kernel_size}x{kernel_size} window: the coarsest scale would be "
                         f"{x.shape[1] // factor}x{x.shape[2] // factor}; each side needs at least "
                         f"{kernel_size * factor} pixels")
    result = None
    for j, weight in enumerate(weights):
        ssim_map, cs_map = _ssim_maps(x, y, data_range, window, k1, k2)
        last = j == scales - 1
        term = relu((ssim_map if last else cs_map).mean(axis=(1, 2, 3))) ** float(weight)
        result = term if result is None else result * term
        if not last:
            x, y = _halve(x), _halve(y)
    return _reduce(result, reduction, "ms_ssim")


_GRAM_NORMALIZATIONS = ("hwc", "hw", "none")


def gram_matrix(features, normalize: str = "hwc") -> Tensor:
    """Gram matrices of feature maps (N, H, W, C): with F the (H W, C) matrix of one image's
    features, G = F^T F / d, a (C, C) matrix of channel correlations per image, shape (N, C, C).
    d = H W C (``'hwc'``, Johnson et al. 2016), H W (``'hw'``) or 1 (``'none'``, Gatys et al. 2016)."""
    features = _tensor(features)
    if len(features.shape) != 4:
        raise ShapeError(f"gram_matrix: expected feature maps of shape (N, H, W, C), got shape "
                         f"{tuple(features.shape)}")
    if normalize not in _GRAM_NORMALIZATIONS:
        raise ValueError(f"gram_matrix: normalize must be one of {_GRAM_NORMALIZATIONS}, got {normalize!r}")
    n, h, w, c = features.shape
    f = features.reshape(n, h * w, c)
    gram = f.transpose(0, 2, 1) @ f
    divisor = {"hwc": h * w * c, "hw": h * w, "none": 1}[normalize]
    return gram if divisor == 1 else gram / float(divisor)


def total_variation(x, reduction: str = "sum", squared: bool = False) -> Tensor:
    """Anisotropic total variation of images (N, H, W, C): the sum over each image of
    |x[i+1, j] - x[i, j]| + |x[i, j+1] - x[i, j]| (their squares with ``squared``, the
    form of Mahendran & Vedaldi used by fast style transfer); ``reduction`` 'sum' (over the
    batch, as torchmetrics' ``total_variation``), 'mean' or 'none' (one per image)."""
    x = _tensor(x)
    if len(x.shape) != 4:
        raise ShapeError(f"total_variation: expected images of shape (N, H, W, C), got shape {tuple(x.shape)}")
    dh = x[:, 1:, :, :] - x[:, :-1, :, :]
    dw = x[:, :, 1:, :] - x[:, :, :-1, :]
    if squared:
        per_image = (dh * dh).sum(axis=(1, 2, 3)) + (dw * dw).sum(axis=(1, 2, 3))
    else:
        per_image = dh.abs().sum(axis=(1, 2, 3)) + dw.abs().sum(axis=(1, 2, 3))
    if reduction == "sum":
        return per_image.sum()
    if reduction not in ("mean", "none"):
        raise ValueError(f"total_variation: reduction must be 'sum', 'mean' or 'none', got {reduction!r}")
    return _reduce(per_image, reduction, "total_variation")
