r"""Riemannian SGD and Adam: steps along the manifold of each parameter.

A :class:`lamina.nn.ManifoldParameter` is stepped on its ``manifold``; every other parameter
on :class:`lamina.manifolds.Euclidean`, where both optimizers compute exactly what
:class:`~lamina.optim.SGD` and :class:`~lamina.optim.Adam` (and PyTorch's) do. With g the
Euclidean gradient plus ``weight_decay * x``:

RiemannianSGD (Bonnabel 2013; geoopt's ``RiemannianSGD``)::

    r = egrad2rgrad(x, g)                          # the Riemannian gradient
    m = r  (first step),   m = momentum m + (1 - dampening) r
    d = r + momentum m  (nesterov)   or  m
    x, m = retr(x, -lr d), transp(x, x_new, m)     # the momentum follows the point

RiemannianAdam (Becigneul and Ganea, "Riemannian Adaptive Optimization Methods", 2019)::

    r = egrad2rgrad(x, g)
    m = beta1 m + (1 - beta1) r
    v = beta2 v + (1 - beta2) component_inner(x, r)    # r's squared size under the metric
    d = (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)       (v: max over steps if amsgrad)
    x, m = retr(x, -lr d), transp(x, x_new, m)

``retraction='expmap'`` steps by the exponential map instead of the manifold's retraction
(for the Poincaré ball the retraction is projx(x + u), Nickel and Kiela's update).
``stabilize=n`` projects every point back onto its manifold, and its momentum onto the
tangent space, every n steps (float rounding drifts).
"""

from __future__ import annotations

from typing import Any

from lamina import backend
from lamina.autograd import Tensor, no_grad
from lamina.manifolds import Euclidean
from lamina.optim.adam import _adam_state, _check_amsgrad, _check_betas_eps, _pair
from lamina.optim.optimizer import Optimizer, ParamsLike
from lamina.optim.sgd import _check_momentum

__all__ = ["RiemannianAdam", "RiemannianSGD"]

RETRACTIONS = ("retr", "expmap")
_FLAT = Euclidean(ndim=0)


def manifold_of(p: Tensor):
    """The manifold a parameter lies on (:class:`Euclidean` unless it is tagged)."""
    return getattr(p, "manifold", None) or _FLAT


class _RiemannianOptimizer(Optimizer):
    """The shared checks, the retraction choice and stabilisation."""

    def _validate(self, hp: dict) -> None:
        super()._validate(hp)
        if hp["retraction"] not in RETRACTIONS:
            raise ValueError(f"{self._name}: invalid retraction {hp['retraction']!r} (must be one of {RETRACTIONS})")
        stabilize = hp["stabilize"]
        if stabilize is not None and (isinstance(stabilize, bool) or not isinstance(stabilize, int) or stabilize < 1):
            raise ValueError(f"{self._name}: invalid stabilize {stabilize!r} (must be None or an int >= 1)")

    def _gradient(self, manifold, p: Tensor, grad, weight_decay: float):
        """The Riemannian gradient of the decayed Euclidean gradient, as an array."""
        g = grad + weight_decay * p.data if weight_decay else grad
        return manifold.egrad2rgrad(p.data, g).data

    def _move(self, manifold, p: Tensor, step, carried, group: dict):
        """The new point x' = R_x(step) written into p, and ``carried`` transported to x'."""
        if group["retraction"] == "expmap":
            moved, transported = manifold.expmap_transp(p.data, step, carried)
        else:
            moved, transported = manifold.retr_transp(p.data, step, carried)
        p.data[...] = moved.data
        return transported.data

    def _maybe_stabilize(self, manifold, p: Tensor, state: dict, group: dict, buffer: str) -> None:
        every = group["stabilize"]
        if every is None or state["step"] % every:
            return
        p.data[...] = manifold.projx(p.data).data
        if buffer in state:
            state[buffer][...] = manifold.proju(p.data, state[buffer]).data

    def step(self, closure=None):
        with no_grad():
            return super().step(closure)


class RiemannianSGD(_RiemannianOptimizer):
    """SGD with momentum along manifolds; see the module docstring."""

    _state_arrays = ("momentum_buffer",)
    _state_numbers = ("step",)

    def __init__(self, params: ParamsLike, lr: float, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, retraction: str = "retr",
                 stabilize: int | None = None):
        super().__init__(params, lr=lr, weight_decay=weight_decay, momentum=momentum, dampening=dampening,
                         nesterov=nesterov, retraction=retraction, stabilize=stabilize)

    def _validate(self, hp: dict) -> None:
        super()._validate(hp)
        _check_momentum(self, hp)

    def _init_state(self, p: Tensor, group: dict) -> dict[str, Any]:
        return {"step": 0}

    def _update(self, p: Tensor, grad, state: dict[str, Any], group: dict) -> None:
        manifold = manifold_of(p)
        state["step"] += 1
        rgrad = self._gradient(manifold, p, grad, group["weight_decay"])
        momentum, lr = group["momentum"], group["lr"]
        if momentum == 0:
            move = manifold.expmap if group["retraction"] == "expmap" else manifold.retr
            p.data[...] = move(p.data, -lr * rgrad).data
        else:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = backend.xp.array(rgrad, copy=True)
            else:
                buf *= momentum
                buf += (1.0 - group["dampening"]) * rgrad
            direction = rgrad + momentum * buf if group["nesterov"] else buf
            buf[...] = self._move(manifold, p, -lr * direction, buf, group)
        self._maybe_stabilize(manifold, p, state, group, "momentum_buffer")


class RiemannianAdam(_RiemannianOptimizer):
    """Adam along manifolds (Becigneul and Ganea); see the module docstring."""

    _state_arrays = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    _state_numbers = ("step",)

    def __init__(self, params: ParamsLike, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False, retraction: str = "retr",
                 stabilize: int | None = None):
        super().__init__(params, lr=lr, weight_decay=weight_decay, betas=_pair(betas), eps=eps, amsgrad=amsgrad,
                         retraction=retraction, stabilize=stabilize)

    def _validate(self, hp: dict) -> None:
        super()._validate(hp)
        _check_betas_eps(self, hp)
        _check_amsgrad(self, hp)

    def _init_state(self, p: Tensor, group: dict) -> dict[str, Any]:
        return _adam_state(p, group)

    def _update(self, p: Tensor, grad, state: dict[str, Any], group: dict) -> None:
        xp = backend.xp
        manifold = manifold_of(p)
        beta1, beta2 = group["betas"]
        state["step"] += 1
        t = state["step"]
        rgrad = self._gradient(manifold, p, grad, group["weight_decay"])
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m *= beta1
        m += (1.0 - beta1) * rgrad
        v *= beta2
        v += (1.0 - beta2) * manifold.component_inner(p.data, rgrad).data
        if group["amsgrad"]:
            vmax = state.setdefault("max_exp_avg_sq", xp.zeros_like(p.data))
            xp.maximum(vmax, v, out=vmax)
            v = vmax
        denominator = xp.sqrt(v / (1.0 - beta2**t)) + group["eps"]
        direction = (m / (1.0 - beta1**t)) / denominator
        m[...] = self._move(manifold, p, -group["lr"] * direction, m, group)
        self._maybe_stabilize(manifold, p, state, group, "exp_avg")
