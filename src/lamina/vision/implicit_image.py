"""Images as functions of their coordinates: the pixel grid in [-1, 1] and :func:`fit_image`,
which trains a coordinate network (a :class:`lamina.nn.Siren`, a Fourier-features MLP, ...)
to reproduce one image, reporting the PSNR as it goes."""

from __future__ import annotations

import math

import numpy

from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn.module import Module

__all__ = ["fit_image", "image_coordinates"]


def image_coordinates(height: int, width: int | None = None, flatten: bool = True,
                      dtype=numpy.float32) -> numpy.ndarray:
    """The points of a ``height`` x ``width`` grid (square by default) as (row, column) pairs
    running from -1 to 1 on each axis (``numpy.linspace(-1, 1, n)``): (height width, 2) in
    row-major order, the order of ``image.reshape(-1, channels)``, or (height, width, 2) with
    ``flatten=False``."""
    width = height if width is None else width
    for what, size in (("height", height), ("width", width)):
        if isinstance(size, bool) or not isinstance(size, (int, numpy.integer)) or size < 1:
            raise ValueError(f"image_coordinates: {what} must be a positive int, got {size!r}")
    rows, cols = numpy.meshgrid(numpy.linspace(-1.0, 1.0, height), numpy.linspace(-1.0, 1.0, width), indexing="ij")
    grid = numpy.stack([rows, cols], axis=-1).astype(dtype)
    return grid.reshape(-1, 2) if flatten else grid


def fit_image(model: Module, image, steps: int = 300, lr: float = 1e-3, data_range: float = 1.0,
              log_every: int = 1) -> dict:
    """Train ``model`` (coordinates (n, 2) -> values (n, c)) by Adam on the mean squared error
    to reproduce ``image`` ((H, W) or (H, W, C) values, e.g. in [0, 1]) at
    :func:`image_coordinates`, full batch, for ``steps`` updates.

    Returns ``{'psnr': [...], 'loss': [...], 'steps': [...], 'prediction': (H, W, C) array}``:
    the PSNR (10 log10(data_range^2 / MSE)) and loss every ``log_every`` steps (before each
    such update), and the model's output after the last one."""
    from lamina.optim import Adam  # the optimisers sit above lamina.vision

    image = numpy.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3:
        raise ShapeError(f"fit_image: expected an image (H, W) or (H, W, C), got shape {image.shape}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"fit_image: steps must be a positive int, got {steps!r}")
    height, width, channels = image.shape
    dtype = image.dtype if image.dtype.kind == "f" else numpy.float32
    coords = Tensor(image_coordinates(height, width, dtype=dtype), dtype=dtype)
    target = Tensor(image.reshape(-1, channels).astype(dtype), dtype=dtype)
    first = model(coords)
    if tuple(first.shape) != tuple(target.shape):
        raise ShapeError(f"fit_image: the model maps coordinates {tuple(coords.shape)} to {tuple(first.shape)}; "
                         f"expected {tuple(target.shape)}, one value per channel of the image {image.shape}")
    optimizer = Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    history: dict = {"psnr": [], "loss": [], "steps": []}
    for step in range(steps):
        optimizer.zero_grad()
        error = model(coords) - target
        loss = (error * error).mean()
        if step % log_every == 0:
            _log(history, step, float(loss.data), data_range)
        loss.backward()
        optimizer.step()
    prediction = model(coords).data
    _log(history, steps, float(numpy.mean((prediction - target.data) ** 2)), data_range)
    history["prediction"] = prediction.reshape(height, width, channels)
    return history


def _log(history: dict, step: int, mse: float, data_range: float) -> None:
    history["steps"].append(step)
    history["loss"].append(mse)
    history["psnr"].append(math.inf if mse == 0 else 10.0 * math.log10(data_range ** 2 / mse))
