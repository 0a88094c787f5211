"""Forecasters of multivariate time series: TCN, N-BEATS, DLinear and PatchTST.

Every model reads windows x of shape (batch, input_length, channels) and returns forecasts
(batch, horizon, channels) (:mod:`lamina.data.timeseries` makes such windows). N-BEATS, DLinear
and PatchTST treat the channels independently (one univariate model shared by every channel);
the TCN mixes them in its convolutions.

* :class:`TCN` (Bai, Kolter & Koltun, 2018): residual blocks of dilated causal convolutions
  (:class:`TemporalBlock`), the dilation doubling from block to block, and a Dense head on the
  features of the last step.
* :class:`NBEATS` (Oreshkin et al., 2020): stacks of fully connected blocks
  (:class:`NBeatsBlock`) with doubly residual backcasts and forecasts; generic blocks, or the
  interpretable trend (polynomial basis) and seasonality (Fourier basis) ones.
* :class:`DLinear` (Zeng et al., 2023): a moving-average decomposition into trend and remainder,
  each mapped to the horizon by one linear layer over time.
* :class:`PatchTST` (Nie et al., 2023): each channel cut into overlapping patches that are the
  tokens of a Transformer encoder, a flatten head, reversible instance normalisation.

The builders :func:`tcn`, :func:`nbeats`, :func:`dlinear` and :func:`patchtst` are registered in
the ``"forecasting"`` group of :func:`lamina.models.list_models`.
"""

from __future__ import annotations

import numpy as np

from lamina import backend, nn
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.blocks import Block
from lamina.nn.layer import check_shape_ndim, input_error, positive_int, register_layer
from lamina.nn.module import as_tensor

__all__ = [
    "NBEATS", "TCN", "DLinear", "NBeatsBlock", "PatchTST", "TemporalBlock", "dlinear", "fourier_basis",
    "moving_average_matrix", "nbeats", "patchtst", "polynomial_basis", "tcn", "tcn_receptive_field",
]


# -- shared checks -----------------------------------------------------------------------------------
def _rate(value, who: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{who} must be a number in [0, 1), got {value!r}")
    return float(value)


def _window_shape(model, shape, length: int | None, channels: int | None) -> tuple:
    """``shape`` checked to be (batch, input_length, channels)."""
    expected = f"(batch, {length if length else 'steps'}, {channels if channels else 'channels'})"
    shape = check_shape_ndim(model, shape, 3, expected)
    if (length is not None and shape[1] not in (None, length)) or \
            (channels is not None and shape[2] not in (None, channels)):
        raise ShapeError(f"{model._label()}: got an input of shape {tuple(shape)}; expected {expected} "
                         f"(the model was made for input_length={length}, channels={channels})")
    return shape


def _check_window(model, x: Tensor, length: int | None, channels: int | None) -> None:
    if x.ndim != 3 or (length is not None and x.shape[1] != length) or \
            (channels is not None and x.shape[2] != channels):
        raise input_error(model, x, f"(batch, {length or 'steps'}, {channels or 'channels'})")


def _per_channel(x: Tensor) -> Tensor:
    """(N, L, C) -> (N C, L): every channel its own univariate series."""
    n, length, c = x.shape
    return F.reshape(F.transpose(x, (0, 2, 1)), (n * c, length))


def _from_per_channel(y: Tensor, channels: int) -> Tensor:
    """(N C, H) -> (N, H, C)."""
    rows, horizon = y.shape
    return F.transpose(F.reshape(y, (rows // channels, channels, horizon)), (0, 2, 1))


def _constant(array: np.ndarray, dtype) -> Tensor:
    return Tensor._wrap(backend.xp.asarray(array.astype(dtype)))


# -- TCN ---------------------------------------------------------------------------------------------
def tcn_receptive_field(kernel_size: int, dilations, convs_per_block: int = 2) -> int:
    """Steps of input that one output step of a stack of causal convolutions sees:
    1 + convs_per_block (k - 1) sum_i d_i (the TCN's dilations d_i = 2^i give
    1 + 2 (k - 1) (2^B - 1) for B blocks)."""
    kernel_size = positive_int(kernel_size, "tcn_receptive_field: kernel_size")
    return 1 + convs_per_block * (kernel_size - 1) * sum(int(d) for d in dilations)


@register_layer
class TemporalBlock(Block):
    """The TCN's residual block (Bai et al., 2018, Figure 1b) on (batch, steps, c_in):

        h = dropout(relu(conv1(x))),   h = dropout(relu(conv2(h)))
        y = relu(h + downsample(x))

    conv1 and conv2 are causal Conv1D of ``filters`` filters, ``kernel_size`` taps ``dilation``
    apart (output t sees inputs t - 2 d (k - 1) .. t only), each under weight normalisation
    (:class:`WeightNorm`: w = g v / ||v||); ``downsample`` is a 1x1 Conv1D when c_in != filters,
    else the identity. Sub-layers ``conv1``, ``dropout1``, ``conv2``, ``dropout2`` and
    ``downsample``."""

    default_name = "temporal_block"

    def __init__(self, in_channels: int, filters: int, kernel_size: int = 3, dilation: int = 1,
                 dropout: float = 0.2, name: str | None = None):
        super().__init__(name=name)
        self.in_channels = positive_int(in_channels, "TemporalBlock: in_channels")
        self.filters = positive_int(filters, "TemporalBlock: filters")
        self.kernel_size = positive_int(kernel_size, "TemporalBlock: kernel_size")
        self.dilation = positive_int(dilation, "TemporalBlock: dilation")
        self.dropout_rate = _rate(dropout, "TemporalBlock: dropout")
        for k in (1, 2):
            conv = nn.Conv1D(filters, kernel_size, padding="causal", dilation=dilation, name="conv")
            setattr(self, f"conv{k}", nn.WeightNorm(conv, name=f"conv{k}"))
            setattr(self, f"dropout{k}", nn.Dropout(self.dropout_rate, name=f"dropout{k}"))
        self.downsample = nn.Conv1D(filters, 1, name="downsample") if in_channels != filters else None

    @property
    def receptive_field(self) -> int:
        return tcn_receptive_field(self.kernel_size, [self.dilation])

    def trace(self, shape, step):
        shape = _window_shape(self, shape, None, self.in_channels)
        out = step(self.conv2, step(self.conv1, shape))
        if self.downsample is not None:
            step(self.downsample, shape)
        return out

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        _check_window(self, x, None, self.in_channels)
        h = self.dropout1(F.relu(self.conv1(x)))
        h = self.dropout2(F.relu(self.conv2(h)))
        residual = x if self.downsample is None else self.downsample(x)
        return F.relu(F.add(h, residual))

    def get_config(self) -> dict:
        return {"in_channels": self.in_channels, "filters": self.filters, "kernel_size": self.kernel_size,
                "dilation": self.dilation, "dropout": self.dropout_rate, "name": self.name}


@register_layer
class TCN(Block):
    """Temporal convolutional network forecaster: (batch, input_length, channels) ->
    (batch, horizon, channels).

        h_0 = x,   h_i = TemporalBlock_i(h_{i-1}) with dilation 2^(i-1),  i = 1 .. B
        y = reshape(Dense(h_B[:, -1]), (horizon, channels))

    ``hidden``: the filters of each block (B = len(hidden)). The last step's features see
    :attr:`receptive_field` = 1 + 2 (k - 1) (2^B - 1) input steps; choose B and k so that it
    covers ``input_length``. Sub-layers ``block0`` .. and ``head``."""

    default_name = "tcn"

    def __init__(self, input_length: int, horizon: int, channels: int = 1, hidden=(32, 32, 32),
                 kernel_size: int = 3, dropout: float = 0.1, name: str | None = None):
        super().__init__(name=name)
        self.input_length = positive_int(input_length, "TCN: input_length")
        self.horizon = positive_int(horizon, "TCN: horizon")
        self.channels = positive_int(channels, "TCN: channels")
        self.hidden = tuple(positive_int(h, "TCN: hidden sizes") for h in hidden)
        if not self.hidden:
            raise ValueError("TCN: hidden must list at least one block's filters")
        self.kernel_size = positive_int(kernel_size, "TCN: kernel_size")
        self.dropout_rate = _rate(dropout, "TCN: dropout")
        c_in = self.channels
        for i, filters in enumerate(self.hidden):
            block = TemporalBlock(c_in, filters, kernel_size, 2 ** i, self.dropout_rate, name=f"block{i}")
            setattr(self, f"block{i}", block)
            c_in = filters
        self.head = nn.Dense(self.horizon * self.channels, name="head")

    @property
    def dilations(self) -> list[int]:
        return [2 ** i for i in range(len(self.hidden))]

    @property
    def receptive_field(self) -> int:
        return tcn_receptive_field(self.kernel_size, self.dilations)

    def _blocks(self) -> list[TemporalBlock]:
        return [self._modules[f"block{i}"] for i in range(len(self.hidden))]

    def trace(self, shape, step):
        shape = _window_shape(self, shape, self.input_length, self.channels)
        for block in self._blocks():
            shape = step(block, shape)
        step(self.head, (shape[0], shape[2]))
        return (shape[0], self.horizon, self.channels)

    def features(self, x) -> Tensor:
        """The last block's output (batch, input_length, hidden[-1])."""
        x = as_tensor(x)
        _check_window(self, x, self.input_length, self.channels)
        for block in self._blocks():
            x = block(x)
        return x

    def forward(self, x) -> Tensor:
        h = self.features(x)
        y = self.head(h[:, -1])
        return F.reshape(y, (y.shape[0], self.horizon, self.channels))

    def get_config(self) -> dict:
        return {"input_length": self.input_length, "horizon": self.horizon, "channels": self.channels,
                "hidden": list(self.hidden), "kernel_size": self.kernel_size, "dropout": self.dropout_rate,
                "name": self.name}


# -- N-BEATS -----------------------------------------------------------------------------------------
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
        backcast = F.matmul(theta[:, :p_b], _constant(backcast_basis, theta.dtype))
        forecast = F.matmul(theta[:, p_b:], _constant(forecast_basis, theta.dtype))
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
        shape = _window_shape(self, shape, self.input_length, self.channels)
        rows = None if shape[0] is None else shape[0] * self.channels
        for block in self._blocks():
            step(block, (rows, self.input_length))
        return (shape[0], self.horizon, self.channels)

    def stack_forecasts(self, x) -> list[Tensor]:
        """Each stack's summed block forecasts, (batch, horizon, channels) each; they add up to
        the model's forecast."""
        x = as_tensor(x)
        _check_window(self, x, self.input_length, self.channels)
        residual = _per_channel(x)
        shares: list[Tensor] = []
        for j, block in enumerate(self._blocks()):
            backcast, forecast = block(residual)
            residual = F.sub(residual, backcast)
            if j % self.blocks_per_stack == 0:
                shares.append(forecast)
            else:
                shares[-1] = F.add(shares[-1], forecast)
        return [_from_per_channel(share, self.channels) for share in shares]

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


# -- DLinear -----------------------------------------------------------------------------------------
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
        shape = _window_shape(self, shape, self.input_length, self.channels)
        rows = (shape[0], self.channels, self.input_length)
        step(self.seasonal, rows)
        step(self.trend, rows)
        return (shape[0], self.horizon, self.channels)

    def decompose(self, x) -> tuple[Tensor, Tensor]:
        """(remainder, trend) of windows (batch, input_length, channels), each of that shape."""
        x = as_tensor(x)
        _check_window(self, x, self.input_length, self.channels)
        average = _constant(moving_average_matrix(self.input_length, self.kernel_size), x.dtype)
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


# -- PatchTST ----------------------------------------------------------------------------------------
@register_layer
class PatchTST(Block):
    """PatchTST (supervised, channel-independent): (batch, input_length, channels) ->
    (batch, horizon, channels).

        z = RevIN(x)                              per window and channel (``revin``)
        every channel: s (input_length,) -> s extended by ``stride`` copies of its last value
                       (``padding_patch="end"``) -> patches P_j = s[j S : j S + P], j < n
        tokens = Dense(P_j) + pos_j               (n, d_model), learned positions ``position``
        tokens = encoder layers (post-norm :class:`TransformerEncoderLayer`, GELU)
        y = Dense(flatten(tokens))                (n d_model) -> horizon (``head``)
        y = RevIN^-1(y)

    n = floor((input_length - P) / S) + 1, plus one with the end padding. The paper's encoder
    normalises with BatchNorm; this one uses LayerNorm (its option). Sub-layers ``revin``,
    ``patch_embedding``, ``dropout``, ``layer0`` .., ``head_dropout``, ``head``; parameter
    ``position`` (n, d_model)."""

    default_name = "patchtst"

    def __init__(self, input_length: int, horizon: int, channels: int = 1, patch_length: int = 16,
                 stride: int = 8, d_model: int = 128, num_heads: int = 16, dim_feedforward: int = 256,
                 layers: int = 3, dropout: float = 0.2, head_dropout: float = 0.0, revin: bool = True,
                 padding_patch: str | None = "end", name: str | None = None):
        super().__init__(name=name)
        self.input_length = positive_int(input_length, "PatchTST: input_length")
        self.horizon = positive_int(horizon, "PatchTST: horizon")
        self.channels = positive_int(channels, "PatchTST: channels")
        self.patch_length = positive_int(patch_length, "PatchTST: patch_length")
        self.stride = positive_int(stride, "PatchTST: stride")
        if self.patch_length > self.input_length:
            raise ValueError(f"PatchTST: patch_length {patch_length} is longer than input_length {input_length}")
        if padding_patch not in ("end", None):
            raise ValueError(f"PatchTST: padding_patch must be 'end' or None, got {padding_patch!r}")
        self.padding_patch = padding_patch
        self.d_model = positive_int(d_model, "PatchTST: d_model")
        self.num_heads = positive_int(num_heads, "PatchTST: num_heads")
        self.dim_feedforward = positive_int(dim_feedforward, "PatchTST: dim_feedforward")
        self.layers = positive_int(layers, "PatchTST: layers")
        self.dropout_rate = _rate(dropout, "PatchTST: dropout")
        self.head_dropout_rate = _rate(head_dropout, "PatchTST: head_dropout")
        self.use_revin = bool(revin)
        self.revin = nn.RevIN(self.channels, name="revin") if self.use_revin else None
        self.patch_embedding = nn.Dense(self.d_model, name="patch_embedding")
        self.dropout = nn.Dropout(self.dropout_rate, name="dropout")
        for i in range(self.layers):
            layer = nn.TransformerEncoderLayer(self.d_model, self.num_heads, self.dim_feedforward, self.dropout_rate,
                                               activation="gelu", name=f"layer{i}")
            setattr(self, f"layer{i}", layer)
        self.head_dropout = nn.Dropout(self.head_dropout_rate, name="head_dropout")
        self.head = nn.Dense(self.horizon, name="head")

    @property
    def num_patches(self) -> int:
        extra = 1 if self.padding_patch == "end" else 0
        return (self.input_length - self.patch_length) // self.stride + 1 + extra

    def patch_indices(self) -> np.ndarray:
        """(n, P): the steps of the (padded) series each patch takes."""
        starts = np.arange(self.num_patches) * self.stride
        return starts[:, None] + np.arange(self.patch_length)

    def trace(self, shape, step):
        shape = _window_shape(self, shape, self.input_length, self.channels)
        if self.revin is not None:
            step(self.revin, shape)
        rows = None if shape[0] is None else shape[0] * self.channels
        tokens = step(self.patch_embedding, (rows, self.num_patches, self.patch_length))
        for i in range(self.layers):
            tokens = step(self._modules[f"layer{i}"], tokens)
        step(self.head, (rows, self.num_patches * self.d_model))
        return (shape[0], self.horizon, self.channels)

    def build(self, input_shape) -> None:
        if "position" not in self._parameters:
            bound = 0.02
            values = backend.rng().uniform(-bound, bound, (self.num_patches, self.d_model))
            self.add_parameter("position", backend.xp.asarray(values.astype(backend.get_default_dtype())))
        super().build(input_shape)

    def patches(self, x) -> Tensor:
        """Windows (batch, input_length, channels) -> patches (batch channels, n, patch_length)."""
        series = _per_channel(as_tensor(x))
        # the end padding repeats the last step: a step past the end reads the last one
        return series[:, np.minimum(self.patch_indices(), self.input_length - 1)]

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        _check_window(self, x, self.input_length, self.channels)
        if self.revin is not None:
            x = self.revin(x, "norm")
        tokens = self.dropout(F.add(self.patch_embedding(self.patches(x)), self.position))
        for i in range(self.layers):
            tokens = self._modules[f"layer{i}"](tokens)
        flat = F.reshape(tokens, (tokens.shape[0], self.num_patches * self.d_model))
        y = _from_per_channel(self.head(self.head_dropout(flat)), self.channels)
        return self.revin(y, "denorm") if self.revin is not None else y

    def get_config(self) -> dict:
        return {"input_length": self.input_length, "horizon": self.horizon, "channels": self.channels,
                "patch_length": self.patch_length, "stride": self.stride, "d_model": self.d_model,
                "num_heads": self.num_heads, "dim_feedforward": self.dim_feedforward, "layers": self.layers,
                "dropout": self.dropout_rate, "head_dropout": self.head_dropout_rate, "revin": self.use_revin,
                "padding_patch": self.padding_patch, "name": self.name}


# -- builders ----------------------------------------------------------------------------------------
def tcn(input_length: int = 96, horizon: int = 24, channels: int = 1, **options) -> TCN:
    """A :class:`TCN` forecaster (defaults: 3 blocks of 32 filters, kernel 3: receptive field 29)."""
    return TCN(input_length, horizon, channels, **options)


def nbeats(input_length: int = 96, horizon: int = 24, channels: int = 1, **options) -> NBEATS:
    """An :class:`NBEATS` forecaster (default: the interpretable trend + seasonality model)."""
    return NBEATS(input_length, horizon, channels, **options)


def dlinear(input_length: int = 96, horizon: int = 24, channels: int = 1, **options) -> DLinear:
    """A :class:`DLinear` forecaster (moving average of 25 steps)."""
    return DLinear(input_length, horizon, channels, **options)


def patchtst(input_length: int = 96, horizon: int = 24, channels: int = 1, **options) -> PatchTST:
    """A :class:`PatchTST` forecaster (defaults of Nie et al.'s supervised model, patches of 16, stride 8)."""
    return PatchTST(input_length, horizon, channels, **options)
