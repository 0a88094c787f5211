r"""Model inversion (Fredrikson et al. 2015): recover what a class looks like to a model by
gradient descent on the input.

Starting from x_0 (``init``, else the ``prior``, else zeros), minimise

    c(x) = 1 - f_t(x) + a ||x - x_prior||^2 + b TV(x),
    TV(x) = sum (x[i+1, j] - x[i, j])^2 + (x[i, j+1] - x[i, j])^2     (NHWC images, per channel)

with f_t the model's softmax probability of the target class t (``objective='log'``:
-log f_t instead, whose gradient does not vanish when f_t is tiny), a = ``l2_weight``,
b = ``tv_weight``; each step x <- clip(x - lr dc/dx, ``bounds``). The reconstruction with the
lowest cost seen is returned.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.analysis.saliency import input_analysis, model_logits
from lamina.autograd import Tensor, is_grad_enabled, no_grad, tensor
from lamina.errors import ShapeError
from lamina.nn.module import Module

__all__ = ["Inversion", "model_inversion"]

OBJECTIVES = ("confidence", "log")


class Inversion(NamedTuple):
    """``reconstruction`` (N, ...) inputs; ``probability`` f_t there and ``start_probability``
    f_t at x_0 (N,); ``costs``: the summed cost c before each step."""

    reconstruction: np.ndarray
    probability: np.ndarray
    start_probability: np.ndarray
    costs: list[float]


def _total_variation(x: Tensor) -> Tensor:
    down = x[:, 1:] - x[:, :-1]
    right = x[:, :, 1:] - x[:, :, :-1]
    return (down * down).sum() + (right * right).sum()


def _target_probability(logits: Tensor, classes: np.ndarray) -> Tensor:
    one_hot = np.zeros(logits.shape, dtype=logits.dtype)
    one_hot[np.arange(len(classes)), classes] = 1
    return (F.softmax(logits, axis=-1) * tensor(one_hot, dtype=logits.dtype)).sum(axis=1)


def _as_float_array(values) -> np.ndarray:
    data = np.asarray(backend.to_numpy(values.data if isinstance(values, Tensor) else values))
    return data if data.dtype.kind == "f" else data.astype(backend.get_default_dtype())


def _start(init, prior, input_shape) -> np.ndarray:
    if init is not None:
        return _as_float_array(init).copy()
    if prior is not None:
        return _as_float_array(prior)[None].copy()
    if input_shape is None:
        raise ValueError("model_inversion: give input_shape (one input, without the batch axis), init or prior")
    return np.zeros((1, *input_shape), dtype=backend.get_default_dtype())


def model_inversion(model: Module, target_class, input_shape: tuple[int, ...] | None = None, init=None,
                    prior=None, steps: int = 200, lr: float = 0.1, l2_weight: float = 0.0, tv_weight: float = 0.0,
                    bounds: tuple[float, float] | None = (0.0, 1.0), objective: str = "confidence") -> Inversion:
    """Invert ``model`` for ``target_class`` (an int, or one class per row of ``init``) as the
    module docstring says. ``input_shape``: one input's shape without the batch axis (used
    when neither ``init`` (N, ...) nor ``prior`` is given); ``prior``: x_prior, one input
    without the batch axis (zeros when None); ``bounds``: the valid input range (None: unbounded). The model
    runs in evaluation mode with its parameters untouched; a final Softmax layer is skipped
    and applied by the cost itself."""
    fn = "model_inversion"
    if objective not in OBJECTIVES:
        raise ValueError(f"{fn}: objective must be one of {OBJECTIVES}, got {objective!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"{fn}: steps must be a positive int, got {steps!r}")
    if not lr > 0 or l2_weight < 0 or tv_weight < 0:
        raise ValueError(f"{fn}: need lr > 0 and l2_weight, tv_weight >= 0, got {lr!r}, {l2_weight!r}, {tv_weight!r}")
    if not is_grad_enabled():
        raise RuntimeError(f"{fn}: needs gradients, but it was called inside lamina.no_grad()")
    x = _start(init, prior, input_shape)
    anchor = np.zeros(x.shape[1:], dtype=x.dtype) if prior is None else _as_float_array(prior).astype(x.dtype)
    if anchor.shape != x.shape[1:]:
        raise ShapeError(f"{fn}: the prior has shape {anchor.shape}; expected one input of shape {x.shape[1:]}")
    if tv_weight and x.ndim != 4:
        raise ShapeError(f"{fn}: the TV prior needs NHWC images (N, H, W, C), got inputs of shape {x.shape}")
    classes = np.broadcast_to(np.asarray(target_class), (len(x),)).astype(np.int64)
    if bounds is not None:
        x = np.clip(x, *bounds)

    def cost_and_probability(points: np.ndarray, with_grad: bool):
        inputs = tensor(points, requires_grad=with_grad, dtype=points.dtype)
        logits = model_logits(model, inputs)
        if logits.ndim != 2:
            raise ShapeError(f"{fn}: the model's output has shape {logits.shape}; expected (batch, classes)")
        if classes.max() >= logits.shape[1] or classes.min() < 0:
            raise ValueError(f"{fn}: target_class must lie in [0, {logits.shape[1]}), got {target_class!r}")
        probability = _target_probability(logits, classes)
        fit = (1.0 - probability).sum() if objective == "confidence" else -F.log(probability).sum()
        cost = fit
        if l2_weight:
            gap = inputs - tensor(anchor, dtype=points.dtype)
            cost = cost + l2_weight * (gap * gap).sum()
        if tv_weight:
            cost = cost + tv_weight * _total_variation(inputs)
        if with_grad:
            cost.backward()
        return float(cost.data), probability.data.copy(), inputs.grad

    with input_analysis(model):
        with no_grad():
            start_probability = cost_and_probability(x, False)[1]
        best, best_cost, costs = x.copy(), np.inf, []
        for _ in range(steps):
            cost, _, grad = cost_and_probability(x, True)
            costs.append(cost)
            if cost < best_cost:
                best, best_cost = x.copy(), cost
            x = x - lr * grad
            if bounds is not None:
                x = np.clip(x, *bounds)
        with no_grad():
            final_cost, _, _ = cost_and_probability(x, False)
            if final_cost < best_cost:
                best = x
            probability = cost_and_probability(best, False)[1]
    return Inversion(best, probability, start_probability, costs)
