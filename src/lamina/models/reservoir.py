"""Echo-state networks (Jaeger 2001; Lukosevicius, "A Practical Guide to Applying Echo State
Networks", 2012): a fixed random recurrent reservoir and a linear read-out fitted by ridge
regression.

Input u(t) (n_inputs), reservoir state x(t) (n_reservoir), leaking rate a:

    x~(t) = tanh(W_in [1; u(t)] + W x(t-1))
    x(t)  = (1 - a) x(t-1) + a x~(t)
    y(t)  = W_out [1; u(t); x(t)]

W_in ~ U(-input_scaling, input_scaling); W has a fraction ``density`` of nonzero entries from
U(-1, 1), rescaled so that its spectral radius (largest |eigenvalue|) is ``spectral_radius``.
The read-out is closed form: with the collected features X (one column [1; u; x] per step after
the ``washout``) and targets Y (columns),

    W_out = Y X^T (X X^T + ridge I)^-1

In generative mode the output is fed back as the next input (outputs and inputs the same size).
"""

from __future__ import annotations

import numpy

from lamina import backend
from lamina.errors import ShapeError
from lamina.nn.layer import positive_int

__all__ = ["EchoStateNetwork"]


def _nonnegative_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be an int >= 0, got {value!r}")
    return value


class EchoStateNetwork:
    """An echo-state network (module docstring). The weights are drawn when the input size is
    first seen (or given as ``n_inputs``).

    ``fit(u, y)`` runs the reservoir over the sequence ``u`` (T, n_inputs), drops the first
    ``washout`` steps and solves the ridge read-out for targets ``y`` (T, n_outputs);
    ``predict(u)`` continues from the state the last call ended in (``reset=True`` starts at 0);
    ``generate(steps)`` feeds each output back as the next input. Attributes ``input_weights``
    (n_reservoir, 1 + n_inputs), ``reservoir_weights`` (n_reservoir, n_reservoir),
    ``output_weights`` (n_outputs, 1 + n_inputs + n_reservoir), ``state`` (n_reservoir,) and
    ``last_output``.

    Example::

        esn = EchoStateNetwork(300, spectral_radius=0.9, leak_rate=0.3, seed=0)
        esn.fit(series[:-1], series[1:])                     # one-step-ahead prediction
        forecast = esn.generate(100)
    """

    def __init__(self, n_reservoir: int, spectral_radius: float = 0.9, leak_rate: float = 1.0,
                 input_scaling: float = 1.0, ridge: float = 1e-6, washout: int = 100, density: float = 1.0,
                 n_inputs: int | None = None, seed: int | None = None):
        self.n_reservoir = positive_int(n_reservoir, "EchoStateNetwork: n_reservoir")
        if not spectral_radius > 0:
            raise ValueError(f"EchoStateNetwork: spectral_radius must be positive, got {spectral_radius!r}")
        if not 0 < leak_rate <= 1:
            raise ValueError(f"EchoStateNetwork: leak_rate must be in (0, 1], got {leak_rate!r}")
        if not input_scaling > 0:
            raise ValueError(f"EchoStateNetwork: input_scaling must be positive, got {input_scaling!r}")
        if not ridge >= 0:
            raise ValueError(f"EchoStateNetwork: ridge must be >= 0, got {ridge!r}")
        if not 0 < density <= 1:
            raise ValueError(f"EchoStateNetwork: density must be in (0, 1], got {density!r}")
        self.spectral_radius, self.leak_rate = float(spectral_radius), float(leak_rate)
        self.input_scaling, self.ridge, self.density = float(input_scaling), float(ridge), float(density)
        self.washout = _nonnegative_int(washout, "EchoStateNetwork: washout")
        self._rng = backend.rng() if seed is None else numpy.random.default_rng(seed)
        self.n_inputs: int | None = None
        self.input_weights = self.reservoir_weights = self.output_weights = None
        self.state = numpy.zeros(self.n_reservoir)
        self.last_output = None
        if n_inputs is not None:
            self._draw_weights(positive_int(n_inputs, "EchoStateNetwork: n_inputs"))

    def _draw_weights(self, n_inputs: int) -> None:
        n = self.n_reservoir
        self.n_inputs = n_inputs
        self.input_weights = self._rng.uniform(-self.input_scaling, self.input_scaling, (n, 1 + n_inputs))
        weights = self._rng.uniform(-1.0, 1.0, (n, n))
        if self.density < 1:
            weights *= self._rng.random((n, n)) < self.density
        radius = numpy.abs(numpy.linalg.eigvals(weights)).max()
        if radius == 0:
            raise ValueError(f"EchoStateNetwork: the random reservoir has spectral radius 0 (density "
                             f"{self.density} too low for {n} units); raise density")
        self.reservoir_weights = weights * (self.spectral_radius / radius)

    def _sequence(self, u, what: str = "inputs") -> numpy.ndarray:
        u = numpy.asarray(u, dtype=numpy.float64)
        if u.ndim == 1:
            u = u[:, None]
        if u.ndim != 2:
            raise ShapeError(f"EchoStateNetwork: {what} must be (T, features) or (T,); got shape {u.shape}")
        if self.n_inputs is None and what == "inputs":
            self._draw_weights(u.shape[1])
        elif what == "inputs" and u.shape[1] != self.n_inputs:
            raise ShapeError(f"EchoStateNetwork: inputs of width {u.shape[1]}; this network takes "
                             f"n_inputs={self.n_inputs}")
        return u

    def step(self, u: numpy.ndarray, state: numpy.ndarray) -> numpy.ndarray:
        """x(t) from x(t-1) = ``state`` (..., n_reservoir) and u(t) (..., n_inputs)."""
        drive = numpy.concatenate([numpy.ones(u.shape[:-1] + (1,)), u], axis=-1) @ self.input_weights.T
        candidate = numpy.tanh(drive + state @ self.reservoir_weights.T)
        return (1 - self.leak_rate) * state + self.leak_rate * candidate

    def states(self, u, initial_state=None, reset: bool = False) -> numpy.ndarray:
        """The reservoir states x(1..T) (T, n_reservoir) driven by ``u``, from ``initial_state``
        (or 0 with ``reset``, else the current state); the final state is kept."""
        u = self._sequence(u)
        if initial_state is not None:
            state = numpy.asarray(initial_state, dtype=numpy.float64)
            if state.shape != (self.n_reservoir,):
                raise ShapeError(f"EchoStateNetwork: initial_state of shape {state.shape}; "
                                 f"expected ({self.n_reservoir},)")
        else:
            state = numpy.zeros(self.n_reservoir) if reset else self.state
        collected = numpy.empty((len(u), self.n_reservoir))
        for t, u_t in enumerate(u):
            state = self.step(u_t, state)
            collected[t] = state
        self.state = state
        return collected

    def features(self, u: numpy.ndarray, states: numpy.ndarray) -> numpy.ndarray:
        """The read-out's inputs [1, u, x] per step, (T, 1 + n_inputs + n_reservoir)."""
        return numpy.concatenate([numpy.ones((len(u), 1)), u, states], axis=1)

    def fit(self, u, y) -> EchoStateNetwork:
        """Drive the reservoir from 0 with ``u`` (T, n_inputs) and solve the ridge read-out to
        ``y`` (T, n_outputs) on the steps after the washout."""
        u, y = self._sequence(u), self._sequence(y, "targets")
        if len(u) != len(y):
            raise ShapeError(f"EchoStateNetwork.fit: {len(u)} input steps but {len(y)} target steps")
        if len(u) <= self.washout:
            raise ValueError(f"EchoStateNetwork.fit: {len(u)} steps leave nothing after washout={self.washout}")
        features = self.features(u, self.states(u, reset=True))[self.washout:]
        targets = y[self.washout:]
        gram = features.T @ features + self.ridge * numpy.eye(features.shape[1])
        self.output_weights = numpy.linalg.solve(gram, features.T @ targets).T
        self.last_output = features[-1] @ self.output_weights.T
        return self

    def _readout(self, features: numpy.ndarray) -> numpy.ndarray:
        if self.output_weights is None:
            raise RuntimeError("EchoStateNetwork: call fit before predict or generate")
        return features @ self.output_weights.T

    def predict(self, u, reset: bool = False) -> numpy.ndarray:
        """The outputs y(t) (T, n_outputs) for inputs ``u``, the reservoir continuing from its
        current state (from 0 with ``reset``)."""
        u = self._sequence(u)
        outputs = self._readout(self.features(u, self.states(u, reset=reset)))
        self.last_output = outputs[-1] if len(outputs) else self.last_output
        return outputs

    def generate(self, steps: int, first_input=None) -> numpy.ndarray:
        """``steps`` outputs (steps, n_outputs), each fed back as the next input; the first input
        is ``first_input`` or the last output of fit/predict."""
        steps = positive_int(steps, "EchoStateNetwork.generate: steps")
        if self.output_weights is None:
            raise RuntimeError("EchoStateNetwork: call fit before predict or generate")
        if self.output_weights.shape[0] != self.n_inputs:
            raise ShapeError(f"EchoStateNetwork.generate: feeding outputs back needs as many outputs "
                             f"({self.output_weights.shape[0]}) as inputs ({self.n_inputs})")
        current = self.last_output if first_input is None else numpy.asarray(first_input, numpy.float64)
        current = numpy.reshape(current, (self.n_inputs,))
        outputs = numpy.empty((steps, self.n_inputs))
        for t in range(steps):
            self.state = self.step(current, self.state)
            current = self._readout(numpy.concatenate([[1.0], current, self.state]))
            outputs[t] = current
        self.last_output = current
        return outputs

    def __repr__(self) -> str:
        return (f"EchoStateNetwork(n_reservoir={self.n_reservoir}, spectral_radius={self.spectral_radius}, "
                f"leak_rate={self.leak_rate}, input_scaling={self.input_scaling}, ridge={self.ridge}, "
                f"washout={self.washout})")
