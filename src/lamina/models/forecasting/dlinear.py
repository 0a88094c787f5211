"""DLinear (Zeng et al., 2023): a moving-average decomposition and one linear map per part."""

from __future__ import annotations

import numpy as np

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor
from lamina.models.blocks import Block
from lamina.models.forecasting._common import check_window, constant_tensor, window_shape
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import as_tensor


def moving_average_matrix(length: int, kernel_size: int) -> np.ndarray:
    """A (length, length) with trend = A x the centred moving average of ``kernel_size`` (odd)
    steps, the series extended by repeating its first and last values (DLinear's padding):

        trend_t = (1 / k) sum_{j = -p .. p} x_{clip(t + j, 0, length - 1)},   p = (k - 1) / 2
    """
    half = (kernel_size - 1) // 2
    matrix = np.zeros((length, length))
    rows = np.repeat(np.arange(length), kernel_size)
    columns = np.clip(rows + np.tile(np.arange(-half, half + 1), length), 0, length - 1)
    np.add.at(matrix, (rows, columns), 1.0 / kernel_size)
    return matrix


@register_layer
class DLinear(Block):
    """DLinear: (batch, input_length, channels) -> (batch, horizon, channels), per channel

        trend = A x  (:func:`moving_average_matrix` of ``kernel_size``),   remainder = x - trend
        y = W_s remainder + b_s + W_t trend + b_t

    with W_s, W_t (horizon, input_length) shared by the channels (Dense layers ``seasonal`` and
    ``trend`` over the time axis)."""

    default_name = "dlinear"

    def __init__(self, input_length: int, horizon: int, channels: int = 1, kernel_size: int = 25,
                 name: str | None = None):
        super().__init__(name=name)
        self.input_length = positive_int(input_length, "DLinear: input_length")
        self.horizon = positive_int(horizon, "DLinear: horizon")
        self.channels = positive_int(channels, "DLinear: channels")
        self.kernel_size = positive_int(kernel_size, "DLinear: kernel_size")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"DLinear: kernel_size must be odd (a centred moving average), got {kernel_size}")
        self.seasonal = nn.Dense(self.horizon, name="seasonal")
        self.trend = nn.Dense(self.horizon, name="trend")

    def trace(self, shape, step):
        shape = window_shape(self, shape, self.input_length, self.channels)
        rows = (shape[0], self.channels, self.input_length)
        step(self.seasonal, rows)
        step(self.trend, rows)
        return (shape[0], self.horizon, self.channels)

    def decompose(self, x) -> tuple[Tensor, Tensor]:
        """(remainder, trend) of windows (batch, input_length, channels), each of that shape."""
        x = as_tensor(x)
        check_window(self, x, self.input_length, self.channels)
        average = constant_tensor(moving_average_matrix(self.input_length, self.kernel_size), x.dtype)
        trend = F.matmul(average, x)
        return F.sub(x, trend), trend

    def forward(self, x) -> Tensor:
        remainder, trend = self.decompose(x)
        along_time = (0, 2, 1)
        y = F.add(self.seasonal(F.transpose(remainder, along_time)), self.trend(F.transpose(trend, along_time)))
        return F.transpose(y, along_time)

    def get_config(self) -> dict:
        return {"input_length": self.input_length, "horizon": self.horizon, "channels": self.channels,
                "kernel_size": self.kernel_size, "name": self.name}


def dlinear(input_length: int = 96, horizon: int = 24, channels: int = 1, **options) -> DLinear:
    """A :class:`DLinear` forecaster (moving average of 25 steps)."""
    return DLinear(input_length, horizon, channels, **options)
