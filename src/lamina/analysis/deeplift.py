"""Attributions against reference inputs: DeepLIFT, DeepLIFT SHAP and gradient SHAP (as
Captum's DeepLift, DeepLiftShap and GradientShap).

With S_c the class score (the model's pre-softmax output z_c) and x0 a reference
("baseline") input:

* DeepLIFT, Rescale rule (Shrikumar et al., 2017): A = (x - x0) * m, m the gradient of S_c
  back-propagated with each elementwise nonlinearity y = f(z) replaced by its secant slope
  (f(z) - f(z0)) / (z - z0) between the two forward passes (its derivative where z ~ z0)
  and each max pooling by the same ratio at its window's maximum
  (:mod:`lamina.analysis.backward_rules`). Linear layers (Dense, Conv2D, average pooling,
  BatchNorm in evaluation mode, reshapes) are exact on differences, so the attributions
  sum to the difference of the scores, sum_i A_i = S_c(x) - S_c(x0) (summation-to-delta).
  On a linear model it is integrated gradients.
* DeepLIFT SHAP (Lundberg & Lee, 2017): DeepLIFT averaged over references x0_j drawn from a
  background set, sum_i A_i = S_c(x) - mean_j S_c(x0_j): an estimate of SHAP values.
* gradient SHAP (expected gradients, Erion et al., 2019): the mean over draws of
  (x~ - x0) * dS_c/dx at x0 + a (x~ - x0), with x0 a random row of the background set,
  x~ = x + N(0, stdevs^2) and a ~ U(0, 1): integrated gradients' path sampled at random
  and averaged over the references.

Nonlinearities built from several primitive ops (GELU, SiLU, softmax inside the network)
keep their gradient, so summation-to-delta holds only approximately through them.
"""

from __future__ import annotations

import math

import numpy as np

from lamina import backend
from lamina.analysis.backward_rules import deeplift_rescale_rules
from lamina.analysis.saliency import (
    _class_score_gradient,
    _predicted,
    as_input_batch,
    input_analysis,
    model_logits,
)
from lamina.autograd import is_grad_enabled, tensor
from lamina.errors import ShapeError
from lamina.nn.module import Module

__all__ = ["deeplift", "deeplift_shap", "gradient_shap"]

RULES = ("rescale",)


def broadcast_baseline(baselines, x, fn: str):
    """One reference per sample: zeros for None, else ``baselines`` broadcast to x's shape."""
    xp = backend.xp
    if baselines is None:
        return xp.zeros_like(x)
    data = xp.asarray(baselines, dtype=x.dtype)
    try:
        return xp.broadcast_to(data, x.shape)
    except ValueError:
        raise ShapeError(f"{fn}: baselines of shape {data.shape} do not broadcast to the input's shape {x.shape}; "
                         f"expected {x.shape}, {(1,) + x.shape[1:]} or {x.shape[1:]}") from None


def background_rows(baselines, x, fn: str):
    """The background set as (B, *sample shape), B >= 1 references for every sample."""
    data = backend.xp.asarray(baselines, dtype=x.dtype)
    if data.ndim != x.ndim or data.shape[1:] != x.shape[1:] or data.shape[0] < 1:
        raise ShapeError(f"{fn}: baselines of shape {data.shape} for inputs of shape {x.shape}; expected a "
                         f"background set (B, {', '.join(map(str, x.shape[1:]))}) with B >= 1")
    return data


def _multipliers(model: Module, x, reference, chosen, eps: float):
    """dS_c/dx with DeepLIFT's Rescale rule, from one forward pass on [x; reference]."""
    xp = backend.xp
    n = len(x)
    inputs = tensor(xp.concatenate([x, reference]), requires_grad=True, dtype=x.dtype)
    with deeplift_rescale_rules(n, eps):
        logits = model_logits(model, inputs)
        if logits.ndim != 2:
            raise ShapeError(f"deeplift: the model's output has shape {logits.shape}; expected (batch, classes)")
        seed = xp.zeros(logits.shape, dtype=logits.dtype)
        seed[xp.arange(n), chosen] = 1
        (logits * tensor(seed, dtype=logits.dtype)).sum().backward()
    grad = inputs.grad if inputs.grad is not None else xp.zeros(inputs.shape, dtype=x.dtype)
    return grad[:n]


def _check_rule(rule: str, fn: str) -> None:
    if rule not in RULES:
        raise ValueError(f"{fn}: rule must be one of {RULES}, got {rule!r}")


def deeplift(model: Module, x, baselines=None, target=None, rule: str = "rescale", eps: float = 1e-10):
    """DeepLIFT attributions (module docstring), the shape of ``x``: sum_i A_i = S_c(x) -
    S_c(x0). ``baselines`` x0: zeros for None, or anything that broadcasts to x's shape;
    ``target``: None (each sample's predicted class), an int or one class per sample;
    ``eps``: |z - z0| below which a nonlinearity keeps its derivative."""
    _check_rule(rule, "deeplift")
    if not is_grad_enabled():
        raise RuntimeError("deeplift: needs gradients, but it was called inside lamina.no_grad()")
    x = as_input_batch(x, "deeplift")
    reference = broadcast_baseline(baselines, x, "deeplift")
    with input_analysis(model):
        chosen = _predicted(model, x, target, "deeplift")
        return (x - reference) * _multipliers(model, x, reference, chosen, eps)


def deeplift_shap(model: Module, x, baselines, target=None, rule: str = "rescale", eps: float = 1e-10):
    """The mean of :func:`deeplift` over the rows x0_j of the background set ``baselines``
    (B, *sample shape): sum_i A_i = S_c(x) - mean_j S_c(x0_j)."""
    _check_rule(rule, "deeplift_shap")
    if not is_grad_enabled():
        raise RuntimeError("deeplift_shap: needs gradients, but it was called inside lamina.no_grad()")
    xp = backend.xp
    x = as_input_batch(x, "deeplift_shap")
    background = background_rows(baselines, x, "deeplift_shap")
    total = xp.zeros_like(x)
    with input_analysis(model):
        chosen = _predicted(model, x, target, "deeplift_shap")
        for row in background:
            reference = xp.broadcast_to(row, x.shape)
            total += (x - reference) * _multipliers(model, x, reference, chosen, eps)
    return total / len(background)


def gradient_shap(model: Module, x, baselines, target=None, n_samples: int = 5, stdevs: float = 0.0,
                  seed: int | None = None):
    """Gradient SHAP (module docstring), the shape of ``x``: the mean over ``n_samples``
    draws per sample of (x~ - x0) * dS_c/dx at x0 + a (x~ - x0). ``baselines``: the
    background set (B, *sample shape); ``stdevs``: the standard deviation of the noise added
    to x; ``seed`` None draws from lamina's generator (:func:`lamina.manual_seed`)."""
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"gradient_shap: n_samples must be a positive int, got {n_samples!r}")
    if not (isinstance(stdevs, (int, float)) and math.isfinite(stdevs) and stdevs >= 0):
        raise ValueError(f"gradient_shap: stdevs must be a finite number >= 0, got {stdevs!r}")
    xp = backend.xp
    x = as_input_batch(x, "gradient_shap")
    background = background_rows(baselines, x, "gradient_shap")
    rng = backend.rng() if seed is None else np.random.default_rng(seed)
    n = len(x)
    draws = n * n_samples
    spread = (draws,) + (1,) * (x.ndim - 1)
    noisy = xp.repeat(x, n_samples, axis=0)
    if stdevs > 0:
        noisy = noisy + xp.asarray(rng.normal(0.0, stdevs, noisy.shape)).astype(x.dtype)
    reference = background[xp.asarray(rng.integers(0, len(background), draws))]
    alpha = xp.asarray(rng.uniform(0.0, 1.0, spread)).astype(x.dtype)
    with input_analysis(model):
        chosen = xp.repeat(_predicted(model, x, target, "gradient_shap"), n_samples)
        grad = _class_score_gradient(model, reference + alpha * (noisy - reference), chosen, "logit",
                                     "gradient_shap")
    per_draw = (noisy - reference) * grad
    return per_draw.reshape((n, n_samples) + x.shape[1:]).mean(axis=1)
