"""Shared helpers of the Hamiltonian and Lagrangian networks: state checks, leaves, training."""

from __future__ import annotations

from collections.abc import Callable

import numpy

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn import Dense, Sequential
from lamina.nn.layer import positive_int
from lamina.nn.module import Module


def scalar_network(input_dim: int, hidden, activation: str) -> Sequential:
    """A built Dense network from ``input_dim`` features to one scalar."""
    widths = tuple(positive_int(n, "hidden widths") for n in hidden)
    network = Sequential(*[Dense(n, activation=activation, kernel_init="xavier_uniform") for n in widths],
                         Dense(1, kernel_init="xavier_uniform"))
    network.build((None, input_dim))
    return network


def field_array(time_derivative: Callable, states) -> numpy.ndarray:
    """``time_derivative(states, create_graph=False)`` as an array, off the graph, for states of any
    shape (..., 2 dim): what an integrator calls."""
    states = numpy.asarray(states)
    flat = states.reshape(-1, states.shape[-1]) if states.ndim else states
    return time_derivative(flat, create_graph=False).numpy().reshape(states.shape)


def leaf(values, dtype=None) -> Tensor:
    """``values`` as a tensor that requires grad: itself if it already does, else a fresh leaf
    (of ``dtype`` if given, else its own floating dtype)."""
    if isinstance(values, Tensor) and values.requires_grad and (dtype is None or values.dtype == dtype):
        return values
    array = numpy.asarray(values.data if isinstance(values, Tensor) else values)
    if dtype is None:
        dtype = array.dtype if array.dtype.kind == "f" else backend.get_default_dtype()
    return Tensor(array.astype(dtype), dtype=dtype, requires_grad=True)


def check_state(state, width: int | None, where: str, what: str = "(q, p)") -> int:
    """The number n of coordinates of states (N, 2n) (2n = ``width`` when given)."""
    shape = tuple(state.shape)
    if len(shape) != 2 or shape[1] % 2 or shape[1] == 0 or (width is not None and shape[1] != width):
        expected = f"(N, {width})" if width is not None else "(N, 2n)"
        raise ShapeError(f"{where}: states must have shape {expected}, {what} side by side, got {shape}")
    return shape[1] // 2


def as_column(value: Tensor, n_points: int, where: str) -> Tensor:
    """A scalar function's values (N,) or (N, 1) as (N, 1)."""
    if not isinstance(value, Tensor) or value.size != n_points:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ShapeError(f"{where}: the scalar function must return a Tensor of shape ({n_points},) or "
                         f"({n_points}, 1), got {shape}")
    return value.reshape(n_points, 1)


def gradient_or_zeros(g, like: Tensor) -> Tensor:
    if g is None:
        return Tensor._wrap(backend.xp.zeros(like.shape, dtype=like.dtype))
    return g if isinstance(g, Tensor) else Tensor._wrap(g)


def parameter_dtype(module: Module):
    return next(iter(module.parameters())).dtype


def fit_pairs(module: Module, loss: Callable, inputs, targets, steps: int, lr: float, batch_size: int | None,
              seed: int | None, where: str) -> list[float]:
    """Adam on ``loss(inputs[batch], targets[batch])`` for ``steps`` updates; the losses."""
    from lamina import optim

    inputs, targets = numpy.asarray(inputs), numpy.asarray(targets)
    if len(inputs) != len(targets):
        raise ShapeError(f"{where}: {len(inputs)} inputs but {len(targets)} targets")
    rng = numpy.random.default_rng(seed)
    optimizer = optim.Adam(module.parameters(), lr=lr)
    history = []
    for _ in range(positive_int(steps, f"{where}: steps")):
        rows = slice(None) if batch_size is None else rng.choice(len(inputs), min(batch_size, len(inputs)),
                                                                 replace=False)
        value = loss(inputs[rows], targets[rows])
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        history.append(float(value.item()))
    return history


def mean_squared(predicted: Tensor, target) -> Tensor:
    target = numpy.asarray(target, dtype=predicted.dtype)
    if target.shape != tuple(predicted.shape):
        raise ShapeError(f"the targets must have shape {tuple(predicted.shape)}, got {target.shape}")
    return F.mean((predicted - Tensor._wrap(target)) ** 2)
