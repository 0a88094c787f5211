"""The continual-learning loop: tasks learnt one after another by one model, with any
strategies against forgetting, and the accuracy matrix R[i, j] = the accuracy on task j's
test data after training on task i (Lopez-Paz and Ranzato 2017).

Scenarios (van de Ven and Tolias 2019): with ``task_incremental=False`` a single head must
tell every class apart (class-incremental on :func:`lamina.data.split_tasks` with the
original labels, domain-incremental on :func:`lamina.data.permuted_tasks`). With
``task_incremental=True`` the task is known: the logits of classes outside the sample's task
are masked out (set to -1e9) in training and at test time, a multi-headed classifier on one
output layer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from lamina import backend
from lamina.autograd import no_grad
from lamina.errors import ShapeError
from lamina.functional.loss import categorical_cross_entropy
from lamina.nn.module import Module, as_tensor, evaluation_mode
from lamina.optim import SGD, Optimizer
from lamina.train.continual.metrics import average_accuracy, backward_transfer, forward_transfer
from lamina.train.continual.strategy import ContinualStrategy

__all__ = ["ContinualResult", "evaluate_tasks", "train_continual"]

MASKED = -1e9


@dataclass
class ContinualResult:
    """``accuracy``: R (tasks, tasks); ``baseline``: the untrained model's accuracy per task;
    ``losses``: the mean training loss (penalties included) of each task's last epoch."""

    accuracy: np.ndarray
    baseline: np.ndarray
    losses: list[float] = field(default_factory=list)

    @property
    def average_accuracy(self) -> float:
        return average_accuracy(self.accuracy)

    @property
    def backward_transfer(self) -> float:
        return backward_transfer(self.accuracy)

    @property
    def forward_transfer(self) -> float:
        return forward_transfer(self.accuracy, self.baseline)


def _check_tasks(tasks, who: str, what: str) -> list[tuple[np.ndarray, np.ndarray]]:
    checked = []
    for index, task in enumerate(tasks):
        if len(task) != 2:
            raise ValueError(f"{who}: {what} {index} must be a pair (x, y), got {len(task)} items")
        x, y = np.asarray(task[0]), np.asarray(task[1])
        if len(x) == 0 or len(x) != len(y):
            raise ShapeError(f"{who}: {what} {index} must hold the same positive number of inputs and labels, "
                             f"got {len(x)} and {len(y)}")
        checked.append((x, y))
    if not checked:
        raise ValueError(f"{who}: no {what}s given")
    return checked


class _Masks:
    """Each task's allowed classes, as rows of logits offsets (0 allowed, -1e9 not)."""

    def __init__(self, tasks, enabled: bool):
        self.enabled = enabled
        self.classes = [np.unique(y) for _, y in tasks]
        self.table: np.ndarray | None = None

    def apply(self, out, ids):
        if not self.enabled:
            return out
        if self.table is None:
            width = out.shape[-1]
            self.table = np.full((len(self.classes), width), MASKED)
            for t, allowed in enumerate(self.classes):
                if allowed.min() < 0 or allowed.max() >= width:
                    raise ShapeError(f"train_continual: task {t} has labels {allowed.tolist()} but the model gives "
                                     f"{width} outputs")
                self.table[t, allowed] = 0.0
        return out + backend.xp.asarray(self.table[np.asarray(ids)], dtype=out.dtype)


def _accuracy(model: Module, masks: _Masks, x, y, task: int, batch_size: int) -> float:
    hits = 0
    with evaluation_mode(model), no_grad():
        for start in range(0, len(x), batch_size):
            out = model(as_tensor(backend.xp.asarray(x[start:start + batch_size])))
            n = len(out.data)
            out = masks.apply(out, np.full(n, task))
            hits += int((np.asarray(out.data).argmax(axis=-1) == y[start:start + batch_size]).sum())
    return hits / len(x)


def evaluate_tasks(model: Module, tasks: Sequence, task_incremental: bool = False,
                   batch_size: int = 256) -> np.ndarray:
    """The accuracy of ``model`` (it outputs logits) on each (x, y) of ``tasks``, in
    evaluation mode; ``task_incremental`` masks the logits to the classes of each task's y."""
    tasks = _check_tasks(tasks, "evaluate_tasks", "task")
    masks = _Masks(tasks, task_incremental)
    return np.array([_accuracy(model, masks, x, y, t, batch_size) for t, (x, y) in enumerate(tasks)])


def _default_loss(out, y):
    return categorical_cross_entropy(out, y, from_logits=True)


def train_continual(model: Module, tasks: Sequence, strategies: Sequence[ContinualStrategy] = (),
                    test_tasks: Sequence | None = None, optimizer: Optimizer | Callable | None = None,
                    epochs: int = 1, batch_size: int = 32, task_incremental: bool = False,
                    loss: Callable | None = None, seed: int = 0) -> ContinualResult:
    """Train ``model`` (a classifier giving logits) on the (x, y) pairs of ``tasks`` in order,
    with the ``strategies`` (:class:`EWC`, :class:`SynapticIntelligence`, :class:`MAS`,
    :class:`LwF`, :class:`ExperienceReplay`, ... combined as wished) and return the accuracy
    matrix on ``test_tasks`` (by default the training tasks) with its summaries.

    ``optimizer``: an optimizer kept across the tasks, or a function model -> optimizer
    called at the start of each task (fresh moments for each); by default SGD with lr 0.1
    per task. ``loss(output, y)``: by default the cross-entropy of the logits. Every task is
    trained ``epochs`` passes of shuffled mini-batches of ``batch_size`` (drawn from
    ``seed``), each mini-batch's cost being the loss plus every strategy's penalty."""
    who = "train_continual"
    if not isinstance(model, Module):
        raise TypeError(f"{who}: expected a Module, got {type(model).__name__}")
    tasks = _check_tasks(tasks, who, "task")
    test_tasks = tasks if test_tasks is None else _check_tasks(test_tasks, who, "test task")
    if len(test_tasks) != len(tasks):
        raise ValueError(f"{who}: {len(tasks)} tasks but {len(test_tasks)} test tasks")
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{who}: {name} must be a positive integer, got {value!r}")
    loss = _default_loss if loss is None else loss
    masks = _Masks(tasks, task_incremental)
    test_masks = _Masks(test_tasks, task_incremental)
    test_masks.classes = masks.classes
    if not model.parameters():                       # a lazily built model: build it on one sample
        with no_grad():
            model(as_tensor(backend.xp.asarray(tasks[0][0][:1])))
    baseline = np.array([_accuracy(model, test_masks, x, y, t, 256) for t, (x, y) in enumerate(test_tasks)])
    rng = np.random.default_rng(seed)
    accuracy = np.zeros((len(tasks), len(tasks)))
    losses = []
    for t, (x, y) in enumerate(tasks):
        step_optimizer = _optimizer_for(optimizer, model, t)
        for strategy in strategies:
            strategy.before_task(t, x, y)
        for _ in range(epochs):
            total, seen = 0.0, 0
            order = rng.permutation(len(x))
            for start in range(0, len(x), batch_size):
                rows = order[start:start + batch_size]
                xb, yb, ids = x[rows], y[rows], np.full(len(rows), t)
                for strategy in strategies:
                    xb, yb, ids = strategy.mix(xb, yb, ids)
                step_optimizer.zero_grad()
                inputs = backend.xp.asarray(xb)
                out = model(as_tensor(inputs))
                cost = loss(masks.apply(out, ids), yb)
                for strategy in strategies:
                    term = strategy.penalty(inputs, out)
                    if term is not None:
                        cost = cost + term
                cost.backward()
                step_optimizer.step()
                for strategy in strategies:
                    strategy.after_step()
                total += float(cost.item()) * len(rows)
                seen += len(rows)
        losses.append(total / seen)
        for strategy in strategies:
            strategy.after_task(t, x, y)
        accuracy[t] = [_accuracy(model, test_masks, tx, ty, j, 256) for j, (tx, ty) in enumerate(test_tasks)]
    return ContinualResult(accuracy, baseline, losses)


def _optimizer_for(optimizer, model: Module, task: int) -> Optimizer:
    if optimizer is None:
        return SGD(model, lr=0.1)
    if isinstance(optimizer, Optimizer):
        return optimizer
    if callable(optimizer):
        made = optimizer(model)
        if not isinstance(made, Optimizer):
            raise TypeError(f"train_continual: optimizer(model) must return an Optimizer, got {type(made).__name__} "
                            f"for task {task}")
        return made
    raise TypeError(f"train_continual: optimizer must be an Optimizer, a function model -> Optimizer or None, "
                    f"got {type(optimizer).__name__}")
