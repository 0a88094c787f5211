"""ODE-RNNs (Rubanova, Chen and Duvenaud 2019, "Latent ODEs for irregularly-sampled time
series", Algorithm 1): a recurrent network whose hidden state follows an ODE between
observations and jumps at each observation.

For observations x_1 .. x_T at times t_1 < .. < t_T (a batch shares one grid: the union of
its sequences' times, with a mask m_i saying which entries were observed),

    h_i' = ODESolve(f_theta, h_{i-1}, (t_{i-1}, t_i)),    dh/dt = f_theta(h) (an MLP, :class:`ODEFunc`)
    h_i  = GRUCell([x_i * m_i, m_i], h_i')                 where sequence observed anything at t_i,
    h_i  = h_i'                                             where it observed nothing,

starting from h_0 = 0 at the first time processed. The GRU reads the values with the
unobserved ones zeroed and the mask beside them, as the paper does. ``reverse=True`` runs
from t_T back to t_1 (the ODE solved backwards in time): the encoder of
:class:`~lamina.models.LatentODE`, whose last state summarises the whole sequence at t_1.

The ODE legs are solved by :func:`lamina.functional.odeint` (``method``, ``rtol``, ``atol``,
``options`` as there); gradients go back through the solver's steps.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.ode import check_method, check_times
from lamina.models.flows import _hidden_sizes
from lamina.nn import Dense, GRUCell, ModuleList
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import positive_int
from lamina.nn.module import Module, as_tensor

__all__ = ["ODEFunc", "ODERNN", "check_irregular_batch"]

# N(0, 0.1^2) weights (zero biases) start the dynamics slow, as in the paper's code: a
# He-initialised MLP makes the state grow by orders of magnitude over a few time units.
_SMALL = {"name": "normal", "std": 0.1}


def _built(layer: Module, input_shape: tuple) -> Module:
    layer.build(input_shape)
    layer.built = True
    return layer


def _single_hidden(hidden, who: str) -> tuple[int, ...]:
    """``hidden``: an int (one layer of that width) or a sequence of widths."""
    if isinstance(hidden, int) and not isinstance(hidden, bool):
        return (positive_int(hidden, f"{who}: hidden"),)
    return _hidden_sizes(hidden, who)


@register_with_arguments
class ODEFunc(Module):
    """dh/dt = f(h): an MLP from ``dim`` values through ``hidden`` widths (an int: one layer)
    with ``activation`` back to ``dim``; time-invariant (``forward(t, h)`` ignores t, as the
    ODE solvers call it). Weights start N(0, 0.1^2). Built at construction."""

    def __init__(self, dim: int, hidden=(32,), activation: str = "tanh", name: str | None = None):
        super().__init__(name=name)
        self.dim = positive_int(dim, "ODEFunc: dim")
        self.hidden = _single_hidden(hidden, "ODEFunc")
        widths = (self.dim, *self.hidden)
        self.layers = ModuleList([_built(Dense(n, activation=activation, kernel_init=_SMALL), (None, d))
                                  for d, n in zip(widths[:-1], widths[1:])]
                                 + [_built(Dense(self.dim, kernel_init=_SMALL), (None, widths[-1]))])
        self.built = True

    def forward(self, t, h) -> Tensor:
        h = as_tensor(h)
        if h.ndim < 1 or h.shape[-1] != self.dim:
            raise ShapeError(f"{self._label()}: got a state of shape {tuple(h.shape)}; expected (batch, {self.dim})")
        for layer in self.layers:
            h = layer(h)
        return h


def check_irregular_batch(values, times, mask, input_dim: int, who: str) -> tuple[Tensor, np.ndarray, np.ndarray]:
    """(values as a tensor, times as float64, mask as 0/1 in the values' dtype), checked:
    values (batch, T, input_dim), times (T,) strictly increasing, mask None (all observed)
    or of the values' shape."""
    values = as_tensor(values)
    if values.ndim != 3 or values.shape[-1] != input_dim:
        raise ShapeError(f"{who}: values have shape {tuple(values.shape)}; expected (batch, time, {input_dim})")
    grid = np.asarray(backend.to_numpy(times.data) if isinstance(times, Tensor) else times, dtype=np.float64)
    if grid.ndim != 1 or grid.shape[0] != values.shape[1]:
        raise ShapeError(f"{who}: times have shape {grid.shape}; expected ({values.shape[1]},), one time per step "
                         "of values (a batch shares the union of its sequences' times: see "
                         "lamina.data.union_grid)")
    if grid.size > 1 and not np.all(np.diff(grid) > 0):
        i = int(np.flatnonzero(np.diff(grid) <= 0)[0])
        raise ValueError(f"{who}: times must be strictly increasing, got times[{i}]={float(grid[i])!r} and "
                         f"times[{i + 1}]={float(grid[i + 1])!r}")
    check_times(grid, who)
    dtype = values.dtype
    if mask is None:
        return values, grid, np.ones(values.shape, dtype=dtype)
    mask = np.asarray(backend.to_numpy(mask.data) if isinstance(mask, Tensor) else mask)
    if mask.shape != tuple(values.shape):
        raise ShapeError(f"{who}: mask has shape {mask.shape} but values have shape {tuple(values.shape)}; expected "
                         "the same shape (1 where an entry was observed, 0 where not)")
    if not np.isin(mask, (0, 1)).all():
        raise ValueError(f"{who}: mask must hold only 0 and 1 (or booleans)")
    return values, grid, mask.astype(dtype)


@register_with_arguments
class ODERNN(Module):
    """The ODE-RNN (module notes): ``forward(values, times, mask=None)`` -> the hidden states
    (batch, T, ``hidden``) after each time of ``times``, in the order of ``times``.

    ``values`` (batch, T, ``input_dim``) on the shared grid ``times`` (T,), strictly
    increasing; ``mask`` (batch, T, ``input_dim``), 1 where observed (None: everything).
    ``ode_hidden``: the widths of :class:`ODEFunc` (an int: one layer); ``reverse``: run from
    the last time to the first. ``final(values, times, mask, until=None)`` -> the last state
    (batch, ``hidden``), carried on by the ODE to the time ``until`` when given. Built at
    construction."""

    def __init__(self, input_dim: int, hidden: int = 20, ode_hidden=(32,), activation: str = "tanh",
                 reverse: bool = False, method: str = "rk4", rtol: float = 1e-3, atol: float = 1e-4,
                 options: dict | None = None, name: str | None = None):
        super().__init__(name=name)
        self.input_dim = positive_int(input_dim, "ODERNN: input_dim")
        self.hidden = positive_int(hidden, "ODERNN: hidden")
        self.reverse = bool(reverse)
        check_method(method, "ODERNN")
        self.method, self.rtol, self.atol, self.options = method, rtol, atol, options
        self.dynamics = ODEFunc(self.hidden, ode_hidden, activation)
        self.cell = _built(GRUCell(self.hidden), (None, 2 * self.input_dim))
        self.built = True

    def evolve(self, h: Tensor, start: float, end: float) -> Tensor:
        """h carried by dh/dt = f(h) from time ``start`` to ``end`` (either direction)."""
        if start == end:
            return h
        path = F.odeint(self.dynamics, h, [start, end], method=self.method, rtol=self.rtol, atol=self.atol,
                        options=self.options, who=self._label())
        return path[-1]

    def _update(self, h: Tensor, x: Tensor, m: np.ndarray) -> Tensor:
        """The GRU jump at one time, kept only for the sequences that observed something."""
        new = self.cell(F.concat([x * m, Tensor._wrap(backend.xp.asarray(m))], axis=1), h)
        seen = (m.sum(axis=1, keepdims=True) > 0).astype(m.dtype)
        if seen.all():
            return new
        return new * seen + h * (1 - seen)

    def _run(self, values, times, mask) -> tuple[list[Tensor], np.ndarray]:
        values, grid, mask = check_irregular_batch(values, times, mask, self.input_dim, self._label())
        steps = grid.shape[0]
        h = Tensor._wrap(backend.xp.zeros((values.shape[0], self.hidden), dtype=values.dtype))
        states: list = [None] * steps
        previous = None
        for i in (reversed(range(steps)) if self.reverse else range(steps)):
            if previous is not None:
                h = self.evolve(h, float(grid[previous]), float(grid[i]))
            h = self._update(h, values[:, i], mask[:, i])
            states[i], previous = h, i
        return states, grid

    def forward(self, values, times, mask=None) -> Tensor:
        states, _ = self._run(values, times, mask)
        return F.stack(states, axis=1)

    def final(self, values, times, mask=None, until: float | None = None) -> Tensor:
        """The state after the last time processed (t_1 when ``reverse``, else t_T), carried
        on to ``until`` if given."""
        states, grid = self._run(values, times, mask)
        last = 0 if self.reverse else len(states) - 1
        h = states[last]
        return h if until is None else self.evolve(h, float(grid[last]), float(until))

    def extra_repr(self) -> str:
        return (f"{self.input_dim} -> {self.hidden}, method={self.method!r}"
                + (", reverse=True" if self.reverse else ""))
