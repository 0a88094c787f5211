"""Pieces shared by the long-horizon forecasters: layers built at construction and the circular
token convolution of Autoformer and Informer."""

from __future__ import annotations

from lamina import functional as F
from lamina import nn
from lamina.autograd import Tensor
from lamina.nn.module import Module


def built(layer: Module, input_shape: tuple) -> Module:
    """``layer`` with its weights created now for ``input_shape`` (every size is known at construction)."""
    layer.build(input_shape)
    layer.built, layer.build_input_shape = True, input_shape
    return layer


class CircularConv(Module):
    """A convolution of kernel 3 over time with circular padding, (N, L, c_in) -> (N, L, c_out):

        y_t = W [x_{t-1}; x_t; x_{t+1}] (+ b),   indices taken modulo L

    (``nn.Conv1d(c_in, c_out, 3, padding=1, padding_mode="circular")``, the token embedding of
    Autoformer and Informer, the trend projection of Autoformer's decoder and Informer's
    distilling convolution), one Dense layer ``linear`` over the three stacked neighbours."""

    def __init__(self, in_features: int, out_features: int, use_bias: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.linear = built(nn.Dense(out_features, use_bias=use_bias, name="linear"), (None, None, 3 * in_features))

    def forward(self, x) -> Tensor:
        return self.linear(F.concat([F.roll(x, 1, axis=1), x, F.roll(x, -1, axis=1)], axis=-1))
