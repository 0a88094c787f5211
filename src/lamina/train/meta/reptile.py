"""Reptile (Nichol, Achiam and Schulman 2018): first-order meta-learning with no outer gradient.

For each of n tasks, a copy of the weights is trained by k steps of SGD on the task,
theta -> phi_i; the meta-parameters then move towards the adapted weights:

    theta <- theta + epsilon * (1/n) sum_i (phi_i - theta)

(epsilon = ``outer_lr``). No graph links phi_i to theta, so nothing is back-propagated through
the inner loop. Usage::

    reptile = Reptile(model, inner_lr=0.02, outer_lr=0.1)
    learners = []
    for (x, y), _ in tasks:
        learner = reptile.clone()
        learner.adapt(lambda: loss_fn(learner(x), y), steps=5)
        learners.append(learner)
    reptile.step(learners)

To have an optimizer make the move (Adam on the Reptile direction, a schedule on epsilon),
:meth:`set_gradients` writes ``theta - mean_i phi_i`` into each parameter's ``grad`` instead.
"""

from __future__ import annotations

from collections.abc import Sequence

from lamina.autograd import Tensor
from lamina.nn.module import Module
from lamina.train.meta.learner import FastLearner
from lamina.train.meta.maml import AdaptOnly, _GradientMetaLearner, _positive_number

__all__ = ["Reptile"]


class Reptile(_GradientMetaLearner):
    """``Reptile(module, inner_lr, outer_lr=0.1, adapt_only=None)``: learners from :meth:`clone`
    are detached copies trained by plain SGD (step ``inner_lr``); :meth:`step` moves the module's
    parameters a fraction ``outer_lr`` of the way towards their mean."""

    order = "none"

    def __init__(self, module: Module, inner_lr: float, outer_lr: float = 0.1, adapt_only: AdaptOnly = None):
        super().__init__(module, first_order=False, allow_unused=True, adapt_only=adapt_only)
        self.inner_lr = _positive_number(inner_lr, "inner_lr", "Reptile")
        self.outer_lr = _positive_number(outer_lr, "outer_lr", "Reptile")

    def clone(self) -> FastLearner:
        """A learner whose fast weights are copies of the module's parameters, off its graph."""
        start = super().clone().weights
        copies = {n: Tensor(w.data.copy(), requires_grad=True, dtype=w.dtype) for n, w in start.items()}
        return FastLearner(self, copies, "none")

    def inner_step(self, name: str, weight, gradient):
        return weight - self.inner_lr * gradient

    def _differences(self, learners: Sequence[FastLearner], who: str) -> dict:
        """theta - mean_i phi_i for each adapted parameter name."""
        learners = list(learners)
        if not learners:
            raise ValueError(f"Reptile.{who}: expected at least one adapted learner, got none")
        for i, learner in enumerate(learners):
            if not isinstance(learner, FastLearner) or learner._owner is not self:
                raise TypeError(f"Reptile.{who}: learner {i} is not a clone of this Reptile "
                                f"(got {type(learner).__name__}); use reptile.clone()")
        parameters = dict(self.module.named_parameters())
        return {name: parameters[name].data - sum(learner.weights[name].data for learner in learners) / len(learners)
                for name in self.adapted_names}

    def step(self, learners: Sequence[FastLearner]) -> None:
        """theta <- theta + outer_lr * (mean_i phi_i - theta), in place."""
        parameters = dict(self.module.named_parameters())
        for name, difference in self._differences(learners, "step").items():
            parameters[name].data -= (self.outer_lr * difference).astype(parameters[name].dtype)

    def set_gradients(self, learners: Sequence[FastLearner]) -> None:
        """Each adapted parameter's ``grad`` := theta - mean_i phi_i (an optimizer's step of size
        lr along -grad then moves theta towards the adapted weights)."""
        parameters = dict(self.module.named_parameters())
        for name, difference in self._differences(learners, "set_gradients").items():
            parameters[name].grad = difference.astype(parameters[name].dtype)
