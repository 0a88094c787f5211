"""N-BEATS (Oreshkin et al., 2020): doubly residual stacks of fully connected blocks."""

from __future__ import annotations

import numpy as np

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor
from lamina.models.blocks import Block
from lamina.models.forecasting._common import check_window, constant_tensor, from_per_channel, per_channel, window_shape
from lamina.nn.layer import check_shape_ndim, input_error, positive_int, register_layer
from lamina.nn.module import as_tensor

BLOCK_KINDS = ("generic", "trend", "seasonality")


def polynomial_basis(degree: int, length: int) -> np.ndarray:
    """The trend basis T (degree + 1, length): T[i, t] = (t / length)^i, t = 0 .. length - 1."""
    t = np.arange(length, dtype=np.float64) / length
    return np.stack([t ** i for i in range(degree + 1)])


def fourier_basis(harmonics: int, length: int, period: int | None = None, start: int = 0) -> np.ndarray:
    """The seasonality basis S (2 K + 1, length) for K = ``harmonics`` at the steps
    t = start .. start + length - 1: rows cos(2 pi k t / period) for k = 0 .. K, then
    sin(2 pi k t / period) for k = 1 .. K (``period`` defaults to ``length``)."""
    t = (start + np.arange(length, dtype=np.float64)) / (period or length)
    cosines = [np.cos(2 * np.pi * k * t) for k in range(harmonics + 1)]
    sines = [np.sin(2 * np.pi * k * t) for k in range(1, harmonics + 1)]
    return np.stack(cosines + sines)


@register_layer
class NBeatsBlock(Block):
    """One N-BEATS block on univariate windows (batch, input_length):

        h = relu(FC_layers(... relu(FC_1(x))))       ``layers`` Dense layers of ``units``
        theta = Dense(h) = [theta_b, theta_f]
        backcast = theta_b B_b,   forecast = theta_f B_f

    The bases B_b (p_b, input_length) and B_f (p_f, horizon) are fixed by ``kind``:

    * ``"generic"``: identity bases (p_b = input_length, p_f = horizon), so the last Dense layer
      gives the backcast and forecast themselves;
    * ``"trend"``: :func:`polynomial_basis` of ``degree`` (p = degree + 1 each side), the forecast a
      polynomial of low degree in time;
    * ``"seasonality"``: :func:`fourier_basis` with K harmonics (p = 2 K + 1 each side) of the
      input window's length L as fundamental period, on one time axis: the backcast at steps
      0 .. L - 1, the forecast at L .. L + H - 1, so that any period dividing L (up to L / K)
      continues from the input into the forecast; K = ``harmonics``, by default
      floor(L / 2) - 1 (at least 1). (Oreshkin et al. take each side's own length as its period,
      which cannot express a season longer than H.)

    ``theta`` starts with zero weights, so that every block starts as the identity of the residual
    stream (backcast 0) and a stack of many blocks starts near the zero forecast; with random
    weights the Fourier block's forecast starts at a scale of sqrt(2 K + 1) and trains poorly.
    ``forward`` returns (backcast, forecast). Sub-layers ``fc0`` .. and ``theta``."""

    default_name = "nbeats_block"

    def __init__(self, input_length: int, horizon: int, kind: str = "generic", units: int = 256,
                 layers: int = 4, degree: int = 2, harmonics: int | None = None, name: str | None = None):
        super().__init__(name=name)
        self.input_length = positive_int(input_length, "NBeatsBlock: input_length")
        self.horizon = positive_int(horizon, "NBeatsBlock: horizon")
        if kind not in BLOCK_KINDS:
            raise ValueError(f"NBeatsBlock: kind must be one of {BLOCK_KINDS}, got {kind!r}")
        self.kind = kind
        self.units = positive_int(units, "NBeatsBlock: units")
        self.layers = positive_int(layers, "NBeatsBlock: layers")
        if isinstance(degree, bool) or not isinstance(degree, int) or degree < 0:
            raise ValueError(f"NBeatsBlock: degree must be an int >= 0, got {degree!r}")
        self.degree = degree
        self.harmonics = None if harmonics is None else positive_int(harmonics, "NBeatsBlock: harmonics")
        for i in range(self.layers):
            setattr(self, f"fc{i}", nn.Dense(self.units, activation="relu", name=f"fc{i}"))
        backcast, forecast = self.bases()
        self.theta = nn.Dense(backcast.shape[0] + forecast.shape[0], kernel_init="zeros",
                              name="theta")

    def bases(self) -> tuple[np.ndarray, np.ndarray]:
        """(B_b, B_f) in float64."""
        sides = (self.input_length, self.horizon)
        if self.kind == "generic":
            return tuple(np.eye(n) for n in sides)
        if self.kind == "trend":
            return tuple(polynomial_basis(self.degree, n) for n in sides)
        harmonics = self.harmonics or max(self.input_length // 2 - 1, 1)
        return (fourier_basis(harmonics, self.input_length),
                fourier_basis(harmonics, self.horizon, self.input_length, start=self.input_length))

    def trace(self, shape, step):
        shape = check_shape_ndim(self, shape, 2, f"(batch, {self.input_length})")
        for i in range(self.layers):
            shape = step(self._modules[f"fc{i}"], shape)
        step(self.theta, shape)
        return (shape[0], self.horizon)

    def forward(self, x) -> tuple[Tensor, Tensor]:
        h = as_tensor(x)
        if h.ndim != 2 or h.shape[1] != self.input_length:
            raise input_error(self, h, f"(batch, {self.input_length}) univariate windows")
        for i in range(self.layers):
            h = self._modules[f"fc{i}"](h)
        theta = self.theta(h)
        backcast_basis, forecast_basis = self.bases()
        p_b = backcast_basis.shape[0]
        if self.kind == "generic":
            return theta[:, :p_b], theta[:, p_b:]
        backcast = F.matmul(theta[:, :p_b], constant_tensor(backcast_basis, theta.dtype))
        forecast = F.matmul(theta[:, p_b:], constant_tensor(forecast_basis, theta.dtype))
        return backcast, forecast

    def get_config(self) -> dict:
        return {"input_length": self.input_length, "horizon": self.horizon, "kind": self.kind, "units": self.units,
                "layers": self.layers, "degree": self.degree, "harmonics": self.harmonics, "name": self.name}


@register_layer
class NBEATS(Block):
    """N-BEATS: (batch, input_length, channels) -> (batch, horizon, channels), every channel on
    its own. Blocks run in sequence on doubly residual signals:

        r_0 = x,   (b_j, f_j) = block_j(r_{j-1}),   r_j = r_{j-1} - b_j,   y = sum_j f_j

    ``stacks`` lists the kind of each stack (:data:`BLOCK_KINDS`): ``("trend", "seasonality")``
    is the interpretable model, ``("generic",) * n`` the generic one; each stack has
    ``blocks_per_stack`` blocks of ``layers`` Dense layers of ``units``. :meth:`stack_forecasts`
    gives each stack's share of the forecast (the trend and the seasonality of the interpretable
    model). Sub-layers ``block0`` .. in order."""

    default_name = "nbeats"

    def __init__(self, input_length: int, horizon: int, channels: int = 1, stacks=("trend", "seasonality"),
                 blocks_per_stack: int = 3, units: int = 256, layers: int = 4, degree: int = 2,
                 harmonics: int | None = None, name: str | None = None):
        super().__init__(name=name)
        self.input_length = positive_int(input_length, "NBEATS: input_length")
        self.horizon = positive_int(horizon, "NBEATS: horizon")
        self.channels = positive_int(channels, "NBEATS: channels")
        self.stacks = tuple(stacks)
        if not self.stacks or any(kind not in BLOCK_KINDS for kind in self.stacks):
            raise ValueError(f"NBEATS: stacks must be a non-empty list of {BLOCK_KINDS}, got {stacks!r}")
        self.blocks_per_stack = positive_int(blocks_per_stack, "NBEATS: blocks_per_stack")
        self.units, self.layers, self.degree, self.harmonics = units, layers, degree, harmonics
        index = 0
        for kind in self.stacks:
            for _ in range(self.blocks_per_stack):
                block = NBeatsBlock(input_length, horizon, kind, units, layers, degree, harmonics,
                                    name=f"block{index}")
                setattr(self, f"block{index}", block)
                index += 1

    def _blocks(self) -> list[NBeatsBlock]:
        return [self._modules[f"block{i}"] for i in range(len(self.stacks) * self.blocks_per_stack)]

    def trace(self, shape, step):
        shape = window_shape(self, shape, self.input_length, self.channels)
        rows = None if shape[0] is None else shape[0] * self.channels
        for block in self._blocks():
            step(block, (rows, self.input_length))
        return (shape[0], self.horizon, self.channels)

    def stack_forecasts(self, x) -> list[Tensor]:
        """Each stack's summed block forecasts, (batch, horizon, channels) each; they add up to
        the model's forecast."""
        x = as_tensor(x)
        check_window(self, x, self.input_length, self.channels)
        residual = per_channel(x)
        shares: list[Tensor] = []
        for j, block in enumerate(self._blocks()):
            backcast, forecast = block(residual)
            residual = F.sub(residual, backcast)
            if j % self.blocks_per_stack == 0:
                shares.append(forecast)
            else:
                shares[-1] = F.add(shares[-1], forecast)
        return [from_per_channel(share, self.channels) for share in shares]

    def forward(self, x) -> Tensor:
        shares = self.stack_forecasts(x)
        total = shares[0]
        for share in shares[1:]:
            total = F.add(total, share)
        return total

    def get_config(self) -> dict:
        return {"input_length": self.input_length, "horizon": self.horizon, "channels": self.channels,
                "stacks": list(self.stacks), "blocks_per_stack": self.blocks_per_stack, "units": self.units,
                "layers": self.layers, "degree": self.degree, "harmonics": self.harmonics, "name": self.name}


def nbeats(input_length: int = 96, horizon: int = 24, channels: int = 1, **options) -> NBEATS:
    """An :class:`NBEATS` forecaster (default: the interpretable trend + seasonality model)."""
    return NBEATS(input_length, horizon, channels, **options)
