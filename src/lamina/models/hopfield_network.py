"""The classic Hopfield network (Hopfield 1982): an associative memory of bipolar patterns.

States s in {-1, +1}^n, symmetric weights W with a zero diagonal, thresholds theta (zero by
default). The energy

    E(s) = -1/2 s^T W s + theta . s

never increases when one unit at a time takes s_i = sign(W_i s - theta_i) (asynchronous
recall), so the state descends to a fixed point; synchronous recall updates every unit at
once (it may end in a 2-cycle). Learning rules, for patterns xi^mu (mu = 1..p):

    Hebbian:  W = 1/n sum_mu xi^mu xi^mu^T,  diagonal zeroed
    Storkey (1997), one pattern at a time, with the local fields h_ij = sum_{k != i, j} W_ik xi_k:
              W_ij += 1/n (xi_i xi_j - xi_i h_ji - h_ij xi_j)

Hebbian storage holds about 0.138 n random patterns (Amit, Gutfreund & Sompolinsky 1985);
Storkey's rule holds more and keeps the weights symmetric.
"""

from __future__ import annotations

import numpy

from lamina import backend
from lamina.errors import ShapeError
from lamina.nn.layer import positive_int

__all__ = ["HopfieldNetwork"]

RULES = ("hebbian", "storkey")
UPDATES = ("asynchronous", "synchronous")


def _sign(x: numpy.ndarray, previous: numpy.ndarray) -> numpy.ndarray:
    """sign(x), a unit keeping its previous state where x is exactly 0."""
    return numpy.where(x > 0, 1.0, numpy.where(x < 0, -1.0, previous))


class HopfieldNetwork:
    """A Hopfield network of ``n`` bipolar units (module docstring).

    ``store(patterns, rule)`` learns (n_patterns, n) patterns of +-1 (adding to what is stored);
    ``recall(states, update, max_steps)`` runs the dynamics to a fixed point; ``energy(states)``
    gives E per row. Attributes ``weights`` (n, n) and ``thresholds`` (n,).

    Example::

        net = HopfieldNetwork(100)
        net.store(patterns, rule="storkey")
        restored = net.recall(noisy, update="asynchronous", seed=0)
    """

    def __init__(self, n: int, thresholds=None):
        self.n = positive_int(n, "HopfieldNetwork: n")
        self.weights = numpy.zeros((n, n))
        self.thresholds = numpy.zeros(n) if thresholds is None else numpy.asarray(thresholds, numpy.float64)
        if self.thresholds.shape != (n,):
            raise ShapeError(f"HopfieldNetwork: thresholds of shape {self.thresholds.shape}; expected ({n},)")
        self.n_patterns = 0

    def _bipolar(self, states, what: str) -> numpy.ndarray:
        states = numpy.asarray(states, dtype=numpy.float64)
        if states.ndim == 1:
            states = states[None]
        if states.ndim != 2 or states.shape[1] != self.n:
            raise ShapeError(f"HopfieldNetwork: {what} must be (batch, n={self.n}) or (n,); got shape {states.shape}")
        if not numpy.all(numpy.abs(states) == 1):
            raise ValueError(f"HopfieldNetwork: {what} must be bipolar (every entry -1 or +1); "
                             f"found values {numpy.unique(states[numpy.abs(states) != 1])[:5].tolist()}")
        return states

    def store(self, patterns, rule: str = "hebbian") -> HopfieldNetwork:
        """Add ``patterns`` (p, n) of +-1 to the weights by the ``rule`` 'hebbian' or 'storkey'."""
        if rule not in RULES:
            raise ValueError(f"HopfieldNetwork.store: rule must be one of {RULES}, got {rule!r}")
        patterns = self._bipolar(patterns, "patterns")
        if rule == "hebbian":
            self.weights += patterns.T @ patterns / self.n
            numpy.fill_diagonal(self.weights, 0.0)
        else:
            for xi in patterns:
                self.weights += self._storkey_change(xi)
        self.n_patterns += len(patterns)
        return self

    def _storkey_change(self, xi: numpy.ndarray) -> numpy.ndarray:
        w = self.weights
        diagonal = numpy.diag(w)
        # field[i, j] = h_ij = sum_k W_ik xi_k - W_ii xi_i - W_ij xi_j
        field = (w @ xi)[:, None] - (diagonal * xi)[:, None] - w * xi[None, :]
        change = (numpy.outer(xi, xi) - xi[:, None] * field.T - field * xi[None, :]) / self.n
        numpy.fill_diagonal(change, 0.0)
        return change

    def energy(self, states) -> numpy.ndarray:
        """E(s) = -1/2 s^T W s + theta . s for each row, (batch,)."""
        s = self._bipolar(states, "states")
        return -0.5 * numpy.einsum("bi,ij,bj->b", s, self.weights, s) + s @ self.thresholds

    def recall(self, states, update: str = "asynchronous", max_steps: int = 100, seed: int | None = None,
               return_steps: bool = False):
        """Run the dynamics from ``states`` (batch, n) or (n,) until no unit changes (or
        ``max_steps`` sweeps). 'asynchronous': each sweep visits the units one at a time in a
        random order; 'synchronous': all units at once. Returns the final states (the input's
        shape) and, with ``return_steps``, the sweeps taken (per row)."""
        if update not in UPDATES:
            raise ValueError(f"HopfieldNetwork.recall: update must be one of {UPDATES}, got {update!r}")
        one = numpy.asarray(states).ndim == 1
        s = self._bipolar(states, "states").copy()
        max_steps = positive_int(max_steps, "HopfieldNetwork.recall: max_steps")
        rng = backend.rng() if seed is None else numpy.random.default_rng(seed)
        steps = numpy.full(len(s), max_steps)
        active = numpy.ones(len(s), dtype=bool)
        for sweep in range(1, max_steps + 1):
            before = s[active].copy()
            if update == "synchronous":
                s[active] = _sign(s[active] @ self.weights - self.thresholds, s[active])
            else:
                rows = s[active]
                for i in rng.permutation(self.n):
                    rows[:, i] = _sign(rows @ self.weights[:, i] - self.thresholds[i], rows[:, i])
                s[active] = rows
            settled = numpy.all(s[active] == before, axis=1)
            finished = numpy.flatnonzero(active)[settled]
            steps[finished] = sweep
            active[finished] = False
            if not active.any():
                break
        result = s[0] if one else s
        return (result, steps) if return_steps else result

    def __repr__(self) -> str:
        return f"HopfieldNetwork(n={self.n}, n_patterns={self.n_patterns})"
