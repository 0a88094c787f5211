"""Checks and reshapes shared by the forecasters."""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn.layer import check_shape_ndim, input_error


def check_rate(value, who: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{who} must be a number in [0, 1), got {value!r}")
    return float(value)


def window_shape(model, shape, length: int | None, channels: int | None) -> tuple:
    """``shape`` checked to be (batch, input_length, channels)."""
    expected = f"(batch, {length if length else 'steps'}, {channels if channels else 'channels'})"
    shape = check_shape_ndim(model, shape, 3, expected)
    if (length is not None and shape[1] not in (None, length)) or \
            (channels is not None and shape[2] not in (None, channels)):
        raise ShapeError(f"{model._label()}: got an input of shape {tuple(shape)}; expected {expected} "
                         f"(the model was made for input_length={length}, channels={channels})")
    return shape


def check_window(model, x: Tensor, length: int | None, channels: int | None) -> None:
    if x.ndim != 3 or (length is not None and x.shape[1] != length) or \
            (channels is not None and x.shape[2] != channels):
        raise input_error(model, x, f"(batch, {length or 'steps'}, {channels or 'channels'})")


def per_channel(x: Tensor) -> Tensor:
    """(N, L, C) -> (N C, L): every channel its own univariate series."""
    n, length, c = x.shape
    return F.reshape(F.transpose(x, (0, 2, 1)), (n * c, length))


def from_per_channel(y: Tensor, channels: int) -> Tensor:
    """(N C, H) -> (N, H, C)."""
    rows, horizon = y.shape
    return F.transpose(F.reshape(y, (rows // channels, channels, horizon)), (0, 2, 1))


def constant_tensor(array: np.ndarray, dtype) -> Tensor:
    return Tensor._wrap(backend.xp.asarray(array.astype(dtype)))
