r"""Sharpness-Aware Minimization (SAM) and its adaptive variant (ASAM) around any optimizer.

SAM looks for weights whose whole neighbourhood has a low cost, not just the point itself:
it minimises :math:`\max_{\|\epsilon\|_2 \le \rho} J(w + \epsilon)`. To first order the
worst perturbation is the gradient scaled to length rho, so one SAM step costs two
gradients: one at w to find :math:`\epsilon`, one at :math:`w + \epsilon` to step with.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

from lamina import backend
from lamina.autograd import Tensor
from lamina.autograd.graph import mark_modified
from lamina.optim.inplace import axpy
from lamina.optim.lbfgs import LBFGS
from lamina.optim.optimizer import Optimizer
from lamina.optim.wrapper import OptimizerWrapper

#: Added to the gradient's norm so that a zero gradient gives a zero perturbation.
NORM_EPS = 1e-12


class SAM(OptimizerWrapper):
    r"""Sharpness-Aware Minimization (Foret, Kleiner, Mobahi and Neyshabur, ICLR 2021) around
    any lamina optimizer; ``adaptive=True`` is ASAM (Kwon, Kim, Park and Choi, ICML 2021).

    With the gradient :math:`g = \nabla J(w)` already computed (forward and backward before
    :meth:`step`), over all trainable parameters taken as one vector::

        e_w = rho * g / (||g||_2 + 1e-12)                       # SAM
        e_w = rho * T_w^2 g / (||T_w g||_2 + 1e-12),  T_w = |w|   # ASAM (elementwise)
        w   = w + e_w                 # climb to the worst point nearby
        g'  = grad J(w + e_w)         # the closure: zero the gradients, cost, backward
        w   = w - e_w                 # back to w (restored from a copy: no rounding left)
        inner optimizer steps from w with g'

    ASAM's scaling by :math:`|w|` makes the neighbourhood follow each weight's size, so a
    rescaling of the weights that leaves the network's function unchanged leaves the
    perturbation's effect unchanged too. Parameters whose ``grad`` is ``None`` or whose
    ``trainable`` is ``False`` are neither moved nor counted in the norm.

    ``step(closure)`` does it all; the closure must zero the gradients, recompute the cost
    at the current weights, call ``backward()`` and return the cost (as for
    :class:`~lamina.optim.LBFGS`). A hand-written loop can instead call :meth:`first_step`
    (climb), run its own forward and backward, then :meth:`second_step` (back, and step)::

        opt = SAM(SGD(model.parameters(), lr=0.1, momentum=0.9), rho=0.05)
        cost = loss(model(x), y); cost.backward()
        opt.first_step(zero_grad=True)
        loss(model(x), y).backward()
        opt.second_step(zero_grad=True)

    It stands wherever an optimizer does (``param_groups``, ``lr``, ``zero_grad``,
    ``state_dict``...); :class:`lamina.train.Trainer` sees ``needs_closure`` and gives it a
    closure that recomputes the mini-batch's gradient. Any randomness in the model (dropout)
    draws afresh in the second pass.
    """

    #: ``step`` needs a closure that recomputes the gradients (read by the Trainer).
    needs_closure = True

    def __init__(self, optimizer: Optimizer, rho: float = 0.05, adaptive: bool = False):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"SAM: optimizer must be a lamina optimizer (lamina.optim.Optimizer), got "
                            f"{type(optimizer).__name__}")
        if isinstance(optimizer, LBFGS):
            raise TypeError("SAM: cannot wrap LBFGS, which evaluates the cost itself through its own closure; "
                            "wrap a first-order optimizer such as SGD or Adam")
        _check_rho_adaptive(rho, adaptive)
        self.optimizer = optimizer
        self.rho = float(rho)
        self.adaptive = adaptive
        #: The weights w saved by first_step while the parameters sit at w + e_w, by parameter index.
        self._saved_weights: dict[int, Any] = {}

    @property
    def step_count(self) -> int:
        """Steps taken by the inner optimizer."""
        return self.optimizer.step_count

    # -- stepping ----------------------------------------------------------------
    def _with_gradient(self) -> list[tuple[int, Tensor, Any]]:
        """(index, parameter, gradient array) of every trainable parameter that has a gradient."""
        found = []
        for i, p in enumerate(self.optimizer.params):
            grad = p.grad
            if grad is None or not getattr(p, "trainable", True):
                continue
            found.append((i, p, grad.data if isinstance(grad, Tensor) else grad))
        return found

    def first_step(self, zero_grad: bool = False) -> None:
        """Move every parameter with a gradient from w to w + e_w (the formula above), keeping w."""
        if self._saved_weights:
            raise RuntimeError("SAM.first_step: the weights are already perturbed; call second_step first")
        xp = backend.xp
        found = self._with_gradient()
        if not found:
            raise RuntimeError("SAM.first_step: no trainable parameter has a gradient; compute the cost at the "
                               "current weights and call backward() first (SAM perturbs along that gradient)")
        directions = [xp.abs(p.data) * g if self.adaptive else g for _, p, g in found]   # T_w g
        norm = math.sqrt(sum(float(xp.sum(d * d)) for d in directions))
        scale = self.rho / (norm + NORM_EPS)
        for (i, p, _), d in zip(found, directions):
            self._saved_weights[i] = p.data.copy()
            e_w = xp.abs(p.data) * d if self.adaptive else d     # T_w (T_w g) = T_w^2 g
            axpy(scale, e_w, p.data)
        mark_modified(*[p for _, p, _ in found])
        if zero_grad:
            self.zero_grad()

    def second_step(self, zero_grad: bool = False) -> None:
        """Put the weights back to w and let the inner optimizer step with the gradients now
        held (those at w + e_w)."""
        if not self._saved_weights:
            raise RuntimeError("SAM.second_step: the weights are not perturbed; call first_step first")
        self._restore()
        self.optimizer.step()
        if zero_grad:
            self.zero_grad()

    def _restore(self) -> None:
        params = self.optimizer.params
        for i, w in self._saved_weights.items():
            params[i].data[...] = w
        mark_modified(*[params[i] for i in self._saved_weights])
        self._saved_weights = {}

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One SAM step from the gradients at w already computed; ``closure`` recomputes them
        at the perturbed weights. Returns what the closure returned (the cost at w + e_w)."""
        if closure is None:
            raise TypeError("SAM.step: a closure is required: a function that zeroes the gradients, recomputes "
                            "the cost at the current weights, calls backward() and returns the cost (SAM needs "
                            "the gradient at the perturbed weights); or call first_step() and second_step()")
        self.first_step()
        try:
            loss = closure()
        except BaseException:
            self._restore()
            raise
        self.second_step()
        return loss

    # -- state -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The inner optimizer's state dict, rho and adaptive (taken between steps: the
        weights are never left perturbed by :meth:`step`)."""
        return {"optimizer": "SAM", "rho": self.rho, "adaptive": self.adaptive, "inner": self.optimizer.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (also after a JSON round trip)."""
        kind = state_dict.get("optimizer")
        if kind != "SAM":
            raise ValueError(f"SAM.load_state_dict: the state dict is from a {kind} optimizer, not SAM")
        rho, adaptive = state_dict["rho"], state_dict["adaptive"]
        _check_rho_adaptive(rho, adaptive)
        self.optimizer.load_state_dict(state_dict["inner"])
        self.rho, self.adaptive = float(rho), adaptive

    def __repr__(self) -> str:
        return f"SAM({self.optimizer!r}, rho={self.rho}, adaptive={self.adaptive})"


def _check_rho_adaptive(rho: Any, adaptive: Any) -> None:
    if isinstance(rho, bool) or not isinstance(rho, numbers.Real) or not math.isfinite(rho) or rho <= 0:
        raise ValueError(f"SAM: invalid rho {rho!r} (must be a positive finite number: the radius of the "
                         "neighbourhood)")
    if not isinstance(adaptive, bool):
        raise ValueError(f"SAM: invalid adaptive {adaptive!r} (must be True or False)")
