"""Mode connectivity (Garipov et al., 2018, "Loss Surfaces, Mode Connectivity, and Fast
Ensembling of DNNs"): two independently trained networks w_1 and w_2 are joined by a curve
phi_theta(t), t in [0, 1], phi(0) = w_1 and phi(1) = w_2, whose bend theta is trained so that
the loss stays low all along it:

* :class:`BezierCurve`: the quadratic Bezier curve phi(t) = (1-t)^2 w_1 + 2t(1-t) theta + t^2 w_2.
* :class:`PolygonalChain`: the two segments w_1 -> theta -> w_2,
  phi(t) = (1-2t) w_1 + 2t theta for t <= 1/2 and (2-2t) theta + (2t-1) w_2 after.

Training (:func:`train_curve`) minimises E_{t ~ U(0,1)} J(phi_theta(t)) by drawing one t per
step; phi is linear in theta, so dJ/dtheta = c(t) dJ/dw at w = phi(t), c(t) the bend's
coefficient. :func:`curve_losses` measures J along the curve with the batch-norm statistics
recomputed at each t (the endpoints' statistics do not fit the weights in between), and
:func:`loss_barrier` the curve's barrier, max_t J(phi(t)) - ((1-t) J(phi(0)) + t J(phi(1))).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np

from lamina.analysis.hessian import _model_input
from lamina.analysis.landscape import (
    LossFn,
    data_batches,
    model_cost,
    recompute_batch_norm,
    set_weights,
    trainable,
    weights_of,
)
from lamina.autograd import Tensor, enable_grad, grad
from lamina.errors import ShapeError
from lamina.nn.module import Module
from lamina.nn.normalization import BatchNorm
from lamina.nn.parameter import Parameter

__all__ = ["BezierCurve", "Curve", "PolygonalChain", "curve_losses", "loss_barrier", "train_curve"]


class Curve:
    """A curve in weight space between two models of one architecture with one trainable bend
    theta (initialised at the midpoint (w_1 + w_2) / 2). ``model`` is a copy of ``model_a`` that
    :meth:`set_point` loads with phi(t); :meth:`parameters` gives theta to an optimizer.
    Subclasses define the coefficients of (w_1, theta, w_2) at t."""

    def __init__(self, model_a: Module, model_b: Module):
        fn = type(self).__name__
        self.start, self.end = weights_of(model_a, fn), weights_of(model_b, fn)
        if [w.shape for w in self.start] != [w.shape for w in self.end]:
            raise ShapeError(f"{fn}: the models' trainable parameter shapes differ: "
                             f"{[w.shape for w in self.start]} and {[w.shape for w in self.end]}")
        self.model = copy.deepcopy(model_a)
        self.model.zero_grad()
        self.bend = [Parameter((a + b) / 2, dtype=a.dtype) for a, b in zip(self.start, self.end)]

    def coefficients(self, t: float) -> tuple[float, float, float]:
        raise NotImplementedError

    def parameters(self) -> list[Parameter]:
        return list(self.bend)

    def weights(self, t: float) -> list:
        """phi(t), one array per trainable parameter."""
        c_start, c_bend, c_end = self.coefficients(self._checked(t))
        return [c_start * a + c_bend * theta.data + c_end * b for a, theta, b in zip(self.start, self.bend, self.end)]

    def set_point(self, t: float) -> Module:
        """Load phi(t) into :attr:`model` and return it."""
        set_weights(trainable(self.model, type(self).__name__), self.weights(t))
        return self.model

    def accumulate_gradient(self, loss_fn: LossFn, x, y, t: float) -> float:
        """The cost of the batch at phi(t) in the model's current mode; adds dJ/dtheta =
        c_bend(t) dJ/dw (w = phi(t)) to every bend parameter's ``grad``."""
        fn = type(self).__name__
        params = trainable(self.set_point(t), fn)
        with enable_grad():
            cost = loss_fn(self.model(_model_input(x, params[0].data.dtype)), y)
            gradients = grad(cost, params, allow_unused=True)
        c_bend = self.coefficients(t)[1]
        for theta, g in zip(self.bend, gradients):
            if g is not None:
                step = c_bend * (g.data if isinstance(g, Tensor) else g)
                theta.grad = step if theta.grad is None else theta.grad + step
        return float(cost.data)

    def _checked(self, t) -> float:
        t = float(t)
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"{type(self).__name__}: t must lie in [0, 1], got {t}")
        return t


class BezierCurve(Curve):
    """phi(t) = (1-t)^2 w_1 + 2t(1-t) theta + t^2 w_2."""

    def coefficients(self, t: float) -> tuple[float, float, float]:
        return (1 - t) ** 2, 2 * t * (1 - t), t ** 2


class PolygonalChain(Curve):
    """phi(t) = (1-2t) w_1 + 2t theta for t <= 1/2, (2-2t) theta + (2t-1) w_2 for t > 1/2."""

    def coefficients(self, t: float) -> tuple[float, float, float]:
        return (1 - 2 * t, 2 * t, 0.0) if t <= 0.5 else (0.0, 2 - 2 * t, 2 * t - 1)


def train_curve(curve: Curve, loss_fn: LossFn, data, epochs: int = 1, lr: float = 0.01, optimizer=None,
                seed: int | None = 0) -> list[float]:
    """Train the curve's bend: for each batch of ``data`` (``(x, y)`` or an iterable of
    batches), ``epochs`` times, draw t ~ U(0, 1), take dJ(phi(t))/dtheta with the model in
    training mode and step ``optimizer`` (default Adam at ``lr`` over ``curve.parameters()``).
    Returns the batches' costs."""
    if not isinstance(curve, Curve):
        raise TypeError(f"train_curve: expected a BezierCurve or PolygonalChain, got {type(curve).__name__}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"train_curve: epochs must be an integer >= 1, got {epochs!r}")
    if optimizer is None:
        from lamina.optim import Adam

        optimizer = Adam(curve.parameters(), lr=lr)
    rng = np.random.default_rng(seed)
    costs = []
    was_training = [(module, module.training) for module in curve.model.modules()]
    curve.model.train()
    try:
        for _ in range(epochs):
            for x, y in data_batches(data, "train_curve"):
                optimizer.zero_grad()
                costs.append(curve.accumulate_gradient(loss_fn, x, y, float(rng.uniform())))
                optimizer.step()
    finally:
        for module, training in was_training:
            object.__setattr__(module, "training", training)
    return costs


def curve_losses(curve: Curve, loss_fn: LossFn, data, t_values, recompute_bn: bool = True,
                 bn_batch_size: int = 128) -> np.ndarray:
    """J(phi(t)) for each t of ``t_values``, in evaluation mode; with ``recompute_bn`` (and batch
    norm in the model) the running statistics are first recomputed at each t from the data's
    inputs (:func:`lamina.optim.update_batch_norm`)."""
    batches = data_batches(data, "curve_losses")
    has_bn = any(isinstance(module, BatchNorm) for module in curve.model.modules())
    t_values = np.asarray(t_values, dtype=np.float64)
    losses = []
    for t in t_values.ravel():
        model = curve.set_point(t)
        if recompute_bn and has_bn:
            recompute_batch_norm(model, batches, bn_batch_size)
        losses.append(model_cost(model, loss_fn, batches, "curve_losses"))
    return np.asarray(losses).reshape(t_values.shape)


def loss_barrier(t_values: Sequence[float], losses: Sequence[float]) -> float:
    """max_t L(t) - ((1-t) L(t_first) + t L(t_last)) over a path sampled at ``t_values`` (from 0 to 1):
    how far the loss rises above the straight line between the endpoints' losses."""
    t, losses = np.ravel(t_values).astype(np.float64), np.ravel(losses).astype(np.float64)
    if t.shape != losses.shape or len(t) < 2:
        raise ShapeError(f"loss_barrier: need matching t_values and losses of length >= 2, got "
                         f"{t.shape} and {losses.shape}")
    return float(np.max(losses - ((1 - t) * losses[0] + t * losses[-1])))
