"""The hooks a continual-learning strategy offers a training loop; each does nothing here.

A loop over tasks t = 0, 1, ... calls, for every strategy::

    before_task(t, x, y)                 once, before training on task t
    x, y, ids = mix(x, y, ids)           per mini-batch (``ids``: each sample's task index)
    loss = task loss + penalty(x, out)   per mini-batch, then backward and the optimizer step
    after_step()                         per optimizer step (the gradients are still in .grad)
    after_task(t, x, y)                  once, after training on task t

:func:`lamina.train.continual.train_continual` is such a loop; with a
:class:`~lamina.train.Trainer`, use :func:`penalized_loss` and :class:`ContinualCallback`.
"""

from __future__ import annotations

from collections.abc import Callable

from lamina.autograd import Tensor
from lamina.train.callbacks import Callback

__all__ = ["ContinualCallback", "ContinualStrategy", "penalized_loss"]


class ContinualStrategy:
    """The base of the continual-learning strategies: every hook is a no-op."""

    def before_task(self, task: int, x, y) -> None:
        """Called before training on task ``task`` with its training data (x, y)."""

    def mix(self, x, y, ids):
        """The mini-batch to train on (x, y, per-sample task indices); rehearsal adds to it."""
        return x, y, ids

    def penalty(self, x=None, outputs: Tensor | None = None) -> Tensor | None:
        """The term added to the mini-batch's loss (None: nothing), given the inputs and the
        model's outputs for them."""
        return None

    def after_step(self) -> None:
        """Called after each optimizer step, the step's gradients still in the parameters' grad."""

    def after_task(self, task: int, x, y) -> None:
        """Called after training on task ``task`` with its training data (x, y)."""


def penalized_loss(loss: Callable, *strategies: ContinualStrategy) -> Callable:
    """``loss(output, y) + sum of the strategies' penalties``, a loss for
    :class:`~lamina.train.Trainer` (penalties that need the inputs, as
    :class:`~lamina.train.continual.LwF`'s, are given none and must be used in
    :func:`~lamina.train.continual.train_continual` or a loop of your own)."""

    def with_penalties(output, y, **options):
        total = loss(output, y, **options)
        for strategy in strategies:
            term = strategy.penalty(None, output)
            if term is not None:
                total = total + term
        return total

    with_penalties.__name__ = getattr(loss, "__name__", "loss")
    return with_penalties


class ContinualCallback(Callback):
    """Calls the strategies' :meth:`~ContinualStrategy.after_step` after every mini-batch of
    :meth:`Trainer.fit <lamina.train.Trainer.fit>` (what synaptic intelligence needs to follow
    the weights' path). ``before_task`` and ``after_task`` are left to the caller, around each
    task's ``fit``."""

    def __init__(self, *strategies: ContinualStrategy):
        super().__init__()
        self.strategies = strategies

    def on_batch_end(self, iteration: int, logs: dict) -> None:
        for strategy in self.strategies:
            strategy.after_step()
