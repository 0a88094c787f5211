"""Lookahead: slow weights that follow, every k steps, where any optimizer's fast weights went."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

from lamina import backend
from lamina.autograd.graph import mark_modified
from lamina.optim.inplace import axpy
from lamina.optim.optimizer import Optimizer
from lamina.optim.wrapper import OptimizerWrapper


class Lookahead(OptimizerWrapper):
    r"""Lookahead (Zhang, Lucas, Hinton and Ba, "Lookahead Optimizer: k steps forward, 1 step
    back", 2019) around any lamina optimizer.

    The inner optimizer moves the *fast* weights :math:`\theta` as usual. Lookahead keeps a
    copy, the *slow* weights :math:`\phi` (taken when a parameter is first stepped), and
    every ``k`` inner steps pulls them a fraction ``alpha`` of the way to the fast ones and
    restarts the fast weights from there::

        phi   = phi + alpha*(theta - phi)      # every k-th step, after the inner step
        theta = phi

    The slow weights average out the inner optimizer's oscillations; ``alpha = 1`` is the
    inner optimizer alone. Only trainable parameters are synchronised; the inner
    optimizer's own state (momentum, second moments) carries on untouched, as in the paper.

    It stands wherever an optimizer does: ``param_groups``, ``lr`` (a schedule setting it
    reaches the inner optimizer), ``zero_grad``, ``step(closure)``, ``state_dict`` and
    ``load_state_dict``::

        opt = Lookahead(Adam(model.parameters(), lr=1e-3), k=5, alpha=0.5)
        Trainer(model, "categorical_cross_entropy", opt).fit((x, y), epochs=10)
    """

    def __init__(self, optimizer: Optimizer, k: int = 5, alpha: float = 0.5):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"Lookahead: optimizer must be a lamina optimizer (lamina.optim.Optimizer), got "
                            f"{type(optimizer).__name__}")
        _check_k_alpha(k, alpha)
        self.optimizer = optimizer
        self.k = k
        self.alpha = float(alpha)
        #: Inner steps taken; the slow weights move when it reaches a multiple of k.
        self.step_count = 0
        #: The slow weights phi, keyed by the parameter's index in the inner optimizer.
        self.slow_weights: dict[int, Any] = {}

    # -- stepping ----------------------------------------------------------------
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One inner step (with ``closure`` if given); every k-th, the slow weights' step."""
        params = self.optimizer.params
        for i, p in enumerate(params):
            if i not in self.slow_weights:
                self.slow_weights[i] = p.data.copy()
        loss = self.optimizer.step(closure) if closure is not None else self.optimizer.step()
        self.step_count += 1
        if self.step_count % self.k == 0:
            for i, p in enumerate(params):
                if getattr(p, "trainable", True):
                    slow = self.slow_weights[i]
                    axpy(self.alpha, p.data - slow, slow)
                    p.data[...] = slow
            mark_modified(*params)
        return loss

    # -- state -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The inner optimizer's state dict, the slow weights (NumPy copies), the step count,
        k and alpha."""
        slow = {}
        for i, w in sorted(self.slow_weights.items()):
            host = backend.to_numpy(w)
            slow[i] = host.copy() if host is w else host
        return {"optimizer": "Lookahead", "k": self.k, "alpha": self.alpha, "step_count": self.step_count,
                "slow_weights": slow, "inner": self.optimizer.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (also after a JSON round trip); checks the slow weights'
        shapes and the inner state before changing anything."""
        kind = state_dict.get("optimizer")
        if kind != "Lookahead":
            raise ValueError(f"Lookahead.load_state_dict: the state dict is from a {kind} optimizer, not Lookahead")
        k, alpha = state_dict["k"], state_dict["alpha"]
        _check_k_alpha(k, alpha)
        xp = backend.xp
        params = self.optimizer.params
        slow = {}
        for key, value in state_dict["slow_weights"].items():
            i = int(key)
            if not 0 <= i < len(params):
                raise ValueError(f"Lookahead.load_state_dict: slow weights for parameter {i}, the optimizer has "
                                 f"{len(params)}")
            arr = xp.array(value, dtype=params[i].data.dtype)
            if tuple(arr.shape) != tuple(params[i].data.shape):
                raise ValueError(f"Lookahead.load_state_dict: the slow weights of parameter {i} have shape "
                                 f"{tuple(arr.shape)}, the parameter {tuple(params[i].data.shape)}")
            slow[i] = arr
        self.optimizer.load_state_dict(state_dict["inner"])
        self.k, self.alpha = k, float(alpha)
        self.step_count = int(state_dict["step_count"])
        self.slow_weights = slow

    def __repr__(self) -> str:
        return f"Lookahead({self.optimizer!r}, k={self.k}, alpha={self.alpha})"


def _check_k_alpha(k: Any, alpha: Any) -> None:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"Lookahead: invalid k {k!r} (must be a positive integer: inner steps per slow step)")
    if (isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not math.isfinite(alpha)
            or not 0 < alpha <= 1):
        raise ValueError(f"Lookahead: invalid alpha {alpha!r} (must be in (0, 1])")
