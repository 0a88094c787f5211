"""Model-agnostic meta-learning: :class:`MAML` (Finn et al. 2017) and :class:`MetaSGD` (Li et al. 2017).

Meta-learning trains the starting point theta of a model so that a few gradient steps on a new
task's small *support* set give a model that does well on the task's *query* set. Per task,

    phi = theta - alpha * grad L_support(theta)         (inner step, repeated for several)
    L_query(phi)                                        (outer loss)

and the outer optimizer descends the query loss averaged over a batch of tasks, with its
gradient taken through the inner steps:

    d L_query(phi) / d theta = (I - alpha H_support(theta)) grad L_query(phi)      (one step)

``first_order=True`` drops the Hessian H (FOMAML). MetaSGD learns alpha too, one value per
weight: phi = theta - alpha (.) grad L_support(theta), alpha trained by the outer optimizer.

Usage, as learn2learn's::

    maml = MAML(model, lr=0.4)
    opt = lamina.optim.Adam(maml.parameters(), lr=1e-3)
    for tasks in batches:
        opt.zero_grad()
        for (x_s, y_s), (x_q, y_q) in tasks:
            learner = maml.clone()
            learner.adapt(loss_fn(learner(x_s), y_s))
            (loss_fn(learner(x_q), y_q) / len(tasks)).backward()
        opt.step()

ANIL (Raghu et al. 2020) adapts only the head in the inner loop: ``adapt_only="head"`` (names
of parameters or sub-modules, a prefix matching all below it) or ``adapt_only=model.head``
(the sub-modules themselves); the body is then trained by the outer loop alone.

Buffers are shared, as learn2learn's clones share them: batch-norm layers called by a learner
in training mode normalise with the batch's statistics (the transductive setting of the MAML
paper) and update the wrapped module's running statistics, which only ``eval()`` uses.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable

from lamina import backend
from lamina.autograd import Tensor
from lamina.nn.containers import ParameterList
from lamina.nn.module import Module
from lamina.train.meta.learner import FastLearner

__all__ = ["MAML", "MetaSGD"]

AdaptOnly = str | Module | Iterable[str | Module] | None


def _positive_number(value, name: str, who: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ValueError(f"{who}: {name} must be a positive number, got {value!r}")
    return float(value)


def _adapted_names(module: Module, adapt_only: AdaptOnly, who: str) -> list[str]:
    """The names of the trainable parameters the inner loop updates: all, or those ``adapt_only``
    selects (a name of a parameter or sub-module, a sub-module, or a list of either)."""
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    if adapt_only is None:
        chosen = [n for n, _ in named]
    else:
        wanted = [adapt_only] if isinstance(adapt_only, (str, Module)) else list(adapt_only)
        chosen = []
        for item in wanted:
            if isinstance(item, Module):
                ids = {id(p) for p in item.parameters()}
                found = [n for n, p in named if id(p) in ids]
                label = f"the {type(item).__name__} given"
            elif isinstance(item, str):
                found = [n for n, _ in named if n == item or n.startswith(item + ".")]
                label = repr(item)
            else:
                raise TypeError(f"{who}: adapt_only takes names or sub-modules, got {type(item).__name__}")
            if not found:
                raise ValueError(f"{who}: adapt_only {label} selects no trainable parameter of "
                                 f"{type(module).__name__}; its parameters are {[n for n, _ in named]}")
            chosen += [n for n in found if n not in chosen]
    if not chosen:
        raise ValueError(f"{who}: {type(module).__name__} has no trainable parameter to adapt")
    return chosen


class _GradientMetaLearner(Module):
    """A wrapped module whose :meth:`clone` gives a :class:`FastLearner`; subclasses define the
    inner step ``inner_step(name, weight, gradient)``."""

    order = "second"

    def __init__(self, module: Module, first_order: bool, allow_unused: bool, adapt_only: AdaptOnly):
        super().__init__()
        who = type(self).__name__
        if not isinstance(module, Module):
            raise TypeError(f"{who}: expected a Module to wrap, got {type(module).__name__}")
        if not module.built and not any(m.built for m in module.modules()):
            raise ValueError(f"{who}: {type(module).__name__} has no weights yet; call it once or "
                             "build(input_shape) before wrapping it")
        self.module = module
        self.first_order = bool(first_order)
        self.allow_unused = bool(allow_unused)
        self.adapted_names = _adapted_names(module, adapt_only, who)

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def clone(self) -> FastLearner:
        """A learner whose fast weights start at the module's parameters (theta)."""
        parameters = dict(self.module.named_parameters())
        missing = [n for n in self.adapted_names if n not in parameters]
        if missing:
            raise RuntimeError(f"{type(self).__name__}.clone: the module no longer has the parameters {missing}")
        order = "first" if self.first_order else self.order
        return FastLearner(self, {n: parameters[n] for n in self.adapted_names}, order)

    def adapt(self, *args, **kwargs):
        raise RuntimeError(f"{type(self).__name__}.adapt: adapt a clone (learner = meta.clone(); "
                           "learner.adapt(loss)); the wrapper holds the meta-parameters, which only the outer "
                           "optimizer updates")

    def inner_step(self, name: str, weight: Tensor, gradient) -> Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"first_order={self.first_order}, adapting {len(self.adapted_names)} parameters"


class MAML(_GradientMetaLearner):
    """Model-agnostic meta-learning: inner steps phi <- phi - lr * dL/dphi on fast weights.

    ``MAML(module, lr, first_order=False, allow_unused=False, adapt_only=None)``; ``clone()``
    gives the learner to adapt (see the module docstring). ``allow_unused`` lets a loss leave
    some adapted weights unused (they keep their value) instead of raising.
    """

    def __init__(self, module: Module, lr: float, first_order: bool = False, allow_unused: bool = False,
                 adapt_only: AdaptOnly = None):
        super().__init__(module, first_order, allow_unused, adapt_only)
        self.lr = _positive_number(lr, "lr", "MAML")

    def inner_step(self, name: str, weight: Tensor, gradient) -> Tensor:
        return weight - self.lr * gradient

    def extra_repr(self) -> str:
        return f"lr={self.lr}, " + super().extra_repr()


class MetaSGD(_GradientMetaLearner):
    """MAML with a learned inner learning rate for every weight: phi <- phi - alpha (.) dL/dphi.

    ``alpha`` (``learning_rates``, one array per adapted parameter, started at ``lr``) are
    parameters of this wrapper, so ``MetaSGD.parameters()`` hands them to the outer optimizer
    with the module's. Their meta-gradient flows even with ``first_order=True``.
    """

    def __init__(self, module: Module, lr: float = 1e-3, first_order: bool = False, allow_unused: bool = False,
                 adapt_only: AdaptOnly = None):
        super().__init__(module, first_order, allow_unused, adapt_only)
        start = _positive_number(lr, "lr", "MetaSGD")
        parameters = dict(module.named_parameters())
        self.lrs = ParameterList([backend.xp.full(parameters[n].shape, start, dtype=parameters[n].dtype)
                                  for n in self.adapted_names])

    @property
    def learning_rates(self) -> dict[str, Tensor]:
        """Adapted parameter name -> its learned inner learning rates alpha (same shape)."""
        return dict(zip(self.adapted_names, self.lrs))

    def inner_step(self, name: str, weight: Tensor, gradient) -> Tensor:
        return weight - self.lrs[self.adapted_names.index(name)] * gradient
