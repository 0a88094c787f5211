"""Modern (continuous) Hopfield networks as layers (Ramsauer et al. 2020, "Hopfield Networks is
All You Need"), with the interface of the authors' hopfield-layers package.

N stored patterns Y (rows, N x d) and state patterns xi (rows). The energy
E(xi) = -lse(beta, Y xi) + xi.xi / 2 + const falls under the update

    xi_new = Y^T softmax(beta Y xi)            (rows: Xi_new = softmax(beta Xi Y^T) Y)

which retrieves a stored pattern in one step when the patterns are well separated and beta is
large. :func:`hopfield_retrieval` runs ``update_steps`` updates; the last one reads out
``values`` (rows paired with the stored patterns) instead of Y. With learned projections,
state patterns R, stored patterns Y and pattern projections (the values) V:

    Q = R W_q,  K = Y W_k,  Z = softmax(beta Q K^T) (V W_v)

one update with beta = 1 / sqrt(d_k) is scaled dot-product attention.

* :class:`Hopfield`: stored patterns from one input, state patterns from another (by default
  the same: self-association), all three projected.
* :class:`HopfieldLayer`: the stored patterns and their values are learned parameters, the
  input gives the state patterns (a learned lookup, like a dense layer of prototypes).
* :class:`HopfieldPooling`: learned static state patterns (queries) retrieve from the input's
  patterns; a set (batch, n, d) pools to (batch, num_queries * size).
"""

from __future__ import annotations

import math

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn import init as initializers
from lamina.nn.dense import Dense
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module, as_tensor
from lamina.nn.set_layers import check_set

__all__ = ["Hopfield", "HopfieldLayer", "HopfieldPooling", "hopfield_retrieval"]


def _beta(beta, size: int, who: str) -> float:
    if beta is None:
        return 1.0 / math.sqrt(size)
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta > 0:
        raise ValueError(f"{who}: beta must be a positive number (or None for 1/sqrt(d)), got {beta!r}")
    return float(beta)


def hopfield_retrieval(state, stored, values=None, beta: float | None = None, update_steps: int = 1) -> Tensor:
    """``update_steps`` modern Hopfield updates Xi <- softmax(beta Xi Y^T) Y of the state
    patterns ``state`` (..., n_state, d) towards the stored patterns ``stored`` (..., N, d),
    the last one reading out ``values`` (..., N, d_v) (Y itself by default). ``beta`` defaults
    to 1 / sqrt(d). Returns (..., n_state, d_v)."""
    state, stored = as_tensor(state), as_tensor(stored)
    if state.ndim < 2 or stored.ndim < 2 or state.shape[-1] != stored.shape[-1]:
        raise ShapeError(f"hopfield_retrieval: state patterns {tuple(state.shape)} and stored patterns "
                         f"{tuple(stored.shape)} must be (..., n, d) with the same d")
    values = stored if values is None else as_tensor(values)
    if values.ndim < 2 or values.shape[-2] != stored.shape[-2]:
        raise ShapeError(f"hopfield_retrieval: values {tuple(values.shape)} must have one row per stored "
                         f"pattern ({stored.shape[-2]})")
    beta = _beta(beta, stored.shape[-1], "hopfield_retrieval")
    steps = positive_int(update_steps, "hopfield_retrieval: update_steps")
    keys_t = F.swapaxes(stored, -1, -2)
    for step in range(steps):
        weights = F.softmax(beta * F.matmul(state, keys_t), axis=-1)
        state = F.matmul(weights, values if step == steps - 1 else stored)
    return state


@register_layer
class Hopfield(Module):
    """A modern Hopfield association (module docstring): ``layer(stored, state=None,
    values=None)`` with stored patterns (batch, N, d_y), state patterns (batch, n, d_r) and
    pattern projections (batch, N, d_v) (both default to ``stored``) returns (batch, n,
    ``output_size`` or ``hidden_size``).

    Sub-layers ``query`` (on the state patterns), ``key`` (on the stored patterns) and ``value``
    (on the pattern projections), each Dense(hidden_size), and ``output`` (Dense(output_size))
    when ``output_size`` is given. ``beta`` defaults to 1 / sqrt(hidden_size); the first
    ``update_steps - 1`` updates move the projected state patterns in the key space, the last
    one reads out the values.
    """

    def __init__(self, hidden_size: int, output_size: int | None = None, beta: float | None = None,
                 update_steps: int = 1, use_bias: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.hidden_size = positive_int(hidden_size, "Hopfield: hidden_size")
        self.output_size = None if output_size is None else positive_int(output_size, "Hopfield: output_size")
        self.beta = _beta(beta, hidden_size, "Hopfield")
        self.update_steps = positive_int(update_steps, "Hopfield: update_steps")
        self.use_bias = bool(use_bias)
        self.query, self.key, self.value = (Dense(hidden_size, use_bias=use_bias, kernel_init="xavier_uniform")
                                            for _ in range(3))
        if self.output_size is not None:
            self.output = Dense(self.output_size, use_bias=use_bias, kernel_init="xavier_uniform")

    def forward(self, stored, state=None, values=None):
        stored = check_set(self, stored, "set of stored patterns")
        state = stored if state is None else check_set(self, state, "set of state patterns")
        values = stored if values is None else check_set(self, values, "set of pattern projections")
        if not (len(stored) == len(state) == len(values)) or stored.shape[1] != values.shape[1]:
            raise ShapeError(f"{self._label()}: stored patterns {tuple(stored.shape)}, state patterns "
                             f"{tuple(state.shape)} and values {tuple(values.shape)} must share the batch, and "
                             "the values need one row per stored pattern")
        retrieved = hopfield_retrieval(self.query(state), self.key(stored), self.value(values), self.beta,
                                       self.update_steps)
        return retrieved if self.output_size is None else self.output(retrieved)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1], self.output_size or self.hidden_size)

    def get_config(self) -> dict:
        return {"hidden_size": self.hidden_size, "output_size": self.output_size, "beta": self.beta,
                "update_steps": self.update_steps, "use_bias": self.use_bias, "name": self.name}

    def extra_repr(self) -> str:
        return f"hidden_size={self.hidden_size}, beta={self.beta:.4g}, update_steps={self.update_steps}"


@register_layer
class HopfieldLayer(Module):
    """Learned stored patterns: input state patterns (batch, n, d) or (batch, d) -> (batch, n,
    output_size) or (batch, output_size).

    Parameters ``patterns`` (num_patterns, hidden_size), the stored patterns (keys), and
    ``pattern_values`` (num_patterns, output_size), their read-outs (both N(0, 1/hidden_size));
    sub-layer ``query`` (Dense(hidden_size)) projects the input. Output =
    hopfield_retrieval(query(x), patterns, pattern_values, beta, update_steps).
    """

    def __init__(self, num_patterns: int, hidden_size: int, output_size: int, beta: float | None = None,
                 update_steps: int = 1, use_bias: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.num_patterns = positive_int(num_patterns, "HopfieldLayer: num_patterns")
        self.hidden_size = positive_int(hidden_size, "HopfieldLayer: hidden_size")
        self.output_size = positive_int(output_size, "HopfieldLayer: output_size")
        self.beta = _beta(beta, hidden_size, "HopfieldLayer")
        self.update_steps = positive_int(update_steps, "HopfieldLayer: update_steps")
        self.use_bias = bool(use_bias)
        dtype = backend.get_default_dtype()
        scale = 1.0 / math.sqrt(hidden_size)
        self.add_parameter("patterns", initializers.normal(scale)((num_patterns, hidden_size), dtype=dtype))
        self.add_parameter("pattern_values", initializers.normal(scale)((num_patterns, output_size), dtype=dtype))
        self.query = Dense(hidden_size, use_bias=use_bias, kernel_init="xavier_uniform")

    def forward(self, x):
        x = as_tensor(x)
        if x.ndim not in (2, 3):
            raise ShapeError(f"{self._label()}: expected state patterns (batch, d) or (batch, n, d); "
                             f"got shape {tuple(x.shape)}")
        return hopfield_retrieval(self.query(x), self.patterns, self.pattern_values, self.beta, self.update_steps)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.output_size)

    def get_config(self) -> dict:
        return {"num_patterns": self.num_patterns, "hidden_size": self.hidden_size, "output_size": self.output_size,
                "beta": self.beta, "update_steps": self.update_steps, "use_bias": self.use_bias, "name": self.name}

    def extra_repr(self) -> str:
        return f"num_patterns={self.num_patterns}, hidden_size={self.hidden_size}, output_size={self.output_size}"


@register_layer
class HopfieldPooling(Module):
    """Pooling by learned static state patterns: a set (batch, N, d) -> (batch, num_queries *
    size), size = ``output_size`` or ``hidden_size``.

    Parameter ``queries`` (num_queries, hidden_size) (N(0, 1/hidden_size)); sub-layers ``key``
    and ``value`` (Dense(hidden_size)) on the input and ``output`` (Dense(output_size)) when
    ``output_size`` is given.
    """

    def __init__(self, hidden_size: int, num_queries: int = 1, output_size: int | None = None,
                 beta: float | None = None, update_steps: int = 1, use_bias: bool = True, name: str | None = None):
        super().__init__(name=name)
        self.hidden_size = positive_int(hidden_size, "HopfieldPooling: hidden_size")
        self.num_queries = positive_int(num_queries, "HopfieldPooling: num_queries")
        self.output_size = None if output_size is None else positive_int(output_size, "HopfieldPooling: output_size")
        self.beta = _beta(beta, hidden_size, "HopfieldPooling")
        self.update_steps = positive_int(update_steps, "HopfieldPooling: update_steps")
        self.use_bias = bool(use_bias)
        dtype = backend.get_default_dtype()
        self.add_parameter("queries", initializers.normal(hidden_size ** -0.5)((num_queries, hidden_size),
                                                                               dtype=dtype))
        self.key = Dense(hidden_size, use_bias=use_bias, kernel_init="xavier_uniform")
        self.value = Dense(hidden_size, use_bias=use_bias, kernel_init="xavier_uniform")
        if self.output_size is not None:
            self.output = Dense(self.output_size, use_bias=use_bias, kernel_init="xavier_uniform")

    def forward(self, x):
        x = check_set(self, x, "set of stored patterns")
        pooled = hopfield_retrieval(self.queries, self.key(x), self.value(x), self.beta, self.update_steps)
        if self.output_size is not None:
            pooled = self.output(pooled)
        return F.reshape(pooled, x.shape[0], -1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_queries * (self.output_size or self.hidden_size))

    def get_config(self) -> dict:
        return {"hidden_size": self.hidden_size, "num_queries": self.num_queries, "output_size": self.output_size,
                "beta": self.beta, "update_steps": self.update_steps, "use_bias": self.use_bias, "name": self.name}

    def extra_repr(self) -> str:
        return f"hidden_size={self.hidden_size}, num_queries={self.num_queries}, beta={self.beta:.4g}"
