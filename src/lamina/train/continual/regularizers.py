r"""Regularisers against catastrophic forgetting: a quadratic pull of each weight back to the
value it had after earlier tasks, stronger for the weights those tasks relied on.

All of them add  s sum_k Omega_k (theta_k - theta*_k)^2  to the loss, theta* the weights at
the end of the last task and Omega the importance of each weight:

- :class:`EWC` (elastic weight consolidation, Kirkpatrick et al. 2017): s = lambda / 2 and
  Omega the diagonal Fisher information F = (1/N) sum_i g_i^2 of the task, g_i the gradient of
  -log p(y | x_i) at theta*. The empirical Fisher takes y = y_i, the label; the true Fisher
  the expectation over y ~ p(y | x_i), sum_y p(y | x_i) g_iy^2. One term per task is kept; with
  ``gamma`` it is online EWC (Schwarz et al. 2018): one term, F <- gamma F + F_new and theta*
  the latest weights.
- :class:`SynapticIntelligence` (Zenke, Poole and Ganguli 2017): s = c and
  Omega += omega / (Delta^2 + xi), omega = -sum_steps g_t (theta_(t+1) - theta_t) the path
  integral of the loss's decrease attributed to each weight during the task, Delta its total
  change over the task.
- :class:`MAS` (memory aware synapses, Aljundi et al. 2018): s = lambda and
  Omega += (1/N) sum_i |d ||f(x_i)||^2 / d theta|, how strongly the output on the task's inputs
  reacts to the weight (no labels needed).

:class:`LwF` (Learning without Forgetting, Li and Hoiem 2017) pulls the outputs instead: the
old model's softened predictions on the new inputs are distillation targets.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections import OrderedDict

import numpy as np

from lamina import backend
from lamina.autograd import Tensor, no_grad
from lamina.functional.activation import softmax
from lamina.functional.loss import categorical_cross_entropy
from lamina.functional.losses_distill import distillation_loss
from lamina.nn.merging.fisher import diagonal_fisher
from lamina.nn.module import Module, as_tensor, evaluation_mode
from lamina.nn.per_sample import per_sample_gradients
from lamina.train.continual.strategy import ContinualStrategy

__all__ = ["EWC", "LwF", "MAS", "SynapticIntelligence", "fisher_diagonal", "output_sensitivity"]

FISHERS = ("empirical", "true")


def _summed_cross_entropy(output, y):
    return categorical_cross_entropy(output, y, from_logits=True, reduction="sum")


def _trainable(model: Module) -> OrderedDict:
    return OrderedDict((name, p) for name, p in model.named_parameters(trainable_only=True) if p.requires_grad)


def _positive(value, who: str, name: str, allow_zero: bool = True) -> float:
    """``value`` as a float, if it is a finite real number >= 0 (> 0 without ``allow_zero``)."""
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not (real and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{who}: {name} must be a finite number {bound}, got {value!r}")
    return float(value)


def _check_batch(batch_size, who: str) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"{who}: batch_size must be a positive integer, got {batch_size!r}")
    return batch_size


def fisher_diagonal(model: Module, x, y=None, kind: str = "empirical", batch_size: int = 64) -> OrderedDict:
    """The diagonal Fisher information of a classifier ``model`` (it outputs logits) on the
    inputs x: parameter name -> float64 array of the parameter's shape.

    ``kind="empirical"``: F = (1/N) sum_i g_i^2 with g_i the gradient of the cross-entropy of
    sample i with its label y_i (:func:`lamina.nn.merging.diagonal_fisher`). ``kind="true"``:
    F = (1/N) sum_i sum_c p(c | x_i) g_ic^2, g_ic the gradient for label c: the exact
    expectation over the model's own predictions (y is not used; it costs one per-sample
    gradient per class). The model runs in evaluation mode."""
    who = "fisher_diagonal"
    if kind not in FISHERS:
        raise ValueError(f"{who}: kind must be one of {FISHERS}, got {kind!r}")
    batch_size = _check_batch(batch_size, who)
    if kind == "empirical":
        if y is None:
            raise ValueError(f"{who}: the empirical Fisher needs the labels y")
        return diagonal_fisher(model, _summed_cross_entropy, x, np.asarray(y), batch_size=batch_size)
    totals: OrderedDict = OrderedDict()
    count = len(x)
    if count == 0:
        raise ValueError(f"{who}: x holds no samples")
    with evaluation_mode(model):
        for start in range(0, count, batch_size):
            xb = backend.xp.asarray(x[start:start + batch_size])
            with no_grad():
                probabilities = backend.xp.asarray(softmax(model(xb)).data, dtype=np.float64)
            n, classes = probabilities.shape
            repeated = backend.xp.repeat(xb, classes, axis=0)            # sample i, then each label c
            labels = backend.xp.tile(backend.xp.arange(classes), n)
            found = per_sample_gradients(model, _summed_cross_entropy, repeated, labels)
            weights = probabilities.reshape(-1)
            for name, g in found.items():
                g = backend.xp.asarray(g, dtype=np.float64)
                weighted = backend.xp.tensordot(weights, g * g, axes=1)
                totals[name] = weighted if name not in totals else totals[name] + weighted
    return OrderedDict((name, total / count) for name, total in totals.items())


def output_sensitivity(model: Module, x, batch_size: int = 64) -> OrderedDict:
    """MAS importance (1/N) sum_i |d ||f(x_i)||_2^2 / d theta| of every trainable parameter of
    ``model`` on the inputs x (per-sample gradients, evaluation mode): name -> float64 array."""
    batch_size = _check_batch(batch_size, "output_sensitivity")
    totals: OrderedDict = OrderedDict()
    with evaluation_mode(model):
        for start in range(0, len(x), batch_size):
            found = per_sample_gradients(model, lambda out, _: (out * out).sum(), x[start:start + batch_size], None)
            for name, g in found.items():
                summed = backend.xp.abs(backend.xp.asarray(g, dtype=np.float64)).sum(axis=0)
                totals[name] = summed if name not in totals else totals[name] + summed
    return OrderedDict((name, total / len(x)) for name, total in totals.items())


class _QuadraticPenalty(ContinualStrategy):
    """scale * sum over the kept terms of sum_k Omega_k (theta_k - theta*_k)^2."""

    scale = 1.0

    def __init__(self, model: Module):
        if not isinstance(model, Module):
            raise TypeError(f"{type(self).__name__}: expected a Module, got {type(model).__name__}")
        self.model = model
        self.terms: list[tuple[OrderedDict, OrderedDict]] = []   # (importance, anchor) pairs

    def _anchor(self) -> OrderedDict:
        return OrderedDict((name, backend.xp.array(p.data, copy=True)) for name, p in _trainable(self.model).items())

    def penalty(self, x=None, outputs=None) -> Tensor | None:
        if not self.terms:
            return None
        params = _trainable(self.model)
        total = None
        for importance, anchor in self.terms:
            for name, omega in importance.items():
                p = params.get(name)
                if p is None:
                    continue
                gap = p - backend.xp.asarray(anchor[name], dtype=p.dtype)
                term = (gap * gap * backend.xp.asarray(omega, dtype=p.dtype)).sum()
                total = term if total is None else total + term
        return None if total is None else total * self.scale


class EWC(_QuadraticPenalty):
    """Elastic weight consolidation: (lambda_ / 2) sum_tasks sum_k F_k (theta_k - theta*_k)^2.

    ``fisher``: ``"empirical"`` or ``"true"`` (see :func:`fisher_diagonal`), computed after
    each task on ``samples`` of its training samples drawn at random (all by default).
    ``gamma``: None keeps one penalty per task (Kirkpatrick et al.); a number in [0, 1] is
    online EWC, one penalty with F <- gamma F + F_new anchored at the latest weights."""

    def __init__(self, model: Module, lambda_: float = 1.0, fisher: str = "empirical", gamma: float | None = None,
                 samples: int | None = None, batch_size: int = 64, seed: int = 0):
        super().__init__(model)
        who = "EWC"
        self.lambda_ = _positive(lambda_, who, "lambda_")
        if fisher not in FISHERS:
            raise ValueError(f"{who}: fisher must be one of {FISHERS}, got {fisher!r}")
        if gamma is not None and not (isinstance(gamma, numbers.Real) and 0 <= gamma <= 1):
            raise ValueError(f"{who}: gamma must be None (one penalty per task) or in [0, 1], got {gamma!r}")
        if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int) or samples < 1):
            raise ValueError(f"{who}: samples must be None or a positive integer, got {samples!r}")
        self.fisher, self.gamma, self.samples = fisher, gamma, samples
        self.batch_size = _check_batch(batch_size, who)
        self.rng = np.random.default_rng(seed)

    @property
    def scale(self) -> float:
        return self.lambda_ / 2

    def after_task(self, task: int, x, y) -> None:
        if self.samples is not None and self.samples < len(x):
            chosen = np.sort(self.rng.choice(len(x), self.samples, replace=False))
            x, y = x[chosen], (None if y is None else np.asarray(y)[chosen])
        fisher = fisher_diagonal(self.model, x, y, kind=self.fisher, batch_size=self.batch_size)
        anchor = self._anchor()
        if self.gamma is None or not self.terms:
            self.terms.append((fisher, anchor))
            return
        previous = self.terms[0][0]
        merged = OrderedDict((name, self.gamma * previous[name] + f if name in previous else f)
                             for name, f in fisher.items())
        self.terms = [(merged, anchor)]


class SynapticIntelligence(_QuadraticPenalty):
    """Synaptic intelligence: c sum_k Omega_k (theta_k - theta*_k)^2 with
    Omega_k += omega_k / (Delta_k^2 + xi) after each task, omega_k = -sum_t g_t,k (theta_(t+1),k
    - theta_t,k) over the task's optimizer steps (g_t the gradient the step used, as found in
    the parameters' grad after it) and Delta_k the weight's change over the task.

    :meth:`after_step` must follow every optimizer step (:func:`train_continual` and
    :class:`ContinualCallback` do it); the weights before the first step are taken in
    :meth:`before_task`."""

    def __init__(self, model: Module, c: float = 0.1, xi: float = 1e-3):
        super().__init__(model)
        self.c = _positive(c, "SynapticIntelligence", "c")
        self.xi = _positive(xi, "SynapticIntelligence", "xi", allow_zero=False)
        self.omega: OrderedDict = OrderedDict()          # the running path integral of the task
        self.importance: OrderedDict = OrderedDict()      # Omega, summed over the tasks so far
        self._start: OrderedDict | None = None
        self._previous: OrderedDict | None = None

    @property
    def scale(self) -> float:
        return self.c

    def before_task(self, task: int, x, y) -> None:
        if _trainable(self.model):
            self.start()
        else:
            self._start, self.omega = None, OrderedDict()

    def _snapshot(self) -> OrderedDict:
        return OrderedDict((name, np.array(p.data, dtype=np.float64)) for name, p in _trainable(self.model).items())

    def after_step(self) -> None:
        now = self._snapshot()
        if self._start is None:        # a lazily built model has weights only after its first call
            self._start, self._previous = now, now
            return
        for name, p in _trainable(self.model).items():
            before = self._previous.get(name)
            if p.grad is None or before is None:
                continue
            contribution = -np.asarray(p.grad, dtype=np.float64) * (now[name] - before)
            self.omega[name] = contribution if name not in self.omega else self.omega[name] + contribution
        self._previous = now

    def start(self) -> None:
        """Take the current weights as the task's starting point and clear the path integral
        (:meth:`before_task` does it; for a lazily built model that has no weights yet, the
        first :meth:`after_step` does it, and that step's change is not counted)."""
        self._start = self._previous = self._snapshot()
        self.omega = OrderedDict()

    def after_task(self, task: int, x, y) -> None:
        if self._start is None:
            raise RuntimeError("SynapticIntelligence: no optimizer step was recorded during the task; call "
                               "before_task (or start) and after_step around the steps")
        end = self._snapshot()
        for name, w in self.omega.items():
            delta = end[name] - self._start[name]
            gain = w / (delta * delta + self.xi)
            self.importance[name] = gain if name not in self.importance else self.importance[name] + gain
        self.terms = [(self.importance, self._anchor())]
        self._start = None


class MAS(_QuadraticPenalty):
    """Memory aware synapses: lambda_ sum_k Omega_k (theta_k - theta*_k)^2 with Omega summed
    over the tasks of :func:`output_sensitivity` on ``samples`` of each task's inputs."""

    def __init__(self, model: Module, lambda_: float = 1.0, samples: int | None = None, batch_size: int = 64,
                 seed: int = 0):
        super().__init__(model)
        self.lambda_ = _positive(lambda_, "MAS", "lambda_")
        self.samples, self.batch_size = samples, _check_batch(batch_size, "MAS")
        self.rng = np.random.default_rng(seed)
        self.importance: OrderedDict = OrderedDict()

    @property
    def scale(self) -> float:
        return self.lambda_

    def after_task(self, task: int, x, y) -> None:
        if self.samples is not None and self.samples < len(x):
            x = x[np.sort(self.rng.choice(len(x), self.samples, replace=False))]
        for name, omega in output_sensitivity(self.model, x, self.batch_size).items():
            self.importance[name] = omega if name not in self.importance else self.importance[name] + omega
        self.terms = [(self.importance, self._anchor())]


class LwF(ContinualStrategy):
    """Learning without forgetting: lambda_ T^2 KL(softmax(z_old / T) || softmax(z / T)) on the
    current mini-batch (mean over its samples), z the model's logits and z_old those of a copy
    of the model frozen at the end of the previous task
    (:func:`lamina.functional.distillation_loss` with alpha = 1). Before the first task has
    ended there is no old model and no penalty."""

    def __init__(self, model: Module, lambda_: float = 1.0, temperature: float = 2.0):
        if not isinstance(model, Module):
            raise TypeError(f"LwF: expected a Module, got {type(model).__name__}")
        self.model = model
        self.lambda_ = _positive(lambda_, "LwF", "lambda_")
        self.temperature = _positive(temperature, "LwF", "temperature", allow_zero=False)
        self.old_model: Module | None = None

    def after_task(self, task: int, x, y) -> None:
        self.old_model = copy.deepcopy(self.model)
        self.old_model.eval()

    def penalty(self, x=None, outputs: Tensor | None = None) -> Tensor | None:
        if self.old_model is None:
            return None
        if x is None or outputs is None:
            raise ValueError("LwF: the penalty needs the mini-batch's inputs and the model's outputs for them")
        with no_grad():
            old = self.old_model(as_tensor(x)).data
        outputs = as_tensor(outputs)
        old = backend.xp.asarray(old, dtype=outputs.dtype)
        return distillation_loss(outputs, old, temperature=self.temperature, alpha=1.0) * self.lambda_
