"""DeepSurv (Katzman et al., 2018): a multilayer perceptron giving the log-risk h(x) of a
Cox proportional-hazards model, trained with the negative partial log-likelihood
:func:`lamina.functional.cox_ph_loss` and evaluated by Harrell's concordance index::

    model = DeepSurv(hidden=(32, 32), dropout=0.1)
    loss = F.cox_ph_loss(model(x), durations, events)          # one full batch, or large batches
    c = F.concordance_index(durations, model(x).numpy(), events)

Survival curves follow from the Breslow baseline hazard of the training data
(:func:`lamina.functional.breslow_baseline_hazard`, :func:`lamina.functional.survival_function`).
"""

from __future__ import annotations

from lamina.autograd import Tensor
from lamina.nn import BatchNorm, Dense, ModuleList
from lamina.nn.activation import get_activation
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.layer_functions import dropout
from lamina.nn.module import Module, as_tensor

__all__ = ["DeepSurv"]


@register_layer
class DeepSurv(Module):
    """(N, features) covariates -> (N,) log-risks: Dense -> [BatchNorm] -> activation ->
    dropout for each width of ``hidden``, then a linear output without bias (a constant in
    h(x) cancels from the Cox partial likelihood)."""

    def __init__(self, hidden=(32, 32), activation="relu", dropout: float = 0.0, batch_norm: bool = False,
                 name: str | None = None):
        super().__init__(name=name)
        self.hidden = tuple(positive_int(width, "DeepSurv: a hidden width") for width in hidden)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ValueError(f"DeepSurv: dropout must be a probability in [0, 1), got {dropout!r}")
        self.dropout = float(dropout)
        self.batch_norm = bool(batch_norm)
        self.activation_name = activation
        self.activation = get_activation(activation)
        self.layers = ModuleList([Dense(width) for width in self.hidden])
        self.norms = ModuleList([BatchNorm() for _ in self.hidden] if self.batch_norm else [])
        self.out = Dense(1, use_bias=False)

    def build(self, input_shape) -> None:
        shape = tuple(input_shape)
        if len(shape) != 2 or shape[1] is None:
            raise ValueError(f"{self._label()}: expected covariates of shape (N, features), got shape {shape}")
        for i, (layer, width) in enumerate(zip(self.layers, self.hidden)):
            layer.build(shape)
            layer.built = True
            shape = (shape[0], width)
            if self.batch_norm:
                self.norms[i].build(shape)
                self.norms[i].built = True
        self.out.build(shape)
        self.out.built = True
        self.built = True

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim != 2:
            raise ValueError(f"{self._label()}: expected covariates of shape (N, features), got shape {x.shape}")
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if self.batch_norm:
                x = self.norms[i](x)
            x = dropout(self.activation(x), self.dropout, training=self.training)
        return self.out(x).reshape((x.shape[0],))

    def get_config(self) -> dict:
        return {"hidden": list(self.hidden), "activation": self.activation_name, "dropout": self.dropout,
                "batch_norm": self.batch_norm, "name": self.name}
