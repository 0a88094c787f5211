"""TCN (Bai, Kolter & Koltun, 2018): residual blocks of dilated causal convolutions."""

from __future__ import annotations

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor
from lamina.models.blocks import Block
from lamina.models.forecasting._common import check_rate, check_window, window_shape
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import as_tensor


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
        self.dropout_rate = check_rate(dropout, "TemporalBlock: dropout")
        for k in (1, 2):
            conv = nn.Conv1D(filters, kernel_size, padding="causal", dilation=dilation, name="conv")
            setattr(self, f"conv{k}", nn.WeightNorm(conv, name=f"conv{k}"))
            setattr(self, f"dropout{k}", nn.Dropout(self.dropout_rate, name=f"dropout{k}"))
        self.downsample = nn.Conv1D(filters, 1, name="downsample") if in_channels != filters else None

    @property
    def receptive_field(self) -> int:
        return tcn_receptive_field(self.kernel_size, [self.dilation])

    def trace(self, shape, step):
        shape = window_shape(self, shape, None, self.in_channels)
        out = step(self.conv2, step(self.conv1, shape))
        if self.downsample is not None:
            step(self.downsample, shape)
        return out

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        check_window(self, x, None, self.in_channels)
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
        self.dropout_rate = check_rate(dropout, "TCN: dropout")
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
        shape = window_shape(self, shape, self.input_length, self.channels)
        for block in self._blocks():
            shape = step(block, shape)
        step(self.head, (shape[0], shape[2]))
        return (shape[0], self.horizon, self.channels)

    def features(self, x) -> Tensor:
        """The last block's output (batch, input_length, hidden[-1])."""
        x = as_tensor(x)
        check_window(self, x, self.input_length, self.channels)
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


def tcn(input_length: int = 96, horizon: int = 24, channels: int = 1, **options) -> TCN:
    """A :class:`TCN` forecaster (defaults: 3 blocks of 32 filters, kernel 3: receptive field 29)."""
    return TCN(input_length, horizon, channels, **options)
