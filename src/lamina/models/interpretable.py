"""Interpretable-by-design tabular models.

* :class:`NAM`, the neural additive model of Agarwal et al. 2021: one small MLP f_i per feature,

      logit(x) = bias + sum_i f_i(x_i),

  all feature nets evaluated at once as batched matrix products. The first layer is either ExU
  units, h = min(max(exp(w) * (x - b), 0), n) (ReLU-n), or plain ReLU units, h = relu(w x + b);
  hidden ReLU layers follow and a linear unit gives f_i(x_i). Feature dropout drops whole
  per-feature outputs while training; :meth:`NAM.output_penalty` is the paper's mean squared
  feature output and :meth:`NAM.weight_penalty` its L2 weight decay.
* :class:`MonotonicDense` and :class:`MonotonicNetwork` (Runje & Shankaranarayana 2023,
  "Constrained Monotonic Neural Networks"): weights reaching the output from an increasing input
  are |W| (-|W| for a decreasing one), and the units are split into convex rho(y), concave
  -rho(-y) and saturated clip(y, -1, 1) activations (all non-decreasing), so the network is
  provably monotone in the chosen inputs while staying able to fit non-convex shapes.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.layer_functions import dropout
from lamina.nn.module import Module, as_tensor
from lamina.nn.tabular import check_numbers

__all__ = ["NAM", "MonotonicDense", "MonotonicNetwork"]


def _add(module: Module, name: str, values) -> None:
    module.add_parameter(name, np.asarray(values).astype(backend.get_default_dtype()))


def _rate(value, what: str) -> float:
    if not 0 <= value < 1:
        raise ValueError(f"{what} must be in [0, 1), got {value!r}")
    return float(value)


@register_layer
class NAM(Module):
    """x (N, n_features) -> logits (N, n_outputs) = bias + sum_i f_i(x_i) (module docstring).

    ``hidden`` gives the widths of each feature net (the first one is the ExU or ReLU layer);
    ``unit`` is 'exu' or 'relu'; ``relu_n`` the ExU clipping level; ``feature_dropout`` the
    probability of dropping one feature's output in training.
    """

    def __init__(self, n_features: int, hidden=(32, 16), n_outputs: int = 1, unit: str = "exu",
                 relu_n: float = 1.0, feature_dropout: float = 0.0, name: str | None = None):
        super().__init__(name=name)
        self.n_features = positive_int(n_features, "NAM: n_features")
        self.n_outputs = positive_int(n_outputs, "NAM: n_outputs")
        self.hidden = tuple(positive_int(w, "NAM: a hidden width") for w in hidden)
        if not self.hidden:
            raise ValueError("NAM: hidden must give at least one width (the first layer)")
        if unit not in ("exu", "relu"):
            raise ValueError(f"NAM: unit must be 'exu' or 'relu', got {unit!r}")
        if relu_n <= 0:
            raise ValueError(f"NAM: relu_n must be positive, got {relu_n!r}")
        self.unit, self.relu_n = unit, float(relu_n)
        self.feature_dropout = _rate(feature_dropout, "NAM: feature_dropout")
        rng, k = backend.rng(), self.n_features
        first = self.hidden[0]
        if unit == "exu":           # ExU weights start at N(4, 0.5) (the paper takes a mean in [3, 4])
            _add(self, "first_weight", rng.normal(4.0, 0.5, (k, 1, first)))
        else:
            _add(self, "first_weight", rng.normal(0.0, 1.0, (k, 1, first)))
        _add(self, "first_bias", rng.normal(0.0, 0.5, (k, 1, first)))
        widths = (*self.hidden, self.n_outputs)
        for j, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            bound = 1 / np.sqrt(a)
            _add(self, f"weight_{j}", rng.uniform(-bound, bound, (k, a, b)))
            _add(self, f"bias_{j}", np.zeros((k, 1, b)))
        _add(self, "bias", np.zeros(self.n_outputs))
        self.built = True

    def _first_layer(self, x: Tensor) -> Tensor:
        """x (K, N, 1) -> (K, N, hidden[0])."""
        if self.unit == "exu":
            return F.clip(F.exp(self.first_weight) * (x - self.first_bias), 0.0, self.relu_n)
        return F.relu(x * self.first_weight + self.first_bias)

    def feature_outputs(self, x) -> Tensor:
        """Each feature net on its own column: (N, n_features) -> (N, n_features, n_outputs)."""
        x = check_numbers(self._label(), x, self.n_features)
        h = self._first_layer(x.T.reshape(self.n_features, x.shape[0], 1))
        n_layers = len(self.hidden)
        for j in range(n_layers):
            h = F.matmul(h, getattr(self, f"weight_{j}")) + getattr(self, f"bias_{j}")
            if j < n_layers - 1:
                h = F.relu(h)
        return h.transpose(1, 0, 2)

    def feature_contributions(self, x) -> np.ndarray:
        """f_i(x_i) for each row and feature, (N, n_features, n_outputs), as an array (no dropout)."""
        return self.feature_outputs(x).detach().numpy()

    def shape_functions(self, grid) -> np.ndarray:
        """Every feature's learned function on ``grid``: (G,) values used for all features or
        (G, n_features) one column per feature -> (G, n_features, n_outputs)."""
        grid = np.asarray(grid, dtype=np.float64)
        if grid.ndim == 1:
            grid = np.repeat(grid[:, None], self.n_features, axis=1)
        return self.feature_contributions(grid.astype(self.bias.dtype))

    def forward(self, x) -> Tensor:
        contributions = self.feature_outputs(x)
        if self.training and self.feature_dropout > 0:
            contributions = dropout(contributions, self.feature_dropout, training=True)
        logits = contributions.sum(axis=1) + self.bias
        self.last_contributions = contributions
        return logits

    def output_penalty(self, contributions: Tensor | None = None) -> Tensor:
        """mean over rows and outputs of (1/K) sum_i f_i(x_i)^2, on the last forward's outputs
        unless ``contributions`` (N, K, n_outputs) are given."""
        c = self.last_contributions if contributions is None else as_tensor(contributions)
        return (c * c).sum(axis=1).mean() / self.n_features

    def weight_penalty(self) -> Tensor:
        """Sum of squared weights of every feature net (the paper's weight decay, without the 1/K)."""
        total = None
        for name, p in self.named_parameters():
            if "weight" in name:
                term = (p * p).sum()
                total = term if total is None else total + term
        return total

    def get_config(self) -> dict:
        return {"n_features": self.n_features, "hidden": list(self.hidden), "n_outputs": self.n_outputs,
                "unit": self.unit, "relu_n": self.relu_n, "feature_dropout": self.feature_dropout, "name": self.name}


def _directions(monotone, n_in: int, who: str) -> np.ndarray:
    signs = np.asarray(monotone, dtype=np.int64).reshape(-1)
    if signs.shape != (n_in,):
        raise ValueError(f"{who}: monotone must give one of -1, 0, 1 per input ({n_in}), got {signs.shape[0]}")
    if not np.isin(signs, (-1, 0, 1)).all():
        raise ValueError(f"{who}: monotone values must be -1, 0 or 1, got {sorted(set(signs.tolist()))}")
    return signs


@register_layer
class MonotonicDense(Module):
    """x (N, n_in) -> (N, n_out): y = x W' + b with W'_i = |W_i| for an increasing input i
    (monotone[i] = 1), -|W_i| for a decreasing one (-1) and W_i otherwise (0), then the activation
    split of Runje & Shankaranarayana: the first ``convex`` fraction of units relu(y), the next
    ``concave`` fraction -relu(-y), the rest clip(y, -1, 1); ``activation=None`` keeps y."""

    def __init__(self, n_in: int, n_out: int, monotone, activation: str | None = "relu",
                 convex: float = 1 / 3, concave: float = 1 / 3, name: str | None = None):
        super().__init__(name=name)
        self.n_in, self.n_out = positive_int(n_in, "MonotonicDense: n_in"), positive_int(n_out, "MonotonicDense: n_out")
        self.monotone = _directions(monotone, n_in, "MonotonicDense")
        if activation not in (None, "relu"):
            raise ValueError(f"MonotonicDense: activation must be 'relu' or None, got {activation!r}")
        if convex < 0 or concave < 0 or convex + concave > 1:
            raise ValueError(f"MonotonicDense: convex ({convex}) and concave ({concave}) fractions must be "
                             "non-negative and sum to at most 1")
        self.activation, self.convex, self.concave = activation, float(convex), float(concave)
        self.n_convex = int(round(self.convex * n_out))
        self.n_concave = min(int(round(self.concave * n_out)), n_out - self.n_convex)
        bound = 1 / np.sqrt(n_in)
        _add(self, "weight", backend.rng().uniform(-bound, bound, (n_in, n_out)))
        _add(self, "bias", np.zeros(n_out))
        self.built = True

    def constrained_weight(self) -> Tensor:
        """W' (module docstring)."""
        signs = self.monotone[:, None].astype(self.weight.dtype)
        free = (self.monotone == 0)[:, None].astype(self.weight.dtype)
        return self.weight * free + F.abs(self.weight) * signs

    def forward(self, x) -> Tensor:
        x = check_numbers(self._label(), x, self.n_in)
        y = F.matmul(x, self.constrained_weight()) + self.bias
        if self.activation is None:
            return y
        a, b = self.n_convex, self.n_convex + self.n_concave
        parts = [F.relu(y[:, :a]), -F.relu(-y[:, a:b]), F.clip(y[:, b:], -1.0, 1.0)]
        return F.concat([p for p in parts if p.shape[1]], axis=1)

    def get_config(self) -> dict:
        return {"n_in": self.n_in, "n_out": self.n_out, "monotone": self.monotone.tolist(),
                "activation": self.activation, "convex": self.convex, "concave": self.concave, "name": self.name}


@register_layer
class MonotonicNetwork(Module):
    """x (N, n_in) -> (N, n_outputs), monotone in each input i as ``monotone[i]`` says (1
    non-decreasing, -1 non-increasing, 0 free): a :class:`MonotonicDense` on the inputs, then
    hidden :class:`MonotonicDense` layers and a linear one, all increasing in every input (a
    non-negative combination of non-decreasing functions is non-decreasing)."""

    def __init__(self, n_in: int, monotone, hidden=(32, 32), n_outputs: int = 1, name: str | None = None):
        super().__init__(name=name)
        self.n_in = positive_int(n_in, "MonotonicNetwork: n_in")
        self.n_outputs = positive_int(n_outputs, "MonotonicNetwork: n_outputs")
        self.monotone = _directions(monotone, n_in, "MonotonicNetwork")
        self.hidden = tuple(positive_int(w, "MonotonicNetwork: a hidden width") for w in hidden)
        widths = (n_in, *self.hidden, n_outputs)
        self.layers = []
        for j, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            signs = self.monotone if j == 0 else np.ones(a, dtype=np.int64)
            layer = MonotonicDense(a, b, signs, activation="relu" if j < len(widths) - 2 else None)
            setattr(self, f"layer_{j}", layer)
            self.layers.append(layer)
        self.built = True

    def forward(self, x) -> Tensor:
        x = check_numbers(self._label(), x, self.n_in)
        for layer in self.layers:
            x = layer(x)
        return x

    def get_config(self) -> dict:
        return {"n_in": self.n_in, "monotone": self.monotone.tolist(), "hidden": list(self.hidden),
                "n_outputs": self.n_outputs, "name": self.name}
