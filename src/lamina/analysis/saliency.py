"""Saliency maps: which input pixels a class score depends on (course notes, CNN
architectures & applications, Saliency maps).

Back propagation run one step past the weights gives the gradient of a class score S_c with
respect to the input image, dS_c/dx: how much S_c moves when one pixel changes a little. Its
size, reduced over the channels, is the saliency map of Simonyan, Vedaldi and Zisserman (2014):

    M_ij = max_k |dS_c/dx_ijk|       (or the mean over the channels k)

S_c is the model's output z_c (the pre-softmax score, "logit"), softmax(z)_c or its log. A
Sequential model that ends in a Softmax layer is read up to that layer: its logits are the
output of the layer before.

* SmoothGrad (Smilkov et al., 2017): the mean of dS_c/dx over copies x + n, n ~ N(0, s^2),
  s = noise (max x - min x) per sample, which washes out the gradient's pixel-to-pixel jitter.
* Integrated gradients (Sundararajan et al., 2017): on the straight path from a baseline x'
  (black by default) to x, A = (x - x') * mean_k dS_c/dx at x' + a_k (x - x'), a_k the
  midpoints (k - 1/2) / m, k = 1..m, of a Riemann sum; sum A -> S_c(x) - S_c(x') (completeness).

The model runs in evaluation mode with its parameters out of the graph; each module's mode
comes back afterwards and no parameter's ``grad`` changes.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, is_grad_enabled, no_grad, tensor
from lamina.errors import ShapeError
from lamina.nn.module import Module, evaluation_mode

__all__ = ["input_gradient", "integrated_gradients", "saliency_map", "smooth_grad"]

SCORES = ("logit", "probability", "log_probability")


@contextlib.contextmanager
def input_analysis(model: Module) -> Iterator[None]:
    """Within the block the model is in evaluation mode and its parameters require no
    gradient; on exit every module's mode and every parameter's ``requires_grad`` come back,
    and parameters created in the block (a model's lazy build) are left without ``grad``."""
    if not isinstance(model, Module):
        raise TypeError(f"input_analysis: expected a lamina Module, got {type(model).__name__}")
    params = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in params:
        p.requires_grad = False
    try:
        with evaluation_mode(model):
            yield
    finally:
        for p, requires_grad in params:
            p.requires_grad = requires_grad
        before = {id(p) for p, _ in params}
        for p in model.parameters():
            if id(p) not in before:
                p.grad = None


def as_input_batch(x, fn: str, ndim: tuple[int, ...] | None = None):
    """``x`` (array or tensor) as a floating array with a batch axis; ShapeError when its
    rank is not one of ``ndim`` (any rank from 2 when None)."""
    data = backend.xp.asarray(x.data if isinstance(x, Tensor) else x)
    if data.dtype.kind != "f":
        data = data.astype(backend.get_default_dtype())
    if (ndim is None and data.ndim < 2) or (ndim is not None and data.ndim not in ndim):
        expected = "(batch, features...)" if ndim is None else " or ".join(f"rank {n}" for n in ndim)
        raise ShapeError(f"{fn}: input of shape {data.shape} (rank {data.ndim}); expected {expected}")
    return data


def class_indices(target, logits, fn: str):
    """The class of each sample: the predicted one for None, else ``target`` (an int or one
    int per sample) checked against the number of classes."""
    xp = backend.xp
    n, classes = logits.shape
    if target is None:
        return logits.argmax(axis=1)
    data = xp.asarray(target.data if isinstance(target, Tensor) else target)
    if data.dtype.kind not in "iu":
        raise TypeError(f"{fn}: target must be an int or integer class indices, got dtype {data.dtype}")
    if data.ndim == 0:
        data = xp.full(n, int(data))
    if data.shape != (n,):
        raise ShapeError(f"{fn}: target of shape {data.shape} for a batch of {n} samples; expected ({n},)")
    if data.size and (data.min() < 0 or data.max() >= classes):
        raise ValueError(f"{fn}: target classes must lie in [0, {classes}) for a model with {classes} outputs, "
                         f"got values from {int(data.min())} to {int(data.max())}")
    return data.astype(xp.intp)


def model_logits(model: Module, inputs: Tensor) -> Tensor:
    """The model's class scores before any final Softmax layer."""
    layers = list(model) if hasattr(model, "__iter__") else []
    if layers and type(layers[-1]).__name__ == "Softmax":
        for layer in layers[:-1]:
            inputs = layer(inputs)
        return inputs
    return model(inputs)


def gradient_wrt_input(model: Module, x, objective: Callable[[Tensor], Tensor], fn: str):
    """(dJ/dx, logits) for the scalar J = objective(model(x)), x an array with a batch axis;
    the caller holds :func:`input_analysis`."""
    if not is_grad_enabled():
        raise RuntimeError(f"{fn}: needs gradients, but it was called inside lamina.no_grad()")
    inputs = tensor(x, requires_grad=True, dtype=x.dtype)
    logits = model_logits(model, inputs)
    if logits.ndim != 2:
        raise ShapeError(f"{fn}: the model's output has shape {logits.shape}; expected (batch, classes)")
    objective(logits).backward()
    grad = inputs.grad if inputs.grad is not None else backend.xp.zeros_like(x)  # an output blind to x
    return grad, logits.data


def _check_score(of: str, fn: str) -> None:
    if of not in SCORES:
        raise ValueError(f"{fn}: of must be one of {SCORES}, got {of!r}")


def chosen_scores(logits: Tensor, target, of: str, fn: str) -> Tensor:
    """sum_i S_(c_i)(x_i). Samples being computed independently (evaluation mode), its
    gradient with respect to x_i is sample i's own dS_c/dx."""
    xp = backend.xp
    chosen = class_indices(target, logits.data, fn)
    if of == "probability":
        scores = F.softmax(logits, axis=-1)
    else:
        scores = F.log_softmax(logits, axis=-1) if of == "log_probability" else logits
    one_hot = xp.zeros(logits.shape, dtype=logits.dtype)
    one_hot[xp.arange(len(chosen)), chosen] = 1
    return (scores * tensor(one_hot, dtype=logits.dtype)).sum()


def _class_score_gradient(model: Module, x, target, of: str, fn: str):
    return gradient_wrt_input(model, x, lambda logits: chosen_scores(logits, target, of, fn), fn)[0]


def _predicted(model: Module, x, target, fn: str):
    """``target`` resolved on the clean inputs (the predicted classes for None)."""
    with no_grad():
        logits = model_logits(model, tensor(x, dtype=x.dtype)).data
    if logits.ndim != 2:
        raise ShapeError(f"{fn}: the model's output has shape {logits.shape}; expected (batch, classes)")
    return class_indices(target, logits, fn)


def input_gradient(model: Module, x, target=None, of: str = "logit"):
    """dS_c/dx for every sample, the shape of ``x``. ``target``: None (each sample's predicted
    class), an int or one class per sample; ``of``: 'logit' (the model's output z_c),
    'probability' (softmax(z)_c) or 'log_probability'."""
    _check_score(of, "input_gradient")
    x = as_input_batch(x, "input_gradient")
    with input_analysis(model):
        return _class_score_gradient(model, x, target, of, "input_gradient")


def saliency_map(model: Module, x, target=None, reduce: str = "max", of: str = "logit"):
    """M = max_k |dS_c/dx_ijk| (``reduce='mean'``: the mean over the channels) for NHWC
    images ``x``: shape (N, H, W)."""
    if reduce not in ("max", "mean"):
        raise ValueError(f"saliency_map: reduce must be 'max' or 'mean', got {reduce!r}")
    _check_score(of, "saliency_map")
    x = as_input_batch(x, "saliency_map", ndim=(4,))
    with input_analysis(model):
        size = backend.xp.abs(_class_score_gradient(model, x, target, of, "saliency_map"))
    return size.max(axis=-1) if reduce == "max" else size.mean(axis=-1)


def smooth_grad(model: Module, x, target=None, samples: int = 25, noise: float = 0.1, seed: int | None = None,
                of: str = "logit"):
    """The mean of dS_c/dx over ``samples`` noisy copies x + n, n ~ N(0, s^2), with
    s = noise (max x - min x) per sample; c is fixed on the clean x. ``seed`` None draws
    from lamina's generator (:func:`lamina.manual_seed`)."""
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"smooth_grad: samples must be a positive int, got {samples!r}")
    if not (isinstance(noise, (int, float)) and math.isfinite(noise) and noise >= 0):
        raise ValueError(f"smooth_grad: noise must be a finite number >= 0, got {noise!r}")
    _check_score(of, "smooth_grad")
    xp = backend.xp
    x = as_input_batch(x, "smooth_grad")
    rng = backend.rng() if seed is None else np.random.default_rng(seed)
    features = tuple(range(1, x.ndim))
    spread = noise * (x.max(axis=features, keepdims=True) - x.min(axis=features, keepdims=True))
    total = xp.zeros_like(x)
    with input_analysis(model):
        chosen = _predicted(model, x, target, "smooth_grad")
        for _ in range(samples):
            draw = xp.asarray(rng.standard_normal(x.shape)).astype(x.dtype)
            total += _class_score_gradient(model, x + spread * draw, chosen, of, "smooth_grad")
    return total / samples


def integrated_gradients(model: Module, x, target=None, baseline=None, steps: int = 32, of: str = "logit"):
    """A = (x - x') * (1/m) sum_k dS_c/dx at x' + (k - 1/2)/m (x - x'), k = 1..m = ``steps``;
    sum A ~ S_c(x) - S_c(x'). ``baseline`` x': zeros by default, or anything that broadcasts
    to x's shape; c is fixed at x."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"integrated_gradients: steps must be a positive int, got {steps!r}")
    _check_score(of, "integrated_gradients")
    xp = backend.xp
    x = as_input_batch(x, "integrated_gradients")
    start = xp.zeros_like(x) if baseline is None else xp.asarray(baseline, dtype=x.dtype)
    try:
        start = xp.broadcast_to(start, x.shape)
    except ValueError:
        raise ShapeError(f"integrated_gradients: baseline of shape {start.shape} does not broadcast to the "
                         f"input's shape {x.shape}") from None
    path = x - start
    total = xp.zeros_like(x)
    with input_analysis(model):
        chosen = _predicted(model, x, target, "integrated_gradients")
        for k in range(steps):
            point = start + path * x.dtype.type((k + 0.5) / steps)
            total += _class_score_gradient(model, point, chosen, of, "integrated_gradients")
    return path * total / steps
