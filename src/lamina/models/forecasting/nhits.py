"""N-HiTS (Challu et al., 2023): N-BEATS blocks that read a max-pooled input and forecast a few
knots, linearly interpolated to the horizon, at a rate that differs from stack to stack."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor
from lamina.models.forecasting._common import check_rate, check_window, constant_tensor, from_per_channel, per_channel
from lamina.models.forecasting._embedding import built
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int
from lamina.nn.module import Module, as_tensor

__all__ = ["NHiTS", "linear_interpolation_matrix", "nhits"]


def linear_interpolation_matrix(knots: int, size: int) -> np.ndarray:
    """B (size, knots) with B theta the linear interpolation of ``knots`` values to ``size``
    points (``torch.nn.functional.interpolate(mode="linear", align_corners=False)``): point i
    reads the knots around s = max(0, (i + 1/2) knots / size - 1/2)."""
    source = np.maximum((np.arange(size) + 0.5) * knots / size - 0.5, 0.0)
    left = np.minimum(np.floor(source).astype(int), knots - 1)
    right = np.minimum(left + 1, knots - 1)
    fraction = source - left
    matrix = np.zeros((size, knots))
    np.add.at(matrix, (np.arange(size), left), 1.0 - fraction)
    np.add.at(matrix, (np.arange(size), right), fraction)
    return matrix


class _NHiTSBlock(Module):
    """residual (rows, L) -> MaxPool(kernel = stride = ``pool``, ceil mode) -> MLP (ReLU) ->
    theta = [backcast (L); knots (K)];  forecast = B knots (:func:`linear_interpolation_matrix`)."""

    def __init__(self, input_length, horizon, pool, knots, units, layers, dropout, name=None):
        super().__init__(name=name)
        self.input_length, self.horizon, self.pool, self.knots = input_length, horizon, pool, knots
        width = -(-input_length // pool)
        self.hidden = nn.ModuleList()
        for _ in range(layers):
            self.hidden.append(built(nn.Dense(units, activation="relu"), (None, width)))
            width = units
        self.dropout = nn.Dropout(dropout, name="dropout")
        self.theta = built(nn.Dense(input_length + knots, name="theta"), (None, units))

    def forward(self, x) -> tuple[Tensor, Tensor]:
        width = -(-self.input_length // self.pool)
        # ceil mode: the last window repeats the last step, which leaves its maximum unchanged
        steps = np.minimum(np.arange(width * self.pool), self.input_length - 1).reshape(width, self.pool)
        h = F.max(x[:, steps], axis=-1)
        for layer in self.hidden:
            h = self.dropout(layer(h))
        theta = self.theta(h)
        basis = constant_tensor(linear_interpolation_matrix(self.knots, self.horizon).T, x.dtype)
        return theta[:, :self.input_length], F.matmul(theta[:, self.input_length:], basis)


@register_with_arguments
class NHiTS(Module):
    """N-HiTS, channel-independent: (batch, input_length, channels) -> (batch, horizon, channels).

        r_0 = x (per channel),   y = x_{L-1} (the last value as the level)
        for every block b of stack s:  backcast, forecast = Block_b(r);  r = r - backcast;
                                       y = y + forecast

    Stack s pools its input with kernel ``pool_kernel_sizes[s]`` and forecasts
    max(1, horizon // ``downsample_factors[s]``) knots interpolated to the horizon (coarse
    stacks first: the low frequencies are forecast by few knots, the high ones by many)."""

    def __init__(self, input_length: int, horizon: int, channels: int = 1,
                 pool_kernel_sizes: Sequence[int] = (2, 2, 1), downsample_factors: Sequence[int] = (4, 2, 1),
                 blocks_per_stack: int = 1, units: int = 256, layers: int = 2, dropout: float = 0.0,
                 name: str | None = None):
        super().__init__(name=name)
        self.input_length = positive_int(input_length, "NHiTS: input_length")
        self.horizon = positive_int(horizon, "NHiTS: horizon")
        self.channels = positive_int(channels, "NHiTS: channels")
        pools = [positive_int(k, "NHiTS: pool_kernel_sizes") for k in pool_kernel_sizes]
        factors = [positive_int(k, "NHiTS: downsample_factors") for k in downsample_factors]
        if len(pools) != len(factors) or not pools:
            raise ValueError(f"NHiTS: pool_kernel_sizes {tuple(pool_kernel_sizes)} and downsample_factors "
                             f"{tuple(downsample_factors)} must give one entry per stack (at least one)")
        repeats = positive_int(blocks_per_stack, "NHiTS: blocks_per_stack")
        units, layers = positive_int(units, "NHiTS: units"), positive_int(layers, "NHiTS: layers")
        rate = check_rate(dropout, "NHiTS: dropout")
        self.blocks = nn.ModuleList([
            _NHiTSBlock(self.input_length, self.horizon, pool, max(1, self.horizon // factor), units, layers, rate)
            for pool, factor in zip(pools, factors) for _ in range(repeats)])
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        check_window(self, x, self.input_length, self.channels)
        residual = per_channel(x)
        forecast = residual[:, -1:]
        for block in self.blocks:
            backcast, block_forecast = block(residual)
            residual = F.sub(residual, backcast)
            forecast = F.add(forecast, block_forecast)
        return from_per_channel(forecast, self.channels)


def nhits(input_length: int = 96, horizon: int = 24, channels: int = 1, **options) -> NHiTS:
    """An :class:`NHiTS` forecaster (defaults: 3 stacks pooling by 2, 2, 1 and interpolating from 1/4, 1/2
    and all of the horizon's points, MLPs of 2 layers of 256 units)."""
    return NHiTS(input_length, horizon, channels, **options)
