"""TSMixer (Chen et al., 2023): MLPs that mix along time and along the channels in turn."""

from __future__ import annotations

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor
from lamina.models.forecasting._common import check_rate, check_window
from lamina.models.forecasting._embedding import built
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int
from lamina.nn.module import Module, as_tensor

__all__ = ["TSMixer", "tsmixer"]

_ALONG_TIME = (0, 2, 1)


class _MixerLayer(Module):
    """x = x + Dropout(ReLU(Dense_time(Norm(x)^T))^T)                       time mixing
       x = x + Dropout(Dense_C(Dropout(ReLU(Dense_ff(Norm(x))))))            feature mixing

    Norm: a layer normalisation over both time and channels (the paper's code's LayerNorm)."""

    def __init__(self, length: int, channels: int, ff_dim: int, dropout: float, name: str | None = None):
        super().__init__(name=name)
        shape = (None, length, channels)
        self.time_norm = built(nn.LayerNorm(axes=(-2, -1), name="time_norm"), shape)
        self.time_mlp = built(nn.Dense(length, activation="relu", name="time_mlp"), (None, channels, length))
        self.feature_norm = built(nn.LayerNorm(axes=(-2, -1), name="feature_norm"), shape)
        self.feature_inner = built(nn.Dense(ff_dim, activation="relu", name="feature_inner"), shape)
        self.feature_outer = built(nn.Dense(channels, name="feature_outer"), (None, length, ff_dim))
        self.dropout = nn.Dropout(dropout, name="dropout")

    def forward(self, x) -> Tensor:
        mixed = F.transpose(self.time_mlp(F.transpose(self.time_norm(x), _ALONG_TIME)), _ALONG_TIME)
        x = F.add(x, self.dropout(mixed))
        mixed = self.feature_outer(self.dropout(self.feature_inner(self.feature_norm(x))))
        return F.add(x, self.dropout(mixed))


@register_with_arguments
class TSMixer(Module):
    """TSMixer: (batch, input_length, channels) -> (batch, horizon, channels).

        z = RevIN(x)   (``revin``: per window and channel)
        z = MixerLayer(z) x ``blocks``
        y = RevIN^-1(Dense_horizon(z^T)^T)   (temporal projection, shared by the channels)"""

    def __init__(self, input_length: int, horizon: int, channels: int = 1, blocks: int = 2, ff_dim: int = 64,
                 dropout: float = 0.0, revin: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.input_length = positive_int(input_length, "TSMixer: input_length")
        self.horizon = positive_int(horizon, "TSMixer: horizon")
        self.channels = positive_int(channels, "TSMixer: channels")
        ff_dim = positive_int(ff_dim, "TSMixer: ff_dim")
        rate = check_rate(dropout, "TSMixer: dropout")
        self.revin = built(nn.RevIN(self.channels, name="revin"), (None, self.input_length, self.channels)) \
            if revin else None
        self.mixers = nn.ModuleList([_MixerLayer(self.input_length, self.channels, ff_dim, rate)
                                     for _ in range(positive_int(blocks, "TSMixer: blocks"))])
        self.projection = built(nn.Dense(self.horizon, name="projection"), (None, self.channels, self.input_length))
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        check_window(self, x, self.input_length, self.channels)
        if self.revin is not None:
            x = self.revin(x, "norm")
        for mixer in self.mixers:
            x = mixer(x)
        y = F.transpose(self.projection(F.transpose(x, _ALONG_TIME)), _ALONG_TIME)
        return self.revin(y, "denorm") if self.revin is not None else y


def tsmixer(input_length: int = 96, horizon: int = 24, channels: int = 1, **options) -> TSMixer:
    """A :class:`TSMixer` forecaster (defaults: 2 mixer blocks, feature MLPs of 64 units, reversible
    instance normalisation)."""
    return TSMixer(input_length, horizon, channels, **options)
