r"""Loss weighting for multi-task learning: one cost from the task losses :math:`L_i`.

Each weighting is a module called on a dict ``{task: scalar loss tensor}`` that returns the
total cost to back-propagate; ``weights()`` gives the current weight of every task.

- :class:`EqualWeighting`: :math:`\sum_i L_i`.
- :class:`UncertaintyWeighting` (Kendall, Gal and Cipolla, CVPR 2018): learned homoscedastic
  task uncertainties.
- :class:`GradNorm` (Chen, Badrinarayanan, Lee and Rabinovich, ICML 2018): weights learned so
  that the tasks' gradient norms follow their relative training rates.
- :class:`DynamicWeightAverage` (Liu, Johns and Davison, CVPR 2019): weights from the rate at
  which each loss fell over the last two epochs.
- :class:`RandomLossWeighting` (Lin, Ye, Xu, Shi and Zhang, TMLR 2022): random weights each step.

Weightings with parameters (uncertainty, GradNorm) are trained by the model's optimizer:
put ``weighting.parameters()`` in it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from lamina import backend
from lamina.autograd import Tensor, grad
from lamina.nn.module import Module

__all__ = ["DynamicWeightAverage", "EqualWeighting", "GradNorm", "LossWeighting", "RandomLossWeighting",
           "UncertaintyWeighting", "check_task_losses"]


def check_task_losses(losses: Mapping, tasks: Sequence[str], where: str) -> list:
    """The losses of ``tasks`` in task order; raises naming the missing or unknown tasks."""
    if not isinstance(losses, Mapping):
        raise TypeError(f"{where}: expected a dict of task losses {{task: loss}}; got {type(losses).__name__}")
    missing = [t for t in tasks if t not in losses]
    unknown = [t for t in losses if t not in tasks]
    if missing or unknown:
        raise ValueError(f"{where}: the loss dict must hold one loss per task {list(tasks)}; "
                         f"missing {missing}, unknown {unknown}")
    return [losses[t] for t in tasks]


def _task_names(tasks, where: str) -> tuple[str, ...]:
    names = tuple(tasks)
    if not names or not all(isinstance(t, str) for t in names) or len(set(names)) != len(names):
        raise ValueError(f"{where}: tasks must be distinct strings, at least one; got {names!r}")
    return names


class LossWeighting(Module):
    """Base class: ``forward(losses)`` returns :math:`\\sum_i w_i L_i` with the weights of
    :meth:`weights`. ``end_epoch(mean_losses)`` is called by the trainer after every epoch and
    ``after_step()`` after every optimizer step (both do nothing here)."""

    def __init__(self, tasks: Sequence[str]):
        super().__init__()
        self.tasks = _task_names(tasks, type(self).__name__)

    def weights(self) -> dict[str, float]:
        return dict.fromkeys(self.tasks, 1.0)

    def forward(self, losses: Mapping[str, Tensor]) -> Tensor:
        values = check_task_losses(losses, self.tasks, type(self).__name__)
        weights = self.weights()
        total = values[0] * weights[self.tasks[0]]
        for task, loss in zip(self.tasks[1:], values[1:]):
            total = total + loss * weights[task]
        return total

    def end_epoch(self, mean_losses: Mapping[str, float]) -> None:
        """Called with the epoch's mean loss of every task."""

    def after_step(self) -> None:
        """Called after each optimizer step."""


class EqualWeighting(LossWeighting):
    r"""The plain sum :math:`\sum_i L_i`."""


class RandomLossWeighting(LossWeighting):
    r"""Random loss weighting (RLW): every call draws :math:`w = \mathrm{softmax}(z)`,
    :math:`z \sim N(0, I_T)`, and returns :math:`\sum_i w_i L_i`. ``rng`` defaults to lamina's
    generator; ``weights()`` gives the last draw (uniform 1/T before the first)."""

    def __init__(self, tasks: Sequence[str], rng: np.random.Generator | None = None):
        super().__init__(tasks)
        self.rng = rng
        self._last = np.full(len(self.tasks), 1.0 / len(self.tasks))

    def weights(self) -> dict[str, float]:
        return dict(zip(self.tasks, self._last.tolist()))

    def forward(self, losses: Mapping[str, Tensor]) -> Tensor:
        z = (backend.rng() if self.rng is None else self.rng).standard_normal(len(self.tasks))
        self._last = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        return super().forward(losses)


class UncertaintyWeighting(LossWeighting):
    r"""Homoscedastic-uncertainty weighting (Kendall, Gal and Cipolla, 2018).

    Each task has a learned log-variance :math:`s_i = \log\sigma_i^2` (parameter
    ``log_variance``, starting at 0) and the cost is

    .. math:: \sum_i c_i\, e^{-s_i} L_i + \tfrac12 s_i,

    with :math:`c_i = \frac12` for a regression task (a Gaussian likelihood:
    :math:`\frac{1}{2\sigma^2}L + \log\sigma`) and :math:`c_i = 1` for a classification task
    (a softmax scaled by :math:`1/\sigma^2`: :math:`\frac{1}{\sigma^2}L + \log\sigma`). At the
    minimum over :math:`s_i`, :math:`\sigma_i^2 = L_i` (regression) or :math:`2L_i`
    (classification). ``tasks`` is a list of names (all regression) or a dict
    ``{task: "regression" | "classification"}``.
    """

    def __init__(self, tasks: Sequence[str] | Mapping[str, str], dtype=None):
        kinds = dict(tasks) if isinstance(tasks, Mapping) else dict.fromkeys(tasks, "regression")
        super().__init__(list(kinds))
        bad = {t: k for t, k in kinds.items() if k not in ("regression", "classification")}
        if bad:
            raise ValueError(f"UncertaintyWeighting: each task is 'regression' or 'classification'; got {bad}")
        self.kinds = kinds
        self._factors = np.array([0.5 if kinds[t] == "regression" else 1.0 for t in self.tasks])
        dtype = backend.get_default_dtype() if dtype is None else np.dtype(dtype)
        self.add_parameter("log_variance", np.zeros(len(self.tasks), dtype=dtype))

    def weights(self) -> dict[str, float]:
        """The factors :math:`c_i e^{-s_i}` that multiply the losses."""
        values = self._factors * np.exp(-np.asarray(backend.to_numpy(self.log_variance.data), dtype=np.float64))
        return dict(zip(self.tasks, values.tolist()))

    def variances(self) -> dict[str, float]:
        r""":math:`\sigma_i^2 = e^{s_i}` of every task."""
        values = np.exp(np.asarray(backend.to_numpy(self.log_variance.data), dtype=np.float64))
        return dict(zip(self.tasks, values.tolist()))

    def forward(self, losses: Mapping[str, Tensor]) -> Tensor:
        values = check_task_losses(losses, self.tasks, "UncertaintyWeighting")
        total = None
        for i, loss in enumerate(values):
            s = self.log_variance[i]
            term = (-s).exp() * loss * float(self._factors[i]) + s * 0.5
            total = term if total is None else total + term
        return total


class GradNorm(LossWeighting):
    r"""GradNorm (Chen, Badrinarayanan, Lee and Rabinovich, 2018): task weights :math:`w_i`
    (parameter ``loss_weights``, starting at 1) learned so that the weighted tasks train at
    similar rates.

    With :math:`G_i = \|\nabla_W w_i L_i\|` at the shared weights W, :math:`\bar G` their mean,
    the inverse training rates :math:`\tilde L_i = L_i(t)/L_i(0)` and
    :math:`r_i = \tilde L_i / \mathrm{mean}_j \tilde L_j`, the weights descend

    .. math:: L_{grad} = \sum_i \left| G_i - \bar G\, r_i^{\alpha} \right|,

    the targets :math:`\bar G r_i^\alpha` held constant, so
    :math:`\partial L_{grad}/\partial w_i = \mathrm{sign}(G_i - \bar G r_i^\alpha)\,\|\nabla_W L_i\|`.
    The network itself descends :math:`\sum_i w_i L_i` with the weights held constant, and after
    each step the weights are renormalised to sum to T (:meth:`after_step`).

    Use :meth:`weighted_loss` (which sets ``loss_weights.grad``) in place of calling the module;
    :class:`lamina.train.MultiTaskTrainer` does. :math:`L_i(0)` is the first loss seen.
    """

    def __init__(self, tasks: Sequence[str], alpha: float = 1.5, dtype=None):
        super().__init__(tasks)
        if not (np.isfinite(alpha) and alpha >= 0):
            raise ValueError(f"GradNorm: alpha must be a finite number >= 0; got {alpha!r}")
        self.alpha = float(alpha)
        dtype = backend.get_default_dtype() if dtype is None else np.dtype(dtype)
        self.add_parameter("loss_weights", np.ones(len(self.tasks), dtype=dtype))
        self.initial_losses: np.ndarray | None = None
        self.last_grad_loss: float | None = None

    def weights(self) -> dict[str, float]:
        values = np.asarray(backend.to_numpy(self.loss_weights.data), dtype=np.float64)
        return dict(zip(self.tasks, values.tolist()))

    def weight_gradient(self, losses: Mapping[str, Tensor], shared: Sequence[Tensor]) -> np.ndarray:
        r""":math:`\partial L_{grad}/\partial w` for these losses (one gradient of each task at the
        ``shared`` weights, the graph kept); also sets ``last_grad_loss``."""
        values = check_task_losses(losses, self.tasks, "GradNorm")
        norms = np.empty(len(values))
        for i, loss in enumerate(values):
            grads = grad(loss, list(shared), retain_graph=True, allow_unused=True)
            norms[i] = np.sqrt(sum(float(np.sum(np.square(backend.to_numpy(g), dtype=np.float64)))
                                   for g in grads if g is not None))
        current = np.array([float(loss.item()) for loss in values])
        if self.initial_losses is None:
            self.initial_losses = current
        rates = current / self.initial_losses
        relative = rates / rates.mean()
        weights = np.asarray(backend.to_numpy(self.loss_weights.data), dtype=np.float64)
        norms_weighted = weights * norms
        targets = norms_weighted.mean() * relative ** self.alpha
        self.last_grad_loss = float(np.abs(norms_weighted - targets).sum())
        return np.sign(norms_weighted - targets) * norms

    def weighted_loss(self, losses: Mapping[str, Tensor], shared: Sequence[Tensor]) -> Tensor:
        r"""Set ``loss_weights.grad`` to :math:`\partial L_{grad}/\partial w` and return
        :math:`\sum_i w_i L_i` (weights constant) for the network's backward."""
        gradient = self.weight_gradient(losses, shared)
        self.loss_weights.grad = gradient.astype(self.loss_weights.dtype)
        return self.forward(losses)

    def after_step(self) -> None:
        """Renormalise the weights to sum to T."""
        data = self.loss_weights.data
        data *= len(self.tasks) / data.sum()


class DynamicWeightAverage(LossWeighting):
    r"""Dynamic weight average (DWA; Liu, Johns and Davison, 2019).

    With the epoch-mean losses :math:`L_k(\tau)` of the finished epochs, the weights for epoch t are

    .. math:: w_k(t) = \frac{K \exp(r_k(t-1)/T)}{\sum_i \exp(r_i(t-1)/T)},
              \quad r_k(t-1) = \frac{L_k(t-1)}{L_k(t-2)},

    and 1 for the first two epochs; T is the ``temperature`` (2 in the paper). The trainer
    feeds the epoch means through :meth:`end_epoch`.
    """

    def __init__(self, tasks: Sequence[str], temperature: float = 2.0):
        super().__init__(tasks)
        if not (np.isfinite(temperature) and temperature > 0):
            raise ValueError(f"DynamicWeightAverage: temperature must be a finite number > 0; got {temperature!r}")
        self.temperature = float(temperature)
        self.history: list[np.ndarray] = []

    def end_epoch(self, mean_losses: Mapping[str, float]) -> None:
        values = check_task_losses(mean_losses, self.tasks, "DynamicWeightAverage.end_epoch")
        self.history.append(np.array([float(v) for v in values]))

    def weights(self) -> dict[str, float]:
        if len(self.history) < 2:
            return dict.fromkeys(self.tasks, 1.0)
        ratios = self.history[-1] / self.history[-2] / self.temperature
        exps = np.exp(ratios - ratios.max())
        return dict(zip(self.tasks, (len(self.tasks) * exps / exps.sum()).tolist()))
