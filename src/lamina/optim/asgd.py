"""ASGD: stochastic gradient descent with a running average of the iterates."""

from __future__ import annotations

from typing import Any

from lamina import backend
from lamina.autograd import Tensor
from lamina.optim.inplace import axpy, scale
from lamina.optim.optimizer import Optimizer, ParamsLike


class ASGD(Optimizer):
    r"""Averaged SGD (Polyak and Juditsky, 1992; the decaying step of Bottou's "Stochastic
    Gradient Descent Tricks", 2012), as ``torch.optim.ASGD``, step for step.

    SGD with a step size eta that decays as a power of the step count, and, from step
    ``t0`` on, an average ``ax`` of the weights visited: the average of a noisy SGD
    trajectory converges faster than its last point. With g = ``s*dJ_dw + weight_decay*w``
    (s = -1 when ``maximize``, else 1: only the gradient is negated, the decay still pulls the
    weights towards 0), t the step count, eta = ``lr`` and mu = 1 at the start::

        w   = w * (1 - lambd*eta) - eta*g         # = w * (1 - (lambd + weight_decay)*eta) - eta*s*dJ_dw
        ax  = ax + mu*(w - ax)                    (ax = w while mu = 1)
        eta = lr / (1 + lambd*lr*t)**alpha        # the step size of the next step
        mu  = 1 / max(1, t - t0)                  # 1/k: ax is the mean of the last k iterates

    The average is the state entry ``ax`` (``optimizer.state[i]["ax"]``, torch's name);
    :meth:`averaged` gives it per parameter, to evaluate or export. With torch's default
    ``t0 = 1e6`` the averaging starts late: pass a ``t0`` inside the run to use it. ``lambd``
    also shrinks the weights (an L2 pull of strength lambd on top of ``weight_decay``).
    """

    _state_arrays = ("ax",)
    _state_numbers = ("step",)
    _state_floats = ("eta", "mu")

    def __init__(self, params: ParamsLike, lr: float = 1e-2, lambd: float = 1e-4, alpha: float = 0.75,
                 t0: float = 1e6, weight_decay: float = 0.0, maximize: bool = False):
        super().__init__(params, lr=lr, weight_decay=weight_decay, lambd=lambd, alpha=alpha, t0=t0,
                         maximize=maximize)

    def _validate(self, hp: dict) -> None:
        super()._validate(hp)
        self._check_number("lambd", hp["lambd"], low=0.0)
        self._check_number("alpha", hp["alpha"], low=0.0)
        self._check_number("t0", hp["t0"], low=0.0)
        if not isinstance(hp["maximize"], bool):
            raise ValueError(f"{self._name}: invalid maximize {hp['maximize']!r} (must be True or False)")

    def _init_state(self, p: Tensor, group: dict) -> dict[str, Any]:
        return {"step": 0, "eta": float(group["lr"]), "mu": 1.0, "ax": backend.xp.zeros_like(p.data)}

    def _update(self, p: Tensor, grad, state: dict[str, Any], group: dict) -> None:
        w, ax = p.data, state["ax"]
        state["step"] += 1
        t = state["step"]
        eta = state["eta"]
        scale(1.0 - (group["lambd"] + group["weight_decay"]) * eta, w)
        axpy(eta if group["maximize"] else -eta, grad, w)
        if state["mu"] != 1:
            difference = self._scratch(p, 1)
            backend.xp.subtract(w, ax, out=difference)
            axpy(state["mu"], difference, ax)
        else:
            ax[...] = w
        lr = group["lr"]
        state["eta"] = lr / (1.0 + group["lambd"] * lr * t) ** group["alpha"]
        state["mu"] = 1.0 / max(1.0, t - group["t0"])

    def averaged(self) -> list:
        """The averaged weights ``ax`` of every parameter, in :attr:`params` order (a
        parameter that has not stepped yet: a copy of its weights)."""
        return [self.state[i]["ax"].copy() if i in self.state else p.data.copy()
                for i, p in enumerate(self.params)]
