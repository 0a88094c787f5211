"""Real-ESRGAN's image degradations (Wang, Xie, Dong & Shan 2021), as NumPy transforms of NHWC
batches with values in [0, 1].

Blur kernels, on a k x k grid of offsets p = (x, y) from the centre (x along the width), all
normalised to sum 1, with Sigma = R(theta) diag(sigma_x^2, sigma_y^2) R(theta)^T:

* Gaussian: k(p) ~ exp(-1/2 p^T Sigma^-1 p) (isotropic when sigma_x = sigma_y);
* generalized Gaussian: k(p) ~ exp(-1/2 (p^T Sigma^-1 p)^beta) (beta < 1 heavier tails);
* plateau: k(p) ~ 1 / (1 + (p^T Sigma^-1 p)^beta) (a flat top);
* sinc (an ideal low-pass of cut-off omega_c, for ringing and overshoot):
  k(p) ~ omega_c J_1(omega_c |p|) / (2 pi |p|), omega_c^2 / (4 pi) at the centre.

Noise: Gaussian N(0, sigma^2) and Poisson (Poisson(255 x) / 255 - x, scaled), per colour
channel or one grey map shared by the channels. Resizing uses
:func:`lamina.functional.interpolate` ('area', 'bilinear', 'bicubic').

:class:`RealESRGANDegradation` applies the paper's second-order model to high-resolution
images: (blur, random resize, noise) twice with the paper's parameter ranges, then a resize to
(H / scale, W / scale) and, with probability 0.8, the final sinc filter; every draw comes from
one ``numpy.random.Generator`` (a seed gives the same result). JPEG compression is left out:
lamina has no JPEG codec.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy
from scipy.special import j1

from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.interpolate import interpolate

__all__ = [
    "RESIZE_MODES", "RealESRGANDegradation", "anisotropic_gaussian_kernel", "filter2d", "gaussian_noise",
    "generalized_gaussian_kernel", "isotropic_gaussian_kernel", "kernel_covariance", "plateau_kernel",
    "poisson_noise", "random_blur_kernel", "resize", "sinc_kernel",
]

RESIZE_MODES = ("area", "bilinear", "bicubic")


def _size(size, who: str) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, numpy.integer)) or size < 1 or size % 2 == 0:
        raise ValueError(f"{who}: kernel size must be an odd positive integer, got {size!r}")
    return int(size)


def _quadratic_form(size: int, sigma_x: float, sigma_y: float, theta: float, who: str) -> numpy.ndarray:
    """p^T Sigma^-1 p on the size x size grid of offsets (rows: y, columns: x)."""
    if not (sigma_x > 0 and sigma_y > 0):
        raise ValueError(f"{who}: sigmas must be positive, got sigma_x={sigma_x!r}, sigma_y={sigma_y!r}")
    inverse = numpy.linalg.inv(kernel_covariance(sigma_x, sigma_y, theta))
    r = numpy.arange(size, dtype=numpy.float64) - size // 2
    x, y = numpy.meshgrid(r, r)
    p = numpy.stack([x, y], axis=-1)
    return numpy.einsum("...i,ij,...j->...", p, inverse, p)


def _normalised(kernel: numpy.ndarray) -> numpy.ndarray:
    return (kernel / kernel.sum()).astype(numpy.float32)


def kernel_covariance(sigma_x: float, sigma_y: float, theta: float = 0.0) -> numpy.ndarray:
    """Sigma = R diag(sigma_x^2, sigma_y^2) R^T, R the rotation by ``theta`` (radians): (2, 2)."""
    c, s = numpy.cos(theta), numpy.sin(theta)
    rotation = numpy.array([[c, -s], [s, c]])
    return rotation @ numpy.diag([sigma_x ** 2, sigma_y ** 2]) @ rotation.T


def isotropic_gaussian_kernel(size: int, sigma: float) -> numpy.ndarray:
    """k(p) ~ exp(-|p|^2 / (2 sigma^2)) on a ``size`` x ``size`` grid, summing to 1."""
    return anisotropic_gaussian_kernel(size, sigma, sigma, 0.0)


def anisotropic_gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float) -> numpy.ndarray:
    """k(p) ~ exp(-1/2 p^T Sigma^-1 p), Sigma from :func:`kernel_covariance`, summing to 1."""
    size = _size(size, "anisotropic_gaussian_kernel")
    return _normalised(numpy.exp(-0.5 * _quadratic_form(size, sigma_x, sigma_y, theta,
                                                        "anisotropic_gaussian_kernel")))


def generalized_gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float,
                                beta: float) -> numpy.ndarray:
    """k(p) ~ exp(-1/2 (p^T Sigma^-1 p)^beta), summing to 1 (beta = 1: the Gaussian)."""
    size = _size(size, "generalized_gaussian_kernel")
    if not beta > 0:
        raise ValueError(f"generalized_gaussian_kernel: beta must be positive, got {beta!r}")
    q = _quadratic_form(size, sigma_x, sigma_y, theta, "generalized_gaussian_kernel")
    return _normalised(numpy.exp(-0.5 * q ** beta))


def plateau_kernel(size: int, sigma_x: float, sigma_y: float, theta: float, beta: float) -> numpy.ndarray:
    """k(p) ~ 1 / (1 + (p^T Sigma^-1 p)^beta), summing to 1."""
    size = _size(size, "plateau_kernel")
    if not beta > 0:
        raise ValueError(f"plateau_kernel: beta must be positive, got {beta!r}")
    return _normalised(1.0 / (1.0 + _quadratic_form(size, sigma_x, sigma_y, theta, "plateau_kernel") ** beta))


def sinc_kernel(size: int, cutoff: float) -> numpy.ndarray:
    """The 2-D ideal low-pass of cut-off ``cutoff`` (omega_c, radians per pixel, in (0, pi]):
    omega_c J_1(omega_c r) / (2 pi r) at radius r, omega_c^2 / (4 pi) at r = 0; summing to 1."""
    size = _size(size, "sinc_kernel")
    if not 0 < cutoff <= numpy.pi:
        raise ValueError(f"sinc_kernel: cutoff must be in (0, pi], got {cutoff!r}")
    r = numpy.arange(size, dtype=numpy.float64) - size // 2
    radius = numpy.hypot(*numpy.meshgrid(r, r))
    safe = numpy.where(radius == 0, 1.0, radius)
    kernel = numpy.where(radius == 0, cutoff ** 2 / (4 * numpy.pi), cutoff * j1(cutoff * safe) / (2 * numpy.pi * safe))
    return _normalised(kernel)


def _batch(images, who: str) -> tuple[numpy.ndarray, bool]:
    values = numpy.asarray(images.data if isinstance(images, Tensor) else images)
    if values.ndim not in (3, 4):
        raise ShapeError(f"{who}: expected images of shape (N, H, W, C) or (H, W, C), got shape {values.shape}")
    dtype = values.dtype if values.dtype.kind == "f" else numpy.float32
    values = values.astype(dtype, copy=False)
    return (values, False) if values.ndim == 4 else (values[None], True)


def filter2d(images, kernel) -> numpy.ndarray:
    """Each channel of ``images`` ((N, H, W, C) or (H, W, C)) filtered by the odd square ``kernel``:
    out[y, x] = sum_{i,j} kernel[i, j] in[y + i - k//2, x + j - k//2] (a correlation, which is the
    convolution for the point-symmetric blur kernels), with reflection padding; same shape."""
    values, single = _batch(images, "filter2d")
    kernel = numpy.asarray(kernel, dtype=values.dtype)
    if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1] or kernel.shape[0] % 2 == 0:
        raise ShapeError(f"filter2d: expected an odd square 2-D kernel, got shape {kernel.shape}")
    half = kernel.shape[0] // 2
    h, w = values.shape[1:3]
    mode = "reflect" if half < min(h, w) else "symmetric"
    padded = numpy.pad(values, ((0, 0), (half, half), (half, half), (0, 0)), mode=mode)
    out = numpy.zeros_like(values)
    for i in range(kernel.shape[0]):
        for j in range(kernel.shape[1]):
            out += kernel[i, j] * padded[:, i:i + h, j:j + w]
    return out[0] if single else out


def resize(images, size: tuple[int, int], mode: str = "bicubic") -> numpy.ndarray:
    """``images`` ((N, H, W, C) or (H, W, C)) resized to ``size`` = (H', W') by
    :func:`lamina.functional.interpolate` with ``mode`` ('area', 'bilinear' or 'bicubic')."""
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize: mode must be one of {RESIZE_MODES}, got {mode!r}")
    values, single = _batch(images, "resize")
    out = interpolate(Tensor(values, dtype=values.dtype), size=tuple(int(s) for s in size), mode=mode).numpy()
    return out[0] if single else out


def _grey(values: numpy.ndarray) -> numpy.ndarray:
    if values.shape[-1] != 3:
        return values.mean(axis=-1, keepdims=True)
    return values @ numpy.array([[0.299], [0.587], [0.114]], dtype=values.dtype)


def gaussian_noise(images, sigma: float, gray: bool = False, rng=None) -> numpy.ndarray:
    """``images`` + N(0, sigma^2) noise, one draw per value, or (``gray``) one per pixel shared by
    the channels; not clipped."""
    values, single = _batch(images, "gaussian_noise")
    rng = numpy.random.default_rng(rng)
    shape = values.shape[:3] + (1,) if gray else values.shape
    out = values + (sigma * rng.standard_normal(shape)).astype(values.dtype)
    return out[0] if single else out


def poisson_noise(images, scale: float, gray: bool = False, rng=None, levels: int = 255) -> numpy.ndarray:
    """``images`` + ``scale`` (Poisson(levels x) / levels - x): shot noise of images with ``levels``
    grey levels, per channel, or (``gray``) drawn from the luma (0.299 R + 0.587 G + 0.114 B)
    and shared by the channels; not clipped. Expects values >= 0."""
    values, single = _batch(images, "poisson_noise")
    rng = numpy.random.default_rng(rng)
    source = numpy.clip(_grey(values) if gray else values, 0, None)
    noise = rng.poisson(source * levels) / float(levels) - source
    out = values + (scale * noise).astype(values.dtype)
    return out[0] if single else out


def random_blur_kernel(rng, size: int, sigma_range=(0.2, 3.0), probabilities=(0.45, 0.25, 0.12, 0.03, 0.12, 0.03),
                       beta_range=(0.5, 4.0), plateau_beta_range=(1.0, 2.0)) -> numpy.ndarray:
    """One of Real-ESRGAN's blur kernels, drawn with ``probabilities`` over (isotropic Gaussian,
    anisotropic Gaussian, isotropic / anisotropic generalized Gaussian, isotropic / anisotropic
    plateau); sigmas uniform in ``sigma_range``, theta uniform in [-pi, pi]."""
    rng = numpy.random.default_rng(rng)
    kind = int(rng.choice(6, p=numpy.asarray(probabilities) / numpy.sum(probabilities)))
    sigma_x = rng.uniform(*sigma_range)
    sigma_y, theta = (sigma_x, 0.0) if kind % 2 == 0 else (rng.uniform(*sigma_range), rng.uniform(-numpy.pi,
                                                                                                 numpy.pi))
    if kind < 2:
        return anisotropic_gaussian_kernel(size, sigma_x, sigma_y, theta)
    if kind < 4:
        return generalized_gaussian_kernel(size, sigma_x, sigma_y, theta, rng.uniform(*beta_range))
    return plateau_kernel(size, sigma_x, sigma_y, theta, rng.uniform(*plateau_beta_range))


@dataclass
class RealESRGANDegradation:
    """Real-ESRGAN's second-order degradation; the defaults are the paper's x4 settings. Call it
    as ``degrade(hr, seed)`` on (N, H, W, C) or (H, W, C) images in [0, 1] (H and W multiples
    of ``scale``) to get (N, H / scale, W / scale, C) low-resolution images in [0, 1].

    Each of the two stages: blur (probability ``blur_prob`` / ``second_blur_prob``, a kernel
    of odd size in [7, 21] from :func:`random_blur_kernel`, or with ``sinc_prob`` a sinc kernel),
    a resize by a factor drawn up / down / kept with ``resize_prob`` from ``resize_range`` (of the
    previous size; the second stage's from the target size) in a random mode, then Gaussian
    noise (``gaussian_noise_prob``, sigma in ``noise_range`` / 255) or else Poisson noise
    (scale in ``poisson_scale_range``), grey with ``gray_noise_prob``, clipped to [0, 1]. Last:
    the resize to the target size and, with ``final_sinc_prob``, a sinc filter."""

    scale: int = 4
    blur_prob: float = 1.0
    sinc_prob: float = 0.1
    sigma_range: tuple = (0.2, 3.0)
    resize_prob: tuple = (0.2, 0.7, 0.1)
    resize_range: tuple = (0.15, 1.5)
    gaussian_noise_prob: float = 0.5
    noise_range: tuple = (1.0, 30.0)
    poisson_scale_range: tuple = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    second_blur_prob: float = 0.8
    second_sinc_prob: float = 0.1
    second_sigma_range: tuple = (0.2, 1.5)
    second_resize_prob: tuple = (0.3, 0.4, 0.3)
    second_resize_range: tuple = (0.3, 1.2)
    second_noise_range: tuple = (1.0, 25.0)
    second_poisson_scale_range: tuple = (0.05, 2.5)
    final_sinc_prob: float = 0.8

    def _blur(self, values, rng, prob, sinc_prob, sigma_range):
        if rng.uniform() >= prob:
            return values
        size = int(2 * rng.integers(3, 11) + 1)
        if rng.uniform() < sinc_prob:
            low = numpy.pi / 3 if size < 13 else numpy.pi / 5
            return filter2d(values, sinc_kernel(size, rng.uniform(low, numpy.pi)))
        return filter2d(values, random_blur_kernel(rng, size, sigma_range))

    def _resize(self, values, rng, base, probabilities, factor_range):
        direction = int(rng.choice(3, p=numpy.asarray(probabilities) / numpy.sum(probabilities)))
        factor = (rng.uniform(1, factor_range[1]) if direction == 0 else
                  rng.uniform(factor_range[0], 1) if direction == 1 else 1.0)
        size = tuple(max(1, int(n * factor)) for n in base)
        return resize(values, size, str(rng.choice(RESIZE_MODES)))

    def _noise(self, values, rng, sigma_range, poisson_range):
        gray = bool(rng.uniform() < self.gray_noise_prob)
        if rng.uniform() < self.gaussian_noise_prob:
            values = gaussian_noise(values, rng.uniform(*sigma_range) / 255.0, gray, rng)
        else:
            values = poisson_noise(values, rng.uniform(*poisson_range), gray, rng)
        return numpy.clip(values, 0.0, 1.0)

    def __call__(self, images, seed=None) -> numpy.ndarray:
        values, single = _batch(images, "RealESRGANDegradation")
        h, w = values.shape[1:3]
        if h % self.scale or w % self.scale:
            raise ShapeError(f"RealESRGANDegradation: images of {h}x{w} are not multiples of the scale {self.scale}")
        rng = numpy.random.default_rng(seed)
        target = (h // self.scale, w // self.scale)
        out = self._blur(values, rng, self.blur_prob, self.sinc_prob, self.sigma_range)
        out = self._resize(out, rng, (h, w), self.resize_prob, self.resize_range)
        out = self._noise(out, rng, self.noise_range, self.poisson_scale_range)
        out = self._blur(out, rng, self.second_blur_prob, self.second_sinc_prob, self.second_sigma_range)
        out = self._resize(out, rng, target, self.second_resize_prob, self.second_resize_range)
        out = self._noise(out, rng, self.second_noise_range, self.second_poisson_scale_range)
        out = resize(out, target, str(rng.choice(RESIZE_MODES)))
        if rng.uniform() < self.final_sinc_prob:
            size = int(2 * rng.integers(3, 11) + 1)
            out = filter2d(out, sinc_kernel(size, rng.uniform(numpy.pi / 3, numpy.pi)))
        out = numpy.clip(out, 0.0, 1.0).astype(values.dtype)
        return out[0] if single else out
