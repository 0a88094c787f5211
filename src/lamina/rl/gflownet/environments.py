"""Environments whose states form a DAG, for generative flow networks.

States are integer rows; the last forward action is *stop* (terminate at the current state, which
becomes the object x with reward R(x)); every other forward action moves to a child, and the
backward action with index :meth:`backward_index` undoes it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy

from lamina.errors import ShapeError


class DAGEnv:
    """The interface the GFlowNet code uses; subclasses fill in the methods."""

    n_actions: int           # forward actions, the last one being stop
    n_backward_actions: int
    state_dim: int
    feature_dim: int

    @property
    def stop_action(self) -> int:
        return self.n_actions - 1

    def initial_states(self, n: int) -> numpy.ndarray:
        raise NotImplementedError

    def forward_mask(self, states: numpy.ndarray) -> numpy.ndarray:
        raise NotImplementedError

    def backward_mask(self, states: numpy.ndarray) -> numpy.ndarray:
        raise NotImplementedError

    def step(self, states: numpy.ndarray, actions: numpy.ndarray) -> numpy.ndarray:
        raise NotImplementedError

    def backward_index(self, actions: numpy.ndarray) -> numpy.ndarray:
        raise NotImplementedError

    def parents(self, states: numpy.ndarray, backward_actions: numpy.ndarray) -> tuple[numpy.ndarray, numpy.ndarray]:
        """The parents reached by (valid) backward actions and the forward actions leading back."""
        raise NotImplementedError

    def features(self, states: numpy.ndarray) -> numpy.ndarray:
        raise NotImplementedError

    def log_reward(self, states: numpy.ndarray) -> numpy.ndarray:
        raise NotImplementedError

    def all_states(self) -> numpy.ndarray:
        """Every state, parents before children (a topological order)."""
        raise NotImplementedError

    def terminal_states(self) -> numpy.ndarray:
        """The states where stop is allowed, in :meth:`all_states` order."""
        states = self.all_states()
        return states[self.forward_mask(states)[:, self.stop_action]]


class HyperGrid(DAGEnv):
    """The ``ndim``-dimensional grid {0..height-1}^ndim of Bengio et al. (2021), started at the
    origin; action i < ndim adds one to coordinate i, action ndim stops. The standard reward, with
    u = |x / (height - 1) - 0.5| per coordinate::

        R(x) = R0 + R1 prod_i [0.25 < u_i <= 0.5] + R2 prod_i [0.3 < u_i < 0.4]

    has 2^ndim modes near the corners; ``reward`` may also be a callable of the (n, ndim) states.
    """

    def __init__(self, ndim: int = 2, height: int = 8, reward: str | Callable = "standard",
                 R0: float = 0.1, R1: float = 0.5, R2: float = 2.0):
        if ndim < 1 or height < 2:
            raise ValueError(f"HyperGrid: needs ndim >= 1 and height >= 2, got ndim={ndim}, height={height}")
        if reward != "standard" and not callable(reward):
            raise ValueError(f"HyperGrid: reward must be 'standard' or a callable, got {reward!r}")
        self.ndim, self.height, self.reward = ndim, height, reward
        self.R0, self.R1, self.R2 = R0, R1, R2
        self.n_actions, self.n_backward_actions = ndim + 1, ndim
        self.state_dim, self.feature_dim = ndim, ndim * height

    def _check(self, states) -> numpy.ndarray:
        states = numpy.asarray(states)
        if states.ndim != 2 or states.shape[1] != self.ndim:
            raise ShapeError(f"HyperGrid: states must have shape (n, {self.ndim}), got {states.shape}")
        return states

    def initial_states(self, n: int) -> numpy.ndarray:
        return numpy.zeros((n, self.ndim), dtype=numpy.int64)

    def forward_mask(self, states) -> numpy.ndarray:
        states = self._check(states)
        return numpy.concatenate([states < self.height - 1, numpy.ones((len(states), 1), bool)], axis=1)

    def backward_mask(self, states) -> numpy.ndarray:
        return self._check(states) > 0

    def step(self, states, actions) -> numpy.ndarray:
        states = self._check(states).copy()
        rows = numpy.arange(len(states))
        states[rows, actions] += 1
        return states

    def backward_index(self, actions) -> numpy.ndarray:
        return numpy.asarray(actions)

    def parents(self, states, backward_actions) -> tuple[numpy.ndarray, numpy.ndarray]:
        states = self._check(states).copy()
        states[numpy.arange(len(states)), backward_actions] -= 1
        return states, numpy.asarray(backward_actions)

    def features(self, states) -> numpy.ndarray:
        """One-hot encoding of each coordinate, concatenated: (n, ndim * height)."""
        states = self._check(states)
        return numpy.eye(self.height, dtype=numpy.float32)[states].reshape(len(states), -1)

    def rewards(self, states) -> numpy.ndarray:
        states = self._check(states)
        if callable(self.reward):
            return numpy.asarray(self.reward(states), dtype=numpy.float64)
        u = numpy.abs(states / (self.height - 1) - 0.5)
        return (self.R0 + self.R1 * numpy.all((u > 0.25) & (u <= 0.5), axis=1)
                + self.R2 * numpy.all((u > 0.3) & (u < 0.4), axis=1))

    def log_reward(self, states) -> numpy.ndarray:
        return numpy.log(self.rewards(states))

    def all_states(self) -> numpy.ndarray:
        grid = numpy.array(list(itertools.product(range(self.height), repeat=self.ndim)), dtype=numpy.int64)
        return grid[numpy.argsort(grid.sum(axis=1), kind="stable")]


class SequenceEnv(DAGEnv):
    """Build a sequence by appending one of ``n_tokens`` tokens at a time, up to ``length``;
    stop is allowed once the sequence has at least ``min_length`` tokens (default ``length``).
    States are rows of ``length`` token ids padded with -1; ``reward_fn`` maps a tuple of tokens
    to a positive reward. Each state has one parent, so the backward policy is trivial
    (one backward action: remove the last token)."""

    def __init__(self, n_tokens: int, length: int, reward_fn: Callable[[tuple], float],
                 min_length: int | None = None):
        min_length = length if min_length is None else min_length
        if n_tokens < 1 or length < 1 or not 0 <= min_length <= length:
            raise ValueError(f"SequenceEnv: needs n_tokens >= 1, length >= 1, 0 <= min_length <= length, got "
                             f"n_tokens={n_tokens}, length={length}, min_length={min_length}")
        self.n_tokens, self.length, self.min_length, self.reward_fn = n_tokens, length, min_length, reward_fn
        self.n_actions, self.n_backward_actions = n_tokens + 1, 1
        self.state_dim, self.feature_dim = length, length * (n_tokens + 1)

    def _check(self, states) -> numpy.ndarray:
        states = numpy.asarray(states)
        if states.ndim != 2 or states.shape[1] != self.length:
            raise ShapeError(f"SequenceEnv: states must have shape (n, {self.length}), got {states.shape}")
        return states

    def lengths(self, states) -> numpy.ndarray:
        return (self._check(states) >= 0).sum(axis=1)

    def initial_states(self, n: int) -> numpy.ndarray:
        return numpy.full((n, self.length), -1, dtype=numpy.int64)

    def forward_mask(self, states) -> numpy.ndarray:
        lengths = self.lengths(states)[:, None]
        grow = numpy.broadcast_to(lengths < self.length, (len(lengths), self.n_tokens))
        return numpy.concatenate([grow, lengths >= self.min_length], axis=1)

    def backward_mask(self, states) -> numpy.ndarray:
        return self.lengths(states)[:, None] > 0

    def step(self, states, actions) -> numpy.ndarray:
        states = self._check(states).copy()
        states[numpy.arange(len(states)), self.lengths(states)] = actions
        return states

    def backward_index(self, actions) -> numpy.ndarray:
        return numpy.zeros_like(numpy.asarray(actions))

    def parents(self, states, backward_actions) -> tuple[numpy.ndarray, numpy.ndarray]:
        states = self._check(states).copy()
        rows, last = numpy.arange(len(states)), self.lengths(states) - 1
        actions = states[rows, last].copy()
        states[rows, last] = -1
        return states, actions

    def features(self, states) -> numpy.ndarray:
        """One-hot encoding per position, the last slot meaning 'empty': (n, length * (n_tokens + 1))."""
        states = self._check(states)
        return numpy.eye(self.n_tokens + 1, dtype=numpy.float32)[states].reshape(len(states), -1)

    def log_reward(self, states) -> numpy.ndarray:
        states = self._check(states)
        return numpy.log(numpy.array([self.reward_fn(tuple(int(t) for t in row if t >= 0)) for row in states],
                                     dtype=numpy.float64))

    def all_states(self) -> numpy.ndarray:
        rows = []
        for n in range(self.length + 1):
            for tokens in itertools.product(range(self.n_tokens), repeat=n):
                rows.append(list(tokens) + [-1] * (self.length - n))
        return numpy.array(rows, dtype=numpy.int64)


def as_state_rows(states: Sequence) -> list[tuple]:
    """States as hashable tuples (for dictionaries keyed by state)."""
    return [tuple(int(v) for v in row) for row in numpy.asarray(states)]
