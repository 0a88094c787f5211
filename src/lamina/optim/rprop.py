"""Rprop: resilient back-propagation, steps from the sign of the gradient alone."""

from __future__ import annotations

from typing import Any

from lamina import backend
from lamina.autograd import Tensor
from lamina.optim.optimizer import Optimizer, ParamsLike


class Rprop(Optimizer):
    r"""Rprop (Riedmiller and Braun, 1993), as ``torch.optim.Rprop``.

    Each weight has its own step size :math:`\Delta`, adapted from the signs of its last two
    gradients; the gradient's magnitude is never used. With g = ``dJ_dw`` and g' the gradient
    remembered from the previous step (0 at the start)::

        g.g' > 0:  Delta = min(Delta * eta_plus,  step_max)    same sign: speed up
        g.g' < 0:  Delta = max(Delta * eta_minus, step_min)    overshot a minimum: slow down,
                   g = 0                                       skip this step and the next comparison
        g.g' = 0:  Delta unchanged
        w  = w - sign(g) * Delta
        g' = g

    ``lr`` is the initial step size :math:`\Delta_0` of every weight; after the first step
    the step sizes live in the state, so changing ``lr`` (a schedule) does not reach a
    weight that has stepped. ``etas`` = (eta_minus, eta_plus) with
    0 < eta_minus < 1 < eta_plus; ``step_sizes`` = (step_min, step_max).

    Only the sign matters, so noise in mini-batch gradients flips steps at random: Rprop is
    a full-batch method. No ``weight_decay`` (as torch): add a penalty to the cost.
    """

    _state_arrays = ("prev", "step_size")
    _state_numbers = ("step",)

    def __init__(self, params: ParamsLike, lr: float = 0.01, etas: tuple[float, float] = (0.5, 1.2),
                 step_sizes: tuple[float, float] = (1e-6, 50)):
        super().__init__(params, lr=lr, etas=_pair(etas), step_sizes=_pair(step_sizes))

    def _validate(self, hp: dict) -> None:
        super()._validate(hp)
        if hp["weight_decay"] != 0:
            raise ValueError(f"{self._name}: weight_decay is not supported (got {hp['weight_decay']!r}); add a "
                             "penalty such as lamina.optim.l2 to the cost")
        etas = hp["etas"]
        if not isinstance(etas, (tuple, list)) or len(etas) != 2:
            raise ValueError(f"{self._name}: invalid etas {etas!r} (must be a pair (eta_minus, eta_plus))")
        self._check_number("eta_minus", etas[0], low=0.0)
        self._check_number("eta_plus", etas[1], low=0.0)
        if not 0.0 < etas[0] < 1.0 < etas[1]:
            raise ValueError(f"{self._name}: invalid etas {tuple(etas)!r} (must be 0 < eta_minus < 1 < eta_plus)")
        sizes = hp["step_sizes"]
        if not isinstance(sizes, (tuple, list)) or len(sizes) != 2:
            raise ValueError(f"{self._name}: invalid step_sizes {sizes!r} (must be a pair (step_min, step_max))")
        self._check_number("step_min", sizes[0], low=0.0)
        self._check_number("step_max", sizes[1], low=0.0)
        if sizes[0] > sizes[1]:
            raise ValueError(f"{self._name}: invalid step_sizes {tuple(sizes)!r} (must be step_min <= step_max)")

    def _init_state(self, p: Tensor, group: dict) -> dict[str, Any]:
        xp = backend.xp
        return {"step": 0, "prev": xp.zeros_like(p.data), "step_size": xp.full_like(p.data, group["lr"])}

    def _update(self, p: Tensor, grad, state: dict[str, Any], group: dict) -> None:
        xp = backend.xp
        eta_minus, eta_plus = group["etas"]
        step_min, step_max = group["step_sizes"]
        state["step"] += 1
        prev, step_size = state["prev"], state["step_size"]
        agreement = self._scratch(p, 0)
        xp.multiply(grad, prev, out=agreement)
        flipped = agreement < 0
        step_size[agreement > 0] *= eta_plus
        step_size[flipped] *= eta_minus
        xp.clip(step_size, step_min, step_max, out=step_size)
        prev[...] = grad
        prev[flipped] = 0
        direction = self._scratch(p, 1)
        xp.sign(prev, out=direction)
        direction *= step_size
        p.data -= direction


def _pair(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value
