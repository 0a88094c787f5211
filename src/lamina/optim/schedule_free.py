r"""Schedule-free SGD, AdamW and RAdam: an average of the iterates in place of a decaying schedule.

Defazio et al., "The Road Less Scheduled" (2024), as the ``schedulefree`` package. Three
sequences share one gradient per step: z takes plain (SGD or Adam-normalised) steps, x is
a running weighted average of the z's, and the gradient is taken at y, an interpolation
of the two::

    y_t     = (1 - beta) z_t + beta x_t                  # the parameters while training
    z_{t+1} = z_t - lr_t * d_t                           # d_t: the (normalised) gradient at y_t
    x_{t+1} = (1 - c_{t+1}) x_t + c_{t+1} z_{t+1}        # the parameters to evaluate

The averaging weight is c_{t+1} = w_{t+1} / (w_1 + ... + w_{t+1}) with w_t =
t^r * lr_max^weight_lr_power, lr_max the largest learning rate used so far (the linear
warm-up of ``warmup_steps`` steps makes the early, small steps count less). With r = 0
and no warm-up, x is the plain mean of the z's: the average that a cosine or linear
decay to zero imitates, without choosing a length for the run.

Only z (and Adam's second moment) is kept: the parameters hold y while training, x while
evaluating, and the optimizer moves them between the two (as the package does, by linear
interpolation with z, exact up to rounding)::

    opt.train()      # p = y = beta p + (1 - beta) z           before training steps
    opt.eval()       # p = x = p / beta + (1 - 1/beta) z        before evaluating or saving

An optimizer starts in evaluation mode, and ``step()`` refuses to run in it.
:class:`lamina.train.Trainer` makes these calls itself (training mode for each epoch,
evaluation mode after it, for validation, callbacks, checkpoints and once ``fit`` returns);
a hand-written loop makes them around its training and its evaluation.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

from lamina import backend, parallel
from lamina.autograd import Tensor
from lamina.optim.adam import _check_betas_eps, _pair
from lamina.optim.inplace import axpy, scale
from lamina.optim.optimizer import Optimizer, ParamsLike


class ScheduleFreeOptimizer(Optimizer):
    """What the schedule-free optimizers share: the averaging weights of every parameter
    group, the training/evaluation mode, the y update and the z state.

    A subclass gives :meth:`_interpolation` (beta of a group), :meth:`_scheduled_lr` (the
    learning rate of the group's next step) and :meth:`_direction` (the step direction d_t).
    """

    _state_arrays: tuple[str, ...] = ("z",)

    def __init__(self, params: ParamsLike, lr: float, weight_decay: float, **hyperparameters: Any):
        #: Per parameter group: its steps ``k``, the sum of the averaging weights and lr_max.
        self.averaging: list[dict[str, Any]] = []
        #: True while the parameters hold y (training), False while they hold x.
        self.train_mode = False
        super().__init__(params, lr=lr, weight_decay=weight_decay, **hyperparameters)

    def add_param_group(self, group: dict) -> None:
        super().add_param_group(group)
        self.averaging.append({"k": 0, "weight_sum": 0.0, "lr_max": -1.0})

    def _validate(self, hp: dict) -> None:
        super()._validate(hp)
        steps = hp.get("warmup_steps", 0)
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
            raise ValueError(f"{self._name}: invalid warmup_steps {steps!r} (must be an integer >= 0)")
        self._check_number("r", hp["r"], low=0.0)
        self._check_number("weight_lr_power", hp["weight_lr_power"], low=0.0)

    # -- the subclass's rule -----------------------------------------------------------
    def _interpolation(self, group: dict) -> float:
        """beta of y = (1 - beta) z + beta x."""
        raise NotImplementedError

    def _scheduled_lr(self, group: dict, k: int) -> float:
        """The learning rate of the group's step k + 1: ``lr`` times the linear warm-up."""
        steps = group["warmup_steps"]
        return group["lr"] * ((k + 1) / steps if k < steps else 1.0)

    def _direction(self, p: Tensor, grad, state: dict[str, Any], group: dict, k: int):
        """The step direction d_t at y (weight decay included), in a scratch array."""
        raise NotImplementedError

    # -- modes -------------------------------------------------------------------------
    def train(self) -> None:
        """Put y in the parameters (from x: y = beta x + (1 - beta) z), for training steps."""
        if not self.train_mode:
            self._move(lambda beta: beta)
            self.train_mode = True

    def eval(self) -> None:
        """Put x, the average, in the parameters (from y: x = y / beta + (1 - 1/beta) z), to
        evaluate, predict or save the model."""
        if self.train_mode:
            self._move(lambda beta: 1.0 / beta)
            self.train_mode = False

    def _move(self, keep: Callable[[float], float]) -> None:
        """p = keep p + (1 - keep) z for every parameter with a z, keep from its group's beta
        (none before the first step: a model may not even have built its weights yet)."""
        if not self.state:
            return
        with parallel.one_blas_thread():
            for i, p, group in self._indexed():
                state = self.state.get(i)
                if state is not None:
                    share = keep(self._interpolation(group))
                    scale(share, p.data)
                    axpy(1.0 - share, state["z"], p.data)

    # -- stepping ----------------------------------------------------------------------
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One schedule-free step (in training mode only: call :meth:`train` first)."""
        if not self.train_mode:
            raise RuntimeError(
                f"{self._name}.step: the optimizer is in evaluation mode (the parameters hold the average x); "
                "call optimizer.train() before training steps and optimizer.eval() before evaluating"
            )
        return super().step(closure)

    def _update_all(self) -> None:
        i = 0
        for group, averaging in zip(self.param_groups, self.averaging):
            k = averaging["k"]
            lr = self._scheduled_lr(group, k)
            lr_max = averaging["lr_max"] = max(lr, averaging["lr_max"])
            weight = (k + 1) ** group["r"] * lr_max ** group["weight_lr_power"]
            averaging["weight_sum"] += weight
            c = weight / averaging["weight_sum"] if averaging["weight_sum"] else 0.0
            beta = self._interpolation(group)
            for p in group["params"]:
                index, i = i, i + 1
                grad = p.grad
                if grad is None or not getattr(p, "trainable", True):
                    continue
                if isinstance(grad, Tensor):
                    grad = grad.data
                state = self.state.get(index)
                if state is None:
                    state = self.state[index] = self._init_state(p, group)
                d = self._direction(p, grad, state, group, k)
                # y_{t+1} = (1-c) y_t + c z_t + lr (beta (1-c) - 1) d_t, which is
                # (1-beta) z_{t+1} + beta x_{t+1} without x ever being formed
                y, z = p.data, state["z"]
                scale(1.0 - c, y)
                axpy(c, z, y)
                axpy(lr * (beta * (1.0 - c) - 1.0), d, y)
                axpy(-lr, d, z)
            averaging["k"] = k + 1

    def _init_state(self, p: Tensor, group: dict) -> dict[str, Any]:
        xp = backend.xp
        return {"z": p.data.copy(), **{name: xp.zeros_like(p.data) for name in self._state_arrays if name != "z"}}

    # -- state -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The base snapshot plus the mode (``train_mode``: which of y and x the parameters
        hold) and every group's averaging state (``k``, ``weight_sum``, ``lr_max``). Save it
        with the parameters of the same moment (in evaluation mode, as the package advises,
        the model's weights are then x, ready to use)."""
        saved = super().state_dict()
        saved["train_mode"] = self.train_mode
        saved["averaging"] = [dict(a) for a in self.averaging]
        return saved

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`, the mode included (the parameters are taken to hold
        what they held when it was saved: y in training mode, x in evaluation mode)."""
        self._resolve()
        mode = state_dict.get("train_mode")
        if not isinstance(mode, bool):
            raise ValueError(f"{self._name}.load_state_dict: 'train_mode' must be True or False, got {mode!r}")
        saved = state_dict.get("averaging")
        if not isinstance(saved, list) or len(saved) != len(self.param_groups):
            count = len(saved) if isinstance(saved, list) else saved
            raise ValueError(f"{self._name}.load_state_dict: 'averaging' must hold one entry per parameter group "
                             f"({len(self.param_groups)}), got {count!r}")
        averaging = []
        for entry in saved:
            try:
                averaging.append({"k": int(entry["k"]), "weight_sum": float(entry["weight_sum"]),
                                  "lr_max": float(entry["lr_max"])})
            except (KeyError, TypeError, ValueError) as error:
                raise ValueError(f"{self._name}.load_state_dict: a bad 'averaging' entry {entry!r} (expected k, "
                                 "weight_sum and lr_max)") from error
        super().load_state_dict(state_dict)
        self.averaging = averaging
        self.train_mode = mode


class SGDScheduleFree(ScheduleFreeOptimizer):
    r"""Schedule-free SGD (``schedulefree.SGDScheduleFree``). With g the gradient at y and
    beta = ``momentum``::

        d = g + weight_decay * y                   # L2 decay, evaluated at y
        z = z - lr_t * d;   x = (1 - c) x + c z;   y = (1 - beta) z + beta x

    lr_t is ``lr`` after the linear warm-up. ``momentum`` plays the part of SGD's momentum
    (0.9 is a good default; it must lie strictly between 0 and 1, so that x can be
    recovered from y and z). See :mod:`lamina.optim.schedule_free` for c and the modes.
    """

    def __init__(self, params: ParamsLike, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 warmup_steps: int = 0, r: float = 0.0, weight_lr_power: float = 2.0):
        super().__init__(params, lr=lr, weight_decay=weight_decay, momentum=momentum, warmup_steps=warmup_steps,
                         r=r, weight_lr_power=weight_lr_power)

    def _validate(self, hp: dict) -> None:
        super()._validate(hp)
        momentum = hp["momentum"]
        self._check_number("momentum", momentum, low=0.0, high=1.0, high_open=True)
        if momentum == 0:
            raise ValueError(f"{self._name}: invalid momentum 0 (must be in (0, 1): x = (y - (1 - momentum) z) "
                             "/ momentum)")

    def _interpolation(self, group: dict) -> float:
        return group["momentum"]

    def _direction(self, p: Tensor, grad, state: dict[str, Any], group: dict, k: int):
        return self._decayed_grad(p, grad, group["weight_decay"])


class AdamWScheduleFree(ScheduleFreeOptimizer):
    r"""Schedule-free AdamW (``schedulefree.AdamWScheduleFree``). With g the gradient at y,
    t = k + 1 the group's step and beta = beta1::

        v = beta2 v + (1 - beta2) g^2
        d = g / (sqrt(v / (1 - beta2^t)) + eps) + weight_decay * y
        z = z - lr_t * d;   x = (1 - c) x + c z;   y = (1 - beta1) z + beta1 x

    Adam's first moment is gone: the interpolation with the average plays its part, and
    beta1 must lie strictly between 0 and 1. The weight decay is added to the normalised
    step (decoupled from the gradient's scale, as AdamW's). lr_t is ``lr`` after the linear
    warm-up of ``warmup_steps`` steps; the default lr, 0.0025, is the package's.
    """

    _state_arrays = ("z", "exp_avg_sq")

    def __init__(self, params: ParamsLike, lr: float = 0.0025, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, warmup_steps: int = 0, r: float = 0.0,
                 weight_lr_power: float = 2.0):
        super().__init__(params, lr=lr, weight_decay=weight_decay, betas=_pair(betas), eps=eps,
                         warmup_steps=warmup_steps, r=r, weight_lr_power=weight_lr_power)

    def _validate(self, hp: dict) -> None:
        super()._validate(hp)
        _check_betas_eps(self, hp)
        if hp["betas"][0] == 0:
            raise ValueError(f"{self._name}: invalid beta1 0 (must be in (0, 1): x = (y - (1 - beta1) z) / beta1)")

    def _interpolation(self, group: dict) -> float:
        return group["betas"][0]

    def _normalised(self, p: Tensor, grad, state: dict[str, Any], group: dict, k: int, adaptive: bool = True):
        """Update v and return g / (sqrt(v / (1 - beta2^t)) + eps) + weight_decay * y (or
        g + weight_decay * y when not ``adaptive``) in scratch slot 1."""
        xp = backend.xp
        beta2 = group["betas"][1]
        v = state["exp_avg_sq"]
        d = self._scratch(p, 1)
        scale(beta2, v)
        xp.multiply(grad, grad, out=d)
        axpy(1.0 - beta2, d, v)
        if adaptive:
            xp.sqrt(v, out=d)
            d /= math.sqrt(1.0 - beta2 ** (k + 1))
            d += group["eps"]
            xp.divide(grad, d, out=d)
        else:
            d[...] = grad
        if group["weight_decay"]:
            axpy(group["weight_decay"], p.data, d)
        return d

    def _direction(self, p: Tensor, grad, state: dict[str, Any], group: dict, k: int):
        return self._normalised(p, grad, state, group, k)


class RAdamScheduleFree(AdamWScheduleFree):
    r"""Schedule-free RAdam (``schedulefree.RAdamScheduleFree``): no warm-up to choose, the
    rectification of RAdam (Liu et al. 2020) is one. With t = k + 1,
    rho_inf = 2 / (1 - beta2) - 1 and rho_t = rho_inf - 2 t beta2^t / (1 - beta2^t)::

        lr_t = lr * sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))   if rho_t > 4
        d    = g / (sqrt(v / (1 - beta2^t)) + eps) + weight_decay * y                           if rho_t > 4

    While rho_t <= 4 (the first 4 steps with beta2 = 0.999) the second moment is still too
    noisy to divide by: with ``silent_sgd_phase`` (the default) the parameters do not move
    (lr_t = 0, only v accumulates); without it they take plain SGD steps
    (lr_t = lr, d = g + weight_decay * y). The rectified lr_t also weighs the average.
    """

    def __init__(self, params: ParamsLike, lr: float = 0.0025, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, r: float = 0.0, weight_lr_power: float = 2.0,
                 silent_sgd_phase: bool = True):
        ScheduleFreeOptimizer.__init__(self, params, lr=lr, weight_decay=weight_decay, betas=_pair(betas), eps=eps,
                                       r=r, weight_lr_power=weight_lr_power, silent_sgd_phase=silent_sgd_phase)

    def _validate(self, hp: dict) -> None:
        super()._validate(hp)
        if not isinstance(hp["silent_sgd_phase"], bool):
            raise ValueError(f"{self._name}: invalid silent_sgd_phase {hp['silent_sgd_phase']!r} "
                             "(must be True or False)")

    @staticmethod
    def _rho(beta2: float, k: int) -> tuple[float, float]:
        """(rho_t, rho_inf) at step t = k + 1."""
        t = k + 1
        rho_inf = 2.0 / (1.0 - beta2) - 1.0
        return rho_inf - 2.0 * t * beta2**t / (1.0 - beta2**t), rho_inf

    def _scheduled_lr(self, group: dict, k: int) -> float:
        rho_t, rho_inf = self._rho(group["betas"][1], k)
        if rho_t > 4.0:
            return group["lr"] * math.sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                                           / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
        return 0.0 if group["silent_sgd_phase"] else group["lr"]

    def _direction(self, p: Tensor, grad, state: dict[str, Any], group: dict, k: int):
        rho_t, _ = self._rho(group["betas"][1], k)
        return self._normalised(p, grad, state, group, k, adaptive=rho_t > 4.0)
