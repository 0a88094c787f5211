"""Neural spline flows (Durkan et al. 2019): coupling and autoregressive layers whose
elementwise transform is the monotone rational-quadratic spline of
:func:`lamina.functional.rational_quadratic_spline` (K bins on [-B, B], the identity outside).

Each transformed feature gets 3K - 1 numbers from a network (K widths, K heights, K - 1 inner
derivatives); log|det J| is the sum of the splines' log-derivatives (the Jacobian is
triangular). Both follow :class:`lamina.models.flows.InvertibleLayer`'s protocol.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.splines import rational_quadratic_spline
from lamina.models.flows import InvertibleLayer, _hidden_sizes, made_masks
from lamina.nn import Dense, ModuleList, Sequential
from lamina.nn.layer import positive_int, register_layer

__all__ = ["SplineAutoregressive", "SplineCoupling"]


def _check_spline_options(num_bins, tail_bound, who: str) -> tuple[int, float]:
    bins = positive_int(num_bins, f"{who}: num_bins")
    if isinstance(tail_bound, bool) or not isinstance(tail_bound, (int, float)) or not tail_bound > 0:
        raise ValueError(f"{who}: tail_bound must be a positive number, got {tail_bound!r}")
    return bins, float(tail_bound)


def _spline(x: Tensor, params: Tensor, bins: int, bound: float, inverse: bool) -> tuple[Tensor, Tensor]:
    """The spline of ``params`` (..., 3K - 1) applied to ``x`` (...)."""
    return rational_quadratic_spline(x, params[..., :bins], params[..., bins:2 * bins], params[..., 2 * bins:],
                                     inverse=inverse, tails="linear", tail_bound=bound)


@register_layer
class SplineCoupling(InvertibleLayer):
    """A rational-quadratic spline coupling layer: with the binary ``mask`` (1: kept), the
    transformed features go through splines whose parameters a Dense network (``hidden``
    widths, last layer zero at first) computes from the kept ones: y_kept = x_kept,
    y_i = g_i(x_i; NN(x_kept)). ``num_bins`` K, ``tail_bound`` B."""

    def __init__(self, mask, num_bins: int = 8, tail_bound: float = 3.0, hidden=(64, 64), activation="relu",
                 name: str | None = None):
        super().__init__(name=name)
        values = np.asarray(mask)
        if values.ndim != 1 or values.size < 2 or not np.isin(values, (0, 1)).all() or values.all() \
                or not values.any():
            raise ValueError(f"SplineCoupling: mask must be 0s and 1s that keep some features (1) and transform "
                             f"others (0), got {mask!r}")
        self.mask = [int(v) for v in values]
        self.bins, self.tail_bound = _check_spline_options(num_bins, tail_bound, "SplineCoupling")
        self.hidden = _hidden_sizes(hidden, "SplineCoupling")
        self.kept = np.flatnonzero(values == 1)
        self.moved = np.flatnonzero(values == 0)
        self.order = np.argsort(np.concatenate([self.kept, self.moved]))
        self.activation = activation
        self.net = Sequential(*[Dense(n, activation=activation) for n in self.hidden],
                              Dense(len(self.moved) * (3 * self.bins - 1), kernel_init="zeros"))

    def build(self, input_shape) -> None:
        features = self._feature_count(input_shape)
        if features != len(self.mask):
            raise ShapeError(f"{self._label()}: got an input shape {tuple(input_shape)}; the mask has "
                             f"{len(self.mask)} entries, so expected (batch, {len(self.mask)})")
        self.features = features
        self.net.build((None, len(self.kept)))
        self.built = True

    def _apply(self, x: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        kept, moved = F.index_select(x, 1, self.kept), F.index_select(x, 1, self.moved)
        params = self.net(kept).reshape(x.shape[0], len(self.moved), 3 * self.bins - 1)
        out, log_derivative = _spline(moved, params, self.bins, self.tail_bound, inverse)
        return F.index_select(F.concat([kept, out], axis=1), 1, self.order), log_derivative.sum(axis=1)

    def _forward(self, x):
        return self._apply(x, inverse=False)

    def _inverse(self, y):
        return self._apply(y, inverse=True)

    def get_config(self) -> dict:
        return {"mask": list(self.mask), "num_bins": self.bins, "tail_bound": self.tail_bound,
                "hidden": list(self.hidden), "activation": self.activation, "name": self.name}

    def extra_repr(self) -> str:
        return f"mask={self.mask}, num_bins={self.bins}, tail_bound={self.tail_bound}"


@register_layer
class SplineAutoregressive(InvertibleLayer):
    """A rational-quadratic spline autoregressive layer: z_i = g_i(x_i; theta_i(x_1 .. x_{i-1}))
    with the spline parameters from a MADE network (as :class:`MaskedAutoregressive`, whose
    masks it shares). The density direction is one pass; the inverse takes ``features``
    sequential passes."""

    def __init__(self, num_bins: int = 8, tail_bound: float = 3.0, hidden=(64, 64), activation="relu",
                 name: str | None = None):
        super().__init__(name=name)
        self.bins, self.tail_bound = _check_spline_options(num_bins, tail_bound, "SplineAutoregressive")
        self.hidden = _hidden_sizes(hidden, "SplineAutoregressive")
        self.activation = activation

    def build(self, input_shape) -> None:
        super().build(input_shape)
        d, per_feature = self.features, 3 * self.bins - 1
        if d < 2:
            raise ShapeError(f"{self._label()}: an autoregressive layer needs at least 2 features, got input "
                             f"shape {tuple(input_shape)}")
        masks = made_masks(d, self.hidden)
        masks[-1] = np.tile(masks[-1], (1, per_feature))         # column p * d + i: parameter p of feature i
        self.layers = ModuleList([Dense(n, activation=self.activation) for n in self.hidden]
                                 + [Dense(per_feature * d, kernel_init="zeros")])
        width, dtype = d, backend.get_default_dtype()
        for layer, mask in zip(self.layers, masks):
            layer.build((None, width))
            width = layer.units
            layer.register_buffer("mask", mask.astype(dtype))

    def _params(self, x: Tensor) -> Tensor:
        h = x
        for layer in self.layers:
            h = layer.apply_weights(h, layer.weight * Tensor._wrap(layer.mask.astype(x.dtype, copy=False)))
        return h.reshape(x.shape[0], 3 * self.bins - 1, self.features).transpose(0, 2, 1)

    def _forward(self, x):
        z, log_derivative = _spline(x, self._params(x), self.bins, self.tail_bound, inverse=False)
        return z, log_derivative.sum(axis=1)

    def _inverse(self, z):
        x = z * 0.0
        for i in range(self.features):
            out, log_derivative = _spline(z, self._params(x), self.bins, self.tail_bound, inverse=True)
            only_i = Tensor._wrap(np.eye(self.features, dtype=z.dtype)[i])
            x = x + only_i * (out - x)
        return x, log_derivative.sum(axis=1)

    def get_config(self) -> dict:
        return {"num_bins": self.bins, "tail_bound": self.tail_bound, "hidden": list(self.hidden),
                "activation": self.activation, "name": self.name}

    def extra_repr(self) -> str:
        return f"num_bins={self.bins}, tail_bound={self.tail_bound}, hidden={self.hidden}"
