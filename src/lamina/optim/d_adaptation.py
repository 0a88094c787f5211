r"""D-adaptation: Adam whose step size is an estimate d of the distance to a solution.

Defazio and Mishchenko, "Learning-Rate-Free Learning by D-Adaptation" (ICML 2023), as the
``dadaptation`` package. The family (with :class:`~lamina.optim.Prodigy`) shares one
estimate d for every parameter group, grown from ``d0`` as the run shows how far the
weights must travel, and a learning rate ``lr`` that only rescales it (leave it at 1.0).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from lamina import backend
from lamina.autograd import Tensor
from lamina.optim.adam import _check_betas_eps, _pair
from lamina.optim.inplace import axpy, scale
from lamina.optim.optimizer import Optimizer, ParamsLike


class DAdaptedOptimizer(Optimizer):
    """What the learning-rate-free optimizers share: the estimate (:attr:`estimate`, saved in
    :meth:`state_dict`), the hyperparameters it depends on (:attr:`_shared`: one value for
    every parameter group), the rule that a group's lr is the largest one or 0, and checks."""

    #: Hyperparameters the shared estimate depends on: a group may not set its own.
    _shared: tuple[str, ...] = ()
    #: The entries of :attr:`estimate`: floats, then the step count ``k``.
    _estimate_keys: tuple[str, ...] = ("d", "k")

    def add_param_group(self, group: dict) -> None:
        for key in self._shared:
            if key in group and _pair(group[key]) != self.defaults[key]:
                raise ValueError(f"{self._name}: {key} is shared by every parameter group (one D estimate); a group "
                                 f"set {group[key]!r}, the optimizer has {self.defaults[key]!r}")
        super().add_param_group(group)

    def _validate(self, hp: dict) -> None:
        super()._validate(hp)
        _check_betas_eps(self, hp)
        self._check_number("d0", hp["d0"], low=0.0)
        if hp["d0"] == 0:
            raise ValueError(f"{self._name}: invalid d0 0 (must be > 0: the initial estimate of D)")
        if hp["eps"] == 0:
            raise ValueError(f"{self._name}: invalid eps 0 (must be > 0: the first step divides 0 by sqrt(v) + eps)")
        growth = hp["growth_rate"]
        if isinstance(growth, bool) or not isinstance(growth, numbers.Real) or math.isnan(growth) or growth < 1:
            raise ValueError(f"{self._name}: invalid growth_rate {growth!r} (must be >= 1, or inf for no cap)")
        for flag in ("decouple", "use_bias_correction"):
            if not isinstance(hp[flag], bool):
                raise ValueError(f"{self._name}: invalid {flag} {hp[flag]!r} (must be True or False)")

    def _common_lr(self) -> float:
        """The largest group lr, after checking that every group's is it or 0."""
        lr = max(group["lr"] for group in self.param_groups)
        for group in self.param_groups:
            if group["lr"] not in (lr, 0.0):
                raise ValueError(f"{self._name}: every parameter group's lr must be the largest one ({lr!r}) or 0 "
                                 f"(one D estimate serves them all), got {group['lr']!r}")
        return lr

    def _bias_correction(self, hp: dict, k: int) -> float:
        """sqrt(1 - beta2^(k+1)) / (1 - beta1^(k+1)) with ``use_bias_correction``, else 1."""
        if not hp["use_bias_correction"]:
            return 1.0
        beta1, beta2 = hp["betas"]
        return math.sqrt(1.0 - beta2 ** (k + 1)) / (1.0 - beta1 ** (k + 1))

    def _live(self):
        """(index, parameter, gradient as an array, group) of every parameter to step, its
        state created if new."""
        for i, p, group in self._indexed():
            grad = p.grad
            if grad is None or not getattr(p, "trainable", True):
                continue
            if i not in self.state:
                self.state[i] = self._init_state(p, group)
            yield i, p, grad.data if isinstance(grad, Tensor) else grad, group

    # -- state -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The base snapshot plus the shared estimate (``estimate``)."""
        saved = super().state_dict()
        saved["estimate"] = dict(self.estimate)
        return saved

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`, the shared estimate included."""
        saved = state_dict.get("estimate")
        keys = self._estimate_keys
        if not isinstance(saved, dict) or any(key not in saved for key in keys):
            raise ValueError(f"{self._name}.load_state_dict: 'estimate' must hold {list(keys)}, got {saved!r}")
        estimate: dict[str, Any] = {key: float(saved[key]) for key in keys if key != "k"}
        estimate["k"] = int(saved["k"])
        super().load_state_dict(state_dict)
        self.estimate = estimate


class DAdaptAdam(DAdaptedOptimizer):
    r"""D-Adaptation Adam (``dadaptation.DAdaptAdam``, version 3), step for step. With g the
    gradient (plus ``weight_decay * w`` when not ``decouple``), eta = lr * d (times
    sqrt(1 - beta2^t) / (1 - beta1^t) with ``use_bias_correction``), b = sqrt(beta2) and the
    sums over every parameter of the groups whose lr is not 0::

        r     = b r + (1 - b) sum eta <g, s / (sqrt(v) + eps)>     # s and v before this step
        m     = beta1 m + eta (1 - beta1) g                        # the step size is in m
        v     = beta2 v + (1 - beta2) g^2
        s     = b s + eta (1 - b) g
        d     = max(d, min(r / ((1 - b) sum |s|), d growth_rate))
        w     = w - eta weight_decay w                              (decouple)
        w     = w - m / (sqrt(v) + eps)

    d never shrinks. As in the package a first step whose gradients are all zero changes
    nothing but the moments; one estimate serves every group (``betas``, ``d0``,
    ``growth_rate``, ``use_bias_correction`` and ``decouple`` are shared; a group's lr is
    the largest one or 0, and its own ``weight_decay`` and ``eps`` may differ). The package's
    default decay is coupled (L2 in the gradient), ``decouple=True`` makes it AdamW's.
    """

    _state_arrays = ("s", "exp_avg", "exp_avg_sq")
    _state_numbers = ("step",)
    _shared = ("betas", "d0", "growth_rate", "use_bias_correction", "decouple")
    _estimate_keys = ("d", "numerator_weighted", "k")

    def __init__(self, params: ParamsLike, lr: float = 1.0, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, decouple: bool = False,
                 use_bias_correction: bool = False, d0: float = 1e-6, growth_rate: float = math.inf):
        super().__init__(params, lr=lr, weight_decay=weight_decay, betas=_pair(betas), eps=eps, decouple=decouple,
                         use_bias_correction=use_bias_correction, d0=d0, growth_rate=growth_rate)
        #: The shared estimate: d, the weighted numerator r and the steps that updated them.
        self.estimate: dict[str, Any] = {"d": float(d0), "numerator_weighted": 0.0, "k": 0}

    def _init_state(self, p: Tensor, group: dict) -> dict[str, Any]:
        xp = backend.xp
        return {"step": 0, "s": xp.zeros_like(p.data), "exp_avg": xp.zeros_like(p.data),
                "exp_avg_sq": xp.zeros_like(p.data)}

    def _update_all(self) -> None:
        xp = backend.xp
        hp, est = self.param_groups[0], self.estimate     # the shared hyperparameters: the first group's
        beta1, beta2 = hp["betas"]
        root = math.sqrt(beta2)
        lr = self._common_lr()
        d, k = est["d"], est["k"]
        eta = d * lr * self._bias_correction(hp, k)
        numerator, l1 = 0.0, 0.0
        live = list(self._live())
        for i, p, grad, group in live:
            if group["lr"] == 0:
                continue
            state = self.state[i]
            g = grad if hp["decouple"] else self._decayed_grad(p, grad, group["weight_decay"])
            work = self._scratch(p, 1)
            xp.sqrt(state["exp_avg_sq"], out=work)
            work += group["eps"]
            xp.divide(state["s"], work, out=work)
            numerator += eta * float(xp.vdot(g.ravel(), work.ravel()))
            scale(beta1, state["exp_avg"])
            axpy(eta * (1.0 - beta1), g, state["exp_avg"])
            scale(beta2, state["exp_avg_sq"])
            xp.multiply(g, g, out=work)
            axpy(1.0 - beta2, work, state["exp_avg_sq"])
            scale(root, state["s"])
            axpy(eta * (1.0 - root), g, state["s"])
            xp.abs(state["s"], out=work)
            l1 += float(work.sum())
        if l1 == 0:
            return
        weighted = root * est["numerator_weighted"] + (1.0 - root) * numerator
        if lr > 0:
            d = max(d, min(weighted / ((1.0 - root) * l1), d * hp["growth_rate"]))
        est.update(d=d, numerator_weighted=weighted, k=k + 1)
        for i, p, _, group in live:
            state = self.state[i]
            state["step"] += 1
            denom = self._scratch(p, 1)
            xp.sqrt(state["exp_avg_sq"], out=denom)
            denom += group["eps"]
            if hp["decouple"] and group["weight_decay"]:
                scale(1.0 - group["weight_decay"] * eta, p.data)
            xp.divide(state["exp_avg"], denom, out=denom)
            axpy(-1.0, denom, p.data)
