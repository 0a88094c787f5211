"""A differentiable copy of a module for the inner loop of meta-learning: :class:`FastLearner`.

``learner = maml.clone()`` starts from the wrapped module's parameters, the *meta-parameters*
theta. ``learner.adapt(loss)`` takes a gradient step on *fast weights*

    phi <- phi - alpha * dL(phi)/dphi            (phi = theta before the first step)

without touching theta, and ``learner(x)`` runs the module with phi in place of theta (through
:func:`lamina.nn.functional_call`). phi stays a tensor on the graph, a function of theta, so a
query loss computed from ``learner(x)`` back-propagates through every inner step into theta:

- ``"second"`` order (MAML): dL/dphi is recorded (``grad(..., create_graph=True)``), so the
  meta-gradient carries the Hessian terms (I - alpha H) of each step;
- ``"first"`` order (FOMAML): dL/dphi is a constant, dphi/dtheta = I, and the meta-gradient is
  the query gradient at phi;
- ``"none"`` (Reptile): phi is cut from theta altogether, a plain copy trained by SGD.

The step rule (a scalar alpha, or one learned per parameter) belongs to the wrapper that made
the learner (:class:`~lamina.train.meta.MAML`, :class:`~lamina.train.meta.MetaSGD`,
:class:`~lamina.train.meta.Reptile`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from lamina.autograd import Tensor, grad
from lamina.nn.functional_call import functional_call

__all__ = ["FastLearner"]

ORDERS = ("second", "first", "none")


class FastLearner:
    """The wrapped module run with fast weights (name -> tensor) that :meth:`adapt` updates.

    Parameters not adapted (frozen ones, or those left out by ``adapt_only``) are the module's
    own: the outer loss reaches them directly. Buffers (batch-norm running statistics) are not
    copied: every learner shares the module's, as learn2learn's clones do.
    """

    def __init__(self, owner, weights: dict[str, Tensor], order: str):
        if order not in ORDERS:
            raise ValueError(f"FastLearner: order must be one of {ORDERS}, got {order!r}")
        self._owner = owner
        self.weights = dict(weights)
        self.order = order

    @property
    def module(self):
        """The wrapped module (holding the meta-parameters)."""
        return self._owner.module

    def __call__(self, *args, **kwargs):
        return functional_call(self._owner.module, self.weights, *args, **kwargs)

    def named_parameters(self) -> Iterator[tuple[str, Tensor]]:
        """The fast weights, name -> tensor."""
        yield from self.weights.items()

    def parameters(self) -> list[Tensor]:
        return list(self.weights.values())

    def clone(self) -> FastLearner:
        """A learner starting from this one's current fast weights (to branch the adaptation)."""
        return FastLearner(self._owner, self.weights, self.order)

    def adapt(self, loss: Tensor | Callable[[], Tensor], steps: int = 1) -> FastLearner:
        """Take ``steps`` inner gradient steps; returns self.

        ``loss`` is a scalar tensor computed from this learner's output (one step), or a
        function of no arguments returning one, called before each step (``steps`` >= 1):
        ``learner.adapt(lambda: loss_fn(learner(x), y), steps=5)``.
        """
        who = f"{type(self._owner).__name__} learner.adapt"
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"{who}: steps must be a positive integer, got {steps!r}")
        if not callable(loss) and steps != 1:
            raise ValueError(f"{who}: a loss tensor gives one step, got steps={steps}; pass a function "
                             "returning the loss (lambda: loss_fn(learner(x), y)) to take several")
        for _ in range(steps):
            value = loss() if callable(loss) else loss
            self._step(value, who)
        return self

    def _step(self, value: Tensor, who: str) -> None:
        if not isinstance(value, Tensor) or value.size != 1:
            shape = getattr(value, "shape", None)
            raise ValueError(f"{who}: the loss must be a scalar Tensor, got {type(value).__name__}"
                             + (f" of shape {shape}" if shape is not None else ""))
        names = list(self.weights)
        if not value.requires_grad:
            raise RuntimeError(f"{who}: the loss does not depend on the fast weights; compute it from the "
                               "learner's output (learner(x)), not from the wrapped module")
        gradients = grad(value, [self.weights[n] for n in names], create_graph=self.order == "second",
                         retain_graph=True, allow_unused=True)
        unused = [n for n, g in zip(names, gradients) if g is None]
        if unused and not self._owner.allow_unused:
            raise RuntimeError(f"{who}: the loss does not depend on the fast weights {unused}; compute it from "
                               "learner(x), or pass allow_unused=True to leave unused weights as they are")
        for name, gradient in zip(names, gradients):
            if gradient is None:
                continue
            weight = self.weights[name]
            if self.order == "none":
                stepped = self._owner.inner_step(name, Tensor._wrap(weight.data), gradient)
                self.weights[name] = Tensor(stepped.data, requires_grad=True, dtype=weight.dtype)
            else:
                self.weights[name] = self._owner.inner_step(name, weight, gradient)

    def __repr__(self) -> str:
        return (f"FastLearner(of {type(self._owner).__name__}, order={self.order!r}, "
                f"adapting {list(self.weights)})")
