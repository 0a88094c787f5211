"""Multi-task learning with hard parameter sharing: one trunk, one head per task.

:class:`MultiTaskModel` runs the shared trunk once and every head on its features.
:class:`MultiTaskTrainer` trains it either with a loss weighting (:mod:`lamina.train.task_weighting`:
one backward of the weighted cost) or with gradient surgery (:mod:`lamina.optim.gradient_surgery`:
one gradient per task of the shared weights, combined into one direction; each head gets its
own task's gradient). :func:`load_digit_tasks` gives a small two-task benchmark.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from lamina import backend
from lamina.autograd import Tensor, grad
from lamina.data import load_digits
from lamina.nn.containers import ModuleDict
from lamina.nn.module import Module
from lamina.optim.gradient_surgery import SURGERY_METHODS, combine_task_gradients
from lamina.optim.optimizer import Optimizer
from lamina.train.task_weighting import EqualWeighting, GradNorm, LossWeighting, check_task_losses

__all__ = ["MultiTaskModel", "MultiTaskTrainer", "load_digit_tasks"]


class MultiTaskModel(Module):
    """Hard parameter sharing: ``model(x)`` returns ``{task: head(trunk(x))}``.

    ``trunk`` is any module; ``heads`` maps task names to modules. The trunk's parameters
    are :meth:`shared_parameters`; a head's are :meth:`task_parameters`.
    """

    def __init__(self, trunk: Module, heads: Mapping[str, Module]):
        super().__init__()
        if not isinstance(heads, Mapping) or not heads:
            raise ValueError(f"MultiTaskModel: heads must be a non-empty dict {{task: module}}; got {heads!r}")
        self.trunk = trunk
        self.heads = ModuleDict(dict(heads))

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.heads.keys())

    def forward(self, x) -> dict[str, Tensor]:
        features = self.trunk(x)
        return {task: head(features) for task, head in self.heads.items()}

    def shared_parameters(self) -> list:
        """The trunk's trainable parameters (empty until the first call builds lazy layers)."""
        return self.trunk.parameters(trainable_only=True)

    def task_parameters(self, task: str) -> list:
        """The trainable parameters of the head of ``task``."""
        if task not in self.heads:
            raise ValueError(f"MultiTaskModel.task_parameters: unknown task {task!r}; tasks: {list(self.tasks)}")
        return self.heads[task].parameters(trainable_only=True)


class MultiTaskTrainer:
    """Train a :class:`MultiTaskModel` with a loss weighting or with gradient surgery.

    ``losses`` maps each task to ``loss_fn(output, target)`` returning a scalar tensor.
    Give at most one of ``weighting`` (a :class:`~lamina.train.task_weighting.LossWeighting`;
    equal weighting when neither is given) and ``surgery`` (a method name of
    :data:`lamina.optim.gradient_surgery.SURGERY_METHODS`, with ``surgery_options`` such as
    ``{"c": 0.5}`` for CAGrad).

    One :meth:`train_step` with a weighting: zero the gradients, forward, cost
    ``weighting(losses)``, backward, step (GradNorm also sets its weights' gradient from its
    L_grad, over ``gradnorm_parameters``, by default the shared ones). With surgery: zero the
    gradients, forward, then per task one ``lamina.autograd.grad`` of its loss with respect to
    the shared parameters and its head's; the heads take their task's gradient, the shared
    parameters the combination of the flattened task gradients; step. A weighting with
    parameters must have them in ``optimizer``.
    """

    def __init__(self, model: MultiTaskModel, losses: Mapping[str, Callable], optimizer: Optimizer,
                 weighting: LossWeighting | None = None, surgery: str | None = None,
                 surgery_options: Mapping | None = None, gradnorm_parameters=None):
        if not isinstance(model, MultiTaskModel):
            raise TypeError(f"MultiTaskTrainer: model must be a MultiTaskModel; got {type(model).__name__}")
        check_task_losses(losses, model.tasks, "MultiTaskTrainer (losses)")
        if weighting is not None and surgery is not None:
            raise ValueError("MultiTaskTrainer: give a loss weighting or a gradient surgery method, not both")
        if surgery is not None and surgery not in SURGERY_METHODS:
            raise ValueError(f"MultiTaskTrainer: unknown surgery method {surgery!r}; known: {sorted(SURGERY_METHODS)}")
        if weighting is not None and set(weighting.tasks) != set(model.tasks):
            raise ValueError(f"MultiTaskTrainer: the weighting's tasks {list(weighting.tasks)} differ from the "
                             f"model's {list(model.tasks)}")
        self.model = model
        self.losses = dict(losses)
        self.optimizer = optimizer
        self.weighting = weighting if weighting is not None or surgery is not None else EqualWeighting(model.tasks)
        self.surgery = surgery
        self.surgery_options = dict(surgery_options or {})
        self.gradnorm_parameters = gradnorm_parameters
        self._checked_optimizer = False

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.model.tasks

    def task_losses(self, x, targets: Mapping) -> dict[str, Tensor]:
        """Forward ``x`` and every task's loss against ``targets`` ({task: target})."""
        target_list = check_task_losses(targets, self.tasks, "MultiTaskTrainer (targets)")
        outputs = self.model(x)
        return {task: self.losses[task](outputs[task], target) for task, target in zip(self.tasks, target_list)}

    def _check_optimizer(self) -> None:
        if self._checked_optimizer or self.weighting is None:
            return
        held = {id(p) for p in self.optimizer.params}
        outside = [name for name, p in self.weighting.named_parameters() if id(p) not in held]
        if outside:
            raise ValueError(f"MultiTaskTrainer: the {type(self.weighting).__name__} parameters {outside} are not "
                             "in the optimizer; build it from the model's and the weighting's parameters")
        self._checked_optimizer = True

    def train_step(self, x, targets: Mapping) -> dict[str, float]:
        """One update on the batch ``(x, targets)``; returns every task's loss (floats)."""
        self.optimizer.zero_grad()
        self.model.zero_grad()
        losses = self.task_losses(x, targets)
        if self.surgery is None:
            self._check_optimizer()
            if isinstance(self.weighting, GradNorm):
                shared = self.gradnorm_parameters or self.model.shared_parameters()
                total = self.weighting.weighted_loss(losses, shared)
            else:
                total = self.weighting(losses)
            total.backward()
            self.optimizer.step()
            self.weighting.after_step()
        else:
            self._surgery_backward(losses)
            self.optimizer.step()
        return {task: float(loss.item()) for task, loss in losses.items()}

    def _surgery_backward(self, losses: Mapping[str, Tensor]) -> None:
        shared = self.model.shared_parameters()
        rows = []
        for k, task in enumerate(self.tasks):
            own = self.model.task_parameters(task)
            grads = grad(losses[task], shared + own, retain_graph=k < len(self.tasks) - 1, allow_unused=True)
            rows.append(_flatten(shared, grads[:len(shared)]))
            for p, g in zip(own, grads[len(shared):]):
                p.grad = None if g is None else g
        if not shared:
            return
        combined = combine_task_gradients(np.stack(rows), self.surgery, **self.surgery_options)
        start = 0
        for p in shared:
            piece = combined[start:start + p.data.size].reshape(p.shape).astype(p.dtype)
            p.grad = backend.xp.asarray(piece)
            start += p.data.size

    def fit(self, x, targets: Mapping, epochs: int, batch_size: int = 64,
            rng: np.random.Generator | None = None) -> list[dict[str, float]]:
        """Train for ``epochs`` passes over shuffled mini-batches; returns each epoch's mean
        loss per task (also fed to the weighting's ``end_epoch``)."""
        target_list = check_task_losses(targets, self.tasks, "MultiTaskTrainer.fit (targets)")
        n = len(x)
        for task, target in zip(self.tasks, target_list):
            if len(target) != n:
                raise ValueError(f"MultiTaskTrainer.fit: {n} inputs but {len(target)} targets for task {task!r}")
        generator = backend.rng() if rng is None else rng
        history = []
        for _ in range(epochs):
            order = generator.permutation(n)
            sums = dict.fromkeys(self.tasks, 0.0)
            for start in range(0, n, batch_size):
                batch = order[start:start + batch_size]
                step = self.train_step(x[batch], {t: y[batch] for t, y in zip(self.tasks, target_list)})
                for task, value in step.items():
                    sums[task] += value * len(batch)
            means = {task: value / n for task, value in sums.items()}
            history.append(means)
            if self.weighting is not None:
                self.weighting.end_epoch(means)
        return history


def _flatten(params: list, grads: list) -> np.ndarray:
    """The gradients of ``params`` as one float64 vector (zeros for a parameter left unused)."""
    pieces = [np.zeros(p.data.size) if g is None else np.ravel(backend.to_numpy(g)).astype(np.float64)
              for p, g in zip(params, grads)]
    return np.concatenate(pieces) if pieces else np.zeros(0)


def load_digit_tasks(dtype=np.float32) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The 1797 8x8 digits as a two-task benchmark: ``x`` of shape ``(1797, 64)`` in [0, 1]
    and targets ``{"digit": class 0-9 (int64), "ink": the image's mean intensity,
    standardised to mean 0 and variance 1, shape (1797, 1)}``."""
    images, labels = load_digits(size=8)
    x = images.reshape(len(images), -1).astype(np.float64) / 255.0
    ink = x.mean(axis=1, keepdims=True)
    ink = (ink - ink.mean()) / ink.std()
    return x.astype(dtype), {"digit": labels, "ink": ink.astype(dtype)}
