"""Sophia-G: sign momentum clipped by a Gauss-Newton-Bartlett estimate of the Hessian diagonal."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lamina import backend, parallel
from lamina.autograd import Tensor
from lamina.optim.adam import _pair
from lamina.optim.inplace import axpy, scale
from lamina.optim.optimizer import Optimizer, ParamsLike


class SophiaG(Optimizer):
    r"""Sophia-G (Liu et al., "Sophia: A Scalable Stochastic Second-order Optimizer for
    Language Model Pre-training", 2023), as the authors' code. With g = ``dJ_dw``, m the
    momentum and h the running estimate of the Hessian's diagonal::

        w = w * (1 - lr*weight_decay)                                   # decoupled decay
        m = beta1*m + (1-beta1)*g
        w = w - lr * sign(m) * min(|m| / (rho*bs*h + 1e-15), 1)

    Every k steps the user refreshes h with the Gauss-Newton-Bartlett estimator: sample
    labels y^ from the model's own predictions, backpropagate the mean loss on (x, y^) and
    call :meth:`update_hessian`, which does ``h = beta2*h + (1-beta2)*g^*g^`` from the
    parameters' gradients. ``bs`` is the number of examples (tokens) in that batch: the
    batch-mean gradient squared is 1/bs of the per-example average the estimator wants.
    ``step(bs=...)`` overrides the constructor's value for one step, as the reference does.
    """

    _state_arrays = ("exp_avg", "hessian")
    _state_numbers = ("step",)
    _step_bs: int | None = None

    def __init__(self, params: ParamsLike, lr: float = 1e-4, betas: tuple[float, float] = (0.965, 0.99),
                 rho: float = 0.04, weight_decay: float = 0.1, bs: int = 5120):
        super().__init__(params, lr=lr, weight_decay=weight_decay, betas=_pair(betas), rho=rho, bs=bs)

    def _validate(self, hp: dict) -> None:
        super()._validate(hp)
        betas = hp["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"{self._name}: invalid betas {betas!r} (must be a pair (beta1, beta2))")
        self._check_number("beta1", betas[0], low=0.0, high=1.0, high_open=True)
        self._check_number("beta2", betas[1], low=0.0, high=1.0, high_open=True)
        self._check_number("rho", hp["rho"], low=0.0)
        self._check_number("bs", hp["bs"], low=1.0)

    def _init_state(self, p: Tensor, group: dict) -> dict[str, Any]:
        xp = backend.xp
        return {"step": 0, "exp_avg": xp.zeros_like(p.data), "hessian": xp.zeros_like(p.data)}

    def step(self, closure: Callable[[], Any] | None = None, bs: int | None = None) -> Any:
        """One update (``bs``, when given, replaces every group's batch size for this step)."""
        if bs is not None:
            self._check_number("bs", bs, low=1.0)
        self._step_bs = bs
        try:
            return super().step(closure)
        finally:
            self._step_bs = None

    def update_hessian(self) -> None:
        """h = beta2*h + (1-beta2)*grad^2 for every parameter with a gradient (call it after
        backpropagating the loss on labels sampled from the model)."""
        self._resolve()
        with parallel.one_blas_thread():
            for i, p, group in self._indexed():
                grad = p.grad
                if grad is None or not getattr(p, "trainable", True):
                    continue
                if isinstance(grad, Tensor):
                    grad = grad.data
                state = self.state.get(i)
                if state is None:
                    state = self.state[i] = self._init_state(p, group)
                beta2 = group["betas"][1]
                square = self._scratch(p, 0)
                backend.xp.multiply(grad, grad, out=square)
                scale(beta2, state["hessian"])
                axpy(1.0 - beta2, square, state["hessian"])

    def _update(self, p: Tensor, grad, state: dict[str, Any], group: dict) -> None:
        xp = backend.xp
        beta1 = group["betas"][0]
        lr = group["lr"]
        bs = self._step_bs or group["bs"]
        state["step"] += 1
        if group["weight_decay"]:
            scale(1.0 - lr * group["weight_decay"], p.data)
        m = state["exp_avg"]
        scale(beta1, m)
        axpy(1.0 - beta1, grad, m)
        ratio = self._scratch(p, 0)
        xp.multiply(state["hessian"], group["rho"] * bs, out=ratio)
        ratio += 1e-15
        xp.divide(xp.abs(m), ratio, out=ratio)
        xp.minimum(ratio, 1.0, out=ratio)
        ratio *= xp.sign(m)
        axpy(-lr, ratio, p.data)
