"""iTransformer (Liu et al., 2024): every variate's whole window is one token; attention mixes the variates."""

from __future__ import annotations

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor
from lamina.models.forecasting._common import check_rate, check_window
from lamina.models.forecasting._embedding import built
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int
from lamina.nn.module import Module, as_tensor

__all__ = ["ITransformer", "itransformer"]

_ALONG_TIME = (0, 2, 1)


@register_with_arguments
class ITransformer(Module):
    """iTransformer: (batch, input_length, channels) -> (batch, horizon, channels).

        z = RevIN(x)                        (no affine: per window and channel)
        tokens = Dropout(Dense_d(z^T))      (batch, channels, d_model): one token per variate
        tokens = encoder layers (post-norm :class:`TransformerEncoderLayer`, GELU), LayerNorm
        y = RevIN^-1(Dense_horizon(tokens)^T)

    No positions: permuting the variates permutes the forecasts the same way. Sub-layers
    ``revin``, ``embedding``, ``dropout``, ``layers``, ``norm``, ``projection``."""

    def __init__(self, input_length: int, horizon: int, channels: int = 1, d_model: int = 64, num_heads: int = 4,
                 dim_feedforward: int = 128, layers: int = 2, dropout: float = 0.1, revin: bool = True,
                 name: str | None = None):
        super().__init__(name=name)
        self.input_length = positive_int(input_length, "ITransformer: input_length")
        self.horizon = positive_int(horizon, "ITransformer: horizon")
        self.channels = positive_int(channels, "ITransformer: channels")
        d_model = positive_int(d_model, "ITransformer: d_model")
        if d_model % positive_int(num_heads, "ITransformer: num_heads"):
            raise ValueError(f"ITransformer: d_model {d_model} is not a multiple of num_heads {num_heads}")
        rate = check_rate(dropout, "ITransformer: dropout")
        tokens = (None, self.channels, d_model)
        self.revin = built(nn.RevIN(self.channels, affine=False, name="revin"),
                           (None, self.input_length, self.channels)) if revin else None
        self.embedding = built(nn.Dense(d_model, name="embedding"), (None, self.channels, self.input_length))
        self.dropout = nn.Dropout(rate, name="dropout")
        self.layers = nn.ModuleList([built(nn.TransformerEncoderLayer(d_model, num_heads, dim_feedforward, rate,
                                                                      activation="gelu"), tokens)
                                     for _ in range(positive_int(layers, "ITransformer: layers"))])
        self.norm = built(nn.LayerNorm(-1, name="norm"), tokens)
        self.projection = built(nn.Dense(self.horizon, name="projection"), tokens)
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        check_window(self, x, self.input_length, self.channels)
        if self.revin is not None:
            x = self.revin(x, "norm")
        tokens = self.dropout(self.embedding(F.transpose(x, _ALONG_TIME)))
        for layer in self.layers:
            tokens = layer(tokens)
        y = F.transpose(self.projection(self.norm(tokens)), _ALONG_TIME)
        return self.revin(y, "denorm") if self.revin is not None else y



def itransformer(input_length: int = 96, horizon: int = 24, channels: int = 1, **options) -> ITransformer:
    """An :class:`ITransformer` forecaster (defaults: d_model 64, 4 heads, 2 encoder layers, reversible
    instance normalisation)."""
    return ITransformer(input_length, horizon, channels, **options)
