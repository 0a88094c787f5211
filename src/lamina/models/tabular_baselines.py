"""The MLP and ResNet baselines for tabular data of Gorishniy et al. 2021 ("Revisiting Deep
Learning Models for Tabular Data"), in the layout of their reference code:

    MLP:     x -> [Linear -> ReLU -> Dropout] x len(d_layers) -> Linear -> y
    ResNet:  x -> Linear(d_in, d_main)
               -> n_blocks x  x + Dropout(Linear(Dropout(ReLU(Linear(BatchNorm(x))))))
               -> BatchNorm -> ReLU -> Linear(d_main, d_out) -> y

Linear layers start as PyTorch's (weights and biases uniform in +-1/sqrt(fan_in)).
"""

from __future__ import annotations

import math

from lamina import backend
from lamina.autograd import Tensor
from lamina.nn import BatchNorm, Dense, ModuleList
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.layer_functions import dropout
from lamina.nn.module import Module
from lamina.nn.tabular import check_numbers

__all__ = ["TabMLP", "TabResNet", "torch_style_dense"]


def torch_style_dense(n_in: int, n_out: int, use_bias: bool = True) -> Dense:
    """A built Dense layer (weight (n_in, n_out)) initialised as ``torch.nn.Linear``."""
    layer = Dense(n_out, use_bias=use_bias)
    layer.build((None, n_in))
    bound = 1 / math.sqrt(n_in)
    for param in layer.parameters():
        param.data[...] = (2 * backend.rng().random(param.shape) - 1) * bound
    return layer


def _probability(value, what: str) -> float:
    if not 0 <= value < 1:
        raise ValueError(f"{what} must be in [0, 1), got {value!r}")
    return float(value)


@register_layer
class TabMLP(Module):
    """x (N, d_in) -> (N, d_out): the MLP baseline (module docstring); ``d_layers`` the hidden widths."""

    def __init__(self, d_in: int, d_out: int, d_layers=(128, 128), dropout: float = 0.1, name: str | None = None):
        super().__init__(name=name)
        self.d_in, self.d_out = positive_int(d_in, "TabMLP: d_in"), positive_int(d_out, "TabMLP: d_out")
        self.d_layers = tuple(positive_int(w, "TabMLP: a layer width") for w in d_layers)
        self.dropout = _probability(dropout, "TabMLP: dropout")
        widths = (d_in, *self.d_layers)
        self.blocks = ModuleList([torch_style_dense(a, b) for a, b in zip(widths[:-1], widths[1:])])
        self.head = torch_style_dense(widths[-1], d_out)
        self.built = True

    def forward(self, x) -> Tensor:
        x = check_numbers(self._label(), x, self.d_in)
        for layer in self.blocks:
            x = dropout(layer(x).relu(), self.dropout, training=self.training)
        return self.head(x)

    def get_config(self) -> dict:
        return {"d_in": self.d_in, "d_out": self.d_out, "d_layers": list(self.d_layers), "dropout": self.dropout,
                "name": self.name}


class _ResNetBlock(Module):
    def __init__(self, d_main: int, d_hidden: int, dropout_first: float, dropout_second: float):
        super().__init__()
        self.normalization = BatchNorm()
        self.normalization.build((None, d_main))
        self.linear_first = torch_style_dense(d_main, d_hidden)
        self.linear_second = torch_style_dense(d_hidden, d_main)
        self.dropout_first, self.dropout_second = dropout_first, dropout_second
        self.built = True

    def forward(self, x) -> Tensor:
        h = dropout(self.linear_first(self.normalization(x)).relu(), self.dropout_first, training=self.training)
        return x + dropout(self.linear_second(h), self.dropout_second, training=self.training)


@register_layer
class TabResNet(Module):
    """x (N, d_in) -> (N, d_out): the ResNet baseline (module docstring) with ``n_blocks`` blocks of
    width ``d_main`` and hidden width ``d_hidden`` (default 2 d_main)."""

    def __init__(self, d_in: int, d_out: int, n_blocks: int = 2, d_main: int = 128, d_hidden: int | None = None,
                 dropout_first: float = 0.25, dropout_second: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        self.d_in, self.d_out = positive_int(d_in, "TabResNet: d_in"), positive_int(d_out, "TabResNet: d_out")
        self.n_blocks = positive_int(n_blocks, "TabResNet: n_blocks")
        self.d_main = positive_int(d_main, "TabResNet: d_main")
        self.d_hidden = positive_int(d_hidden if d_hidden is not None else 2 * d_main, "TabResNet: d_hidden")
        self.dropout_first = _probability(dropout_first, "TabResNet: dropout_first")
        self.dropout_second = _probability(dropout_second, "TabResNet: dropout_second")
        self.first_layer = torch_style_dense(d_in, self.d_main)
        self.blocks = ModuleList([_ResNetBlock(self.d_main, self.d_hidden, self.dropout_first, self.dropout_second)
                                  for _ in range(n_blocks)])
        self.head_normalization = BatchNorm()
        self.head_normalization.build((None, self.d_main))
        self.head = torch_style_dense(self.d_main, d_out)
        self.built = True

    def forward(self, x) -> Tensor:
        x = self.first_layer(check_numbers(self._label(), x, self.d_in))
        for block in self.blocks:
            x = block(x)
        return self.head(self.head_normalization(x).relu())

    def get_config(self) -> dict:
        return {"d_in": self.d_in, "d_out": self.d_out, "n_blocks": self.n_blocks, "d_main": self.d_main,
                "d_hidden": self.d_hidden, "dropout_first": self.dropout_first,
                "dropout_second": self.dropout_second, "name": self.name}
