"""GaussianImage (Zhang et al. 2024): an image represented by N 2-D Gaussians drawn by
:func:`lamina.functional.rasterize_gaussians_2d`, the explicit alternative to a coordinate
network (SIREN, Fourier features, hash grids) for fitting one image.

Each Gaussian keeps an unconstrained position q in R^2 (its mean is (tanh(q) + 1) / 2 times
(width, height), inside the image), log-scales (its scales are exp(log_scales) > 0, so the
covariance R S S^T R^T is always positive definite), a rotation angle, a colour (C values) and
an opacity logit (opacity = sigmoid(logit)). It starts with uniform random means, isotropic
scales of ``init_scale`` pixels (half the spacing of N points spread over the image when not
given), random colours in [0, 1) and opacities sigmoid(2) ~ 0.88.

:meth:`GaussianImage.fit` trains every parameter by Adam on the mean squared error. The
adaptive density control of 3-D splatting (splitting, cloning and pruning Gaussians) is not
done: N stays fixed.
"""

from __future__ import annotations

import math

import numpy

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int
from lamina.nn.module import Module
from lamina.nn.parameter import Parameter

__all__ = ["GaussianImage"]


@register_with_arguments
class GaussianImage(Module):
    """``num_gaussians`` Gaussians that draw a ``height`` x ``width`` image of ``channels``
    channels; ``mode`` "sum" (GaussianImage's accumulated blending) or "alpha" (front-to-back
    compositing). Calling it (no inputs) returns the image (height, width, channels)."""

    def __init__(self, num_gaussians: int, height: int, width: int, channels: int = 3, mode: str = "sum",
                 init_scale: float | None = None, tile_size: int = 4096, seed: int | None = None,
                 dtype: str = "float32", name: str | None = None):
        super().__init__(name=name)
        self.num_gaussians = positive_int(num_gaussians, "GaussianImage: num_gaussians")
        self.height = positive_int(height, "GaussianImage: height")
        self.width = positive_int(width, "GaussianImage: width")
        self.channels = positive_int(channels, "GaussianImage: channels")
        self.tile_size = positive_int(tile_size, "GaussianImage: tile_size")
        if mode not in ("sum", "alpha"):
            raise ValueError(f"GaussianImage: mode must be 'sum' or 'alpha', got {mode!r}")
        self.mode = mode
        if init_scale is None:
            init_scale = 0.5 * math.sqrt(height * width / num_gaussians)
        if not init_scale > 0:
            raise ValueError(f"GaussianImage: init_scale must be > 0, got {init_scale!r}")
        dtype = numpy.dtype(dtype)
        rng = numpy.random.default_rng(seed)
        means = rng.uniform(0.02, 0.98, size=(num_gaussians, 2))
        values = {
            "positions": numpy.arctanh(2.0 * means - 1.0),
            "log_scales": numpy.full((num_gaussians, 2), math.log(init_scale)),
            "rotations": rng.uniform(0.0, math.pi, size=num_gaussians),
            "colors": rng.uniform(0.0, 1.0, size=(num_gaussians, channels)),
            "opacity_logits": numpy.full(num_gaussians, 2.0),
        }
        for key, value in values.items():
            setattr(self, key, Parameter(backend.xp.asarray(value, dtype=dtype), dtype=dtype))
        self.built = True                  # it takes no inputs: nothing is left to build on a first call

    def means(self) -> Tensor:
        """The means (N, 2) in pixel units (x, y)."""
        size = backend.xp.asarray([self.width, self.height], dtype=self.positions.dtype)
        return (F.tanh(self.positions) + 1.0) * 0.5 * Tensor._wrap(size)

    def forward(self) -> Tensor:
        return F.rasterize_gaussians_2d(self.means(), (F.exp(self.log_scales), self.rotations), self.colors,
                                        F.sigmoid(self.opacity_logits), self.height, self.width, mode=self.mode,
                                        tile_size=self.tile_size)

    def fit(self, image, steps: int = 300, lr: float = 0.01, data_range: float = 1.0, log_every: int = 1) -> dict:
        """Adam on the mean squared error between ``self()`` and ``image`` ((H, W) or (H, W, C))
        for ``steps`` updates. Returns ``{'psnr': [...], 'loss': [...], 'steps': [...],
        'prediction': (H, W, C) array}``: PSNR = 10 log10(data_range^2 / MSE) and the loss every
        ``log_every`` steps (before that update), then after the last one."""
        from lamina.optim import Adam  # the optimisers do not sit below lamina.models

        target = numpy.asarray(backend.to_numpy(image.data if isinstance(image, Tensor) else image))
        if target.ndim == 2:
            target = target[..., None]
        expected = (self.height, self.width, self.channels)
        if target.shape != expected:
            raise ShapeError(f"GaussianImage.fit: expected an image {expected} (or (H, W) for one channel), "
                             f"got shape {numpy.shape(image)}")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"GaussianImage.fit: steps must be a positive int, got {steps!r}")
        target = Tensor(target.astype(self.colors.dtype), dtype=self.colors.dtype)
        optimizer = Adam([p for p in self.parameters() if p.requires_grad], lr=lr)
        history: dict = {"psnr": [], "loss": [], "steps": []}
        for step in range(steps):
            optimizer.zero_grad()
            error = self() - target
            loss = (error * error).mean()
            if step % log_every == 0:
                _log(history, step, float(loss.data), data_range)
            loss.backward()
            optimizer.step()
        prediction = backend.to_numpy(self().data)
        _log(history, steps, float(numpy.mean((prediction - backend.to_numpy(target.data)) ** 2)), data_range)
        history["prediction"] = prediction
        return history


def _log(history: dict, step: int, mse: float, data_range: float) -> None:
    history["steps"].append(step)
    history["loss"].append(mse)
    history["psnr"].append(math.inf if mse == 0 else 10.0 * math.log10(data_range ** 2 / mse))
