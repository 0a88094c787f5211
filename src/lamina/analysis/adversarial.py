"""Adversarial inputs via back propagation (course notes, CNN: Adversarial inputs via back
propagation).

Back propagation gives the gradient of a cost with respect to the input image as readily as
with respect to the weights; moving the image, not the weights, along it changes what the
classifier says while the image barely changes to the eye.

* :func:`fgsm`, the fast gradient sign method (Goodfellow, Shlens and Szegedy, 2015),
  untargeted: one step up the cross-entropy cost J of the true labels y,

      x_adv = clip(x + eps sign(dJ/dx))

  the largest increase of the linearised cost within an L-inf distance eps of x.
* :func:`targeted_adversarial`, the notes' recipe: pick an image and the class t the
  classifier should be tricked into predicting, and climb the cost log softmax(z(x))_t by
  gradient steps on the image. Each step is the signed one of FGSM (the steepest ascent in
  the L-inf norm), followed by a projection onto the ball |x_adv - x|_inf <= eps when eps is
  given and onto the valid pixel range:

      x_adv <- clip(proj_eps(x_adv + a sign(d log p_t / dx_adv)))

The model is used in evaluation mode with its parameters out of the graph; its modes and
parameters' gradients are left as they were.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from lamina import backend
from lamina import functional as F
from lamina.analysis.saliency import (
    as_input_batch,
    chosen_scores,
    class_indices,
    gradient_wrt_input,
    input_analysis,
    model_logits,
)
from lamina.autograd import Tensor, no_grad, tensor
from lamina.nn.module import Module

__all__ = ["TargetedAttack", "fgsm", "targeted_adversarial"]


class TargetedAttack(NamedTuple):
    """The adversarial images and, per sample, whether the model now predicts the target."""

    images: object
    reached: object


def _check_clip(clip, fn: str) -> tuple[float, float] | None:
    if clip is None:
        return None
    try:
        low, high = (float(v) for v in clip)
    except (TypeError, ValueError):
        raise ValueError(f"{fn}: clip must be None or a pair (low, high), got {clip!r}") from None
    if not low < high:
        raise ValueError(f"{fn}: clip must have low < high, got {clip!r}")
    return low, high


def _check_radius(value, fn: str, name: str, allow_zero: bool) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{fn}: {name} must be a finite number {bound}, got {value!r}")
    return float(value)


def _clipped(x, clip: tuple[float, float] | None):
    return x if clip is None else backend.xp.clip(x, clip[0], clip[1])


def fgsm(model: Module, x, labels, epsilon: float, clip=(0.0, 1.0)):
    """x + eps sign(dJ/dx), clipped to ``clip`` (None: no clipping), with J the cross-entropy
    of the model's logits (a final Softmax layer is left out) against the true ``labels`` (one int per sample)."""
    epsilon = _check_radius(epsilon, "fgsm", "epsilon", allow_zero=True)
    clip = _check_clip(clip, "fgsm")
    x = as_input_batch(x, "fgsm")

    def cost(logits: Tensor) -> Tensor:
        if labels is None:
            raise ValueError("fgsm: labels are required (the true class of each sample)")
        truth = class_indices(labels, logits.data, "fgsm")
        return F.categorical_cross_entropy(logits, truth, from_logits=True, reduction="sum")

    with input_analysis(model):
        grad, _ = gradient_wrt_input(model, x, cost, "fgsm")
    return _clipped(x + x.dtype.type(epsilon) * backend.xp.sign(grad), clip)


def targeted_adversarial(model: Module, x, target, steps: int = 50, step_size: float | None = None,
                         epsilon: float | None = None, clip=(0.0, 1.0)) -> TargetedAttack:
    """Climb log p_t for ``steps`` signed-gradient steps of ``step_size`` a, every sample of
    the batch at once. ``target`` t: an int or one class per sample. ``epsilon``: the
    L-inf radius around x to stay within (None: unbounded). ``step_size`` defaults to
    2.5 eps / steps (room to reach the edge of the ball and move along it) or 0.01 without
    eps. Returns the images and whether each now predicts t."""
    fn = "targeted_adversarial"
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"{fn}: steps must be a positive int, got {steps!r}")
    if target is None:
        raise ValueError(f"{fn}: target is required (the class to trick the model into predicting)")
    if epsilon is not None:
        epsilon = _check_radius(epsilon, fn, "epsilon", allow_zero=False)
    if step_size is None:
        step_size = 2.5 * epsilon / steps if epsilon is not None else 0.01
    step_size = _check_radius(step_size, fn, "step_size", allow_zero=False)
    clip = _check_clip(clip, fn)
    xp = backend.xp
    x = as_input_batch(x, fn)

    def log_probability_of_target(logits: Tensor) -> Tensor:
        return chosen_scores(logits, target, "log_probability", fn)

    adversarial = x.copy()
    with input_analysis(model):
        for _ in range(steps):
            grad, _ = gradient_wrt_input(model, adversarial, log_probability_of_target, fn)
            adversarial = adversarial + x.dtype.type(step_size) * xp.sign(grad)
            if epsilon is not None:
                adversarial = xp.clip(adversarial, x - epsilon, x + epsilon)
            adversarial = _clipped(adversarial, clip)
        with no_grad():
            logits = model_logits(model, tensor(adversarial, dtype=adversarial.dtype)).data
    reached = logits.argmax(axis=1) == class_indices(target, logits, fn)
    return TargetedAttack(adversarial, reached)
